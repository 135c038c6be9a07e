import Foundation
import Testing
@testable import Checkpoints

/// Following links that leave a model folder is chosen per call: a call that
/// allows it leaves every later call with the default refusal.
@Suite struct LinkPolicyTests {
    /// A copy of tiny-llama whose `name` is a link to a copy outside the folder.
    private func folderLinking(_ name: String) throws -> String {
        let dir = temporaryFolder()
        let folder = dir + "/model"
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: folder)
        try FileManager.default.moveItem(atPath: folder + "/" + name, toPath: dir + "/elsewhere-" + name)
        try FileManager.default.createSymbolicLink(atPath: folder + "/" + name, withDestinationPath: dir + "/elsewhere-" + name)
        return folder
    }

    @Test func checkpointOpenFollowsAnOutsideShardOnlyWhenAsked() throws {
        let folder = try folderLinking("model.safetensors")
        let refusal = CheckpointError.folder(file: folder + "/model.safetensors", problem: .symlinkOutside(shard: "model.safetensors"))
        #expect(throws: refusal) { _ = try Checkpoint.open(folder) }
        let expected = try Checkpoint.open(fixture("safetensors/tiny-llama")).tensors.count
        #expect(try Checkpoint.open(folder, followSymlinks: true).tensors.count == expected)
        #expect(throws: refusal) { _ = try Checkpoint.open(folder) }
    }

    @Test func sideFileFollowsAnOutsideLinkOnlyWhenAsked() throws {
        let folder = try folderLinking("config.json")
        #expect(throws: CheckpointError.self) { _ = try HFFolder.sideFile("config.json", in: folder) }
        #expect(try HFFolder.sideFile("config.json", in: folder, followSymlinks: true) == folder + "/config.json")
        #expect(throws: CheckpointError.self) { _ = try HFFolder.sideFile("config.json", in: folder) }
    }

    @Test func retypeCopiesAnOutsideSideFileOnlyWhenAsked() throws {
        let folder = try folderLinking("config.json")
        let out = temporaryFolder()
        #expect(throws: CheckpointError.self) {
            _ = try FormatConversion.retype(input: folder, output: out + "/refused", dtype: nil, workers: 1)
        }
        #expect(!FileManager.default.fileExists(atPath: out + "/refused"))
        _ = try FormatConversion.retype(input: folder, output: out + "/followed", dtype: nil, followSymlinks: true, workers: 1)
        let copied = FileManager.default.contents(atPath: out + "/followed/config.json")
        #expect(copied != nil && copied == FileManager.default.contents(atPath: fixture("safetensors/tiny-llama/config.json")))
        // The copy is a file, not the link.
        var info = stat()
        #expect(lstat(out + "/followed/config.json", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG)
    }
}
