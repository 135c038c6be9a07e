import Checkpoints
import Dispatch
import Foundation

extension DeltaStatistics {
    /// Streams δᵢ = θᵢ − θ₀ for every tensor the base shares with all of `tuned`
    /// and measures them (see `docs/stats.md` for every figure).
    ///
    /// Two passes over the tensors, each tensor decoded chunk by chunk from the
    /// checkpoints' maps, tensors in parallel. The first takes every additive
    /// figure and a coarse histogram of |δ|, which places each top-k boundary
    /// (each tensor's top 1 % and support, each scope's top 1 %) in one coarse
    /// bin. The second counts the exact values of those bins, which gives the
    /// top-k figures exactly, then reads each tensor once more to count the
    /// positions both deltas of a pair keep in their supports.
    public static func compute(
        base: Checkpoint, tuned: [Checkpoint], names: [String], options: DeltaStatisticsOptions = DeltaStatisticsOptions()
    ) throws(DeltaStatisticsError) -> DeltaStatisticsReport {
        precondition(!tuned.isEmpty && names.count == tuned.count, "one name per fine-tuned checkpoint")
        let run = StatisticsRun(plan: try StatisticsPlan(base: base, tuned: tuned), inputs: [base] + tuned, options: options)
        let measured = try run.forEachTensor(run.measure)
        run.findScopeBoundaries(measured)
        let tensors = try run.forEachTensor { (index, scratch) throws(CheckpointError) in
            try run.resolve(measured[index], run.plan.tensors[index], scratch)
        }
        return run.report(tensors, names: names)
    }
}

/// One worker's buffers: one chunk of the base and of each delta, a coarse
/// histogram per delta, and fine histograms for the bins the second pass counts.
final class StatisticsScratch {
    let chunk: Int
    let base: UnsafeMutablePointer<Float>
    let deltas: UnsafeMutablePointer<UnsafeMutablePointer<Float>>
    let deltaCount: Int
    let coarse: [CoarseHistogram]
    /// Per delta: for each coarse bin, 0 or 1 + the index of its fine histogram.
    let slots: [UnsafeMutablePointer<UInt8>]
    /// Per delta, fine histograms for the tensor's top 1 % and support and up to three scopes' top 1 %.
    let fine: [UnsafeMutablePointer<UnsafeMutablePointer<Int>>]
    let fineSlots: Int

    init(chunk: Int, deltaCount: Int, fineSlots: Int) {
        self.chunk = chunk
        self.deltaCount = deltaCount
        self.fineSlots = fineSlots
        base = .allocate(capacity: chunk)
        deltas = .allocate(capacity: deltaCount)
        for d in 0..<deltaCount { (deltas + d).initialize(to: .allocate(capacity: chunk)) }
        coarse = (0..<deltaCount).map { _ in CoarseHistogram() }
        slots = (0..<deltaCount).map { _ in
            let p = UnsafeMutablePointer<UInt8>.allocate(capacity: MagnitudeBins.coarseCount)
            p.initialize(repeating: 0, count: MagnitudeBins.coarseCount)
            return p
        }
        fine = (0..<deltaCount).map { _ in
            let list = UnsafeMutablePointer<UnsafeMutablePointer<Int>>.allocate(capacity: fineSlots)
            for s in 0..<fineSlots { (list + s).initialize(to: .allocate(capacity: MagnitudeBins.fineCount)) }
            return list
        }
    }

    deinit {
        base.deallocate()
        for d in 0..<deltaCount {
            deltas[d].deallocate()
            slots[d].deallocate()
            for s in 0..<fineSlots { fine[d][s].deallocate() }
            fine[d].deallocate()
        }
        deltas.deallocate()
    }
}

/// What the first pass found in one tensor: its additive figures and, per
/// delta, the coarse bins of its top-1 % and support boundaries.
struct MeasuredTensor: Sendable {
    var statistics: ScopeStatistics
    var top: [TopBoundary] = []
    var support: [TopBoundary] = []
}

/// Where the workers of one pass are, under `StatisticsRun.lock`: the next
/// tensor to take, the first error, and each tensor's result.
final class TensorProgress<Result>: @unchecked Sendable {
    var next = 0
    var failure: CheckpointError?
    var results: [Result?]
    init(_ count: Int) { results = [Result?](repeating: nil, count: count) }
}

/// The shared state of one statistics run.
final class StatisticsRun: @unchecked Sendable {
    let plan: StatisticsPlan
    /// The base (0) and the fine-tuned checkpoints.
    let inputs: [Checkpoint]
    let options: DeltaStatisticsOptions
    let deltaCount: Int
    let pairs: [(Int, Int)]
    let thresholdBits: [UInt32]
    let lock = NSLock()
    private let scratches: [StatisticsScratch]
    /// [scope][delta]: coarse histograms (first pass), top-1 % boundaries, and
    /// fine counts of the boundary bin (second pass).
    let scopeHistograms: [[CoarseHistogram]]
    var scopeTop: [[TopBoundary?]]
    var scopeFine: [[[Int]]]

    init(plan: StatisticsPlan, inputs: [Checkpoint], options: DeltaStatisticsOptions) {
        self.plan = plan
        self.inputs = inputs
        self.options = options
        deltaCount = inputs.count - 1
        var pairs: [(Int, Int)] = []
        for i in 0..<deltaCount { for j in (i + 1)..<max(i + 1, deltaCount) { pairs.append((i, j)) } }
        self.pairs = pairs
        thresholdBits = options.thresholds.map { $0.magnitude.bitPattern }
        precondition(options.chunkElements > 0, "chunkElements must be positive, not \(options.chunkElements)")
        let workers = max(1, min(options.workers, plan.tensors.count))
        let fineSlots = 5
        scratches = (0..<workers).map { _ in StatisticsScratch(chunk: options.chunkElements, deltaCount: inputs.count - 1, fineSlots: fineSlots) }
        let scopes = plan.scopeNames.count
        scopeHistograms = (0..<scopes).map { _ in (0..<inputs.count - 1).map { _ in CoarseHistogram() } }
        scopeTop = [[TopBoundary?]](repeating: [TopBoundary?](repeating: nil, count: inputs.count - 1), count: scopes)
        scopeFine = [[[Int]]](repeating: [[Int]](repeating: [], count: inputs.count - 1), count: scopes)
    }

    /// Runs `body` for every tensor on `options.workers` threads, largest tensor
    /// first, each worker with its own scratch; returns the results in the
    /// plan's order. The first error stops the remaining work.
    func forEachTensor<Result: Sendable>(
        _ body: @Sendable (Int, StatisticsScratch) throws(CheckpointError) -> Result
    ) throws(DeltaStatisticsError) -> [Result] {
        let order = plan.tensors.indices.sorted { plan.tensors[$0].base.elementCount > plan.tensors[$1].base.elementCount }
        let progress = TensorProgress<Result>(order.count)
        DispatchQueue.concurrentPerform(iterations: min(scratches.count, order.count)) { worker in
            while true {
                lock.lock()
                let index = progress.failure == nil && progress.next < order.count ? order[progress.next] : nil
                progress.next += 1
                lock.unlock()
                guard let index else { return }
                do throws(CheckpointError) {
                    let result = try body(index, scratches[worker])
                    lock.lock()
                    progress.results[index] = result
                    lock.unlock()
                } catch {
                    lock.lock()
                    if progress.failure == nil { progress.failure = error }
                    lock.unlock()
                }
            }
        }
        if let failure = progress.failure { throw .checkpoint(failure) }
        return progress.results.map { $0! }
    }

    /// Decodes one tensor chunk by chunk into the scratch, δ in place of each
    /// fine-tuned chunk, and calls `body` with the chunk length. Pages are
    /// mapped ahead a slice at a time and handed back behind.
    func stream(_ tensor: PlannedTensor, _ scratch: StatisticsScratch, _ body: (Int) -> Void) throws(CheckpointError) {
        let entries = [tensor.base] + tensor.tuned
        // Chunks end on whole blocks of every input's type (block sizes 1, 32 and 256
        // each divide the next, so the largest is a multiple of all).
        let block = entries.map(\.dtype.blockElements).max() ?? 1
        let step = scratch.chunk / block * block
        precondition(step > 0, "a chunk of \(scratch.chunk) elements holds no whole block of \(block)")
        let n = tensor.base.elementCount, slice = 64 * step
        var start = 0
        while start < n {
            let end = min(n, start + slice)
            for (input, entry) in entries.enumerated() { try inputs[input].files[entry.fileIndex].populate(bytes(entry, start..<end, of: input)) }
            var chunkStart = start
            while chunkStart < end {
                let count = min(step, end - chunkStart)
                try decode(0, tensor.base, chunkStart..<(chunkStart + count), into: scratch.base)
                for d in 0..<deltaCount {
                    try decode(1 + d, tensor.tuned[d], chunkStart..<(chunkStart + count), into: scratch.deltas[d])
                    DeltaKernels.subtract(scratch.base, from: scratch.deltas[d], count)
                }
                body(count)
                chunkStart += count
            }
            for (input, entry) in entries.enumerated() { try inputs[input].files[entry.fileIndex].release(bytes(entry, start..<end, of: input)) }
            start = end
        }
    }

    /// The bytes of elements `elements` of `entry` in its file.
    private func bytes(_ entry: TensorEntry, _ elements: Range<Int>, of input: Int) throws(CheckpointError) -> Range<Int> {
        // A chunk of a block-quantized type that does not end on a block boundary has no byte range.
        guard let from = entry.dtype.byteCount(forElements: elements.lowerBound),
              let to = entry.dtype.byteCount(forElements: elements.upperBound), to <= entry.byteCount else {
            throw .codec(file: inputs[input].files[entry.fileIndex].path, tensor: entry.name,
                         problem: .sizeMismatch(dtype: entry.dtype, elements: elements.count, bytes: 0))
        }
        return (entry.offset + from)..<(entry.offset + to)
    }

    private func decode(_ input: Int, _ entry: TensorEntry, _ elements: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws(CheckpointError) {
        let file = inputs[input].files[entry.fileIndex]
        let source = file.bytes(try bytes(entry, elements, of: input))
        do {
            try ElementCodec.decode(entry.dtype, from: source, into: UnsafeMutableBufferPointer(start: destination, count: elements.count))
        } catch {
            throw .codec(file: file.path, tensor: entry.name, problem: error)
        }
    }
}
