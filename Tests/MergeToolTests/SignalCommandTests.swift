import Foundation
import Testing

/// Signals, resource limits and inputs changing under a run: a clean error, nothing partial left.
@Suite struct SignalCommandTests {
    private func scratchFolder() -> String {
        let path = NSTemporaryDirectory() + "claire-signals-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Starts `merge-tool` with `arguments` and waits until `ready` holds (or the run ends).
    private func start(_ arguments: [String], until ready: (Process) throws -> Bool) throws -> (Process, Pipe, Bool) {
        let process = Process()
        process.executableURL = toolURL()
        process.arguments = arguments
        let err = Pipe()
        process.standardOutput = Pipe()
        process.standardError = err
        try process.run()
        let deadline = Date().addingTimeInterval(120)
        while process.isRunning && Date() < deadline {
            if try ready(process) { return (process, err, true) }
            usleep(200)
        }
        return (process, err, false)
    }

    @Test func trainRemovesItsTemporaryOnTermination() throws {
        let dir = scratchFolder()
        let (process, _, ready) = try start(["train", "pretrain", "--steps", "100000", "-o", dir + "/out"]) { _ in
            try FileManager.default.contentsOfDirectory(atPath: dir).contains { $0.hasPrefix(".out.partial-") }
        }
        #expect(ready, "the run ended before it could be interrupted")
        process.terminate()
        let deadline = Date().addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            Issue.record("SIGTERM did not end the run")
        }
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 128 + SIGTERM,
                "status \(process.terminationStatus)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == [])
    }

    @Test func trainPastTheFileSizeLimitFailsCleanly() throws {
        let dir = scratchFolder()
        // bash's ulimit -f counts 1024-byte blocks; the model's weights are over 1 MB.
        let result = try runTool(["train", "pretrain", "--steps", "1", "-o", dir + "/out"], within: 300, limits: "ulimit -f 1024")
        #expect(!result.timedOut)
        #expect(result.status == 1, "\(result.err)")
        #expect(result.err.hasPrefix("error: ") && result.err.contains("File too large"), "\(result.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == [])
    }

    /// Runs the tool with `arguments`, truncates `input` once the tool has opened it,
    /// and expects one line naming the file, status 1, and only `remaining` left in `dir`.
    private func expectTruncationReported(_ arguments: [String], input: String, dir: String, remaining: [String]) throws {
        let (process, err, ready) = try start(arguments) { process in
            let maps = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/maps", encoding: .utf8)) ?? ""
            return maps.contains(input)
        }
        #expect(ready, "the run ended before the input could be truncated")
        #expect(truncate(input, 0) == 0)
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 1, "status \(process.terminationStatus)")
        #expect(message == "error: \(input): changed size while being read\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == remaining)
    }

    @Test func anInputTruncatedWhileMappedIsReportedAsAnError() throws {
        let dir = scratchFolder()
        // One 100 MB F32 tensor, so the conversion is still reading when the file shrinks.
        let input = largeF32Input(in: dir, megabytes: 100)
        try expectTruncationReported(["convert", input, dir + "/out", "--dtype", "f16", "--threads", "1"],
                                     input: input, dir: dir, remaining: ["in.safetensors"])
    }

    @Test func aModelTruncatedWhileMergedIsReportedAsAnError() throws {
        let dir = scratchFolder()
        // 100 MB F32 tensors: a TIES merge on one thread reads the model three times
        // (sample, trim search, fusion), so it is still reading when the file shrinks.
        let base = largeF32Input(in: dir, megabytes: 100)
        try FileManager.default.createDirectory(atPath: dir + "/model", withIntermediateDirectories: false)
        let model = largeF32Input(in: dir + "/model", megabytes: 100)
        try expectTruncationReported(["fuse", model, "--base", base, "--method", "ties", "--density", "0.5", "--threads", "1",
                                      "-o", dir + "/out.safetensors"],
                                     input: model, dir: dir, remaining: ["in.safetensors", "model"])
    }
}
