import Foundation
import Testing
@testable import Checkpoints

/// HF → GGUF against llama.cpp's own converter output (fixtures/conversion), and round trips.
@Suite struct ConversionTests {
    private let folder = fixture("conversion/tiny-llama-gqa")

    @Test(arguments: [("f32", DType.f32), ("f16", .f16), ("q8_0", .q8_0)])
    func hfToGGUFMatchesLlamaCppsConverter(name: String, type: DType) throws {
        let out = temporaryFolder() + "/claire.gguf"
        _ = try FormatConversion.hfToGGUF(folder: folder, output: out, type: type, workers: 2)
        let ours = try Checkpoint.open(out)
        let reference = try Checkpoint.open(fixture("conversion/llamacpp-\(name).gguf"))
        #expect(Set(ours.tensors.map(\.name)) == Set(reference.tensors.map(\.name)))
        for r in reference.tensors {
            let o = try #require(ours.tensor(named: r.name))
            #expect(o.dtype == r.dtype && o.shape == r.shape, "\(r.name)")
            #expect(Array(ours.data(of: o)) == Array(reference.data(of: r)), "\(r.name) bytes")
        }
        let naming: Set<String> = ["general.name", "general.size_label", "general.type"]
        let ourKeys = ours.metadata.filter { !naming.contains($0.key) }
        let referenceKeys = reference.metadata.filter { !naming.contains($0.key) }
        #expect(ourKeys.map(\.key) == referenceKeys.map(\.key))
        for (o, r) in zip(ourKeys, referenceKeys) { #expect(o == r, "\(o.key)") }
    }

    @Test func hfToGGUFToHFIsLossless() throws {
        let scratch = temporaryFolder()
        _ = try FormatConversion.hfToGGUF(folder: folder, output: scratch + "/m.gguf", type: .f32, workers: 2)
        _ = try FormatConversion.ggufToHF(input: scratch + "/m.gguf", output: scratch + "/back", dtype: .bf16, workers: 2)
        let original = try Checkpoint.open(folder)
        let back = try Checkpoint.open(scratch + "/back")
        #expect(Set(back.tensors.map(\.name)) == Set(original.tensors.map(\.name)))
        for t in original.tensors {
            let b = try #require(back.tensor(named: t.name))
            #expect(b.shape == t.shape && b.dtype == t.dtype)
            #expect(Array(back.data(of: b)) == Array(original.data(of: t)), "\(t.name)")
        }
        let config = try LlamaConfig.read(configAt: scratch + "/back/config.json")
        let originalConfig = try LlamaConfig.read(configAt: folder + "/config.json")
        #expect(config.layerCount == originalConfig.layerCount && config.keyValueHeadCount == originalConfig.keyValueHeadCount)
        #expect(config.statedRopeTheta == originalConfig.statedRopeTheta && config.rmsNormEpsilon == originalConfig.rmsNormEpsilon)
        let tokenizer = try #require(try GGUFTokenizer.read(folder: scratch + "/back", vocabSize: config.vocabularySize))
        let originalTokenizer = try #require(try GGUFTokenizer.read(folder: folder, vocabSize: config.vocabularySize))
        #expect(tokenizer.tokens == originalTokenizer.tokens)
        #expect(tokenizer.types == originalTokenizer.types)
        #expect(tokenizer.merges == originalTokenizer.merges)
        #expect(tokenizer.specialIDs.map(\.id) == originalTokenizer.specialIDs.map(\.id))
        #expect(tokenizer.chatTemplate == originalTokenizer.chatTemplate)
    }

    @Test func permutationRoundTripsAndInterleavesPairs() {
        // 2 heads × 4 rows, 1 column: HF rows [h0: a0 a1 b0 b1][h1: …] → GGUF [a0 b0 a1 b1] per head.
        let hf: [Float] = [0, 1, 2, 3, 4, 5, 6, 7]
        var gguf = [Float](repeating: -1, count: 8)
        var back = [Float](repeating: -1, count: 8)
        hf.withUnsafeBufferPointer { src in
            gguf.withUnsafeMutableBufferPointer { LlamaFamily.permuteRows(src, into: $0, rows: 8, columns: 1, heads: 2, toGGUF: true) }
        }
        #expect(gguf == [0, 2, 1, 3, 4, 6, 5, 7])
        gguf.withUnsafeBufferPointer { src in
            back.withUnsafeMutableBufferPointer { LlamaFamily.permuteRows(src, into: $0, rows: 8, columns: 1, heads: 2, toGGUF: false) }
        }
        #expect(back == hf)
    }

    @Test func namesMapBothWays() {
        for hf in ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.layers.12.self_attn.o_proj.weight",
                   "model.layers.0.mlp.down_proj.weight", "model.layers.3.self_attn.k_proj.bias"] {
            let gguf = LlamaFamily.ggufName(forHF: hf)
            #expect(gguf != nil)
            #expect(gguf.flatMap(LlamaFamily.hfName(forGGUF:)) == hf)
        }
        #expect(LlamaFamily.ggufName(forHF: "model.layers.1.self_attn.o_proj.weight") == "blk.1.attn_output.weight")
        #expect(LlamaFamily.ggufName(forHF: "model.layers.x.mlp.up_proj.weight") == nil)
        #expect(LlamaFamily.ggufName(forHF: "vision_tower.weight") == nil)
    }

    @Test(arguments: [
        (#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#, "llama-bpe"),
        (#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#, "qwen2"),
        ("\\w+", "default"),
    ])
    func splitPatternsNameThePreTokenizer(pattern: String, name: String) {
        let pre = JSONValue.object([("type", .string("Sequence")), ("pretokenizers", .array([
            .object([("type", .string("Split")), ("pattern", .object([("Regex", .string(pattern))]))]),
            .object([("type", .string("ByteLevel")), ("use_regex", .bool(false))]),
        ]))])
        #expect(GGUFTokenizer.preTokenizerName(pre) == name)
        #expect(GGUFTokenizer.preTokenizerName(.object([("type", .string("ByteLevel")), ("use_regex", .bool(true))])) == "gpt-2")
    }

    private func rewriteConfig(_ folder: String, _ change: (inout String) -> Void) throws {
        var text = try String(contentsOfFile: folder + "/config.json", encoding: .utf8)
        change(&text)
        try text.write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
    }

    @Test func unsupportedArchitectureIsNamed() throws {
        let problem = try hfToGGUFProblem(of: folder) { try rewriteConfig($0) { $0 = $0.replacingOccurrences(of: "LlamaForCausalLM", with: "GPTNeoXForCausalLM") } }
        #expect(problem == .unsupportedArchitecture("GPTNeoXForCausalLM"))
    }

    @Test func missingHyperparameterIsNamed() throws {
        let problem = try hfToGGUFProblem(of: folder) { try rewriteConfig($0) { $0 = $0.replacingOccurrences(of: "\"num_hidden_layers\"", with: "\"layers\"") } }
        #expect(problem == .missingConfigField("num_hidden_layers"))
    }

    @Test func unsupportedTokenizerIsNamed() throws {
        let problem = try hfToGGUFProblem(of: folder) { f in
            var text = try String(contentsOfFile: f + "/tokenizer.json", encoding: .utf8)
            text = text.replacingOccurrences(of: "\"BPE\"", with: "\"Unigram\"")
            try text.write(toFile: f + "/tokenizer.json", atomically: true, encoding: .utf8)
        }
        #expect(problem == .unsupportedTokenizer("model type 'Unigram' (byte-level BPE only)"))
    }

    @Test func folderWithoutTokenizerConvertsWithAWarning() throws {
        let copy = temporaryFolder() + "/model"
        try FileManager.default.copyItem(atPath: folder, toPath: copy)
        try FileManager.default.removeItem(atPath: copy + "/tokenizer.json")
        let out = temporaryFolder() + "/m.gguf"
        let report = try FormatConversion.hfToGGUF(folder: copy, output: out, type: .f16, workers: 1)
        #expect(report.warnings.count == 1)
        #expect(try Checkpoint.open(out).metadata.allSatisfy { !$0.key.hasPrefix("tokenizer.") })
    }

    @Test func retypingReshardsAndRoundsToNearestEven() throws {
        let out = temporaryFolder() + "/f16"
        _ = try FormatConversion.retype(input: folder, output: out, dtype: .f16, maxShardSize: 40_000, workers: 2)
        let original = try Checkpoint.open(folder)
        let converted = try Checkpoint.open(out)
        #expect(converted.files.count > 1)
        for t in original.tensors {
            let c = try #require(converted.tensor(named: t.name))
            #expect(c.dtype == .f16)
            let expected = try original.decode(t).map { ElementCodec.halfToFloat(ElementCodec.floatToHalf($0)) }
            #expect(try converted.decode(c) == expected)
        }
        let config = try readJSONFile(out + "/config.json")
        #expect(config["torch_dtype"] == .string("float16"))
        #expect(FileManager.default.fileExists(atPath: out + "/tokenizer.json"))
    }
}

/// A copy of `folder` with `edit` applied, converted to GGUF: the conversion problem,
/// or nil when it succeeded. No output or temporary may remain on failure.
func hfToGGUFProblem(of folder: String, editing edit: (String) throws -> Void) throws -> ConversionProblem? {
    let copy = temporaryFolder() + "/model"
    try FileManager.default.copyItem(atPath: folder, toPath: copy)
    try edit(copy)
    let out = temporaryFolder()
    defer { #expect(listing(out).isEmpty, "no output or temporary may remain") }
    do {
        _ = try FormatConversion.hfToGGUF(folder: copy, output: out + "/m.gguf", type: .f16, workers: 1)
        return nil
    } catch {
        if case .conversion(_, let problem) = error { return problem }
        Issue.record("unexpected error \(error)")
        return nil
    }
}
