import Checkpoints
import Dispatch

/// Runs a prepared merge: tensors one after another in the plan's order, each
/// produced by its method's kernel on fixed chunks in parallel (`ChunkScheduler`),
/// decoded to Float32 in per-worker buffers (`TensorDecoder`), combined and encoded
/// into one of two reused output buffers, then handed to the sink by a writer thread
/// while the next tensor is computed. Chunk boundaries and the order of every
/// floating-point sum depend only on the tensor, never on the thread count, so the
/// output bytes do not either.
/// Resident memory is the scratch buffers, two output tensors, the input pages of
/// the tensor in hand (released as soon as they are used) and, for DARE with L1
/// rescaling, a recorded mask of one byte per entry of the largest tensor.
public final class MergeExecutor: @unchecked Sendable {
    /// Elements per chunk of `init(_:threads:)`.
    public static let chunkElements = ChunkScheduler.chunkElements
    static let segmentElements = ChunkScheduler.segmentElements

    /// The merge being run.
    public let merge: PreparedMerge
    let chunks: ChunkScheduler
    let decoder: TensorDecoder
    let windowSearch: MagnitudeWindowSearch
    let taskVectors: TaskVectorState
    /// Two output buffers: one is written out while the next tensor is computed into the other.
    private let outputs: [UnsafeMutableRawBufferPointer]
    /// Signalled when the write from the matching output buffer has finished.
    private let outputFree = [DispatchSemaphore(value: 1), DispatchSemaphore(value: 1)]
    private let writer = DispatchQueue(label: "claire.merge.writer")

    /// When true, the first NaN or infinite input value stops the merge with an error.
    public var strict: Bool {
        get { decoder.strict }
        set { decoder.strict = newValue }
    }

    /// How deltas of quantized fine-tunes of unquantized bases are taken (default `.aware`).
    public var quantizedDelta: QuantizedDelta {
        get { decoder.quantizedDelta }
        set { decoder.quantizedDelta = newValue }
    }

    /// When set, only the output tensors of these names are produced (one slice of
    /// a merge spread over several processes); the others are skipped unread.
    public var onlyTensors: Set<String>?

    /// The input tensors that held NaN or infinite values, as "tensor in file",
    /// sorted (complete after `run`).
    public var nonFiniteInputs: [String] { decoder.nonFinite.names }

    /// Prepares buffers for `merge` on `threads` workers (at least 1).
    public convenience init(_ merge: PreparedMerge, threads: Int) {
        self.init(merge, threads: threads, chunkElements: MergeExecutor.chunkElements,
                  segmentElements: MergeExecutor.segmentElements)
    }

    /// An executor with chunks of about `chunkElements` and release segments of about
    /// `segmentElements` (both multiples of 256, so chunks of quantized tensors start
    /// and end on whole blocks).
    @_spi(Testing)
    public init(_ merge: PreparedMerge, threads: Int, chunkElements: Int, segmentElements: Int) {
        self.merge = merge
        chunks = ChunkScheduler(merge, threads: threads, chunkElements: chunkElements, segmentElements: segmentElements)
        decoder = TensorDecoder(merge.checkpoints)
        windowSearch = MagnitudeWindowSearch(chunks: chunks, decoder: decoder)
        taskVectors = TaskVectorState(merge)
        let outputBytes = max(1, merge.jobs.filter { $0.kind != .copy }.map(\.outputByteCount).max() ?? 1)
        outputs = [.allocate(byteCount: outputBytes, alignment: 64), .allocate(byteCount: outputBytes, alignment: 64)]
    }

    deinit { for buffer in outputs { buffer.deallocate() } }

    /// Produces every output tensor into `sink`, calling `progress` after each.
    public func run(into sink: TensorSink, progress: (MergeProgress) -> Void = { _ in }) throws(MergeError) {
        let jobs = onlyTensors.map { only in merge.jobs.filter { only.contains($0.name) } } ?? merge.jobs
        let total = jobs.reduce(0) { $0 + $1.elementCount }
        var state = MergeProgress(tensorsDone: 0, tensorCount: jobs.count, elementsDone: 0, elementCount: total)
        // Tensors are written in order by one writer thread, overlapping the next
        // tensor's computation; a write error stops the merge at the next tensor.
        let failure = Locked<(any Error)?>(nil)
        let target = UncheckedSendable(sink)
        var slot = 0
        do {
            try merge.plan.method.entry.kernel.begin(on: self)
            for job in jobs {
                outputFree[slot].wait()
                let bytes: UnsafeRawBufferPointer
                do {
                    if let error = failure.withLock({ $0 }) { throw error }
                    bytes = try produce(job, into: outputs[slot])
                } catch {
                    // A semaphore must be back at its initial count when it goes away.
                    outputFree[slot].signal()
                    throw error
                }
                let free = outputFree[slot]
                let finished = UncheckedSendable((merge, job, bytes))
                writer.async {
                    let (merge, job, bytes) = finished.value
                    do {
                        try target.value.write(job.name, bytes: bytes)
                    } catch {
                        failure.withLock { if $0 == nil { $0 = error } }
                    }
                    if job.kind == .copy { merge.checkpoints[job.templateCheckpoint].release(job.template) }
                    free.signal()
                }
                slot = 1 - slot
                state.tensorsDone += 1
                state.elementsDone += job.elementCount
                progress(state)
            }
            writer.sync {}
            chunks.finishReleases()
            if let error = failure.withLock({ $0 }) { throw error }
        } catch let error as MergeError {
            writer.sync {}
            throw error
        } catch let error as CheckpointError {
            writer.sync {}
            throw .checkpoint(error)
        } catch {
            writer.sync {}
            throw .badPlan("\(error)")
        }
    }

    /// Computes `job` into `output` and returns its bytes (for a copied tensor, the
    /// base's own bytes, whose pages the writer releases once written).
    private func produce(_ job: MergeJob, into output: UnsafeMutableRawBufferPointer) throws -> UnsafeRawBufferPointer {
        if job.kind == .copy { return merge.checkpoints[job.templateCheckpoint].data(of: job.template) }
        defer { chunks.release(job) }
        precondition(job.outputByteCount <= output.count, "output buffer too small for '\(job.name)'")
        let bytes = UnsafeMutableRawBufferPointer(rebasing: output[0..<job.outputByteCount])
        try merge.kernel(for: job).produce(job, on: self, into: bytes)
        return UnsafeRawBufferPointer(bytes)
    }
}
