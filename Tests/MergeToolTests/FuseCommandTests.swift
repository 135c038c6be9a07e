import Foundation
import Testing

/// A fresh folder for outputs; callers remove it.
private func outputFolder() -> String {
    let folder = NSTemporaryDirectory() + "claire-fuse-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder
}

private let base = fixture("merge/base"), sft = fixture("merge/sft"), dpo = fixture("merge/dpo")

@Suite struct FuseCommandTests {
    @Test func writesAModelFolderWithCardAndRecipe() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/merged"
        let result = try runTool(["fuse", sft, dpo, "--base", base, "--method", "ties", "--density", "0.3,1", "-o", out])
        #expect(result.status == 0)
        #expect(result.err.isEmpty)
        let files = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        #expect(files == ["README.md", "config.json", "merge-config.yml", "model.safetensors"])
        let recipe = try String(contentsOfFile: out + "/merge-config.yml", encoding: .utf8)
        #expect(recipe.contains("merge_method: ties"))
        #expect(recipe.contains("density: 0.3"))
        let card = try String(contentsOfFile: out + "/README.md", encoding: .utf8)
        #expect(card.contains("**ties**"))
    }

    @Test func storedRecipeReproducesTheMerge() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let first = try runTool(["fuse", sft, dpo, "--base", base, "--method", "dare_ties", "--density", "0.5",
                                 "--seed", "3", "-o", folder + "/a"])
        #expect(first.status == 0)
        let again = try runTool(["fuse", "--config", folder + "/a/merge-config.yml", "-o", folder + "/b", "--threads", "1"])
        #expect(again.status == 0)
        let a = FileManager.default.contents(atPath: folder + "/a/model.safetensors")
        let b = FileManager.default.contents(atPath: folder + "/b/model.safetensors")
        #expect(a != nil && a == b)
    }

    @Test func misspeltMethodSuggestsTheClosestName() throws {
        let result = try runTool(["fuse", sft, dpo, "--base", base, "--method", "dare_tie", "-o", outputFolder() + "/x"])
        #expect(result.status == 64)
        #expect(result.err.hasPrefix("Error: The value 'dare_tie' is invalid for '--method <method>': "
                                     + "unknown merge method 'dare_tie' (did you mean 'dare_ties'?)\n"))
    }

    @Test func refusesAnExistingOutputWithoutForce() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let result = try runTool(["fuse", sft, dpo, "--base", base, "-o", folder])
        #expect(result.status == 1)
        #expect(result.err.contains("already exists (use --force to replace it)"))
        let forced = try runTool(["fuse", sft, dpo, "--base", base, "-o", folder, "--force"])
        #expect(forced.status == 0)
    }

    @Test func refusesAnOutputThatIsAnInput() throws {
        let result = try runTool(["fuse", sft, dpo, "--base", base, "-o", dpo, "--force"])
        #expect(result.status == 1)
        #expect(result.err.contains("is an input (\(dpo)); choose another output"))
    }

    @Test func refusesDellaEpsilonOutOfRange() throws {
        let result = try runTool(["fuse", sft, dpo, "--base", base, "--method", "della", "--density", "0.1",
                                  "--epsilon", "0.2", "-o", outputFolder() + "/x"])
        #expect(result.status == 1)
        #expect(result.err.contains("density ± epsilon must lie strictly inside (0, 1)"))
    }

    @Test func listsEveryMismatchedTensorAtOnce() throws {
        let result = try runTool(["fuse", fixture("safetensors/tiny-llama"), "--base", base, "-o", outputFolder() + "/x"])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: \(base): inputs do not fit the base ("))
        // The 10 shapes that differ, and the embedding and lm_head rows (40 against 32),
        // refused without a tokenizer_source.
        #expect(result.err.contains("(12 problems): tensor "))
        #expect(result.err.contains("tensor 'lm_head.weight' has 40 rows in \(fixture("safetensors/tiny-llama")) but 32 in the base; set tokenizer_source"))
        #expect(result.err.hasSuffix("; and 4 more\n"))
        #expect(result.err.split(separator: "\n").count == 1)
    }

    @Test func rejectsUnknownRecipeKeys() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = folder + "/r.yml"
        try "merge_method: ties\nbase_model: \(base)\nmodels:\n  - model: \(sft)\nparamters: {}\n"
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let result = try runTool(["fuse", "--config", recipe, "-o", folder + "/x"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(recipe): unknown key 'paramters' (did you mean 'parameters'?) (line 5)\n")
    }

    @Test func writesGGUFThroughTheConverter() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/merged.gguf"
        let result = try runTool(["fuse", sft, dpo, "--base", base, "--format", "gguf", "--type", "q8_0", "-o", out])
        #expect(result.status == 0)
        #expect(result.err == "warning: \(base): no tokenizer.json; the GGUF file has no tokenizer keys\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["merged.gguf"])
        let summary = try runTool(["inspect", out])
        #expect(summary.out.contains("format      gguf, 1 file"))
        #expect(summary.out.contains("Q8_0"))
        let again = try runTool(["fuse", sft, dpo, "--base", base, "--format", "gguf", "-o", out])
        #expect(again.status == 1)
        #expect(again.err.contains("already exists (use --force to replace it)"))
    }

    @Test func mergeFlagsBesideARecipeAreAUsageError() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = folder + "/r.yml"
        try "merge_method: ties\nbase_model: \(base)\nmodels:\n  - model: \(sft)\n  - model: \(dpo)\n"
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let flags: [[String]] = [
            ["--method", "linear"], ["--density", "0.5"], ["--weights", "1"], ["--lambda", "2"], ["--seed", "7"],
            ["--normalize"], ["--no-normalize"], ["--gamma", "0.02"], ["--epsilon", "0.1"], ["--t", "0.5"],
            ["--filter-wise"], ["--rescale", "l1"], ["--consensus", "count"], ["--trim", "tensor"],
        ]
        for flag in flags {
            let result = try runTool(["fuse", "--config", recipe, "-o", folder + "/x"] + flag)
            #expect(result.status == 64, "\(flag)")
            #expect(result.err.contains("\(flag[0]) cannot be used with --config: the recipe sets it"), "\(flag)")
        }
        #expect(!FileManager.default.fileExists(atPath: folder + "/x"))
        // The output type may still be chosen beside a recipe.
        let typed = try runTool(["fuse", "--config", recipe, "-o", folder + "/x", "--dtype", "bf16"])
        #expect(typed.status == 0)
    }

    @Test func parametersTheMethodDoesNotReadGiveAWarningAndTheMergeRuns() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let stock = folder + "/stock.yml"
        try "merge_method: model_stock\nbase_model: \(base)\nmodels:\n  - model: \(sft)\n    parameters: {weight: 0.5}\n  - model: \(dpo)\n    parameters: {weight: 0.5}\n"
            .write(toFile: stock, atomically: true, encoding: .utf8)
        let result = try runTool(["fuse", "--config", stock, "-o", folder + "/stock"])
        #expect(result.status == 0)
        #expect(result.err == "warning: parameter 'weight' is not used by model_stock; it is ignored\n")
        #expect(FileManager.default.fileExists(atPath: folder + "/stock/model.safetensors"))
        let linear = folder + "/linear.yml"
        try "merge_method: linear\nmodels:\n  - model: \(sft)\n    parameters: {weight: 1}\n  - model: \(dpo)\n    parameters: {weight: 1}\nparameters:\n  int8_mask: true\n"
            .write(toFile: linear, atomically: true, encoding: .utf8)
        let mixed = try runTool(["fuse", "--config", linear, "-o", folder + "/linear"])
        #expect(mixed.status == 0)
        #expect(mixed.err == "warning: parameter 'int8_mask' is not used by linear; it is ignored\n")
    }

    @Test func configNamesTheOutputType() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        func torchDType(_ out: String) throws -> String? {
            let data = try #require(FileManager.default.contents(atPath: out + "/config.json"))
            return (try JSONSerialization.jsonObject(with: data) as? [String: Any])?["torch_dtype"] as? String
        }
        #expect(try runTool(["fuse", sft, dpo, "--base", base, "--dtype", "f16", "-o", folder + "/half"]).status == 0)
        #expect(try torchDType(folder + "/half") == "float16")
        let recipe = folder + "/r.yml"
        try "merge_method: task_arithmetic\nbase_model: \(base)\nmodels:\n  - model: \(sft)\n    parameters: {weight: 1}\nout_dtype: bfloat16\n"
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        #expect(try runTool(["fuse", "--config", recipe, "-o", folder + "/brain"]).status == 0)
        #expect(try torchDType(folder + "/brain") == "bfloat16")
        // Without an output type the base's config is copied as it is.
        #expect(try runTool(["fuse", sft, dpo, "--base", base, "-o", folder + "/same"]).status == 0)
        #expect(FileManager.default.contents(atPath: folder + "/same/config.json")
                == FileManager.default.contents(atPath: base + "/config.json"))
    }

    @Test func recipeChatTemplateIsWrittenIntoTokenizerConfig() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let chatBase = folder + "/base"
        try FileManager.default.copyItem(atPath: base, toPath: chatBase)
        try "{\"model_max_length\": 2048, \"chat_template\": \"{{ old }}\"}".write(
            toFile: chatBase + "/tokenizer_config.json", atomically: true, encoding: .utf8)
        try "{{ old }}".write(toFile: chatBase + "/chat_template.jinja", atomically: true, encoding: .utf8)
        let recipe = folder + "/r.yml"
        try "merge_method: task_arithmetic\nbase_model: \(chatBase)\nmodels:\n  - model: \(sft)\n    parameters: {weight: 1}\nchat_template: chatml\n"
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let result = try runTool(["fuse", "--config", recipe, "-o", folder + "/out"])
        #expect(result.status == 0)
        let data = try #require(FileManager.default.contents(atPath: folder + "/out/tokenizer_config.json"))
        let config = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let template = try #require(config["chat_template"] as? String)
        #expect(template.hasPrefix("{% for message in messages %}{{ '<|im_start|>' + message['role']"))
        #expect(config["model_max_length"] as? Int == 2048)
        // A chat_template.jinja beside it would take precedence, so the base's is not copied.
        #expect(!FileManager.default.fileExists(atPath: folder + "/out/chat_template.jinja"))
    }

    @Test func aUnionTokenizerRecipeWritesTheGrownVocabulary() throws {
        let folder = outputFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let models = fixture("tokenizers")
        let recipe = folder + "/r.yml"
        try String(contentsOfFile: models + "/recipes/union.yml", encoding: .utf8).replacingOccurrences(of: "FIXTURE", with: models)
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let result = try runTool(["fuse", "--config", recipe, "-o", folder + "/out"])
        #expect(result.status == 0)
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/out/config.json"))) as? [String: Any])
        #expect(config["vocab_size"] as? Int == 32)
        let tokenizer = try String(contentsOfFile: folder + "/out/tokenizer.json", encoding: .utf8)
        #expect(tokenizer.contains("<|im_start|>") && tokenizer.contains("<|im_end|>"))
        // Without the tokenizer_source line the same recipe is refused in one line.
        try String(contentsOfFile: recipe, encoding: .utf8).replacingOccurrences(of: "tokenizer_source: union", with: "")
            .write(toFile: recipe, atomically: true, encoding: .utf8)
        let refused = try runTool(["fuse", "--config", recipe, "-o", folder + "/refused"])
        #expect(refused.status == 1)
        #expect(refused.err.contains("has 32 rows in \(models)/sft but 30 in the base; set tokenizer_source"))
        #expect(refused.err.split(separator: "\n").count == 1)
        #expect(!FileManager.default.fileExists(atPath: folder + "/refused"))
    }

    @Test func conflictingRecipeAndModelsIsAUsageError() throws {
        let result = try runTool(["fuse", sft, "--config", "r.yml", "-o", "x"])
        #expect(result.status == 64)
    }
}
