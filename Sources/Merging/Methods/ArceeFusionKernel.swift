import Foundation

/// Arcee Fusion: the base θ₀ takes the other model's change δ = θ₁ − θ₀ only where
/// it matters most. Each entry's importance is |δ| times the KL divergence
/// Σ p·log(p/q) of its row (the last axis), p = softmax(θ₁) + 10⁻⁸ and
/// q = softmax(θ₀) + 10⁻⁸; entries whose importance reaches
/// median + 1.5·(Q3 − Q1) of the tensor's importances change, the rest keep θ₀.
///
/// Quantile Q at q is the importance at rank ⌊q·(n − 1)⌋ (q and the product in
/// Float32) of the n sorted importances, found exactly by `RankSearch` (negative
/// importances, from a divergence rounded below 0, searched apart by magnitude).
/// Three passes: coarse and fine counts of the ranks, then the output. Chunks hold
/// whole rows; the divergence is computed in Float64.
struct ArceeFusionKernel: MergeKernel {
    /// Added to each softmax probability.
    static let epsilon = 1e-8
    /// The quantiles the threshold is made of.
    static let quantiles: [Float] = [0.25, 0.5, 0.75]

    func check(_ plan: MergePlan) throws(MergeError) {
        guard plan.contributingModels.count == 1 else {
            throw .badPlan("arcee_fusion needs exactly two models, one of them the base")
        }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .arceeFusion
    }

    /// Softmax rows lie along the last axis, inside the leading-axis rows chunks keep whole.
    func rowLength(of job: MergeJob) -> Int { job.rowLength }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .arceeFusion = job.parameters else { preconditionFailure("not an arcee_fusion job") }
        let chunks = executor.chunks, decoder = executor.decoder, scratch = chunks.scratch
        let total = job.elementCount, count = chunks.chunkCount(job)
        guard total > 0 else { return }
        let axis = ArceeFusionKernel.lastAxis(job)
        let other = job.inputs[0]
        // Each chunk's importances in `s.divisors`; base and model left in `s.base` and `s.inputs[0]`.
        func importances(_ s: WorkerScratch, _ range: Range<Int>) throws -> UnsafeMutableBufferPointer<Float> {
            try decoder.decodeBase(job, range, s)
            try decoder.decode(other, range, into: s.inputs[0], staging: s.staging)
            let importance = UnsafeMutableBufferPointer(rebasing: s.divisors[0..<range.count])
            ArceeFusionKernel.importance(base: s.baseEntries(range.count), model: UnsafeBufferPointer(s.input(0, range.count)),
                                         row: axis, into: importance)
            return importance
        }
        // A counting pass: the magnitudes of the negative importances to searcher 0, the
        // others to searcher 1 (gathered into `s.out` and `s.base`: each gets fewer than
        // `range.count` entries, which the worker's buffers hold).
        func pass(_ body: (WorkerScratch, Int, UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>) -> Void) throws {
            try chunks.forEachChunk(job) { s, c, range in
                let importance = try importances(s, range)
                var negative = 0, other = 0
                for v in importance {
                    if v < 0 {
                        s.out[negative] = -v
                        negative += 1
                    } else {
                        s.base[other] = v
                        other += 1
                    }
                }
                body(s, c, UnsafeBufferPointer(rebasing: s.out[0..<negative]), UnsafeBufferPointer(rebasing: s.base[0..<other]))
            }
        }
        defer { for s in scratch { s.searches = [] } }

        let negatives = ChunkResults(count: count, initial: 0)
        for s in scratch { s.searches = [RankSearch(ranks: []), RankSearch(ranks: [])] }
        try pass { s, c, negative, other in
            s.searches[0].countCoarse(negative)
            s.searches[1].countCoarse(other)
            negatives[c] = negative.count
        }
        var negativeTotal = 0
        for c in 0..<count { negativeTotal += negatives[c] }
        // Rank r of the ascending order: among the negatives, rank negativeTotal − 1 − r
        // by magnitude; past them, rank r − negativeTotal of the others.
        let ranks = ArceeFusionKernel.quantiles.map { Int((($0 * Float(total - 1)).rounded(.towardZero))) }
        let place = ranks.map { $0 < negativeTotal ? (group: 0, rank: negativeTotal - 1 - $0) : (group: 1, rank: $0 - negativeTotal) }
        let coarse = executor.combinedSearches()
        var searches = (0..<2).map { g in RankSearch(ranks: place.filter { $0.group == g }.map(\.rank)) }
        for g in 0..<2 {
            searches[g].absorb(coarse[g])
            searches[g].finishCoarse()
        }
        for s in scratch { s.searches = searches.map { $0.fineCounter() } }
        try pass { s, _, negative, other in
            s.searches[0].countFine(negative)
            s.searches[1].countFine(other)
        }
        let fine = executor.combinedSearches()
        var found = [[Int: Float]](repeating: [:], count: 2)
        for g in 0..<2 {
            for (rank, boundary) in zip(fine[g].ranks, fine[g].boundaries()) {
                let magnitude = Float(bitPattern: boundary.key)
                found[g][rank] = g == 0 ? -magnitude : magnitude
            }
        }
        let q = place.map { found[$0.group][$0.rank]! }
        let threshold = q[1] + 1.5 * (q[2] - q[0])

        try executor.write(job, into: bytes) { s, _, range in
            let importance = try importances(s, range)
            for i in 0..<range.count {
                let b = s.base[i]
                s.out[i] = b + (s.inputs[0][i] - b) * (importance[i] >= threshold ? 1 : 0)
            }
        }
    }

    /// Entries per softmax row: the last axis (the whole tensor when it has one axis or none).
    static func lastAxis(_ job: MergeJob) -> Int {
        guard let last = job.shape.last, job.shape.count >= 2, last > 0 else { return max(job.elementCount, 1) }
        return last
    }

    /// |θ₁ − θ₀| times its row's divergence, for every entry of `base` (whole rows of `row`).
    static func importance(base: UnsafeBufferPointer<Float>, model: UnsafeBufferPointer<Float>, row: Int,
                           into out: UnsafeMutableBufferPointer<Float>) {
        precondition(row > 0 && base.count % row == 0 && model.count >= base.count && out.count >= base.count,
                     "arcee_fusion chunks must hold whole rows")
        var start = 0
        while start < base.count {
            let span = start..<(start + row)
            let kl = divergence(UnsafeBufferPointer(rebasing: model[span]), from: UnsafeBufferPointer(rebasing: base[span]))
            for i in span { out[i] = abs(model[i] - base[i]) * kl }
            start = span.upperBound
        }
    }

    /// Σ p·log(p/q) with p = softmax(x) + 10⁻⁸ and q = softmax(y) + 10⁻⁸, in Float64.
    static func divergence(_ x: UnsafeBufferPointer<Float>, from y: UnsafeBufferPointer<Float>) -> Float {
        var mx = -Double.infinity, my = -Double.infinity
        for i in x.indices {
            mx = max(mx, Double(x[i]))
            my = max(my, Double(y[i]))
        }
        var sx = 0.0, sy = 0.0
        for i in x.indices {
            sx += exp(Double(x[i]) - mx)
            sy += exp(Double(y[i]) - my)
        }
        var kl = 0.0
        for i in x.indices {
            let p = exp(Double(x[i]) - mx) / sx + epsilon
            let q = exp(Double(y[i]) - my) / sy + epsilon
            kl += p * log(p / q)
        }
        return Float(kl)
    }
}
