import Foundation

/// The Gram matrix Gᵢⱼ = xᵢ·xⱼ of N vectors, summed in Double span by span. The
/// spherical means (Multi-SLERP, Karcher) stay in the span of their inputs, so they
/// are computed on G as coefficients of the inputs, and the tensor is then one
/// weighted sum of them.
struct GramMatrix: Sendable {
    let count: Int
    /// Row-major N×N; only entries j ≥ i are summed (`subscript` mirrors them).
    private var sums: [Double]

    init(count: Int) {
        self.count = count
        sums = [Double](repeating: 0, count: count * count)
    }

    subscript(_ i: Int, _ j: Int) -> Double { i <= j ? sums[i * count + j] : sums[j * count + i] }

    /// The products of one span of entries of `x`, in index order.
    init(_ x: [UnsafeBufferPointer<Float>]) {
        precondition(x.allSatisfy { $0.count == x[0].count }, "gram buffers differ in length")
        self.init(count: x.count)
        for i in 0..<count {
            for j in i..<count {
                let a = x[i], b = x[j]
                var s = 0.0
                for e in 0..<a.count { s += Double(a[e]) * Double(b[e]) }
                sums[i * count + j] = s
            }
        }
    }

    /// G of the `count` vectors `load` gives for each chunk of `job`, the chunks' sums
    /// added in chunk order.
    static func sum(_ job: MergeJob, count: Int, on executor: MergeExecutor,
                    _ load: (WorkerScratch, Range<Int>) throws -> [UnsafeBufferPointer<Float>]) throws -> GramMatrix {
        try executor.sum(job, from: GramMatrix(count: count), adding: { total, chunk in
            for k in total.sums.indices { total.sums[k] += chunk.sums[k] }
        }) { s, _, range in GramMatrix(try load(s, range)) }
    }

    /// (Σⱼ Gᵢⱼ cⱼ)ᵢ: the dot products of the inputs with Σ cⱼxⱼ.
    func times(_ c: [Double]) -> [Double] {
        (0..<count).map { i in
            var s = 0.0
            for j in 0..<count { s += self[i, j] * c[j] }
            return s
        }
    }

    /// ‖Σ cᵢxᵢ‖.
    func norm(_ c: [Double]) -> Double {
        let g = times(c)
        var s = 0.0
        for i in 0..<count { s += c[i] * g[i] }
        return max(s, 0).squareRoot()
    }
}

/// The passes shared by the spherical means: G of the inputs (task vectors with a
/// base) summed chunk by chunk, the coefficients rᵢ the method makes of it, then
/// out = Σ rᵢxᵢ (+ the base) chunk by chunk. One input is written as it is.
enum SphericalMean {
    static func produce(_ job: MergeJob, onBase: Bool, on executor: MergeExecutor, into bytes: OutputWindows,
                        coefficients: (GramMatrix) throws -> [Double]) throws {
        let decoder = executor.decoder
        if job.inputs.count == 1 {
            return try executor.write(job, into: bytes) { s, _, range in try decoder.decode(job.inputs[0], range, into: s.out, staging: s.staging) }
        }
        // Entries `range` of every input (δᵢ = θᵢ − θ₀ when `onBase`, the base in s.base).
        func load(_ s: WorkerScratch, _ range: Range<Int>) throws -> [UnsafeBufferPointer<Float>] {
            guard onBase else { return try decoder.decodeModels(job, range, s) }
            return try executor.deltas(job, range, s).map(UnsafeBufferPointer.init)
        }
        // Each rᵢ rounded to Float32 once; the sum is taken input by input.
        let factors = try coefficients(try GramMatrix.sum(job, count: job.inputs.count, on: executor, load)).map { Float($0) }
        try executor.write(job, into: bytes) { s, _, range in
            let x = try load(s, range)
            let out = s.output(range.count)
            for i in 0..<out.count { out[i] = 0 }
            for m in x.indices {
                let f = factors[m], v = x[m]
                for i in 0..<out.count { out[i] += f * v[i] }
            }
            if onBase { for i in 0..<out.count { out[i] += s.base[i] } }
        }
    }
}

/// Multi-SLERP: barycentric interpolation of N models (or, given a base, of their task
/// vectors, the base added back) on the hypersphere: each tensor is projected onto the
/// unit sphere, uᵢ = xᵢ/(‖xᵢ‖ + ε); the normalized weighted mean m of the uᵢ is the
/// tangent point, the weighted mean of the uᵢ's tangent components is mapped back by
/// the exponential map at m, and the result is scaled by the weighted mean norm Σ wᵢ‖xᵢ‖.
/// One model is returned as it is; two whose weighted mean vanishes are interpolated
/// linearly; more are refused.
struct MultiSlerpKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {
        let models = plan.contributingModels
        if models.isEmpty { throw .badPlan("multislerp needs at least one model\(plan.usesBaseAsReference ? " besides the base" : "")") }
        for model in models where model.parameters["weight"] == nil && plan.parameters["weight"] == nil {
            throw .badPlan("multislerp needs a weight for each model (\(model.path) has none)")
        }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .multislerp(weights: models.map { Float(value("weight", $0, 1)) }, normalize: value("normalize_weights", nil, 1) != 0,
                    eps: value("eps", nil, 1e-8), onBase: plan.usesBaseAsReference)
    }

    /// Normalizing divides by Σ wᵢ: the weights one tensor gets must not cancel to (nearly) 0.
    func checkResolved(_ job: MergeJob, plan: MergePlan) throws(MergeError) {
        guard case .multislerp(let weights, true, _, _) = job.parameters, weights.count > 1 else { return }
        try ParameterRange.checkWeightSum(weights, of: job.name, remedy: "normalize_weights divides by that sum")
    }

    /// The coefficients rᵢ of out = Σ rᵢxᵢ from the Gram matrix of the xᵢ; nil when the
    /// weighted mean of three or more unit vectors vanishes (|m| < ε).
    static func coefficients(_ g: GramMatrix, weights: [Float], normalize: Bool, eps: Double) -> [Double]? {
        let n = g.count
        var w = weights.map { Double($0) }
        if normalize {
            let total = w.reduce(0, +)
            w = w.map { $0 / total }
        }
        let norms = (0..<n).map { g[$0, $0].squareRoot() }
        // uᵢ = cᵢxᵢ; the weighted mean Σ wᵢuᵢ = Σ aᵢxᵢ.
        // (A zero tensor with ε = 0 has no direction: it is left out rather than made NaN.)
        let c = norms.map { $0 + eps > 0 ? 1 / ($0 + eps) : 0 }
        let a = (0..<n).map { w[$0] * c[$0] }
        let meanNorm = g.norm(a)
        if !(meanNorm >= eps) {
            guard n == 2, meanNorm < eps else { return nil }
            return w
        }
        let mean = a.map { $0 / meanNorm }
        // Tangent components uᵢ − (uᵢ·m)m, weighted and summed: Σ wᵢuᵢ − (Σ wᵢ(uᵢ·m))·m.
        let dots = g.times(mean)
        var projection = 0.0
        for i in 0..<n { projection += w[i] * c[i] * dots[i] }
        let tangent = (0..<n).map { a[$0] - projection * mean[$0] }
        let tangentNorm = g.norm(tangent) + eps
        var averageNorm = 0.0
        for i in 0..<n { averageNorm += norms[i] * w[i] }
        let along = cos(tangentNorm), across = sin(tangentNorm) / tangentNorm
        return (0..<n).map { averageNorm * (mean[$0] * along + tangent[$0] * across) }
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .multislerp(let weights, let normalize, let eps, let onBase) = job.parameters else {
            preconditionFailure("not a multislerp job")
        }
        try SphericalMean.produce(job, onBase: onBase, on: executor, into: bytes) { g in
            guard let r = Self.coefficients(g, weights: weights, normalize: normalize, eps: eps) else {
                throw MergeError.badParameter(
                    name: "weight",
                    problem: "the weighted mean of the normalized \(onBase ? "task vectors" : "tensors") of '\(job.name)' is zero (opposite tensors whose weights balance out); choose other weights")
            }
            return r
        }
    }
}
