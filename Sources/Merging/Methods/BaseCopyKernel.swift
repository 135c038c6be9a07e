/// Tensors taken from the base alone: bytes copied unchanged (non-float tensors, which
/// the run loop hands straight to the sink) or values re-encoded in the output type
/// (tensors only the base has).
struct BaseCopyKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {}

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters { .none }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        let decoder = executor.decoder
        try executor.write(job, into: bytes) { s, _, range in
            try decoder.decodeBase(job, range, s)
            // forEachChunk: range.count ≤ capacity of both buffers.
            s.out.baseAddress!.update(from: s.base.baseAddress!, count: range.count)
        }
    }
}

extension PreparedMerge {
    /// The kernel producing `job`: the method's for merged tensors, else the base copy.
    func kernel(for job: MergeJob) -> any MergeKernel {
        job.kind == .merge ? plan.method.entry.kernel : BaseCopyKernel()
    }
}
