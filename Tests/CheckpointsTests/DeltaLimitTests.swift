import Foundation
import Testing
@testable import Checkpoints

/// A `.delta` file's sizes are untrusted: a header or frame that claims more than
/// the file holds is refused when the file is opened, before any output exists or
/// any buffer is sized from it; and the writer never writes what its reader refuses.
@Suite struct DeltaLimitTests {
    /// A delta file holding one blob, described by `record` (JSON members without
    /// `offset`, `positions_size`, `values_size` and `blob_xxh64`, which are filled in).
    private func craftedDelta(record: String, positions: [UInt8], values: [UInt8],
                              positionsSize: String? = nil, valuesSize: String? = nil) -> String {
        let blob = positions + values
        let hash = blob.withUnsafeBytes { XXHash64.hash($0) }
        let hex = String(hash, radix: 16)
        let header = """
            {"format":"claire-delta","version":1,"method":"magnitude","density":1,"seed":"0","metadata":{},"tensors":[\
            {\(record),"offset":8,"positions_size":\(positionsSize ?? String(positions.count)),\
            "values_size":\(valuesSize ?? String(values.count)),\
            "blob_xxh64":"\(String(repeating: "0", count: 16 - hex.count) + hex)"}]}
            """
        let json = Array(header.utf8)
        var bytes = SparseDelta.magic + blob + json
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: json.withUnsafeBytes { XXHash64.hash($0) }.littleEndian) { bytes.append(contentsOf: $0) }
        bytes += SparseDelta.magic
        return temporaryFile(bytes, name: "crafted.delta")
    }

    private func compressed(_ bytes: [UInt8]) -> [UInt8] { bytes.withUnsafeBytes { Zstd.compress($0) } }

    /// A zstd frame header declaring `size` bytes of content, followed by one empty last raw block.
    private func frameClaiming(_ size: UInt64) -> [UInt8] {
        var frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xE0]  // magic; single segment, 8-byte content size
        withUnsafeBytes(of: size.littleEndian) { frame.append(contentsOf: $0) }
        return frame + [0x01, 0x00, 0x00]
    }

    private func openingFails(_ path: String) -> DeltaViolation? {
        do {
            _ = try SparseDelta.File(path: path)
            return nil
        } catch {
            guard case .delta(_, let violation) = error else { return nil }
            return violation
        }
    }

    private let full8GiB = #""name":"w","dtype":"F32","shape":[2147483648],"mode":"full","kept":2147483648,"changed":1,"base_xxh64":"0000000000000000""#

    @Test func aWellFormedCraftedFileOpens() throws {
        let values: [Float] = [1, 2, 3, 4]
        let path = craftedDelta(record: #""name":"w","dtype":"F32","shape":[4],"mode":"full","kept":4,"changed":4,"base_xxh64":"0000000000000000""#,
                                positions: compressed([]), values: compressed(values.withUnsafeBytes { Array($0) }))
        #expect(openingFails(path) == nil)
    }

    @Test func tinyFileDeclaringAnEightGiBTensorIsRefusedAtOpen() {
        let path = craftedDelta(record: full8GiB, positions: compressed([]), values: compressed([1, 2, 3, 4]))
        guard case .corruptBlob(let tensor, let reason)? = openingFails(path) else {
            Issue.record("a 4-byte value block cannot stand for 8 GiB")
            return
        }
        #expect(tensor == "w" && reason.contains("value block holds 4 bytes"))
    }

    @Test func frameClaimingMoreThanItsBytesCanHoldIsRefusedAtOpen() {
        let path = craftedDelta(record: full8GiB, positions: compressed([]), values: frameClaiming(8 << 30))
        guard case .corruptBlob(_, let reason)? = openingFails(path) else {
            Issue.record("a 16-byte frame cannot hold 8 GiB")
            return
        }
        #expect(reason.contains("claims 8589934592 bytes"))
    }

    @Test func positionListLargerThanItsEntriesAllowIsRefusedAtOpen() {
        let record = #""name":"w","dtype":"F32","shape":[4],"mode":"sparse","kept":1,"changed":1,"base_xxh64":"0000000000000000""#
        let path = craftedDelta(record: record, positions: compressed([UInt8](repeating: 0, count: 64)), values: compressed([0, 0, 0, 0]))
        guard case .corruptBlob(_, let reason)? = openingFails(path) else {
            Issue.record("64 position bytes cannot describe one entry")
            return
        }
        #expect(reason.contains("position list of 64 bytes"))
    }

    @Test func shapesAreCappedLikeSafetensorsRanksWhileParsing() {
        func record(rank: Int) -> String {
            let shape = Array(repeating: "1", count: rank).joined(separator: ",")
            return #""name":"w","dtype":"F32","shape":["# + shape + #"],"mode":"full","kept":1,"changed":1,"base_xxh64":"0000000000000000""#
        }
        let values = compressed([0, 0, 128, 63])
        #expect(openingFails(craftedDelta(record: record(rank: 64), positions: compressed([]), values: values)) == nil)
        #expect(openingFails(craftedDelta(record: record(rank: 65), positions: compressed([]), values: values))
                == .badHeader("an array holds more than 64 elements"))
    }

    @Test func blobSizesSummingPastIntMaxAreRefused() {
        let record = #""name":"w","dtype":"F32","shape":[4],"mode":"full","kept":4,"changed":4,"base_xxh64":"0000000000000000""#
        let path = craftedDelta(record: record, positions: [], values: [], positionsSize: String(Int.max), valuesSize: "16")
        #expect(openingFails(path) == .blobOutOfPlace(tensor: "w"))
    }

    @Test func blockTypeNoSafetensorsReaderAcceptsIsRefusedAtOpen() {
        let record = #""name":"w","dtype":"Q8_0","shape":[32],"mode":"full","kept":32,"changed":32,"base_xxh64":"0000000000000000""#
        let path = craftedDelta(record: record, positions: compressed([]), values: compressed([UInt8](repeating: 0, count: 34)))
        #expect(openingFails(path) == .badHeader("tensor 'w': dtype Q8_0 cannot be written back to safetensors"))
    }

    @Test func headerLargerThanTheReadersLimitIsNotWritten() throws {
        let folder = temporaryFolder()
        let path = folder + "/d.delta"
        let writer = try SparseDelta.Writer(path: path, overwrite: false)
        let values: [Float] = [1, 2]
        try writer.append(values.withUnsafeBytes {
            SparseDelta.encode(name: String(repeating: "n", count: 300), dtype: .f32, shape: [2], tuned: $0, base: nil, changed: 2, positions: [])
        })
        #expect(throws: CheckpointError.self) {
            try writer.commit(method: "magnitude", density: 1, seed: 0, metadata: [], maximumHeaderSize: 256)
        }
        #expect(!FileManager.default.fileExists(atPath: path), "a delta its reader refuses must not appear")
        writer.abort()
        #expect(listing(folder).isEmpty, "nothing may remain after the abort")
    }
}
