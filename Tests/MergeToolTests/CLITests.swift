import Foundation
import Testing

/// Runs the built `merge-tool` with `arguments`; returns exit status, stdout and stderr.
func runTool(_ arguments: [String]) throws -> (status: Int32, out: String, err: String) {
    let process = Process()
    process.executableURL = toolURL()
    process.arguments = arguments
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}

/// The `merge-tool` binary built beside the test bundle.
func toolURL() -> URL {
    var dir = Bundle.main.bundleURL
    for _ in 0..<3 {
        let candidate = dir.appendingPathComponent("merge-tool")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    return Bundle.main.bundleURL.appendingPathComponent("merge-tool")
}

/// Path of a file under the package's fixtures/ folder.
func fixture(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures").appendingPathComponent(relative).path
}

/// A new file under the temporary folder holding `bytes`.
func scratchFile(_ bytes: [UInt8], name: String) -> String {
    let folder = NSTemporaryDirectory() + "claire-cli-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let path = folder + "/" + name
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

@Suite struct InspectCommandTests {
    @Test func reportsTotalsForAShardedFolder() throws {
        let result = try runTool(["inspect", fixture("safetensors/tiny-llama-sharded")])
        #expect(result.status == 0)
        #expect(result.err.isEmpty)
        #expect(result.out.contains("format      safetensors, 3 files"))
        #expect(result.out.contains("tensors     21"))
        #expect(result.out.contains("parameters  5712 (5.7 k)"))
        #expect(result.out.contains("bytes       11424 (11.4 kB)"))
        #expect(result.out.contains("… 9 more (use --tensors to list all)"))
    }

    @Test func listsEveryTensorOnRequest() throws {
        let result = try runTool(["inspect", "--tensors", fixture("safetensors/tiny-llama")])
        #expect(result.status == 0)
        #expect(result.out.contains("model.layers.1.self_attn.v_proj.weight"))
        #expect(!result.out.contains("more (use --tensors"))
    }

    @Test func jsonReportCarriesEveryFigure() throws {
        let result = try runTool(["inspect", "--json", fixture("safetensors/shapes.safetensors")])
        #expect(result.status == 0)
        let json = try #require(JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
        #expect(json["format"] as? String == "safetensors")
        #expect(json["tensor_count"] as? Int == 3)
        #expect(json["parameter_count"] as? Int == 25)
        #expect(json["tensor_bytes"] as? Int == 100)
        let tensors = try #require(json["tensors"] as? [[String: Any]])
        let scalar = try #require(tensors.first { $0["name"] as? String == "scalar" })
        #expect(scalar["shape"] as? [Int] == [])
        #expect(scalar["dtype"] as? String == "F32")
        #expect((json["dtypes"] as? [String: Any])?.keys.sorted() == ["F32"])
    }

    @Test func malformedFileGivesOneLineErrorAndStatusOne() throws {
        let path = scratchFile([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x7b], name: "evil.safetensors")
        let result = try runTool(["inspect", path])
        #expect(result.status == 1)
        #expect(result.out.isEmpty)
        #expect(result.err == "error: \(path): header length 9223372036854775807 exceeds the 100000000-byte limit\n")
    }

    @Test func missingPathIsAnError() throws {
        let result = try runTool(["inspect", "/nonexistent/model"])
        #expect(result.status == 1)
        #expect(result.err == "error: /nonexistent/model: No such file or directory\n")
    }

    @Test func missingArgumentIsAUsageError() throws {
        let result = try runTool(["inspect"])
        #expect(result.status == 64)
    }
}

@Suite struct SymlinkPolicyTests {
    @Test func shardLinkedFromOutsideIsRefusedUnlessFollowed() throws {
        let root = NSTemporaryDirectory() + "claire-links-" + UUID().uuidString
        let folder = root + "/model"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama/model.safetensors"), toPath: root + "/outside.safetensors")
        try FileManager.default.createSymbolicLink(atPath: folder + "/model.safetensors", withDestinationPath: root + "/outside.safetensors")
        let refused = try runTool(["inspect", folder])
        #expect(refused.status == 1)
        #expect(refused.err == "error: \(folder)/model.safetensors: shard 'model.safetensors' is a link to a file outside the model folder (--follow-symlinks allows it)\n")
        let followed = try runTool(["inspect", "--follow-symlinks", folder])
        #expect(followed.status == 0)
        #expect(followed.out.contains("tensors     21"))
    }
}

@Suite struct ConvertCommandTests {
    @Test func missingInputAndSingleFileInputAreNamed() throws {
        let missing = try runTool(["convert", "/nonexistent/model", NSTemporaryDirectory() + "never.gguf"])
        #expect(missing.status == 1)
        #expect(missing.err == "error: /nonexistent/model: No such file or directory\n")
        let file = fixture("safetensors/shapes.safetensors")
        let single = try runTool(["convert", file, NSTemporaryDirectory() + "never.gguf"])
        #expect(single.status == 1)
        #expect(single.err == "error: \(file): conversion to GGUF needs a model folder (config.json, weights, tokenizer files)\n")
    }

    @Test func unknownTypeIsAUsageError() throws {
        let result = try runTool(["convert", "a", "b.gguf", "--type", "q3_k"])
        #expect(result.status == 64)
        #expect(result.err.hasPrefix("Error: The value 'q3_k' is invalid for '--type <type>': "
                                     + "choose one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k\n"))
    }
}
