/// One model's tensor, multiplied by `scale` when the recipe gives one (mergekit's
/// `passthrough`): the building block of slice stacking, where each output layer comes
/// from exactly one source layer.
struct PassthroughKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {
        guard plan.models.count == 1 else {
            throw .badPlan("passthrough takes exactly one model (one source per slice), not \(plan.models.count)")
        }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .passthrough(scale: Float(value("scale", models.first, 1)))
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .passthrough(let scale) = job.parameters else { preconditionFailure("not a passthrough job") }
        let decoder = executor.decoder
        try executor.write(job, into: bytes) { s, _, range in
            try decoder.decode(job.inputs[0], range, into: s.inputs[0], staging: s.staging)
            for i in 0..<range.count { s.out[i] = scale == 1 ? s.inputs[0][i] : s.inputs[0][i] * scale }
        }
    }
}
