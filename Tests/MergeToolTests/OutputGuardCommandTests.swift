import Foundation
import Testing

/// Runs `merge-tool` (through bash when `shell` sets limits first) and kills it after
/// `seconds`; `timedOut` tells whether it had to be killed.
/// True when the tests (and so the `merge-tool` built beside them) run under AddressSanitizer.
let runsUnderAddressSanitizer = dlsym(nil, "__asan_init") != nil

func runTool(_ arguments: [String], within seconds: Double, limits: String = "")
    throws -> (status: Int32, err: String, timedOut: Bool) {
    let process = Process()
    if limits.isEmpty {
        process.executableURL = toolURL()
        process.arguments = arguments
    } else {
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", limits + "; exec \"$0\" \"$@\"", toolURL().path] + arguments
    }
    let err = Pipe()
    process.standardOutput = Pipe()
    process.standardError = err
    try process.run()
    let deadline = Date().addingTimeInterval(seconds)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    let timedOut = process.isRunning
    if timedOut { kill(process.processIdentifier, SIGKILL) }
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: errData, as: UTF8.self), timedOut)
}

/// No command may write over, into or around one of its inputs, `--force` or not.
@Suite struct OutputGuardCommandTests {
    private func scratchFolder() -> String {
        let path = NSTemporaryDirectory() + "claire-guard-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Two copies of the tiny fixture model: `base` and `ft`.
    private func models(in dir: String) throws {
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/base")
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/ft")
    }

    private func contents(_ folder: String) -> [String: Data] {
        var result: [String: Data] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
            result[name] = FileManager.default.contents(atPath: folder + "/" + name)
        }
        return result
    }

    @Test func statsPlotCannotReplaceTheBaseFolder() throws {
        let dir = scratchFolder()
        try models(in: dir)
        let before = contents(dir + "/base")
        let result = try runTool(["stats", dir + "/ft", "--base", dir + "/base", "--plot", dir + "/base/"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir)/base/: is an input (\(dir)/base); choose another output\n")
        #expect(contents(dir + "/base") == before)
    }

    @Test func statsPlotDoesNotReplaceAnotherFolder() throws {
        let dir = scratchFolder()
        try models(in: dir)
        try FileManager.default.createDirectory(atPath: dir + "/keep", withIntermediateDirectories: false)
        let result = try runTool(["stats", dir + "/ft", "--base", dir + "/base", "--plot", dir + "/keep"])
        #expect(result.status == 1)
        #expect(result.err.contains("is a folder"))
        var isDirectory: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: dir + "/keep", isDirectory: &isDirectory) && isDirectory.boolValue)
    }

    @Test func deltaApplyCannotWriteIntoTheBase() throws {
        let dir = scratchFolder()
        try models(in: dir)
        #expect(try runTool(["delta", "extract", dir + "/ft", "--base", dir + "/base", "-o", dir + "/d.delta"]).status == 0)
        let before = contents(dir + "/base")
        let result = try runTool(["delta", "apply", dir + "/d.delta", "--base", dir + "/base",
                                  "-o", dir + "/base/model.safetensors", "--force"])
        #expect(result.status == 1)
        #expect(result.err.contains("lies inside the input \(dir)/base"))
        #expect(contents(dir + "/base") == before)
    }

    @Test func fuseCannotReplaceTheRecipesTokenizerSource() throws {
        let dir = scratchFolder()
        try models(in: dir)
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/tok")
        let recipe = dir + "/r.yml"
        try """
            merge_method: task_arithmetic
            base_model: \(dir)/base
            tokenizer_source: \(dir)/tok
            models:
              - model: \(dir)/ft
                parameters:
                  weight: 1
            """.write(toFile: recipe, atomically: true, encoding: .utf8)
        let before = contents(dir + "/tok")
        let result = try runTool(["fuse", "--config", recipe, "-o", dir + "/tok", "--force"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir)/tok: is an input (\(dir)/tok); choose another output\n")
        #expect(contents(dir + "/tok") == before)
    }

    @Test func trainCannotReplaceTheFolderHoldingItsInputs() throws {
        let dir = scratchFolder()
        #expect(try runTool(["train", "pretrain", "--steps", "1", "-o", dir + "/base"]).status == 0)
        try "{\"prompt\": \"a\", \"response\": \"b\"}\n".write(toFile: dir + "/x.jsonl", atomically: true, encoding: .utf8)
        let before = contents(dir + "/base")
        let result = try runTool(["train", "sft", "--base", dir + "/base", "--data", dir + "/x.jsonl", "--steps", "1",
                                  "-o", dir, "--force"])
        #expect(result.status == 1)
        #expect(result.err.contains("holds the input"))
        #expect(contents(dir + "/base") == before)
        #expect(FileManager.default.fileExists(atPath: dir + "/x.jsonl"))
    }

    @Test func demoKeepsAFolderItDidNotWriteWithoutForce() throws {
        let dir = scratchFolder()
        try FileManager.default.createDirectory(atPath: dir + "/base", withIntermediateDirectories: false)
        try "mine".write(toFile: dir + "/base/notes.txt", atomically: true, encoding: .utf8)
        let result = try runTool(["demo", "--out", dir], within: 120)
        #expect(!result.timedOut)
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir)/base: already exists (use --force to replace it)\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/base") == ["notes.txt"])
    }

    @Test func anOutputHoldingAFileWhoseNameStartsWithACombiningMarkIsRefused() throws {
        let dir = scratchFolder()
        // "out/\u{301}m.safetensors" does not have the String prefix "out/" (the slash and
        // the mark form one character), yet the file lies inside out/.
        try FileManager.default.createDirectory(atPath: dir + "/out", withIntermediateDirectories: false)
        let input = dir + "/out/\u{301}m.safetensors"
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama/model.safetensors"), toPath: input)
        let before = FileManager.default.contents(atPath: input)
        let result = try runTool(["convert", input, dir + "/out", "--dtype", "f32", "--force"])
        #expect(result.status == 1)
        #expect(result.err.contains("holds the input"))
        #expect(FileManager.default.contents(atPath: input) == before)
    }

    @Test func fusingIntoTheOtherSpellingOfTheBaseFolderIsAllowed() throws {
        let dir = scratchFolder()
        // Precomposed and decomposed "café" are two folders on ext4; writing one leaves the other.
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/cafe\u{301}")
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/ft")
        let result = try runTool(["fuse", dir + "/ft", "--base", dir + "/cafe\u{301}",
                                  "--method", "task_arithmetic", "-o", dir + "/caf\u{E9}"])
        #expect(result.status == 0, "\(result.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).count == 3)
    }
}

/// Input files: only regular files, links kept inside the model folder, bounded reads.
@Suite struct InputFileCommandTests {
    private func scratchFolder() -> String {
        let path = NSTemporaryDirectory() + "claire-input-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test(arguments: [["inspect", "{fifo}"], ["fuse", "--config", "{fifo}", "-o", "{dir}/out"],
                      ["train", "pretrain", "--data", "{fifo}", "-o", "{dir}/out"],
                      ["convert", "{fixture}", "{dir}/out.gguf"]])
    func aFIFOWhereAFileIsExpectedIsRefusedAtOnce(arguments: [String]) throws {
        let dir = scratchFolder()
        let fifo = dir + "/pipe"
        #expect(mkfifo(fifo, 0o644) == 0)
        let filled = arguments.map {
            $0.replacingOccurrences(of: "{fifo}", with: fifo).replacingOccurrences(of: "{dir}", with: dir)
                .replacingOccurrences(of: "{fixture}", with: dir + "/model")
        }
        // A model folder whose config.json is a FIFO.
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/model")
        try FileManager.default.removeItem(atPath: dir + "/model/config.json")
        #expect(mkfifo(dir + "/model/config.json", 0o644) == 0)
        let result = try runTool(filled, within: 30)
        #expect(!result.timedOut, "blocked opening the FIFO")
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: ") && result.err.contains("not a regular file (a FIFO)"), "\(result.err)")
        let named = result.err.contains(fifo) ? fifo : dir + "/model/config.json"
        #expect(result.err.filter { $0 == "\n" }.count == 1 && result.err.components(separatedBy: named).count == 2,
                "one line naming the file once: \(result.err)")
    }

    @Test func aSideFileLinkLeavingTheBaseFolderNeedsFollowSymlinks() throws {
        let dir = scratchFolder()
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/base")
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/ft")
        try "private".write(toFile: dir + "/secret", atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: dir + "/base/tokenizer.json", withDestinationPath: dir + "/secret")
        let refused = try runTool(["fuse", dir + "/ft", "--base", dir + "/base", "--method", "task_arithmetic", "-o", dir + "/out"])
        #expect(refused.status == 1)
        #expect(refused.err == "error: \(dir)/base/tokenizer.json: is a link to a file outside the model folder (--follow-symlinks allows it)\n")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out"))
        let followed = try runTool(["fuse", dir + "/ft", "--base", dir + "/base", "--method", "task_arithmetic",
                                    "-o", dir + "/out", "--follow-symlinks"])
        #expect(followed.status == 0)
        #expect(FileManager.default.contents(atPath: dir + "/out/tokenizer.json") == Data("private".utf8))
    }

    @Test(arguments: [["convert", "{dir}/base", "{dir}/out.gguf"], ["convert", "{dir}/base", "{dir}/out", "--dtype", "f32"]])
    func aConfigLinkLeavingTheModelFolderIsNotRead(arguments: [String]) throws {
        let dir = scratchFolder()
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/base")
        try FileManager.default.moveItem(atPath: dir + "/base/config.json", toPath: dir + "/elsewhere.json")
        try FileManager.default.createSymbolicLink(atPath: dir + "/base/config.json", withDestinationPath: dir + "/elsewhere.json")
        let result = try runTool(arguments.map { $0.replacingOccurrences(of: "{dir}", with: dir) })
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir)/base/config.json: is a link to a file outside the model folder (--follow-symlinks allows it)\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["base", "elsewhere.json"])
    }

    @Test func aTrainingBaseWhoseConfigLinksOutsideIsRefused() throws {
        let dir = scratchFolder()
        #expect(try runTool(["train", "pretrain", "--steps", "1", "-o", dir + "/base"]).status == 0)
        try FileManager.default.moveItem(atPath: dir + "/base/config.json", toPath: dir + "/elsewhere.json")
        try FileManager.default.createSymbolicLink(atPath: dir + "/base/config.json", withDestinationPath: dir + "/elsewhere.json")
        let result = try runTool(["eval", dir + "/base"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir)/base/config.json: is a link to a file outside the model folder (--follow-symlinks allows it)\n")
        #expect(try runTool(["eval", dir + "/base", "--follow-symlinks"]).status == 0)
    }

    @Test func aLargeSideFileIsCopiedInBoundedMemory() throws {
        let dir = scratchFolder()
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/base")
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/ft")
        // A sparse 256 MiB tokenizer.json: read whole, it would need well over the
        // 400 MB of address space the run is given.
        let path = dir + "/base/tokenizer.json"
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, 256 << 20) == 0)
        // AddressSanitizer's shadow memory alone takes terabytes of address space: in
        // that build the copy is checked for its bytes only (the plain build checks the bound).
        let limit = runsUnderAddressSanitizer ? "" : "ulimit -v 400000"
        let result = try runTool(["fuse", dir + "/ft", "--base", dir + "/base", "--method", "task_arithmetic",
                                  "--threads", "1", "-o", dir + "/out"], within: 120, limits: limit)
        #expect(result.status == 0, "\(result.err)")
        let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/out/tokenizer.json")
        #expect(attributes[.size] as? Int == 256 << 20)
    }

    @Test func aTokenizerLargerThanTheCapIsNotParsed() throws {
        let dir = scratchFolder()
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama"), toPath: dir + "/base")
        let path = dir + "/base/tokenizer.json"
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, (256 << 20) + 1) == 0)
        let result = try runTool(["convert", dir + "/base", dir + "/out.gguf"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(path): is \((256 << 20) + 1) bytes, more than the 256 MiB a JSON file may have\n")
        #expect(!FileManager.default.fileExists(atPath: dir + "/out.gguf"))
    }

    @Test func aShardIndexLargerThanTheCapIsRefused() throws {
        let dir = scratchFolder()
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama-sharded"), toPath: dir + "/base")
        let path = dir + "/base/model.safetensors.index.json"
        #expect(truncate(path, (64 << 20) + 1) == 0)
        let result = try runTool(["inspect", dir + "/base"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(path): bad index: index is \((64 << 20) + 1) bytes, more than the 64 MiB an index may have\n")
    }

    @Test func aRecipeLargerThanTheCapIsRefused() throws {
        let dir = scratchFolder()
        let recipe = dir + "/r.yml"
        var text = "merge_method: task_arithmetic\n"
        text += String(repeating: "# padding\n", count: 110_000)
        try text.write(toFile: recipe, atomically: true, encoding: .utf8)
        let result = try runTool(["fuse", "--config", recipe, "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(recipe): cannot read recipe: is \(text.utf8.count) bytes, more than the 1 MiB a recipe may have\n")
    }

    @Test func aTrainingDataLineLargerThanTheCapIsRefused() throws {
        let dir = scratchFolder()
        let data = dir + "/x.jsonl"
        let line = "{\"text\": \"" + String(repeating: "a", count: 17 << 20) + "\"}"
        try (line + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let result = try runTool(["train", "pretrain", "--data", data, "--steps", "1", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err.contains("line is \(line.utf8.count) bytes, more than the 16 MiB a line may have"), "\(result.err)")
    }

    @Test func aTrainingConfigLargerThanTheCapIsRefused() throws {
        let dir = scratchFolder()
        let config = dir + "/config.json"
        try ("{}" + String(repeating: " ", count: 17 << 20)).write(toFile: config, atomically: true, encoding: .utf8)
        let result = try runTool(["train", "pretrain", "--config", config, "--steps", "1", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(config): cannot read: is \((17 << 20) + 2) bytes, more than the 16 MiB a config.json may have\n")
    }
}
