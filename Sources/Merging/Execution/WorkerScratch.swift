import Foundation

/// One worker thread's reusable Float32 buffers: allocated once per merge, so the hot
/// loops never allocate.
final class WorkerScratch: @unchecked Sendable {
    /// Entries each of `base`, `inputs`, `out`, `divisors` and `keys` holds.
    let capacity: Int
    let base: UnsafeMutableBufferPointer<Float>
    let inputs: [UnsafeMutableBufferPointer<Float>]
    let out: UnsafeMutableBufferPointer<Float>
    /// Per-entry divisors of the consensus fusion.
    let divisors: UnsafeMutableBufferPointer<Float>
    let rows: UnsafeMutableBufferPointer<UInt64>
    /// Magnitude keys kept by `CandidateRankSearch.collect`.
    let keys: UnsafeMutableBufferPointer<UInt32>
    /// Per-model rank searchers of the current pass (worker-local counts).
    var searches: [RankSearch] = []

    init(capacity: Int, models: Int, rowCapacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
        out = .allocate(capacity: capacity)
        divisors = .allocate(capacity: capacity)
        var inputs: [UnsafeMutableBufferPointer<Float>] = []
        for _ in 0..<max(models, 1) { inputs.append(.allocate(capacity: capacity)) }
        self.inputs = inputs
        rows = .allocate(capacity: max(rowCapacity, 1))
        keys = .allocate(capacity: capacity)
    }

    deinit {
        base.deallocate()
        out.deallocate()
        divisors.deallocate()
        for b in inputs { b.deallocate() }
        rows.deallocate()
        keys.deallocate()
    }
}

/// Per-chunk results written by whichever worker handles the chunk, read in chunk
/// order afterwards (so sums do not depend on the thread count).
final class ChunkResults<Value>: @unchecked Sendable {
    let values: UnsafeMutableBufferPointer<Value>

    init(count: Int, initial: Value) {
        values = .allocate(capacity: max(count, 1))
        values.initialize(repeating: initial)
    }

    deinit {
        values.deinitialize()
        values.deallocate()
    }

    subscript(_ i: Int) -> Value {
        get {
            precondition(i >= 0 && i < values.count, "chunk result index out of range")
            return values[i]
        }
        set {
            precondition(i >= 0 && i < values.count, "chunk result index out of range")
            values[i] = newValue
        }
    }

    /// Stores `transform` of each of `source` from index `offset` on.
    func update<Source>(at offset: Int, with source: UnsafeBufferPointer<Source>, _ transform: (Source) -> Value) {
        precondition(offset >= 0 && offset <= values.count && source.count <= values.count - offset,
                     "chunk results too short")
        for i in 0..<source.count { values[offset + i] = transform(source[i]) }
    }
}

/// Hands out chunk indices one at a time to whichever worker asks.
final class ChunkCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var next: Int

    init(_ first: Int) { next = first }

    /// The next chunk index (past the end once all are taken).
    func take() -> Int {
        lock.withLock {
            defer { next += 1 }
            return next
        }
    }
}

/// The first error raised by any worker.
final class FirstError: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?

    func record(_ e: Error) {
        lock.withLock { if error == nil { error = e } }
    }
}

/// A value handed to worker threads whose safety the caller guarantees (each worker
/// touches only its own chunks and scratch).
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Input tensors holding NaN or infinite values, gathered from workers.
final class NonFiniteInputs: @unchecked Sendable {
    private struct Source: Hashable {
        let checkpoint: Int
        let tensor: String
    }
    private let lock = NSLock()
    /// Each source with its message form, `'tensor' in path`.
    private var found: [Source: String] = [:]

    func record(_ tensor: String, checkpoint: Int, path: String) {
        lock.withLock { found[Source(checkpoint: checkpoint, tensor: tensor)] = "'\(tensor)' in \(path)" }
    }

    /// Whether tensor `tensor` of checkpoint `checkpoint` was recorded.
    func contains(_ tensor: String, checkpoint: Int) -> Bool {
        lock.withLock { found[Source(checkpoint: checkpoint, tensor: tensor)] != nil }
    }

    /// The recorded tensors as `'tensor' in path`, sorted.
    var names: [String] { lock.withLock { found.values.sorted() } }
}
