import Foundation
import Testing
@testable import Checkpoints

/// Values in config.json and GGUF metadata are untrusted: conversion refuses the
/// ones that do not fit (before sizing anything from them) instead of trapping,
/// allocating what the file does not justify, or writing a config no one can load.
@Suite struct ConversionLimitTests {
    private let folder = fixture("conversion/tiny-llama-gqa")
    private let gguf = fixture("conversion/llamacpp-f32.gguf")

    // MARK: HF folder → GGUF


    private func setConfig(_ key: String, to text: String) -> (String) throws -> Void {
        { folder in
            let path = folder + "/config.json"
            let json = try JSONParser.parse(String(contentsOfFile: path, encoding: .utf8))
            guard case .object(var members) = json else { return }
            if let i = members.firstIndex(where: { $0.key == key }) { members[i].value = .number(text) } else { members.append((key, .number(text))) }
            try JSONValue.object(members).prettyText.write(toFile: path, atomically: true, encoding: .utf8)
        }
    }

    @Test func contextLengthBeyondGGUFsU32FieldIsRefused() throws {
        let problem = try hfToGGUFProblem(of: folder, editing: setConfig("max_position_embeddings", to: "4294967296"))
        #expect(problem == .unsupportedSetting("max_position_embeddings 4294967296 (must be between 1 and 4294967295)"))
    }

    @Test func vocabularyOfAHundredBillionIsRefusedBeforeAllocating() throws {
        let problem = try hfToGGUFProblem(of: folder, editing: setConfig("vocab_size", to: "100000000000"))
        #expect(problem == .unsupportedSetting("vocab_size 100000000000 (must be between 1 and 4294967295)"))
        let billion = try hfToGGUFProblem(of: folder, editing: setConfig("vocab_size", to: "1000000000"))
        #expect(billion == .unsupportedSetting("vocab_size 1000000000 (at most \(LlamaConfig.maximumVocabularySize) tokens)"))
    }

    @Test func vocabularyLargerThanTheEmbeddingIsRefused() throws {
        let problem = try hfToGGUFProblem(of: folder, editing: setConfig("vocab_size", to: "4000"))
        guard case .tensorShape(let tensor, let text)? = problem else {
            Issue.record("expected a shape problem, got \(String(describing: problem))")
            return
        }
        #expect(["model.embed_tokens.weight", "lm_head.weight"].contains(tensor) && text.contains("4000 rows"), "\(tensor): \(text)")
    }

    @Test(arguments: ["1e999", "0", "-1e-6"])
    func epsilonMustBePositiveAndFinite(text: String) throws {
        let problem = try hfToGGUFProblem(of: folder, editing: setConfig("rms_norm_eps", to: text))
        guard case .unsupportedSetting(let setting)? = problem else {
            Issue.record("expected a refusal, got \(String(describing: problem))")
            return
        }
        #expect(setting.hasPrefix("rms_norm_eps"))
    }

    @Test func layerNumberPastTheLayerCountIsRefused() throws {
        let problem = try hfToGGUFProblem(of: folder) { folder in
            let path = folder + "/model.safetensors"
            let source = try Checkpoint.open(path)
            let renamed = "model.layers.9223372036854775807.input_layernorm.weight"
            let specs = source.tensors.map { t in
                TensorSpec(name: t.name == "model.layers.0.input_layernorm.weight" ? renamed : t.name, dtype: t.dtype, shape: t.shape)
            }
            let out = folder + "/renamed.tmp"
            let writer = try SafetensorsFileWriter(path: out, tensors: specs)
            for (t, spec) in zip(source.tensors, specs) { try writer.write(spec.name, bytes: source.data(of: t)) }
            try writer.finish()
            try FileManager.default.removeItem(atPath: path)
            try FileManager.default.moveItem(atPath: out, toPath: path)
        }
        guard case .tensorShape(let tensor, let text)? = problem else {
            Issue.record("expected a refusal, got \(String(describing: problem))")
            return
        }
        #expect(tensor == "model.layers.9223372036854775807.input_layernorm.weight" && text.contains("past the 2 layers"))
    }

    @Test func aQueryBiasIsPermutedAsAColumnOfRows() throws {
        let copy = temporaryFolder() + "/model"
        try FileManager.default.copyItem(atPath: folder, toPath: copy)
        let path = copy + "/model.safetensors"
        let source = try Checkpoint.open(path)
        let bias = (0..<32).map(Float.init)
        let specs = source.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
            + [TensorSpec(name: "model.layers.0.self_attn.q_proj.bias", dtype: .f32, shape: [32])]
        let out = copy + "/with-bias.tmp"
        let writer = try SafetensorsFileWriter(path: out, tensors: specs)
        for t in source.tensors { try writer.write(t.name, bytes: source.data(of: t)) }
        try bias.withUnsafeBytes { try writer.write("model.layers.0.self_attn.q_proj.bias", bytes: $0) }
        try writer.finish()
        try FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: out, toPath: path)

        let gguf = temporaryFolder() + "/m.gguf"
        _ = try FormatConversion.hfToGGUF(folder: copy, output: gguf, type: .f32, workers: 1)
        let converted = try Checkpoint.open(gguf)
        let values = try converted.decode(try #require(converted.tensor(named: "blk.0.attn_q.bias")))
        // 4 heads of 8 rows: each head's two halves interleaved.
        let expected = (0..<32).map { Float(LlamaFamily.sourceRow($0, rows: 32, heads: 4, toGGUF: true)) }
        #expect(values == expected)
    }

    // MARK: GGUF → HF folder

    /// The f32 fixture rewritten with `edit` applied to its metadata and tensor names.
    private func ggufVariant(renaming: [String: String] = [:], _ edit: (inout [MetadataEntry]) -> Void) throws -> String {
        let source = try Checkpoint.open(gguf)
        var metadata = source.metadata
        edit(&metadata)
        let specs = source.tensors.map { TensorSpec(name: renaming[$0.name] ?? $0.name, dtype: $0.dtype, shape: $0.shape) }
        let path = temporaryFolder() + "/m.gguf"
        let writer = try GGUFWriter(path: path, tensors: specs, metadata: metadata)
        for (t, spec) in zip(source.tensors, specs) { try writer.write(spec.name, bytes: source.data(of: t)) }
        try writer.commit()
        return path
    }

    private func setting(_ key: String, _ value: MetadataValue) -> (inout [MetadataEntry]) -> Void {
        { metadata in
            if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else { metadata.append(MetadataEntry(key, value)) }
        }
    }

    /// Converts `input` to an HF folder; the conversion problem, or nil on success.
    private func ggufToHFProblem(_ input: String) -> ConversionProblem? {
        let out = temporaryFolder()
        do {
            _ = try FormatConversion.ggufToHF(input: input, output: out + "/hf", dtype: .f32, workers: 1)
            return nil
        } catch {
            #expect(listing(out).isEmpty, "no output or temporary may remain")
            guard case .conversion(_, let problem) = error else {
                Issue.record("unexpected error \(error)")
                return nil
            }
            return problem
        }
    }

    @Test func theUnmodifiedFixtureConverts() throws {
        #expect(ggufToHFProblem(try ggufVariant { _ in }) == nil)
    }

    @Test func notANumberEpsilonIsRefused() throws {
        let problem = ggufToHFProblem(try ggufVariant(setting("llama.attention.layer_norm_rms_epsilon", .float32(.nan))))
        #expect(problem == .unsupportedSetting("llama.attention.layer_norm_rms_epsilon nan (must be positive and finite in Float32)"))
    }

    @Test func negativeSizeIsRefused() throws {
        let problem = ggufToHFProblem(try ggufVariant(setting("llama.embedding_length", .int32(-32))))
        #expect(problem == .unsupportedSetting("llama.embedding_length -32 (must be between 1 and 4294967295)"))
    }

    @Test func headCountOfTwoToTheSixtySecondIsRefused() throws {
        let problem = ggufToHFProblem(try ggufVariant(setting("llama.attention.head_count", .uint64(1 << 62))))
        #expect(problem == .unsupportedSetting("llama.attention.head_count 4611686018427387904 (must be between 1 and 4294967295)"))
    }

    @Test func vocabularyDisagreeingWithTheTokenListIsRefused() throws {
        let problem = ggufToHFProblem(try ggufVariant(setting("llama.vocab_size", .uint64(100_000_000_000))))
        #expect(problem == .unsupportedSetting("llama.vocab_size 100000000000 (must be between 1 and 4294967295)"))
        let larger = ggufToHFProblem(try ggufVariant(setting("llama.vocab_size", .uint32(303))))
        #expect(larger == .unsupportedSetting("vocabulary of 303 tokens with a token list of 302"))
    }

    @Test func tokenIDOfMinusOneIsRefused() throws {
        let problem = ggufToHFProblem(try ggufVariant(setting("tokenizer.ggml.bos_token_id", .int32(-1))))
        #expect(problem == .unsupportedSetting("tokenizer.ggml.bos_token_id -1 (outside the 302 tokens)"))
    }

    @Test func tokenTypeOutsideInt32DoesNotTrap() throws {
        let path = try ggufVariant { metadata in
            guard let i = metadata.firstIndex(where: { $0.key == "tokenizer.ggml.token_type" }),
                  case .array(let types) = metadata[i].value else { return }
            var values = types.values.map { MetadataValue.uint32(UInt32(truncatingIfNeeded: $0.intValue ?? 1)) }
            values[0] = .uint32(.max)
            metadata[i].value = .array(MetadataArray(elementType: .uint32, values: values))
        }
        #expect(ggufToHFProblem(path) == nil)
    }

    @Test func layerNumberPastTheBlockCountIsRefused() throws {
        let path = try ggufVariant(renaming: ["blk.0.attn_norm.weight": "blk.9223372036854775807.attn_norm.weight"]) { _ in }
        guard case .tensorShape(let tensor, let text)? = ggufToHFProblem(path) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(tensor == "model.layers.9223372036854775807.input_layernorm.weight" && text.contains("past the 2 layers"))
    }

    @Test func pairSplitOfAHugeHeadCountDoesNotOverflow() {
        #expect(!LlamaFamily.splitsIntoPairs(8, heads: 1 << 62))
        #expect(!LlamaFamily.splitsIntoPairs(8, heads: .max))
        #expect(LlamaFamily.splitsIntoPairs(8, heads: 2))
    }
}
