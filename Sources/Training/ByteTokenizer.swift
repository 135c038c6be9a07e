import Checkpoints

/// The byte-level tokenizer every Claire-trained model uses: token i < 256 is
/// byte i, followed by a few special tokens. It is written out as a Hugging Face
/// `tokenizer.json` (a BPE model with no merges over the byte-level alphabet),
/// so `tokenizers` and `transformers` produce the same ids.
public enum ByteTokenizer {
    /// Start of a sequence.
    public static let bos = 256
    /// End of a sequence (and of an assistant turn).
    public static let eos = 257
    /// Padding (never trained on).
    public static let pad = 258
    /// Starts a user turn in the chat format.
    public static let user = 259
    /// Starts an assistant turn in the chat format.
    public static let assistant = 260
    /// Number of token ids.
    public static let vocabularySize = 261

    /// The special tokens' text, by id − 256.
    public static let specialTokens = ["<|bos|>", "<|eos|>", "<|pad|>", "<|user|>", "<|assistant|>"]

    /// A pretraining document: `bos text eos`.
    public static func document(_ text: String) -> [Int32] {
        var tokens: [Int32] = [Int32(bos)]
        for byte in text.utf8 { tokens.append(Int32(byte)) }
        tokens.append(Int32(eos))
        return tokens
    }

    /// A chat prompt ready for the assistant's answer: `bos user prompt assistant`,
    /// exactly what the chat template renders with `add_generation_prompt`.
    public static func prompt(_ text: String) -> [Int32] {
        var tokens: [Int32] = [Int32(bos), Int32(user)]
        for byte in text.utf8 { tokens.append(Int32(byte)) }
        tokens.append(Int32(assistant))
        return tokens
    }

    /// A prompt in the task format, ready for the answer: `bos text "\n=> "`
    /// (plain bytes, no chat turns; the answer is `response`).
    public static func taskPrompt(_ text: String) -> [Int32] {
        var tokens: [Int32] = [Int32(bos)]
        for byte in "\(text)\n=> ".utf8 { tokens.append(Int32(byte)) }
        return tokens
    }

    /// The answer part of a chat turn: `response eos`.
    public static func response(_ text: String) -> [Int32] {
        var tokens: [Int32] = []
        for byte in text.utf8 { tokens.append(Int32(byte)) }
        tokens.append(Int32(eos))
        return tokens
    }

    /// Text from byte tokens, stopping at the first special token; invalid UTF-8 is repaired.
    public static func decode(_ tokens: [Int32]) -> String {
        var bytes: [UInt8] = []
        for t in tokens {
            guard t >= 0 && t < 256 else { break }
            bytes.append(UInt8(t))
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The printable stand-in the byte-level pre-tokenizer uses for each byte:
    /// printable Latin-1 bytes stand for themselves, the rest map to U+0100 onward.
    static let byteSymbols: [Character] = {
        var symbols = [Character](repeating: " ", count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            let scalar = printable ? UInt32(b) : { defer { next += 1 }; return next }()
            symbols[b] = Character(Unicode.Scalar(scalar)!)
        }
        return symbols
    }()

    /// The chat template (Jinja) `transformers` renders; it matches `prompt` and `response`.
    public static let chatTemplate =
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>' + message['content'] }}"
        + "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + eos_token }}{% endif %}"
        + "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"

    /// The contents of `tokenizer.json`.
    public static var tokenizerJSON: JSONValue {
        var added: [JSONValue] = []
        for (i, text) in specialTokens.enumerated() {
            added.append(.object([
                ("id", .integer(256 + i)), ("content", .string(text)), ("single_word", .bool(false)),
                ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(false)), ("special", .bool(true)),
            ]))
        }
        var vocabulary: [(key: String, value: JSONValue)] = []
        for b in 0..<256 { vocabulary.append((String(byteSymbols[b]), .integer(b))) }
        let byteLevel: JSONValue = .object([
            ("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("trim_offsets", .bool(false)),
            ("use_regex", .bool(false)),
        ])
        return .object([
            ("version", .string("1.0")),
            ("truncation", .null),
            ("padding", .null),
            ("added_tokens", .array(added)),
            ("normalizer", .null),
            ("pre_tokenizer", byteLevel),
            ("post_processor", .null),
            ("decoder", byteLevel),
            ("model", .object([
                ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null),
                ("continuing_subword_prefix", .null), ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)),
                ("byte_fallback", .bool(false)), ("ignore_merges", .bool(false)),
                ("vocab", .object(vocabulary)), ("merges", .array([])),
            ])),
        ])
    }

    /// The contents of `tokenizer_config.json`.
    public static func tokenizerConfigJSON(maxLength: Int) -> JSONValue {
        .object([
            ("tokenizer_class", .string("PreTrainedTokenizerFast")),
            ("bos_token", .string(specialTokens[0])),
            ("eos_token", .string(specialTokens[1])),
            ("pad_token", .string(specialTokens[2])),
            ("add_bos_token", .bool(false)),
            ("add_eos_token", .bool(false)),
            ("clean_up_tokenization_spaces", .bool(false)),
            ("model_max_length", .integer(maxLength)),
            ("chat_template", .string(chatTemplate)),
        ])
    }

    /// The contents of `generation_config.json`: greedy decoding that stops at eos.
    public static var generationConfigJSON: JSONValue {
        .object([
            ("bos_token_id", .integer(bos)), ("eos_token_id", .integer(eos)), ("pad_token_id", .integer(pad)),
            ("do_sample", .bool(false)),
        ])
    }
}
