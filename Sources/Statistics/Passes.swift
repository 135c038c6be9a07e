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
    /// deltas of a pair keep in their supports.
    public static func compute(
        base: Checkpoint, tuned: [StatisticsInput], names: [String], options: DeltaStatisticsOptions = DeltaStatisticsOptions()
    ) throws(DeltaStatisticsError) -> DeltaStatisticsReport {
        precondition(!tuned.isEmpty && names.count == tuned.count, "one name per fine-tuned checkpoint")
        precondition(options.chunkElements > 0, "chunkElements must be positive, not \(options.chunkElements)")
        let run = StatisticsRun(plan: try StatisticsPlan(base: base, tuned: tuned), inputs: [base] + tuned.map(\.checkpoint), options: options)
        let measured = try run.eachTensor(run.measure)
        let scopeTops = run.scopeTops(measured)
        let tensors = try run.eachTensor { (index, scratch) throws(CheckpointError) in
            try run.resolve(index, measured[index], scopeTops, scratch)
        }
        return run.report(tensors, scopeTops, names: names)
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
    /// [scope][delta]: magnitude histograms (pass 1), then key counts of the bin
    /// holding the scope's top-1 % boundary (pass 2).
    let scopeHistograms: Locked<[[MagnitudeHistogram]]>
    let scopeKeyCounts: Locked<[[[Int]]]>

    init(plan: StatisticsPlan, inputs: [Checkpoint], options: DeltaStatisticsOptions) {
        self.plan = plan
        self.inputs = inputs
        self.options = options
        deltaCount = inputs.count - 1
        pairs = (0..<deltaCount).flatMap { i in ((i + 1)..<inputs.count - 1).map { (i, $0) } }
        scratches = (0..<max(1, min(options.workers, plan.tensors.count))).map { _ in
            StatisticsScratch(chunk: options.chunkElements, deltaCount: inputs.count - 1)
        }
        scopeHistograms = Locked(plan.scopeNames.map { _ in (1..<inputs.count).map { _ in MagnitudeHistogram(counting: false) } })
        scopeKeyCounts = Locked(plan.scopeNames.map { _ in (1..<inputs.count).map { _ in [] } })
    }

    /// `body(tensor, scratch)` for every tensor of the plan, largest first, on the run's
    /// workers; the results in the plan's order.
    func eachTensor<Result: Sendable>(
        _ body: @Sendable (Int, StatisticsScratch) throws(CheckpointError) -> Result
    ) throws(DeltaStatisticsError) -> [Result] {
        let order = plan.tensors.indices.sorted { plan.tensors[$0].base.elementCount > plan.tensors[$1].base.elementCount }
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
        var stats = ScopeStatistics(name: tensor.name, layer: layerIndex(ofTensor: tensor.name),
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
            var figures = stats.deltas[d]
            figures.elements = tensor.base.elementCount - figures.nonFinite
            figures.topEntries = figures.elements > 0 ? max(1, figures.elements / 100) : 0
            for bin in histogram.bins where histogram.counts[bin] != 0 {
                figures.l1 += histogram.sum(bin)
                figures.log10Histogram[Int(Log10Bins.ofMagnitudeBin[bin])] += histogram.counts[bin]
            }
            measured.top.append(histogram.largest(max(1, figures.topEntries)))
            measured.support.append(histogram.largest(max(1, Int(options.density * Double(figures.elements)))))
            measured.statistics.deltas[d] = figures
        }
        scopeHistograms.withLock { scopes in
            for d in 0..<deltaCount { for scope in tensor.scopes { scopes[scope][d].add(scratch.histograms[d]) } }
        }
        for histogram in scratch.histograms { histogram.clear() }
        return measured
    }

    /// After pass 1: where each scope's top 1 % ends, per delta (nil for a delta with
    /// no finite entry in the scope), and room for the key counts of its bin.
    func scopeTops(_ measured: [MeasuredTensor]) -> [[LargestMagnitudes?]] {
        let histograms = scopeHistograms.withLock { scopes in
            defer { scopes = [] }
            return scopes
        }
        return scopeKeyCounts.withLock { keyCounts in
            plan.scopeNames.indices.map { scope in
                (0..<deltaCount).map { d in
                    let elements = plan.tensors.indices.reduce(0) {
                        $0 + (plan.tensors[$1].scopes.contains(scope) ? measured[$1].statistics.deltas[d].elements : 0)
                    }
                    guard elements > 0 else { return nil }
                    let top = histograms[scope][d].largest(max(1, elements / 100))
                    if top.bin != nil { keyCounts[scope][d] = [Int](repeating: 0, count: MagnitudeBins.fineCount) }
                    return top
                }
            }
        }
    }

    /// Pass 2 over one tensor: counts the exact keys of its boundary bins and its
    /// scopes', which settles its top-1 % mass and support, and the support
    /// intersection of each pair: positions where both deltas lie above their boundary
    /// bins, and those where both reach them, decided once the exact keys are known.
    func resolve(_ index: Int, _ measured: MeasuredTensor, _ scopeTops: [[LargestMagnitudes?]],
                 _ scratch: StatisticsScratch) throws(CheckpointError) -> ScopeStatistics {
        let tensor = plan.tensors[index]
        var stats = measured.statistics
        for d in 0..<deltaCount {
            // The support matters only to pairs.
            scratch.keyCounts[d].select([measured.top[d].bin, pairs.isEmpty ? nil : measured.support[d].bin]
                                        + tensor.scopes.map { scopeTops[$0][d]?.bin })
        }
        // Per delta, the keys that may be in its support (from its boundary bin up) and
        // those that surely are (above that bin); every non-zero one when k reaches past them.
        let low = measured.support.map { $0.bin.map { UInt32($0) << 15 } ?? 1 }
        let high = measured.support.map { $0.bin.map { UInt32($0 + 1) << 15 } ?? 1 }
        var sure = [Int](repeating: 0, count: pairs.count)
        var records = [[UInt64]](repeating: [], count: pairs.count)
        try stream(tensor, scratch) { count in
            for d in 0..<deltaCount { scratch.keyCounts[d].add(scratch.deltas[d], count) }
            for (p, (a, b)) in pairs.enumerated() {
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
            scopeKeyCounts.withLock { totals in
                for scope in tensor.scopes {
                    guard let keys = counts.counts(of: scopeTops[scope][d]?.bin) else { continue }
                    totals[scope][d].withUnsafeMutableBufferPointer { total in
                        for low in 0..<MagnitudeBins.fineCount { total[low] += keys[low] }
                    }
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

    /// Adds the tensors into their scopes (in the plan's order) and settles each scope's top-1 % mass.
    func report(_ tensors: [ScopeStatistics], _ scopeTops: [[LargestMagnitudes?]], names: [String]) -> DeltaStatisticsReport {
        var scopes = plan.scopeNames.indices.map {
            ScopeStatistics(name: plan.scopeNames[$0], layer: plan.scopeLayers[$0], deltaCount: deltaCount, thresholdCount: options.thresholds.count)
        }
        for (index, tensor) in plan.tensors.enumerated() {
            for scope in tensor.scopes { scopes[scope].accumulate(tensors[index]) }
        }
        let keyCounts = scopeKeyCounts.withLock { $0 }
        for scope in scopes.indices {
            for d in 0..<deltaCount {
                let elements = scopes[scope].deltas[d].elements
                scopes[scope].deltas[d].topEntries = elements > 0 ? max(1, elements / 100) : 0
                guard let top = scopeTops[scope][d] else { continue }
                scopes[scope].deltas[d].topMass = keyCounts[scope][d].withUnsafeBufferPointer { top.resolve($0.baseAddress).sum }
            }
        }
        let kinds = TensorKind.allCases.indices.map { scopes[1 + $0] }.filter { $0.tensorCount > 0 }
        let layers = scopes[(1 + TensorKind.allCases.count)...].filter { $0.tensorCount > 0 }
        return DeltaStatisticsReport(
            basePath: inputs[0].path, names: names, paths: plan.paths, thresholds: options.thresholds,
            density: options.density, model: scopes[0], kinds: kinds, layers: Array(layers), tensors: tensors, skipped: plan.skipped)
    }
}
