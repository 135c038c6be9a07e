import Checkpoints

extension StatisticsRun {
    /// First pass over tensor `index`: every additive figure (`within` by direct
    /// comparison), and the coarse
    /// histogram of each delta, which is added to the tensor's scopes and
    /// places the tensor's own top-k boundaries.
    func measure(_ index: Int, _ scratch: StatisticsScratch) throws(CheckpointError) -> MeasuredTensor {
        let tensor = plan.tensors[index]
        var stats = ScopeStatistics(name: tensor.name, layer: layerIndex(ofTensor: tensor.name),
                                    deltaCount: deltaCount, thresholdCount: thresholdBits.count)
        stats.tensorCount = 1
        stats.elements = tensor.base.elementCount
        var moments = [DeltaMoments](repeating: DeltaMoments(), count: deltaCount)
        let bounds = thresholdBits.map { min($0, MagnitudeBins.nonFinite - 1) }
        try stream(tensor, scratch) { count in
            let magnitude = DeltaKernels.baseMagnitude(scratch.base, count)
            stats.baseL1 += magnitude.sum
            stats.baseFinite += magnitude.finite
            var measures: [ChunkMeasure] = []
            for d in 0..<deltaCount {
                measures.append(DeltaKernels.measure(scratch.deltas[d], count, into: &moments[d]))
                let sparse = 4 * (measures[d].zeros + measures[d].nonFinite) >= 3 * count
                DeltaKernels.countCoarse(scratch.deltas[d], count, sparse: sparse, into: scratch.coarse[d])
                DeltaKernels.countAtMost(scratch.deltas[d], count, bounds, into: &stats.deltas[d].withinThreshold)
            }
            let bothBefore = stats.pairs.first?.bothNonzero ?? 0, agreeBefore = stats.pairs.first?.signAgreements ?? 0
            for (p, (a, b)) in pairs.enumerated() {
                DeltaKernels.comparePair(scratch.deltas[a], scratch.deltas[b], count, into: &stats.pairs[p], measures: (measures[a], measures[b]))
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
        var measured = MeasuredTensor(statistics: stats)
        var occupied: [ClosedRange<Int>?] = []
        for d in 0..<deltaCount {
            let histogram = scratch.coarse[d], m = moments[d]
            histogram.flush()
            let bins = histogram.occupied
            occupied.append(bins)
            var figures = measured.statistics.deltas[d]
            figures.elements = tensor.base.elementCount - m.nonFinite
            figures.nonFinite = m.nonFinite
            figures.zeros = m.zeros
            figures.sumOfSquares = m.sumOfSquares
            figures.maxAbs = Float(bitPattern: m.maxBits)
            figures.topEntries = figures.elements > 0 ? max(1, figures.elements / 100) : 0
            for bin in bins.map(Array.init) ?? [] {
                figures.l1 += histogram.sum(bin)
                figures.log10Histogram[Int(Log10Bins.ofMagnitudeBin[bin])] += histogram.counts[bin]
            }
            measured.top.append(histogram.boundary(k: max(1, figures.topEntries), in: bins))
            measured.support.append(histogram.boundary(k: max(1, Int(options.density * Double(figures.elements))), in: bins))
            measured.statistics.deltas[d] = figures
        }
        lock.lock()
        for d in 0..<deltaCount { for scope in tensor.scopes { scopeHistograms[scope][d].add(scratch.coarse[d]) } }
        lock.unlock()
        for d in 0..<deltaCount { scratch.coarse[d].clear(occupied[d]) }
        return measured
    }

    /// After the first pass: each scope's top-1 % boundary from its coarse histogram.
    func findScopeBoundaries(_ measured: [MeasuredTensor]) {
        for scope in plan.scopeNames.indices {
            for d in 0..<deltaCount {
                var elements = 0
                for (index, tensor) in plan.tensors.enumerated() where tensor.scopes.contains(scope) {
                    elements += measured[index].statistics.deltas[d].elements
                }
                guard elements > 0 else { continue }
                let histogram = scopeHistograms[scope][d]
                scopeTop[scope][d] = histogram.boundary(k: max(1, elements / 100), in: histogram.occupied)
                if scopeTop[scope][d]!.bin >= 0 { scopeFine[scope][d] = [Int](repeating: 0, count: MagnitudeBins.fineCount) }
                scopeHistograms[scope][d].clear()
            }
        }
    }

    /// Second pass over one tensor: counts the fine patterns of the coarse bins
    /// its boundaries fall in, resolves its top-1 % mass and support exactly, adds to its scopes' boundary bins, and counts each
    /// pair's support intersection: positions where both deltas are above their
    /// boundary bins at once, the others where both reach them kept until the
    /// exact thresholds are known.
    func resolve(_ measured: MeasuredTensor, _ tensor: PlannedTensor, _ scratch: StatisticsScratch) throws(CheckpointError) -> ScopeStatistics {
        var stats = measured.statistics
        // Per delta, the coarse bins to count finely, in slot order.
        var wanted = [[Int]](repeating: [], count: deltaCount)
        for d in 0..<deltaCount {
            // The support matters only to pairs.
            let bins = [measured.top[d].bin, pairs.isEmpty ? -1 : measured.support[d].bin] + tensor.scopes.map { scopeTop[$0][d]?.bin ?? -1 }
            for bin in bins where bin >= 0 && !wanted[d].contains(bin) {
                wanted[d].append(bin)
                precondition(wanted[d].count <= scratch.fineSlots, "more boundary bins than fine histograms")
                scratch.slots[d][bin] = UInt8(wanted[d].count)
                scratch.fine[d][wanted[d].count - 1].initialize(repeating: 0, count: MagnitudeBins.fineCount)
            }
        }
        let bins = wanted.map { $0.map { DeltaKernels.Signed(repeating: Int32($0)) } }
        // Per delta, the patterns that may be in its support (from its boundary bin up)
        // and those that surely are (above that bin); every non-zero one when k reaches past them.
        let low = measured.support.map { $0.bin < 0 ? UInt32(1) : UInt32($0.bin) << MagnitudeBins.shift }
        let high = measured.support.map { $0.bin < 0 ? UInt32(1) : UInt32($0.bin + 1) << MagnitudeBins.shift }
        var sure = [Int](repeating: 0, count: pairs.count)
        var records = [[UInt64]](repeating: [], count: pairs.count)
        try stream(tensor, scratch) { count in
            for d in 0..<deltaCount {
                bins[d].withUnsafeBufferPointer {
                    DeltaKernels.countFine(scratch.deltas[d], count, bins: $0, slots: scratch.slots[d], fine: scratch.fine[d])
                }
            }
            for (p, (a, b)) in pairs.enumerated() {
                DeltaKernels.screenSupports(scratch.deltas[a], scratch.deltas[b], count, low: (low[a], low[b]), high: (high[a], high[b]),
                                            sure: &sure[p], records: &records[p])
            }
        }
        var thresholds: [UInt32] = []
        for d in 0..<deltaCount {
            func fine(_ bin: Int) -> UnsafeMutablePointer<Int>? { bin < 0 ? nil : scratch.fine[d][Int(scratch.slots[d][bin]) - 1] }
            stats.deltas[d].topMass = measured.top[d].resolve(fine(measured.top[d].bin)).mass
            if !pairs.isEmpty {
                let support = measured.support[d].resolve(fine(measured.support[d].bin))
                thresholds.append(measured.support[d].bin < 0 ? 1 : UInt32(measured.support[d].bin << 15 | support.pattern))
                for p in pairs.indices where pairs[p].0 == d { stats.pairs[p].supportFirst = support.support }
                for p in pairs.indices where pairs[p].1 == d { stats.pairs[p].supportSecond = support.support }
            }
            lock.lock()
            for scope in tensor.scopes {
                guard let bin = scopeTop[scope][d]?.bin, bin >= 0, let counts = fine(bin) else { continue }
                scopeFine[scope][d].withUnsafeMutableBufferPointer { total in
                    for pattern in 0..<MagnitudeBins.fineCount { total[pattern] += counts[pattern] }
                }
            }
            lock.unlock()
            for bin in wanted[d] { scratch.slots[d][bin] = 0 }
        }
        for (p, (a, b)) in pairs.enumerated() {
            stats.pairs[p].supportIntersection = sure[p] + records[p].count {
                UInt32($0 &>> 32) >= thresholds[a] && UInt32(truncatingIfNeeded: $0) >= thresholds[b]
            }
        }
        return stats
    }

    /// Adds the tensors into their scopes (in the plan's order) and resolves each scope's top-1 % mass.
    func report(_ tensors: [ScopeStatistics], names: [String]) -> DeltaStatisticsReport {
        var scopes = plan.scopeNames.indices.map {
            ScopeStatistics(name: plan.scopeNames[$0], layer: plan.scopeLayers[$0], deltaCount: deltaCount, thresholdCount: thresholdBits.count)
        }
        for (index, tensor) in plan.tensors.enumerated() {
            for scope in tensor.scopes { scopes[scope].accumulate(tensors[index]) }
        }
        for scope in scopes.indices {
            for d in 0..<deltaCount {
                let figures = scopes[scope].deltas[d]
                scopes[scope].deltas[d].topEntries = figures.elements > 0 ? max(1, figures.elements / 100) : 0
                guard let top = scopeTop[scope][d] else { continue }
                scopes[scope].deltas[d].topMass = scopeFine[scope][d].withUnsafeBufferPointer { top.resolve($0.baseAddress).mass }
            }
        }
        let kindScopes = TensorKind.allCases.indices.map { scopes[1 + $0] }.filter { $0.tensorCount > 0 }
        let layerScopes = scopes[(1 + TensorKind.allCases.count)...].filter { $0.tensorCount > 0 }
        return DeltaStatisticsReport(
            basePath: inputs[0].path, names: names, paths: inputs.dropFirst().map(\.path), thresholds: options.thresholds,
            density: options.density, model: scopes[0], kinds: kindScopes, layers: Array(layerScopes),
            tensors: tensors, skipped: plan.skipped)
    }
}
