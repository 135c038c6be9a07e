import Foundation
import Testing

/// A new folder under the temporary folder.
private func scratchFolder() throws -> String {
    let folder = NSTemporaryDirectory() + "claire-messages-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder
}

@Suite struct PreciseMessageTests {
    @Test func statsMeasuresAQuantizedGGUFFineTune() throws {
        let file = fixture("conversion/llamacpp-q8_0.gguf")
        let result = try runTool(["stats", file, "--base", fixture("conversion/llamacpp-f32.gguf"), "--json"])
        #expect(result.status == 0, "\(result.err)")
        #expect(result.out.contains("\"output.weight\""))
    }

    @Test func aFolderWithoutConfigSaysSo() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir + "/m", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture("merge/base/model.safetensors"), toPath: dir + "/m/model.safetensors")
        let expected = "error: \(dir)/m: no config.json in the folder (conversion to GGUF takes the architecture and sizes from it)\n"
        let convert = try runTool(["convert", dir + "/m", dir + "/x.gguf"])
        #expect(convert.status == 1)
        #expect(convert.err == expected)
        let fuse = try runTool(["fuse", fixture("merge/sft"), "--base", dir + "/m", "--format", "gguf", "-o", dir + "/y.gguf"])
        #expect(fuse.status == 1)
        #expect(fuse.err == expected)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["m"])
    }

    @Test func aDeltaOnABaseOfAnotherTypeNamesTheTypes() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try runTool(["convert", fixture("merge/base"), dir + "/base16", "--dtype", "f16"]).status == 0)
        #expect(try runTool(["delta", "extract", fixture("merge/dpo"), "--base", fixture("merge/base"), "-o", dir + "/d.delta"]).status == 0)
        let apply = try runTool(["delta", "apply", dir + "/d.delta", "--base", dir + "/base16", "-o", dir + "/out"])
        #expect(apply.status == 1)
        #expect(apply.err.hasPrefix("error: \(dir)/d.delta: tensor '"))
        #expect(apply.err.hasSuffix("': base stores F16, delta expects F32\n"))
    }

    @Test func aFolderHoldingAGGUFFileNamesIt() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: fixture("conversion/llamacpp-q8_0.gguf"), toPath: dir + "/model.gguf")
        let result = try runTool(["inspect", dir])
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir): no model.safetensors or model.safetensors.index.json in folder; "
                + "it holds 'model.gguf': give the .gguf file's own path\n")
    }
}
