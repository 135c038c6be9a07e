import Foundation
import Testing

private let base = fixture("merge/base"), sft = fixture("merge/sft"), dpo = fixture("merge/dpo")

/// `fuse` with sce, nearswap and arcee_fusion: flags, recipes, and the one-line
/// errors for parameter values the methods cannot take.
@Suite struct FuseCommandSCENearSwapFusionTests {
    private func folder() -> String {
        let folder = NSTemporaryDirectory() + "claire-fuse-methods-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test func sceMergesFromFlagsAndItsStoredRecipeReproducesIt() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let plain = try runTool(["fuse", sft, dpo, "--base", base, "--method", "sce", "-o", folder + "/plain"])
        #expect(plain.status == 0)
        #expect(plain.err.isEmpty)
        let selected = try runTool(["fuse", sft, dpo, "--base", base, "--method", "sce", "--select-topk", "0.5",
                                    "-o", folder + "/selected"])
        #expect(selected.status == 0)
        let recipe = try String(contentsOfFile: folder + "/selected/merge-config.yml", encoding: .utf8)
        #expect(recipe.contains("merge_method: sce"))
        #expect(recipe.contains("select_topk: 0.5"))
        // sce reads no weights: none are written.
        #expect(!recipe.contains("weight"))
        let a = FileManager.default.contents(atPath: folder + "/plain/model.safetensors")
        let b = FileManager.default.contents(atPath: folder + "/selected/model.safetensors")
        #expect(a != nil && b != nil && a != b)
        let again = try runTool(["fuse", "--config", folder + "/selected/merge-config.yml", "-o", folder + "/again"])
        #expect(again.status == 0)
        #expect(FileManager.default.contents(atPath: folder + "/again/model.safetensors") == b)
    }

    @Test func nearswapAndArceeFusionMergeTwoModels() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let swap = try runTool(["fuse", sft, "--base", base, "--method", "nearswap", "--t", "0.0007", "-o", folder + "/swap"])
        #expect(swap.status == 0)
        #expect(swap.err.isEmpty)
        let fusion = try runTool(["fuse", dpo, "--base", base, "--method", "arcee_fusion", "-o", folder + "/fusion"])
        #expect(fusion.status == 0)
        #expect(fusion.err.isEmpty)
        #expect(try String(contentsOfFile: folder + "/fusion/merge-config.yml", encoding: .utf8)
            .contains("merge_method: arcee_fusion"))
    }

    @Test func ramAndRAMPlusMergeFromFlagsAndRecipes() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let ram = try runTool(["fuse", sft, dpo, "--base", base, "--method", "ram", "--epsilon", "0.0003", "-o", folder + "/ram"])
        #expect(ram.status == 0)
        #expect(ram.err.isEmpty)
        #expect(try String(contentsOfFile: folder + "/ram/merge-config.yml", encoding: .utf8).contains("epsilon: 0.0003"))
        let recipe = folder + "/plus.yml"
        try "merge_method: ramplus_tl\nbase_model: \(base)\nmodels:\n  - model: \(sft)\n  - model: \(dpo)\nparameters:\n  epsilon: 0.0003\n  r: 0.5\n  alpha: 0.4\n"
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let plus = try runTool(["fuse", "--config", recipe, "-o", folder + "/plus"])
        #expect(plus.status == 0)
        #expect(plus.err.isEmpty)
        // RAM+ scales the changes only one model made: the two differ.
        let a = FileManager.default.contents(atPath: folder + "/ram/model.safetensors")
        let b = FileManager.default.contents(atPath: folder + "/plus/model.safetensors")
        #expect(a != nil && b != nil && a != b)
    }

    @Test func badFlagValuesAreUsageErrors() throws {
        let out = folder()
        defer { try? FileManager.default.removeItem(atPath: out) }
        for (flags, message) in [(["--method", "sce", "--select-topk", "1.5"], "Error: --select-topk: 1.5 lies outside [0, 1]"),
                                 (["--method", "sce", "--select-topk", "x"], "Error: The value 'x' is invalid for '--select-topk <select-topk>'"),
                                 (["--method", "nearswap", "--t=-1"], "Error: --t: -1 lies outside [0, 1]")] {
            let result = try runTool(["fuse", sft, "--base", base, "-o", out + "/x"] + flags)
            #expect(result.status == 64, "\(flags)")
            #expect(result.err.hasPrefix(message), "\(flags): \(result.err)")
        }
        #expect(!FileManager.default.fileExists(atPath: out + "/x"))
    }

    @Test func selectTopKBesideARecipeIsAUsageError() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = folder + "/r.yml"
        try "merge_method: sce\nbase_model: \(base)\nmodels:\n  - model: \(sft)\n  - model: \(dpo)\n"
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let result = try runTool(["fuse", "--config", recipe, "-o", folder + "/x", "--select-topk", "0.5"])
        #expect(result.status == 64)
        #expect(result.err.hasPrefix("Error: --select-topk cannot be used with --config: the recipe sets it"))
    }

    @Test func badPlansAndRecipeValuesGiveOneLineErrors() throws {
        let folder = folder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        func recipe(_ text: String) throws -> String {
            let path = folder + "/\(UUID().uuidString).yml"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let cases: [(arguments: [String], error: String)] = [
            (["--config", try recipe("merge_method: sce\nbase_model: \(base)\nmodels:\n  - model: \(sft)\n  - model: \(dpo)\nparameters:\n  select_topk: -0.5\n")],
             "error: parameter 'select_topk': -0.5 lies outside [0, 1]\n"),
            ([sft, dpo, "--base", base, "--method", "nearswap", "--t", "0.001"],
             "error: nearswap needs exactly two models, one of them the base\n"),
            ([sft, "--base", base, "--method", "nearswap"], "error: nearswap needs the closeness threshold t\n"),
            ([sft, dpo, "--base", base, "--method", "arcee_fusion"],
             "error: arcee_fusion needs exactly two models, one of them the base\n"),
            ([sft, dpo, "--method", "sce"], "error: sce needs a base model (--base or base_model)\n"),
            (["--config", try recipe("merge_method: ramplus_tl\nbase_model: \(base)\nmodels:\n  - model: \(sft)\nparameters:\n  alpha: 2000000\n")],
             "error: parameter 'alpha': 2000000 lies outside [-1000000, 1000000]\n"),
        ]
        for c in cases {
            let result = try runTool(["fuse"] + c.arguments + ["-o", folder + "/x"])
            #expect(result.status == 1, "\(c.arguments)")
            #expect(result.err == c.error, "\(c.arguments)")
        }
        #expect(!FileManager.default.fileExists(atPath: folder + "/x"))
    }
}
