import Checkpoints
import Dispatch
import Foundation

extension DeltaStatistics {
    /// Streams δᵢ = θᵢ − θ₀ for every tensor the base shares with all of `tuned`
    /// and measures them (see `docs/stats.md` for every figure).
    ///
    /// A sampling pre-pass reads a small, evenly spaced part of every tensor
    /// and predicts, for each top-k boundary (each tensor's top 1 % and
    /// support, each scope's top 1 %), a few coarse bins that hold it. One full
    /// pass then streams the checkpoints, tensors in parallel, each read with
    /// `pread(2)` and decoded in chunks into reused Float32 buffers: it takes
    /// the moments and coarse magnitude histograms and keeps the exact values
    /// of the predicted bins, from which every top-k figure is resolved exactly. Only a boundary the prediction missed costs a second,
    /// boundary pass over the tensors concerned.
    public static func compute(
        base: Checkpoint, tuned: [Checkpoint], names: [String], options: DeltaStatisticsOptions = DeltaStatisticsOptions()
    ) throws(DeltaStatisticsError) -> DeltaStatisticsReport {
        precondition(!tuned.isEmpty && names.count == tuned.count, "one name per fine-tuned checkpoint")
        let plan = try StatisticsPlan(base: base, tuned: tuned)
        let run = try StatisticsRun(plan: plan, base: base, tuned: tuned, options: options)
        try run.samplePass()
        try run.fullPass()
        run.resolveScopes()
        try run.boundaryPass()
        return run.report(names: names)
    }
}

/// Namespace of the statistics entry point.
public enum DeltaStatistics {}

/// One compared tensor: the base entry, the matching fine-tuned entries and its scopes.
struct PlannedTensor {
    let name: String
    let base: TensorEntry
    let tuned: [TensorEntry]
    /// Scope indexes: the model (0), its kind, and its layer if any.
    let scopes: [Int]
}

/// Which tensors are compared and how they group.
struct StatisticsPlan {
    var tensors: [PlannedTensor] = []
    var skipped: [SkippedTensor] = []
    /// Scope names and layers, indexed as `PlannedTensor.scopes`.
    var scopeNames: [String] = ["model"] + TensorKind.allCases.map(\.rawValue)
    var scopeLayers: [Int?] = [nil] + TensorKind.allCases.map { _ in nil }

    init(base: Checkpoint, tuned: [Checkpoint]) throws(DeltaStatisticsError) {
        for checkpoint in tuned {
            var shared = false
            for entry in base.tensors {
                guard let other = checkpoint.tensor(named: entry.name) else { continue }
                shared = true
                if other.shape != entry.shape {
                    throw .shapeMismatch(file: checkpoint.path, tensor: entry.name, shape: other.shape, baseShape: entry.shape)
                }
            }
            if !shared { throw .noSharedTensors(file: checkpoint.path, base: base.path) }
            for entry in checkpoint.tensors where base.tensor(named: entry.name) == nil {
                skipped.append(SkippedTensor(name: entry.name, reason: "not in the base (\(checkpoint.path))"))
            }
        }
        let layerNumbers = Set(base.tensors.compactMap { layerIndex(ofTensor: $0.name) }).sorted()
        var layerScope: [Int: Int] = [:]
        for layer in layerNumbers {
            layerScope[layer] = scopeNames.count
            scopeNames.append("layer \(layer)")
            scopeLayers.append(layer)
        }
        for entry in base.tensors {
            var entries: [TensorEntry] = []
            for checkpoint in tuned {
                guard let other = checkpoint.tensor(named: entry.name) else { break }
                entries.append(other)
            }
            if entries.count < tuned.count {
                skipped.append(SkippedTensor(name: entry.name, reason: "missing from a fine-tuned checkpoint"))
                continue
            }
            // The passes read element ranges of one value per stored element.
            for (checkpoint, tensor) in zip([base] + tuned, [entry] + entries) where tensor.dtype.isQuantized {
                throw .quantized(file: checkpoint.path, tensor: tensor.name, dtype: tensor.dtype)
            }
            let dtypes = [entry.dtype] + entries.map(\.dtype)
            guard dtypes.allSatisfy({ $0.isFloatingPoint }) else {
                skipped.append(SkippedTensor(name: entry.name, reason: "not floating point (\(dtypes.map(\.rawValue).joined(separator: ", ")))"))
                continue
            }
            var scopes = [0, 1 + TensorKind.allCases.firstIndex(of: TensorKind(tensorName: entry.name))!]
            if let layer = layerIndex(ofTensor: entry.name), let scope = layerScope[layer] { scopes.append(scope) }
            tensors.append(PlannedTensor(name: entry.name, base: entry, tuned: entries, scopes: scopes))
        }
    }
}

/// Where the k-th largest magnitude lies, from a coarse histogram.
struct TopBoundary {
    /// Coarse bin holding the k-th largest value; −1 when k reaches past every
    /// non-zero entry (the top k then holds all of them).
    let bin: Int
    /// Entries still to take from `bin`.
    let need: Int
    /// Entries and Σ|δ| in bins above `bin`.
    let aboveCount: Int
    let aboveSum: Double

    /// Scans coarse bins from the top until `k` entries are reached.
    init(k: Int, low: Int, high: Int, counts: (Int) -> Int, sums: (Int) -> Double) {
        var above = 0, aboveSum = 0.0
        var bin = high
        while bin >= low {
            let c = counts(bin)
            if above + c >= k { break }
            above += c
            aboveSum += sums(bin)
            bin -= 1
        }
        if bin < low {
            self.bin = -1
            need = 0
        } else {
            self.bin = bin
            need = k - above
        }
        aboveCount = above
        self.aboveSum = aboveSum
    }

    /// With the fine counts of `bin`: the fine pattern of the k-th largest value,
    /// the exact mass of the top k, and the support size when every entry equal
    /// to the k-th largest value is kept.
    func resolve(_ fine: UnsafePointer<Int>?) -> (pattern: Int, mass: Double, support: Int) {
        guard bin >= 0, let fine else { return (0, aboveSum, aboveCount) }
        var remaining = need, mass = aboveSum, support = aboveCount
        var pattern = MagnitudeBins.fineCount - 1
        while pattern >= 0 {
            let c = fine[pattern]
            if c > 0 {
                let take = min(c, remaining)
                mass += Double(take) * Double(MagnitudeBins.value(bin: bin, fine: pattern))
                remaining -= take
                support += c
                if remaining == 0 { break }
            }
            pattern -= 1
        }
        return (max(pattern, 0), mass, support)
    }
}

/// A coarse histogram that only spans the bins it has been given.
final class RangeHistogram {
    private(set) var low = 0
    private(set) var counts: [Int] = []
    private(set) var fineSums: [Int] = []
    var high: Int { low + counts.count - 1 }

    func add(low from: Int, high to: Int, bins source: UnsafePointer<Int>) {
        guard to >= from else { return }
        if counts.isEmpty {
            low = from
            counts = [Int](repeating: 0, count: to - from + 1)
            fineSums = [Int](repeating: 0, count: to - from + 1)
        } else if from < low || to > high {
            let newLow = min(low, from), newHigh = max(high, to)
            var c = [Int](repeating: 0, count: newHigh - newLow + 1)
            var s = [Int](repeating: 0, count: newHigh - newLow + 1)
            for i in counts.indices {
                c[low - newLow + i] = counts[i]
                s[low - newLow + i] = fineSums[i]
            }
            low = newLow
            counts = c
            fineSums = s
        }
        // Through buffer pointers: one exclusivity check per call, not two per bin.
        let offset = low
        counts.withUnsafeMutableBufferPointer { counts in
            fineSums.withUnsafeMutableBufferPointer { sums in
                for bin in from...to {
                    counts[bin - offset] += source[2 * bin]
                    sums[bin - offset] += source[2 * bin + 1]
                }
            }
        }
    }

    func boundary(k: Int) -> TopBoundary {
        TopBoundary(k: k, low: low, high: high, counts: { self.counts[$0 - self.low] }, sums: {
            MagnitudeBins.sum(bin: $0, count: self.counts[$0 - self.low], fineSum: self.fineSums[$0 - self.low])
        })
    }
}
