/// SCE (select, calculate, erase) on the task vectors δᵢ = θᵢ − θ₀ of one tensor:
///
/// - select: with `select_topk` s < 1, only the k = ⌊nz·s⌋ entries whose δ varies most
///   across the models are kept (nz: entries of non-zero variance; population
///   variance per entry; ties at the boundary keep the later entries); s ≤ 0 keeps none;
/// - calculate: each model's weight is its energy, the mean of its selected δ² over
///   the tensor, divided by the models' total (equal weights when that total is
///   below 10⁻⁶);
/// - erase: per entry the sign of Σδᵢ is elected (+ on a tie), and the entry is the
///   weighted mean of the δᵢ of that sign: θ₀ + Σ wᵢδᵢ / max(Σ wᵢ, 10⁻⁶) over them.
///
/// Passes over the chunks: two to find the variance boundary (`RankSearch`, one more
/// when equal variances straddle it), one for the energies, one for the output.
/// Energies are summed per chunk and added in chunk order.
struct SCEKernel: MergeKernel {
    /// The smallest divisor of the fused δ.
    static let minimumWeight: Float = 1e-6

    func check(_ plan: MergePlan) throws(MergeError) {
        if plan.contributingModels.isEmpty { throw .badPlan("sce needs at least one model besides the base") }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .sce(selectTopK: value("select_topk", nil, 1))
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .sce(let topK) = job.parameters else { preconditionFailure("not an sce job") }
        let n = job.inputs.count
        let selection = try select(job, topK: topK, on: executor)

        // Decodes every δ of a chunk into `s.inputs` and zeroes the entries not selected.
        func selectedDeltas(_ s: WorkerScratch, _ c: Int, _ range: Range<Int>) throws -> [UnsafeMutableBufferPointer<Float>] {
            let deltas = try executor.deltas(job, range, s)
            switch selection {
            case .all: break
            case .none: for d in deltas { d.update(repeating: 0) }
            case .window(let window, let ties):
                let variance = UnsafeMutableBufferPointer(rebasing: s.divisors[0..<range.count])
                SCEKernel.variance(deltas.map(UnsafeBufferPointer.init), into: variance)
                window.apply(to: variance, ties: ties.count > c ? ties[c] : ChunkTies())
                // Every kept entry has a non-zero variance (k never exceeds their count).
                for d in deltas {
                    for i in 0..<range.count where variance[i] == 0 { d[i] = 0 }
                }
            }
            return deltas
        }

        // Each model's energy: the sum of its kept δ², per chunk, added in chunk order.
        let energies = try executor.sum(job, from: [Double](repeating: 0, count: n), adding: { total, chunk in
            for m in 0..<n { total[m] += chunk[m] }
        }) { s, c, range in
            try selectedDeltas(s, c, range).map { d in
                var sum = 0.0
                for x in d { sum += Double(x) * Double(x) }
                return sum
            }
        }
        var weights = energies.map { Float($0 / Double(max(job.elementCount, 1))) }
        var total: Float = 0
        for w in weights { total += w }
        // The total is compared in Float64, as a Float32 sum read out as a number.
        let equal = abs(Double(total)) < 1e-6
        for m in 0..<n { weights[m] = equal ? 1 / Float(n) : weights[m] / total }

        try executor.write(job, into: bytes) { s, c, range in
            let deltas = try selectedDeltas(s, c, range)
            SCEKernel.fuse(base: s.baseEntries(range.count), deltas: deltas.map(UnsafeBufferPointer.init),
                           weights: weights, into: s.output(range.count))
        }
    }

    /// The entries SCE keeps of one tensor.
    enum Selection {
        case all
        case none
        /// The kept ranks of the ascending (variance, index) order, with each chunk's
        /// place among the entries equal to the boundary variance (empty when no tie
        /// straddles the boundary).
        case window(MagnitudeWindow, [ChunkTies])
    }

    /// Finds the k entries of largest variance: pass 1 counts the non-zero variances and
    /// the coarse bins of every variance, pass 2 the bin holding rank count − k.
    func select(_ job: MergeJob, topK: Double, on executor: MergeExecutor) throws -> Selection {
        if topK >= 1 { return .all }
        if topK <= 0 { return .none }
        let chunks = executor.chunks, scratch = chunks.scratch
        let count = chunks.chunkCount(job), total = job.elementCount
        // Writes each chunk's variances into `s.divisors` and hands them to `body`.
        func pass(_ body: (WorkerScratch, Int, UnsafeBufferPointer<Float>) -> Void) throws {
            try chunks.forEachChunk(job) { s, c, range in
                let deltas = try executor.deltas(job, range, s)
                let variance = UnsafeMutableBufferPointer(rebasing: s.divisors[0..<range.count])
                SCEKernel.variance(deltas.map(UnsafeBufferPointer.init), into: variance)
                body(s, c, UnsafeBufferPointer(variance))
            }
        }
        defer { for s in scratch { s.searches = [] } }

        let nonzero = ChunkResults(count: count, initial: 0)
        for s in scratch { s.searches = [RankSearch(ranks: [])] }
        try pass { s, c, variance in
            s.searches[0].countCoarse(variance)
            var here = 0
            for v in variance where v != 0 { here += 1 }
            nonzero[c] = here
        }
        var nonzeroTotal = 0
        for c in 0..<count { nonzeroTotal += nonzero[c] }
        // ⌊nz·s⌋ as Float32 arithmetic gives it.
        let k = Int((Float(nonzeroTotal) * Float(topK)).rounded(.towardZero))
        if k <= 0 { return .none }
        if k >= total { return .all }
        var search = RankSearch(ranks: [total - k])
        search.absorb(executor.combinedSearches()[0])
        search.finishCoarse()
        for s in scratch { s.searches = [search.fineCounter()] }
        try pass { s, _, variance in s.searches[0].countFine(variance) }
        let boundary = executor.combinedSearches()[0].boundaries()[0]
        let window = MagnitudeWindow(lower: boundary, upper: nil)
        guard window.needsOrdinals else { return .window(window, []) }
        let equal = ChunkResults(count: count, initial: 0)
        try pass { _, c, variance in equal[c] = RankSearch.countEqual(variance, key: boundary.key) }
        var ties: [ChunkTies] = []
        var before = 0
        for c in 0..<count {
            ties.append(ChunkTies(lowerBefore: before, lowerInChunk: equal[c]))
            before += equal[c]
        }
        return .window(window, ties)
    }

    /// The population variance of each entry across `deltas`, by Welford's recurrence
    /// in Float64, rounded to Float32.
    static func variance(_ deltas: [UnsafeBufferPointer<Float>], into out: UnsafeMutableBufferPointer<Float>) {
        precondition(deltas.allSatisfy { $0.count >= out.count }, "sce buffers shorter than the output")
        let n = Double(deltas.count)
        for i in 0..<out.count {
            var mean = 0.0, m2 = 0.0
            for (j, d) in deltas.enumerated() {
                let x = Double(d[i])
                let step = x - mean
                mean += step / Double(j + 1)
                m2 += step * (x - mean)
            }
            out[i] = Float(m2 / n)
        }
    }

    /// θ₀ + Σ wᵢδᵢ / max(Σ wᵢ, 10⁻⁶) over the δᵢ whose sign is that of Σδᵢ (+ when
    /// Σδᵢ is 0), summed in model order in Float32.
    static func fuse(base: UnsafeBufferPointer<Float>, deltas: [UnsafeBufferPointer<Float>], weights: [Float],
                     into out: UnsafeMutableBufferPointer<Float>) {
        precondition(base.count >= out.count && deltas.allSatisfy { $0.count >= out.count } && weights.count == deltas.count,
                     "sce buffers shorter than the output")
        for i in 0..<out.count {
            var vote: Float = 0
            for d in deltas { vote += d[i] }
            let positive = vote >= 0
            var mixed: Float = 0, divisor: Float = 0
            for (m, d) in deltas.enumerated() {
                let x = d[i]
                let w = (positive ? x > 0 : x < 0) ? weights[m] : 0
                mixed += x * w
                divisor += w
            }
            out[i] = base[i] + mixed / (divisor < minimumWeight ? minimumWeight : divisor)
        }
    }
}
