import Checkpoints
import Foundation

/// A model folder's tokenizer.json, read for its vocabulary: the model's token → id
/// table (a mapping for BPE, WordPiece and WordLevel; a list of [token, score] for
/// Unigram, ids by position) and the added tokens, which take precedence.
struct TokenizerFile {
    /// The tokenizer.json read.
    let path: String
    let json: JSONValue
    /// Every token with its id (model vocabulary and added tokens).
    let ids: [String: Int]
    /// Number of entries of the model's own vocabulary (the Rust tokenizer's vocab size,
    /// where ids of newly added tokens start).
    let modelVocabularySize: Int
    /// The added tokens in file order.
    let added: [(content: String, id: Int, entry: JSONValue)]

    /// The largest id a tokenizer may use: far beyond any real vocabulary, and small
    /// enough that row counts and element counts computed from it cannot overflow.
    static let maximumID = 1 << 24

    /// Reads `folder`/tokenizer.json; nil when the folder has none.
    static func read(folder: String, followSymlinks: Bool) throws(MergeError) -> TokenizerFile? {
        guard FileManager.default.fileExists(atPath: folder + "/tokenizer.json") else { return nil }
        let path: String
        let json: JSONValue
        do {
            path = try HFFolder.sideFile("tokenizer.json", in: folder, followSymlinks: followSymlinks)
            json = try readJSONFile(path, rejectDuplicateKeys: false)
        } catch {
            throw .checkpoint(error)
        }
        func bad(_ problem: String) -> MergeError { .checkpoint(.io(file: path, problem: problem)) }
        var ids: [String: Int] = [:]
        var modelSize = 0
        switch json["model"]?["vocab"] {
        case .object(let members)?:
            for (token, value) in members {
                guard let id = value.nonNegativeInteger, id <= maximumID else { throw bad("token '\(token)' has id \(value), not an integer in 0...\(maximumID)") }
                ids[token] = id
            }
            modelSize = ids.count
        case .array(let entries)?:
            guard entries.count <= maximumID else { throw bad("has more than \(maximumID) tokens") }
            for (id, entry) in entries.enumerated() {
                guard case .array(let pair) = entry, let token = pair.first?.stringValue else {
                    throw bad("Unigram vocabulary entry \(id) is not [token, score]")
                }
                if ids[token] == nil { ids[token] = id }
            }
            modelSize = entries.count
        default:
            throw bad("has no model vocabulary ('model.vocab')")
        }
        var added: [(content: String, id: Int, entry: JSONValue)] = []
        if case .array(let entries)? = json["added_tokens"] {
            for entry in entries {
                guard let content = entry["content"]?.stringValue, let id = entry["id"]?.nonNegativeInteger, id <= maximumID else {
                    throw bad("an added token has no content or no id in 0...\(maximumID)")
                }
                ids[content] = id
                added.append((content: content, id: id, entry: entry))
            }
        }
        return TokenizerFile(path: path, json: json, ids: ids, modelVocabularySize: modelSize, added: added)
    }

    /// The `vocab_size` of `folder`/config.json, when it has one.
    static func configVocabularySize(folder: String, followSymlinks: Bool) -> Int? {
        guard FileManager.default.fileExists(atPath: folder + "/config.json"),
              let path = try? HFFolder.sideFile("config.json", in: folder, followSymlinks: followSymlinks),
              let config = try? readJSONFile(path, rejectDuplicateKeys: false) else { return nil }
        return (config["vocab_size"] ?? config["text_config"]?["vocab_size"])?.nonNegativeInteger
    }
}

/// The tokenizer a merge writes: the source's files, with tokens appended to
/// tokenizer.json's `added_tokens` (and tokenizer_config.json's `added_tokens_decoder`)
/// when the recipe's tokenizer is a union or adds tokens.
public struct OutputTokenizer: Sendable {
    /// The folder whose tokenizer files the output starts from.
    public let folder: String
    /// Tokens appended, each with its id and its tokenizer.json `added_tokens` entry.
    let appended: [(content: String, id: Int, entry: JSONValue)]
    /// Every token of the output with its id.
    let ids: [String: Int]
    /// Rows of the output's embedding (the number of tokens, padded as the recipe asks):
    /// config.json's `vocab_size`.
    public let rowCount: Int
    /// Tokens by id (nil at ids no token has).
    let tokens: [String?]

    /// tokenizer.json with the appended tokens, from the source's `json`.
    func tokenizerJSON(from json: JSONValue) -> JSONValue {
        guard !appended.isEmpty, case .object(var members) = json else { return json }
        var list: [JSONValue] = []
        if let i = members.firstIndex(where: { $0.key == "added_tokens" }), case .array(let existing) = members[i].value {
            list = existing
            members.remove(at: i)
            members.insert((key: "added_tokens", value: .array(list + appended.map(\.entry))), at: i)
        } else {
            members.append((key: "added_tokens", value: .array(appended.map(\.entry))))
        }
        return .object(members)
    }

    /// tokenizer_config.json with the appended tokens in `added_tokens_decoder` (when it has one).
    func tokenizerConfig(from config: JSONValue) -> JSONValue {
        guard !appended.isEmpty, case .object(var members) = config,
              let i = members.firstIndex(where: { $0.key == "added_tokens_decoder" }),
              case .object(var decoder) = members[i].value else { return config }
        for (content, id, entry) in appended {
            var fields: [(key: String, value: JSONValue)] = [("content", .string(content))]
            for key in ["lstrip", "normalized", "rstrip", "single_word", "special"] {
                fields.append((key: key, value: entry[key] ?? .bool(false)))
            }
            decoder.append((key: String(id), value: .object(fields)))
        }
        members[i].value = .object(decoder)
        return .object(members)
    }

    /// A tokenizer.json `added_tokens` entry as the Hugging Face tokenizers library writes
    /// one for a token added by name (not special, normalized).
    static func addedEntry(_ content: String, id: Int, like entry: JSONValue? = nil) -> JSONValue {
        var fields: [(key: String, value: JSONValue)] = [("id", .number(String(id))), ("content", .string(content))]
        for (key, fallback) in [("single_word", false), ("lstrip", false), ("rstrip", false), ("normalized", true), ("special", false)] {
            fields.append((key: key, value: entry?[key] ?? .bool(fallback)))
        }
        return .object(fields)
    }
}
