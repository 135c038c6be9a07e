import Foundation
import Testing
@testable import Checkpoints

/// The `tokenizer.*` keys written for a model of `merge-tool train` (fixtures/conversion/byte-model:
/// a byte-level BPE with no merges and five special tokens), which llama.cpp needs to load
/// the file and tokenize as `transformers` does. scripts/check_llamacpp_run.sh runs llama.cpp on
/// such files; this suite checks the keys themselves against the fixture's tokenizer files.
@Suite struct GGUFTokenizerKeysTests {
    private let folder = fixture("conversion/byte-model")

    private func json(_ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    private func converted(_ type: DType = .f32) throws -> Checkpoint {
        let out = temporaryFolder() + "/m.gguf"
        _ = try FormatConversion.hfToGGUF(folder: folder, output: out, type: type, workers: 2)
        return try Checkpoint.open(out)
    }

    private func value(_ checkpoint: Checkpoint, _ key: String) -> MetadataValue? {
        checkpoint.metadata.first { $0.key == key }?.value
    }

    @Test func mergesAreWrittenEvenWhenTheTokenizerHasNone() throws {
        let model = try #require(try json("tokenizer.json")["model"] as? [String: Any])
        let merges = try #require(model["merges"] as? [Any])
        #expect(merges.isEmpty, "the fixture is a tokenizer without merges")
        let gguf = try converted()
        guard case .array(let list)? = value(gguf, "tokenizer.ggml.merges") else {
            Issue.record("no tokenizer.ggml.merges array (llama.cpp refuses a gpt2 vocabulary without it)")
            return
        }
        #expect(list.elementType == .string)
        #expect(list.values.isEmpty)
        // The key sits with the other vocabulary keys, after the token types.
        let keys = gguf.metadata.map(\.key)
        let typesAt = try #require(keys.firstIndex(of: "tokenizer.ggml.token_type"))
        #expect(keys.firstIndex(of: "tokenizer.ggml.merges") == typesAt + 1)
    }

    @Test func vocabularyAndTypesFollowTheTokenizerFiles() throws {
        let tokenizer = try json("tokenizer.json")
        let model = try #require(tokenizer["model"] as? [String: Any])
        let vocab = try #require(model["vocab"] as? [String: Int])
        let added = try #require(tokenizer["added_tokens"] as? [[String: Any]])
        let vocabSize = try #require(try json("config.json")["vocab_size"] as? Int)
        var expectedTokens = [String?](repeating: nil, count: vocabSize)
        var expectedTypes = [Int32](repeating: GGUFTokenizer.TokenType.unused.rawValue, count: vocabSize)
        for (token, id) in vocab {
            expectedTokens[id] = token
            expectedTypes[id] = GGUFTokenizer.TokenType.normal.rawValue
        }
        for entry in added {
            let id = try #require(entry["id"] as? Int)
            expectedTokens[id] = try #require(entry["content"] as? String)
            expectedTypes[id] = (entry["special"] as? Bool == true ? GGUFTokenizer.TokenType.control : .userDefined).rawValue
        }

        let gguf = try converted()
        #expect(value(gguf, "tokenizer.ggml.model") == .string("gpt2"))
        guard case .array(let tokens)? = value(gguf, "tokenizer.ggml.tokens"),
              case .array(let types)? = value(gguf, "tokenizer.ggml.token_type") else {
            Issue.record("no token list or token types")
            return
        }
        #expect(tokens.values.map(\.stringValue) == expectedTokens)
        #expect(types.values == expectedTypes.map { .int32($0) })
        // The special tokens are control tokens, so llama.cpp parses them out of a prompt as
        // transformers does.
        #expect(added.allSatisfy { $0["special"] as? Bool == true })
    }

    @Test func specialIDsFlagsAndTemplateFollowTheTokenizerFiles() throws {
        let config = try json("tokenizer_config.json")
        let modelConfig = try json("config.json")
        let tokenizer = try json("tokenizer.json")
        let added = try #require(tokenizer["added_tokens"] as? [[String: Any]])
        func id(ofTokenNamed role: String) throws -> Int {
            let content = try #require(config["\(role)_token"] as? String)
            return try #require(added.first { $0["content"] as? String == content }?["id"] as? Int)
        }

        let gguf = try converted()
        for (role, key) in [("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id")] {
            let expected = try id(ofTokenNamed: role)
            #expect(modelConfig["\(role)_token_id"] as? Int == expected, "config.json and tokenizer_config.json agree on \(role)")
            #expect(value(gguf, "tokenizer.ggml.\(key)") == .uint32(UInt32(expected)), "\(key)")
        }
        #expect(value(gguf, "tokenizer.ggml.unknown_token_id") == nil)
        #expect(value(gguf, "tokenizer.ggml.add_bos_token") == .bool(try #require(config["add_bos_token"] as? Bool)))
        #expect(value(gguf, "tokenizer.ggml.add_eos_token") == .bool(try #require(config["add_eos_token"] as? Bool)))
        #expect(value(gguf, "tokenizer.chat_template") == .string(try #require(config["chat_template"] as? String)))
        // No split rule and no merges: every llama.cpp pre-tokenizer gives the same ids, and
        // `default` is the one every version knows.
        #expect(value(gguf, "tokenizer.ggml.pre") == .string("default"))
    }

    @Test(arguments: [DType.f16, .q8_0])
    func quantizedFilesCarryTheSameTokenizerKeys(type: DType) throws {
        let reference = try converted(.f32).metadata.filter { $0.key.hasPrefix("tokenizer.") }
        let other = try converted(type).metadata.filter { $0.key.hasPrefix("tokenizer.") }
        #expect(other == reference)
        #expect(reference.contains { $0.key == "tokenizer.ggml.merges" })
    }

    @Test func emptyMergesReadBackAsTheSameTokenizer() throws {
        let original = try #require(try GGUFTokenizer.read(folder: folder, vocabSize: 261))
        let scratch = temporaryFolder()
        _ = try FormatConversion.hfToGGUF(folder: folder, output: scratch + "/m.gguf", type: .f32, workers: 2)
        let fromGGUF = try #require(try GGUFTokenizer(gguf: try Checkpoint.open(scratch + "/m.gguf").metadata))
        #expect(fromGGUF == original)
        _ = try FormatConversion.ggufToHF(input: scratch + "/m.gguf", output: scratch + "/back", dtype: .f32, workers: 2)
        let back = try #require(try GGUFTokenizer.read(folder: scratch + "/back", vocabSize: 261))
        #expect(back.merges.isEmpty && back.tokens == original.tokens && back.types == original.types)
        #expect(back.specialIDs.map(\.id) == original.specialIDs.map(\.id))
    }
}
