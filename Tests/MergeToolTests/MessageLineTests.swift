import Checkpoints
import Foundation
import Testing

/// A new folder under the temporary folder.
private func scratchFolder() throws -> String {
    let folder = NSTemporaryDirectory() + "claire-messages-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder
}

/// Writes a one-tensor F32 safetensors file.
private func writeTensor(_ path: String, name: String, shape: [Int], values: [Float]) throws {
    let writer = try SafetensorsFileWriter(path: path, tensors: [TensorSpec(name: name, dtype: .f32, shape: shape)])
    try values.withUnsafeBytes { try writer.write(name, bytes: $0) }
    try writer.finish()
}

/// Runs `merge-tool` through the shell with a file-size limit of `blocks` 512-byte blocks.
private func runToolLimited(fileBlocks blocks: Int, _ arguments: [String]) throws -> (status: Int32, err: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/sh")
    process.arguments = ["-c", "ulimit -f \(blocks); exec \"$0\" \"$@\"", toolURL().path] + arguments
    let err = Pipe()
    process.standardOutput = FileHandle.nullDevice
    process.standardError = err
    try process.run()
    let data = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

@Suite struct MessageLineTests {
    /// A tensor name that tries to start a second message line and to drive the terminal.
    static let hostileName = "w\nerror: forged \u{1B}[31mred\u{07}\u{202E}"

    @Test func aNameWithControlCharactersStaysOnOneVisibleLine() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeTensor(dir + "/base.safetensors", name: Self.hostileName, shape: [4], values: [1, 2, 3, 4])
        try writeTensor(dir + "/ft.safetensors", name: Self.hostileName, shape: [2, 2], values: [1, 2, 3, 4])
        let result = try runTool(["fuse", dir + "/ft.safetensors", "--base", dir + "/base.safetensors", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir)/base.safetensors: inputs do not fit the base (1 problem): tensor "
                + "'w\\nerror: forged \\x1b[31mred\\x07\\u{202e}' has shape [2, 2] in \(dir)/ft.safetensors but [4] in the base\n")
    }

    @Test func warningsEscapeNamesToo() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeTensor(dir + "/base.safetensors", name: Self.hostileName, shape: [4], values: [1, 2, 3, 4])
        try writeTensor(dir + "/ft.safetensors", name: Self.hostileName, shape: [4], values: [.nan, 2, 3, 4])
        let result = try runTool(["fuse", dir + "/ft.safetensors", "--base", dir + "/base.safetensors",
                                  "--method", "task_arithmetic", "-o", dir + "/out"])
        #expect(result.status == 0)
        #expect(result.err.split(separator: "\n").count == 1)
        #expect(!result.err.contains("\u{1B}") && !result.err.contains("\u{07}"))
        #expect(result.err.hasPrefix("warning: input tensor 'w\\nerror: forged \\x1b[31mred\\x07\\u{202e}' in "))
    }

    @Test func listingsOnStandardOutputEscapeNames() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try writeTensor(dir + "/m.safetensors", name: "a\u{1B}]0;title\u{07}", shape: [1], values: [1])
        let result = try runTool(["inspect", "--tensors", dir + "/m.safetensors"])
        #expect(result.status == 0)
        #expect(!result.out.contains("\u{1B}") && !result.out.contains("\u{07}"))
        #expect(result.out.contains("a\\x1b]0;title\\x07"))
    }

    @Test func aLongNameIsShortenedWithAnEllipsis() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let name = String(repeating: "n", count: 5000)
        try writeTensor(dir + "/base.safetensors", name: name, shape: [4], values: [1, 2, 3, 4])
        try writeTensor(dir + "/ft.safetensors", name: name, shape: [2, 2], values: [1, 2, 3, 4])
        let result = try runTool(["fuse", dir + "/ft.safetensors", "--base", dir + "/base.safetensors", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err.contains("tensor '" + String(repeating: "n", count: 200) + "… (4800 more characters)' has shape"))
        #expect(result.err.count < 1000)
    }

    @Test func aYAMLErrorDoesNotEchoAHugeLine() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recipe = dir + "/recipe.yml"
        try ("merge_method: [" + String(repeating: "x", count: 30_000) + "\n").write(toFile: recipe, atomically: false, encoding: .utf8)
        let result = try runTool(["fuse", "--config", recipe, "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: \(recipe): not valid YAML: "))
        #expect(result.err.contains("line 2"))
        #expect(result.err.count < 1000)
        #expect(result.err.split(separator: "\n").count == 1)
    }

    @Test func aWriteErrorNamesTheOutputNotItsTemporary() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = fixture("merge/base"), sft = fixture("merge/sft")
        let result = try runToolLimited(fileBlocks: 1, ["fuse", sft, "--base", base, "--method", "task_arithmetic", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(!result.err.contains(".partial-"), "\(result.err)")
        #expect(result.err.hasPrefix("error: \(dir)/out"), "\(result.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func aWriteErrorWhileStagingAGGUFNamesTheGGUF() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = fixture("merge/base"), sft = fixture("merge/sft")
        let result = try runToolLimited(fileBlocks: 1, ["fuse", sft, "--base", base, "--method", "task_arithmetic",
                                                        "--format", "gguf", "-o", dir + "/m.gguf"])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: \(dir)/m.gguf: cannot size the output: "), "\(result.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }
}

@Suite struct StagedOutputMessageTests {
    @Test func aConversionErrorAfterFuseNamesTheBaseFolder() throws {
        let dir = NSTemporaryDirectory() + "claire-messages-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir + "/base", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: fixture("merge/base/model.safetensors"), toPath: dir + "/base/model.safetensors")
        let config = try String(contentsOfFile: fixture("merge/base/config.json"), encoding: .utf8)
            .replacingOccurrences(of: "LlamaForCausalLM", with: "GPT2LMHeadModel")
        try config.write(toFile: dir + "/base/config.json", atomically: false, encoding: .utf8)
        let result = try runTool(["fuse", fixture("merge/sft"), "--base", dir + "/base", "--format", "gguf", "-o", dir + "/m.gguf"])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: \(dir)/base/config.json: architecture 'GPT2LMHeadModel' is not supported"), "\(result.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["base"])
    }
}
