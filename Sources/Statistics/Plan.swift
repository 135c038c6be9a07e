import Checkpoints

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
