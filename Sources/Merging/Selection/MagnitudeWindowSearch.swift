import Checkpoints

/// A magnitude window found for one tensor, with each chunk's count of the entries
/// equal to its lower and upper boundary keys (nil: unknown, a counting pass finds them).
typealias FoundWindow = (window: MagnitudeWindow, keyCounts: [(lower: Int, upper: Int)]?)

/// Finds the kept-rank windows of the magnitude trims on the executor's chunks: per
/// tensor from a sample, one candidate pass (`CandidateRankSearch`) and the two-pass
/// `RankSearch` for any rank the sample's interval missed; for `--trim global`, over
/// all of a model's merged tensors at once.
struct MagnitudeWindowSearch {
    let chunks: ChunkScheduler
    let decoder: TensorDecoder
    /// Keys a tensor's candidate pass may keep (a test lowers it to force the fallback).
    var maxCandidates = CandidateRankSearch.maxCandidates

    /// The ranks whose elements bound `window` among `count` elements (none for an
    /// empty window; rank 0 and `count` need no search).
    static func boundaryRanks(_ window: Range<Int>, count: Int) -> [Int] {
        guard window.lowerBound < window.upperBound else { return [] }
        var ranks: [Int] = []
        if window.lowerBound > 0 { ranks.append(window.lowerBound) }
        if window.upperBound < count { ranks.append(window.upperBound) }
        return ranks
    }

    /// The kept-rank windows of the models in `models` for one tensor, with the
    /// densities and gammas of every model of the job.
    func windows(_ job: MergeJob, models: [Int], sparsifier: Sparsifier, densities: [Double], gammas: [Double]) throws -> [FoundWindow] {
        let count = job.elementCount
        let windows = models.map { sparsifier.rankWindow(count: count, density: densities[$0], gamma: gammas[$0]) }
        let wanted = windows.map { MagnitudeWindowSearch.boundaryRanks($0, count: count) }
        var slots: [(model: Int, search: CandidateRankSearch)] = []
        var missed = [[Int]](repeating: [], count: models.count)
        let searched = models.indices.filter { !wanted[$0].isEmpty }
        let samples = try sampleKeys(job, models: searched.map { models[$0] })
        for (k, sample) in zip(searched, samples) {
            for rank in wanted[k] {
                if let search = CandidateRankSearch(rank: rank, count: count, sample: sample) {
                    slots.append((k, search))
                } else {
                    missed[k].append(rank)
                }
            }
        }
        var found = [[Int: RankBoundary]](repeating: [:], count: models.count)
        var keyCounts = [[Int: [Int]]](repeating: [:], count: models.count)
        if !slots.isEmpty {
            let chunkCount = chunks.chunkCount(job)
            let parts = ChunkResults(count: chunkCount * slots.count, initial: ChunkCandidates())
            let decoded = Set(slots.map(\.model)).sorted()
            let decoder = self.decoder, budget = Locked(maxCandidates)
            try chunks.forEachChunk(job) { s, c, range in
                try decoder.decodeBase(job, range, s)
                for k in decoded { try decoder.decodeDelta(job, models[k], range, s) }
                for (j, slot) in slots.enumerated() {
                    let values = UnsafeBufferPointer(rebasing: s.inputs[models[slot.model]][0..<range.count])
                    parts[c * slots.count + j] = slot.search.collect(values, scratch: s.keys, budget: budget)
                }
            }
            for (j, slot) in slots.enumerated() {
                let chunkParts = (0..<chunkCount).map { parts[$0 * slots.count + j] }
                if let (boundary, counts) = slot.search.resolve(chunkParts) {
                    found[slot.model][slot.search.rank] = boundary
                    keyCounts[slot.model][slot.search.rank] = counts
                } else {
                    missed[slot.model].append(slot.search.rank)
                }
            }
        }
        if missed.contains(where: { !$0.isEmpty }) {
            let searched = try rankSearch(wanted: missed, jobs: [job], models: models)
            for k in 0..<models.count { found[k].merge(searched[k]) { $1 } }
        }
        return windows.enumerated().map { k, range in
            let window = MagnitudeWindow.ranks(range.lowerBound, range.upperBound, count: count) { found[k][$0]! }
            let keys = window.tieKeys
            let lower = keys.lower == nil ? nil : keyCounts[k][range.lowerBound]
            let upper = keys.upper == nil ? nil : keyCounts[k][range.upperBound]
            if (keys.lower != nil && lower == nil) || (keys.upper != nil && upper == nil) { return (window, nil) }
            let chunks = lower?.count ?? upper?.count ?? 0
            return (window, (0..<chunks).map { (lower?[$0] ?? 0, upper?[$0] ?? 0) })
        }
    }

    /// `--trim global`: per model of `jobs` (the merged tensors), its top-k window
    /// over all of them at once; nil for a model kept whole or dropped.
    func globalWindows(_ jobs: [MergeJob], densities: [Double]) throws -> [MagnitudeWindow?] {
        var result = [MagnitudeWindow?](repeating: nil, count: densities.count)
        let total = jobs.reduce(0) { $0 + $1.elementCount }
        let models = densities.indices.filter { densities[$0] > 0 && densities[$0] < 1 }
        guard !jobs.isEmpty, !models.isEmpty else { return result }
        let ranges = models.map { Sparsifier.magnitude.rankWindow(count: total, density: densities[$0], gamma: 0) }
        let found = try rankSearch(wanted: ranges.map { MagnitudeWindowSearch.boundaryRanks($0, count: total) },
                                   jobs: jobs, models: models)
        for (k, m) in models.enumerated() {
            result[m] = MagnitudeWindow.ranks(ranges[k].lowerBound, ranges[k].upperBound, count: total) { found[k][$0]! }
        }
        return result
    }

    /// The magnitude keys of each model's δ over `CandidateRankSearch.sampleRanges`,
    /// runs concatenated. The runs are read in pieces no longer than the job's chunk
    /// (a run may cover a whole tensor twice a chunk long, more than a worker's
    /// buffers hold), the pieces in parallel.
    private func sampleKeys(_ job: MergeJob, models: [Int]) throws -> [[UInt32]] {
        let pieceLength = chunks.chunkSize(for: job)
        var pieces: [(range: Range<Int>, offset: Int)] = []
        var total = 0
        for range in CandidateRankSearch.sampleRanges(count: job.elementCount) {
            var start = range.lowerBound
            while start < range.upperBound {
                let end = min(range.upperBound, start + pieceLength)
                pieces.append((start..<end, total))
                total += end - start
                start = end
            }
        }
        let keys = models.map { _ in ChunkResults(count: total, initial: UInt32(0)) }
        let decoder = self.decoder
        try chunks.forEach(count: pieces.count) { s, r in
            let (range, offset) = pieces[r]
            try decoder.decodeBase(job, range, s)
            for (k, m) in models.enumerated() {
                try decoder.decodeDelta(job, m, range, s)
                keys[k].update(at: offset, with: UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count]), magnitudeKey)
            }
        }
        return keys.map { Array($0.values) }
    }

    /// Finds, for each model, the elements at its `wanted` ranks of the (|δ|, index)
    /// order over the chunks of `jobs`, in two streaming passes.
    private func rankSearch(wanted: [[Int]], jobs: [MergeJob], models: [Int]) throws -> [[Int: RankBoundary]] {
        let scratch = chunks.scratch, decoder = self.decoder
        // Each pass hands every searched model's δ, chunk by chunk, to its searcher.
        func pass(_ count: (inout RankSearch, UnsafeBufferPointer<Float>) -> Void) throws {
            for job in jobs {
                try chunks.forEachChunk(job) { s, _, range in
                    try decoder.decodeBase(job, range, s)
                    for (k, m) in models.enumerated() where !wanted[k].isEmpty {
                        try decoder.decodeDelta(job, m, range, s)
                        count(&s.searches[k], UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count]))
                    }
                }
            }
        }
        // Worker-local counts, combined after each pass.
        func combined() -> [RankSearch] {
            var all = scratch[0].searches
            for s in scratch.dropFirst() { for k in all.indices { all[k].absorb(s.searches[k]) } }
            return all
        }
        for s in scratch { s.searches = wanted.map { RankSearch(ranks: $0) } }
        try pass { $0.countCoarse($1) }
        var coarse = combined()
        for k in coarse.indices { coarse[k].finishCoarse() }
        for s in scratch { s.searches = coarse.map { $0.fineCounter() } }
        try pass { $0.countFine($1) }
        let fine = combined()
        for s in scratch { s.searches = [] }
        return fine.indices.map { k in Dictionary(zip(wanted[k], fine[k].boundaries())) { $1 } }
    }
}
