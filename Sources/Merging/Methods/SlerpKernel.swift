/// SLERP between the base and one model over each tensor flattened into one vector:
/// the norms and the dot product (their Gram matrix) summed chunk by chunk in chunk
/// order, then one pair of coefficients.
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
        let decoder = executor.decoder
        // Entries `range` of the base and the model.
        func load(_ s: WorkerScratch, _ range: Range<Int>) throws -> [UnsafeBufferPointer<Float>] {
            try decoder.decodeBase(job, range, s)
            try decoder.decodeModel(job, 0, range, into: s.inputs[0], staging: s.staging)
            return [s.baseEntries(range.count), UnsafeBufferPointer(s.input(0, range.count))]
        }
        let g = try GramMatrix.sum(job, count: 2, on: executor, load)
        let (ca, cb) = Interpolation.slerpCoefficients(t: t, normA2: g[0, 0], normB2: g[1, 1], dot: g[0, 1])
        try executor.write(job, into: bytes) { s, _, range in
            let x = try load(s, range)
            Interpolation.blend(x[0], x[1], ca, cb, into: s.output(range.count))
        }
    }
}
