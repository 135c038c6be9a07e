import Checkpoints
import Foundation
@testable import Merging

/// A tensor to write into a test checkpoint.
struct TestTensor {
    var name: String
    var shape: [Int]
    var values: [Float]
    var dtype: DType = .f32
}

/// A fresh temporary folder, removed when the test's scope ends via `defer`.
func temporaryFolder() -> String {
    let path = NSTemporaryDirectory() + "claire-merge-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Writes `tensors` as a safetensors file at `path` through the project's writer.
func writeCheckpoint(_ path: String, _ tensors: [TestTensor]) {
    let writer = try! SafetensorsFileWriter(path: path, tensors: tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) })
    for t in tensors {
        var bytes = [UInt8](repeating: 0, count: t.dtype.byteCount(forElements: t.values.count)!)
        if t.dtype == .i32 {
            for (i, v) in t.values.enumerated() {
                withUnsafeBytes(of: Int32(v).littleEndian) { bytes.replaceSubrange((4 * i)..<(4 * i + 4), with: $0) }
            }
        } else {
            t.values.withUnsafeBufferPointer { v in
                bytes.withUnsafeMutableBytes { try! ElementCodec.encode(t.dtype, from: v, into: $0) }
            }
        }
        bytes.withUnsafeBytes { try! writer.write(t.name, bytes: $0) }
    }
    try! writer.finish()
}

/// Collects merged tensors in memory (the executor writes from one thread at a time).
final class MemorySink: TensorSink, @unchecked Sendable {
    var tensors: [String: [UInt8]] = [:]
    var order: [String] = []

    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        tensors[name] = Array(bytes)
        order.append(name)
    }

    /// Pieces must come in order, each where the last ended (as the file writers require).
    func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        let done = tensors[name]?.count ?? 0
        guard offset == done else { throw .io(file: "memory", problem: "tensor '\(name)': piece at \(offset) after \(done) bytes") }
        if offset == 0 {
            tensors[name] = Array(bytes)
            order.append(name)
        } else {
            tensors[name]!.append(contentsOf: bytes)
        }
    }

    func commit() throws(CheckpointError) {}
    func abort() {}

    /// The tensor decoded from `dtype`.
    func values(_ name: String, _ dtype: DType = .f32) -> [Float] {
        let bytes = tensors[name]!
        var out = [Float](repeating: 0, count: bytes.count / dtype.blockBytes)
        bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { try! ElementCodec.decode(dtype, from: b, into: $0) } }
        return out
    }
}

/// Runs `plan` on `threads` workers and returns the sink.
func runMerge(_ plan: MergePlan, threads: Int = 2, quantizedDelta: QuantizedDelta = .aware) throws -> MemorySink {
    let prepared = try PreparedMerge.prepare(plan)
    let sink = MemorySink()
    let executor = MergeExecutor(prepared, threads: threads)
    executor.quantizedDelta = quantizedDelta
    try executor.run(into: sink)
    return sink
}

/// Deterministic pseudo-random values for bigger test tensors.
func noise(_ count: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    let stream = CounterRandom(seed: seed, tensor: "noise", model: 0)
    var values = [Float](repeating: 0, count: count)
    for i in 0..<count { values[i] = (stream.uniform(i) - 0.5) * scale }
    return values
}

/// A value's little-endian bytes (1 to 8 of them) as an integer that orders like the
/// value: sign-magnitude turned into two's complement, so adjacent values differ by 1.
func orderedBits(_ bytes: ArraySlice<UInt8>) -> Int64 {
    var bits: UInt64 = 0
    for (k, b) in bytes.enumerated() { bits |= UInt64(b) << (8 * UInt64(k)) }
    let signBit: UInt64 = 1 << (UInt64(bytes.count) * 8 - 1)
    let magnitude = Int64(bitPattern: bits & (signBit - 1))
    return bits & signBit != 0 ? -magnitude : magnitude
}

/// How two tensors' bytes of elements `width` bytes wide compare: elements counted,
/// bit-identical, and at most one step of their type apart (identical ones included).
func stepAgreement(_ mine: [UInt8], _ theirs: [UInt8], width: Int) -> (total: Int, identical: Int, close: Int) {
    var total = 0, identical = 0, close = 0
    for i in 0..<min(mine.count, theirs.count) / width {
        let a = mine[(i * width)..<((i + 1) * width)], b = theirs[(i * width)..<((i + 1) * width)]
        total += 1
        if a == b { identical += 1 }
        let (difference, overflow) = orderedBits(a).subtractingReportingOverflow(orderedBits(b))
        if !overflow, abs(difference) <= 1 { close += 1 }
    }
    return (total, identical, close)
}
