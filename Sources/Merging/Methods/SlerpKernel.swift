/// SLERP between the base and one model over each tensor flattened into one vector:
/// the norms and the dot product summed chunk by chunk (in chunk order), then one
/// pair of coefficients.
struct SlerpKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {
        guard plan.contributingModels.count == 1 else { throw .badPlan("slerp needs exactly two models, one of them the base") }
        guard plan.parameters["t"] != nil || plan.models.contains(where: { $0.parameters["t"] != nil }) else {
            throw .badPlan("slerp needs the interpolation factor t")
        }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .slerp(t: Float(value("t", models.first, 0.5)))
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .slerp(let t) = job.parameters else { preconditionFailure("not a slerp job") }
        let chunks = executor.chunks, decoder = executor.decoder
        let count = chunks.chunkCount(job)
        let partial = ChunkResults(count: count, initial: (aa: 0.0, bb: 0.0, ab: 0.0))
        try chunks.forEachChunk(job) { s, c, range in
            try decoder.decodeBase(job, range, s)
            try decoder.decodeModel(job, 0, range, into: s.inputs[0])
            partial[c] = Interpolation.slerpSums(UnsafeBufferPointer(rebasing: s.base[0..<range.count]),
                                                 UnsafeBufferPointer(rebasing: s.inputs[0][0..<range.count]))
        }
        var aa = 0.0, bb = 0.0, ab = 0.0
        for c in 0..<count {
            aa += partial[c].aa
            bb += partial[c].bb
            ab += partial[c].ab
        }
        let (ca, cb) = Interpolation.slerpCoefficients(t: t, normA2: aa, normB2: bb, dot: ab)
        try chunks.forEachChunk(job, writing: bytes) { s, _, range in
            try decoder.decodeBase(job, range, s)
            try decoder.decodeModel(job, 0, range, into: s.inputs[0])
            Interpolation.blend(UnsafeBufferPointer(rebasing: s.base[0..<range.count]),
                                UnsafeBufferPointer(rebasing: s.inputs[0][0..<range.count]), ca, cb,
                                into: UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]))
            try decoder.store(job, range, s, into: bytes)
        }
    }
}
