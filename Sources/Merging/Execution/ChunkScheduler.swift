import Checkpoints

/// Splits each tensor into fixed chunks and runs a pass over them on the worker
/// threads, each with its own `WorkerScratch`. Chunk boundaries depend only on the
/// tensor and the method's kernel, never on the thread count, so neither do the
/// results of a pass that are combined in chunk order.
final class ChunkScheduler: @unchecked Sendable {
    /// Elements per chunk: a few hundred kilobytes per buffer, so a worker's buffers stay in cache.
    static let chunkElements = 1 << 16
    /// Elements per output window: the final pass encodes a tensor a window at a time
    /// into one of two buffers (`OutputWindows`), 8 MB each for BF16 output, 16 MB for F32.
    static let windowElements = 1 << 22

    let merge: PreparedMerge
    let threads: Int
    /// Elements per chunk (before rounding to whole kernel rows).
    let chunkTarget: Int
    /// Elements per output window (before rounding to whole chunks).
    let windowTarget: Int
    /// One per worker thread.
    let scratch: [WorkerScratch]

    /// Chunks of about `chunkElements` and output windows of about `windowElements`
    /// (both multiples of 256, so chunks of quantized tensors start and end on whole blocks).
    init(_ merge: PreparedMerge, threads: Int, chunkElements: Int, windowElements: Int) {
        precondition(chunkElements > 0 && chunkElements % 256 == 0 && windowElements > 0 && windowElements % 256 == 0,
                     "chunk and window sizes must be positive multiples of 256")
        self.merge = merge
        self.threads = max(1, threads)
        chunkTarget = chunkElements
        windowTarget = windowElements
        var capacity = 1, rowCapacity = 1
        for job in merge.jobs where job.kind != .copy {
            let row = merge.kernel(for: job).rowLength(of: job)
            capacity = max(capacity, ChunkScheduler.chunkSize(elements: job.elementCount, row: row, target: chunkElements))
            rowCapacity = max(rowCapacity, row)
        }
        // Slices may give a tensor more inputs than the plan has distinct models.
        let models = merge.jobs.reduce(merge.plan.contributingModels.count) { max($0, $1.inputs.count) }
        scratch = (0..<self.threads).map { _ in WorkerScratch(capacity: capacity, models: models, rowCapacity: rowCapacity) }
    }

    /// Elements per chunk of a tensor of `elements`: whole rows of the kernel's `row`
    /// length, about `target` elements (one row when a row is longer), never more than the tensor.
    static func chunkSize(elements: Int, row: Int, target: Int) -> Int {
        let row = max(row, 1)
        if row >= target { return row }
        return max(1, min(elements, target / row * row))
    }

    func chunkSize(for job: MergeJob) -> Int {
        ChunkScheduler.chunkSize(elements: job.elementCount, row: merge.kernel(for: job).rowLength(of: job), target: chunkTarget)
    }

    func chunkCount(_ job: MergeJob) -> Int {
        let size = chunkSize(for: job)
        return (job.elementCount + size - 1) / size
    }

    /// Whole chunks per output window of `job` (at least one).
    func chunksPerWindow(_ job: MergeJob) -> Int { max(1, windowTarget / chunkSize(for: job)) }

    /// The most bytes one output window of `job` takes (windows start on chunk
    /// boundaries, so on whole blocks).
    func windowBytes(_ job: MergeJob) -> Int {
        let elements = min(job.elementCount, chunksPerWindow(job) * chunkSize(for: job))
        return job.outputDType.byteRange(of: 0..<elements).count
    }

    /// Calls `body(scratch, chunk, range)` for every chunk of `job`; each worker takes
    /// the next chunk not yet taken, so a worker slowed by another thread (the writer)
    /// does not hold the others back. The first error stops the pass. The inputs are
    /// read into the worker's staging buffer (`TensorDecoder.read`), not mapped, so a
    /// pass keeps nothing of them resident whatever the tensor's size.
    ///
    /// The final pass of `job` passes `output`: its chunks are then taken a window at a
    /// time (`chunksPerWindow`), each window opened before its chunks run, so `body`
    /// stores its chunk into it (`TensorDecoder.store(_:_:_:into:)`), and handed to the
    /// writer once they are done.
    func forEachChunk(
        _ job: MergeJob, writing output: OutputWindows? = nil, _ body: (WorkerScratch, Int, Range<Int>) throws -> Void
    ) throws {
        let size = chunkSize(for: job)
        let count = job.elementCount
        let chunks = (count + size - 1) / size
        let perWindow = output == nil ? max(chunks, 1) : chunksPerWindow(job)
        // One step per output window (one for the whole tensor in the passes before the final one).
        var first = 0
        while first < chunks {
            let start = first, end = min(chunks, first + perWindow)
            try output?.open((start * size)..<min(count, end * size))
            do {
                try forEach(count: end - start) { s, j in
                    let c = start + j
                    // Every body slices the worker's buffers to the chunk's length.
                    let range = (c * size)..<min(count, (c + 1) * size)
                    precondition(range.count <= s.capacity, "a chunk of \(range.count) exceeds the worker buffers")
                    try body(s, c, range)
                }
            } catch {
                output?.abandon()
                throw error
            }
            output?.close()
            first = end
        }
    }

    /// Calls `body(scratch, job)` for every job in `0..<count` on the worker threads.
    func forEach(count: Int, _ body: (WorkerScratch, Int) throws -> Void) throws {
        let scratch = self.scratch
        try withoutActuallyEscaping(body) { body in
            // Each job touches only its own results and its worker's scratch.
            let work = UncheckedSendable(body)
            try WorkerQueue.forEach(count: count, workers: threads) { (worker, job) throws(any Error) in
                try work.value(scratch[worker], job)
            }
        }
    }
}

/// A value handed to worker threads whose safety the caller guarantees (each worker
/// touches only its own chunks and scratch).
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
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
