import Foundation
import Testing
@testable import Checkpoints

@Suite struct HFFolderTests {
    @Test func shardedAndSingleFileFoldersHoldTheSameTensors() throws {
        let single = try Checkpoint.open(fixture("safetensors/tiny-llama"))
        let sharded = try Checkpoint.open(fixture("safetensors/tiny-llama-sharded"))
        #expect(sharded.files.count == 3)
        #expect(Set(single.tensors.map(\.name)) == Set(sharded.tensors.map(\.name)))
        for t in single.tensors {
            let other = try #require(sharded.tensor(named: t.name))
            #expect(other.shape == t.shape && other.dtype == t.dtype)
            #expect(Array(sharded.data(of: other)) == Array(single.data(of: t)))
        }
    }

    /// Copies the sharded fixture to a scratch folder and applies `edit` to it.
    private func brokenCopy(_ edit: (String) throws -> Void) throws -> String {
        let folder = temporaryFolder() + "/model"
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama-sharded"), toPath: folder)
        try edit(folder)
        return folder
    }

    private func rewriteIndex(_ folder: String, _ change: (inout String) -> Void) throws {
        let path = folder + "/" + HFFolder.indexFileName
        var text = try String(contentsOfFile: path, encoding: .utf8)
        change(&text)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    }

    private func problem(_ folder: String) -> FolderProblem? {
        do {
            _ = try Checkpoint.open(folder)
            return nil
        } catch {
            if case .folder(_, let p) = error { return p }
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test(arguments: ["../model-00001-of-00003.safetensors", "/etc/passwd", "sub/model.safetensors", ".."])
    func indexEntriesMayNotLeaveTheFolder(shard: String) throws {
        let folder = try brokenCopy { f in
            try rewriteIndex(f) { $0 = $0.replacingOccurrences(of: "\"model-00003-of-00003.safetensors\"", with: "\"\(shard)\"") }
        }
        #expect(problem(folder) == .shardEscapesFolder(shard: shard))
    }

    @Test func missingShard() throws {
        let folder = try brokenCopy { try FileManager.default.removeItem(atPath: $0 + "/model-00002-of-00003.safetensors") }
        #expect(problem(folder) == .missingShard(shard: "model-00002-of-00003.safetensors"))
    }

    @Test func indexNamingATensorItsShardLacks() throws {
        let folder = try brokenCopy { f in
            try rewriteIndex(f) {
                $0 = $0.replacingOccurrences(of: "\"weight_map\": {", with: "\"weight_map\": {\n    \"ghost.weight\": \"model-00001-of-00003.safetensors\",")
            }
        }
        #expect(problem(folder) == .tensorNotInShard(tensor: "ghost.weight", shard: "model-00001-of-00003.safetensors"))
    }

    @Test func shardHoldingATensorTheIndexPlacesElsewhere() throws {
        let folder = try brokenCopy { f in
            try rewriteIndex(f) {
                $0 = $0.replacingOccurrences(
                    of: "\"model.norm.weight\": \"model-00003-of-00003.safetensors\"",
                    with: "\"model.norm.weight\": \"model-00001-of-00003.safetensors\"")
            }
        }
        #expect(problem(folder) == .tensorNotInIndex(tensor: "model.norm.weight", shard: "model-00003-of-00003.safetensors"))
    }

    @Test func indexThatIsNotJSON() throws {
        let folder = try brokenCopy { f in try rewriteIndex(f) { $0 = "{" } }
        guard case .badIndex? = problem(folder) else { Issue.record("expected badIndex"); return }
    }

    @Test func folderWithoutWeights() {
        #expect(problem(temporaryFolder()) == .noWeights)
    }

    @Test func shardLinkedFromOutsideTheFolderIsRefused() throws {
        let outside = temporaryFolder() + "/elsewhere.safetensors"
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama-sharded/model-00001-of-00003.safetensors"), toPath: outside)
        let folder = try brokenCopy { f in
            let shard = f + "/model-00001-of-00003.safetensors"
            try FileManager.default.removeItem(atPath: shard)
            try FileManager.default.createSymbolicLink(atPath: shard, withDestinationPath: outside)
        }
        #expect(problem(folder) == .symlinkOutside(shard: "model-00001-of-00003.safetensors"))
        let followed = try HFFolder.open(folder, followSymlinks: true)
        #expect(followed.tensors.count == 21)
    }

    @Test func shardLinkedInsideTheFolderIsAccepted() throws {
        let folder = try brokenCopy { f in
            let shard = f + "/model-00001-of-00003.safetensors"
            try FileManager.default.moveItem(atPath: shard, toPath: f + "/real.bin")
            try FileManager.default.createSymbolicLink(atPath: shard, withDestinationPath: "real.bin")
        }
        #expect(try Checkpoint.open(folder).tensors.count == 21)
    }
}

@Suite struct HFFolderWriterTests {
    @Test func shardedOutputReadsBackAndIndexMatchesTransformersFormat() throws {
        // The single-file fixture lists tensors in name order, the order the sharded fixture was split in.
        let source = try Checkpoint.open(fixture("safetensors/tiny-llama"))
        let out = temporaryFolder() + "/merged"
        let specs = source.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let writer = try HFFolderWriter(folder: out, tensors: specs, maxShardSize: 5000)
        #expect(writer.shardNames.count == 3)
        DispatchQueue.concurrentPerform(iterations: source.tensors.count) { i in
            let t = source.tensors[source.tensors.count - 1 - i]
            try! writer.write(t.name, bytes: source.data(of: t))
        }
        try writer.copyFile(from: fixture("safetensors/tiny-llama-sharded/config.json"))
        #expect(!FileManager.default.fileExists(atPath: out), "output must not appear before commit")
        try writer.commit()
        #expect(listing(out) == ["config.json", "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                 "model-00003-of-00003.safetensors", "model.safetensors.index.json"])
        let back = try Checkpoint.open(out)
        for t in source.tensors {
            #expect(Array(back.data(of: back.tensor(named: t.name)!)) == Array(source.data(of: t)))
        }
        // Same greedy split as the Python-written fixture, so the index is the same text (plus newline).
        let ours = try String(contentsOfFile: out + "/" + HFFolder.indexFileName, encoding: .utf8)
        let theirs = try String(contentsOfFile: fixture("safetensors/tiny-llama-sharded/model.safetensors.index.json"), encoding: .utf8)
        #expect(ours == theirs + "\n")
        #expect(listing(URL(fileURLWithPath: out).deletingLastPathComponent().path) == ["merged"])
    }

    @Test func singleShardIsNamedModelSafetensors() throws {
        let out = temporaryFolder() + "/m"
        let writer = try HFFolderWriter(folder: out, tensors: [TensorSpec(name: "w", dtype: .f32, shape: [2])])
        try [Float(1), 2].withUnsafeBytes { try writer.write("w", bytes: $0) }
        try writer.commit()
        #expect(listing(out) == ["model.safetensors"])
        #expect(try Checkpoint.open(out).decode(Checkpoint.open(out).tensors[0]) == [1, 2])
    }

    @Test func unfinishedOutputLeavesNothingBehind() throws {
        let parent = temporaryFolder()
        let writer = try HFFolderWriter(folder: parent + "/m", tensors: [TensorSpec(name: "w", dtype: .f32, shape: [2]),
                                                                         TensorSpec(name: "v", dtype: .f32, shape: [1])])
        try [Float(1), 2].withUnsafeBytes { try writer.write("w", bytes: $0) }
        #expect(throws: CheckpointError.self) { try writer.commit() }
        #expect(listing(parent).isEmpty)
    }

    @Test func abandonedWriterCleansUpOnDeinit() throws {
        let parent = temporaryFolder()
        do {
            let writer = try HFFolderWriter(folder: parent + "/m", tensors: [TensorSpec(name: "w", dtype: .f32, shape: [2])])
            #expect(listing(parent).count == 1)
            _ = writer
        }
        #expect(listing(parent).isEmpty)
    }

    @Test func existingOutputIsRefusedUnlessOverwriting() throws {
        let parent = temporaryFolder()
        try FileManager.default.createDirectory(atPath: parent + "/m", withIntermediateDirectories: false)
        #expect(throws: CheckpointError.self) {
            _ = try HFFolderWriter(folder: parent + "/m", tensors: [])
        }
        let writer = try HFFolderWriter(folder: parent + "/m", tensors: [TensorSpec(name: "w", dtype: .f32, shape: [1])], overwrite: true)
        try [Float(3)].withUnsafeBytes { try writer.write("w", bytes: $0) }
        try writer.commit()
        #expect(listing(parent) == ["m"])
        #expect(listing(parent + "/m") == ["model.safetensors"])
    }

    @Test func writerRefusesWrongSizesUnknownNamesAndRepeats() throws {
        let writer = try SafetensorsFileWriter(path: temporaryFolder() + "/x.safetensors",
                                               tensors: [TensorSpec(name: "w", dtype: .f32, shape: [2])])
        #expect(throws: CheckpointError.self) { try [Float(1)].withUnsafeBytes { try writer.write("w", bytes: $0) } }
        #expect(throws: CheckpointError.self) { try [Float(1), 2].withUnsafeBytes { try writer.write("v", bytes: $0) } }
        try [Float(1), 2].withUnsafeBytes { try writer.write("w", bytes: $0) }
        #expect(throws: CheckpointError.self) { try [Float(1), 2].withUnsafeBytes { try writer.write("w", bytes: $0) } }
    }

    @Test(arguments: [("5GB", 5_000_000_000), ("500MB", 500_000_000), ("2GiB", 2 << 30), ("1000", 1000), ("1.5G", 1_500_000_000)])
    func byteSizesParse(text: String, bytes: Int) {
        #expect(parseByteSize(text) == bytes)
    }

    @Test(arguments: ["", "GB", "-5GB", "five", "0"])
    func badByteSizesAreRejected(text: String) {
        #expect(parseByteSize(text) == nil)
    }
}

@Suite struct OutputPathTests {
    @Test func temporaryOfADeadProcessIsSweptAway() throws {
        let parent = temporaryFolder()
        // PIDs are below 2^22 on Linux, so this one cannot be running.
        let stale = parent + "/.out.partial-4194305-abc"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: false)
        let live = parent + "/.out.partial-\(getpid())-xyz"
        try FileManager.default.createDirectory(atPath: live, withIntermediateDirectories: false)
        let output = try OutputPath(destination: parent + "/out", isDirectory: true, overwrite: false)
        #expect(!FileManager.default.fileExists(atPath: stale))
        #expect(FileManager.default.fileExists(atPath: live))
        output.abort()
    }

    @Test func missingParentFolderIsAnError() {
        #expect(throws: CheckpointError.self) {
            _ = try OutputPath(destination: "/nonexistent-parent/out", isDirectory: false, overwrite: false)
        }
    }
}

@Suite struct SideFileTests {
    @Test func linkedSideFileIsCopiedAsContents() throws {
        let dir = temporaryFolder()
        try Data("{\"a\": 1}".utf8).write(to: URL(fileURLWithPath: dir + "/blob"))
        try FileManager.default.createSymbolicLink(atPath: dir + "/config.json", withDestinationPath: dir + "/blob")
        let writer = try HFFolderWriter(folder: dir + "/out", tensors: [])
        try writer.copyFile(from: dir + "/config.json")
        try writer.commit()
        var info = stat()
        #expect(lstat(dir + "/out/config.json", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG)
        #expect(FileManager.default.contents(atPath: dir + "/out/config.json") == Data("{\"a\": 1}".utf8))
    }
}
