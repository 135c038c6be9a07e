import Checkpoints
import Foundation
import Testing
@_spi(Testing) @testable import Merging

/// The types Claire can encode, with their block sizes (32 or 256 elements).
private let encodableQuantized: [DType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K]

/// Encodes then decodes `values` (whole blocks of `dtype`) in one call.
private func roundTrip(_ values: [Float], _ dtype: DType) throws -> [Float] {
    var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: values.count)!)
    var out = [Float](repeating: 0, count: values.count)
    try values.withUnsafeBufferPointer { v in
        try bytes.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: v, into: $0) }
    }
    try bytes.withUnsafeBytes { b in try out.withUnsafeMutableBufferPointer { try ElementCodec.decode(dtype, from: b, into: $0) } }
    return out
}

/// A base and a fine-tune that is the quantized base with the blocks `changed` moved:
/// the base, the fine-tune's bytes and its decoded values.
/// The base holds values of `baseType`, as the stored base does.
private func quantizedFineTune(_ count: Int, _ dtype: DType, changed: [Int], seed: UInt64, baseType: DType = .f32)
    throws -> (base: [Float], bytes: [UInt8], tuned: [Float])
{
    let base = try roundTrip(noise(count, seed: seed, scale: 0.2), baseType)
    var moved = base
    let block = dtype.blockElements
    for b in changed { for i in (b * block)..<((b + 1) * block) { moved[i] += 0.05 * Float(i % 7 + 1) } }
    var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: count)!)
    try moved.withUnsafeBufferPointer { v in
        try bytes.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: v, into: $0) }
    }
    var tuned = [Float](repeating: 0, count: count)
    try bytes.withUnsafeBytes { b in try tuned.withUnsafeMutableBufferPointer { try ElementCodec.decode(dtype, from: b, into: $0) } }
    return (base, bytes, tuned)
}

@Suite struct QuantizedDeltaTests {
    /// The kernel, run on pieces split at block boundaries (as chunks are), equals the
    /// plain loop over the whole tensor: quantize, dequantize, subtract.
    @Test(arguments: encodableQuantized)
    func piecewiseRequantizationMatchesTheWholeTensorLoop(_ dtype: DType) throws {
        let block = dtype.blockElements
        for blocks in [1, 3, 9, 17] {
            let count = blocks * block
            let (base, _, tuned) = try quantizedFineTune(count, dtype, changed: [blocks / 2], seed: UInt64(blocks))
            let requantized = try roundTrip(base, dtype)
            let reference = (0..<count).map { tuned[$0] - requantized[$0] }
            // Pieces of 1, 2, 3, … blocks: they straddle the kernel's 256-element tiles.
            var delta = tuned
            var start = 0, piece = 1
            while start < count {
                let end = min(count, start + piece * block)
                base.withUnsafeBufferPointer { b in
                    delta.withUnsafeMutableBufferPointer { d in
                        QuantizedDelta.subtractRequantized(UnsafeBufferPointer(rebasing: b[start..<end]),
                                                           from: UnsafeMutableBufferPointer(rebasing: d[start..<end]), as: dtype)
                    }
                }
                start = end
                piece += 1
            }
            #expect(delta.map(\.bitPattern) == reference.map(\.bitPattern), "\(dtype), \(blocks) blocks")
            // Only the changed block differs from the requantized base.
            for i in 0..<count where i / block != blocks / 2 { #expect(delta[i] == 0, "\(dtype)[\(i)]") }
        }
    }

    @Test func onlyEncodableQuantizedFineTunesOfUnquantizedBasesApply() {
        #expect(QuantizedDelta.aware.applies(tuned: .q8_0, base: .bf16))
        #expect(QuantizedDelta.aware.applies(tuned: .q4_K, base: .f32))
        #expect(!QuantizedDelta.naive.applies(tuned: .q8_0, base: .bf16))
        #expect(!QuantizedDelta.aware.applies(tuned: .q8_0, base: .q8_0))
        #expect(!QuantizedDelta.aware.applies(tuned: .q5_K, base: .f32))
        #expect(!QuantizedDelta.aware.applies(tuned: .bf16, base: .f32))
    }

    /// A Q8_0 or Q4_K fine-tune of an F32 or BF16 base, merged by task arithmetic (so
    /// the output is base + δ) with chunks of 256 elements: with the aware delta every
    /// element outside the changed blocks keeps the base's value, with `naive` not.
    @Test(arguments: [(DType.q8_0, DType.f32), (.q4_K, .f32), (.q8_0, .bf16), (.q4_K, .bf16)])
    func unchangedBlocksGiveAZeroDelta(_ tunedType: DType, _ baseType: DType) throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let rows = 3, columns = 512, count = rows * columns, block = tunedType.blockElements
        let changed = [1, count / block - 2]
        let basePath = folder + "/base.safetensors", tunedPath = folder + "/tuned.gguf"
        let generated = try quantizedFineTune(count, tunedType, changed: changed, seed: 11, baseType: baseType)
        writeCheckpoint(basePath, [TestTensor(name: "w", shape: [rows, columns], values: generated.base, dtype: baseType)])
        let writer = try GGUFWriter(path: tunedPath, tensors: [TensorSpec(name: "w", dtype: tunedType, shape: [rows, columns])],
                                    metadata: [MetadataEntry("general.architecture", .string("llama"))])
        try generated.bytes.withUnsafeBytes { try writer.write("w", bytes: $0) }
        try writer.commit()
        let stored = try Checkpoint.open(basePath)
        let base = try stored.decode(stored.tensors[0])
        let tuned = try Checkpoint.open(tunedPath)
        let tunedValues = try tuned.decode(tuned.tensors[0])
        let requantized = try roundTrip(base, tunedType)

        for mode in QuantizedDelta.allCases {
            let prepared = try PreparedMerge.prepare(MergePlan(method: .taskArithmetic, base: basePath, models: [ModelSpec(path: tunedPath)]))
            let executor = MergeExecutor(prepared, threads: 2, chunkElements: 256)
            executor.quantizedDelta = mode
            let sink = MemorySink()
            try executor.run(into: sink)
            let out = sink.values("w", baseType)
            var unchangedMoved = 0
            for i in 0..<count {
                if changed.contains(i / block) {
                    // Changed blocks carry the fine-tune's change.
                    let delta = mode == .aware ? tunedValues[i] - requantized[i] : tunedValues[i] - base[i]
                    let rounded = try roundTrip([base[i] + delta], baseType == .bf16 ? .bf16 : .f32)[0]
                    #expect(out[i] == rounded, "\(mode) w[\(i)]")
                } else if out[i] != base[i] {
                    unchangedMoved += 1
                }
            }
            if mode == .aware { #expect(unchangedMoved == 0) } else { #expect(unchangedMoved > count / 4) }
        }
    }
}
