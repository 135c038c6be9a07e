import Checkpoints

/// One output tensor of a merge with every parameter resolved for it.
public struct MergeJob: Sendable {
    /// What producing the tensor takes.
    public enum Kind: Sendable, Equatable {
        /// Bytes copied from the base unchanged (non-float tensors).
        case copy
        /// The base's values, re-encoded in the output type (tensors only the base has).
        case convert
        /// Combined from the inputs by the plan's method.
        case merge
    }

    public let name: String
    public let kind: Kind
    /// Output shape (the base's).
    public let shape: [Int]
    public let outputDType: DType
    /// The base's (or, for `linear` without a base, the first model's) tensor.
    public let template: TensorEntry
    /// Index of the checkpoint `template` lives in (see `PreparedMerge.checkpoints`).
    public let templateCheckpoint: Int
    /// Per contributing model: its checkpoint index and tensor. Only the first
    /// `elementCount` entries are used (embedding rows past the base's are cut).
    public let inputs: [(checkpoint: Int, tensor: TensorEntry)]
    public let weights: [Float]
    public let densities: [Double]
    public let gammas: [Double]
    public let epsilons: [Double]
    public let lambda: Float
    public let normalize: Bool
    /// SLERP's interpolation factor.
    public let t: Float
    /// Model Stock per row instead of per tensor.
    public let filterWise: Bool

    /// Number of output elements.
    public var elementCount: Int { template.elementCount }

    /// Entries per row: the product of all but the leading axis (whole count for 1-D).
    public var rowLength: Int {
        guard shape.count >= 2, shape[0] > 0 else { return max(elementCount, 1) }
        return elementCount / shape[0]
    }

    /// Output bytes.
    public var outputByteCount: Int { outputDType.byteCount(forElements: elementCount) ?? 0 }
}
