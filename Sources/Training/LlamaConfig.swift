import Checkpoints

/// What the trainer needs of `LlamaConfig` (Checkpoints' one Llama config type):
/// a `LlamaForCausalLM` over the byte tokenizer, built, checked, read and written
/// as `transformers` reads it.
extension LlamaConfig {
    /// A `LlamaForCausalLM` of these sizes; every optional key is stated, as the
    /// trainer writes them all.
    public init(hiddenSize: Int, layerCount: Int, headCount: Int, keyValueHeadCount: Int, intermediateSize: Int,
                vocabularySize: Int = ByteTokenizer.vocabularySize, rmsNormEpsilon: Double = 1e-5,
                ropeTheta: Double = 10000, tieWordEmbeddings: Bool = false, maxPositions: Int = 256) {
        self.init(architecture: LlamaFamily.llama, hiddenSize: hiddenSize, layerCount: layerCount, headCount: headCount,
                  intermediateSize: intermediateSize, vocabularySize: vocabularySize, rmsNormEpsilon: rmsNormEpsilon,
                  tieWordEmbeddings: tieWordEmbeddings, statedKeyValueHeads: keyValueHeadCount, statedRopeTheta: ropeTheta,
                  statedMaxPositions: maxPositions)
    }

    /// Width of all query heads together.
    public var queryWidth: Int { headCount * headDimension }
    /// Width of all key (or value) heads together.
    public var keyValueWidth: Int { keyValueHeadCount * headDimension }

    /// The model the demo trains: small enough to pretrain in minutes on two cores.
    public static let demo = LlamaConfig(hiddenSize: 128, layerCount: 4, headCount: 4, keyValueHeadCount: 2,
                                         intermediateSize: 352, maxPositions: 128)

    /// The largest model this trainer builds (2 GB of Float32 weights).
    public static let maximumParameters: Double = 5e8

    /// The most memory one training step's activations may take. Their size grows
    /// with the batch and with the square of the longest sequence, which the data
    /// decides (`max_position_embeddings` only caps it), so it is checked before
    /// training starts rather than found out by the allocator.
    public static let maximumActivationBytes: Double = 4 * 1024 * 1024 * 1024

    /// Bytes of the buffers one training step allocates (`Activations`) for
    /// `sequences` sequences of `length` positions, counted in Double so sizes
    /// taken from a file cannot overflow.
    public func activationBytes(sequences: Int, length: Int) -> Double {
        let s = Double(sequences), l = Double(length), n = s * l
        let h = Double(hiddenSize), q = Double(headCount) * Double(headDimension)
        let kv = Double(keyValueHeadCount) * Double(headDimension), inter = Double(intermediateSize)
        let perLayer = n * (5 * h + 2 * q + 2 * kv + 3 * inter + 2) + s * Double(headCount) * l * l
        let stack = Double(layerCount) * perLayer + Double(layerCount + 1) * n * h
        let head = n * (h + 1 + Double(vocabularySize)) + l * Double(headDimension)
        let backward = n * (2 * h + 2 * q + 2 * kv + 3 * inter) + l * l
        return 4 * (stack + head + backward)
    }

    /// Checks the shape rules the model relies on; `file` names the source in messages.
    public func validate(file: String) throws(TrainingError) {
        func fail(_ problem: String) throws(TrainingError) { throw .config(file: file, problem: problem) }
        for (name, value) in [("hidden_size", hiddenSize), ("num_hidden_layers", layerCount),
                              ("num_attention_heads", headCount), ("num_key_value_heads", keyValueHeadCount),
                              ("intermediate_size", intermediateSize), ("vocab_size", vocabularySize),
                              ("max_position_embeddings", maxPositions)] where value < 1 {
            try fail("\(name) must be at least 1, got \(value)")
        }
        if hiddenSize % headCount != 0 { try fail("hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(headCount)") }
        if headDimension % 2 != 0 { try fail("head dimension \(headDimension) must be even for rotary embeddings") }
        if headCount % keyValueHeadCount != 0 {
            try fail("num_attention_heads \(headCount) is not a multiple of num_key_value_heads \(keyValueHeadCount)")
        }
        if vocabularySize != ByteTokenizer.vocabularySize {
            try fail("vocab_size \(vocabularySize) does not match the byte tokenizer's \(ByteTokenizer.vocabularySize)")
        }
        if !(rmsNormEpsilon > 0) { try fail("rms_norm_eps must be positive") }
        if !(ropeTheta > 0) { try fail("rope_theta must be positive") }
        // Counted in Double so absurd sizes cannot overflow before they are refused.
        let h = Double(hiddenSize), kv = Double(keyValueHeadCount * (hiddenSize / headCount))
        let perLayer = 2 * h + 2 * h * h + 2 * h * kv + 3 * h * Double(intermediateSize)
        let parameters = Double(vocabularySize) * h * (tieWordEmbeddings ? 1 : 2) + Double(layerCount) * perLayer + h
        if parameters > Self.maximumParameters {
            try fail("model has \(Int(parameters)) parameters; this trainer is for toy scale (at most \(Int(Self.maximumParameters)))")
        }
    }

    /// Reads a `config.json` text. Only what this module computes is accepted:
    /// `LlamaForCausalLM`, SiLU activation, no biases, no rope scaling.
    public static func parse(_ text: String, file: String) throws(TrainingError) -> LlamaConfig {
        let json: JSONValue
        do { json = try JSONParser.parse(text) } catch { throw .config(file: file, problem: "not valid JSON: \(error)") }
        guard case .object = json else { throw .config(file: file, problem: "not a JSON object") }
        func integer(_ key: String, default value: Int? = nil) throws(TrainingError) -> Int {
            guard let field = json[key] else {
                if let value { return value }
                throw .config(file: file, problem: "missing \(key)")
            }
            guard let n = field.nonNegativeInteger else { throw .config(file: file, problem: "\(key) is not a non-negative integer") }
            return n
        }
        func number(_ key: String, default value: Double) throws(TrainingError) -> Double {
            guard let field = json[key] else { return value }
            guard let x = field.doubleValue else { throw .config(file: file, problem: "\(key) is not a number") }
            return x
        }
        if let architectures = json["architectures"] {
            guard case .array(let names) = architectures, names.count == 1, names[0].stringValue == "LlamaForCausalLM" else {
                throw .config(file: file, problem: "unsupported architectures \(architectures.compactText) (only LlamaForCausalLM)")
            }
        }
        if let activation = json["hidden_act"], activation.stringValue != "silu" {
            throw .config(file: file, problem: "unsupported hidden_act \(activation.compactText) (only \"silu\")")
        }
        for key in ["attention_bias", "mlp_bias"] {
            if let flag = json[key], flag != .bool(false) {
                throw .config(file: file, problem: "unsupported \(key) \(flag.compactText) (only false)")
            }
        }
        if let scaling = json["rope_scaling"], scaling != .null {
            throw .config(file: file, problem: "unsupported rope_scaling \(scaling.compactText) (only null)")
        }
        var tie = false
        if let flag = json["tie_word_embeddings"] {
            guard case .bool(let b) = flag else { throw .config(file: file, problem: "tie_word_embeddings is not a boolean") }
            tie = b
        }
        let heads = try integer("num_attention_heads")
        let config = LlamaConfig(
            hiddenSize: try integer("hidden_size"), layerCount: try integer("num_hidden_layers"), headCount: heads,
            keyValueHeadCount: try integer("num_key_value_heads", default: heads),
            intermediateSize: try integer("intermediate_size"), vocabularySize: try integer("vocab_size"),
            rmsNormEpsilon: try number("rms_norm_eps", default: 1e-6), ropeTheta: try number("rope_theta", default: 10000),
            tieWordEmbeddings: tie, maxPositions: try integer("max_position_embeddings", default: 2048))
        if let headDim = json["head_dim"], headDim.nonNegativeInteger != config.headDimension {
            throw .config(file: file, problem: "head_dim \(headDim.compactText) is not hidden_size / num_attention_heads")
        }
        try config.validate(file: file)
        return config
    }

    /// The `config.json` Hugging Face `transformers` loads as `LlamaForCausalLM`.
    public var configJSON: JSONValue {
        .object([
            ("architectures", .array([.string("LlamaForCausalLM")])),
            ("model_type", .string("llama")),
            ("hidden_size", .integer(hiddenSize)),
            ("num_hidden_layers", .integer(layerCount)),
            ("num_attention_heads", .integer(headCount)),
            ("num_key_value_heads", .integer(keyValueHeadCount)),
            ("head_dim", .integer(headDimension)),
            ("intermediate_size", .integer(intermediateSize)),
            ("vocab_size", .integer(vocabularySize)),
            ("max_position_embeddings", .integer(maxPositions)),
            ("rms_norm_eps", .number(String(rmsNormEpsilon))),
            ("rope_theta", .number(String(ropeTheta))),
            ("rope_scaling", .null),
            ("hidden_act", .string("silu")),
            ("attention_bias", .bool(false)),
            ("mlp_bias", .bool(false)),
            ("attention_dropout", .number("0.0")),
            ("initializer_range", .number("0.02")),
            ("tie_word_embeddings", .bool(tieWordEmbeddings)),
            ("bos_token_id", .integer(ByteTokenizer.bos)),
            ("eos_token_id", .integer(ByteTokenizer.eos)),
            ("pad_token_id", .integer(ByteTokenizer.pad)),
            ("torch_dtype", .string("float32")),
            ("use_cache", .bool(true)),
        ])
    }
}

extension LlamaConfig {
    /// The cap on a `config.json` read whole; real ones are a few kilobytes.
    public static let maximumFileSize = 16 << 20

    /// Reads and checks a `config.json` file.
    public static func load(_ path: String) throws(TrainingError) -> LlamaConfig {
        let text: String
        do {
            let bytes = try InputFile.readAll(path, cap: maximumFileSize, what: "a config.json")
            text = String(decoding: bytes, as: UTF8.self)
        } catch {
            guard case .io(_, let problem) = error else { throw .config(file: path, problem: "cannot read (\(error))") }
            throw .config(file: path, problem: "cannot read: \(problem)")
        }
        return try parse(text, file: path)
    }
}
