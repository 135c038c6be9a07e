import Checkpoints
import Foundation
import Merging
import Testing
@testable import Statistics

/// A Q8_0 or Q4_K fine-tune that is the quantized F32 base with two blocks moved: with
/// the aware delta only the moved blocks are nonzero, with `naive` most entries are.
@Test(arguments: [DType.q8_0, .q4_K])
func statisticsTakeTheQuantizationAwareDelta(_ dtype: DType) throws {
    let fixture = StatisticsFixture()
    let rows = 2, columns = 512, count = rows * columns, block = dtype.blockElements
    var base = [Float](repeating: 0, count: count)
    for i in 0..<count { base[i] = Float((i * 37) % 101 - 50) * 0.004 }
    var moved = base
    let changed = [0, count / block - 1]
    for b in changed { for i in (b * block)..<((b + 1) * block) { moved[i] += 0.03 } }
    var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: count)!)
    try moved.withUnsafeBufferPointer { v in try bytes.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: v, into: $0) } }
    let tunedPath = fixture.folder + "/tuned.gguf"
    let writer = try GGUFWriter(path: tunedPath, tensors: [TensorSpec(name: "w", dtype: dtype, shape: [rows, columns])],
                                metadata: [MetadataEntry("general.architecture", .string("llama"))])
    try bytes.withUnsafeBytes { try writer.write("w", bytes: $0) }
    try writer.commit()
    let baseFile = try fixture.checkpoint("base.safetensors", [("w", [rows, columns], base)])
    let tuned = try Checkpoint.open(tunedPath)
    var options = DeltaStatisticsOptions()
    // Chunks of one superblock: the changed blocks sit at the first and the last chunk.
    options.chunkElements = 256
    let aware = try DeltaStatistics.compute(base: baseFile, tuned: [tuned], names: ["ft"], options: options).model.deltas[0]
    #expect(aware.zeros >= count - changed.count * block)
    #expect(aware.zeros < count)
    options.quantizedDelta = .naive
    let naive = try DeltaStatistics.compute(base: baseFile, tuned: [tuned], names: ["ft"], options: options).model.deltas[0]
    #expect(naive.zeros < count / 2)
}
