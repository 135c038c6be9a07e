import Foundation
import Testing

/// A new folder under the temporary folder.
private func scratchFolder() throws -> String {
    let folder = NSTemporaryDirectory() + "claire-messages-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder
}

@Suite struct CountAndParameterOptionTests {
    @Test(arguments: ["100000", "257", "0", "-1"])
    func anUnreasonableThreadCountIsAUsageError(threads: String) throws {
        let base = fixture("merge/base")
        for command in [["fuse", fixture("merge/sft"), "--base", base, "-o", NSTemporaryDirectory() + "never-" + UUID().uuidString],
                        ["convert", base, NSTemporaryDirectory() + "never-" + UUID().uuidString + ".gguf"]] {
            let result = try runTool(command + ["--threads=\(threads)"])
            #expect(result.status == 64)
            #expect(result.err.contains("--threads must lie between 1 and 256"))
        }
    }

    @Test(arguments: [["--weights", "1e39"], ["--lambda", "1e39"], ["--method", "slerp", "--t", "1e39"],
                      ["--method", "breadcrumbs", "--gamma", "1e39"], ["--weights", "1,1e39"], ["--density=-1"]])
    func parameterFlagsOutsideTheirRangeAreUsageErrors(flags: [String]) throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let result = try runTool(["fuse", fixture("merge/sft"), fixture("merge/dpo"), "--base", fixture("merge/base"), "-o", dir + "/out"] + flags)
        #expect(result.status == 64, "\(result.err)")
        #expect(result.err.contains("lies outside") || result.err.contains("is negative"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func linearWeightsSummingToZeroAreRefused() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let result = try runTool(["fuse", fixture("merge/sft"), fixture("merge/dpo"), "--method", "linear", "--weights", "1,-1", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err.contains("sum to 0, and normalizing divides by that sum"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty)
    }

    @Test func recipeParametersOutsideTheirRangeAreRefused() throws {
        let dir = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let recipe = """
            merge_method: task_arithmetic
            base_model: \(fixture("merge/base"))
            models:
              - model: \(fixture("merge/sft"))
                parameters:
                  weight:
                    - filter: mlp
                      value: [1, 1e39]
                    - value: 1
            """
        try recipe.write(toFile: dir + "/r.yml", atomically: false, encoding: .utf8)
        let result = try runTool(["fuse", "--config", dir + "/r.yml", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: parameter 'weight': 1e+39 lies outside [-1000000, 1000000]\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["r.yml"])
    }
}
