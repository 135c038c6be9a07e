import Foundation
import Testing

/// `fuse --shard I/N` and `--shard finish`: a merge written by several processes
/// into one folder ends byte-identical to the merge written by one.
@Suite struct ShardedFuseCommandTests {
    private static let base = fixture("merge/base"), sft = fixture("merge/sft"), dpo = fixture("merge/dpo")
    /// 30 tensors in 18 shards of at most 2 KB.
    private static let merge = [sft, dpo, "--base", base, "--method", "dare_ties", "--density", "0.5", "--seed", "4",
                                "--max-shard-size", "2KB"]

    private func scratch() -> String {
        let folder = NSTemporaryDirectory() + "claire-shard-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    private func fuse(_ out: String, _ extra: [String], merge: [String] = ShardedFuseCommandTests.merge) throws
        -> (status: Int32, out: String, err: String)
    {
        try runTool(["fuse"] + merge + ["-o", out] + extra)
    }

    /// Every file of `a` and `b` (hidden ones included), by name and contents.
    private func sameFiles(_ a: String, _ b: String) throws -> Bool {
        let fm = FileManager.default
        let names = try fm.contentsOfDirectory(atPath: a).sorted()
        guard names == (try fm.contentsOfDirectory(atPath: b).sorted()) else { return false }
        return names.allSatisfy { fm.contents(atPath: a + "/" + $0) == fm.contents(atPath: b + "/" + $0) }
    }

    @Test(arguments: [1, 2, 3, 32])
    func slicesThenFinishEqualTheOneProcessMerge(count: Int) throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(try fuse(folder + "/plain", []).status == 0)
        // Slices in reverse order, the last one twice: order and repetition change nothing.
        for index in (0..<count).reversed() + [0] {
            let slice = try fuse(folder + "/sliced", ["--shard", "\(index)/\(count)", "--threads", "\(1 + index % 2)"])
            #expect(slice.status == 0, "\(slice.err)")
        }
        let manifests = try FileManager.default.contentsOfDirectory(atPath: folder + "/sliced").filter { $0.hasPrefix(".slice-") }
        #expect(manifests.count == count)
        #expect(!FileManager.default.fileExists(atPath: folder + "/sliced/model.safetensors.index.json"))
        let finish = try fuse(folder + "/sliced", ["--shard", "finish"])
        #expect(finish.status == 0, "\(finish.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/plain").contains("model-00018-of-00018.safetensors"))
        #expect(try sameFiles(folder + "/plain", folder + "/sliced"))
    }

    @Test func moreSlicesThanShardsWithOneFileOutput() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let single = Array(Self.merge.dropLast(2))
        #expect(try fuse(folder + "/plain", [], merge: single).status == 0)
        for index in 0..<4 { #expect(try fuse(folder + "/sliced", ["--shard", "\(index)/4"], merge: single).status == 0) }
        #expect(try fuse(folder + "/sliced", ["--shard", "finish"], merge: single).status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/plain").contains("model.safetensors"))
        #expect(try sameFiles(folder + "/plain", folder + "/sliced"))
    }

    @Test func finishRefusesAMissingSlice() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/sliced"
        let none = try fuse(out, ["--shard", "finish"])
        #expect(none.status == 1)
        #expect(none.err == "error: \(out): no slice has finished (no .slice-I-of-N manifest)\n")
        for index in [0, 2] { #expect(try fuse(out, ["--shard", "\(index)/3"]).status == 0) }
        let finish = try fuse(out, ["--shard", "finish"])
        #expect(finish.status == 1)
        #expect(finish.err == "error: \(out): slice 1 of 3 has not finished (no .slice-1-of-3)\n")
        #expect(!FileManager.default.fileExists(atPath: out + "/config.json"))
        #expect(!FileManager.default.fileExists(atPath: out + "/model.safetensors.index.json"))
        // The missing slice run, finish goes through.
        #expect(try fuse(out, ["--shard", "1/3"]).status == 0)
        #expect(try fuse(out, ["--shard", "finish"]).status == 0)
    }

    @Test func finishRefusesASliceOfAnotherMerge() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/sliced"
        #expect(try fuse(out, ["--shard", "0/2"]).status == 0)
        // Same layout, other density: the shards' contents differ.
        var other = Self.merge
        other[other.firstIndex(of: "0.5")!] = "0.3"
        #expect(try fuse(out, ["--shard", "1/2"], merge: other).status == 0)
        let finish = try fuse(out, ["--shard", "finish"])
        #expect(finish.status == 1)
        #expect(finish.err == "error: \(out)/.slice-1-of-2: was written for a different merge (inputs or options differ); "
                + "run slice 1 of 2 again\n")
        #expect(!FileManager.default.fileExists(atPath: out + "/config.json"))
    }

    @Test func finishRefusesAShardOfTheWrongSize() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/sliced"
        for index in 0..<2 { #expect(try fuse(out, ["--shard", "\(index)/2"]).status == 0) }
        let shard = out + "/model-00007-of-00018.safetensors"
        let handle = try #require(FileHandle(forUpdatingAtPath: shard))
        try handle.truncate(atOffset: 100)
        try handle.close()
        let finish = try fuse(out, ["--shard", "finish"])
        #expect(finish.status == 1)
        #expect(finish.err.hasPrefix("error: \(shard): is missing or not "))
        #expect(finish.err.hasSuffix(" bytes; run slice 0 of 2 again\n") || finish.err.hasSuffix(" bytes; run slice 1 of 2 again\n"))
        #expect(finish.err.split(separator: "\n").count == 1)
    }

    /// scripts/shard_local.sh runs the slices as concurrent processes, then finish.
    @Test func localScriptRunsTheSlicesThenFinish() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(try fuse(folder + "/plain", []).status == 0)
        let script = fixture("../scripts/shard_local.sh")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script, "3"] + Self.merge + ["-o", folder + "/sliced"]
        process.environment = ProcessInfo.processInfo.environment.merging(["MERGE_TOOL": toolURL().path]) { $1 }
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(try sameFiles(folder + "/plain", folder + "/sliced"))
    }

    /// A slice that fails while writing (here past the file size limit) leaves no
    /// shard, temporary or manifest behind.
    @Test func aFailedSliceLeavesNothing() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/sliced"
        let result = try runTool(["fuse"] + Self.merge + ["-o", out, "--shard", "0/2"], within: 300, limits: "ulimit -f 1")
        #expect(!result.timedOut)
        #expect(result.status == 1, "\(result.err)")
        #expect(result.err.hasPrefix("error: ") && result.err.contains("File too large"), "\(result.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out) == [])
        #expect(try fuse(out, ["--shard", "1/2"]).status == 0)
        let finish = try fuse(out, ["--shard", "finish"])
        #expect(finish.err == "error: \(out): slice 0 of 2 has not finished (no .slice-0-of-2)\n")
    }

    @Test func usageErrors() throws {
        let out = scratch()
        defer { try? FileManager.default.removeItem(atPath: out) }
        for value in ["3/3", "-1/2", "1/0", "a/b", "1", "done"] {
            let result = try fuse(out + "/x", ["--shard=\(value)"])
            #expect(result.status == 64)
            #expect(result.err.contains("--shard '\(value)' is not I/N with 0 <= I < N, or finish"))
        }
        for value in ["0/2", "finish"] {
            let result = try fuse(out + "/x.gguf", ["--shard", value, "--format", "gguf"])
            #expect(result.status == 64)
            #expect(result.err.contains("--shard writes a model folder: it cannot be used with --format gguf"))
        }
        #expect(!FileManager.default.fileExists(atPath: out + "/x"))
    }
}
