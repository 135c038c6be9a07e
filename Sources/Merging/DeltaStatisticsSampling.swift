import Checkpoints
import Foundation

/// How the sampling pre-pass reads each tensor and how wide the candidate
/// ranges it derives are. The ranges only decide which coarse bins the single
/// full pass collects exact values from; when a range misses the true boundary
/// bin, the run falls back to a boundary pass, so these numbers trade speed,
/// never correctness.
struct SampleDesign: Sendable {
    /// Tensors up to this many elements are sampled whole (their ranges are exact).
    var wholeTensorLimit = 65_536
    /// Elements in one contiguous run of a sample.
    var runLength = 512
    /// One element in `sparsity` is sampled (at least `minimumRuns` runs).
    var sparsity = 64
    var minimumRuns = 64
    /// Standard deviations of the count estimate a range spans on each side,
    /// with the binomial variance multiplied by `clustering` because
    /// neighbouring elements (one run) are not independent.
    var deviations = 6.0
    var clustering = 4.0
    /// A range estimated to hold more than this share of a scope's entries is
    /// not collected; that boundary is left to the boundary pass.
    var maximumShare = 0.2
    /// Distinct patterns all scopes together may hold; past it, the scope
    /// adding more stops collecting and is left to the boundary pass.
    var scopePatternBudget = 1 << 22
}

extension SampleRuns {
    /// The runs the statistics pre-pass reads: one element in `design.sparsity`, in
    /// at least `design.minimumRuns` runs.
    init(elements n: Int, design: SampleDesign) {
        self.init(elements: n, runs: max(design.minimumRuns, n / (design.sparsity * design.runLength)),
                  runLength: design.runLength, wholeTensorLimit: design.wholeTensorLimit)
    }
}

/// What the sample of one tensor showed for one delta: sampled entries,
/// non-finite ones, and the coarse bins of the non-zero finite ones
/// (highest bin first).
struct DeltaSample {
    var sampled = 0
    var nonFinite = 0
    var bins: [(bin: Int, count: Int)] = []
}

/// Coarse bins that may hold the k-th largest magnitude.
struct CandidateRange: Equatable {
    /// The lowest bin that may hold it, −1 when k may reach past every
    /// non-zero entry (no boundary); the highest, −1 when k surely does.
    let low: Int
    let high: Int

    /// The bins whose values the full pass collects (nil when none).
    var collected: ClosedRange<Int>? { high >= 0 ? max(low, 0)...high : nil }

    /// Whether the exact boundary bin (−1 for none) lies inside the range.
    func holds(_ bin: Int) -> Bool { bin >= low && bin <= high }
}

/// Estimated counts above each coarse bin for one scope and delta, pooled
/// from the samples of its tensors: each sampled entry adds its weight to its
/// bin, and its squared weight (times the finite-population correction) to the
/// bin's variance.
final class SampleEstimate {
    private var low = 0
    private var weights: [Double] = []
    private var variances: [Double] = []
    /// Estimated finite entries of the scope.
    private(set) var finite = 0.0
    private(set) var elements = 0

    func add(_ sample: DeltaSample, runs: SampleRuns) {
        elements += runs.elements
        guard runs.sampled > 0 else { return }
        finite += Double(runs.elements) * Double(sample.sampled - sample.nonFinite) / Double(sample.sampled)
        guard let top = sample.bins.first?.bin, let bottom = sample.bins.last?.bin else { return }
        grow(to: bottom...top)
        let weight = runs.weight, variance = runs.weight * runs.weight * runs.correction
        for (bin, count) in sample.bins {
            weights[bin - low] += weight * Double(count)
            variances[bin - low] += variance * Double(count)
        }
    }

    private func grow(to bins: ClosedRange<Int>) {
        if weights.isEmpty {
            low = bins.lowerBound
            weights = [Double](repeating: 0, count: bins.count)
            variances = weights
            return
        }
        let high = low + weights.count - 1
        guard bins.lowerBound < low || bins.upperBound > high else { return }
        let newLow = min(low, bins.lowerBound), newHigh = max(high, bins.upperBound)
        var w = [Double](repeating: 0, count: newHigh - newLow + 1), v = w
        w.replaceSubrange((low - newLow)..<(high - newLow + 1), with: weights)
        v.replaceSubrange((low - newLow)..<(high - newLow + 1), with: variances)
        low = newLow
        weights = w
        variances = v
    }

    /// The range for the top `share` (k = max(1, ⌊share · finite⌋)) of the
    /// scope, or nil when it would hold too many entries to collect.
    func range(share: Double, design: SampleDesign) -> CandidateRange? {
        let k = max(1.0, (share * finite).rounded(.down))
        var above = 0.0, variance = 0.0
        var high = -1, lowest = -1
        var index = weights.count - 1
        while index >= 0 {
            above += weights[index]
            variance += variances[index]
            let spread = design.deviations * (variance * design.clustering).squareRoot()
            if high < 0 && above + spread >= k { high = low + index }
            if above - spread >= k {
                lowest = low + index
                break
            }
            index -= 1
        }
        let range = CandidateRange(low: lowest, high: high)
        guard let bins = range.collected else { return range }
        var held = 0.0
        for bin in bins where bin >= low && bin < low + weights.count { held += weights[bin - low] }
        return held <= design.maximumShare * Double(max(elements, 1)) ? range : nil
    }
}

extension StatisticsRun {
    /// Reads a sample of every tensor and derives the candidate ranges: each
    /// tensor's for its own top 1 % and support, each scope's for its top 1 %.
    func samplePass() throws(DeltaStatisticsError) {
        let design = options.sampling
        try forEachTensor { (index, scratch) throws(CheckpointError) in
            let tensor = plan.tensors[index]
            let runs = SampleRuns(elements: tensor.base.elementCount, design: design)
            var samples = [DeltaSample](repeating: DeltaSample(), count: deltaCount)
            for start in runs.starts {
                var offset = 0
                while offset < runs.length {
                    let count = min(scratch.chunk, runs.length - offset)
                    try reader.read(0, tensor.base, start: start + offset, count: count, raw: scratch.raw, into: scratch.base)
                    for d in 0..<deltaCount {
                        try reader.read(1 + d, tensor.tuned[d], start: start + offset, count: count, raw: scratch.raw,
                                        into: scratch.deltas[d])
                        tally(scratch.deltas[d], scratch.base, count, into: &samples[d], scratch: scratch, delta: d)
                    }
                    offset += count
                }
            }
            var tensorRanges = TensorRanges(top: [], support: [])
            for d in 0..<deltaCount {
                samples[d].bins = scratch.sampleBins[d].sorted(by: >).map { bin in
                    defer { scratch.sampleCounts[d][bin] = 0 }
                    return (bin, Int(scratch.sampleCounts[d][bin]))
                }
                scratch.sampleBins[d].removeAll(keepingCapacity: true)
                let estimate = SampleEstimate()
                estimate.add(samples[d], runs: runs)
                tensorRanges.top.append(estimate.range(share: 0.01, design: design))
                tensorRanges.support.append(estimate.range(share: options.density, design: design))
            }
            lock.lock()
            for d in 0..<deltaCount {
                for scope in tensor.scopes { scopeEstimates[scope][d].add(samples[d], runs: runs) }
            }
            ranges[index] = tensorRanges
            lock.unlock()
        }
        for scope in plan.scopeNames.indices {
            for d in 0..<deltaCount {
                scopeCandidates[scope][d] = scopeEstimates[scope][d].range(share: 0.01, design: design).map(ScopeCandidates.init)
            }
        }
    }

    /// Counts the sampled δ = tuned − base of one piece by coarse bin.
    private func tally(_ tuned: UnsafePointer<Float>, _ base: UnsafePointer<Float>, _ count: Int,
                       into sample: inout DeltaSample, scratch: StatisticsScratch, delta d: Int) {
        let counts = scratch.sampleCounts[d]
        sample.sampled += count
        for i in 0..<count {
            let key = (tuned[i] - base[i]).bitPattern & 0x7fff_ffff
            if key >= MagnitudeBins.nonFinite {
                sample.nonFinite += 1
            } else if key != 0 {
                let bin = Int(key &>> MagnitudeBins.shift)
                if counts[bin] == 0 { scratch.sampleBins[d].append(bin) }
                counts[bin] += 1
            }
        }
    }
}
