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

    func run(into bytes: OutputWindows) throws {
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
    /// tensor, and which models' random masks are drawn as keep bytes (drawn again,
    /// chunk by chunk, by the fusion pass: a counter-based mask is the same each time).
    func l1Factors(_ masks: [TensorMask], _ ties: [[ChunkTies]]) throws -> ([Float], [Bool]) {
        let n = self.n, job = self.job, decoder = self.decoder
        var factors = [Float](repeating: 1, count: n)
        var recorded = [Bool](repeating: false, count: n)
        let rescaled = executor.merge.plan.effectiveRescale == .l1
            ? (0..<n).filter { masks[$0] != .keepAll && masks[$0] != .keepNone } : []
        guard !rescaled.isEmpty else { return (factors, recorded) }
        for m in rescaled { if case .random = masks[m] { recorded[m] = true } }
        // A random mask over BF16 base and model measures δ straight from the bytes.
        // (Non-finite inputs are reported by the fusion pass, which decodes them all.)
        let direct = rescaled.filter {
            recorded[$0] && !job.computeType.rounds && job.template.dtype == .bf16 && job.inputs[$0].tensor.dtype == .bf16
                && job.inputs[$0].rowOrder == nil && job.inputs[$0].lora == nil
                && job.baseRows == nil && job.inputs[$0].rows == nil
        }
        let decoded = rescaled.filter { !direct.contains($0) }
        let zero = [(before: Double, after: Double)](repeating: (0, 0), count: n)
        let sums = try executor.sum(job, from: zero, adding: { total, chunk in
            for m in rescaled { total[m] = (total[m].before + chunk[m].before, total[m].after + chunk[m].after) }
        }) { s, c, range in
            var sums = zero
            if !direct.isEmpty {
                // The base's chunk, read once, in the upper half of the staging buffer;
                // each model's in turn in the lower half.
                let half = UnsafeMutableRawBufferPointer(rebasing: s.staging[(s.staging.count / 2)...])
                let base = try decoder.readBF16(job.template, in: job.templateCheckpoint, range, into: half)
                for m in direct {
                    precondition(range.upperBound <= job.template.elementCount
                                 && range.upperBound <= job.inputs[m].tensor.elementCount, "elements \(range) out of bounds")
                    masks[m].drawKeep(start: range.lowerBound, count: range.count, into: s)
                    sums[m] = L1Norm.ofDifference(bf16: try decoder.readBF16(job.inputs[m].tensor, in: job.inputs[m].checkpoint, range, into: s.staging),
                                                  minus: base, count: range.count, keptBy: s.keep)
                }
            }
            guard !decoded.isEmpty else { return sums }
            try decoder.decodeBase(job, range, s)
            for m in decoded {
                try decoder.decodeDelta(job, m, range, s)
                let values = UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<range.count])
                if recorded[m] {
                    masks[m].drawKeep(start: range.lowerBound, count: range.count, into: s)
                    sums[m] = L1Norm.of(UnsafeBufferPointer(values), keptBy: s.keep)
                    continue
                }
                let before = L1Norm.of(UnsafeBufferPointer(values))
                masks[m].apply(to: values, start: range.lowerBound, rowLength: job.rowLength, inverse: false,
                               ties: ties[m].count > c ? ties[m][c] : ChunkTies(), rowScratch: s.rows)
                sums[m] = (before, L1Norm.of(UnsafeBufferPointer(values)))
            }
            return sums
        }
        for m in rescaled {
            factors[m] = Sparsifier.l1RescaleFactor(before: sums[m].before, after: sums[m].after, in: job.computeType)
        }
        return (factors, recorded)
    }

    /// The final pass: each δ masked (a random mask the L1 pass measured drawn again
    /// as keep bytes), scaled by its factor and weight, fused onto the base and
    /// stored.
    func fuse(_ masks: [TensorMask], _ ties: [[ChunkTies]], _ factors: [Float], _ recorded: [Bool],
              into bytes: OutputWindows) throws {
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
        _ recorded: [Bool], into bytes: OutputWindows
    ) throws {
        let job = self.job, weights = parameters.weights.map { A.round($0) }
        let fusion = Fusion(consensus: executor.merge.plan.effectiveConsensus, normalize: parameters.normalize,
                            lambda: parameters.lambda)
        let inverse = executor.merge.plan.effectiveRescale == .inverse
        try executor.write(job, into: bytes) { s, c, range in
            let deltas = try executor.deltas(job, range, s)
            for (m, values) in deltas.enumerated() {
                let factor = factors[m], weight = weights[m]
                if recorded[m] {
                    masks[m].drawKeep(start: range.lowerBound, count: range.count, into: s)
                    CounterRandom.applyRecorded(A.self, values, keep: s.keep, factor: factor, weight: weight)
                } else {
                    masks[m].apply(to: values, start: range.lowerBound, rowLength: job.rowLength, inverse: inverse,
                                   ties: ties[m].count > c ? ties[m][c] : ChunkTies(), rowScratch: s.rows)
                    // x · 1 is x exactly: an unused factor changes nothing, and with
                    // weight 1 as well the loop can be skipped.
                    if factor != 1 || weight != 1 {
                        for i in 0..<values.count { values[i] = A.round(A.round(values[i] * factor) * weight) }
                    }
                }
            }
            fusion.combine(A.self, base: s.baseEntries(range.count), deltas: deltas, weights: weights,
                           into: s.output(range.count), divisors: UnsafeMutableBufferPointer(rebasing: s.divisors[0..<range.count]))
        }
    }
}

/// What the task-vector passes carry from one tensor to the next.
final class TaskVectorState: @unchecked Sendable {
    /// Per model, the whole-model trim window (`--trim global`), found before the first tensor.
    private(set) var globalWindows: [MagnitudeWindow?] = []
    /// Per model, boundary-key entries met so far in earlier tensors (global trim ties).
    var globalTiesSeen: [(lower: Int, upper: Int)] = []

    init(_ merge: PreparedMerge) {}

    /// Starts a run with these whole-model windows (nil: per-tensor windows).
    func begin(globalWindows: [MagnitudeWindow?]) {
        self.globalWindows = globalWindows
        globalTiesSeen = [(lower: Int, upper: Int)](repeating: (0, 0), count: globalWindows.count)
    }
}

extension TensorMask {
    /// Draws this random mask's keep bytes (1 kept, 0 dropped) for `count` elements
    /// from `start` into `s.keep`, which holds a whole chunk.
    func drawKeep(start: Int, count: Int, into s: WorkerScratch) {
        guard case .random(let density, let stream) = self else { preconditionFailure("not a random mask") }
        precondition(count <= s.capacity, "\(count) entries exceed the keep buffer")
        stream.drawMask(start: start, count: count, density: density, into: s.keep)
    }
}
