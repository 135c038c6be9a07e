import Checkpoints

/// Where each named weight lives inside one flat Float32 vector.
///
/// The model keeps every parameter in a single buffer so the optimizer, the
/// gradient clip and the L1 proximal step are one loop each; names and shapes
/// are Hugging Face's, so a checkpoint is the buffer cut at these offsets.
public struct ParameterLayout: Sendable {
    /// One named tensor: its HF name, its shape `[out, in]` or `[n]`, and its slice.
    public struct Slot: Sendable, Equatable {
        public let name: String
        public let shape: [Int]
        public let offset: Int
        public var count: Int { shape.reduce(1, *) }
    }

    /// Offsets of one decoder layer's tensors.
    struct LayerSlots {
        let inputNorm, query, key, value, output, postNorm, gate, up, down: Int
    }

    public let config: LlamaConfig
    /// All tensors, in the order they are stored in the flat vector and in checkpoints.
    public let slots: [Slot]
    /// Total number of parameters.
    public let count: Int
    let embedding: Int
    let layers: [LayerSlots]
    let finalNorm: Int
    /// The output projection; equals `embedding` when the embeddings are tied.
    let lmHead: Int

    public init(config: LlamaConfig) {
        self.config = config
        var slots: [Slot] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            let start = offset
            slots.append(Slot(name: name, shape: shape, offset: start))
            offset += shape.reduce(1, *)
            return start
        }
        let h = config.hiddenSize
        embedding = add("model.embed_tokens.weight", [config.vocabularySize, h])
        var layers: [LayerSlots] = []
        for l in 0..<config.layerCount {
            let p = "model.layers.\(l)."
            layers.append(LayerSlots(
                inputNorm: add(p + "input_layernorm.weight", [h]),
                query: add(p + "self_attn.q_proj.weight", [config.queryWidth, h]),
                key: add(p + "self_attn.k_proj.weight", [config.keyValueWidth, h]),
                value: add(p + "self_attn.v_proj.weight", [config.keyValueWidth, h]),
                output: add(p + "self_attn.o_proj.weight", [h, config.queryWidth]),
                postNorm: add(p + "post_attention_layernorm.weight", [h]),
                gate: add(p + "mlp.gate_proj.weight", [config.intermediateSize, h]),
                up: add(p + "mlp.up_proj.weight", [config.intermediateSize, h]),
                down: add(p + "mlp.down_proj.weight", [h, config.intermediateSize])))
        }
        self.layers = layers
        finalNorm = add("model.norm.weight", [h])
        lmHead = config.tieWordEmbeddings ? embedding : add("lm_head.weight", [config.vocabularySize, h])
        self.slots = slots
        count = offset
    }

    /// The slot called `name`, if the model has one.
    public func slot(named name: String) -> Slot? { slots.first { $0.name == name } }

    /// True for the 1-D normalization weights, which start at one.
    static func isNorm(_ slot: Slot) -> Bool { slot.shape.count == 1 }
}
