import Foundation
import Testing

/// Failures in the middle of writing: nothing partial may remain, inputs stay unchanged.
@Suite struct FaultInjectionTests {
    private func scratchFolder() -> String {
        let path = NSTemporaryDirectory() + "claire-faults-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }


    @Test func writeFailingPastTheFileSizeLimitLeavesNothing() throws {
        let dir = scratchFolder()
        let input = largeF32Input(in: dir, megabytes: 2)
        let before = FileManager.default.contents(atPath: input)
        // bash's ulimit -f counts 1024-byte blocks: the 1 MB output cannot be written.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "ulimit -f 256; exec \"$0\" convert \"$1\" \"$2\" --dtype bf16", toolURL().path, input, dir + "/out.safetensors"]
        let err = Pipe()
        process.standardError = err
        process.standardOutput = Pipe()
        try process.run()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 1)
        #expect(message.hasPrefix("error: ") && message.contains("File too large"))
        #expect(message.filter { $0 == "\n" }.count == 1, "one line: \(message)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["in.safetensors"])
        #expect(FileManager.default.contents(atPath: input) == before)
    }

    @Test func terminationSignalRemovesThePartialOutput() throws {
        let dir = scratchFolder()
        let input = largeF32Input(in: dir, megabytes: 100)
        let process = Process()
        process.executableURL = toolURL()
        process.arguments = ["convert", input, dir + "/out", "--dtype", "f16", "--threads", "1"]
        process.standardOutput = Pipe()
        process.standardError = Pipe()
        try process.run()
        // Wait for the temporary to appear, then interrupt the run.
        var sawTemporary = false
        for _ in 0..<20_000 where process.isRunning {
            if try FileManager.default.contentsOfDirectory(atPath: dir).contains(where: { $0.hasPrefix(".out.partial-") }) {
                sawTemporary = true
                break
            }
            usleep(100)
        }
        #expect(sawTemporary, "the run finished before it could be interrupted")
        process.terminate()
        process.waitUntilExit()
        // The handler removes the temporary and exits with 128 + SIGTERM.
        #expect(process.terminationReason == .exit && process.terminationStatus == 128 + SIGTERM,
                "status \(process.terminationStatus)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["in.safetensors"])
    }

    @Test func killedRunsTemporaryIsSweptByTheNextRun() throws {
        let dir = scratchFolder()
        let input = largeF32Input(in: dir, megabytes: 1)
        // A temporary as a run killed with SIGKILL leaves it (PIDs stay below 2^22 on Linux).
        try FileManager.default.createDirectory(atPath: dir + "/.out.partial-4194305-x", withIntermediateDirectories: false)
        let result = try runTool(["convert", input, dir + "/out", "--dtype", "bf16"])
        #expect(result.status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["in.safetensors", "out"])
    }
}

/// A single-tensor F32 safetensors file `in.safetensors` of `megabytes` MB in
/// `folder` (values 0, 1, 2, … 999, repeated); its tensor is named `w`.
func largeF32Input(in folder: String, megabytes: Int) -> String {
    let count = megabytes * 1_000_000 / 4
    let header = "{\"w\":{\"dtype\":\"F32\",\"shape\":[\(count)],\"data_offsets\":[0,\(count * 4)]}}"
    var padded = Array(header.utf8)
    padded += Array(repeating: UInt8(ascii: " "), count: (8 - padded.count % 8) % 8)
    var bytes: [UInt8] = []
    withUnsafeBytes(of: UInt64(padded.count).littleEndian) { bytes.append(contentsOf: $0) }
    bytes += padded
    let path = folder + "/in.safetensors"
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    let handle = FileHandle(forWritingAtPath: path)!
    handle.seekToEndOfFile()
    let block = Data((0..<250_000).map { Float($0 % 1000) }.withUnsafeBytes { Array($0) })
    for _ in 0..<megabytes { handle.write(block) }
    handle.closeFile()
    return path
}
