import Foundation
import Testing

@Suite struct DeltaCommandTests {
    private func scratchFolder() -> String {
        let path = NSTemporaryDirectory() + "claire-delta-cli-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func extractThenApplyReproducesTheFineTune() throws {
        let dir = scratchFolder()
        let extract = try runTool(["delta", "extract", fixture("merge/dpo"), "--base", fixture("merge/base"), "-o", dir + "/d.delta"])
        #expect(extract.status == 0)
        #expect(extract.out.contains("wrote \(dir)/d.delta: 30 tensors"))
        let apply = try runTool(["delta", "apply", dir + "/d.delta", "--base", fixture("merge/base"), "-o", dir + "/out"])
        #expect(apply.status == 0)
        #expect(FileManager.default.contents(atPath: dir + "/out/model.safetensors")
                == FileManager.default.contents(atPath: fixture("merge/dpo/model.safetensors")))
    }

    @Test func corruptDeltaIsOneLineErrorAndLeavesNothing() throws {
        let dir = scratchFolder()
        _ = try runTool(["delta", "extract", fixture("merge/dpo"), "--base", fixture("merge/base"), "-o", dir + "/d.delta"])
        var bytes = [UInt8](FileManager.default.contents(atPath: dir + "/d.delta")!)
        bytes[20] ^= 0xff
        FileManager.default.createFile(atPath: dir + "/d.delta", contents: Data(bytes))
        let apply = try runTool(["delta", "apply", dir + "/d.delta", "--base", fixture("merge/base"), "-o", dir + "/out"])
        #expect(apply.status == 1)
        #expect(apply.err.hasPrefix("error: \(dir)/d.delta: tensor '"))
        #expect(apply.err.hasSuffix("data checksum does not match (file is corrupt)\n"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["d.delta"])
    }

    @Test func wrongBaseIsRefused() throws {
        let dir = scratchFolder()
        _ = try runTool(["delta", "extract", fixture("merge/dpo"), "--base", fixture("merge/base"), "-o", dir + "/d.delta"])
        let apply = try runTool(["delta", "apply", dir + "/d.delta", "--base", fixture("merge/sft"), "-o", dir + "/out"])
        #expect(apply.status == 1)
        #expect(apply.err.contains("the base differs from the one this delta was extracted against"))
    }

    @Test func outputEqualToAnInputIsRefused() throws {
        let result = try runTool(["delta", "extract", fixture("merge/dpo"), "--base", fixture("merge/base"), "-o", fixture("merge/base")])
        #expect(result.status == 1)
        #expect(result.err.contains("is an input"))
    }

    @Test func densityOutOfRangeIsAUsageError() throws {
        let result = try runTool(["delta", "extract", "a", "--base", "b", "-o", "c", "--density", "1.5"])
        #expect(result.status == 64)
    }
}

@Suite struct DeltaFormatStabilityTests {
    /// fixtures/delta/dpo.delta was written by an earlier build: the format must still read.
    @Test func committedDeltaStillRebuildsItsFineTune() throws {
        let dir = NSTemporaryDirectory() + "claire-delta-fixture-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let apply = try runTool(["delta", "apply", fixture("delta/dpo.delta"), "--base", fixture("merge/base"), "-o", dir + "/out"])
        #expect(apply.status == 0, "\(apply.err)")
        #expect(FileManager.default.contents(atPath: dir + "/out/model.safetensors")
                == FileManager.default.contents(atPath: fixture("merge/dpo/model.safetensors")))
    }
}
