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

    /// Tensor name, as the base names it.
    public let name: String
    /// How the tensor is produced.
    public let kind: Kind
    /// Output shape (the base's).
    public let shape: [Int]
    /// Element type written.
    public let outputDType: DType
    /// The base's (or, for `linear` without a base, the first model's) tensor.
    public let template: TensorEntry
    /// Index of the checkpoint `template` lives in (see `PreparedMerge.checkpoints`).
    public let templateCheckpoint: Int
    /// Per contributing model: its checkpoint index and tensor.
    public let inputs: [MergeInput]
    /// The parameters of the method's family, resolved for this tensor.
    public let parameters: Parameters
    /// Set for an embedding or output-projection tensor whose rows follow the output
    /// tokenizer: where each output row of `template` comes from. `shape` is then the
    /// output's, which may have more or fewer rows than `template`.
    public var baseRows: VocabularyRows? = nil
    /// The type every operation's result is rounded to (`MergePlan.computeType`).
    public var computeType: ComputeType = .f32

    /// Number of output elements.
    public var elementCount: Int { baseRows == nil ? template.elementCount : shape.reduce(1, *) }

    /// Entries per row: the product of all but the leading axis (whole count for 1-D).
    public var rowLength: Int {
        guard shape.count >= 2, shape[0] > 0 else { return max(elementCount, 1) }
        return elementCount / shape[0]
    }

    /// Output bytes.
    public var outputByteCount: Int { outputDType.byteCount(forElements: elementCount) ?? 0 }
}

/// One contributing model's tensor for an output tensor.
public struct MergeInput: Sendable {
    /// Index in `PreparedMerge.checkpoints`.
    public let checkpoint: Int
    public let tensor: TensorEntry
    /// Set when the tensor stores its rows in another order than the output (a Llama
    /// Q or K projection in the other format's head layout).
    public let rowOrder: RowOrder?
    /// Set when the model is a LoRA adapter adapting this tensor: the input is `tensor`
    /// (the adapter's base's) plus the adapter's δ.
    public var lora: LoRAInput? = nil
    /// Set when the model's rows are mapped to the output tokenizer (see `MergeJob.baseRows`).
    public var rows: VocabularyRows? = nil
}

/// The rows of a model's embedding (or output projection) in the output tokenizer's
/// order: output row r is the tensor's row `source[r]`, or for a token the model lacks
/// (a negative entry −1 − k) the values `filled[k]`, computed when the merge is prepared.
public struct VocabularyRows: Sendable {
    /// Entries per row.
    public let rowLength: Int
    /// Per output row: the tensor's row, or −1 − k for `filled[k]`.
    public let source: [Int32]
    /// Rows the model does not hold, each `rowLength` values.
    public let filled: [[Float]]
}

/// Where an input's rows sit: output row r is stored as row `sourceRow(r)`.
public struct RowOrder: Sendable, Hashable {
    public let rows: Int
    public let columns: Int
    /// Attention heads of the projection.
    public let heads: Int
    /// True when the output is in GGUF's layout and the input in HF's.
    public let toGGUF: Bool

    /// The input row holding output row `row`.
    public func sourceRow(_ row: Int) -> Int {
        LlamaFamily.sourceRow(row, rows: rows, heads: heads, toGGUF: toGGUF)
    }
}
