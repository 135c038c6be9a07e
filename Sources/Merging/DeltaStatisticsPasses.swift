import Checkpoints
import Dispatch
import Foundation

/// What the first pass learned about one tensor.
struct TensorState {
    var statistics: ScopeStatistics
    /// Per delta: where the top 1 % ends, and where the top-k support at the run's density ends.
    var top: [TopBoundary] = []
    var support: [TopBoundary] = []
}

/// One worker's reusable buffers. Sizes: chunk buffers hold `chunk` floats;
/// coarse arrays `MagnitudeBins.coarseCount` entries; fine arrays `fineCount`.
final class StatisticsScratch {
    /// Fine slots per delta: the tensor's top 1 %, its support, up to three scopes' top 1 %.
    static let fineSlots = 5

    let chunk: Int
    let base: UnsafeMutablePointer<Float>
    let deltas: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let deltaCount: Int
    /// Per delta, the coarse histogram: count and Σ of fine (low 15 bit) patterns
    /// of each bin, interleaved; with the count, the fine sum gives the exact Σ|δ| of the bin.
    let bins: [UnsafeMutablePointer<Int>]
    /// [delta][slot] fine histograms.
    let fine: [[UnsafeMutablePointer<Int>]]
    let overlaps: [PairOverlapScratch]

    init(chunk: Int, deltaCount: Int, pairCount: Int) {
        func zeroed<T: Numeric>(_ n: Int, _: T.Type) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: n)
            p.initialize(repeating: 0, count: n)
            return p
        }
        self.chunk = chunk
        self.deltaCount = deltaCount
        base = zeroed(chunk, Float.self)
        deltas = .allocate(capacity: deltaCount)
        for d in 0..<deltaCount { (deltas + d).initialize(to: zeroed(chunk, Float.self)) }
        bins = (0..<deltaCount).map { _ in zeroed(2 * MagnitudeBins.coarseCount, Int.self) }
        fine = (0..<deltaCount).map { _ in (0..<Self.fineSlots).map { _ in zeroed(MagnitudeBins.fineCount, Int.self) } }
        overlaps = (0..<pairCount).map { _ in PairOverlapScratch() }
    }

    deinit {
        base.deallocate()
        for d in 0..<deltaCount { deltas[d].deallocate() }
        deltas.deallocate()
        for p in bins { p.deallocate() }
        for slots in fine { for p in slots { p.deallocate() } }
    }
}

/// Hands input pages back to the kernel behind a streaming cursor.
struct ReleaseCursor {
    static let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    static let stride = 4 << 20
    let file: MappedFile
    let entry: TensorEntry
    private var released: Int

    init(_ checkpoint: Checkpoint, _ entry: TensorEntry) {
        file = checkpoint.files[entry.fileIndex]
        self.entry = entry
        released = entry.offset / Self.page * Self.page
    }

    /// Releases the pages before `elements` elements once enough have accumulated (or at the end).
    mutating func advance(toElement elements: Int) {
        let end = entry.offset + entry.dtype.byteCount(forElements: elements)!
        guard end - released >= Self.stride || elements == entry.elementCount else { return }
        file.release(released..<end)
        released = end / Self.page * Self.page
    }
}

/// The shared state of one statistics run.
final class StatisticsRun: @unchecked Sendable {
    let plan: StatisticsPlan
    let base: Checkpoint
    let tuned: [Checkpoint]
    let options: DeltaStatisticsOptions
    let deltaCount: Int
    let pairs: [(Int, Int)]
    let thresholdBits: [UInt32]

    private let lock = NSLock()
    /// Work queue position and first error of the current pass (under `lock`).
    private var next = 0
    private var failure: CheckpointError?
    var states: [TensorState?]
    /// [scope][delta] coarse histograms of the first pass.
    let scopeHistograms: [[RangeHistogram]]
    /// [scope][delta] top-1 % boundaries, after the first pass.
    var scopeTop: [[TopBoundary?]]
    /// [scope][delta] fine counts of the boundary bin, after the second pass.
    var scopeFine: [[[Int]?]]
    /// One per worker, used by both passes (each pass leaves them cleared).
    private let scratches: [StatisticsScratch]

    init(plan: StatisticsPlan, base: Checkpoint, tuned: [Checkpoint], options: DeltaStatisticsOptions) {
        self.plan = plan
        self.base = base
        self.tuned = tuned
        self.options = options
        deltaCount = tuned.count
        var pairs: [(Int, Int)] = []
        for i in 0..<deltaCount { for j in (i + 1)..<max(i + 1, deltaCount) { pairs.append((i, j)) } }
        self.pairs = pairs
        thresholdBits = options.thresholds.map { $0.magnitude.bitPattern }
        states = [TensorState?](repeating: nil, count: plan.tensors.count)
        let scopeCount = plan.scopeNames.count
        scopeHistograms = (0..<scopeCount).map { _ in (0..<tuned.count).map { _ in RangeHistogram() } }
        scopeTop = [[TopBoundary?]](repeating: [TopBoundary?](repeating: nil, count: tuned.count), count: scopeCount)
        scopeFine = [[[Int]?]](repeating: [[Int]?](repeating: nil, count: tuned.count), count: scopeCount)
        let workers = max(1, min(options.workers, plan.tensors.count))
        scratches = (0..<workers).map { _ in
            StatisticsScratch(chunk: options.chunkElements, deltaCount: tuned.count, pairCount: pairs.count)
        }
    }

    /// Runs `body` for every tensor, largest first, on `options.workers` threads,
    /// each with its own scratch. The first error stops the remaining work.
    private func forEachTensor(_ body: @Sendable (Int, StatisticsScratch) throws(CheckpointError) -> Void) throws(DeltaStatisticsError) {
        let order = plan.tensors.indices.sorted { plan.tensors[$0].base.elementCount > plan.tensors[$1].base.elementCount }
        next = 0
        failure = nil
        DispatchQueue.concurrentPerform(iterations: scratches.count) { worker in
            let scratch = scratches[worker]
            while true {
                lock.lock()
                let index = failure == nil && next < order.count ? order[next] : nil
                next += 1
                lock.unlock()
                guard let index else { return }
                do throws(CheckpointError) {
                    try body(index, scratch)
                } catch {
                    lock.lock()
                    if failure == nil { failure = error }
                    lock.unlock()
                }
            }
        }
        if let failure { throw .checkpoint(failure) }
    }

    /// Decodes elements [start, start + count) of `entry` into `destination`.
    private func decode(_ checkpoint: Checkpoint, _ entry: TensorEntry, start: Int, count: Int,
                        into destination: UnsafeMutablePointer<Float>) throws(CheckpointError) {
        let width = entry.dtype.blockBytes  // floating-point types store one element per block
        let bytes = UnsafeRawBufferPointer(rebasing: checkpoint.data(of: entry)[(start * width)..<((start + count) * width)])
        do {
            try ElementCodec.decode(entry.dtype, from: bytes, into: UnsafeMutableBufferPointer(start: destination, count: count))
        } catch {
            throw .codec(file: checkpoint.files[entry.fileIndex].path, tensor: entry.name, problem: error)
        }
    }

    /// Streams one tensor chunk by chunk: decodes the base and every δ into the
    /// scratch, calls `measure` with the chunk length, and releases pages behind.
    private func stream(_ tensor: PlannedTensor, _ scratch: StatisticsScratch,
                        _ measure: (Int) -> Void) throws(CheckpointError) {
        var cursors = [ReleaseCursor(base, tensor.base)]
        for d in 0..<deltaCount { cursors.append(ReleaseCursor(tuned[d], tensor.tuned[d])) }
        let n = tensor.base.elementCount
        var start = 0
        while start < n {
            let count = min(scratch.chunk, n - start)
            try decode(base, tensor.base, start: start, count: count, into: scratch.base)
            for d in 0..<deltaCount {
                try decode(tuned[d], tensor.tuned[d], start: start, count: count, into: scratch.deltas[d])
            }
            measure(count)
            start += count
            for c in cursors.indices { cursors[c].advance(toElement: start) }
        }
    }

    // MARK: First pass

    func firstPass() throws(DeltaStatisticsError) {
        try forEachTensor { (index, scratch) throws(CheckpointError) in
            let tensor = plan.tensors[index]
            var stats = ScopeStatistics(name: tensor.name, layer: layerIndex(ofTensor: tensor.name),
                                        deltaCount: deltaCount, thresholdCount: thresholdBits.count)
            stats.tensorCount = 1
            stats.elements = tensor.base.elementCount
            var moments = [DeltaMoments](repeating: DeltaMoments(), count: deltaCount)
            try stream(tensor, scratch) { count in
                let magnitude = DeltaKernels.baseMagnitude(scratch.base, count)
                stats.baseL1 += magnitude.sum
                stats.baseFinite += magnitude.finite
                for d in 0..<deltaCount {
                    stats.deltas[d].withinThreshold.withUnsafeMutableBufferPointer { within in
                        DeltaKernels.subtractAndMeasure(scratch.deltas[d], scratch.base, count, thresholds: thresholdBits,
                                                        within: within.baseAddress!, into: &moments[d])
                    }
                    DeltaKernels.histogram(scratch.deltas[d], count, bins: scratch.bins[d])
                }
                for (p, (a, b)) in pairs.enumerated() {
                    DeltaKernels.comparePair(scratch.deltas[a], scratch.deltas[b], count, into: &stats.pairs[p])
                }
                if deltaCount > 1 {
                    let election = DeltaKernels.elect(scratch.deltas, deltaCount: deltaCount, count)
                    stats.electionEntries += election.entries
                    stats.electionDropped += election.dropped
                }
            }
            var state = TensorState(statistics: stats)
            for d in 0..<deltaCount {
                moments[d].findBinRange(scratch.bins[d])
                let m = moments[d]
                let histogram = scratch.bins[d]
                let counts = { (bin: Int) in histogram[2 * bin] }
                let sums = { (bin: Int) in MagnitudeBins.sum(bin: bin, count: histogram[2 * bin], fineSum: histogram[2 * bin + 1]) }
                var figures = stats.deltas[d]
                figures.elements = tensor.base.elementCount - m.nonFinite
                figures.nonFinite = m.nonFinite
                figures.zeros = m.zeros
                figures.l1 = 0
                if m.highBin >= m.lowBin {
                    for bin in m.lowBin...m.highBin { figures.l1 += sums(bin) }
                }
                figures.sumOfSquares = m.sumOfSquares
                figures.maxAbs = Float(bitPattern: m.maxBits)
                figures.topEntries = figures.elements > 0 ? max(1, figures.elements / 100) : 0
                if m.highBin >= m.lowBin {
                    for bin in m.lowBin...m.highBin where counts(bin) > 0 {
                        figures.log10Histogram[Int(Log10Bins.ofMagnitudeBin[bin])] += counts(bin)
                    }
                }
                let supportK = max(1, Int(options.density * Double(figures.elements)))
                state.top.append(TopBoundary(k: max(1, figures.topEntries), low: m.lowBin, high: m.highBin,
                                             counts: counts, sums: sums))
                state.support.append(TopBoundary(k: supportK, low: m.lowBin, high: m.highBin,
                                                 counts: counts, sums: sums))
                state.statistics.deltas[d] = figures
            }
            lock.lock()
            for d in 0..<deltaCount {
                for scope in tensor.scopes {
                    scopeHistograms[scope][d].add(low: moments[d].lowBin, high: moments[d].highBin,
                                                  bins: scratch.bins[d])
                }
            }
            states[index] = state
            lock.unlock()
            for d in 0..<deltaCount where moments[d].highBin >= moments[d].lowBin {
                let low = moments[d].lowBin, width = moments[d].highBin - low + 1
                (scratch.bins[d] + 2 * low).update(repeating: 0, count: 2 * width)
            }
        }
    }

    /// Finds each scope's top-1 % boundary from its coarse histogram.
    func findScopeBoundaries() {
        var elements = [[Int]](repeating: [Int](repeating: 0, count: deltaCount), count: plan.scopeNames.count)
        for (index, tensor) in plan.tensors.enumerated() {
            for scope in tensor.scopes {
                for d in 0..<deltaCount { elements[scope][d] += states[index]!.statistics.deltas[d].elements }
            }
        }
        for scope in plan.scopeNames.indices {
            for d in 0..<deltaCount where elements[scope][d] > 0 {
                scopeTop[scope][d] = scopeHistograms[scope][d].boundary(k: max(1, elements[scope][d] / 100))
            }
        }
    }

    // MARK: Second pass

    func secondPass() throws(DeltaStatisticsError) {
        try forEachTensor { (index, scratch) throws(CheckpointError) in
            let tensor = plan.tensors[index]
            var state = states[index]!
            // Fine targets: slot 0 the tensor's top 1 %, slot 1 its support, 2… its scopes.
            var targets: [[FineTarget]] = []
            for d in 0..<deltaCount {
                var list: [FineTarget] = []
                var bins = [state.top[d].bin, state.support[d].bin]
                for scope in tensor.scopes { bins.append(scopeTop[scope][d]?.bin ?? -1) }
                for (slot, bin) in bins.enumerated() where bin >= 0 {
                    list.append(FineTarget(bin: bin, counts: scratch.fine[d][slot]))
                }
                targets.append(list)
            }
            try stream(tensor, scratch) { count in
                for d in 0..<deltaCount {
                    let delta = UnsafeMutableBufferPointer(start: scratch.deltas[d], count: count)
                    TaskVector.subtract(UnsafeBufferPointer(delta), UnsafeBufferPointer(start: scratch.base, count: count), into: delta)
                    if !targets[d].isEmpty {
                        DeltaKernels.countBoundaryPatterns(scratch.deltas[d], count, targets: targets[d])
                    }
                }
                for (p, (a, b)) in pairs.enumerated() {
                    DeltaKernels.classifySupports(scratch.deltas[a], scratch.deltas[b], count,
                                                  boundaryA: state.support[a].bin, boundaryB: state.support[b].bin,
                                                  overlap: scratch.overlaps[p])
                }
            }
            var supportPattern = [Int](), supportSize = [Int]()
            for d in 0..<deltaCount {
                state.statistics.deltas[d].topMass = state.top[d].resolve(scratch.fine[d][0]).mass
                let support = state.support[d].resolve(scratch.fine[d][1])
                supportPattern.append(support.pattern)
                supportSize.append(support.support)
            }
            for (p, (a, b)) in pairs.enumerated() {
                let overlap = scratch.overlaps[p]
                var intersection = overlap.bothClear
                if state.support[b].bin >= 0 {
                    for f in supportPattern[b]..<MagnitudeBins.fineCount { intersection += overlap.secondWhenFirstIn[f] }
                }
                if state.support[a].bin >= 0 {
                    for f in supportPattern[a]..<MagnitudeBins.fineCount { intersection += overlap.firstWhenSecondIn[f] }
                }
                for (key, count) in overlap.bothOnBoundary
                where Int(key >> 15) >= supportPattern[a] && Int(key & MagnitudeBins.fineMask) >= supportPattern[b] {
                    intersection += count
                }
                state.statistics.pairs[p].supportFirst = supportSize[a]
                state.statistics.pairs[p].supportSecond = supportSize[b]
                state.statistics.pairs[p].supportIntersection = intersection
                overlap.reset()
            }
            lock.lock()
            for d in 0..<deltaCount {
                for (i, scope) in tensor.scopes.enumerated() where (scopeTop[scope][d]?.bin ?? -1) >= 0 {
                    let fine = scratch.fine[d][2 + i]
                    var total = scopeFine[scope][d] ?? [Int](repeating: 0, count: MagnitudeBins.fineCount)
                    for f in 0..<MagnitudeBins.fineCount where fine[f] != 0 { total[f] += fine[f] }
                    scopeFine[scope][d] = total
                }
            }
            states[index] = state
            lock.unlock()
            for d in 0..<deltaCount {
                for target in targets[d] {
                    target.counts.update(repeating: 0, count: MagnitudeBins.fineCount)
                }
            }
        }
    }

    // MARK: Report

    func report(names: [String]) -> DeltaStatisticsReport {
        let thresholdCount = thresholdBits.count
        var scopes = plan.scopeNames.indices.map {
            ScopeStatistics(name: plan.scopeNames[$0], layer: plan.scopeLayers[$0], deltaCount: deltaCount, thresholdCount: thresholdCount)
        }
        for (index, tensor) in plan.tensors.enumerated() {
            for scope in tensor.scopes { scopes[scope].accumulate(states[index]!.statistics) }
        }
        for scope in scopes.indices {
            for d in 0..<deltaCount {
                let figures = scopes[scope].deltas[d]
                scopes[scope].deltas[d].topEntries = figures.elements > 0 ? max(1, figures.elements / 100) : 0
                if let top = scopeTop[scope][d] {
                    let fine = scopeFine[scope][d]
                    scopes[scope].deltas[d].topMass = fine.map { f in f.withUnsafeBufferPointer { top.resolve($0.baseAddress!).mass } }
                        ?? top.resolve(nil).mass
                }
            }
        }
        let kindScopes = TensorKind.allCases.indices.map { scopes[1 + $0] }.filter { $0.tensorCount > 0 }
        let layerScopes = scopes[(1 + TensorKind.allCases.count)...].filter { $0.tensorCount > 0 }
        return DeltaStatisticsReport(
            basePath: base.path, names: names, paths: tuned.map(\.path), thresholds: options.thresholds,
            density: options.density, model: scopes[0], kinds: kindScopes, layers: Array(layerScopes),
            tensors: states.map { $0!.statistics }, skipped: plan.skipped)
    }
}
