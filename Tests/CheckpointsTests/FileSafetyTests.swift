import Foundation
import Testing
@testable import Checkpoints

/// Paths compared as bytes, the output guard, the replacement rule and the input-file rules.
@Suite struct FileSafetyTests {
    /// "café" spelt with a precomposed é (NFC) and with e + combining acute (NFD):
    /// canonically equal Strings, two different names on ext4.
    static let composed = "caf\u{E9}"
    static let decomposed = "cafe\u{301}"

    private func makeFolder(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    @Test func bothSpellingsAreDifferentFoldersOnThisFileSystem() throws {
        let dir = temporaryFolder()
        try makeFolder(dir + "/" + Self.composed)
        try makeFolder(dir + "/" + Self.decomposed)
        #expect(listing(dir).count == 2)
        #expect(Self.composed == Self.decomposed, "Swift compares them as equal")
        #expect(FilePaths.resolved(dir + "/" + Self.composed) != FilePaths.resolved(dir + "/" + Self.decomposed))
    }

    @Test func aShardNameHidingASlashBehindACombiningMarkIsRefused() throws {
        let index = #"{"weight_map": {"w": "sub/\#u{301}x.safetensors"}}"#
        let path = temporaryFile(Array(index.utf8), name: HFFolder.indexFileName)
        #expect(throws: CheckpointError.folder(file: path, problem: .shardEscapesFolder(shard: "sub/\u{301}x.safetensors"))) {
            _ = try HFFolder.readIndex(path)
        }
        #expect(!HFFolder.isPlainFileName("/\u{301}"))
        #expect(!HFFolder.isPlainFileName(".."))
        #expect(HFFolder.isPlainFileName("\u{301}x.safetensors"))
    }

    @Test func aShardLinkIntoTheOtherSpellingsFolderIsRefused() throws {
        let dir = temporaryFolder()
        let model = dir + "/" + Self.composed
        let elsewhere = dir + "/" + Self.decomposed
        try makeFolder(model)
        try makeFolder(elsewhere)
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama/model.safetensors"),
                                         toPath: elsewhere + "/model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: model + "/model.safetensors",
                                                   withDestinationPath: elsewhere + "/model.safetensors")
        #expect(throws: CheckpointError.folder(file: model + "/model.safetensors", problem: .symlinkOutside(shard: "model.safetensors"))) {
            _ = try HFFolder.open(model)
        }
        let expected = try Checkpoint.open(fixture("safetensors/tiny-llama")).tensors.count
        #expect(try HFFolder.open(model, followSymlinks: true).tensors.count == expected)
        #expect(!HFFolder.staysInside(model + "/model.safetensors", folder: model))
    }

    @Test func aLinkInsideTheFolderStaysInside() throws {
        let model = temporaryFolder() + "/m"
        try makeFolder(model + "/blobs")
        try FileManager.default.copyItem(atPath: fixture("safetensors/tiny-llama/model.safetensors"), toPath: model + "/blobs/w")
        try FileManager.default.createSymbolicLink(atPath: model + "/model.safetensors", withDestinationPath: "blobs/w")
        #expect(HFFolder.staysInside(model + "/model.safetensors", folder: model))
        #expect(try HFFolder.open(model).tensors.count == Checkpoint.open(fixture("safetensors/tiny-llama")).tensors.count)
    }

    @Test func aSideFileLinkLeavingItsFolderIsNotCopied() throws {
        let dir = temporaryFolder()
        try makeFolder(dir + "/model")
        _ = FileManager.default.createFile(atPath: dir + "/secret", contents: Data("private".utf8))
        _ = FileManager.default.createFile(atPath: dir + "/model/generation_config.json", contents: Data("{}".utf8))
        try FileManager.default.createSymbolicLink(atPath: dir + "/model/tokenizer.json", withDestinationPath: "../secret")
        let writer = try HFFolderWriter(folder: dir + "/out", tensors: [])
        #expect(throws: CheckpointError.io(file: dir + "/model/tokenizer.json",
                                           problem: "is a link to a file outside the model folder (--follow-symlinks allows it)")) {
            try writer.copyFile(from: dir + "/model/tokenizer.json")
        }
        try writer.copyFile(from: dir + "/model/generation_config.json")
        try writer.commit()
        #expect(listing(dir + "/out") == ["generation_config.json", "model.safetensors"])
        #expect(FileManager.default.contents(atPath: dir + "/out/generation_config.json") == Data("{}".utf8))
    }

    @Test func aSideFileCopyStreamsEveryByte() throws {
        let dir = temporaryFolder()
        // Larger than the copy buffer and not a multiple of it.
        let bytes = (0..<(NewFile.copyBufferSize * 2 + 12345)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 13) }
        _ = FileManager.default.createFile(atPath: dir + "/tokenizer.json", contents: Data(bytes))
        let writer = try HFFolderWriter(folder: dir + "/out", tensors: [])
        try writer.copyFile(from: dir + "/tokenizer.json")
        try writer.copyFile(from: dir + "/tokenizer.json", as: "copy.json")
        try writer.commit()
        #expect(FileManager.default.contents(atPath: dir + "/out/tokenizer.json") == Data(bytes))
        #expect(FileManager.default.contents(atPath: dir + "/out/copy.json") == Data(bytes))
    }

    private func refusal(_ output: String, _ inputs: [String]) -> String? {
        do {
            try OutputGuard.check(output: output, inputs: inputs)
            return nil
        } catch {
            return error.description
        }
    }

    @Test func outputMayNotBeHoldOrLieInsideAnInput() throws {
        let dir = temporaryFolder()
        try makeFolder(dir + "/base")
        _ = FileManager.default.createFile(atPath: dir + "/base/model.safetensors", contents: Data([1]))
        _ = FileManager.default.createFile(atPath: dir + "/data.jsonl", contents: Data([1]))
        #expect(refusal(dir + "/base", [dir + "/base"])?.contains("is an input") == true)
        #expect(refusal(dir + "/base/", [dir + "/./base"])?.contains("is an input") == true)
        #expect(refusal(dir, [dir + "/base"])?.contains("holds the input") == true)
        #expect(refusal(dir + "/base/model.safetensors", [dir + "/base"])?.contains("lies inside the input") == true)
        #expect(refusal(dir + "/base/new/deeper", [dir + "/base"])?.contains("lies inside the input") == true)
        #expect(refusal(dir + "/data.jsonl", [dir + "/base", dir + "/data.jsonl"])?.contains("is an input") == true)
        #expect(refusal(dir + "/other/../data.jsonl", [dir + "/data.jsonl"])?.contains("is an input") == true)
        // Siblings sharing a name prefix are not nested.
        #expect(refusal(dir + "/base2", [dir + "/base"]) == nil)
        #expect(refusal(dir + "/bas", [dir + "/base"]) == nil)
        #expect(refusal(dir + "/out", [dir + "/base", dir + "/data.jsonl"]) == nil)
    }

    @Test func outputGuardSeesThroughLinksAndHardLinks() throws {
        let dir = temporaryFolder()
        try makeFolder(dir + "/base")
        _ = FileManager.default.createFile(atPath: dir + "/base/model.safetensors", contents: Data([1]))
        try FileManager.default.createSymbolicLink(atPath: dir + "/alias", withDestinationPath: "base")
        #expect(refusal(dir + "/alias", [dir + "/base"])?.contains("is an input") == true)
        #expect(refusal(dir + "/alias/x", [dir + "/base"])?.contains("lies inside") == true)
        #expect(link(dir + "/base/model.safetensors", dir + "/hard.safetensors") == 0)
        #expect(refusal(dir + "/hard.safetensors", [dir + "/base/model.safetensors"])?.contains("is an input") == true)
    }

    @Test func outputGuardComparesNamesAsBytes() throws {
        let dir = temporaryFolder()
        // A file whose name starts with a combining mark: "out/" + "\u{301}m" is not
        // a String with the prefix "out/", but it lies inside out/.
        try makeFolder(dir + "/out")
        _ = FileManager.default.createFile(atPath: dir + "/out/\u{301}m.safetensors", contents: Data([1]))
        #expect(refusal(dir + "/out", [dir + "/out/\u{301}m.safetensors"])?.contains("holds the input") == true)
        // The two spellings of café are different folders: writing one does not touch the other.
        try makeFolder(dir + "/" + Self.decomposed)
        #expect(refusal(dir + "/" + Self.composed, [dir + "/" + Self.decomposed]) == nil)
        #expect(refusal(dir + "/" + Self.composed + "/x", [dir + "/" + Self.decomposed]) == nil)
        #expect(refusal(dir + "/" + Self.decomposed + "/x", [dir + "/" + Self.decomposed])?.contains("lies inside") == true)
    }

    @Test func aDisplacedOutputLeftByAKilledReplacementIsPutBack() throws {
        let dir = temporaryFolder()
        // The state a run killed between the two renames of a replacement leaves:
        // the old output under the temporary's name + ".old", no destination
        // (PIDs stay below 2^22 on Linux, so this one belongs to no process).
        let displaced = dir + "/.out.partial-2147483646-x.old"
        try makeFolder(displaced)
        _ = FileManager.default.createFile(atPath: displaced + "/model.safetensors", contents: Data([7]))
        let output = try OutputPath(destination: dir + "/out", isDirectory: true, overwrite: true)
        #expect(FileManager.default.contents(atPath: dir + "/out/model.safetensors") == Data([7]))
        output.abort()
        #expect(listing(dir) == ["out"])
    }

    @Test func theSweepKeepsToItsOwnDestinationsBytes() throws {
        let dir = temporaryFolder()
        // A displaced old output of the decomposed spelling must not be restored under,
        // or swept by, a run writing the precomposed one.
        let displaced = dir + "/." + Self.decomposed + ".partial-2147483646-x.old"
        try makeFolder(displaced)
        let output = try OutputPath(destination: dir + "/" + Self.composed, isDirectory: true, overwrite: true)
        output.abort()
        #expect(listing(dir) == ["." + Self.decomposed + ".partial-2147483646-x.old"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/" + Self.composed))
    }

    @Test func aTemporaryIsASiblingEvenWhenTheNameStartsWithACombiningMark() throws {
        let dir = temporaryFolder()
        try makeFolder(dir + "/sub")
        let output = try OutputPath(destination: dir + "/sub/\u{301}m", isDirectory: false, overwrite: false)
        #expect(Array(output.temporary.utf8).starts(with: Array((dir + "/sub/.\u{301}m.partial-").utf8)))
        output.abort()
    }

    @Test func aDisplacedOutputIsRemovedWhenTheDestinationExists() throws {
        let dir = temporaryFolder()
        try makeFolder(dir + "/out")
        try makeFolder(dir + "/.out.partial-2147483646-x.old")
        try makeFolder(dir + "/.out.partial-2147483646-y")
        let output = try OutputPath(destination: dir + "/out", isDirectory: true, overwrite: true)
        output.abort()
        #expect(listing(dir) == ["out"])
    }

    @Test(arguments: [true, false])
    func replacingAnOutputLeavesOnlyTheNewOne(isDirectory: Bool) throws {
        let dir = temporaryFolder()
        let destination = dir + "/out"
        if isDirectory {
            try makeFolder(destination)
            _ = FileManager.default.createFile(atPath: destination + "/old", contents: Data([1]))
        } else {
            _ = FileManager.default.createFile(atPath: destination, contents: Data([1]))
        }
        let output = try OutputPath(destination: destination, isDirectory: isDirectory, overwrite: true)
        let file = isDirectory ? output.temporaryPath(for: "new") : output.temporary
        _ = FileManager.default.createFile(atPath: file, contents: Data([2]))
        try output.commit()
        #expect(listing(dir) == ["out"])
        #expect(FileManager.default.contents(atPath: isDirectory ? destination + "/new" : destination) == Data([2]))
        if isDirectory { #expect(listing(destination) == ["new"]) }
    }

    @Test func anythingButARegularFileIsRefusedWithoutBlocking() throws {
        let dir = temporaryFolder()
        let fifo = dir + "/pipe.safetensors"
        #expect(mkfifo(fifo, 0o644) == 0)
        // open(2) without O_NONBLOCK would wait here for a writer that never comes.
        #expect(throws: CheckpointError.io(file: fifo, problem: "not a regular file (a FIFO)")) { _ = try MappedFile(path: fifo) }
        #expect(throws: CheckpointError.io(file: dir, problem: "not a regular file (a folder)")) { _ = try MappedFile(path: dir) }
        #expect(throws: CheckpointError.io(file: fifo, problem: "not a regular file (a FIFO)")) {
            _ = try readJSONFile(fifo)
        }
    }

    #if os(Linux)
    /// Whether each page of `bytes` is mapped in this process (bit 63 of its
    /// `/proc/self/pagemap` entry, which an unprivileged process may read).
    private func mappedPages(_ bytes: UnsafeRawBufferPointer) throws -> [Bool] {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = Int(bitPattern: bytes.baseAddress!) / page
        let count = (bytes.count + page - 1) / page
        let map = try #require(FileHandle(forReadingAtPath: "/proc/self/pagemap"))
        defer { try? map.close() }
        try map.seek(toOffset: UInt64(first * 8))
        let entries = try #require(try map.read(upToCount: count * 8))
        return (0..<count).map { i in entries[entries.startIndex + i * 8 + 7] & 0x80 != 0 }
    }

    @Test func releasingBlocksHandsBackTheWholeTwoMebibytesAroundARange() throws {
        let mib = 1 << 20, page = Int(sysconf(Int32(_SC_PAGESIZE)))
        // Six MiB and a bit: the last block is partial and ends inside a page.
        let path = temporaryFile(Array(repeating: 7, count: 6 * mib + 100))
        let file = try MappedFile(path: path)
        let bytes = file.bytes(0..<file.size)
        func touchAll() {
            var sum = 0
            for offset in stride(from: 0, to: bytes.count, by: page) { sum &+= Int(bytes[offset]) }
            #expect(sum > 0)
        }
        touchAll()
        #expect(try mappedPages(bytes).allSatisfy { $0 })

        // An exact release of a few bytes inside one page leaves everything mapped ...
        file.release((3 * mib + 10)..<(3 * mib + 20))
        #expect(try mappedPages(bytes).allSatisfy { $0 })
        // ... the block release drops [2 MiB, 4 MiB) and nothing else.
        file.releaseBlocks(around: (3 * mib + 10)..<(3 * mib + 20))
        let mapped = try mappedPages(bytes)
        for (index, isMapped) in mapped.enumerated() {
            let offset = index * page
            #expect(isMapped == !(2 * mib..<4 * mib).contains(offset), "page at \(offset)")
        }

        // At the end of the file the block [6 MiB, 8 MiB) reaches past it and holds only
        // the partial last page, which stays: nothing before the block goes, and nothing
        // past the file is touched. At the start, the first block goes.
        touchAll()
        file.releaseBlocks(around: (file.size - 5)..<file.size)
        let atEnd = try mappedPages(bytes)
        #expect(atEnd.prefix(6 * mib / page).allSatisfy { $0 })
        #expect(atEnd.last == true)
        file.releaseBlocks(around: 0..<1)
        #expect(try mappedPages(bytes).prefix(2 * mib / page).allSatisfy { !$0 })
    }
    #endif

    @Test func readingARangeCopiesItsBytesAndReportsAFileThatShrank() throws {
        let contents = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        let path = temporaryFile(contents)
        let file = try MappedFile(path: path)
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: 70_000, alignment: 1)
        defer { copy.deallocate() }
        try file.read(30_000..<100_000, into: copy.baseAddress!)
        #expect(Array(copy) == Array(contents[30_000...]))

        #expect(truncate(path, 50_000) == 0)
        do {
            try file.read(30_000..<100_000, into: copy.baseAddress!)
            Issue.record("a read past the shrunken end succeeded")
        } catch {
            guard case .io(let file, let problem) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(file == path && problem == "changed size while being read")
        }
    }

    @Test func readingAFileWholeNamesTheCap() throws {
        let path = temporaryFile(Array(repeating: 0x20, count: 2049), name: "recipe.yml")
        #expect(throws: CheckpointError.io(file: path, problem: "is 2049 bytes, more than the 2 KiB a recipe may have")) {
            _ = try InputFile.readAll(path, cap: 2048, what: "a recipe")
        }
        #expect(try InputFile.readAll(path, cap: 4096, what: "a recipe").count == 2049)
    }
}
