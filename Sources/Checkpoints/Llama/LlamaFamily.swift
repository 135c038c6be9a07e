/// The Llama family of architectures as Hugging Face and GGUF name them: one
/// table of tensor names, the Q/K row permutation, and which architectures
/// convert.
public enum LlamaFamily {
    /// An architecture Claire converts between HF folders and GGUF.
    public struct Architecture: Sendable, Equatable {
        /// `architectures[0]` in config.json.
        public let hfClass: String
        /// `general.architecture` in GGUF (also the prefix of its hyperparameter keys).
        public let ggufName: String
        /// `model_type` in config.json.
        public let modelType: String
        /// True when Q and K rows are permuted from HF's rotate-half layout to
        /// GGUF's interleaved pairs (llama.cpp does this for Llama and Mistral, not Qwen2).
        public let permutesQK: Bool
        /// True when transformers' config class fills in `head_dim` when config.json
        /// omits it, so llama.cpp records key/value lengths for every model.
        public let configSuppliesHeadDimension: Bool
        /// True when llama.cpp also records `vocab_size` and `rope.dimension_count`.
        public let recordsVocabAndRopeDimension: Bool
    }

    /// The supported architectures.
    public static let architectures: [Architecture] = [
        Architecture(hfClass: "LlamaForCausalLM", ggufName: "llama", modelType: "llama", permutesQK: true,
                     configSuppliesHeadDimension: true, recordsVocabAndRopeDimension: true),
        Architecture(hfClass: "MistralForCausalLM", ggufName: "llama", modelType: "mistral", permutesQK: true,
                     configSuppliesHeadDimension: true, recordsVocabAndRopeDimension: true),
        Architecture(hfClass: "Qwen2ForCausalLM", ggufName: "qwen2", modelType: "qwen2", permutesQK: false,
                     configSuppliesHeadDimension: false, recordsVocabAndRopeDimension: false),
    ]

    /// `LlamaForCausalLM`, the architecture the trainer builds.
    public static var llama: Architecture { architectures[0] }

    /// Tensors outside the layers: HF name → GGUF name.
    static let globalNames: [(hf: String, gguf: String)] = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ]

    /// Per-layer tensors: HF suffix after `model.layers.N.` → GGUF suffix after `blk.N.`.
    static let layerNames: [(hf: String, gguf: String)] = [
        ("input_layernorm.weight", "attn_norm.weight"),
        ("self_attn.q_proj.weight", "attn_q.weight"),
        ("self_attn.k_proj.weight", "attn_k.weight"),
        ("self_attn.v_proj.weight", "attn_v.weight"),
        ("self_attn.o_proj.weight", "attn_output.weight"),
        ("self_attn.q_proj.bias", "attn_q.bias"),
        ("self_attn.k_proj.bias", "attn_k.bias"),
        ("self_attn.v_proj.bias", "attn_v.bias"),
        ("post_attention_layernorm.weight", "ffn_norm.weight"),
        ("mlp.gate_proj.weight", "ffn_gate.weight"),
        ("mlp.up_proj.weight", "ffn_up.weight"),
        ("mlp.down_proj.weight", "ffn_down.weight"),
    ]

    /// HF tensors llama.cpp drops because they are recomputed at load time.
    public static func isDerived(hfName: String) -> Bool {
        hfName.hasSuffix(".rotary_emb.inv_freq")
    }

    /// The GGUF name of an HF tensor, or nil when the family has no such tensor.
    public static func ggufName(forHF name: String) -> String? {
        if let global = globalNames.first(where: { $0.hf == name }) { return global.gguf }
        guard let (layer, suffix) = split(name, prefix: "model.layers.") else { return nil }
        return layerNames.first { $0.hf == suffix }.map { "blk.\(layer).\($0.gguf)" }
    }

    /// The HF name of a GGUF tensor, or nil when the family has no such tensor.
    public static func hfName(forGGUF name: String) -> String? {
        if let global = globalNames.first(where: { $0.gguf == name }) { return global.hf }
        guard let (layer, suffix) = split(name, prefix: "blk.") else { return nil }
        return layerNames.first { $0.gguf == suffix }.map { "model.layers.\(layer).\($0.hf)" }
    }

    /// The layer number in an HF tensor name (`model.layers.N.…`), if any.
    public static func layer(ofHF name: String) -> Int? { split(name, prefix: "model.layers.")?.0 }

    private static func split(_ name: String, prefix: String) -> (Int, Substring)? {
        guard name.hasPrefix(prefix) else { return nil }
        let rest = name.dropFirst(prefix.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0 else { return nil }
        return (layer, rest[rest.index(after: dot)...])
    }

    /// Which attention projection a tensor is, for the permutation.
    public enum Projection: Sendable { case query, key }

    /// The projection an HF tensor name holds, if Q or K (weights and biases).
    public static func projection(ofHF name: String) -> Projection? {
        if name.hasSuffix("self_attn.q_proj.weight") || name.hasSuffix("self_attn.q_proj.bias") { return .query }
        if name.hasSuffix("self_attn.k_proj.weight") || name.hasSuffix("self_attn.k_proj.bias") { return .key }
        return nil
    }

    /// The heads whose rows a Q or K projection's permutation runs over — every head
    /// for Q, the key/value heads for K — or nil when `hfName` is neither or
    /// `architecture` keeps Hugging Face's order. Whether the rows split into pairs
    /// per head is `splitsIntoPairs`.
    public static func permutedHeads(ofHF hfName: String, architecture: Architecture, headCount: Int, kvHeads: Int) -> Int? {
        guard architecture.permutesQK, let projection = projection(ofHF: hfName) else { return nil }
        return projection == .query ? headCount : kvHeads
    }

    /// The architecture and attention head counts a GGUF file of the family records
    /// (`general.architecture`, `<arch>.attention.head_count`, and `head_count_kv`, the
    /// head count when absent), or nil for another architecture or no positive head count.
    public static func ggufAttention(_ metadata: [MetadataEntry]) -> (architecture: Architecture, heads: Int, kvHeads: Int)? {
        func value(_ key: String) -> MetadataValue? { metadata.first { $0.key == key }?.value }
        guard let name = value("general.architecture")?.stringValue,
              let architecture = architectures.first(where: { $0.ggufName == name }),
              let heads = value("\(name).attention.head_count")?.intValue, heads > 0
        else { return nil }
        return (architecture, heads, value("\(name).attention.head_count_kv")?.intValue ?? heads)
    }

    /// True when `rows` rows split into `heads` heads of row pairs, as the Q/K
    /// permutation needs.
    /// A head count from a file can be anything, so `2 × heads` is checked for overflow.
    public static func splitsIntoPairs(_ rows: Int, heads: Int) -> Bool {
        let (pairs, overflow) = heads.multipliedReportingOverflow(by: 2)
        return heads > 0 && !overflow && rows >= 0 && rows % pairs == 0
    }

    /// Reorders the rows of a `rows × columns` matrix (row-major) between HF's
    /// rotate-half layout and GGUF's interleaved pairs, for `heads` heads (see
    /// `sourceRow`): towards GGUF with `toGGUF`, back to HF without.
    /// - Precondition: `rows` is a multiple of `2 × heads`; buffers hold rows × columns elements.
    public static func permuteRows(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>,
                                   rows: Int, columns: Int, heads: Int, toGGUF: Bool) {
        for to in 0..<rows {
            let from = sourceRow(to, rows: rows, heads: heads, toGGUF: toGGUF)
            _ = UnsafeMutableBufferPointer(rebasing: destination[(to * columns)..<((to + 1) * columns)])
                .update(fromContentsOf: source[(from * columns)..<((from + 1) * columns)])
        }
    }

    /// For row `row` of a Q or K tensor in one layout, the row holding it in the other:
    /// viewed as [heads, 2, rows/heads/2] (HF, rotate-half) or [heads, rows/heads/2, 2]
    /// (GGUF, interleaved pairs). With `toGGUF`, `row` is a GGUF row and the result
    /// the HF row it comes from; without, the reverse.
    /// - Precondition: `rows` is a multiple of `2 × heads`.
    public static func sourceRow(_ row: Int, rows: Int, heads: Int, toGGUF: Bool) -> Int {
        let half = rows / heads / 2
        if toGGUF {
            let (head, rest) = row.quotientAndRemainder(dividingBy: 2 * half)
            let (i, pair) = rest.quotientAndRemainder(dividingBy: 2)
            return (head * 2 + pair) * half + i
        }
        let (head, rest) = row.quotientAndRemainder(dividingBy: 2 * half)
        let (pair, i) = rest.quotientAndRemainder(dividingBy: half)
        return (head * half + i) * 2 + pair
    }
}
