import ArgumentParser
import Foundation
import Testing
@testable import MergeTool

struct TrainCommandTests {
    static let tinyConfig = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures/training/tiny-config.json").path

    func temporaryFolder() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("claire-cli-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func usageErrorCode(_ arguments: [String]) -> Int32? {
        do {
            _ = try MergeTool.parseAsRoot(arguments)
            return nil
        } catch {
            return MergeTool.exitCode(for: error).rawValue
        }
    }

    @Test func fineTuningWithoutBaseIsAUsageError() {
        #expect(usageErrorCode(["train", "sft", "-o", "out"]) == 64)
    }

    @Test func configTogetherWithBaseIsAUsageError() {
        #expect(usageErrorCode(["train", "pretrain", "--base", "b", "--config", "c.json", "-o", "out"]) == 64)
    }

    @Test func unknownObjectiveIsAUsageError() {
        #expect(usageErrorCode(["train", "ppo", "--base", "b", "-o", "out"]) == 64)
    }

    @Test func negativeL1IsAUsageError() {
        #expect(usageErrorCode(["train", "sft", "--base", "b", "--l1", "-1", "-o", "out"]) == 64)
    }

    @Test func pretrainThenSFTThenEvalRunEndToEnd() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var pretrain = try MergeTool.parseAsRoot(["train", "pretrain", "--config", Self.tinyConfig, "--steps", "2",
                                                  "--batch-size", "2", "-o", folder + "/base"])
        try pretrain.run()
        var sft = try MergeTool.parseAsRoot(["train", "sft", "--base", folder + "/base", "--steps", "2", "--batch-size", "2",
                                             "--l1", "0.5", "-o", folder + "/sft"])
        try sft.run()
        var eval = try MergeTool.parseAsRoot(["eval", folder + "/sft", "--base", folder + "/base", "--json"])
        try eval.run()
        #expect(FileManager.default.fileExists(atPath: folder + "/sft/model.safetensors"))
    }

    @Test func malformedDataFailsWithoutWritingTheOutput() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var pretrain = try MergeTool.parseAsRoot(["train", "pretrain", "--config", Self.tinyConfig, "--steps", "1",
                                                  "-o", folder + "/base"])
        try pretrain.run()
        let data = folder + "/bad.jsonl"
        _ = FileManager.default.createFile(atPath: data, contents: Data("{\"prompt\":\"a\"}\n".utf8))
        var sft = try MergeTool.parseAsRoot(["train", "sft", "--base", folder + "/base", "--data", data, "-o", folder + "/sft"])
        #expect(throws: ExitCode(1)) { try sft.run() }
        #expect(!FileManager.default.fileExists(atPath: folder + "/sft"))
    }

    @Test func existingOutputIsRefusedWithoutForce() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var first = try MergeTool.parseAsRoot(["train", "pretrain", "--config", Self.tinyConfig, "--steps", "1", "-o", folder + "/m"])
        try first.run()
        var second = try MergeTool.parseAsRoot(["train", "pretrain", "--config", Self.tinyConfig, "--steps", "1", "-o", folder + "/m"])
        #expect(throws: ExitCode(1)) { try second.run() }
        var forced = try MergeTool.parseAsRoot(["train", "pretrain", "--config", Self.tinyConfig, "--steps", "1",
                                                "--force", "-o", folder + "/m"])
        try forced.run()
    }

    @Test func divergingRunFailsButKeepsTheLastGoodCheckpoint() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var run = try MergeTool.parseAsRoot(["train", "pretrain", "--config", Self.tinyConfig, "--steps", "40", "--lr", "1e6",
                                             "--clip", "1e30", "-o", folder + "/m"])
        #expect(throws: ExitCode(1)) { try run.run() }
        #expect(FileManager.default.fileExists(atPath: folder + "/m/model.safetensors"))
    }
}
