import Checkpoints
import Foundation
import Testing
@testable import Merging

/// The YAML recipes of docs/merging.md, merged as written on small models laid out under
/// the names they use (`models/base`, `models/sft`, …), so an example that stops
/// running fails here.
private let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The fenced `yaml` blocks of docs/merging.md, in order.
private func yamlBlocks() throws -> [String] {
    let text = try String(contentsOfFile: repository + "/docs/merging.md", encoding: .utf8)
    var blocks: [String] = []
    var current: [String]?
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("```yaml") {
            current = []
        } else if line.hasPrefix("```"), let block = current {
            blocks.append(block.joined(separator: "\n"))
            current = nil
        } else {
            current?.append(String(line))
        }
    }
    return blocks
}

/// A Llama-shaped model of `layers` layers, 4 wide, in `folder`.
private func writeLlama(_ folder: String, layers: Int, seed: UInt64) throws {
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let hidden = 4, inner = 8, vocabulary = 16
    var names: [String] = ["model.embed_tokens.weight"]
    var shapes: [[Int]] = [[vocabulary, hidden]]
    for i in 0..<layers {
        let layer = "model.layers.\(i)."
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            names.append(layer + "self_attn." + name + ".weight")
            shapes.append([hidden, hidden])
        }
        names += [layer + "mlp.gate_proj.weight", layer + "mlp.up_proj.weight", layer + "mlp.down_proj.weight"]
        shapes += [[inner, hidden], [inner, hidden], [hidden, inner]]
        names += [layer + "input_layernorm.weight", layer + "post_attention_layernorm.weight"]
        shapes += [[hidden], [hidden]]
    }
    names += ["model.norm.weight", "lm_head.weight"]
    shapes += [[hidden], [vocabulary, hidden]]
    var tensors: [TestTensor] = []
    for i in 0..<names.count {
        let count: Int = shapes[i].reduce(1, *)
        let values: [Float] = noise(count, seed: seed * 1000 + UInt64(i), scale: 0.02)
        tensors.append(TestTensor(name: names[i], shape: shapes[i], values: values))
    }
    writeCheckpoint(folder + "/model.safetensors", tensors)
    let config = """
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": \(hidden),
         "intermediate_size": \(inner), "num_hidden_layers": \(layers), "num_attention_heads": 2,
         "num_key_value_heads": 1, "vocab_size": \(vocabulary), "rms_norm_eps": 1e-05, "torch_dtype": "float32"}
        """
    try config.write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
}

/// Copies the fixture models `names` of `fixtures/<set>` to `folder/models/`.
private func layOut(_ set: String, _ names: [String], in folder: String) throws {
    try FileManager.default.createDirectory(atPath: folder + "/models", withIntermediateDirectories: true)
    for name in names {
        try FileManager.default.copyItem(atPath: repository + "/fixtures/\(set)/\(name)", toPath: folder + "/models/\(name)")
    }
}

/// Parses `recipe` with its model names under `folder`, checks it and merges it.
private func merge(_ recipe: String, in folder: String) throws -> MemorySink {
    let plan = try MergeRecipe.parse(recipe.replacingOccurrences(of: "models/", with: folder + "/models/"), file: "example.yml")
    try plan.check()
    return try runMerge(plan)
}

@Test func everyRecipeExampleOfTheMergingGuideRuns() throws {
    let blocks = try yamlBlocks()
    let recipes = blocks.filter { $0.contains("merge_method:") }
    let tokenizerSettings = blocks.filter { $0.hasPrefix("tokenizer") }
    // The guide shows two whole recipes and two tokenizer settings; a new example
    // must be added here too.
    #expect(recipes.count == 2)
    #expect(tokenizerSettings.count == 2)
    let fused = try #require(recipes.first { $0.contains("merge_method: ties") })
    let stacked = try #require(recipes.first { $0.contains("merge_method: passthrough") })

    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    try layOut("merge", ["base", "sft", "dpo"], in: folder)
    let ties = try merge(fused, in: folder)
    #expect(ties.tensors["model.layers.0.mlp.up_proj.weight"] != nil)

    // Depth up-scaling: 24 + 24 layers of two 32-layer models.
    let stackedFolder = folder + "/stacked"
    try writeLlama(stackedFolder + "/models/base", layers: 32, seed: 1)
    try writeLlama(stackedFolder + "/models/tuned", layers: 32, seed: 2)
    let up = try merge(stacked, in: stackedFolder)
    #expect(up.tensors["model.layers.47.mlp.down_proj.weight"] != nil)
    #expect(up.tensors["model.layers.48.mlp.down_proj.weight"] == nil)

    // Each tokenizer setting added to the first recipe, on models with added tokens.
    let tokenizerFolder = folder + "/tokens"
    try layOut("tokenizers", ["base", "sft", "dpo"], in: tokenizerFolder)
    let base = try Checkpoint.open(tokenizerFolder + "/models/base")
    let shape = try #require(base.tensor(named: "model.embed_tokens.weight")).shape
    for setting in tokenizerSettings {
        let merged = try merge(fused + "\n" + setting, in: tokenizerFolder)
        // The output (float16, the recipe's out_dtype) gets the added tokens' rows beyond the base's.
        let rows: Int = merged.values("model.embed_tokens.weight", .f16).count / shape[1]
        #expect(rows > shape[0])
    }
}
