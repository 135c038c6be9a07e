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

/// The element ranges the pre-pass reads from one tensor: evenly spaced runs,
/// each centred in its stratum, or the whole tensor when it is small.
struct SampleRuns {
    let elements: Int
    let starts: [Int]
    let length: Int

    init(elements n: Int, design: SampleDesign) {
        elements = n
        if n <= max(design.wholeTensorLimit, design.runLength) {
            starts = n > 0 ? [0] : []
            length = n
            return
        }
        let runs = min(n / design.runLength, max(design.minimumRuns, n / (design.sparsity * design.runLength)))
        let stride = n / runs
        let offset = (stride - design.runLength) / 2
        starts = (0..<runs).map { $0 * stride + offset }
        length = design.runLength
    }

    var sampled: Int { starts.count * length }
    /// Entries of the tensor each sampled entry stands for.
    var weight: Double { sampled > 0 ? Double(elements) / Double(sampled) : 0 }
    /// Finite-population correction of the variance: 0 when the whole tensor is read.
    var correction: Double { sampled > 0 ? 1 - Double(sampled) / Double(elements) : 0 }
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
