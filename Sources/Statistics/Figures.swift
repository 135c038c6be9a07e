import Checkpoints
import Foundation
import Merging

/// Settings of a statistics run.
public struct DeltaStatisticsOptions: Sendable {
    /// Share of entries counted with |δ| ≤ τ, for each τ (compared in Float32).
    public var thresholds: [Float] = [1e-6, 1e-5, 1e-4, 1e-3]
    /// Density at which each delta's top-k support is taken for the overlap figures
    /// (k = max(1, ⌊density · n⌋) per tensor, as a magnitude trim would keep).
    public var density: Double = 0.1
    /// Threads working on tensors at once.
    public var workers: Int = WorkerQueue.processors
    /// Elements decoded per step. Norms and dot products are summed in Float
    /// over blocks inside a chunk and in Double across blocks and chunks, so
    /// this (unlike `workers`) decides the last bits of those sums. Tensors of a
    /// block-quantized type are read in chunks rounded down to whole blocks, so then
    /// it must hold at least one block (32 or 256 elements).
    public var chunkElements: Int = 16_384
    /// How the delta of a quantized fine-tune of an unquantized base is taken
    /// (as `fuse` takes it).
    public var quantizedDelta = QuantizedDelta.aware
    /// Positions of a pair kept per tensor in pass 2 to be decided once the support
    /// thresholds are known (8 bytes each). A pair with more is counted again in a third
    /// pass over the tensor instead, so memory stays bounded however large the tensor.
    var supportRecordLimit = 1 << 20

    public init() {}
}

/// Figures for one delta δ = θ − θ₀ over one scope (a tensor, a group, the model).
///
/// Non-finite entries (NaN, ±Inf) are counted in `nonFinite` and left out of
/// everything else; `elements` counts the finite ones.
public struct DeltaFigures: Sendable, Equatable {
    /// Finite entries.
    public internal(set) var elements = 0
    /// Entries that are NaN or infinite.
    public internal(set) var nonFinite = 0
    /// Entries exactly zero.
    public internal(set) var zeros = 0
    /// For each threshold τ of the run, the entries with |δ| ≤ τ (zeros included).
    public internal(set) var withinThreshold: [Int]
    /// Σ|δ|.
    public internal(set) var l1 = 0.0
    /// Σδ².
    public internal(set) var sumOfSquares = 0.0
    /// max |δ|.
    public internal(set) var maxAbs: Float = 0
    /// Exact Σ|δ| over the `topEntries` largest |δ|.
    public internal(set) var topMass = 0.0
    /// Counts of log10 |δ| over `Log10Bins` (zeros are not in it; see `zeros`).
    public internal(set) var log10Histogram: [Int]

    init(thresholdCount: Int) {
        withinThreshold = [Int](repeating: 0, count: thresholdCount)
        log10Histogram = [Int](repeating: 0, count: Log10Bins.count)
    }

    /// Number of entries in the top 1 %: max(1, ⌊elements / 100⌋), none without an entry.
    public var topEntries: Int { elements > 0 ? max(1, elements / 100) : 0 }
    /// Share of finite entries exactly zero.
    public var zeroShare: Double? { share(zeros, of: elements) }
    /// Share of finite entries with |δ| ≤ the `index`-th threshold.
    public func thresholdShare(_ index: Int) -> Double? { share(withinThreshold[index], of: elements) }
    /// ‖δ‖₂.
    public var l2: Double { sumOfSquares.squareRoot() }
    /// Mean |δ| over finite entries.
    public var meanAbs: Double? { elements > 0 ? l1 / Double(elements) : nil }
    /// Hoyer sparsity (√n − ‖δ‖₁/‖δ‖₂) / (√n − 1): 0 when all |δ| are equal,
    /// 1 when one entry holds everything. Undefined for n < 2 or δ = 0.
    public var hoyer: Double? {
        guard elements > 1, sumOfSquares > 0 else { return nil }
        let root = Double(elements).squareRoot()
        return (root - l1 / l2) / (root - 1)
    }
    /// Share of Σ|δ| held by the top 1 % of entries.
    public var topMassShare: Double? { l1 > 0 ? topMass / l1 : nil }

    /// Adds the additive figures of `other` (everything except the top-1 % mass,
    /// which is not additive and is computed for each scope on its own).
    mutating func accumulate(_ other: DeltaFigures) {
        elements += other.elements
        nonFinite += other.nonFinite
        zeros += other.zeros
        for i in withinThreshold.indices { withinThreshold[i] += other.withinThreshold[i] }
        l1 += other.l1
        sumOfSquares += other.sumOfSquares
        maxAbs = max(maxAbs, other.maxAbs)
        for i in log10Histogram.indices { log10Histogram[i] += other.log10Histogram[i] }
    }
}

/// Figures comparing two deltas over one scope, on the positions where both are finite.
public struct PairFigures: Sendable, Equatable {
    /// Indexes of the two deltas in the run.
    public let first: Int
    public let second: Int
    /// Positions where both deltas are finite.
    public internal(set) var positions = 0
    /// Σ δ₁δ₂, Σ δ₁², Σ δ₂² over those positions.
    public internal(set) var dot = 0.0
    public internal(set) var squaresFirst = 0.0
    public internal(set) var squaresSecond = 0.0
    /// Positions where both are non-zero.
    public internal(set) var bothNonzero = 0
    /// Of those, positions where both have the same sign.
    public internal(set) var signAgreements = 0
    /// Sizes of the top-k supports at the run's density (summed over tensors),
    /// and of their intersection.
    public internal(set) var supportFirst = 0
    public internal(set) var supportSecond = 0
    public internal(set) var supportIntersection = 0

    init(first: Int, second: Int) {
        self.first = first
        self.second = second
    }

    /// Cosine similarity of the two deltas.
    public var cosine: Double? {
        let norms = (squaresFirst * squaresSecond).squareRoot()
        return norms > 0 ? dot / norms : nil
    }
    /// Share of positions where both deltas are non-zero.
    public var bothNonzeroShare: Double? { share(bothNonzero, of: positions) }
    /// Share of the both-non-zero positions where the signs agree.
    public var signAgreement: Double? { share(signAgreements, of: bothNonzero) }
    /// Jaccard index |S₁ ∩ S₂| / |S₁ ∪ S₂| of the top-k supports.
    public var supportOverlap: Double? {
        share(supportIntersection, of: supportFirst + supportSecond - supportIntersection)
    }

    mutating func accumulate(_ other: PairFigures) {
        positions += other.positions
        dot += other.dot
        squaresFirst += other.squaresFirst
        squaresSecond += other.squaresSecond
        bothNonzero += other.bothNonzero
        signAgreements += other.signAgreements
        supportFirst += other.supportFirst
        supportSecond += other.supportSecond
        supportIntersection += other.supportIntersection
    }
}

/// All figures for one scope: a tensor, a kind, a layer, or the whole model.
public struct ScopeStatistics: Sendable, Equatable {
    /// Tensor name, kind name (`attention`), `layer N`, or `model`.
    public let name: String
    /// The layer index, for layer scopes.
    public let layer: Int?
    /// Tensors in the scope.
    public internal(set) var tensorCount = 0
    /// Positions compared (per delta, finite or not).
    public internal(set) var elements = 0
    /// Σ|θ₀| and the number of finite base entries.
    public internal(set) var baseL1 = 0.0
    public internal(set) var baseFinite = 0
    /// One entry per delta, in the run's order.
    public internal(set) var deltas: [DeltaFigures]
    /// One entry per pair (i < j), in order (0,1), (0,2), …, (1,2), ….
    public internal(set) var pairs: [PairFigures]
    /// TIES election (sum consensus, weights 1) over the finite positions:
    /// non-zero entries (over all deltas) and those whose sign loses the election.
    public internal(set) var electionEntries = 0
    public internal(set) var electionDropped = 0

    init(name: String, layer: Int? = nil, deltaCount: Int, thresholdCount: Int) {
        self.name = name
        self.layer = layer
        deltas = [DeltaFigures](repeating: DeltaFigures(thresholdCount: thresholdCount), count: deltaCount)
        pairs = (0..<deltaCount).flatMap { i in ((i + 1)..<deltaCount).map { PairFigures(first: i, second: $0) } }
    }

    /// Mean |δ| of delta `index` relative to the mean |θ₀| of the base.
    public func relativeMeanAbs(_ index: Int) -> Double? {
        guard let mean = deltas[index].meanAbs, baseFinite > 0, baseL1 > 0 else { return nil }
        return mean / (baseL1 / Double(baseFinite))
    }

    /// Share of non-zero delta entries a TIES election would drop as conflicting.
    public var electionDroppedShare: Double? { share(electionDropped, of: electionEntries) }

    mutating func accumulate(_ other: ScopeStatistics) {
        tensorCount += other.tensorCount
        elements += other.elements
        baseL1 += other.baseL1
        baseFinite += other.baseFinite
        for i in deltas.indices { deltas[i].accumulate(other.deltas[i]) }
        for i in pairs.indices { pairs[i].accumulate(other.pairs[i]) }
        electionEntries += other.electionEntries
        electionDropped += other.electionDropped
    }
}

/// A base tensor (or fine-tuned tensor) that took no part in the statistics, and why.
public struct SkippedTensor: Sendable, Equatable {
    public let name: String
    public let reason: String
}

/// The result of `DeltaStatistics.compute`.
public struct DeltaStatisticsReport: Sendable {
    public let basePath: String
    /// Display names and paths of the fine-tuned checkpoints, in order.
    public let names: [String]
    public let paths: [String]
    public let thresholds: [Float]
    public let density: Double
    public let model: ScopeStatistics
    /// Kinds that hold at least one tensor, in `TensorKind` order.
    public let kinds: [ScopeStatistics]
    /// Layers in increasing order.
    public let layers: [ScopeStatistics]
    /// Compared tensors in the base's order.
    public let tensors: [ScopeStatistics]
    public let skipped: [SkippedTensor]

    /// The scopes a table grouped by `grouping` lists.
    public func scopes(by grouping: StatisticsGrouping) -> [ScopeStatistics] {
        switch grouping {
        case .tensor: return tensors
        case .layer: return layers
        case .kind: return kinds
        }
    }
}

/// The fixed bins of the log10 |δ| histograms: width 0.1 from 10⁻¹² to 10²;
/// values outside are counted in the first or last bin.
public enum Log10Bins {
    public static let lowest = -12.0
    public static let width = 0.1
    public static let count = 140

    /// Lower edge (in log10) of bin `index`.
    public static func lowerEdge(_ index: Int) -> Double { lowest + Double(index) * width }

    /// The histogram bin of each magnitude bin, judged by the magnitude bin's
    /// lower edge (magnitude bins are 1/256 of an octave wide).
    static let ofMagnitudeBin: [UInt8] = (0..<MagnitudeBins.coarseCount).map { bin in
        let edge = Double(MagnitudeBins.value(bin: bin, low: 0))
        guard edge > 0, edge.isFinite else { return edge > 0 ? UInt8(count - 1) : 0 }
        let index = Int(((log10(edge) - lowest) / width).rounded(.down))
        return UInt8(min(max(index, 0), count - 1))
    }
}

/// Why a statistics run could not be done.
public enum DeltaStatisticsError: Error, Equatable, CustomStringConvertible {
    /// A fine-tuned tensor's shape differs from the base's.
    case shapeMismatch(file: String, tensor: String, shape: [Int], baseShape: [Int])
    /// A fine-tuned checkpoint shares no tensor names with the base.
    case noSharedTensors(file: String, base: String)
    /// The checkpoints could not be read.
    case checkpoint(CheckpointError)

    public var description: String {
        switch self {
        case .shapeMismatch(let f, let t, let s, let b):
            return "\(f): tensor '\(t)' has shape \(s) but the base has \(b)"
        case .noSharedTensors(let f, let b):
            return "\(f): shares no tensor with the base \(b) (not a fine-tune of it, or differently named tensors)"
        case .checkpoint(let e):
            return e.description
        }
    }
}

@inline(__always)
func share(_ part: Int, of whole: Int) -> Double? {
    whole > 0 ? Double(part) / Double(whole) : nil
}
