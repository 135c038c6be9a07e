/// One tensor of the task-vector family in named steps over the executor's chunks:
/// each model's mask (searching magnitude windows), the boundary ties before each
/// chunk, the L1 rescale factors, and the fusion pass that writes the output.
struct TaskVectorPasses {
    let job: MergeJob
    let parameters: TaskVectorParameters
    let sparsifier: Sparsifier?
    let executor: MergeExecutor

    private var n: Int { job.inputs.count }
    private var chunks: ChunkScheduler { executor.chunks }
    private var decoder: TensorDecoder { executor.decoder }
    private var state: TaskVectorState { executor.taskVectors }

    func run(into bytes: UnsafeMutableRawBufferPointer) throws {
        let (masks, knownCounts) = try findMasks()
        let ties = try countTies(masks, known: knownCounts)
        let (factors, recorded) = try l1Factors(masks, ties)
        try fuse(masks, ties, factors, recorded, into: bytes)
    }

    /// Each model's mask for this tensor, with the boundary-key counts per chunk of the
    /// windows whose search found them.
    func findMasks() throws -> ([TensorMask], [Int: [(lower: Int, upper: Int)]]) {
        var masks: [TensorMask] = []
        var searching: [Int] = []
        for m in 0..<n {
            let stream = CounterRandom(seed: executor.merge.plan.seed, tensor: job.name, model: m)
            guard let sparsifier else { masks.append(.keepAll); continue }
            if let mask = sparsifier.mask(density: parameters.densities[m], epsilon: parameters.epsilons[m], stream: stream,
                                          window: { state.globalWindows[m] }) {
                masks.append(mask)
            } else {
                masks.append(.keepAll)  // replaced once the window is found
                searching.append(m)
            }
        }
        var knownCounts: [Int: [(lower: Int, upper: Int)]] = [:]
        if let sparsifier, !searching.isEmpty {
            let found = try executor.windowSearch.windows(job, models: searching, sparsifier: sparsifier,
                                                          densities: parameters.densities, gammas: parameters.gammas)
            for (k, m) in searching.enumerated() {
                masks[m] = .window(found[k].window, density: Float(parameters.densities[m]))
                knownCounts[m] = found[k].keyCounts
            }
        }
        return (masks, knownCounts)
    }

    /// Ties at a window boundary: per model, the entries equal to each boundary key
    /// before each chunk (counted in a pass unless the window search counted them).
    func countTies(_ masks: [TensorMask], known: [Int: [(lower: Int, upper: Int)]]) throws -> [[ChunkTies]] {
        let n = self.n, chunkCount = chunks.chunkCount(job)
        var ties = [[ChunkTies]](repeating: [], count: n)
        let tieModels = (0..<n).filter { if case .window(let w, _) = masks[$0] { return w.needsOrdinals } else { return false } }
        guard !tieModels.isEmpty else { return ties }
        let counts = ChunkResults(count: chunkCount * n, initial: (lower: 0, upper: 0))
        for (m, known) in known where tieModels.contains(m) {
            for c in 0..<chunkCount { counts[c * n + m] = known[c] }
        }
        let needPass = tieModels.filter { known[$0] == nil }
        if !needPass.isEmpty {
            let job = self.job, decoder = self.decoder
            try chunks.forEachChunk(job) { s, c, range in
                try decoder.decodeBase(job, range, s)
                for m in needPass {
                    guard case .window(let w, _) = masks[m] else { continue }
                    try decoder.decodeDelta(job, m, range, s)
                    let values = UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count])
                    let keys = w.tieKeys
                    counts[c * n + m] = (keys.lower.map { RankSearch.countEqual(values, key: $0) } ?? 0,
                                         keys.upper.map { RankSearch.countEqual(values, key: $0) } ?? 0)
                }
            }
        }
        for m in tieModels {
            var running = state.globalTiesSeen[m]
            for c in 0..<chunkCount {
                let here = counts[c * n + m]
                ties[m].append(ChunkTies(lowerBefore: running.lower, lowerInChunk: here.lower,
                                         upperBefore: running.upper, upperInChunk: here.upper))
                running.lower += here.lower
                running.upper += here.upper
            }
            if state.globalWindows[m] != nil { state.globalTiesSeen[m] = running }
        }
        return ties
    }

    /// L1 rescale: the factor restoring each sparsified δ's L1 norm over the whole
    /// tensor, and the random masks drawn on the way (replayed by the fusion pass).
    func l1Factors(_ masks: [TensorMask], _ ties: [[ChunkTies]]) throws -> ([Float], [UnsafeMutablePointer<UInt8>?]) {
        let n = self.n, job = self.job, decoder = self.decoder
        var factors = [Float](repeating: 1, count: n)
        var recorded = [UnsafeMutablePointer<UInt8>?](repeating: nil, count: n)
        let rescaled = executor.merge.plan.effectiveRescale == .l1
            ? (0..<n).filter { masks[$0] != .keepAll && masks[$0] != .keepNone } : []
        guard !rescaled.isEmpty else { return (factors, recorded) }
        for m in rescaled { if case .random = masks[m] { recorded[m] = state.recordedMask(for: m) } }
        let chunkCount = chunks.chunkCount(job), largest = state.largestMergedTensor
        let sums = ChunkResults(count: chunkCount * n, initial: (before: 0.0, after: 0.0))
        // A random mask over BF16 base and model measures δ straight from the bytes.
        // (Non-finite inputs are reported by the fusion pass, which decodes them all.)
        let direct = rescaled.filter {
            recorded[$0] != nil && !job.computeType.rounds && job.template.dtype == .bf16 && job.inputs[$0].tensor.dtype == .bf16
                && job.inputs[$0].rowOrder == nil && job.inputs[$0].lora == nil
                && job.baseRows == nil && job.inputs[$0].rows == nil
        }
        let decoded = rescaled.filter { !direct.contains($0) }
        let keptBy = recorded
        try chunks.forEachChunk(job) { s, c, range in
            // Recorded masks hold one byte per entry of the largest merged tensor.
            precondition(range.upperBound <= largest || keptBy.allSatisfy { $0 == nil },
                         "elements \(range) outside the recorded masks")
            for m in rescaled {
                guard let keep = keptBy[m], case .random(let density, let stream) = masks[m] else { continue }
                stream.drawMask(start: range.lowerBound, count: range.count, density: density, into: keep + range.lowerBound)
            }
            for m in direct {
                precondition(range.upperBound <= job.template.elementCount
                             && range.upperBound <= job.inputs[m].tensor.elementCount
                             && range.upperBound <= largest, "elements \(range) out of bounds")
                sums[c * n + m] = L1Norm.ofDifference(bf16: decoder.bf16Elements(job.inputs[m].tensor, in: job.inputs[m].checkpoint) + range.lowerBound,
                                                      minus: decoder.bf16Elements(job.template, in: job.templateCheckpoint) + range.lowerBound,
                                                      count: range.count, keptBy: keptBy[m]! + range.lowerBound)
            }
            guard !decoded.isEmpty else { return }
            try decoder.decodeBase(job, range, s)
            for m in decoded {
                try decoder.decodeDelta(job, m, range, s)
                let values = UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<range.count])
                if let keep = keptBy[m] {
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
            for c in 0..<chunkCount {
                before += sums[c * n + m].before
                after += sums[c * n + m].after
            }
            factors[m] = Sparsifier.l1RescaleFactor(before: before, after: after, in: job.computeType)
        }
        return (factors, recorded)
    }

    /// The final pass: each δ masked (or its recorded mask replayed), scaled by its
    /// factor and weight, fused onto the base and stored; releases the input pages.
    func fuse(_ masks: [TensorMask], _ ties: [[ChunkTies]], _ factors: [Float], _ recorded: [UnsafeMutablePointer<UInt8>?],
              into bytes: UnsafeMutableRawBufferPointer) throws {
        switch job.computeType {
        case .bf16: try fuse(BFloat16Arithmetic.self, masks, ties, factors, recorded, into: bytes)
        case .f16: try fuse(Float16Arithmetic.self, masks, ties, factors, recorded, into: bytes)
        case .f32, .f64: try fuse(Float32Arithmetic.self, masks, ties, factors, recorded, into: bytes)
        }
    }

    /// `fuse` with each operation rounded by `A`: the weights are values of the
    /// compute type (mergekit makes a tensor of them), δ·factor and then ·weight are
    /// rounded, and `Fusion` rounds the rest.
    private func fuse<A: Arithmetic>(
        _ arithmetic: A.Type, _ masks: [TensorMask], _ ties: [[ChunkTies]], _ factors: [Float],
        _ recorded: [UnsafeMutablePointer<UInt8>?], into bytes: UnsafeMutableRawBufferPointer
    ) throws {
        let n = self.n, job = self.job, decoder = self.decoder, weights = parameters.weights.map { A.round($0) }
        let largest = state.largestMergedTensor
        let fusion = Fusion(consensus: executor.merge.plan.effectiveConsensus, normalize: parameters.normalize,
                            lambda: parameters.lambda)
        let inverse = executor.merge.plan.effectiveRescale == .inverse
        try chunks.forEachChunk(job, releasing: true) { s, c, range in
            try decoder.decodeBase(job, range, s)
            var deltas: [UnsafeMutableBufferPointer<Float>] = []
            for m in 0..<n {
                try decoder.decodeDelta(job, m, range, s)
                let values = UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<range.count])
                let factor = factors[m], weight = weights[m]
                if let keep = recorded[m] {
                    precondition(range.upperBound <= largest, "elements \(range) outside the recorded masks")
                    CounterRandom.applyRecorded(A.self, values, keep: keep + range.lowerBound, factor: factor, weight: weight)
                } else {
                    masks[m].apply(to: values, start: range.lowerBound, rowLength: job.rowLength, inverse: inverse,
                                   ties: ties[m].count > c ? ties[m][c] : ChunkTies(), rowScratch: s.rows)
                    // x · 1 is x exactly: an unused factor changes nothing, and with
                    // weight 1 as well the loop can be skipped.
                    if factor != 1 || weight != 1 {
                        for i in 0..<values.count { values[i] = A.round(A.round(values[i] * factor) * weight) }
                    }
                }
                deltas.append(values)
            }
            fusion.combine(A.self, base: UnsafeBufferPointer(rebasing: s.base[0..<range.count]), deltas: deltas,
                           weights: weights, into: UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]),
                           divisors: UnsafeMutableBufferPointer(rebasing: s.divisors[0..<range.count]))
            try decoder.store(job, range, s, into: bytes)
        }
    }
}

/// What the task-vector passes carry from one tensor to the next.
final class TaskVectorState: @unchecked Sendable {
    /// Per model, the whole-model trim window (`--trim global`), found before the first tensor.
    private(set) var globalWindows: [MagnitudeWindow?] = []
    /// Per model, boundary-key entries met so far in earlier tensors (global trim ties).
    var globalTiesSeen: [(lower: Int, upper: Int)] = []
    /// Per model, the random mask drawn by the L1-rescale pass (one byte per entry of
    /// the largest merged tensor), replayed by the fusion pass instead of drawing again.
    private var recordedMasks: [Int: UnsafeMutablePointer<UInt8>] = [:]
    let largestMergedTensor: Int

    init(_ merge: PreparedMerge) {
        largestMergedTensor = merge.jobs.filter { $0.kind == .merge }.map(\.elementCount).max() ?? 0
    }

    deinit { for mask in recordedMasks.values { mask.deallocate() } }

    /// Starts a run with these whole-model windows (nil: per-tensor windows).
    func begin(globalWindows: [MagnitudeWindow?]) {
        self.globalWindows = globalWindows
        globalTiesSeen = [(lower: Int, upper: Int)](repeating: (0, 0), count: globalWindows.count)
    }

    /// Model `m`'s buffer for a recorded random mask, allocated on first use.
    func recordedMask(for m: Int) -> UnsafeMutablePointer<UInt8> {
        if let mask = recordedMasks[m] { return mask }
        let mask = UnsafeMutablePointer<UInt8>.allocate(capacity: max(largestMergedTensor, 1))
        recordedMasks[m] = mask
        return mask
    }
}
