import Foundation
import Testing
@testable import Merging

/// fixtures/merge: a three-layer base/sft/dpo trio.
private let fixtureFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures/merge").path

/// nuslerp, multislerp and karcher written with one full-range slice mean what the same
/// recipe with `models` means: a base given to nuslerp and multislerp is the reference
/// among the slice's sources, and karcher's base (added as an input with `models`) is a
/// source like the others.
@Suite struct SphericalRecipeSliceTests {
    private func merge(_ recipe: String) throws -> MemorySink {
        let text = recipe.replacingOccurrences(of: "FIXTURE", with: fixtureFolder)
        return try runMerge(try MergeRecipe.parse(text, file: "recipe.yml"))
    }

    private func expectSameTensors(_ a: MemorySink, _ b: MemorySink) {
        #expect(!a.tensors.isEmpty)
        #expect(a.tensors.keys.sorted() == b.tensors.keys.sorted())
        for (name, bytes) in a.tensors { #expect(bytes == b.tensors[name], "\(name)") }
    }

    @Test(arguments: [("nuslerp", "nuslerp_flatten: false"), ("multislerp", "normalize_weights: true")])
    func oneSliceWithTheBaseEqualsTheModelsRecipe(method: String, parameter: String) throws {
        let models = try merge("""
            merge_method: \(method)
            base_model: FIXTURE/base
            parameters: {\(parameter)}
            models:
              - {model: FIXTURE/sft, parameters: {weight: 0.3}}
              - {model: FIXTURE/dpo, parameters: {weight: 0.7}}
            """)
        let slices = try merge("""
            merge_method: \(method)
            base_model: FIXTURE/base
            parameters: {\(parameter)}
            slices:
              - sources:
                  - {model: FIXTURE/base, layer_range: [0, 3]}
                  - {model: FIXTURE/sft, layer_range: [0, 3], parameters: {weight: 0.3}}
                  - {model: FIXTURE/dpo, layer_range: [0, 3], parameters: {weight: 0.7}}
            """)
        expectSameTensors(models, slices)
        // Without the base the same two models give another merge.
        let plain = try merge("""
            merge_method: \(method)
            parameters: {\(parameter)}
            models:
              - {model: FIXTURE/sft, parameters: {weight: 0.3}}
              - {model: FIXTURE/dpo, parameters: {weight: 0.7}}
            """)
        #expect(plain.tensors["model.layers.0.mlp.up_proj.weight"] != models.tensors["model.layers.0.mlp.up_proj.weight"])
    }

    @Test func karcherCountsTheBaseAsASource() throws {
        let models = try merge("""
            merge_method: karcher
            base_model: FIXTURE/base
            models:
              - {model: FIXTURE/sft}
              - {model: FIXTURE/dpo}
            """)
        let slices = try merge("""
            merge_method: karcher
            base_model: FIXTURE/base
            slices:
              - sources:
                  - {model: FIXTURE/sft, layer_range: [0, 3]}
                  - {model: FIXTURE/dpo, layer_range: [0, 3]}
                  - {model: FIXTURE/base, layer_range: [0, 3]}
            """)
        expectSameTensors(models, slices)
        let withoutBase = try merge("merge_method: karcher\nmodels:\n  - {model: FIXTURE/sft}\n  - {model: FIXTURE/dpo}\n")
        #expect(withoutBase.tensors["model.layers.0.mlp.up_proj.weight"] != models.tensors["model.layers.0.mlp.up_proj.weight"])
    }
}
