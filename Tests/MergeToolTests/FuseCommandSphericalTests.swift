import Foundation
import Testing

/// `fuse` with nuslerp, multislerp and karcher on the merge fixtures.
@Suite struct FuseCommandSphericalTests {
    private let base = fixture("merge/base"), sft = fixture("merge/sft"), dpo = fixture("merge/dpo")

    private func folder() -> String {
        let folder = NSTemporaryDirectory() + "claire-fuse-spherical-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test func multislerpOfTwoModelsWithoutABaseWritesAModel() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let result = try runTool(["fuse", sft, dpo, "--method", "multislerp", "-o", folder + "/out"])
        #expect(result.status == 0)
        #expect(result.err.isEmpty)
        let recipe = try String(contentsOfFile: folder + "/out/merge-config.yml", encoding: .utf8)
        #expect(recipe.contains("merge_method: multislerp"))
        #expect(!recipe.contains("base_model"))
        // The stored recipe makes the same bytes.
        let again = try runTool(["fuse", "--config", folder + "/out/merge-config.yml", "-o", folder + "/again", "--threads", "1"])
        #expect(again.status == 0)
        let a = FileManager.default.contents(atPath: folder + "/out/model.safetensors")
        let b = FileManager.default.contents(atPath: folder + "/again/model.safetensors")
        #expect(a != nil && a == b)
    }

    @Test func nuslerpAndKarcherRunFromTheCommandLine() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let nuslerp = try runTool(["fuse", sft, dpo, "--base", base, "--method", "nuslerp", "--weights", "0.3,0.7", "-o", folder + "/n"])
        #expect(nuslerp.status == 0)
        let karcher = try runTool(["fuse", sft, dpo, "--base", base, "--method", "karcher", "-o", folder + "/k"])
        #expect(karcher.status == 0)
        let card = try String(contentsOfFile: folder + "/k/README.md", encoding: .utf8)
        #expect(card.contains("**karcher**"))
    }

    @Test func helpListsTheMethods() throws {
        let help = try runTool(["fuse", "--help"])
        #expect(help.status == 0)
        let text = help.out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        let values = try #require(text.range(of: "Merge method. (values: ")).upperBound
        let names = text[values...].prefix { $0 != ";" }.components(separatedBy: ", ")
        for method in ["nuslerp", "multislerp", "karcher"] { #expect(names.contains(method)) }
        #expect(text.contains("karcher counts a base as one more input"))
    }

    /// One line on standard error and exit status 1 for each bad value.
    private func expectOneLineError(_ arguments: [String], _ message: String) throws {
        let result = try runTool(arguments)
        #expect(result.status == 1, "\(arguments)")
        #expect(result.err == "error: \(message)\n")
    }

    @Test func badParameterValuesGiveOneLineErrors() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try expectOneLineError(["fuse", sft, dpo, "--method", "multislerp", "--weights", "1,-1", "-o", folder + "/x"],
                               "parameter 'weight': the weights of 'lm_head.weight' (1, -1) sum to 0, and normalize_weights divides by that sum")
        try expectOneLineError(["fuse", sft, dpo, base, "--method", "nuslerp", "-o", folder + "/x"],
                               "nuslerp needs exactly two models, not 3")
        for (line, message) in [("max_iter: 2.5", "parameter 'max_iter': 2.5 is not a whole number"),
                                ("max_iter: -1", "parameter 'max_iter': -1 lies outside [0, 10000]"),
                                ("tol: .nan", "parameter 'tol': nan is not a finite number"),
                                ("tol: 2", "parameter 'tol': 2 lies outside [0, 1]")] {
            let recipe = folder + "/karcher.yml"
            try "merge_method: karcher\nmodels:\n  - model: \(sft)\n  - model: \(dpo)\nparameters:\n  \(line)\n"
                .write(toFile: recipe, atomically: true, encoding: .utf8)
            try expectOneLineError(["fuse", "--config", recipe, "-o", folder + "/x"], message)
        }
        #expect(!FileManager.default.fileExists(atPath: folder + "/x"))
    }
}
