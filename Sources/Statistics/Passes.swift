import Checkpoints
import Merging

extension DeltaStatistics {
    /// Streams δᵢ = θᵢ − θ₀ for every tensor the base shares with all of `tuned` and
    /// measures them (every figure is defined in docs/stats.md).
    ///
    /// Two passes over the tensors, tensors in parallel, each decoded chunk by chunk from
    /// the checkpoints' maps. Pass 1 takes every additive figure and a magnitude
    /// histogram of each delta, which places each top-k boundary (each tensor's top 1 %
    /// and support, each scope's top 1 %) in one coarse bin. Pass 2 counts the exact keys
    /// of those bins, which gives the top-k figures exactly, and the positions both
    /// deltas of a pair keep in their supports (in a third pass over a tensor where a pair
    /// leaves too many positions undecided, see `supportRecordLimit`).
    public static func compute(
        base: Checkpoint, tuned: [StatisticsInput], names: [String], options: DeltaStatisticsOptions = DeltaStatisticsOptions()
    ) throws(DeltaStatisticsError) -> DeltaStatisticsReport {
        precondition(!tuned.isEmpty && names.count == tuned.count, "one name per fine-tuned checkpoint")
        precondition(options.chunkElements > 0, "chunkElements must be positive, not \(options.chunkElements)")
        let run = StatisticsRun(plan: try StatisticsPlan(base: base, tuned: tuned), inputs: [base] + tuned.map(\.checkpoint), options: options)
        let measured = try run.eachTensor(run.measure)
        let tensors = try run.eachTensor { (index, scratch) throws(CheckpointError) in
            try run.resolve(index, measured[index], scratch)
        }
        return run.report(tensors, names: names)
    }
}

/// One worker's buffers: a chunk of the base and of each delta, and per delta a
/// magnitude histogram (pass 1) and key counts of its boundary bins (pass 2: a tensor's
/// top 1 % and support, and its three scopes' top 1 %).
final class StatisticsScratch: @unchecked Sendable {
    let base: UnsafeMutablePointer<Float>
    let deltas: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let histograms: [MagnitudeHistogram]
    let keyCounts: [BinKeyCounts]

    init(chunk: Int, deltaCount: Int) {
        base = .allocate(capacity: chunk)
        deltas = .allocate(capacity: deltaCount)
        for d in 0..<deltaCount { (deltas + d).initialize(to: .allocate(capacity: chunk)) }
        histograms = (0..<deltaCount).map { _ in MagnitudeHistogram() }
        keyCounts = (0..<deltaCount).map { _ in BinKeyCounts(capacity: 5) }
    }

    deinit {
        base.deallocate()
        for d in 0..<histograms.count { deltas[d].deallocate() }
        deltas.deallocate()
    }
}

/// What pass 1 found in one tensor: its additive figures and, per delta, where its
/// top 1 % and its support end.
struct MeasuredTensor: Sendable {
    var statistics: ScopeStatistics
    var top: [LargestMagnitudes] = []
    var support: [LargestMagnitudes] = []
}

/// The shared state of one statistics run.
final class StatisticsRun: @unchecked Sendable {
    let plan: StatisticsPlan
    /// The base (0) and the checkpoints of the fine-tuned inputs (an adapter's weights file).
    let inputs: [Checkpoint]
    let options: DeltaStatisticsOptions
    let deltaCount: Int
    let pairs: [(Int, Int)]
    private let scratches: [StatisticsScratch]
    /// [scope][delta], shared by the workers.
    let scopeTops: Locked<[[ScopeTop]]>

    init(plan: StatisticsPlan, inputs: [Checkpoint], options: DeltaStatisticsOptions) {
        self.plan = plan
        self.inputs = inputs
        self.options = options
        deltaCount = inputs.count - 1
        pairs = (0..<deltaCount).flatMap { i in ((i + 1)..<inputs.count - 1).map { (i, $0) } }
        scratches = (0..<max(1, min(options.workers, plan.tensors.count))).map { _ in
            StatisticsScratch(chunk: options.chunkElements, deltaCount: inputs.count - 1)
        }
        var tops = plan.scopes.map { _ in [ScopeTop](repeating: ScopeTop(), count: inputs.count - 1) }
        for tensor in plan.tensors {
            for scope in tensor.scopes { tops[scope] = tops[scope].map { ScopeTop(tensors: $0.tensors + 1) } }
        }
        scopeTops = Locked(tops)
    }

    /// `body(tensor, scratch)` for every tensor of the plan on the run's workers, the
    /// results in the plan's order. Tensors outside the layers come first, then the layers
    /// one after the other (so few layer scopes are open at once, see `ScopeTop`), the
    /// largest first within each.
    func eachTensor<Result: Sendable>(
        _ body: @Sendable (Int, StatisticsScratch) throws(CheckpointError) -> Result
    ) throws(DeltaStatisticsError) -> [Result] {
        let order = plan.tensors.indices.sorted {
            let a = plan.tensors[$0], b = plan.tensors[$1]
            return (a.layerScope, b.base.elementCount) < (b.layerScope, a.base.elementCount)
        }
        do {
            let results = try WorkerQueue.map(count: order.count, workers: scratches.count) { (worker, job) throws(CheckpointError) in
                try body(order[job], scratches[worker])
            }
            var byTensor = [Result?](repeating: nil, count: order.count)
            for (job, tensor) in order.enumerated() { byTensor[tensor] = results[job] }
            return byTensor.map { $0! }
        } catch {
            throw .checkpoint(error)
        }
    }

    /// Pass 1 over one tensor: every additive figure and each delta's magnitude
    /// histogram, which is added to the tensor's scopes and places its own boundaries.
    func measure(_ index: Int, _ scratch: StatisticsScratch) throws(CheckpointError) -> MeasuredTensor {
        let tensor = plan.tensors[index]
        var stats = ScopeStatistics(name: tensor.base.name, layer: layerIndex(ofTensor: tensor.base.name),
                                    deltaCount: deltaCount, thresholdCount: options.thresholds.count)
        stats.tensorCount = 1
        stats.elements = tensor.base.elementCount
        let bounds = options.thresholds.map { min($0.magnitude.bitPattern, MagnitudeBins.nonFinite - 1) }
        try stream(tensor, scratch) { count in
            let magnitude = DeltaKernels.baseMagnitude(scratch.base, count)
            stats.baseL1 += magnitude.sum
            stats.baseFinite += magnitude.finite
            let chunk = (0..<deltaCount).map { DeltaKernels.measure(scratch.deltas[$0], count, bounds, into: &stats.deltas[$0]) }
            for d in 0..<deltaCount { scratch.histograms[d].add(scratch.deltas[d], count, zeros: chunk[d].zeros) }
            let bothBefore = stats.pairs.first?.bothNonzero ?? 0, agreeBefore = stats.pairs.first?.signAgreements ?? 0
            for (p, (a, b)) in pairs.enumerated() { DeltaKernels.compare(scratch.deltas[a], scratch.deltas[b], count, into: &stats.pairs[p]) }
            if deltaCount == 2 && chunk[0].nonFinite == 0 && chunk[1].nonFinite == 0 {
                // Two finite deltas: Σδ takes the sign of the larger |δ| (+ on a tie), so exactly
                // one entry loses wherever both are non-zero with opposite signs.
                stats.electionEntries += 2 * count - chunk[0].zeros - chunk[1].zeros
                stats.electionDropped += (stats.pairs[0].bothNonzero - bothBefore) - (stats.pairs[0].signAgreements - agreeBefore)
            } else if deltaCount > 1 {
                let election = DeltaKernels.elect(scratch.deltas, deltaCount: deltaCount, count)
                stats.electionEntries += election.entries
                stats.electionDropped += election.dropped
            }
        }
        var measured = MeasuredTensor(statistics: stats)
        for (d, histogram) in scratch.histograms.enumerated() {
            histogram.flush()
            measured.statistics.deltas[d].elements = tensor.base.elementCount - stats.deltas[d].nonFinite
            for bin in histogram.bins where histogram.counts[bin] != 0 {
                measured.statistics.deltas[d].l1 += histogram.sum(bin)
                measured.statistics.deltas[d].log10Histogram[Int(Log10Bins.ofMagnitudeBin[bin])] += histogram.counts[bin]
            }
            let elements = measured.statistics.deltas[d].elements
            measured.top.append(histogram.largest(max(1, elements / 100)))
            measured.support.append(histogram.largest(max(1, Int(options.density * Double(elements)))))
        }
        scopeTops.withLock { tops in
            for scope in tensor.scopes {
                for d in 0..<deltaCount { tops[scope][d].add(scratch.histograms[d], elements: measured.statistics.deltas[d].elements) }
            }
        }
        for histogram in scratch.histograms { histogram.clear() }
        return measured
    }

    /// Pass 2 over one tensor: counts the exact keys of its boundary bins and its
    /// scopes', which settles its top-1 % mass and support, and the support
    /// intersection of each pair: positions where both deltas lie above their boundary
    /// bins, and those where both reach them, decided once the exact keys are known.
    func resolve(_ index: Int, _ measured: MeasuredTensor, _ scratch: StatisticsScratch) throws(CheckpointError) -> ScopeStatistics {
        let tensor = plan.tensors[index]
        var stats = measured.statistics
        for d in 0..<deltaCount {
            // The support matters only to pairs.
            scratch.keyCounts[d].select([measured.top[d].bin, pairs.isEmpty ? nil : measured.support[d].bin]
                                        + scopeTops.withLock { tops in tensor.scopes.map { tops[$0][d].top?.bin } })
        }
        // Per delta, the keys that may be in its support (from its boundary bin up) and
        // those that surely are (above that bin); every non-zero one when k reaches past them.
        let low = measured.support.map { $0.bin.map { UInt32($0) << 15 } ?? 1 }
        let high = measured.support.map { $0.bin.map { UInt32($0 + 1) << 15 } ?? 1 }
        var sure = [Int](repeating: 0, count: pairs.count)
        var records = [[UInt64]](repeating: [], count: pairs.count)
        try stream(tensor, scratch) { count in
            for d in 0..<deltaCount { scratch.keyCounts[d].add(scratch.deltas[d], count) }
            for (p, (a, b)) in pairs.enumerated() where records[p].count <= options.supportRecordLimit {
                DeltaKernels.screenSupports(scratch.deltas[a], scratch.deltas[b], count, low: (low[a], low[b]), high: (high[a], high[b]),
                                            sure: &sure[p], records: &records[p])
            }
        }
        var thresholds: [UInt32] = []
        for d in 0..<deltaCount {
            let counts = scratch.keyCounts[d]
            stats.deltas[d].topMass = measured.top[d].resolve(counts.counts(of: measured.top[d].bin)).sum
            if !pairs.isEmpty {
                let support = measured.support[d].resolve(counts.counts(of: measured.support[d].bin))
                thresholds.append(support.key)
                for p in pairs.indices where pairs[p].0 == d { stats.pairs[p].supportFirst = support.atLeast }
                for p in pairs.indices where pairs[p].1 == d { stats.pairs[p].supportSecond = support.atLeast }
            }
        }
        scopeTops.withLock { tops in
            for scope in tensor.scopes { for d in 0..<deltaCount { tops[scope][d].add(scratch.keyCounts[d]) } }
        }
        // Pairs that kept too many positions are counted again with the thresholds known:
        // with them as both bounds, every position screened is surely in both supports.
        let recount = pairs.indices.filter { records[$0].count > options.supportRecordLimit }
        for p in recount {
            sure[p] = 0
            records[p] = []
        }
        if !recount.isEmpty {
            try stream(tensor, scratch) { count in
                for p in recount {
                    let (a, b) = pairs[p], bounds = (thresholds[a], thresholds[b])
                    DeltaKernels.screenSupports(scratch.deltas[a], scratch.deltas[b], count, low: bounds, high: bounds,
                                                sure: &sure[p], records: &records[p])
                }
            }
        }
        for (p, (a, b)) in pairs.enumerated() {
            stats.pairs[p].supportIntersection = sure[p] + records[p].count {
                UInt32($0 &>> 32) >= thresholds[a] && UInt32(truncatingIfNeeded: $0) >= thresholds[b]
            }
        }
        return stats
    }

    /// Adds the tensors into their scopes, in the plan's order.
    func report(_ tensors: [ScopeStatistics], names: [String]) -> DeltaStatisticsReport {
        var scopes = plan.scopes.map {
            ScopeStatistics(name: $0.name, layer: $0.layer, deltaCount: deltaCount, thresholdCount: options.thresholds.count)
        }
        for (index, tensor) in plan.tensors.enumerated() {
            for scope in tensor.scopes { scopes[scope].accumulate(tensors[index]) }
        }
        scopeTops.withLock { tops in
            for scope in scopes.indices { for d in 0..<deltaCount { scopes[scope].deltas[d].topMass = tops[scope][d].mass } }
        }
        let kinds = TensorKind.allCases.indices.map { scopes[1 + $0] }.filter { $0.tensorCount > 0 }
        let layers = scopes[(1 + TensorKind.allCases.count)...].filter { $0.tensorCount > 0 }
        return DeltaStatisticsReport(
            basePath: inputs[0].path, names: names, paths: plan.paths, thresholds: options.thresholds,
            density: options.density, model: scopes[0], kinds: kinds, layers: Array(layers), tensors: tensors, skipped: plan.skipped)
    }
}

/// Where the top 1 % of one delta in one scope (the model, a kind, a layer) ends, and
/// what it holds.
///
/// Pass 1 adds each tensor's magnitude histogram; once the scope's last tensor is in, the
/// bin holding the top-1 % boundary is found. Pass 2 adds each tensor's counts of the keys
/// of that bin; once the last tensor is in, they give the top-1 % mass. The histogram
/// (1 MB) and the key counts (256 KB) exist only while the scope's tensors are read, and
/// the run takes the layers one after the other, so memory does not grow with the number
/// of layers.
struct ScopeTop {
    /// Tensors in the scope, and how many the passes have added (pass 2 counts on from pass 1).
    var tensors = 0
    var added = 0
    /// Finite entries in the scope.
    var elements = 0
    var histogram: MagnitudeHistogram?
    var top: LargestMagnitudes?
    var keyCounts: [Int] = []
    /// Σ of the top-1 % magnitudes (0 without a finite entry).
    var mass = 0.0

    /// Pass 1: adds a tensor's (flushed) histogram and its finite entries.
    mutating func add(_ tensor: MagnitudeHistogram, elements: Int) {
        let histogram = histogram ?? MagnitudeHistogram(counting: false)
        histogram.add(tensor)
        self.histogram = histogram
        self.elements += elements
        added += 1
        guard added == tensors else { return }
        top = self.elements > 0 ? histogram.largest(max(1, self.elements / 100)) : nil
        self.histogram = nil
    }

    /// Pass 2: adds a tensor's key counts, which hold the boundary bin's.
    mutating func add(_ tensor: BinKeyCounts) {
        if let keys = tensor.counts(of: top?.bin) {
            if keyCounts.isEmpty { keyCounts = [Int](repeating: 0, count: MagnitudeBins.fineCount) }
            keyCounts.withUnsafeMutableBufferPointer { total in
                for low in 0..<MagnitudeBins.fineCount { total[low] += keys[low] }
            }
        }
        added += 1
        guard added == 2 * tensors, let top else { return }
        mass = keyCounts.withUnsafeBufferPointer { top.resolve($0.baseAddress).sum }
        keyCounts = []
    }
}
