/// What part of a transformer a tensor belongs to, judged from its name.
///
/// Hugging Face (`model.layers.3.self_attn.q_proj.weight`) and GGUF
/// (`blk.3.attn_q.weight`) spellings are both recognised. The output projection
/// (`lm_head`, GGUF `output`) counts as an embedding: it is the other
/// vocabulary-sized matrix and behaves like one under fine-tuning.
public enum TensorKind: String, CaseIterable, Sendable {
    case embeddings
    case attention
    case mlp
    case norms
    case other

    /// Classifies a tensor name. Norms are tested first because their names
    /// often contain an attention or MLP word (`attn_norm`, `post_attention_layernorm`).
    public init(tensorName name: String) {
        let lower = name.lowercased()
        func has(_ words: String...) -> Bool { words.contains { lower.contains($0) } }
        if has("norm", "ln_", ".ln", "layernorm") {
            self = .norms
        } else if has("embed", "wte", "wpe", "token_embd", "lm_head") || lower.hasPrefix("output.") {
            self = .embeddings
        } else if has("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv") {
            self = .attention
        } else if has("mlp", "ffn", "feed_forward", "gate_proj", "up_proj", "down_proj", "experts") {
            self = .mlp
        } else {
            self = .other
        }
    }
}

/// The transformer block a tensor belongs to: N in `layers.N.` or `blk.N.`
/// (also `h.N.` and `layer.N.`), or nil for tensors outside the blocks.
public func layerIndex(ofTensor name: String) -> Int? {
    let parts = name.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count >= 3 else { return nil }
    for i in 0..<(parts.count - 2) where ["layers", "blk", "h", "layer"].contains(parts[i]) {
        if let n = Int(parts[i + 1]), n >= 0, parts[i + 1].allSatisfy(\.isASCII) { return n }
    }
    return nil
}

/// How a report's table is grouped.
public enum StatisticsGrouping: String, CaseIterable, Sendable {
    case tensor
    case layer
    case kind
}
