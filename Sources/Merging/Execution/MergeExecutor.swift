import Checkpoints
import Dispatch

/// Runs a prepared merge: tensors one after another in the plan's order, each
/// produced by its method's kernel on fixed chunks in parallel (`ChunkScheduler`),
/// decoded to Float32 in per-worker buffers (`TensorDecoder`), combined and encoded
/// a window of whole chunks at a time into one of two reused window buffers, each
/// window handed to the sink by a writer thread while the next is computed
/// (`OutputWindows`). Chunk boundaries and the order of every floating-point sum
/// depend only on the tensor, never on the thread count, so the output bytes do not either.
/// Resident memory does not grow with the model or its largest tensor: the workers'
/// chunk buffers, two output windows (`windowElements` entries each), per-chunk
/// results of the passes before the final one (a few numbers per chunk), and each
/// worker's staging buffer for the input bytes of its chunk: inputs are read with
/// `pread`, not mapped (`TensorDecoder.read`), except tensors copied whole.
public final class MergeExecutor: @unchecked Sendable {
    /// Elements per chunk of `init(_:threads:)`.
    public static let chunkElements = ChunkScheduler.chunkElements
    /// Elements per output window of `init(_:threads:)`.
    public static let windowElements = ChunkScheduler.windowElements

    /// The merge being run.
    public let merge: PreparedMerge
    let chunks: ChunkScheduler
    let decoder: TensorDecoder
    let windowSearch: MagnitudeWindowSearch
    let taskVectors: TaskVectorState
    /// The two output windows and the writer thread.
    private let output: OutputWindows
    /// Bytes of each of the two output window buffers.
    var outputWindowBytes: Int { output.capacity }

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
        self.init(merge, threads: threads, chunkElements: MergeExecutor.chunkElements, windowElements: MergeExecutor.windowElements)
    }

    /// An executor with chunks of about `chunkElements` and output windows of about
    /// `windowElements` (both multiples of 256, so chunks of quantized tensors start and
    /// end on whole blocks).
    @_spi(Testing)
    public init(_ merge: PreparedMerge, threads: Int, chunkElements: Int, windowElements: Int = MergeExecutor.windowElements) {
        self.merge = merge
        let chunks = ChunkScheduler(merge, threads: threads, chunkElements: chunkElements, windowElements: windowElements)
        self.chunks = chunks
        decoder = TensorDecoder(merge.checkpoints)
        windowSearch = MagnitudeWindowSearch(chunks: chunks, decoder: decoder)
        taskVectors = TaskVectorState(merge)
        output = OutputWindows(capacity: merge.jobs.filter { $0.kind != .copy }.map { chunks.windowBytes($0) }.max() ?? 1,
                               copyPiece: 4 * windowElements)
    }

    /// Produces every output tensor into `sink`, calling `progress` after each.
    public func run(into sink: TensorSink, progress: (MergeProgress) -> Void = { _ in }) throws(MergeError) {
        let jobs = onlyTensors.map { only in merge.jobs.filter { only.contains($0.name) } } ?? merge.jobs
        let total = jobs.reduce(0) { $0 + $1.elementCount }
        var state = MergeProgress(tensorsDone: 0, tensorCount: jobs.count, elementsDone: 0, elementCount: total)
        // Windows are written in order by one writer thread, overlapping the next
        // window's computation; a write error stops the merge at the next window.
        output.start(into: sink)
        do {
            try merge.plan.method.entry.kernel.begin(on: self)
            for job in jobs {
                try produce(job)
                state.tensorsDone += 1
                state.elementsDone += job.elementCount
                progress(state)
            }
            output.drain()
            try output.check()
        } catch {
            output.drain()
            switch error {
            case let error as MergeError: throw error
            case let error as CheckpointError: throw .checkpoint(error)
            default: throw .badPlan("\(error)")
            }
        }
    }

    /// Computes `job` window by window into the output; a copied tensor is the base's
    /// own bytes, written in pieces whose pages are released once written.
    private func produce(_ job: MergeJob) throws {
        try output.check()
        if job.kind == .copy {
            let checkpoint = merge.checkpoints[job.templateCheckpoint], template = job.template
            let file = checkpoint.files[template.fileIndex]
            output.copy(job.name, checkpoint.data(of: template),
                        release: { file.release((template.offset + $0.lowerBound)..<(template.offset + $0.upperBound)) },
                        done: { checkpoint.release(template) })
            return
        }
        try output.begin(job)
        try merge.kernel(for: job).produce(job, on: self, into: output)
        output.end()
    }
}
