import Foundation
import Testing

/// `fuse --config` with the arithmetic dtype of a recipe, on fixtures/dtype (BF16 models
/// and mergekit 0.1.5's outputs, made by fixtures/dtype/make_fixtures.py).
@Suite struct FuseComputeCommandTests {
    private let folder = NSTemporaryDirectory() + "claire-compute-" + UUID().uuidString

    /// The fixture recipe `name` with its model paths filled in, written to a temporary file.
    private func recipe(_ name: String) throws -> String {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let text = try String(contentsOfFile: fixture("dtype/recipes/\(name).yml"), encoding: .utf8)
            .replacingOccurrences(of: "FIXTURE", with: fixture("dtype"))
        let path = folder + "/\(name).yml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    private func torchDType(_ configPath: String) throws -> String? {
        let data = try #require(FileManager.default.contents(atPath: configPath))
        // Newer transformers (mergekit's output) write the key as `dtype`.
        let config = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        return (config?["torch_dtype"] ?? config?["dtype"]) as? String
    }

    @Test func helpShowsTheComputeOption() throws {
        let result = try runTool(["fuse", "--help"])
        #expect(result.status == 0)
        #expect(result.out.contains("--compute <compute>"))
        #expect(result.out.contains("(values: recipe, f32)"))
    }

    @Test func computeRecipeWithoutARecipeIsAUsageError() throws {
        let result = try runTool(["fuse", fixture("dtype/sft"), "--base", fixture("dtype/base"), "--compute", "recipe",
                                  "-o", folder + "/x"])
        #expect(result.status == 64)
        #expect(result.err.contains("--compute recipe needs a recipe (--config)"))
    }

    /// A BF16 recipe gives mergekit's bytes; `--compute f32` gives the Float32 merge,
    /// which differs from them.
    @Test func aBF16RecipeGivesMergekitsBytesAndComputeF32DoesNot() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = try recipe("task_arithmetic")
        let expected = FileManager.default.contents(atPath: fixture("dtype/mergekit/task_arithmetic/model.safetensors"))
        #expect(try runTool(["fuse", "--config", path, "-o", folder + "/bf16"]).status == 0)
        #expect(try runTool(["fuse", "--config", path, "--compute", "f32", "-o", folder + "/f32"]).status == 0)
        let bf16 = try #require(FileManager.default.contents(atPath: folder + "/bf16/model.safetensors"))
        let f32 = try #require(FileManager.default.contents(atPath: folder + "/f32/model.safetensors"))
        #expect(bf16 == expected)
        #expect(f32 != bf16 && f32.count == bf16.count)
    }

    /// config.json's torch_dtype names the output type, as mergekit's does.
    @Test(arguments: ["task_arithmetic_f16_out", "task_arithmetic_f64", "task_arithmetic"])
    func configNamesTheOutputType(name: String) throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let result = try runTool(["fuse", "--config", try recipe(name), "-o", folder + "/out"])
        #expect(result.status == 0, "\(result.err)")
        let theirs = try torchDType(fixture("dtype/mergekit/\(name)/config.json"))
        #expect(theirs != nil)
        #expect(try torchDType(folder + "/out/config.json") == theirs)
    }
}
