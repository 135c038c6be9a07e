import Foundation
import Testing
@testable import Checkpoints

// Adapters storing trained biases (PEFT's bias "lora_only" / "all"), and adapters opened
// against GGUF bases: names mapped to llama.cpp's, lora_B's Q/K rows permuted.

/// Deterministic values in about [-1, 1].
private func values(_ count: Int, seed: Int) -> [Float] {
    (0..<count).map { i in Float((i &* 7919 &+ seed &* 104_729) % 2001) / 1000 - 1 }
}

private func writeF32(_ path: String, _ tensors: [(String, [Int])], seed: Int = 0) {
    let writer = try! SafetensorsFileWriter(path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: .f32, shape: $0.1) })
    for (i, (name, shape)) in tensors.enumerated() {
        values(shape.reduce(1, *), seed: seed + i).withUnsafeBytes { try! writer.write(name, bytes: $0) }
    }
    try! writer.finish()
}

/// An adapter folder holding `tensors` (names without PEFT's prefix).
private func adapter(in folder: String, config: String, _ tensors: [(String, [Int])]) -> String {
    let path = folder + "/adapter"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: path + "/adapter_config.json", contents: Data(config.utf8))
    writeF32(path + "/adapter_model.safetensors", tensors.map { (PEFTNames.prefix + $0.0, $0.1) }, seed: 40)
    return path
}

/// A base with a biased 6×5 `m.q` and `m.k`.
private func biasedBase(_ folder: String) -> Checkpoint {
    let path = folder + "/base.safetensors"
    writeF32(path, [("m.q.weight", [6, 5]), ("m.q.bias", [6]), ("m.k.weight", [6, 5]), ("m.k.bias", [6])])
    return try! Checkpoint.open(path)
}

private let qFactors = [("m.q.lora_A.weight", [2, 5]), ("m.q.lora_B.weight", [6, 2])]

/// What opening the adapter against the biased base gives: the saved names, or the problem.
private func opening(_ config: String, _ tensors: [(String, [Int])]) -> String {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = biasedBase(folder)
    do {
        let opened = try LoRAAdapter.open(adapter(in: folder, config: config, tensors), base: base)
        return "saved " + opened.saved.keys.sorted().joined(separator: ",")
    } catch {
        return error.description.replacingOccurrences(of: folder, with: "F")
    }
}

@Test func storedBiasesReplaceTheBasesWhereAndAsPEFTLoadsThem() {
    // An adapted layer's trained bias, as bias "lora_only" saves it.
    #expect(opening(#"{"r": 2, "bias": "lora_only"}"#, qFactors + [("m.q.base_layer.bias", [6])]) == "saved m.q.bias")
    // bias "all": a module not adapted keeps its own name.
    #expect(opening(#"{"r": 2, "bias": "all"}"#, qFactors + [("m.q.base_layer.bias", [6]), ("m.k.bias", [6])])
            == "saved m.k.bias,m.q.bias")
    for (config, tensors, problem) in [
        (#"{"r": 2, "bias": "lora_only"}"#, qFactors + [("m.k.base_layer.bias", [6])],
         "tensor 'base_model.model.m.k.base_layer.bias' is the bias of 'm.k', which the adapter does not adapt"),
        (#"{"r": 2, "bias": "all"}"#, qFactors + [("m.q.bias", [6])],
         "is the bias of adapted module 'm.q', which PEFT loads only as 'm.q.base_layer.bias'"),
        (#"{"r": 2}"#, qFactors + [("m.k.bias", [6])], "nor a bias of an adapter with bias \"all\""),
        (#"{"r": 2, "bias": "lora_only"}"#, qFactors + [("m.q.base_layer.bias", [5])], "has shape [5] but 'm.q.bias' in the base has [6]"),
        (#"{"r": 2, "bias": "some"}"#, qFactors, "'bias' is 'some', not 'none', 'all' or 'lora_only'"),
    ] {
        let result = opening(config, tensors)
        #expect(result.contains(problem), "\(result)")
        #expect(result.hasPrefix("F/adapter"), "\(result)")
    }
}

/// A GGUF file of `architecture` with the Llama-family names of one layer's Q and K
/// (8 rows over 2 heads, 4 rows over 1 KV head, 4 columns) and the Q bias.
private func ggufBase(_ path: String, architecture: String, heads: UInt32 = 2) -> Checkpoint {
    let specs = [TensorSpec(name: "blk.0.attn_q.weight", dtype: .f32, shape: [8, 4]), TensorSpec(name: "blk.0.attn_k.weight", dtype: .f32, shape: [4, 4]),
                 TensorSpec(name: "blk.0.attn_q.bias", dtype: .f32, shape: [8])]
    let metadata = [MetadataEntry("general.architecture", .string(architecture)),
                    MetadataEntry("\(architecture).attention.head_count", .uint32(heads)),
                    MetadataEntry("\(architecture).attention.head_count_kv", .uint32(1))]
    let writer = try! GGUFWriter(path: path, tensors: specs, metadata: metadata)
    for (i, t) in specs.enumerated() {
        values(t.shape.reduce(1, *), seed: i).withUnsafeBytes { try! writer.write(t.name, bytes: $0) }
    }
    try! writer.commit()
    return try! Checkpoint.open(path)
}

private let ggufConfig = #"{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "k_proj"]}"#
private let ggufFactors = [("model.layers.0.self_attn.q_proj.lora_A.weight", [2, 4]), ("model.layers.0.self_attn.q_proj.lora_B.weight", [8, 2]),
                           ("model.layers.0.self_attn.k_proj.lora_A.weight", [2, 4]), ("model.layers.0.self_attn.k_proj.lora_B.weight", [4, 2])]

/// δ of `module` computed on a safetensors base of Hugging Face names, row-major.
private func hfDelta(_ folder: String, adapterPath: String, module: String, shape: [Int]) throws -> [Float] {
    let path = folder + "/hf-" + UUID().uuidString + ".safetensors"
    writeF32(path, [("model.layers.0.self_attn.q_proj.weight", [8, 4]), ("model.layers.0.self_attn.k_proj.weight", [4, 4])])
    let adapter = try LoRAAdapter.open(adapterPath, base: try Checkpoint.open(path))
    let m = try #require(adapter.module(adapting: module))
    var out = [Float](repeating: 0, count: shape[0] * shape[1])
    try out.withUnsafeMutableBufferPointer { try adapter.delta(m, elements: 0..<$0.count, into: $0) }
    return out
}

@Test(arguments: [("llama", true), ("qwen2", false)])
func onAGGUFBaseNamesMapAndQKRowsFollowTheGGUFOrder(architecture: String, permutes: Bool) throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = ggufBase(folder + "/base.gguf", architecture: architecture)
    let path = adapter(in: folder, config: ggufConfig, ggufFactors)
    let opened = try LoRAAdapter.open(path, base: base)
    #expect(opened.modules.map(\.baseName) == ["blk.0.attn_q.weight", "blk.0.attn_k.weight"])
    for (module, ggufName, rows, heads) in [("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", 8, 2),
                                            ("model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", 4, 1)] {
        let expected = try hfDelta(folder, adapterPath: path, module: module, shape: [rows, 4])
        let m = try #require(opened.module(adapting: ggufName))
        #expect(m.rowHeads == (permutes ? heads : nil))
        var got = [Float](repeating: 0, count: rows * 4)
        try got.withUnsafeMutableBufferPointer { try opened.delta(m, elements: 0..<$0.count, into: $0) }
        for row in 0..<rows {
            // GGUF row `row` holds the Hugging Face row the permutation takes it from.
            let source = permutes ? LlamaFamily.sourceRow(row, rows: rows, heads: heads, toGGUF: true) : row
            #expect(Array(got[(row * 4)..<(row * 4 + 4)]) == Array(expected[(source * 4)..<(source * 4 + 4)]), "\(ggufName) row \(row)")
        }
        if permutes { #expect(got != expected) }
    }
}

@Test func onAGGUFBaseWhatCannotBeMappedIsOneLine() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    func problem(_ architecture: String, _ config: String, _ tensors: [(String, [Int])], heads: UInt32 = 2) -> String {
        let sub = folder + "/" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
        let base = ggufBase(sub + "/base.gguf", architecture: architecture, heads: heads)
        do {
            _ = try LoRAAdapter.open(adapter(in: sub, config: config, tensors), base: base)
            return "opened"
        } catch {
            #expect(!error.description.contains("\n"))
            return error.description
        }
    }
    #expect(problem("gpt2", ggufConfig, ggufFactors).contains("is a GGUF file of no architecture whose tensor names Claire maps"))
    // A bias the base has, in GGUF's permuted order (Llama): not applied; Qwen2 keeps HF's order.
    let biased = ggufFactors + [("model.layers.0.self_attn.q_proj.base_layer.bias", [8])]
    let config = #"{"r": 2, "lora_alpha": 4, "bias": "lora_only"}"#
    #expect(problem("llama", config, biased).contains("whose rows"))
    #expect(problem("qwen2", config, biased) == "opened")
    // A module the family's table does not name.
    #expect(problem("qwen2", #"{"r": 2}"#, [("model.layers.0.mlp.w1.lora_A.weight", [2, 4]), ("model.layers.0.mlp.w1.lora_B.weight", [8, 2])])
            .contains("adapts 'model.layers.0.mlp.w1.weight' (no GGUF tensor of the Llama family), which"))
    // Q rows that do not split into the heads' pairs the GGUF metadata gives.
    let q = Array(ggufFactors.prefix(2))
    #expect(problem("llama", #"{"r": 2}"#, q, heads: 3).contains("8 rows do not split into 3 heads of pairs"))
    #expect(problem("qwen2", #"{"r": 2}"#, q, heads: 3) == "opened")
}
