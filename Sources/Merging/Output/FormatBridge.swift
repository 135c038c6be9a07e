import Checkpoints

/// Pairs a base's tensors with a model stored in the other format of the Llama
/// family — a Hugging Face folder or safetensors file against a GGUF file — so the
/// two can be merged without converting first. Names are translated through
/// `LlamaFamily`'s table, and Q/K projections, whose rows GGUF stores as interleaved
/// pairs per head, are read in the base's layout. Head counts come from the GGUF
/// file's metadata. `stats` reads across formats through it too.
public struct FormatBridge: Sendable {
    /// True when the base is the GGUF side.
    public let baseIsGGUF: Bool
    public let architecture: LlamaFamily.Architecture
    public let headCount: Int
    public let kvHeadCount: Int

    /// The bridge between `base` and `model`, or nil when they name tensors alike
    /// (same format) or the GGUF side is not a Llama-family architecture.
    public init?(base: Checkpoint, model: Checkpoint) {
        baseIsGGUF = base.format == .gguf
        guard baseIsGGUF != (model.format == .gguf) else { return nil }
        guard let layout = LlamaFamily.ggufAttention((baseIsGGUF ? base : model).metadata) else { return nil }
        architecture = layout.architecture
        headCount = layout.heads
        kvHeadCount = layout.kvHeads
    }

    /// The model's name for the base tensor `name` (nil: the family has no such tensor).
    public func modelName(for name: String) -> String? {
        baseIsGGUF ? LlamaFamily.hfName(forGGUF: name) : LlamaFamily.ggufName(forHF: name)
    }

    /// The name a model reached through `bridge` (nil: same format) gives base tensor `name`.
    public static func modelName(for name: String, through bridge: FormatBridge?) -> String? {
        bridge.map { $0.modelName(for: name) } ?? name
    }

    /// How the model stores the rows of base tensor `name` of `shape`: nil when in the
    /// same order, a problem when the rows do not split into the heads' pairs.
    public func rowOrder(for name: String, shape: [Int]) -> Result<RowOrder?, BridgeProblem> {
        guard let hfName = baseIsGGUF ? LlamaFamily.hfName(forGGUF: name) : name,
              let heads = LlamaFamily.permutedHeads(ofHF: hfName, architecture: architecture, headCount: headCount,
                                                    kvHeads: kvHeadCount)
        else { return .success(nil) }
        let count = shape.reduce(1, *)
        let rows = shape.first ?? 0
        guard rows > 0, LlamaFamily.splitsIntoPairs(rows, heads: heads) else {
            return .failure(BridgeProblem(description: "\(rows) rows do not split into \(heads) heads of pairs"))
        }
        return .success(RowOrder(rows: rows, columns: count / rows, heads: heads, toGGUF: baseIsGGUF))
    }
}

/// Why a tensor cannot be read across formats.
public struct BridgeProblem: Error {
    public let description: String
}
