import Foundation
import Testing

@Suite struct LoraExtractCommandTests {
    func scratchFolder() -> String {
        let folder = NSTemporaryDirectory() + "claire-lora-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    @Test func extractsThePEFTFixtureAndReportsEachModule() throws {
        let folder = scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/adapter"
        let result = try runTool(["lora", "extract", fixture("lora/extract/tuned"), "--base", fixture("lora/extract/base"),
                                  "--rank", "4", "--json", "-o", out])
        #expect(result.status == 0, "\(result.err)")
        let json = try #require(JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
        let modules = try #require(json["modules"] as? [[String: Any]])
        #expect(modules.count == 14)
        #expect(modules.allSatisfy { ($0["relative_error"] as? Double ?? 1) < 1e-5 && $0["rank"] as? Int == 4 })
        #expect((json["saved"] as? [String])?.count == 7)
        #expect(FileManager.default.fileExists(atPath: out + "/adapter_model.safetensors"))
        #expect(FileManager.default.fileExists(atPath: out + "/adapter_config.json"))

        let table = try runTool(["lora", "extract", fixture("lora/extract/tuned"), "--base", fixture("lora/extract/base"),
                                 "--energy", "0.5", "--force", "-o", out])
        #expect(table.status == 0)
        #expect(table.out.contains("module") && table.out.contains("rel. error") && table.out.contains("exact"))
        #expect(table.out.contains("wrote \(out): 14 modules"))
    }

    @Test func usageMistakesAreOneLineWithStatus64() throws {
        let base = fixture("lora/extract/base"), tuned = fixture("lora/extract/tuned")
        for (arguments, text) in [
            (["--rank", "0"], "--rank must be at least 1"),
            (["--rank=-3"], "--rank must be at least 1"),
            ([], "give --rank or --energy"),
            (["--energy", "1.5"], "--energy must be in (0, 1]"),
            (["--energy", "0.9", "--svd", "randomized"], "--energy needs every singular value"),
        ] {
            let result = try runTool(["lora", "extract", tuned, "--base", base, "-o", "/nonexistent/x"] + arguments)
            #expect(result.status == 64, "\(arguments)")
            #expect(result.err.contains(text), "\(arguments): \(result.err)")
        }
    }

    @Test func inputProblemsAreOneLineErrorsAndLeaveNoOutput() throws {
        let folder = scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/adapter"
        let base = fixture("lora/extract/base"), tuned = fixture("lora/extract/tuned")
        // k_proj is 16 × 32 in the fixture.
        var result = try runTool(["lora", "extract", tuned, "--base", base, "--rank", "17", "-o", out])
        #expect(result.status == 1)
        #expect(result.err == "error: parameter 'rank': 17 exceeds min(out, in) = 16 of 'model.layers.0.self_attn.k_proj' (16×32)\n")
        // A base with other shapes: the fixture's base against a model of another size.
        result = try runTool(["lora", "extract", tuned, "--base", fixture("safetensors/tiny-llama"), "--rank", "2", "-o", out])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: ") && result.err.filter { $0 == "\n" }.count == 1, "\(result.err)")
        result = try runTool(["lora", "extract", tuned, "--base", folder + "/missing", "--rank", "2", "-o", out])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: \(folder)/missing") && result.err.filter { $0 == "\n" }.count == 1)
        result = try runTool(["lora", "extract", fixture("conversion/llamacpp-f32.gguf"), "--base", base, "--rank", "2", "-o", out])
        #expect(result.status == 1)
        #expect(result.err.contains("a LoRA adapter names Hugging Face modules; convert the GGUF file"), "\(result.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).isEmpty)
    }
}
