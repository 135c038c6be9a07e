import Checkpoints
import Dispatch
import Foundation

/// What the full pass learned about one tensor.
struct TensorState {
    var statistics: ScopeStatistics
    /// Per delta: where the top 1 % ends, and where the top-k support at the run's density ends.
    var top: [TopBoundary] = []
    var support: [TopBoundary] = []
    /// The full pass did not collect the values its own top-k figures need
    /// (a sampled range missed): the boundary pass computes them.
    var unresolved = false
}

/// The candidate ranges the sample gave one tensor, per delta (nil: not collected).
struct TensorRanges {
    var top: [CandidateRange?]
    var support: [CandidateRange?]
}

/// One worker's reusable buffers. Sizes: chunk buffers hold `chunk` floats;
/// coarse arrays `MagnitudeBins.coarseCount` entries (packed ones
/// `PackedBins.slots`); fine arrays `fineCount`.
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
    /// Per delta, the packed histogram the full pass adds to, which also marks
    /// the coarse bins whose exact patterns it collects (see `PackedBins`).
    let packed: [UnsafeMutablePointer<UInt64>]
    /// Per delta, the patterns one chunk collected, and all the tensor collected.
    let collected: [UnsafeMutablePointer<UInt32>]
    let patterns: [PatternCounts]
    /// Per delta, bit masks of the non-zero finite entries of a mostly zero chunk.
    let masks: [UnsafeMutablePointer<UInt64>]
    /// [delta][slot] fine histograms.
    let fine: [[UnsafeMutablePointer<Int>]]
    let overlaps: [PairOverlapScratch]
    let pairCandidates: [PairCandidates]
    /// Per delta, sample counts per coarse bin and the bins they touched.
    let sampleCounts: [UnsafeMutablePointer<Int32>]
    var sampleBins: [[Int]]
    /// Raw bytes of one chunk (`chunk` elements of up to 8 bytes).
    let raw: UnsafeMutableRawPointer

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
        packed = (0..<deltaCount).map { _ in zeroed(PackedBins.slots, UInt64.self) }
        collected = (0..<deltaCount).map { _ in zeroed(chunk, UInt32.self) }
        patterns = (0..<deltaCount).map { _ in PatternCounts() }
        masks = (0..<deltaCount).map { _ in zeroed((chunk + 63) / 64, UInt64.self) }
        fine = (0..<deltaCount).map { _ in (0..<Self.fineSlots).map { _ in zeroed(MagnitudeBins.fineCount, Int.self) } }
        overlaps = (0..<pairCount).map { _ in PairOverlapScratch() }
        pairCandidates = (0..<pairCount).map { _ in PairCandidates() }
        sampleCounts = (0..<deltaCount).map { _ in zeroed(MagnitudeBins.coarseCount, Int32.self) }
        sampleBins = [[Int]](repeating: [], count: deltaCount)
        raw = .allocate(byteCount: 8 * chunk, alignment: 16)
    }

    deinit {
        base.deallocate()
        for d in 0..<deltaCount { deltas[d].deallocate() }
        deltas.deallocate()
        for p in bins { p.deallocate() }
        for p in packed { p.deallocate() }
        for p in collected { p.deallocate() }
        for p in masks { p.deallocate() }
        for slots in fine { for p in slots { p.deallocate() } }
        for p in sampleCounts { p.deallocate() }
        raw.deallocate()
    }

    /// Whether delta `d` collects the exact patterns of coarse bin `bin`.
    func collects(_ bin: Int, delta d: Int) -> Bool { packed[d][bin] & PackedBins.collect != 0 }
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

    let lock = NSLock()
    /// Work queue position and first error of the current pass (under `lock`).
    private var next = 0
    private var failure: CheckpointError?
    var states: [TensorState?]
    /// Per tensor, the candidate ranges from its sample.
    var ranges: [TensorRanges?]
    /// [scope][delta] sample estimates, then the values collected around each scope's boundary
    /// (nil when not collected: the boundary pass counts that scope's boundary bin).
    let scopeEstimates: [[SampleEstimate]]
    var scopeCandidates: [[ScopeCandidates?]]
    /// Distinct patterns held by all `scopeCandidates` together (at most `sampling.scopePatternBudget`).
    private var heldPatterns = 0
    /// [scope][delta] coarse histograms of the full pass.
    let scopeHistograms: [[RangeHistogram]]
    /// [scope][delta] top-1 % boundaries, after the full pass.
    var scopeTop: [[TopBoundary?]]
    /// [scope][delta] top-1 % mass, once resolved.
    var scopeMass: [[Double?]]
    /// [scope][delta] fine counts of the boundary bin, for scopes the boundary pass resolves.
    var scopeFine: [[[Int]?]]
    /// One per worker, used by every pass (each pass leaves them cleared).
    private let scratches: [StatisticsScratch]
    /// Reads the base (checkpoint 0) and the fine-tuned checkpoints.
    let reader: CheckpointReader

    init(plan: StatisticsPlan, base: Checkpoint, tuned: [Checkpoint], options: DeltaStatisticsOptions) throws(DeltaStatisticsError) {
        do { reader = try CheckpointReader([base] + tuned) } catch { throw .checkpoint(error) }
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
        ranges = [TensorRanges?](repeating: nil, count: plan.tensors.count)
        let scopeCount = plan.scopeNames.count
        scopeEstimates = (0..<scopeCount).map { _ in (0..<tuned.count).map { _ in SampleEstimate() } }
        scopeCandidates = [[ScopeCandidates?]](repeating: [ScopeCandidates?](repeating: nil, count: tuned.count), count: scopeCount)
        scopeHistograms = (0..<scopeCount).map { _ in (0..<tuned.count).map { _ in RangeHistogram() } }
        scopeTop = [[TopBoundary?]](repeating: [TopBoundary?](repeating: nil, count: tuned.count), count: scopeCount)
        scopeMass = [[Double?]](repeating: [Double?](repeating: nil, count: tuned.count), count: scopeCount)
        scopeFine = [[[Int]?]](repeating: [[Int]?](repeating: nil, count: tuned.count), count: scopeCount)
        let workers = max(1, min(options.workers, plan.tensors.count))
        scratches = (0..<workers).map { _ in
            StatisticsScratch(chunk: options.chunkElements, deltaCount: tuned.count, pairCount: pairs.count)
        }
    }

    /// Runs `body` for every tensor in `indexes`, largest first, on `options.workers` threads,
    /// each with its own scratch. The first error stops the remaining work.
    func forEachTensor(_ indexes: [Int]? = nil,
                               _ body: @Sendable (Int, StatisticsScratch) throws(CheckpointError) -> Void) throws(DeltaStatisticsError) {
        let order = (indexes ?? Array(plan.tensors.indices)).sorted {
            plan.tensors[$0].base.elementCount > plan.tensors[$1].base.elementCount
        }
        next = 0
        failure = nil
        DispatchQueue.concurrentPerform(iterations: min(scratches.count, order.count)) { worker in
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

    /// Streams one tensor chunk by chunk: reads the base and every fine-tuned
    /// checkpoint into the scratch and calls `measure` with the chunk length.
    func stream(_ tensor: PlannedTensor, _ scratch: StatisticsScratch,
                        _ measure: (Int) -> Void) throws(CheckpointError) {
        let n = tensor.base.elementCount
        var start = 0
        while start < n {
            let count = min(scratch.chunk, n - start)
            try reader.read(0, tensor.base, start: start, count: count, raw: scratch.raw, into: scratch.base)
            for d in 0..<deltaCount {
                try reader.read(1 + d, tensor.tuned[d], start: start, count: count, raw: scratch.raw, into: scratch.deltas[d])
            }
            measure(count)
            start += count
        }
    }

    // MARK: Full pass

    /// The coarse bins each delta collects exact patterns from in tensor `index`:
    /// the tensor's candidate ranges, its scopes', and the bins of the thresholds.
    private func collectedBins(_ index: Int, delta d: Int) -> [ClosedRange<Int>] {
        var list: [ClosedRange<Int>] = []
        if let bins = ranges[index]!.top[d]?.collected { list.append(bins) }
        if let bins = ranges[index]!.support[d]?.collected { list.append(bins) }
        for scope in plan.tensors[index].scopes {
            if let bins = scopeCandidates[scope][d]?.range.collected { list.append(bins) }
        }
        for bits in thresholdBits where bits < MagnitudeBins.nonFinite {
            let bin = Int(bits &>> MagnitudeBins.shift)
            list.append(bin...bin)
        }
        return list
    }

    /// One pass over every tensor: all additive figures, the coarse
    /// histograms, and the exact patterns of the candidate bins, from which each
    /// tensor's top-k figures are resolved at its end.
    func fullPass() throws(DeltaStatisticsError) {
        try forEachTensor { (index, scratch) throws(CheckpointError) in
            let tensor = plan.tensors[index]
            let tensorRanges = ranges[index]!
            lock.lock()
            let collected = (0..<deltaCount).map { collectedBins(index, delta: $0) }
            lock.unlock()
            for d in 0..<deltaCount { for bins in collected[d] { PackedBins.mark(scratch.packed[d], bins, true) } }
            // Pairs whose supports were not both predicted are left to the boundary pass.
            let screens = pairs.map { a, b in
                tensorRanges.support[a].flatMap { ra in tensorRanges.support[b].map { SupportScreen(ra, $0) } }
            }
            var stats = ScopeStatistics(name: tensor.name, layer: layerIndex(ofTensor: tensor.name),
                                        deltaCount: deltaCount, thresholdCount: thresholdBits.count)
            stats.tensorCount = 1
            stats.elements = tensor.base.elementCount
            var moments = [DeltaMoments](repeating: DeltaMoments(), count: deltaCount)
            var pending = 0
            try stream(tensor, scratch) { count in
                let magnitude = DeltaKernels.baseMagnitude(scratch.base, count)
                stats.baseL1 += magnitude.sum
                stats.baseFinite += magnitude.finite
                pending += count
                var measures: [ChunkMeasure] = []
                var sparse = [Bool](repeating: false, count: deltaCount)
                for d in 0..<deltaCount {
                    measures.append(DeltaKernels.subtractAndMeasure(scratch.deltas[d], scratch.base, count, into: &moments[d]))
                    // Mostly zero (a sparse fine-tune): visit the non-zero entries only.
                    sparse[d] = 4 * (measures[d].zeros + measures[d].nonFinite) >= 3 * count
                    let found = sparse[d]
                        ? DeltaKernels.sparseHistogram(scratch.deltas[d], count, packed: scratch.packed[d],
                                                       collected: scratch.collected[d], masks: scratch.masks[d])
                        : DeltaKernels.histogram(scratch.deltas[d], count, packed: scratch.packed[d], collected: scratch.collected[d])
                    scratch.patterns[d].add(scratch.collected[d], count: found)
                    if pending >= PackedBins.capacity - scratch.chunk {
                        PackedBins.empty(scratch.packed[d], upTo: Int(moments[d].maxBits &>> MagnitudeBins.shift), into: scratch.bins[d])
                    }
                }
                if pending >= PackedBins.capacity - scratch.chunk { pending = 0 }
                let bothBefore = stats.pairs.first?.bothNonzero ?? 0, agreeBefore = stats.pairs.first?.signAgreements ?? 0
                for (p, (a, b)) in pairs.enumerated() {
                    DeltaKernels.comparePair(scratch.deltas[a], scratch.deltas[b], count, into: &stats.pairs[p],
                                             measures: (measures[a], measures[b]))
                    if let screen = screens[p] {
                        if let sparseOne = sparse[b] ? b : sparse[a] ? a : nil {
                            DeltaKernels.screenSupports(scratch.deltas[a], scratch.deltas[b], count, screen: screen,
                                                        into: scratch.pairCandidates[p], masks: scratch.masks[sparseOne])
                        } else {
                            DeltaKernels.screenSupports(scratch.deltas[a], scratch.deltas[b], count, screen: screen,
                                                        into: scratch.pairCandidates[p])
                        }
                    }
                }
                if deltaCount == 2 && measures[0].nonFinite == 0 && measures[1].nonFinite == 0 {
                    // Two finite deltas: Σδ takes the sign of the larger |δ| (+ on a tie), so exactly
                    // one entry loses wherever both are non-zero with opposite signs.
                    let both = stats.pairs[0].bothNonzero - bothBefore, agree = stats.pairs[0].signAgreements - agreeBefore
                    stats.electionEntries += 2 * count - measures[0].zeros - measures[1].zeros
                    stats.electionDropped += both - agree
                } else if deltaCount > 1 {
                    let election = DeltaKernels.elect(scratch.deltas, deltaCount: deltaCount, count)
                    stats.electionEntries += election.entries
                    stats.electionDropped += election.dropped
                }
            }
            var state = TensorState(statistics: stats)
            for d in 0..<deltaCount {
                PackedBins.empty(scratch.packed[d], upTo: Int(moments[d].maxBits &>> MagnitudeBins.shift), into: scratch.bins[d])
                state.measure(delta: d, moments: &moments[d], elements: tensor.base.elementCount, scratch: scratch,
                              thresholdBits: thresholdBits, density: options.density)
            }
            resolveTop(&state, scratch: scratch)
            resolveSupports(&state, ranges: tensorRanges, scratch: scratch)
            lock.lock()
            for d in 0..<deltaCount {
                for scope in tensor.scopes {
                    scopeHistograms[scope][d].add(low: moments[d].lowBin, high: moments[d].highBin, bins: scratch.bins[d])
                    collect(scratch.patterns[d], into: scope, delta: d)
                }
            }
            states[index] = state
            lock.unlock()
            for d in 0..<deltaCount {
                for bins in collected[d] { PackedBins.mark(scratch.packed[d], bins, false) }
                scratch.patterns[d].removeAll()
                if moments[d].highBin >= moments[d].lowBin {
                    let low = moments[d].lowBin, width = moments[d].highBin - low + 1
                    (scratch.bins[d] + 2 * low).update(repeating: 0, count: 2 * width)
                }
            }
            for candidates in scratch.pairCandidates { candidates.reset() }
        }
    }

    /// The tensor's top-1 % mass of each delta, from the collected patterns of its boundary bin.
    private func resolveTop(_ state: inout TensorState, scratch: StatisticsScratch) {
        for d in 0..<deltaCount {
            guard let mass = resolve(state.top[d], scratch: scratch, delta: d)?.mass else {
                state.unresolved = true
                return
            }
            state.statistics.deltas[d].topMass = mass
        }
    }

    /// Support sizes and intersections, when every delta's support boundary lies in the range its screen used.
    private func resolveSupports(_ state: inout TensorState, ranges tensorRanges: TensorRanges, scratch: StatisticsScratch) {
        guard !state.unresolved else { return }
        var threshold: [UInt32] = [], size: [Int] = []
        for d in 0..<deltaCount {
            guard let range = tensorRanges.support[d], range.holds(state.support[d].bin),
                  let support = resolve(state.support[d], scratch: scratch, delta: d) else {
                state.unresolved = true
                return
            }
            threshold.append(state.support[d].bin < 0 ? 1 : UInt32(state.support[d].bin << 15 | support.pattern))
            size.append(support.support)
        }
        for (p, (a, b)) in pairs.enumerated() {
            state.statistics.pairs[p].supportFirst = size[a]
            state.statistics.pairs[p].supportSecond = size[b]
            state.statistics.pairs[p].supportIntersection =
                scratch.pairCandidates[p].intersection(thresholdA: threshold[a], thresholdB: threshold[b])
        }
    }

    /// Resolves `boundary` from the patterns delta `d` collected, or nil when its bin was not collected.
    private func resolve(_ boundary: TopBoundary, scratch: StatisticsScratch, delta d: Int) -> (pattern: Int, mass: Double, support: Int)? {
        guard boundary.bin >= 0 else { return boundary.resolve(nil) }
        guard scratch.collects(boundary.bin, delta: d) else { return nil }
        let fine = scratch.fine[d][0], patterns = scratch.patterns[d]
        patterns.spread(bin: boundary.bin, into: fine)
        defer { patterns.spread(bin: boundary.bin, into: fine, sign: -1) }
        return boundary.resolve(fine)
    }

    /// Adds a tensor's patterns in the scope's range to the scope's (under `lock`);
    /// past the budget the scope stops collecting and is left to the boundary pass.
    private func collect(_ patterns: PatternCounts, into scope: Int, delta d: Int) {
        guard let candidates = scopeCandidates[scope][d], let bins = candidates.range.collected else { return }
        let before = candidates.patterns.count
        candidates.patterns.add(patterns, bins: bins)
        heldPatterns += candidates.patterns.count - before
        if heldPatterns > options.sampling.scopePatternBudget {
            heldPatterns -= candidates.patterns.count
            scopeCandidates[scope][d] = nil
        }
    }

    /// Finds each scope's top-1 % boundary from its coarse histogram and
    /// resolves its mass from the collected patterns where the range held it.
    func resolveScopes() {
        var elements = [[Int]](repeating: [Int](repeating: 0, count: deltaCount), count: plan.scopeNames.count)
        for (index, tensor) in plan.tensors.enumerated() {
            for scope in tensor.scopes {
                for d in 0..<deltaCount { elements[scope][d] += states[index]!.statistics.deltas[d].elements }
            }
        }
        var fine = [Int](repeating: 0, count: MagnitudeBins.fineCount)
        for scope in plan.scopeNames.indices {
            for d in 0..<deltaCount where elements[scope][d] > 0 {
                let top = scopeHistograms[scope][d].boundary(k: max(1, elements[scope][d] / 100))
                scopeTop[scope][d] = top
                if top.bin < 0 {
                    scopeMass[scope][d] = top.resolve(nil).mass
                } else if let candidates = scopeCandidates[scope][d], candidates.range.holds(top.bin) {
                    fine.withUnsafeMutableBufferPointer { buffer in
                        candidates.patterns.spread(bin: top.bin, into: buffer.baseAddress!)
                        scopeMass[scope][d] = top.resolve(buffer.baseAddress!).mass
                        candidates.patterns.spread(bin: top.bin, into: buffer.baseAddress!, sign: -1)
                    }
                }
                scopeCandidates[scope][d] = nil
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
                if let mass = scopeMass[scope][d] { scopes[scope].deltas[d].topMass = mass }
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

extension TensorState {
    /// Fills delta `d`'s figures from its moments and coarse histogram (in
    /// `scratch.bins[d]`) and the collected patterns of the threshold bins,
    /// and sets its top-1 % and support boundaries.
    mutating func measure(delta d: Int, moments m: inout DeltaMoments, elements: Int, scratch: StatisticsScratch,
                          thresholdBits: [UInt32], density: Double) {
        m.findBinRange(scratch.bins[d])
        let histogram = scratch.bins[d]
        let counts = { (bin: Int) in histogram[2 * bin] }
        let sums = { (bin: Int) in MagnitudeBins.sum(bin: bin, count: histogram[2 * bin], fineSum: histogram[2 * bin + 1]) }
        var figures = statistics.deltas[d]
        figures.elements = elements - m.nonFinite
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
        // |δ| ≤ τ: zeros, the bins below τ's, and the collected patterns of τ's bin up to τ.
        for (t, bits) in thresholdBits.enumerated() {
            guard bits < MagnitudeBins.nonFinite else {
                figures.withinThreshold[t] = figures.elements
                continue
            }
            let bin = Int(bits &>> MagnitudeBins.shift)
            var within = m.zeros + scratch.patterns[d].count(bin: bin, atMost: bits)
            if m.highBin >= m.lowBin && bin > m.lowBin {
                for below in m.lowBin..<min(bin, m.highBin + 1) { within += counts(below) }
            }
            figures.withinThreshold[t] = within
        }
        let supportK = max(1, Int(density * Double(figures.elements)))
        top.append(TopBoundary(k: max(1, figures.topEntries), low: m.lowBin, high: m.highBin, counts: counts, sums: sums))
        support.append(TopBoundary(k: supportK, low: m.lowBin, high: m.highBin, counts: counts, sums: sums))
        statistics.deltas[d] = figures
    }
}
