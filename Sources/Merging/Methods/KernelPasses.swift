/// The passes kernels are made of, over the executor's chunks: a summing pass whose
/// per-chunk results are added up in chunk order, and the final pass that stores what
/// a kernel writes into `s.out`.
extension MergeExecutor {
    /// Calls `body` for every chunk of `job` and adds up its results with `add` in chunk
    /// order, starting from `zero`, so the total does not depend on the thread count.
    func sum<Value>(
        _ job: MergeJob, from zero: Value, adding add: (inout Value, Value) -> Void,
        _ body: (WorkerScratch, Int, Range<Int>) throws -> Value
    ) throws -> Value {
        let count = chunks.chunkCount(job)
        let partial = ChunkResults(count: count, initial: zero)
        try chunks.forEachChunk(job) { s, c, range in partial[c] = try body(s, c, range) }
        var total = zero
        for c in 0..<count { add(&total, partial[c]) }
        return total
    }

    /// The final pass of `job`: `body` writes each chunk's merged entries into the start
    /// of `s.out`, which are then stored into `bytes`.
    func write(_ job: MergeJob, into bytes: OutputWindows, _ body: (WorkerScratch, Int, Range<Int>) throws -> Void) throws {
        let decoder = self.decoder
        try chunks.forEachChunk(job, writing: bytes) { s, c, range in
            try body(s, c, range)
            try decoder.store(job, range, s, into: bytes)
        }
    }

    /// The base's entries `range` in `s.base` and each model's task vector δᵢ = θᵢ − θ₀
    /// in `s.inputs[i]`, decoded in model order.
    func deltas(_ job: MergeJob, _ range: Range<Int>, _ s: WorkerScratch) throws -> [UnsafeMutableBufferPointer<Float>] {
        try decoder.decodeBase(job, range, s)
        return try job.inputs.indices.map { m in
            try decoder.decodeDelta(job, m, range, s)
            return s.input(m, range.count)
        }
    }

    /// The rank searches of every worker (`WorkerScratch.searches`), combined.
    func combinedSearches() -> [RankSearch] {
        let scratch = chunks.scratch
        var all = scratch[0].searches
        for s in scratch.dropFirst() { for k in all.indices { all[k].absorb(s.searches[k]) } }
        return all
    }
}

extension WorkerScratch {
    /// The first `count` entries of each buffer: a chunk's base, model `m`'s input and output.
    func baseEntries(_ count: Int) -> UnsafeBufferPointer<Float> { UnsafeBufferPointer(rebasing: base[0..<count]) }
    func input(_ m: Int, _ count: Int) -> UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(rebasing: inputs[m][0..<count])
    }
    func output(_ count: Int) -> UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(rebasing: out[0..<count]) }
}
