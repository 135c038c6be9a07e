/// RAM (Reinforced Agent Merging) on the task vectors δᵢ = θᵢ − θ₀: an entry counts as
/// changed by model i when |δᵢ| > ε; an entry only one model changed takes that δ
/// whole, one that several changed takes their mean, so a change is never diluted by
/// models that left the entry alone. Elementwise, in one pass.
///
/// RAM+ (tensor-local, `plus`) scales each model's unique entries by
/// λᵢ = 1 + r·clamp(ρᵢ, 0, α), ρᵢ = (its shared changed entries) / max(its unique
/// ones, ε), both counted over the tensor in a first pass.
struct RAMKernel: MergeKernel {
    let plus: Bool

    func check(_ plan: MergePlan) throws(MergeError) {
        if plan.contributingModels.isEmpty { throw .badPlan("\(plan.method) needs at least one model besides the base") }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .ram(epsilon: Float(value("epsilon", nil, 1e-5)), r: Float(value("r", nil, 0.1)), alpha: Float(value("alpha", nil, 0.2)))
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .ram(let epsilon, let r, let alpha) = job.parameters else { preconditionFailure("not a ram job") }
        let n = job.inputs.count
        var scales: [Float]?
        if plus {
            // Per model, the entries it changed together with others and alone.
            let none = [(shared: Int, unique: Int)](repeating: (0, 0), count: n)
            let counts = try executor.sum(job, from: none, adding: { total, chunk in
                for m in 0..<n { total[m] = (total[m].shared + chunk[m].shared, total[m].unique + chunk[m].unique) }
            }) { s, _, range in
                let d = try executor.deltas(job, range, s)
                var counts = none
                for i in 0..<range.count {
                    var changed = 0
                    for m in 0..<n where abs(d[m][i]) > epsilon { changed += 1 }
                    guard changed > 0 else { continue }
                    for m in 0..<n where abs(d[m][i]) > epsilon {
                        if changed == 1 { counts[m].unique += 1 } else { counts[m].shared += 1 }
                    }
                }
                return counts
            }
            scales = counts.map { RAMKernel.scale(shared: $0.shared, unique: $0.unique, r: r, alpha: alpha, epsilon: epsilon) }
        }
        try executor.write(job, into: bytes) { s, _, range in
            let d = try executor.deltas(job, range, s).map(UnsafeBufferPointer.init)
            RAMKernel.fuse(base: s.baseEntries(range.count), deltas: d, epsilon: epsilon, uniqueScales: scales,
                           into: s.output(range.count))
        }
    }

    /// λ = 1 + r·min(max(ρ, 0), α), ρ = shared / max(unique, ε), in Float32.
    static func scale(shared: Int, unique: Int, r: Float, alpha: Float, epsilon: Float) -> Float {
        let rho = Float(shared) / max(Float(unique), epsilon)
        return 1 + r * min(max(rho, 0), alpha)
    }

    /// θ₀ + Σᵢ (δᵢ·λᵢ where only model i changed the entry, δᵢ / c where c > 1 models
    /// did), summed in model order in Float32; `uniqueScales` nil: every λᵢ = 1.
    static func fuse(base: UnsafeBufferPointer<Float>, deltas: [UnsafeBufferPointer<Float>], epsilon: Float,
                     uniqueScales: [Float]?, into out: UnsafeMutableBufferPointer<Float>) {
        precondition(base.count >= out.count && deltas.allSatisfy { $0.count >= out.count }, "ram buffers shorter than the output")
        for i in 0..<out.count {
            var changed = 0
            for d in deltas where abs(d[i]) > epsilon { changed += 1 }
            var merged: Float = 0
            for (m, d) in deltas.enumerated() {
                // An unchanged entry adds ±0 (a NaN stays NaN).
                let x = abs(d[i]) > epsilon ? d[i] : d[i] * 0
                if changed <= 1 {
                    merged += uniqueScales.map { x * $0[m] } ?? x
                } else {
                    merged += x / Float(changed)
                }
            }
            out[i] = base[i] + merged
        }
    }
}
