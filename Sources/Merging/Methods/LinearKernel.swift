/// Linear: out = Σ wᵢθᵢ (/ Σ wᵢ when normalizing), with or without a base.
struct LinearKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {
        if plan.contributingModels.isEmpty { throw .badPlan("\(plan.method) needs at least one model") }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .linear(weights: models.map { Float(value("weight", $0, 1)) },
                normalize: value("normalize", nil, plan.method.defaultNormalize ? 1 : 0) != 0)
    }

    /// With `normalize`, linear divides by Σ wᵢ: the weights one tensor gets must not
    /// cancel to (nearly) 0.
    func checkResolved(_ job: MergeJob, plan: MergePlan) throws(MergeError) {
        guard case .linear(let weights, true) = job.parameters else { return }
        try ParameterRange.checkWeightSum(weights, of: job.name,
                                          remedy: "normalizing divides by that sum (use --no-normalize or other weights)")
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .linear(let weights, let normalize) = job.parameters else { preconditionFailure("not a linear job") }
        let decoder = executor.decoder
        try executor.write(job, into: bytes) { s, _, range in
            // A recipe computed in BF16 or F16 follows mergekit's accumulation (Float32
            // fused multiply-adds); Float32 merges keep the rounded products.
            Interpolation.linear(try decoder.decodeModels(job, range, s), weights: weights, normalize: normalize,
                                 into: s.output(range.count), fused: job.computeType.rounds)
        }
    }
}
