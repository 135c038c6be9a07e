/// A Llama-family model's hyperparameters, read from `config.json` or from GGUF
/// metadata, and written to either.
public struct LlamaHyperparameters: Sendable, Equatable {
    public var architecture: LlamaFamily.Architecture
    public var blockCount: Int
    public var contextLength: Int?
    public var embeddingLength: Int
    public var feedForwardLength: Int
    public var headCount: Int
    public var headCountKV: Int?
    /// `head_dim` when the config states it (otherwise hidden size over heads).
    public var headDimension: Int?
    public var ropeTheta: Double?
    public var rmsNormEpsilon: Double
    public var vocabSize: Int
    public var tieWordEmbeddings: Bool
    public var bosTokenID: Int?
    public var eosTokenID: Int?
    public var padTokenID: Int?

    /// KV heads, defaulting to the head count.
    public var kvHeads: Int { headCountKV ?? headCount }
    /// Rotary dimension: `head_dim`, or hidden size over heads.
    public var ropeDimension: Int { headDimension ?? embeddingLength / headCount }

    /// Reads `config.json` of a model folder.
    public static func read(configAt path: String) throws(CheckpointError) -> LlamaHyperparameters {
        let json = try readJSONFile(path)
        do {
            return try LlamaHyperparameters(config: json)
        } catch {
            throw .conversion(file: path, problem: error)
        }
    }

    /// Interprets a parsed `config.json`.
    public init(config: JSONValue) throws(ConversionProblem) {
        guard case .array(let classes)? = config["architectures"], let name = classes.first?.stringValue else {
            throw .missingConfigField("architectures")
        }
        guard let arch = LlamaFamily.architectures.first(where: { $0.hfClass == name }) else {
            throw .unsupportedArchitecture(name)
        }
        architecture = arch
        func int(_ key: String) throws(ConversionProblem) -> Int {
            guard let v = config[key]?.nonNegativeInteger else { throw .missingConfigField(key) }
            return v
        }
        func optionalInt(_ key: String) -> Int? { config[key]?.nonNegativeInteger }
        blockCount = try int("num_hidden_layers")
        contextLength = optionalInt("max_position_embeddings")
        embeddingLength = try int("hidden_size")
        feedForwardLength = try int("intermediate_size")
        headCount = try int("num_attention_heads")
        headCountKV = optionalInt("num_key_value_heads")
        headDimension = optionalInt("head_dim")
        vocabSize = try int("vocab_size")
        ropeTheta = config["rope_theta"]?.doubleValue
        guard let eps = config["rms_norm_eps"]?.doubleValue else { throw .missingConfigField("rms_norm_eps") }
        rmsNormEpsilon = eps
        tieWordEmbeddings = config["tie_word_embeddings"] == .bool(true)
        bosTokenID = optionalInt("bos_token_id")
        eosTokenID = optionalInt("eos_token_id")
        padTokenID = optionalInt("pad_token_id")
        if let act = config["hidden_act"]?.stringValue, act != "silu" {
            throw .unsupportedSetting("hidden_act '\(act)' (the Llama family uses silu)")
        }
        if case .object? = config["rope_scaling"] {
            let type = config["rope_scaling"]?["rope_type"]?.stringValue ?? config["rope_scaling"]?["type"]?.stringValue ?? "?"
            if type != "default" { throw .unsupportedSetting("rope_scaling of type '\(type)'") }
        }
        try validate(names: .config)
    }

    /// The largest vocabulary Claire converts. A tokenizer's vocabulary is rebuilt
    /// entry by entry (and a GGUF file lists every token), so a size taken on trust
    /// would let a small file demand any amount of memory; real vocabularies hold a
    /// few hundred thousand tokens. Tokens and their types together stay within half
    /// of what a GGUF reader accepts in metadata arrays, leaving room for the merges.
    public static let maximumVocabularySize = GGUFReader.maximumArrayElements / 4

    /// Where the values being checked came from, for naming them in messages.
    enum Source { case config, gguf }

    /// Checks the values a file supplied before anything is sized from them: every
    /// size positive and small enough for GGUF's u32 fields, the head grouping
    /// consistent, epsilon and rope base finite and positive, token ids inside the
    /// vocabulary.
    func validate(names source: Source) throws(ConversionProblem) {
        let a = architecture.ggufName
        func name(_ config: String, _ gguf: String) -> String { source == .config ? config : "\(a).\(gguf)" }
        let sizes: [(String, Int?)] = [
            (name("num_hidden_layers", "block_count"), blockCount),
            (name("max_position_embeddings", "context_length"), contextLength),
            (name("hidden_size", "embedding_length"), embeddingLength),
            (name("intermediate_size", "feed_forward_length"), feedForwardLength),
            (name("num_attention_heads", "attention.head_count"), headCount),
            (name("num_key_value_heads", "attention.head_count_kv"), headCountKV),
            (name("head_dim", "attention.key_length"), headDimension),
            (name("vocab_size", "vocab_size"), vocabSize),
        ]
        for case let (key, value?) in sizes where value < 1 || value > Int(UInt32.max) {
            throw .unsupportedSetting("\(key) \(value) (must be between 1 and \(UInt32.max))")
        }
        guard vocabSize <= Self.maximumVocabularySize else {
            throw .unsupportedSetting("\(name("vocab_size", "vocab_size")) \(vocabSize) (at most \(Self.maximumVocabularySize) tokens)")
        }
        guard embeddingLength % headCount == 0 || headDimension != nil else {
            throw .unsupportedSetting("\(name("hidden_size", "embedding_length")) \(embeddingLength) is not a multiple of \(headCount) heads")
        }
        guard headCount % kvHeads == 0 else {
            throw .unsupportedSetting("\(headCount) attention heads cannot be grouped over \(kvHeads) key/value heads")
        }
        let epsilonName = name("rms_norm_eps", "attention.layer_norm_rms_epsilon")
        guard Float(rmsNormEpsilon).isFinite, rmsNormEpsilon > 0 else {
            throw .unsupportedSetting("\(epsilonName) \(rmsNormEpsilon) (must be positive and finite in Float32)")
        }
        if let ropeTheta, !(Float(ropeTheta).isFinite && ropeTheta > 0) {
            throw .unsupportedSetting("\(name("rope_theta", "rope.freq_base")) \(ropeTheta) (must be positive and finite in Float32)")
        }
        let gguf = source == .gguf
        let ids: [(String, Int?)] = [
            (gguf ? "tokenizer.ggml.bos_token_id" : "bos_token_id", bosTokenID),
            (gguf ? "tokenizer.ggml.eos_token_id" : "eos_token_id", eosTokenID),
            (gguf ? "tokenizer.ggml.padding_token_id" : "pad_token_id", padTokenID),
        ]
        for case let (key, id?) in ids where id < 0 || id >= vocabSize {
            throw .unsupportedSetting("\(key) \(id) (outside the vocabulary of \(vocabSize) tokens)")
        }
    }

    /// The architecture keys llama.cpp's converter writes, in its order.
    public func ggufMetadata() -> [MetadataEntry] {
        let a = architecture.ggufName
        // The initializers bound every size to 1...UInt32.max; clamping only keeps a
        // value set by hand from trapping.
        func u32(_ value: Int) -> MetadataValue { .uint32(UInt32(clamping: value)) }
        var entries: [MetadataEntry] = [
            MetadataEntry("\(a).block_count", u32(blockCount)),
        ]
        if let contextLength { entries.append(MetadataEntry("\(a).context_length", u32(contextLength))) }
        entries += [
            MetadataEntry("\(a).embedding_length", u32(embeddingLength)),
            MetadataEntry("\(a).feed_forward_length", u32(feedForwardLength)),
            MetadataEntry("\(a).attention.head_count", u32(headCount)),
        ]
        if let headCountKV { entries.append(MetadataEntry("\(a).attention.head_count_kv", u32(headCountKV))) }
        if let ropeTheta { entries.append(MetadataEntry("\(a).rope.freq_base", .float32(Float(ropeTheta)))) }
        entries.append(MetadataEntry("\(a).attention.layer_norm_rms_epsilon", .float32(Float(rmsNormEpsilon))))
        if headDimension != nil || architecture.configSuppliesHeadDimension {
            entries.append(MetadataEntry("\(a).attention.key_length", u32(ropeDimension)))
            entries.append(MetadataEntry("\(a).attention.value_length", u32(ropeDimension)))
        }
        if architecture.recordsVocabAndRopeDimension {
            entries.append(MetadataEntry("\(a).vocab_size", u32(vocabSize)))
            entries.append(MetadataEntry("\(a).rope.dimension_count", u32(ropeDimension)))
        }
        return entries
    }

    /// Reads the hyperparameters back from GGUF metadata; `vocabSize` falls back
    /// to the token list's length, `tieWordEmbeddings` is decided by the caller
    /// (from whether an `output.weight` tensor exists).
    public init(gguf metadata: [MetadataEntry], tokenCount: Int?, hasOutputTensor: Bool) throws(ConversionProblem) {
        func value(_ key: String) -> MetadataValue? { metadata.first { $0.key == key }?.value }
        guard let archName = value("general.architecture")?.stringValue else { throw .missingMetadata("general.architecture") }
        guard let arch = LlamaFamily.architectures.first(where: { $0.ggufName == archName }) else {
            throw .unsupportedArchitecture(archName)
        }
        architecture = arch
        func int(_ key: String) throws(ConversionProblem) -> Int {
            guard let v = value("\(archName).\(key)")?.intValue else { throw .missingMetadata("\(archName).\(key)") }
            return v
        }
        blockCount = try int("block_count")
        contextLength = value("\(archName).context_length")?.intValue
        embeddingLength = try int("embedding_length")
        feedForwardLength = try int("feed_forward_length")
        headCount = try int("attention.head_count")
        headCountKV = value("\(archName).attention.head_count_kv")?.intValue
        headDimension = value("\(archName).attention.key_length")?.intValue
        ropeTheta = value("\(archName).rope.freq_base")?.doubleValue
        guard let eps = value("\(archName).attention.layer_norm_rms_epsilon")?.doubleValue else {
            throw .missingMetadata("\(archName).attention.layer_norm_rms_epsilon")
        }
        rmsNormEpsilon = eps
        guard let vocab = value("\(archName).vocab_size")?.intValue ?? tokenCount else { throw .missingMetadata("\(archName).vocab_size") }
        vocabSize = vocab
        tieWordEmbeddings = !hasOutputTensor
        bosTokenID = value("tokenizer.ggml.bos_token_id")?.intValue
        eosTokenID = value("tokenizer.ggml.eos_token_id")?.intValue
        padTokenID = value("tokenizer.ggml.padding_token_id")?.intValue
        try validate(names: .gguf)
    }

    /// A `config.json` for this model with weights stored as `dtype`.
    public func configJSON(dtype: DType) -> JSONValue {
        let torchDType: String
        switch dtype {
        case .bf16: torchDType = "bfloat16"
        case .f16: torchDType = "float16"
        default: torchDType = "float32"
        }
        var members: [(key: String, value: JSONValue)] = [
            ("architectures", .array([.string(architecture.hfClass)])),
            ("model_type", .string(architecture.modelType)),
            ("hidden_size", .integer(embeddingLength)),
            ("intermediate_size", .integer(feedForwardLength)),
            ("num_hidden_layers", .integer(blockCount)),
            ("num_attention_heads", .integer(headCount)),
            ("num_key_value_heads", .integer(kvHeads)),
        ]
        if let headDimension { members.append(("head_dim", .integer(headDimension))) }
        members.append(("vocab_size", .integer(vocabSize)))
        if let contextLength { members.append(("max_position_embeddings", .integer(contextLength))) }
        members.append(("rms_norm_eps", .number(Self.shortestText(rmsNormEpsilon))))
        if let ropeTheta { members.append(("rope_theta", .number(Self.shortestText(ropeTheta)))) }
        members += [
            ("hidden_act", .string("silu")),
            ("tie_word_embeddings", .bool(tieWordEmbeddings)),
            ("attention_bias", .bool(!architecture.permutesQK)),
            ("torch_dtype", .string(torchDType)),
        ]
        if let bosTokenID { members.append(("bos_token_id", .integer(bosTokenID))) }
        if let eosTokenID { members.append(("eos_token_id", .integer(eosTokenID))) }
        if let padTokenID { members.append(("pad_token_id", .integer(padTokenID))) }
        return .object(members)
    }

    /// A Float32 value recorded in GGUF, written with the fewest digits that
    /// identify it (1e-05 rather than 9.999999747378752e-06).
    static func shortestText(_ value: Double) -> String {
        let single = Float(value)
        return Double(single) == value ? "\(single)" : "\(value)"
    }
}

/// Why a model cannot be converted.
public enum ConversionProblem: Error, Equatable, Sendable, CustomStringConvertible {
    case missingConfigFile
    case missingConfigField(String)
    case missingMetadata(String)
    case unsupportedArchitecture(String)
    case unsupportedSetting(String)
    case unsupportedTokenizer(String)
    case unexpectedTensor(String)
    case tensorShape(tensor: String, problem: String)
    case unsupportedType(String)
    case needsModelFolder

    public var description: String {
        switch self {
        case .needsModelFolder: return "conversion to GGUF needs a model folder (config.json, weights, tokenizer files)"
        case .missingConfigFile: return "no config.json in the folder (conversion to GGUF takes the architecture and sizes from it)"
        case .missingConfigField(let k): return "config.json has no '\(k)'"
        case .missingMetadata(let k): return "GGUF metadata has no '\(k)'"
        case .unsupportedArchitecture(let a):
            let known = LlamaFamily.architectures.map(\.hfClass).joined(separator: ", ")
            return "architecture '\(a)' is not supported (supported: \(known))"
        case .unsupportedSetting(let s): return "unsupported \(s)"
        case .unsupportedTokenizer(let s): return "tokenizer not supported: \(s)"
        case .unexpectedTensor(let t): return "tensor '\(t)' has no counterpart in the Llama family's naming"
        case .tensorShape(let t, let p): return "tensor '\(t)': \(p)"
        case .unsupportedType(let t): return "cannot write element type \(t)"
        }
    }
}

/// Reads and parses a JSON file of at most 256 MiB.
public func readJSONFile(_ path: String, rejectDuplicateKeys: Bool = true) throws(CheckpointError) -> JSONValue {
    let file = try MappedFile(path: path)
    guard file.size <= InputFile.maximumJSONSize else {
        throw .io(file: path, problem: "is \(file.size) bytes, more than the \(InputFile.describeSize(InputFile.maximumJSONSize)) a JSON file may have")
    }
    guard SafetensorsReader.validateUTF8(file.bytes) else { throw .io(file: path, problem: "not valid UTF-8") }
    do {
        return try JSONParser.parse(file.bytes, rejectDuplicateKeys: rejectDuplicateKeys)
    } catch {
        throw .io(file: path, problem: "not valid JSON: \(error)")
    }
}
