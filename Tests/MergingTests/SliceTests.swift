import Checkpoints
import Foundation
import Testing
@testable import Merging

/// fixtures/slices, made by fixtures/slices/make_fixtures.py.
private let sliceFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures/slices").path

private func fixturePlan(_ recipe: String) throws -> MergePlan {
    let text = try String(contentsOfFile: sliceFixtures + "/recipes/\(recipe).yml", encoding: .utf8)
        .replacingOccurrences(of: "FIXTURE", with: sliceFixtures)
    return try MergeRecipe.parse(text, file: "\(recipe).yml")
}

/// `num_hidden_layers` of the config mergekit wrote.
private func mergekitLayerCount(_ recipe: String) throws -> Int? {
    let data = try Data(contentsOf: URL(fileURLWithPath: sliceFixtures + "/mergekit/\(recipe)/config.json"))
    return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["num_hidden_layers"] as? Int
}

/// Merges a fixture recipe and compares it with mergekit's output: the same tensor set,
/// shapes, types and layer count. Returns the share of elements bit-identical and the
/// share within one step of the output type (as ordered integers).
private func compareWithMergekit(_ recipe: String) throws -> (identical: Double, withinOneStep: Double) {
    let plan = try fixturePlan(recipe)
    let prepared = try PreparedMerge.prepare(plan)
    let sink = MemorySink()
    try MergeExecutor(prepared, threads: 2).run(into: sink)
    let reference = try Checkpoint.open(sliceFixtures + "/mergekit/\(recipe)/model.safetensors")
    #expect(Set(sink.tensors.keys) == Set(reference.tensors.map(\.name)))
    // A `models` recipe keeps the base's config (4 layers).
    #expect((prepared.outputLayerCount ?? 4) == (try mergekitLayerCount(recipe)))
    let specs = Dictionary(uniqueKeysWithValues: prepared.outputTensors.map { ($0.name, $0) })
    var total = 0, identical = 0, close = 0
    for entry in reference.tensors {
        let spec = try #require(specs[entry.name])
        #expect(spec.shape == entry.shape, "\(entry.name)")
        #expect(spec.dtype == entry.dtype, "\(entry.name)")
        let mine = try #require(sink.tensors[entry.name])
        let theirs = Array(reference.data(of: entry))
        #expect(mine.count == theirs.count)
        let counts = stepAgreement(mine, theirs, width: entry.dtype.blockBytes)
        total += counts.total
        identical += counts.identical
        close += counts.close
    }
    #expect(total > 0)
    print("\(recipe): \(identical) of \(total) elements identical to mergekit's, \(close) within one step")
    return (Double(identical) / Double(max(total, 1)), Double(close) / Double(max(total, 1)))
}

@Test(arguments: ["frankenmerge", "passthrough_scale", "modules_slices", "modules_models"])
func passthroughLinearAndModulesMatchMergekitBitForBit(recipe: String) throws {
    let result = try compareWithMergekit(recipe)
    #expect(result.identical == 1)
}

@Test(arguments: ["slerp_slices", "slerp_models", "slerp_two_slices"])
func slerpSlicesAgreeWithMergekitWithinOneStep(recipe: String) throws {
    let result = try compareWithMergekit(recipe)
    #expect(result.withinOneStep >= 0.999)
}

@Test func fullRangeSlicesMergeExactlyAsModelsDo() throws {
    let slices = try runMerge(try fixturePlan("slerp_slices"))
    let models = try runMerge(try fixturePlan("slerp_models"))
    #expect(slices.order == models.order)
    #expect(slices.tensors == models.tensors)
}

@Test func framkenmergeNumbersOutputLayersAcrossSlices() throws {
    let out = try runMerge(try fixturePlan("frankenmerge"))
    let base = try Checkpoint.open(sliceFixtures + "/base/model.safetensors")
    let tuned = try Checkpoint.open(sliceFixtures + "/tuned/model.safetensors")
    func bytes(_ c: Checkpoint, _ name: String) throws -> [UInt8] { Array(c.data(of: try #require(c.tensor(named: name)))) }
    // Output layer 3 is the second slice's first layer: tuned's layer 1.
    #expect(out.tensors["model.layers.3.mlp.up_proj.weight"] == (try bytes(tuned, "model.layers.1.mlp.up_proj.weight")))
    #expect(out.tensors["model.layers.2.mlp.up_proj.weight"] == (try bytes(base, "model.layers.2.mlp.up_proj.weight")))
    // Embeddings from the first slice's model, final norm and head from the last slice's.
    #expect(out.tensors["model.embed_tokens.weight"] == (try bytes(base, "model.embed_tokens.weight")))
    #expect(out.tensors["lm_head.weight"] == (try bytes(tuned, "lm_head.weight")))
    #expect(out.tensors["model.norm.weight"] == (try bytes(tuned, "model.norm.weight")))
}

@Test func slicesWithUnequalLayerCountsAreRefused() throws {
    let recipe = """
        merge_method: slerp
        base_model: b
        parameters: {t: 0.5}
        slices:
          - sources:
              - {model: b, layer_range: [0, 2]}
              - {model: a, layer_range: [0, 3]}
        """
    let plan = try MergeRecipe.parse(recipe, file: "r.yml")
    #expect(throws: MergeError.badPlan("slice 1: every source must have as many layers (b has 2, a 3)")) { try plan.check() }
}

@Test func slerpSlicesNeedTheBaseAmongTheirSources() throws {
    let recipe = "merge_method: slerp\nbase_model: b\nparameters: {t: 0.5}\nslices:\n  - sources:\n      - {model: a, layer_range: [0, 2]}\n"
    let plan = try MergeRecipe.parse(recipe, file: "r.yml")
    #expect(throws: MergeError.badPlan("slice 1: slerp needs the base model b among the slice's sources")) { try plan.check() }
}

@Test func passthroughTakesOneSourcePerSlice() throws {
    let recipe = "merge_method: passthrough\nslices:\n  - sources:\n      - {model: a, layer_range: [0, 2]}\n      - {model: b, layer_range: [0, 2]}\n"
    let plan = try MergeRecipe.parse(recipe, file: "r.yml")
    #expect(throws: MergeError.badPlan("slice 1: passthrough takes exactly one model (one source per slice), not 2")) { try plan.check() }
}

@Test func aLayerRangePastTheModelIsRefusedBeforeMerging() throws {
    let recipe = "merge_method: passthrough\nslices:\n  - sources:\n      - {model: FIXTURE/base, layer_range: [2, 9]}\n"
    let plan = try MergeRecipe.parse(recipe.replacingOccurrences(of: "FIXTURE", with: sliceFixtures), file: "r.yml")
    #expect(throws: MergeError.self) { try PreparedMerge.prepare(plan) }
}

@Test func aLayerRangeMustBeFirstAndEnd() {
    #expect(throws: MergeError.recipe(file: "r.yml", problem: "'layer_range' must be [first, end] with 0 ≤ first < end (line 3)")) {
        try MergeRecipe.parse("merge_method: passthrough\nslices:\n  - sources: [{model: a, layer_range: [3, 3]}]\n", file: "r.yml")
    }
}

@Test func recipeGivesModelsOrSlicesNotBoth() {
    #expect(throws: MergeError.recipe(file: "r.yml", problem: "give either 'models' or 'slices', not both")) {
        try MergeRecipe.parse("merge_method: passthrough\nmodels: [{model: a}]\nslices:\n  - sources: [{model: a, layer_range: [0, 1]}]\n", file: "r.yml")
    }
}
