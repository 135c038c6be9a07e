import Checkpoints
import Foundation
import Testing
@_spi(Testing) @testable import Merging

/// Records the pieces the executor hands over, and can fail one of them.
private final class PieceSink: TensorSink, @unchecked Sendable {
    var pieces: [(name: String, offset: Int, count: Int)] = []
    var tensors: [String: [UInt8]] = [:]
    /// The piece (counted from 0 over the whole run) whose write fails.
    var failAt: Int?

    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        try write(name, piece: bytes, at: 0)
    }

    func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        if pieces.count == failAt { throw .io(file: "sink", problem: "disk full") }
        pieces.append((name, offset, bytes.count))
        guard offset == (tensors[name]?.count ?? 0) else { throw .io(file: "sink", problem: "piece of '\(name)' out of order") }
        tensors[name, default: []].append(contentsOf: bytes)
    }

    func commit() throws(CheckpointError) {}
    func abort() {}
}

/// Base and two fine-tunes of one F32 tensor of `rows × columns` and a small norm.
private func trio(_ folder: String, rows: Int, columns: Int) -> (base: String, a: String, b: String) {
    let n = rows * columns
    try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let paths = (folder + "/base.safetensors", folder + "/a.safetensors", folder + "/b.safetensors")
    for (k, path) in [paths.0, paths.1, paths.2].enumerated() {
        writeCheckpoint(path, [TestTensor(name: "w", shape: [rows, columns], values: noise(n, seed: UInt64(k + 1))),
                               TestTensor(name: "norm", shape: [columns], values: noise(columns, seed: 9))])
    }
    return paths
}

private func tiesPlan(_ t: (base: String, a: String, b: String), rescale: Rescale? = nil, method: MergeMethod = .ties) -> MergePlan {
    MergePlan(method: method, base: t.base, models: [
        ModelSpec(path: t.a, parameters: ["density": .number(0.4)]), ModelSpec(path: t.b, parameters: ["density": .number(0.7)]),
    ], rescale: rescale)
}

/// A tensor many windows long is handed over in consecutive pieces no larger than a
/// window, and the pieces put together are the bytes of the default executor's output.
@Test(arguments: [MergeMethod.ties, .dareTies, .slerp, .linear])
func aLargeTensorIsWrittenInWindowSizedPieces(method: MergeMethod) throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let t = trio(folder, rows: 40, columns: 300)
    let plan = method == .slerp
        ? MergePlan(method: .slerp, base: t.base, models: [ModelSpec(path: t.a)], parameters: ["t": .number(0.3)])
        : method == .linear ? MergePlan(method: .linear, base: nil, models: [ModelSpec(path: t.a), ModelSpec(path: t.b)])
        : tiesPlan(t, method: method)
    let prepared = try PreparedMerge.prepare(plan)
    let whole = MemorySink()
    try MergeExecutor(prepared, threads: 2).run(into: whole)
    let windowed = PieceSink()
    // Chunks of 256 elements and windows of 768: three chunks per window, 16 windows.
    try MergeExecutor(prepared, threads: 2, chunkElements: 256, windowElements: 768).run(into: windowed)
    let pieces = windowed.pieces.filter { $0.name == "w" }
    #expect(pieces.count == 16)
    #expect(pieces.allSatisfy { $0.count <= 768 * 4 })
    #expect(windowed.tensors["w"] == whole.tensors["w"])
    #expect(windowed.tensors["norm"] == whole.tensors["norm"])
}

/// The executor's output buffers are two windows, whatever the largest tensor.
@Test func outputBuffersDoNotGrowWithTheTensor() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    var capacities: [Int] = []
    for rows in [4, 64] {
        let t = trio(folder + "/\(rows)", rows: rows, columns: 1024)
        let prepared = try PreparedMerge.prepare(tiesPlan(t))
        capacities.append(MergeExecutor(prepared, threads: 1, chunkElements: 1024,
                                        windowElements: 2048).outputWindowBytes)
    }
    #expect(capacities == [2048 * 4, 2048 * 4])
}

/// A write failing in the middle of a tensor stops the merge with that error, and
/// no piece is written after it.
@Test func aWriteErrorMidTensorStopsTheMerge() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let t = trio(folder, rows: 40, columns: 300)
    let prepared = try PreparedMerge.prepare(tiesPlan(t, rescale: .l1, method: .dareTies))
    let sink = PieceSink()
    sink.failAt = 3
    let executor = MergeExecutor(prepared, threads: 2, chunkElements: 256, windowElements: 256)
    #expect(throws: MergeError.checkpoint(.io(file: "sink", problem: "disk full"))) { try executor.run(into: sink) }
    #expect(sink.pieces.count == 3)
    // The executor can run again afterwards: its buffers were all handed back.
    let again = PieceSink()
    try executor.run(into: again)
    #expect(again.tensors["w"]?.count == 40 * 300 * 4)
}

/// DARE with L1 rescaling draws its random mask again in the fusion pass instead of
/// recording it: the output is the reference's, across chunk and window boundaries.
@Test(arguments: [MergeMethod.dareLinear, .dareTies])
func dareWithL1RescaleMatchesTheReferenceInSmallWindows(method: MergeMethod) throws {
    for (shape, window) in [([4097], 768), ([5, 96], 256), ([1025], 1024)] {
        try expectAgreement(DifferentialCase(method: method, shape: shape, dtype: .bf16, threads: 2, density: 0.5,
                                             chunk: 256, window: window, models: 3, rescale: .l1))
    }
}
