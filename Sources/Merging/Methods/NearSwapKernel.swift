/// NearSwap: each entry moves from the base toward the other model by
/// w = clamp(t / max(|a − b|, 10⁻⁶), 0, 1), so entries where the two lie within t of
/// each other take the other model's value and distant ones keep the base's.
/// Elementwise, in one pass.
struct NearSwapKernel: MergeKernel {
    /// The smallest |a − b| divided by, as Float32.
    static let minimumDifference: Float = 1e-6

    func check(_ plan: MergePlan) throws(MergeError) {
        guard plan.contributingModels.count == 1 else { throw .badPlan("nearswap needs exactly two models, one of them the base") }
        guard plan.parameters["t"] != nil || plan.models.contains(where: { $0.parameters["t"] != nil }) else {
            throw .badPlan("nearswap needs the closeness threshold t")
        }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .nearswap(t: Float(value("t", models.first, 0)))
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .nearswap(let t) = job.parameters else { preconditionFailure("not a nearswap job") }
        let decoder = executor.decoder
        try executor.write(job, into: bytes) { s, _, range in
            try decoder.decodeBase(job, range, s)
            try decoder.decode(job.inputs[0], range, into: s.inputs[0], staging: s.staging)
            NearSwapKernel.blend(s.baseEntries(range.count), UnsafeBufferPointer(s.input(0, range.count)), t: t,
                                 into: s.output(range.count))
        }
    }

    /// out = w·b + (1 − w)·a with w = clamp((1 / max(|a − b|, 10⁻⁶))·t, 0, 1), each
    /// step rounded to Float32 in this order.
    static func blend(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, t: Float,
                      into out: UnsafeMutableBufferPointer<Float>) {
        precondition(b.count >= a.count && out.count >= a.count, "nearswap buffers shorter than the base's")
        for i in 0..<a.count {
            let w = weight(a[i], b[i], t: t)
            out[i] = w * b[i] + (1 - w) * a[i]
        }
    }

    /// The share of `b` an entry takes.
    @inline(__always)
    static func weight(_ a: Float, _ b: Float, t: Float) -> Float {
        let difference = abs(a - b)
        let w = (1 / (difference < minimumDifference ? minimumDifference : difference)) * t
        return w < 0 ? 0 : (w > 1 ? 1 : w)
    }
}
