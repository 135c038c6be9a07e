import Foundation
import Testing
@testable import Checkpoints

@Suite struct SparseDeltaTests {
    /// BF16 bytes of `values`.
    private func bf16(_ values: [Float]) -> [UInt8] {
        values.flatMap { v -> [UInt8] in
            let h = ElementCodec.floatToBF16(v)
            return [UInt8(h & 0xff), UInt8(h >> 8)]
        }
    }

    private let base: [Float] = (0..<50).map { Float($0) * 0.25 - 3 }
    private var tuned: [Float] {
        var t = base
        for i in [0, 7, 8, 31, 49] { t[i] += 0.5 }
        return t
    }

    /// Writes a delta holding one sparse tensor (`keep` positions) and one full tensor.
    private func writeDelta(keep: [Int]) throws -> (path: String, base: [UInt8], tuned: [UInt8], extra: [Float]) {
        let b = bf16(base), t = bf16(tuned)
        let extra: [Float] = [1, -2, 3.5]
        let path = temporaryFolder() + "/d.delta"
        let writer = try SparseDelta.Writer(path: path, overwrite: false)
        let sparse = b.withUnsafeBytes { bb in
            t.withUnsafeBytes { tt in
                SparseDelta.encode(name: "w", dtype: .bf16, shape: [5, 10], tuned: tt, base: bb, changed: 5, positions: keep)
            }
        }
        let full = extra.withUnsafeBytes {
            SparseDelta.encode(name: "new", dtype: .f32, shape: [3], tuned: $0, base: nil, changed: 3, positions: [])
        }
        try writer.append(sparse)
        try writer.append(full)
        #expect(!FileManager.default.fileExists(atPath: path))
        try writer.commit(method: "magnitude", density: 1, seed: 7, metadata: [MetadataEntry("format", .string("pt"))])
        return (path, b, t, extra)
    }

    private func rebuild(_ file: SparseDelta.File, _ name: String, base: [UInt8]?) throws -> [UInt8] {
        let record = try #require(file.header.tensors.first { $0.name == name })
        var out = [UInt8](repeating: 0xAA, count: record.dtype.byteCount(forElements: record.elementCount)!)
        if let base {
            try base.withUnsafeBytes { b in try out.withUnsafeMutableBytes { try file.reconstruct(record, base: b, into: $0) } }
        } else {
            try out.withUnsafeMutableBytes { try file.reconstruct(record, base: nil, into: $0) }
        }
        return out
    }

    @Test func keepingEveryChangedEntryRebuildsTheTunedBytesExactly() throws {
        let d = try writeDelta(keep: [0, 7, 8, 31, 49])
        let file = try SparseDelta.File(path: d.path)
        #expect(file.header.method == "magnitude" && file.header.seed == 7)
        #expect(file.header.metadata == [MetadataEntry("format", .string("pt"))])
        #expect(file.header.tensors.map(\.mode) == [.sparse, .full])
        #expect(try rebuild(file, "w", base: d.base) == d.tuned)
        #expect(try rebuild(file, "new", base: nil) == d.extra.withUnsafeBytes { Array($0) })
    }

    @Test func entriesNotKeptFallBackToTheBase() throws {
        let d = try writeDelta(keep: [7, 31])
        let file = try SparseDelta.File(path: d.path)
        var expected = base
        expected[7] += 0.5
        expected[31] += 0.5
        #expect(try rebuild(file, "w", base: d.base) == bf16(expected))
    }

    @Test func aDifferentBaseIsRefused() throws {
        let d = try writeDelta(keep: [0, 7])
        let file = try SparseDelta.File(path: d.path)
        var other = d.base
        other[3] ^= 1
        #expect(throws: CheckpointError.delta(file: d.path, violation: .wrongBase(tensor: "w"))) {
            _ = try rebuild(file, "w", base: other)
        }
    }

    @Test func aFlippedDataByteIsCaughtByTheChecksum() throws {
        let d = try writeDelta(keep: [0, 7])
        var bytes = [UInt8](FileManager.default.contents(atPath: d.path)!)
        // The last byte of the blob: compressed content, past the frame headers checked at open.
        let record = try SparseDelta.File(path: d.path).header.tensors[0]
        bytes[record.offset + record.blobSize - 1] ^= 0x40
        let path = temporaryFile(bytes, name: "bad.delta")
        let file = try SparseDelta.File(path: path)
        #expect(throws: CheckpointError.delta(file: path, violation: .blobChecksumMismatch(tensor: "w"))) {
            _ = try rebuild(file, "w", base: d.base)
        }
    }

    @Test func aFlippedHeaderByteIsRefusedAtOpen() throws {
        let d = try writeDelta(keep: [0])
        var bytes = [UInt8](FileManager.default.contents(atPath: d.path)!)
        bytes[bytes.count - 40] ^= 0x01
        let path = temporaryFile(bytes, name: "bad.delta")
        #expect(throws: CheckpointError.delta(file: path, violation: .headerChecksumMismatch)) {
            _ = try SparseDelta.File(path: path)
        }
    }

    @Test func truncationAndForeignFilesAreRefused() throws {
        let d = try writeDelta(keep: [0])
        let bytes = [UInt8](FileManager.default.contents(atPath: d.path)!)
        let cut = temporaryFile(Array(bytes.dropLast(3)), name: "cut.delta")
        #expect(throws: CheckpointError.delta(file: cut, violation: .truncated)) { _ = try SparseDelta.File(path: cut) }
        let foreign = temporaryFile(Array("not a delta at all, clearly".utf8), name: "x.delta")
        #expect(throws: CheckpointError.delta(file: foreign, violation: .notADeltaFile)) { _ = try SparseDelta.File(path: foreign) }
    }

    @Test func headerClaimingAHugeTrailerIsRefusedWithoutAllocating() throws {
        var bytes = SparseDelta.magic
        withUnsafeBytes(of: UInt64.max.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt64(0)) { bytes.append(contentsOf: $0) }
        bytes += SparseDelta.magic
        let path = temporaryFile(bytes, name: "huge.delta")
        #expect(throws: CheckpointError.delta(file: path, violation: .truncated)) { _ = try SparseDelta.File(path: path) }
    }

    @Test(arguments: [0, 1, 127, 128, 300, 1 << 35, UInt64.max])
    func varintsRoundTrip(value: UInt64) {
        var bytes: [UInt8] = []
        SparseDelta.appendVarint(value, to: &bytes)
        var cursor = 0
        #expect(bytes.withUnsafeBufferPointer { SparseDelta.readVarint($0, &cursor) } == value)
        #expect(cursor == bytes.count)
    }

    @Test func overlongVarintIsRejected() {
        let bytes = [UInt8](repeating: 0xff, count: 11) + [0x01]
        var cursor = 0
        #expect(bytes.withUnsafeBufferPointer { SparseDelta.readVarint($0, &cursor) } == nil)
    }
}
