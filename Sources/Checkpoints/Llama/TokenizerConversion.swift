/// A byte-level BPE tokenizer as GGUF stores it (`tokenizer.ggml.*`), built from a
/// Hugging Face `tokenizer.json` + `tokenizer_config.json`, and back.
public struct GGUFTokenizer: Sendable, Equatable {
    /// GGUF token types.
    public enum TokenType: Int32, Sendable {
        case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// `tokenizer.ggml.pre`: the pre-tokenizer llama.cpp applies.
    public var pre: String
    public var tokens: [String]
    public var types: [TokenType]
    public var merges: [String]
    /// Special token ids by role (`bos`, `eos`, `unk`, `sep`, `pad`, `cls`, `mask`).
    public var specialIDs: [(role: String, id: Int)]
    public var addBOS: Bool?
    public var addEOS: Bool?
    public var chatTemplate: String?

    public static func == (a: GGUFTokenizer, b: GGUFTokenizer) -> Bool {
        a.pre == b.pre && a.tokens == b.tokens && a.types == b.types && a.merges == b.merges
            && a.specialIDs.map(\.role) == b.specialIDs.map(\.role) && a.specialIDs.map(\.id) == b.specialIDs.map(\.id)
            && a.addBOS == b.addBOS && a.addEOS == b.addEOS && a.chatTemplate == b.chatTemplate
    }

    static let roles = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
    /// GGUF key suffix per role (`tokenizer.ggml.<key>`).
    static func idKey(_ role: String) -> String {
        switch role {
        case "unk": return "unknown_token_id"
        case "pad": return "padding_token_id"
        case "sep": return "seperator_token_id"  // the spelling GGUF uses
        default: return "\(role)_token_id"
        }
    }

    /// Pre-tokenizer split patterns llama.cpp knows by name.
    static let knownSplitPatterns: [(pattern: String, name: String)] = [
        (#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#, "llama-bpe"),
        (#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#, "qwen2"),
    ]

    /// Reads the tokenizer of a model folder, or nil when it has no `tokenizer.json`;
    /// links leaving the folder are refused unless `followSymlinks`.
    public static func read(folder: String, vocabSize: Int, followSymlinks: Bool = false) throws(CheckpointError) -> GGUFTokenizer? {
        let tokenizerPath = folder + "/tokenizer.json"
        guard HFFolder.fileExists(tokenizerPath) else { return nil }
        let tokenizer = try readJSONFile(HFFolder.sideFile("tokenizer.json", in: folder, followSymlinks: followSymlinks), rejectDuplicateKeys: false)
        let configPath = folder + "/tokenizer_config.json"
        let config = HFFolder.fileExists(configPath)
            ? try readJSONFile(HFFolder.sideFile("tokenizer_config.json", in: folder, followSymlinks: followSymlinks), rejectDuplicateKeys: false) : nil
        let modelConfigPath = folder + "/config.json"
        let modelConfig = HFFolder.fileExists(modelConfigPath) ? try readJSONFile(HFFolder.sideFile("config.json", in: folder, followSymlinks: followSymlinks)) : nil
        do {
            return try GGUFTokenizer(tokenizer: tokenizer, config: config, modelConfig: modelConfig, vocabSize: vocabSize)
        } catch {
            throw .conversion(file: tokenizerPath, problem: error)
        }
    }

    /// Interprets parsed tokenizer files.
    public init(tokenizer: JSONValue, config: JSONValue?, modelConfig: JSONValue?, vocabSize: Int) throws(ConversionProblem) {
        guard let model = tokenizer["model"], model["type"]?.stringValue == "BPE" else {
            throw .unsupportedTokenizer("model type '\(tokenizer["model"]?["type"]?.stringValue ?? "none")' (byte-level BPE only)")
        }
        if model["byte_fallback"] == .bool(true) {
            throw .unsupportedTokenizer("SentencePiece-style BPE with byte fallback (byte-level BPE only)")
        }
        guard case .object(let vocab)? = model["vocab"] else { throw .unsupportedTokenizer("no vocab in tokenizer.json") }
        // Checked before the vocabulary is allocated: the size comes from config.json.
        guard vocabSize >= 1, vocabSize <= LlamaConfig.maximumVocabularySize else {
            throw .unsupportedSetting("vocab_size \(vocabSize) (between 1 and \(LlamaConfig.maximumVocabularySize) tokens)")
        }
        var byID = [String?](repeating: nil, count: vocabSize)
        var typeByID = [TokenType](repeating: .unused, count: vocabSize)
        for (token, id) in vocab {
            guard let i = id.nonNegativeInteger, i < vocabSize else {
                throw .unsupportedTokenizer("token id of '\(token)' is outside the vocabulary of \(vocabSize)")
            }
            byID[i] = token
            typeByID[i] = .normal
        }
        var addedContents: [(content: String, id: Int)] = []
        if case .array(let added)? = tokenizer["added_tokens"] {
            for entry in added {
                guard let i = entry["id"]?.nonNegativeInteger, let content = entry["content"]?.stringValue else { continue }
                guard i < vocabSize else { throw .unsupportedTokenizer("added token '\(content)' id \(i) is outside the vocabulary") }
                byID[i] = content
                let special = entry["special"] == .bool(true) || Self.looksSpecial(content)
                typeByID[i] = special ? .control : .userDefined
                addedContents.append((content, i))
            }
        }
        tokens = byID.enumerated().map { $0.element ?? "[PAD\($0.offset)]" }
        types = typeByID
        merges = try Self.merges(model["merges"])
        pre = Self.preTokenizerName(tokenizer["pre_tokenizer"])

        // Special ids: the token names in tokenizer_config, then config.json's *_token_id.
        var special: [(role: String, id: Int)] = []
        for role in Self.roles {
            let entry = config?["\(role)_token"]
            let content = entry?.stringValue ?? entry?["content"]?.stringValue
            if let content, let id = addedContents.first(where: { $0.content == content })?.id {
                special.append((role, id))
            }
        }
        for role in Self.roles where !special.contains(where: { $0.role == role }) {
            if let id = modelConfig?["\(role)_token_id"]?.nonNegativeInteger, id < vocabSize { special.append((role, id)) }
        }
        specialIDs = special

        // A ByteLevel post-processor adds nothing; tokenizer_config's flags come next.
        var addBOS: Bool?, addEOS: Bool?
        if tokenizer["post_processor"]?["type"]?.stringValue == "ByteLevel" {
            addBOS = false
            addEOS = false
        }
        if case .bool(let b)? = config?["add_bos_token"], addBOS == nil { addBOS = b }
        if case .bool(let b)? = config?["add_eos_token"], addEOS == nil { addEOS = b }
        self.addBOS = addBOS
        self.addEOS = addEOS
        chatTemplate = config?["chat_template"]?.stringValue
    }

    /// Tokens shaped like control tokens even when not flagged special.
    static func looksSpecial(_ token: String) -> Bool {
        (token.hasPrefix("<|") && token.hasSuffix("|>")) || (token.hasPrefix("<｜") && token.hasSuffix("｜>"))
            || ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(token)
            || (token.hasPrefix("<unused") && token.hasSuffix(">"))
    }

    /// Merges as "left right" strings; a space inside a pair item is written as U+0120.
    static func merges(_ value: JSONValue?) throws(ConversionProblem) -> [String] {
        guard case .array(let items)? = value else { return [] }
        var result: [String] = []
        result.reserveCapacity(items.count)
        for item in items {
            switch item {
            case .string(let s): result.append(s)
            case .array(let pair) where pair.count == 2:
                guard let a = pair[0].stringValue, let b = pair[1].stringValue else { throw .unsupportedTokenizer("malformed merge") }
                func encodeSpaces(_ s: String) -> String { String(s.map { $0 == " " ? "\u{0120}" : $0 }) }
                result.append(encodeSpaces(a) + " " + encodeSpaces(b))
            default: throw .unsupportedTokenizer("malformed merge")
            }
        }
        return result
    }

    /// The llama.cpp pre-tokenizer name for a `pre_tokenizer` entry.
    static func preTokenizerName(_ value: JSONValue?) -> String {
        var splits: [String] = []
        var byteLevelRegex = false
        func visit(_ v: JSONValue) {
            switch v["type"]?.stringValue {
            case "Sequence":
                if case .array(let inner)? = v["pretokenizers"] { inner.forEach(visit) }
            case "Split":
                if let p = v["pattern"]?["Regex"]?.stringValue { splits.append(p) }
            case "ByteLevel":
                byteLevelRegex = v["use_regex"] != .bool(false)
            default: break
            }
        }
        if let value { visit(value) }
        if splits.count == 1, let known = knownSplitPatterns.first(where: { $0.pattern == splits[0] }) { return known.name }
        if splits.isEmpty && byteLevelRegex { return "gpt-2" }
        return "default"
    }

    /// The `tokenizer.*` keys, in llama.cpp's order.
    public func ggufMetadata() -> [MetadataEntry] {
        var entries = [
            MetadataEntry("tokenizer.ggml.model", .string("gpt2")),
            MetadataEntry("tokenizer.ggml.pre", .string(pre)),
            MetadataEntry("tokenizer.ggml.tokens", .array(MetadataArray(elementType: .string, values: tokens.map { .string($0) }))),
            MetadataEntry("tokenizer.ggml.token_type",
                          .array(MetadataArray(elementType: .int32, values: types.map { .int32($0.rawValue) }))),
        ]
        // Written even when empty: llama.cpp refuses a BPE vocabulary without the key, and
        // an empty list is a valid tokenizer (every byte stays its own token).
        entries.append(MetadataEntry("tokenizer.ggml.merges", .array(MetadataArray(elementType: .string, values: merges.map { .string($0) }))))
        for (role, id) in specialIDs { entries.append(MetadataEntry("tokenizer.ggml.\(Self.idKey(role))", .uint32(UInt32(clamping: id)))) }
        if let addBOS { entries.append(MetadataEntry("tokenizer.ggml.add_bos_token", .bool(addBOS))) }
        if let addEOS { entries.append(MetadataEntry("tokenizer.ggml.add_eos_token", .bool(addEOS))) }
        if let chatTemplate { entries.append(MetadataEntry("tokenizer.chat_template", .string(chatTemplate))) }
        return entries
    }

    /// Reads the tokenizer back from GGUF metadata, or nil when there is none.
    public init?(gguf metadata: [MetadataEntry]) throws(ConversionProblem) {
        func value(_ key: String) -> MetadataValue? { metadata.first { $0.key == key }?.value }
        guard let model = value("tokenizer.ggml.model")?.stringValue else { return nil }
        guard model == "gpt2" else { throw .unsupportedTokenizer("GGUF tokenizer model '\(model)' (gpt2 only)") }
        guard case .array(let list)? = value("tokenizer.ggml.tokens") else { throw .missingMetadata("tokenizer.ggml.tokens") }
        tokens = list.values.map { $0.stringValue ?? "" }
        if case .array(let t)? = value("tokenizer.ggml.token_type") {
            types = t.values.map { value in value.intValue.flatMap { Int32(exactly: $0) }.flatMap(TokenType.init(rawValue:)) ?? .normal }
        } else {
            types = Array(repeating: .normal, count: tokens.count)
        }
        guard types.count == tokens.count else { throw .unsupportedTokenizer("token_type and tokens differ in length") }
        if case .array(let m)? = value("tokenizer.ggml.merges") { merges = m.values.map { $0.stringValue ?? "" } } else { merges = [] }
        pre = value("tokenizer.ggml.pre")?.stringValue ?? "default"
        var special: [(role: String, id: Int)] = []
        for role in Self.roles {
            let key = "tokenizer.ggml.\(Self.idKey(role))"
            guard let entry = value(key) else { continue }
            guard let id = entry.intValue, id >= 0, id < tokens.count else {
                throw .unsupportedSetting("\(key) \(entry.intValue.map(String.init) ?? "\(entry)") (outside the \(tokens.count) tokens)")
            }
            special.append((role, id))
        }
        specialIDs = special
        if case .bool(let b)? = value("tokenizer.ggml.add_bos_token") { addBOS = b } else { addBOS = nil }
        if case .bool(let b)? = value("tokenizer.ggml.add_eos_token") { addEOS = b } else { addEOS = nil }
        chatTemplate = value("tokenizer.chat_template")?.stringValue
    }

    /// A `tokenizer.json` for the `tokenizers` library.
    public func tokenizerJSON() -> JSONValue {
        var vocab: [(key: String, value: JSONValue)] = []
        var added: [JSONValue] = []
        for (i, token) in tokens.enumerated() {
            switch types[i] {
            case .control, .userDefined:
                added.append(.object([
                    ("id", .integer(i)), ("content", .string(token)), ("single_word", .bool(false)), ("lstrip", .bool(false)),
                    ("rstrip", .bool(false)), ("normalized", .bool(false)), ("special", .bool(types[i] == .control)),
                ]))
            case .unused where token == "[PAD\(i)]":
                continue
            default:
                vocab.append((token, .integer(i)))
            }
        }
        let byteLevel: JSONValue = .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)),
                                            ("trim_offsets", .bool(true)), ("use_regex", .bool(pre == "gpt-2" || pre == "default"))])
        var preTokenizer = byteLevel
        if let pattern = Self.knownSplitPatterns.first(where: { $0.name == pre })?.pattern {
            preTokenizer = .object([("type", .string("Sequence")), ("pretokenizers", .array([
                .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(pattern))])),
                         ("behavior", .string("Isolated")), ("invert", .bool(false))]),
                .object([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("trim_offsets", .bool(true)),
                         ("use_regex", .bool(false))]),
            ]))])
        }
        return .object([
            ("version", .string("1.0")), ("truncation", .null), ("padding", .null), ("added_tokens", .array(added)),
            ("normalizer", .null), ("pre_tokenizer", preTokenizer), ("post_processor", byteLevel), ("decoder", byteLevel),
            ("model", .object([
                ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null), ("continuing_subword_prefix", .null),
                ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)), ("byte_fallback", .bool(false)),
                ("ignore_merges", .bool(false)), ("vocab", .object(vocab)), ("merges", .array(merges.map { .string($0) })),
            ])),
        ])
    }

    /// A `tokenizer_config.json` naming the special tokens and the chat template.
    public func tokenizerConfigJSON(contextLength: Int?) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [("tokenizer_class", .string("PreTrainedTokenizerFast"))]
        for (role, id) in specialIDs where id >= 0 && id < tokens.count { members.append(("\(role)_token", .string(tokens[id]))) }
        if let addBOS { members.append(("add_bos_token", .bool(addBOS))) }
        if let addEOS { members.append(("add_eos_token", .bool(addEOS))) }
        members.append(("clean_up_tokenization_spaces", .bool(false)))
        if let contextLength { members.append(("model_max_length", .integer(contextLength))) }
        if let chatTemplate { members.append(("chat_template", .string(chatTemplate))) }
        return .object(members)
    }
}
