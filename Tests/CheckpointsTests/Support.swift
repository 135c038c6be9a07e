import Foundation
@testable import Checkpoints

/// Path of a file under the package's fixtures/ folder.
func fixture(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures").appendingPathComponent(relative).path
}

/// A fresh empty folder under the system temporary folder.
func temporaryFolder() -> String {
    let path = NSTemporaryDirectory() + "claire-test-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Writes bytes to a new temporary file and returns its path.
func temporaryFile(_ bytes: [UInt8], name: String = "file.safetensors") -> String {
    let path = temporaryFolder() + "/" + name
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

/// A safetensors file from a header text and a data buffer (header not padded).
func safetensorsBytes(header: String, data: [UInt8] = []) -> [UInt8] {
    var bytes: [UInt8] = []
    withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
    bytes.append(contentsOf: header.utf8)
    bytes.append(contentsOf: data)
    return bytes
}

/// Bit patterns of a Float array, so NaNs compare equal to themselves.
func bitPatterns(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// Bit patterns with every NaN mapped to one canonical quiet NaN.
func canonicalBits(_ values: [Float]) -> [UInt32] {
    values.map { $0.isNaN ? 0x7fc0_0000 : $0.bitPattern }
}

/// Files in a folder, sorted.
func listing(_ folder: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
}
