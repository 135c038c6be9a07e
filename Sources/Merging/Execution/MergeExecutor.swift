import Checkpoints
import Dispatch
import Foundation

/// A magnitude window found for one tensor, with each chunk's count of the entries
/// equal to its lower and upper boundary keys (nil: unknown, a counting pass finds them).
typealias FoundWindow = (window: MagnitudeWindow, keyCounts: [(lower: Int, upper: Int)]?)

/// Runs a prepared merge: tensors one after another in the plan's order, each split
/// into fixed chunks processed in parallel, decoded to Float32 in per-worker
/// buffers, combined and encoded into one of two reused output buffers, then handed
/// to the sink by a writer thread while the next tensor is computed. Chunk boundaries
/// and the order of every floating-point sum depend only on the tensor, never on the
/// thread count, so the output bytes do not either.
/// Resident memory is the scratch buffers, two output tensors, the input pages of
/// the tensor in hand (released as soon as they are used) and, for DARE with L1
/// rescaling, a recorded mask of one byte per entry of the largest tensor.
public final class MergeExecutor: @unchecked Sendable {
    /// Elements per chunk: a few hundred kilobytes per buffer, so a worker's buffers stay in cache.
    public static let chunkElements = 1 << 16

    /// This executor's elements per chunk (before rounding to whole rows) and per
    /// release segment: `chunkElements` and `segmentElements` unless a test asks for
    /// smaller ones, to reach every chunk and segment boundary with small tensors.
    let chunkTarget: Int
    let segmentTarget: Int

    /// The merge being run.
    public let merge: PreparedMerge
    /// Worker threads.
    public let threads: Int
    private let scratch: [WorkerScratch]
    /// Two output buffers: one is written out while the next tensor is computed into the other.
    private let outputs: [UnsafeMutableRawBufferPointer]
    /// Signalled when the write from the matching output buffer has finished.
    private let outputFree = [DispatchSemaphore(value: 1), DispatchSemaphore(value: 1)]
    private let writer = DispatchQueue(label: "claire.merge.writer")
    /// Hands input pages back to the kernel once a segment is done.
    private let releaser = DispatchQueue(label: "claire.merge.release")
    private let rescale: Rescale
    private let consensus: Consensus?
    /// Per model, the whole-model trim window (`--trim global`), found before the first tensor.
    private var globalWindows: [MagnitudeWindow?] = []
    /// Per model, boundary-key entries met so far in earlier tensors (global trim ties).
    private var globalTiesSeen: [(lower: Int, upper: Int)] = []
    /// Per model, the random mask drawn by the L1-rescale pass (one byte per entry of
    /// the largest merged tensor), replayed by the final pass instead of drawing again.
    private var recordedMasks: [Int: UnsafeMutablePointer<UInt8>] = [:]
    private let largestMergedTensor: Int
    /// Input tensors found holding NaN or infinite values.
    private let nonFinite = NonFiniteInputs()
    /// When true, the first NaN or infinite input value stops the merge with an error.
    public var strict = false

    /// The input tensors that held NaN or infinite values, as "tensor in file",
    /// sorted (complete after `run`).
    public var nonFiniteInputs: [String] { nonFinite.names }

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
        precondition(chunkElements > 0 && chunkElements % 256 == 0 && segmentElements > 0 && segmentElements % 256 == 0,
                     "chunk and segment sizes must be positive multiples of 256")
        self.merge = merge
        self.threads = max(1, threads)
        chunkTarget = chunkElements
        segmentTarget = segmentElements
        let models = merge.plan.contributingModels.count
        var capacity = 1
        var rowCapacity = 1
        var outputBytes = 1
        for job in merge.jobs where job.kind != .copy {
            capacity = max(capacity, MergeExecutor.chunkSize(for: job, method: merge.plan.method, target: chunkElements))
            rowCapacity = max(rowCapacity, job.rowLength)
            outputBytes = max(outputBytes, job.outputByteCount)
        }
        if merge.plan.method.sparsifier != .dellaMagprune { rowCapacity = 1 }
        var scratch: [WorkerScratch] = []
        for _ in 0..<self.threads { scratch.append(WorkerScratch(capacity: capacity, models: models, rowCapacity: rowCapacity)) }
        self.scratch = scratch
        outputs = [.allocate(byteCount: outputBytes, alignment: 64), .allocate(byteCount: outputBytes, alignment: 64)]
        rescale = merge.plan.effectiveRescale
        consensus = merge.plan.effectiveConsensus
        largestMergedTensor = merge.jobs.filter { $0.kind == .merge }.map(\.elementCount).max() ?? 0
    }

    deinit {
        for buffer in outputs { buffer.deallocate() }
        for mask in recordedMasks.values { mask.deallocate() }
    }

    /// Model `m`'s buffer for a recorded random mask, allocated on first use.
    private func recordedMask(for m: Int) -> UnsafeMutablePointer<UInt8> {
        if let mask = recordedMasks[m] { return mask }
        let mask = UnsafeMutablePointer<UInt8>.allocate(capacity: max(largestMergedTensor, 1))
        recordedMasks[m] = mask
        return mask
    }

    /// Row length the method's kernels need whole in a chunk (1: any split is fine).
    static func kernelRowLength(for job: MergeJob, method: MergeMethod) -> Int {
        switch method {
        case .della, .dellaLinear: return job.rowLength
        case .modelStock: return job.filterWise ? job.rowLength : 1
        default: return 1
        }
    }

    /// Elements per chunk of `job`: whole rows of the kernel's row length, about
    /// `target` elements (one row when a row is longer), never more than the tensor.
    static func chunkSize(for job: MergeJob, method: MergeMethod, target: Int = chunkElements) -> Int {
        let row = max(kernelRowLength(for: job, method: method), 1)
        if row >= target { return row }
        return max(1, min(job.elementCount, target / row * row))
    }

    /// Elements per chunk of `job` in this executor.
    private func chunkSize(for job: MergeJob) -> Int {
        MergeExecutor.chunkSize(for: job, method: merge.plan.method, target: chunkTarget)
    }

    /// Produces every output tensor into `sink`, calling `progress` after each.
    public func run(into sink: TensorSink, progress: (MergeProgress) -> Void = { _ in }) throws(MergeError) {
        let total = merge.jobs.reduce(0) { $0 + $1.elementCount }
        var state = MergeProgress(tensorsDone: 0, tensorCount: merge.jobs.count, elementsDone: 0, elementCount: total)
        let models = merge.plan.contributingModels.count
        globalWindows = [MagnitudeWindow?](repeating: nil, count: models)
        globalTiesSeen = [(lower: Int, upper: Int)](repeating: (0, 0), count: models)
        if merge.plan.trim == .global { try findGlobalWindows() }
        // Tensors are written in order by one writer thread, overlapping the next
        // tensor's computation; a write error stops the merge at the next tensor.
        let failure = FirstError()
        let target = UncheckedSendable(sink)
        var slot = 0
        do {
            for job in merge.jobs {
                outputFree[slot].wait()
                if let error = failure.error {
                    outputFree[slot].signal()
                    throw error
                }
                let bytes: UnsafeRawBufferPointer
                do {
                    bytes = try produce(job, into: outputs[slot])
                } catch {
                    // A semaphore must be back at its initial count when it goes away.
                    outputFree[slot].signal()
                    throw error
                }
                let free = outputFree[slot]
                let finished = UncheckedSendable((self, job, bytes))
                writer.async {
                    let (executor, job, bytes) = finished.value
                    do {
                        try target.value.write(job.name, bytes: bytes)
                    } catch {
                        failure.record(error)
                    }
                    if job.kind == .copy { executor.merge.checkpoints[job.templateCheckpoint].release(job.template) }
                    free.signal()
                }
                slot = 1 - slot
                state.tensorsDone += 1
                state.elementsDone += job.elementCount
                progress(state)
            }
            writer.sync {}
            releaser.sync {}
            if let error = failure.error { throw error }
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

    // MARK: One tensor

    /// Computes `job` into `output` and returns its bytes (for a copied tensor, the
    /// base's own bytes, whose pages the writer releases once written).
    private func produce(_ job: MergeJob, into output: UnsafeMutableRawBufferPointer) throws -> UnsafeRawBufferPointer {
        let template = merge.checkpoints[job.templateCheckpoint]
        if job.kind == .copy { return template.data(of: job.template) }
        defer {
            let done = UncheckedSendable((merge, job))
            releaser.async {
                let (merge, job) = done.value
                merge.checkpoints[job.templateCheckpoint].release(job.template)
                for input in job.inputs { merge.checkpoints[input.checkpoint].release(input.tensor) }
            }
        }
        precondition(job.outputByteCount <= output.count, "output buffer too small for '\(job.name)'")
        let bytes = UnsafeMutableRawBufferPointer(rebasing: output[0..<job.outputByteCount])
        switch (job.kind, merge.plan.method) {
        case (.convert, _): try runConvert(job, into: bytes)
        case (_, .linear): try runLinear(job, into: bytes)
        case (_, .slerp): try runSlerp(job, into: bytes)
        case (_, .modelStock): try runModelStock(job, into: bytes)
        default: try runTaskVectors(job, into: bytes)
        }
        return UnsafeRawBufferPointer(bytes)
    }

    /// Elements per release segment: a final pass hands input pages back to the kernel
    /// a segment at a time, since each `madvise` interrupts every core to flush its TLB.
    static let segmentElements = 1 << 22

    /// Calls `body(worker, chunk, range)` for every chunk; each worker takes the next
    /// chunk not yet taken, so a worker slowed by another thread (the writer) does not
    /// hold the others back. The first error stops the tensor. With `releasing` (the
    /// pass that reads the inputs for the last time), chunks are handed out a segment
    /// at a time and each segment's input pages are released once its chunks are done.
    private func forEachChunk(
        _ job: MergeJob, releasing: Bool = false, _ body: (WorkerScratch, Int, Range<Int>) throws -> Void
    ) throws {
        let size = chunkSize(for: job)
        let count = job.elementCount
        let chunks = (count + size - 1) / size
        let perSegment = releasing ? max(1, segmentTarget / size) : max(chunks, 1)
        let failure = FirstError()
        let scratch = self.scratch
        withoutActuallyEscaping(body) { body in
            let work = UncheckedSendable(body)
            var first = 0
            while first < chunks, failure.error == nil {
                let end = min(chunks, first + perSegment)
                let next = ChunkCounter(first)
                DispatchQueue.concurrentPerform(iterations: min(threads, end - first)) { w in
                    while failure.error == nil {
                        let c = next.take()
                        guard c < end else { break }
                        // Every body slices the worker's buffers to the chunk's length.
                        let range = (c * size)..<min(count, (c + 1) * size)
                        precondition(range.count <= scratch[w].capacity, "a chunk of \(range.count) exceeds the worker buffers")
                        do {
                            try work.value(scratch[w], c, range)
                        } catch {
                            failure.record(error)
                        }
                    }
                }
                if releasing {
                    // Off the critical path: the workers go on with the next segment.
                    let elements = (first * size)..<min(count, end * size)
                    let segment = UncheckedSendable((self, job))
                    releaser.async {
                        let (executor, job) = segment.value
                        executor.release(job.template, in: job.templateCheckpoint, elements)
                        for input in job.inputs { executor.release(input.tensor, in: input.checkpoint, elements) }
                    }
                }
                first = end
            }
        }
        if let error = failure.error { throw error }
    }

    private func chunkCount(_ job: MergeJob) -> Int {
        let size = chunkSize(for: job)
        return (job.elementCount + size - 1) / size
    }

    /// Decodes elements `range` of `tensor` into the start of `buffer`.
    /// - Precondition: `range` lies within the tensor and fits in `buffer`.
    private func decode(_ tensor: TensorEntry, in checkpoint: Int, _ range: Range<Int>,
                        into buffer: UnsafeMutableBufferPointer<Float>) throws
    {
        let file = merge.checkpoints[checkpoint]
        let data = file.data(of: tensor)
        let byteRange = MergeExecutor.byteRange(range, of: tensor.dtype)
        precondition(range.lowerBound >= 0 && range.upperBound <= tensor.elementCount && byteRange.upperBound <= data.count,
                     "elements \(range) outside tensor '\(tensor.name)'")
        precondition(range.count <= buffer.count, "\(range.count) elements do not fit a buffer of \(buffer.count)")
        let bytes = UnsafeRawBufferPointer(rebasing: data[byteRange])
        let values = UnsafeMutableBufferPointer(rebasing: buffer[0..<range.count])
        do {
            try ElementCodec.decode(tensor.dtype, from: bytes, into: values)
        } catch {
            throw MergeError.checkpoint(.codec(file: file.path, tensor: tensor.name, problem: error))
        }
        if !MergeExecutor.allFinite(UnsafeBufferPointer(values)) { try noteNonFinite(tensor, in: checkpoint) }
    }

    /// Records that `tensor` of checkpoint `checkpoint` holds NaN or infinite values
    /// (with `strict`, stops the merge).
    private func noteNonFinite(_ tensor: TensorEntry, in checkpoint: Int) throws {
        let file = merge.checkpoints[checkpoint]
        if strict { throw MergeError.nonFiniteInput(file: file.path, tensor: tensor.name) }
        nonFinite.record(tensor.name, checkpoint: checkpoint, path: file.path)
    }

    /// True when no value is NaN or infinite (the exponent field is never all ones).
    static func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
        var special: UInt32 = 0
        for v in values { special |= (v.bitPattern & 0x7f80_0000) == 0x7f80_0000 ? 1 : 0 }
        return special == 0
    }

    /// Decodes elements `range` of a model's tensor, in the output's row order, into
    /// the start of `buffer`; rows stored in another order are read row by row.
    private func decode(_ input: MergeInput, _ range: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws {
        guard let order = input.rowOrder else {
            try decode(input.tensor, in: input.checkpoint, range, into: buffer)
            return
        }
        precondition(range.lowerBound >= 0 && range.count <= buffer.count, "\(range.count) elements do not fit a buffer of \(buffer.count)")
        var start = range.lowerBound
        while start < range.upperBound {
            let row = start / order.columns
            let end = min(range.upperBound, (row + 1) * order.columns)
            let shift = (order.sourceRow(row) - row) * order.columns
            try decode(input.tensor, in: input.checkpoint, (start + shift)..<(end + shift),
                       into: UnsafeMutableBufferPointer(rebasing: buffer[(start - range.lowerBound)...]))
            start = end
        }
    }

    private func decodeBase(_ job: MergeJob, _ range: Range<Int>, _ s: WorkerScratch) throws {
        try decode(job.template, in: job.templateCheckpoint, range, into: s.base)
    }

    /// Decodes model `m` and subtracts the base already in `s.base`: δ in `s.inputs[m]`.
    private func decodeDelta(_ job: MergeJob, _ m: Int, _ range: Range<Int>, _ s: WorkerScratch) throws {
        let input = job.inputs[m]
        if input.tensor.dtype == .bf16, input.rowOrder == nil {
            // The common case in one pass: BF16 is the upper half of a Float32.
            let d = s.inputs[m], b = s.base
            // The loop below reads elements `range` of the tensor and the first
            // `range.count` entries of both buffers.
            precondition(range.lowerBound >= 0 && range.upperBound <= input.tensor.elementCount
                         && range.count <= d.count && range.count <= b.count, "elements \(range) out of bounds")
            let source = bf16Elements(input.tensor, in: input.checkpoint) + range.lowerBound
            // The largest exponent field seen, as a vectorizable maximum: all ones
            // marks a NaN or an infinity.
            var exponent: Int16 = 0
            for i in 0..<range.count {
                let x = source[i]
                d[i] = Float(bitPattern: UInt32(x) &<< 16) - b[i]
                exponent = max(exponent, Int16(bitPattern: x & 0x7f80))
            }
            if exponent == 0x7f80 { try noteNonFinite(input.tensor, in: input.checkpoint) }
            return
        }
        try decode(input, range, into: s.inputs[m])
        let delta = UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<range.count])
        TaskVector.subtract(UnsafeBufferPointer(delta), UnsafeBufferPointer(rebasing: s.base[0..<range.count]), into: delta)
    }

    /// The elements of a BF16 tensor, in place in its mapped file.
    /// Callers read only elements of a range they have checked against `tensor.elementCount`.
    private func bf16Elements(_ tensor: TensorEntry, in checkpoint: Int) -> UnsafePointer<UInt16> {
        let data = merge.checkpoints[checkpoint].data(of: tensor)
        precondition(tensor.dtype == .bf16 && data.count >= 2 * tensor.elementCount && data.baseAddress != nil,
                     "tensor '\(tensor.name)' is not a whole BF16 tensor")
        return data.baseAddress!.assumingMemoryBound(to: UInt16.self)
    }

    /// Encodes `s.out` into the output bytes of `range`.
    private func store(_ job: MergeJob, _ range: Range<Int>, _ s: WorkerScratch, into bytes: UnsafeMutableRawBufferPointer) throws {
        let byteRange = MergeExecutor.byteRange(range, of: job.outputDType)
        precondition(range.lowerBound >= 0 && range.count <= s.out.count && byteRange.upperBound <= bytes.count,
                     "elements \(range) outside the output of '\(job.name)'")
        let values = UnsafeBufferPointer(rebasing: s.out[0..<range.count])
        switch OutputRange.scan(values, as: job.outputDType) {
        case .fits: break
        case .tooLarge: throw MergeError.outputOutOfRange(tensor: job.name, dtype: job.outputDType)
        case .nonFinite:
            // NaN or infinite inputs (allowed without --strict, and reported) carry through;
            // from finite inputs it is the arithmetic that overflowed.
            let sources = [(job.template, job.templateCheckpoint)] + job.inputs.map { ($0.tensor, $0.checkpoint) }
            guard sources.contains(where: { nonFinite.contains($0.0.name, checkpoint: $0.1) }) else {
                throw MergeError.outputOutOfRange(tensor: job.name, dtype: job.outputDType)
            }
        }
        let target = UnsafeMutableRawBufferPointer(rebasing: bytes[byteRange])
        do {
            try ElementCodec.encode(job.outputDType, from: values, into: target)
        } catch {
            throw MergeError.checkpoint(.codec(file: "output", tensor: job.name, problem: error))
        }
    }

    private func release(_ tensor: TensorEntry, in checkpoint: Int, _ range: Range<Int>) {
        let file = merge.checkpoints[checkpoint]
        let bytes = MergeExecutor.byteRange(range, of: tensor.dtype)
        precondition(range.lowerBound >= 0 && bytes.upperBound <= tensor.byteCount, "elements \(range) outside tensor '\(tensor.name)'")
        file.files[tensor.fileIndex].release((tensor.offset + bytes.lowerBound)..<(tensor.offset + bytes.upperBound))
    }

    /// The bytes holding elements `range` of a tensor of `dtype`. Chunks start and end on
    /// whole blocks (chunk sizes and GGUF rows are multiples of every block size), so
    /// quantized tensors slice exactly.
    static func byteRange(_ range: Range<Int>, of dtype: DType) -> Range<Int> {
        let elements = dtype.blockElements, bytes = dtype.blockBytes
        return (range.lowerBound / elements * bytes)..<((range.upperBound + elements - 1) / elements * bytes)
    }

    // MARK: Methods

    private func runConvert(_ job: MergeJob, into bytes: UnsafeMutableRawBufferPointer) throws {
        try forEachChunk(job, releasing: true) { s, _, range in
            try decodeBase(job, range, s)
            // forEachChunk: range.count ≤ capacity of both buffers.
            s.out.baseAddress!.update(from: s.base.baseAddress!, count: range.count)
            try store(job, range, s, into: bytes)
        }
    }

    private func runLinear(_ job: MergeJob, into bytes: UnsafeMutableRawBufferPointer) throws {
        try forEachChunk(job, releasing: true) { s, _, range in
            var models: [UnsafeBufferPointer<Float>] = []
            for (m, input) in job.inputs.enumerated() {
                try decode(input, range, into: s.inputs[m])
                models.append(UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count]))
            }
            Interpolation.linear(models, weights: job.weights, normalize: job.normalize,
                                 into: UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]))
            try store(job, range, s, into: bytes)
        }
    }

    /// SLERP over each tensor flattened into one vector: the norms and the dot
    /// product summed chunk by chunk (in chunk order), then one pair of coefficients.
    private func runSlerp(_ job: MergeJob, into bytes: UnsafeMutableRawBufferPointer) throws {
        let other = job.inputs[0]
        let partial = ChunkResults(count: chunkCount(job), initial: (aa: 0.0, bb: 0.0, ab: 0.0))
        try forEachChunk(job) { s, c, range in
            try decodeBase(job, range, s)
            try decode(other, range, into: s.inputs[0])
            partial[c] = Interpolation.slerpSums(UnsafeBufferPointer(rebasing: s.base[0..<range.count]),
                                                 UnsafeBufferPointer(rebasing: s.inputs[0][0..<range.count]))
        }
        var aa = 0.0, bb = 0.0, ab = 0.0
        for c in 0..<chunkCount(job) {
            aa += partial[c].aa
            bb += partial[c].bb
            ab += partial[c].ab
        }
        let (ca, cb) = Interpolation.slerpCoefficients(t: job.t, normA2: aa, normB2: bb, dot: ab)
        try forEachChunk(job, releasing: true) { s, _, range in
            try decodeBase(job, range, s)
            try decode(other, range, into: s.inputs[0])
            Interpolation.blend(UnsafeBufferPointer(rebasing: s.base[0..<range.count]),
                                UnsafeBufferPointer(rebasing: s.inputs[0][0..<range.count]), ca, cb,
                                into: UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]))
            try store(job, range, s, into: bytes)
        }
    }

    private func runModelStock(_ job: MergeJob, into bytes: UnsafeMutableRawBufferPointer) throws {
        let n = job.inputs.count
        func decodeAll(_ s: WorkerScratch, _ range: Range<Int>) throws -> (UnsafeBufferPointer<Float>, [UnsafeBufferPointer<Float>]) {
            try decodeBase(job, range, s)
            var models: [UnsafeBufferPointer<Float>] = []
            for (m, input) in job.inputs.enumerated() {
                try decode(input, range, into: s.inputs[m])
                models.append(UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count]))
            }
            return (UnsafeBufferPointer(rebasing: s.base[0..<range.count]), models)
        }
        if job.filterWise {
            let row = job.rowLength
            try forEachChunk(job, releasing: true) { s, _, range in
                let (base, models) = try decodeAll(s, range)
                var start = 0
                while start < range.count {
                    let span = start..<min(start + row, range.count)
                    var stats = ModelStockStatistics(models: n)
                    stats.accumulate(base: UnsafeBufferPointer(rebasing: base[span]),
                                     models: models.map { UnsafeBufferPointer(rebasing: $0[span]) })
                    ModelStockStatistics.blend(base: UnsafeBufferPointer(rebasing: base[span]),
                                               models: models.map { UnsafeBufferPointer(rebasing: $0[span]) },
                                               t: stats.interpolationFactor,
                                               into: UnsafeMutableBufferPointer(rebasing: s.out[span]))
                    start = span.upperBound
                }
                try store(job, range, s, into: bytes)
            }
            return
        }
        let partial = ChunkResults(count: chunkCount(job), initial: ModelStockStatistics(models: n))
        try forEachChunk(job) { s, c, range in
            let (base, models) = try decodeAll(s, range)
            partial[c].accumulate(base: base, models: models)
        }
        var stats = ModelStockStatistics(models: n)
        for c in 0..<chunkCount(job) { stats.absorb(partial[c]) }
        let t = stats.interpolationFactor
        try forEachChunk(job, releasing: true) { s, _, range in
            let (base, models) = try decodeAll(s, range)
            ModelStockStatistics.blend(base: base, models: models, t: t,
                                       into: UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]))
            try store(job, range, s, into: bytes)
        }
    }

    /// The task-vector family: sparsify each δᵢ, weigh, elect signs, fuse.
    private func runTaskVectors(_ job: MergeJob, into bytes: UnsafeMutableRawBufferPointer) throws {
        let n = job.inputs.count
        let method = merge.plan.method
        let chunks = chunkCount(job)
        var masks: [TensorMask] = []
        var searching: [Int] = []
        for m in 0..<n {
            let d = job.densities[m]
            let stream = CounterRandom(seed: merge.plan.seed, tensor: job.name, model: m)
            guard let sparsifier = method.sparsifier, d < 1 else { masks.append(.keepAll); continue }
            if d <= 0 { masks.append(.keepNone); continue }
            switch sparsifier {
            case .random: masks.append(.random(density: Float(d), stream: stream))
            case .dellaMagprune: masks.append(.della(density: Float(d), epsilon: Float(job.epsilons[m]), stream: stream))
            case .magnitude, .magnitudeOutliers:
                if let global = globalWindows[m] {
                    masks.append(.window(global, density: Float(d)))
                } else {
                    masks.append(.keepAll)  // replaced once the window is found
                    searching.append(m)
                }
            }
        }
        var knownCounts: [Int: [(lower: Int, upper: Int)]] = [:]
        if !searching.isEmpty {
            let found = try searchWindows(job, models: searching, method: method)
            for (k, m) in searching.enumerated() {
                masks[m] = .window(found[k].window, density: Float(job.densities[m]))
                knownCounts[m] = found[k].keyCounts
            }
        }

        // Ties at a window boundary: entries equal to the boundary before each chunk.
        var ties = [[ChunkTies]](repeating: [], count: n)
        let tieModels = (0..<n).filter { if case .window(let w, _) = masks[$0] { return w.needsOrdinals } else { return false } }
        if !tieModels.isEmpty {
            let counts = ChunkResults(count: chunks * n, initial: (lower: 0, upper: 0))
            let needPass = tieModels.filter { knownCounts[$0] == nil }
            for m in tieModels {
                guard let known = knownCounts[m] else { continue }
                for c in 0..<chunks { counts[c * n + m] = known[c] }
            }
            if !needPass.isEmpty {
                try forEachChunk(job) { s, c, range in
                    try decodeBase(job, range, s)
                    for m in needPass {
                        guard case .window(let w, _) = masks[m] else { continue }
                        try decodeDelta(job, m, range, s)
                        let values = UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count])
                        let keys = w.tieKeys
                        counts[c * n + m] = (keys.lower.map { RankSearch.countEqual(values, key: $0) } ?? 0,
                                             keys.upper.map { RankSearch.countEqual(values, key: $0) } ?? 0)
                    }
                }
            }
            for m in tieModels {
                var running = globalTiesSeen[m]
                ties[m] = []
                for c in 0..<chunks {
                    let here = counts[c * n + m]
                    ties[m].append(ChunkTies(lowerBefore: running.lower, lowerInChunk: here.lower,
                                             upperBefore: running.upper, upperInChunk: here.upper))
                    running.lower += here.lower
                    running.upper += here.upper
                }
                if globalWindows[m] != nil { globalTiesSeen[m] = running }
            }
        }

        // L1 rescale: the factor restoring each sparsified δ's L1 norm over the whole tensor.
        var factors = [Float](repeating: 1, count: n)
        let rescaled = rescale == .l1 ? (0..<n).filter { masks[$0] != .keepAll && masks[$0] != .keepNone } : []
        var recorded = [UnsafeMutablePointer<UInt8>?](repeating: nil, count: n)
        for m in rescaled { if case .random = masks[m] { recorded[m] = recordedMask(for: m) } }
        if !rescaled.isEmpty {
            let sums = ChunkResults(count: chunks * n, initial: (before: 0.0, after: 0.0))
            // A random mask over BF16 base and model measures δ straight from the bytes.
            // (Non-finite inputs are reported by the fusion pass, which decodes them all.)
            let direct = rescaled.filter {
                recorded[$0] != nil && job.template.dtype == .bf16 && job.inputs[$0].tensor.dtype == .bf16
                    && job.inputs[$0].rowOrder == nil
            }
            let decoded = rescaled.filter { !direct.contains($0) }
            try forEachChunk(job) { s, c, range in
                // Recorded masks hold one byte per entry of the largest merged tensor.
                precondition(range.upperBound <= largestMergedTensor || recorded.allSatisfy { $0 == nil },
                             "elements \(range) outside the recorded masks")
                for m in rescaled {
                    guard let keep = recorded[m], case .random(let density, let stream) = masks[m] else { continue }
                    stream.drawMask(start: range.lowerBound, count: range.count, density: density, into: keep + range.lowerBound)
                }
                for m in direct {
                    precondition(range.upperBound <= job.template.elementCount
                                 && range.upperBound <= job.inputs[m].tensor.elementCount
                                 && range.upperBound <= largestMergedTensor, "elements \(range) out of bounds")
                    sums[c * n + m] = L1Norm.ofDifference(bf16: bf16Elements(job.inputs[m].tensor, in: job.inputs[m].checkpoint) + range.lowerBound,
                                                          minus: bf16Elements(job.template, in: job.templateCheckpoint) + range.lowerBound,
                                                          count: range.count, keptBy: recorded[m]! + range.lowerBound)
                }
                guard !decoded.isEmpty else { return }
                try decodeBase(job, range, s)
                for m in decoded {
                    try decodeDelta(job, m, range, s)
                    let values = UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<range.count])
                    if let keep = recorded[m] {
                        sums[c * n + m] = L1Norm.of(UnsafeBufferPointer(values), keptBy: keep + range.lowerBound)
                        continue
                    }
                    let before = L1Norm.of(UnsafeBufferPointer(values))
                    masks[m].apply(to: values, start: range.lowerBound, rowLength: job.rowLength, inverse: false,
                                   ties: ties[m].count > c ? ties[m][c] : ChunkTies(), rowScratch: s.rows)
                    sums[c * n + m] = (before, L1Norm.of(UnsafeBufferPointer(values)))
                }
            }
            for m in rescaled {
                var before = 0.0, after = 0.0
                for c in 0..<chunks {
                    before += sums[c * n + m].before
                    after += sums[c * n + m].after
                }
                factors[m] = Sparsifier.l1RescaleFactor(before: before, after: after)
            }
        }

        let fusion = Fusion(consensus: consensus, normalize: job.normalize, lambda: job.lambda)
        let inverse = rescale == .inverse
        try forEachChunk(job, releasing: true) { s, c, range in
            try decodeBase(job, range, s)
            var deltas: [UnsafeMutableBufferPointer<Float>] = []
            for m in 0..<n {
                try decodeDelta(job, m, range, s)
                let values = UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<range.count])
                let factor = factors[m], weight = job.weights[m]
                if let keep = recorded[m] {
                    precondition(range.upperBound <= largestMergedTensor, "elements \(range) outside the recorded masks")
                    CounterRandom.applyRecorded(values, keep: keep + range.lowerBound, factor: factor, weight: weight)
                } else {
                    masks[m].apply(to: values, start: range.lowerBound, rowLength: job.rowLength, inverse: inverse,
                                   ties: ties[m].count > c ? ties[m][c] : ChunkTies(), rowScratch: s.rows)
                    // x · 1 is x exactly: an unused factor changes nothing, and with
                    // weight 1 as well the loop can be skipped.
                    if factor != 1 || weight != 1 {
                        for i in 0..<values.count { values[i] = values[i] * factor * weight }
                    }
                }
                deltas.append(values)
            }
            fusion.combine(base: UnsafeBufferPointer(rebasing: s.base[0..<range.count]), deltas: deltas,
                           weights: job.weights, into: UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]),
                           divisors: UnsafeMutableBufferPointer(rebasing: s.divisors[0..<range.count]))
            try store(job, range, s, into: bytes)
        }
    }

    /// The ranks whose elements bound `window` among `count` elements (none for an
    /// empty window; rank 0 and `count` need no search).
    static func boundaryRanks(_ window: Range<Int>, count: Int) -> [Int] {
        guard window.lowerBound < window.upperBound else { return [] }
        var ranks: [Int] = []
        if window.lowerBound > 0 { ranks.append(window.lowerBound) }
        if window.upperBound < count { ranks.append(window.upperBound) }
        return ranks
    }

    /// The kept-rank windows of the models in `models` for one tensor: a sample, one
    /// candidate pass (`CandidateRankSearch`), and the two-pass `RankSearch` for any
    /// rank the sample's interval missed.
    private func searchWindows(_ job: MergeJob, models: [Int], method: MergeMethod) throws -> [FoundWindow] {
        let count = job.elementCount
        let sparsifier = method.sparsifier!
        let windows = models.map { sparsifier.rankWindow(count: count, density: job.densities[$0], gamma: job.gammas[$0]) }
        let wanted = windows.map { MergeExecutor.boundaryRanks($0, count: count) }
        var slots: [(model: Int, search: CandidateRankSearch)] = []
        var missed = [[Int]](repeating: [], count: models.count)
        let searched = models.indices.filter { !wanted[$0].isEmpty }
        let samples = try sampleKeys(job, models: searched.map { models[$0] })
        for (k, sample) in zip(searched, samples) {
            for rank in wanted[k] {
                if let search = CandidateRankSearch(rank: rank, count: count, sample: sample) {
                    slots.append((k, search))
                } else {
                    missed[k].append(rank)
                }
            }
        }
        var found = [[Int: RankBoundary]](repeating: [:], count: models.count)
        var keyCounts = [[Int: [Int]]](repeating: [:], count: models.count)
        if !slots.isEmpty {
            let chunks = chunkCount(job)
            let parts = ChunkResults(count: chunks * slots.count, initial: ChunkCandidates())
            let decoded = Set(slots.map(\.model)).sorted()
            try forEachChunk(job) { s, c, range in
                try decodeBase(job, range, s)
                for k in decoded { try decodeDelta(job, models[k], range, s) }
                for (j, slot) in slots.enumerated() {
                    let values = UnsafeBufferPointer(rebasing: s.inputs[models[slot.model]][0..<range.count])
                    parts[c * slots.count + j] = slot.search.collect(values, scratch: s.keys)
                }
            }
            for (j, slot) in slots.enumerated() {
                let chunkParts = (0..<chunks).map { parts[$0 * slots.count + j] }
                if let (boundary, counts) = slot.search.resolve(chunkParts) {
                    found[slot.model][slot.search.rank] = boundary
                    keyCounts[slot.model][slot.search.rank] = counts
                } else {
                    missed[slot.model].append(slot.search.rank)
                }
            }
        }
        if missed.contains(where: { !$0.isEmpty }) {
            let searched = try rankSearch(wanted: missed, jobs: [job], models: models)
            for k in 0..<models.count { found[k].merge(searched[k]) { $1 } }
        }
        return windows.enumerated().map { k, range in
            let window = MagnitudeWindow.ranks(range.lowerBound, range.upperBound, count: count) { found[k][$0]! }
            let keys = window.tieKeys
            let lower = keys.lower == nil ? nil : keyCounts[k][range.lowerBound]
            let upper = keys.upper == nil ? nil : keyCounts[k][range.upperBound]
            if (keys.lower != nil && lower == nil) || (keys.upper != nil && upper == nil) { return (window, nil) }
            let chunks = lower?.count ?? upper?.count ?? 0
            return (window, (0..<chunks).map { (lower?[$0] ?? 0, upper?[$0] ?? 0) })
        }
    }

    /// The magnitude keys of each model's δ over `CandidateRankSearch.sampleRanges`,
    /// runs concatenated. The runs are read in pieces no longer than the job's chunk
    /// (a run may cover a whole tensor twice a chunk long, more than a worker's
    /// buffers hold), the pieces in parallel.
    private func sampleKeys(_ job: MergeJob, models: [Int]) throws -> [[UInt32]] {
        let pieceLength = chunkSize(for: job)
        var pieces: [(range: Range<Int>, offset: Int)] = []
        var total = 0
        for range in CandidateRankSearch.sampleRanges(count: job.elementCount) {
            var start = range.lowerBound
            while start < range.upperBound {
                let end = min(range.upperBound, start + pieceLength)
                pieces.append((start..<end, total))
                total += end - start
                start = end
            }
        }
        let keys = models.map { _ in ChunkResults(count: total, initial: UInt32(0)) }
        let work = pieces
        let next = ChunkCounter(0)
        let failure = FirstError()
        let scratch = self.scratch
        DispatchQueue.concurrentPerform(iterations: min(threads, pieces.count)) { w in
            while failure.error == nil {
                let r = next.take()
                guard r < work.count else { break }
                let (range, offset) = work[r], s = scratch[w]
                do {
                    try decodeBase(job, range, s)
                    for (k, m) in models.enumerated() {
                        try decodeDelta(job, m, range, s)
                        let delta = UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count])
                        keys[k].update(at: offset, with: delta, magnitudeKey)
                    }
                } catch {
                    failure.record(error)
                }
            }
        }
        if let error = failure.error { throw error }
        return keys.map { Array($0.values) }
    }

    /// Finds, for each model, the elements at its `wanted` ranks of the (|δ|, index)
    /// order over the chunks of `jobs`, in two streaming passes.
    private func rankSearch(wanted: [[Int]], jobs: [MergeJob], models: [Int]) throws -> [[Int: RankBoundary]] {
        // Each pass hands every searched model's δ, chunk by chunk, to its searcher.
        func pass(_ count: @escaping (inout RankSearch, UnsafeBufferPointer<Float>) -> Void) throws {
            for job in jobs {
                try forEachChunk(job) { s, _, range in
                    try decodeBase(job, range, s)
                    for (k, m) in models.enumerated() where !wanted[k].isEmpty {
                        try decodeDelta(job, m, range, s)
                        count(&s.searches[k], UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count]))
                    }
                }
            }
        }
        for s in scratch { s.searches = wanted.map { RankSearch(ranks: $0) } }
        try pass { $0.countCoarse($1) }
        var combined = scratch[0].searches
        for s in scratch.dropFirst() { for k in 0..<combined.count { combined[k].absorb(s.searches[k]) } }
        for k in 0..<combined.count { combined[k].finishCoarse() }
        for s in scratch { s.searches = combined.map { $0.fineCounter() } }
        try pass { $0.countFine($1) }
        var result: [[Int: RankBoundary]] = []
        for k in 0..<combined.count {
            var fine = scratch[0].searches[k]
            for s in scratch.dropFirst() { fine.absorb(s.searches[k]) }
            var found: [Int: RankBoundary] = [:]
            for (rank, boundary) in zip(wanted[k], fine.boundaries()) { found[rank] = boundary }
            result.append(found)
        }
        for s in scratch { s.searches = [] }
        return result
    }

    /// `--trim global`: each trimmed model's top-k window over all its merged tensors at once.
    private func findGlobalWindows() throws(MergeError) {
        let jobs = merge.jobs.filter { $0.kind == .merge }
        guard let first = jobs.first else { return }
        let total = jobs.reduce(0) { $0 + $1.elementCount }
        var models: [Int] = []
        var ranges: [Range<Int>] = []
        for m in 0..<first.inputs.count where first.densities[m] > 0 && first.densities[m] < 1 {
            models.append(m)
            ranges.append(Sparsifier.magnitude.rankWindow(count: total, density: first.densities[m], gamma: 0))
        }
        guard !models.isEmpty else { return }
        do {
            let wanted = ranges.map { MergeExecutor.boundaryRanks($0, count: total) }
            let found = try rankSearch(wanted: wanted, jobs: jobs, models: models)
            for (k, m) in models.enumerated() {
                globalWindows[m] = MagnitudeWindow.ranks(ranges[k].lowerBound, ranges[k].upperBound, count: total) { found[k][$0]! }
            }
        } catch let error as MergeError {
            throw error
        } catch {
            throw .badPlan("\(error)")
        }
    }
}
