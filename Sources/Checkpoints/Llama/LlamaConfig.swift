/// A Llama-family model's hyperparameters: read from `config.json` (by the
/// converter here, by the trainer in `Training`) or from GGUF metadata, and
/// written to either. The keys a file may leave out are kept as stated (nil: not
/// stated), so a conversion writes back exactly the keys it read; the `…Count`,
/// `headDimension`, `ropeTheta` and `maxPositions` accessors give the values in
/// effect, with `transformers`' defaults for what is not stated.
public struct LlamaConfig: Sendable, Equatable {
    public var architecture: LlamaFamily.Architecture
    /// `hidden_size` (GGUF `embedding_length`).
    public var hiddenSize: Int
    /// `num_hidden_layers` (GGUF `block_count`).
    public var layerCount: Int
    /// `num_attention_heads`.
    public var headCount: Int
    /// `intermediate_size` (GGUF `feed_forward_length`).
    public var intermediateSize: Int
    /// `vocab_size`.
    public var vocabularySize: Int
    /// `rms_norm_eps`.
    public var rmsNormEpsilon: Double
    public var tieWordEmbeddings: Bool
    /// `num_key_value_heads` as stated.
    public var statedKeyValueHeads: Int?
    /// `head_dim` as stated.
    public var statedHeadDimension: Int?
    /// `rope_theta` as stated.
    public var statedRopeTheta: Double?
    /// `max_position_embeddings` as stated (GGUF `context_length`).
    public var statedMaxPositions: Int?
    public var bosTokenID: Int?
    public var eosTokenID: Int?
    public var padTokenID: Int?

    public init(architecture: LlamaFamily.Architecture, hiddenSize: Int, layerCount: Int, headCount: Int, intermediateSize: Int,
                vocabularySize: Int, rmsNormEpsilon: Double, tieWordEmbeddings: Bool, statedKeyValueHeads: Int?,
                statedHeadDimension: Int? = nil, statedRopeTheta: Double?, statedMaxPositions: Int?,
                bosTokenID: Int? = nil, eosTokenID: Int? = nil, padTokenID: Int? = nil) {
        self.architecture = architecture
        self.hiddenSize = hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.intermediateSize = intermediateSize
        self.vocabularySize = vocabularySize
        self.rmsNormEpsilon = rmsNormEpsilon
        self.tieWordEmbeddings = tieWordEmbeddings
        self.statedKeyValueHeads = statedKeyValueHeads
        self.statedHeadDimension = statedHeadDimension
        self.statedRopeTheta = statedRopeTheta
        self.statedMaxPositions = statedMaxPositions
        self.bosTokenID = bosTokenID
        self.eosTokenID = eosTokenID
        self.padTokenID = padTokenID
    }

    /// Key/value heads: as stated, or one per attention head. Setting it states it.
    public var keyValueHeadCount: Int {
        get { statedKeyValueHeads ?? headCount }
        set { statedKeyValueHeads = newValue }
    }
    /// Width of one attention head (the rotary dimension): `head_dim`, or hidden size over heads.
    public var headDimension: Int { statedHeadDimension ?? hiddenSize / headCount }
    /// The rotary base: as stated, or 10000. Setting it states it.
    public var ropeTheta: Double {
        get { statedRopeTheta ?? 10000 }
        set { statedRopeTheta = newValue }
    }
    /// Longest sequence: as stated, or 2048. Setting it states it.
    public var maxPositions: Int {
        get { statedMaxPositions ?? 2048 }
        set { statedMaxPositions = newValue }
    }

    /// Reads `config.json` of a model folder.
    public static func read(configAt path: String) throws(CheckpointError) -> LlamaConfig {
        let json = try readJSONFile(path)
        do {
            return try LlamaConfig(config: json)
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
        layerCount = try int("num_hidden_layers")
        statedMaxPositions = optionalInt("max_position_embeddings")
        hiddenSize = try int("hidden_size")
        intermediateSize = try int("intermediate_size")
        headCount = try int("num_attention_heads")
        statedKeyValueHeads = optionalInt("num_key_value_heads")
        statedHeadDimension = optionalInt("head_dim")
        vocabularySize = try int("vocab_size")
        statedRopeTheta = config["rope_theta"]?.doubleValue
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
            (name("num_hidden_layers", "block_count"), layerCount),
            (name("max_position_embeddings", "context_length"), statedMaxPositions),
            (name("hidden_size", "embedding_length"), hiddenSize),
            (name("intermediate_size", "feed_forward_length"), intermediateSize),
            (name("num_attention_heads", "attention.head_count"), headCount),
            (name("num_key_value_heads", "attention.head_count_kv"), statedKeyValueHeads),
            (name("head_dim", "attention.key_length"), statedHeadDimension),
            (name("vocab_size", "vocab_size"), vocabularySize),
        ]
        for case let (key, value?) in sizes where value < 1 || value > Int(UInt32.max) {
            throw .unsupportedSetting("\(key) \(value) (must be between 1 and \(UInt32.max))")
        }
        guard vocabularySize <= Self.maximumVocabularySize else {
            throw .unsupportedSetting("\(name("vocab_size", "vocab_size")) \(vocabularySize) (at most \(Self.maximumVocabularySize) tokens)")
        }
        guard hiddenSize % headCount == 0 || statedHeadDimension != nil else {
            throw .unsupportedSetting("\(name("hidden_size", "embedding_length")) \(hiddenSize) is not a multiple of \(headCount) heads")
        }
        guard headCount % keyValueHeadCount == 0 else {
            throw .unsupportedSetting("\(headCount) attention heads cannot be grouped over \(keyValueHeadCount) key/value heads")
        }
        let epsilonName = name("rms_norm_eps", "attention.layer_norm_rms_epsilon")
        guard Float(rmsNormEpsilon).isFinite, rmsNormEpsilon > 0 else {
            throw .unsupportedSetting("\(epsilonName) \(rmsNormEpsilon) (must be positive and finite in Float32)")
        }
        if let ropeTheta = statedRopeTheta, !(Float(ropeTheta).isFinite && ropeTheta > 0) {
            throw .unsupportedSetting("\(name("rope_theta", "rope.freq_base")) \(ropeTheta) (must be positive and finite in Float32)")
        }
        let gguf = source == .gguf
        let ids: [(String, Int?)] = [
            (gguf ? "tokenizer.ggml.bos_token_id" : "bos_token_id", bosTokenID),
            (gguf ? "tokenizer.ggml.eos_token_id" : "eos_token_id", eosTokenID),
            (gguf ? "tokenizer.ggml.padding_token_id" : "pad_token_id", padTokenID),
        ]
        for case let (key, id?) in ids where id < 0 || id >= vocabularySize {
            throw .unsupportedSetting("\(key) \(id) (outside the vocabulary of \(vocabularySize) tokens)")
        }
    }

    /// The architecture keys llama.cpp's converter writes, in its order.
    public func ggufMetadata() -> [MetadataEntry] {
        let a = architecture.ggufName
        // The initializers bound every size to 1...UInt32.max; clamping only keeps a
        // value set by hand from trapping.
        func u32(_ value: Int) -> MetadataValue { .uint32(UInt32(clamping: value)) }
        var entries: [MetadataEntry] = [
            MetadataEntry("\(a).block_count", u32(layerCount)),
        ]
        if let statedMaxPositions { entries.append(MetadataEntry("\(a).context_length", u32(statedMaxPositions))) }
        entries += [
            MetadataEntry("\(a).embedding_length", u32(hiddenSize)),
            MetadataEntry("\(a).feed_forward_length", u32(intermediateSize)),
            MetadataEntry("\(a).attention.head_count", u32(headCount)),
        ]
        if let statedKeyValueHeads { entries.append(MetadataEntry("\(a).attention.head_count_kv", u32(statedKeyValueHeads))) }
        if let statedRopeTheta { entries.append(MetadataEntry("\(a).rope.freq_base", .float32(Float(statedRopeTheta)))) }
        entries.append(MetadataEntry("\(a).attention.layer_norm_rms_epsilon", .float32(Float(rmsNormEpsilon))))
        if statedHeadDimension != nil || architecture.configSuppliesHeadDimension {
            entries.append(MetadataEntry("\(a).attention.key_length", u32(headDimension)))
            entries.append(MetadataEntry("\(a).attention.value_length", u32(headDimension)))
        }
        if architecture.recordsVocabAndRopeDimension {
            entries.append(MetadataEntry("\(a).vocab_size", u32(vocabularySize)))
            entries.append(MetadataEntry("\(a).rope.dimension_count", u32(headDimension)))
        }
        return entries
    }

    /// Reads the hyperparameters back from GGUF metadata; `vocabularySize` falls back
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
        layerCount = try int("block_count")
        statedMaxPositions = value("\(archName).context_length")?.intValue
        hiddenSize = try int("embedding_length")
        intermediateSize = try int("feed_forward_length")
        headCount = try int("attention.head_count")
        statedKeyValueHeads = value("\(archName).attention.head_count_kv")?.intValue
        statedHeadDimension = value("\(archName).attention.key_length")?.intValue
        statedRopeTheta = value("\(archName).rope.freq_base")?.doubleValue
        guard let eps = value("\(archName).attention.layer_norm_rms_epsilon")?.doubleValue else {
            throw .missingMetadata("\(archName).attention.layer_norm_rms_epsilon")
        }
        rmsNormEpsilon = eps
        guard let vocab = value("\(archName).vocab_size")?.intValue ?? tokenCount else { throw .missingMetadata("\(archName).vocab_size") }
        vocabularySize = vocab
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
            ("hidden_size", .integer(hiddenSize)),
            ("intermediate_size", .integer(intermediateSize)),
            ("num_hidden_layers", .integer(layerCount)),
            ("num_attention_heads", .integer(headCount)),
            ("num_key_value_heads", .integer(keyValueHeadCount)),
        ]
        if let statedHeadDimension { members.append(("head_dim", .integer(statedHeadDimension))) }
        members.append(("vocab_size", .integer(vocabularySize)))
        if let statedMaxPositions { members.append(("max_position_embeddings", .integer(statedMaxPositions))) }
        members.append(("rms_norm_eps", .number(Self.shortestText(rmsNormEpsilon))))
        if let statedRopeTheta { members.append(("rope_theta", .number(Self.shortestText(statedRopeTheta)))) }
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
