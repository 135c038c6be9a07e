import Foundation
import Testing
@testable import Checkpoints

/// Tensors handed to the writers in consecutive pieces (`TensorSink.write(_:piece:at:)`),
/// and conversions that stream a tensor a window at a time.
@Suite struct PieceWriteTests {
    private static let spec = TensorSpec(name: "x", dtype: .f32, shape: [10])
    private static let values: [Float] = (0..<10).map { Float($0) * 0.5 - 2 }

    /// Each writer kind, writing one tensor of 10 F32 values.
    private static func sinks(in folder: String) throws -> [(sink: any TensorSink, destination: String, file: String)] {
        [(try HFFolderWriter(folder: folder + "/hf", tensors: [spec]), folder + "/hf", folder + "/hf/model.safetensors"),
         (try SafetensorsFileOutput(path: folder + "/one.safetensors", tensors: [spec]), folder + "/one.safetensors",
          folder + "/one.safetensors"),
         (try GGUFWriter(path: folder + "/one.gguf", tensors: [spec], metadata: []), folder + "/one.gguf", folder + "/one.gguf")]
    }

    private static func write(_ sink: any TensorSink, _ range: Range<Int>) throws {
        try values.withUnsafeBytes { bytes in
            try sink.write("x", piece: UnsafeRawBufferPointer(rebasing: bytes[range]), at: range.lowerBound)
        }
    }

    @Test func piecesInOrderMakeTheSameFileAsOneWrite() throws {
        let whole = temporaryFolder(), pieces = temporaryFolder()
        defer {
            try? FileManager.default.removeItem(atPath: whole)
            try? FileManager.default.removeItem(atPath: pieces)
        }
        for ((sink, _, file), (pieced, _, piecedFile)) in zip(try Self.sinks(in: whole), try Self.sinks(in: pieces)) {
            try Self.values.withUnsafeBytes { try sink.write("x", bytes: $0) }
            try sink.commit()
            // Pieces of 12, 0, 20 and 8 bytes, one of them empty.
            for range in [0..<12, 12..<12, 12..<32, 32..<40] { try Self.write(pieced, range) }
            try pieced.commit()
            #expect(try Data(contentsOf: URL(fileURLWithPath: piecedFile)) == Data(contentsOf: URL(fileURLWithPath: file)), "\(file)")
        }
    }

    @Test func aPieceOutOfOrderOrPastTheEndIsRefused() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (sink, _, file) in try Self.sinks(in: folder) {
            #expect(throws: CheckpointError.io(file: file, problem: "tensor 'x': bytes from 8 given where 0 were written")) {
                try Self.write(sink, 8..<16)
            }
            try Self.write(sink, 0..<8)
            #expect(throws: CheckpointError.io(file: file, problem: "tensor 'x': bytes from 4 given where 8 were written")) {
                try Self.write(sink, 4..<12)
            }
            #expect(throws: CheckpointError.io(file: file, problem: "tensor 'x': bytes 8..<48 given, 40 planned")) {
                try [UInt8](repeating: 0, count: 40).withUnsafeBytes { try sink.write("x", piece: $0, at: 8) }
            }
            try Self.write(sink, 8..<40)
            #expect(throws: CheckpointError.io(file: file, problem: "tensor 'x' written twice")) { try Self.write(sink, 0..<8) }
            sink.abort()
        }
        #expect(listing(folder).isEmpty)
    }

    @Test func aTensorWrittenInPartIsRefusedAtCommitAndLeavesNothing() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (sink, _, file) in try Self.sinks(in: folder) {
            try Self.write(sink, 0..<24)
            #expect(throws: CheckpointError.io(file: file, problem: "tensor 'x' was written only in part (24 of 40 bytes)")) {
                try sink.commit()
            }
            sink.abort()
        }
        #expect(listing(folder).isEmpty)
    }

    // MARK: Conversion windows

    /// A checkpoint holding one BF16 tensor of `shape` with varied values.
    private static func checkpoint(_ folder: String, shape: [Int]) throws -> (Checkpoint, TensorEntry) {
        let count = shape.reduce(1, *)
        let values = (0..<count).map { Float(($0 * 7919) % 1013) / 97 - 5 }
        var bytes = [UInt8](repeating: 0, count: 2 * count)
        try values.withUnsafeBufferPointer { v in try bytes.withUnsafeMutableBytes { try ElementCodec.encode(.bf16, from: v, into: $0) } }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let path = folder + "/m.safetensors"
        let writer = try SafetensorsFileWriter(path: path, tensors: [TensorSpec(name: "t", dtype: .bf16, shape: shape)])
        try bytes.withUnsafeBytes { try writer.write("t", bytes: $0) }
        try writer.finish()
        let checkpoint = try Checkpoint.open(path)
        return (checkpoint, try #require(checkpoint.tensor(named: "t")))
    }

    /// The tensor converted whole: decoded, rows permuted, encoded in one go.
    private static func wholeConversion(_ checkpoint: Checkpoint, _ tensor: TensorEntry, to dtype: DType, heads: Int?,
                                        toGGUF: Bool) throws -> [UInt8] {
        var values = try checkpoint.decode(tensor)
        if let heads {
            var permuted = values
            let rows = tensor.shape[0]
            values.withUnsafeBufferPointer { v in
                permuted.withUnsafeMutableBufferPointer {
                    LlamaFamily.permuteRows(v, into: $0, rows: rows, columns: values.count / rows, heads: heads, toGGUF: toGGUF)
                }
            }
            values = permuted
        }
        var bytes = [UInt8](repeating: 0, count: try #require(dtype.byteCount(forElements: values.count)))
        try values.withUnsafeBufferPointer { v in try bytes.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: v, into: $0) } }
        return bytes
    }

    /// Windows of whole heads (Q/K rows permuted either way) and of whole blocks give
    /// the bytes of the whole-tensor conversion, in pieces no larger than a window.
    @Test(arguments: [DType.q8_0, .q4_K, .f16, .f32])
    func aTensorConvertedInWindowsMatchesTheWholeConversion(dtype: DType) throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        // 64 rows of 256: heads of 16 rows (4096 elements); 1-D of 2560 elements.
        for (shape, heads) in [([64, 256], 4 as Int?), ([64, 256], nil), ([2560], nil)] {
            let (checkpoint, tensor) = try Self.checkpoint(folder + "/\(shape.count)-\(heads ?? 0)", shape: shape)
            for toGGUF in heads == nil ? [true] : [true, false] {
                let expected = try Self.wholeConversion(checkpoint, tensor, to: dtype, heads: heads, toGGUF: toGGUF)
                let spec = TensorSpec(name: "t", dtype: dtype, shape: shape)
                for window in [256, 4096, 5000, 1 << 22] {
                    var out: [UInt8] = []
                    var largest = 0
                    try FormatConversion.convert(tensor, of: checkpoint, to: spec, heads: heads, toGGUF: toGGUF,
                                                 scratch: ConversionScratch(), file: "out", windowElements: window) { bytes, offset in
                        #expect(offset == out.count)
                        largest = max(largest, bytes.count)
                        out.append(contentsOf: bytes)
                    }
                    #expect(out == expected, "\(shape) heads \(heads ?? 0) toGGUF \(toGGUF) window \(window)")
                    // A window of whole heads is at least one head; otherwise at most the window.
                    let bound = min(tensor.elementCount, heads == nil ? window : max(4096, window / 4096 * 4096))
                    #expect(largest <= bound / dtype.blockElements * dtype.blockBytes,
                            "\(shape) window \(window): a piece of \(largest) bytes")
                }
            }
        }
    }
}
