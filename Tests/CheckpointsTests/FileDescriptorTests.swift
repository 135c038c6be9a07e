import Foundation
import Testing
@testable import Checkpoints

/// The descriptor wrapper every file of Checkpoints goes through.
@Suite struct FileDescriptorTests {
    @Test func writesSizesReadsAndClosesOnce() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/f"
        let file = try FileDescriptor.create(path)
        try file.truncate(to: 8)
        try [UInt8](arrayLiteral: 1, 2, 3).withUnsafeBytes { try file.write($0) }
        try [UInt8](arrayLiteral: 9).withUnsafeBytes { try file.write($0, at: 6) }
        try file.sync()
        try file.close()
        try file.close()  // a second close does nothing
        #expect(FileManager.default.contents(atPath: path) == Data([1, 2, 3, 0, 0, 0, 9, 0]))

        let input = try FileDescriptor.open(path, O_RDONLY)
        #expect(try input.status().st_size == 8)
        var bytes = [UInt8](repeating: 0xff, count: 16)
        let n = try bytes.withUnsafeMutableBytes { try input.read(into: $0) }
        #expect(n == 8 && Array(bytes[..<8]) == [1, 2, 3, 0, 0, 0, 9, 0])
        #expect(try bytes.withUnsafeMutableBytes { try input.read(into: $0) } == 0)
    }

    @Test func createRefusesAnExistingFileWithItsErrno() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try Data([1]).write(to: URL(fileURLWithPath: folder + "/f"))
        #expect(throws: FileDescriptor.Failure.self) { try FileDescriptor.create(folder + "/f") }
        do {
            _ = try FileDescriptor.create(folder + "/f")
        } catch {
            #expect(error.code == EEXIST)
            #expect(error.description == String(cString: strerror(EEXIST)))
        }
        #expect(FileManager.default.contents(atPath: folder + "/f") == Data([1]))
    }

    @Test func inputFilesStillRefuseWhatIsNotARegularFile() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(throws: CheckpointError.io(file: folder, problem: "not a regular file (a folder)")) {
            _ = try InputFile.readAll(folder, cap: 10, what: "a test file")
        }
        #expect(throws: CheckpointError.self) { _ = try InputFile.readAll(folder + "/missing", cap: 10, what: "a test file") }
    }
}
