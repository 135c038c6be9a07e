import Foundation

/// The Karcher (Riemannian) mean of N tensors on the unit hypersphere, each weighted
/// 1/N: the inputs uᵢ = xᵢ/‖xᵢ‖ with ‖xᵢ‖ > `tol` start from their normalized mean,
/// which then moves along the weighted mean of the log maps Σ αᵢ θᵢ/sin θᵢ (uᵢ − cos θᵢ·m)
/// (inputs within `tol` of m, or opposite it, left out) until that step is shorter than `tol` or after
/// `max_iter` steps; the result is m times the mean norm Σ ‖xᵢ‖/N (zero when no
/// input is longer than `tol`). A base given with the models is one more input.
struct KarcherKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {
        if plan.contributingModels.isEmpty { throw .badPlan("karcher needs at least one model") }
        // max_iter counts iterations: a whole number.
        let values = [plan.parameters["max_iter"]] + plan.models.map { $0.parameters["max_iter"] }
        for value in values.compactMap({ $0 }) {
            for v in value.allNumbers where v != v.rounded() {
                throw .badParameter(name: "max_iter", problem: "\(formatNumber(v)) is not a whole number")
            }
        }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        // A gradient may fall between whole numbers: its value is rounded down.
        let iterations = value("max_iter", nil, 10)
        let maxIterations = iterations.isFinite ? Int(min(max(iterations, 0), Double(ParameterRange.maximumIterations))) : 10
        return .karcher(maxIterations: maxIterations, tolerance: value("tol", nil, 1e-5))
    }

    /// The coefficients rᵢ of out = Σ rᵢxᵢ from the Gram matrix of the xᵢ.
    static func coefficients(_ g: GramMatrix, maxIterations: Int, tolerance tol: Double) -> [Double] {
        let n = g.count
        let alpha = 1 / Double(n)
        let norms = (0..<n).map { g[$0, $0].squareRoot() }
        // uᵢ = eᵢxᵢ.
        let e = norms.map { $0 == 0 ? 0 : 1 / $0 }
        let valid = (0..<n).filter { norms[$0] > tol }
        guard let first = valid.first else { return [Double](repeating: 0, count: n) }
        let beta = 1 / Double(valid.count)
        // The mean m = Σ cᵢxᵢ, normalized (the first unit vector when it nearly vanishes).
        var c = [Double](repeating: 0, count: n)
        for i in valid { c[i] = beta * e[i] }
        let meanNorm = g.norm(c)
        if meanNorm < tol {
            c = [Double](repeating: 0, count: n)
            c[first] = e[first]
        } else {
            c = c.map { $0 / meanNorm }
        }
        for _ in 0..<maxIterations {
            let dots = g.times(c)
            var tangent = [Double](repeating: 0, count: n)
            for i in valid {
                let cosine = min(max(dots[i] * e[i], -1), 1)
                let theta = acos(cosine)
                // An input at m contributes nothing; one opposite m (sin θ < 1e-7, beyond
                // Float32's resolution of the angle) has no direction to pull m in.
                if theta < tol || sin(theta) < 1e-7 { continue }
                let f = beta * theta / sin(theta)
                tangent[i] += f * e[i]
                for j in 0..<n { tangent[j] -= f * cosine * c[j] }
            }
            let tangentNorm = g.norm(tangent)
            if tangentNorm < tol { break }
            let along = cos(tangentNorm), across = sin(tangentNorm) / tangentNorm
            c = (0..<n).map { along * c[$0] + across * tangent[$0] }
            let unitNorm = g.norm(c)
            if unitNorm > tol { c = c.map { $0 / unitNorm } }
        }
        var scale = 0.0
        for i in 0..<n { scale += alpha * norms[i] }
        return c.map { scale * $0 }
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .karcher(let maxIterations, let tolerance) = job.parameters else { preconditionFailure("not a karcher job") }
        // (One tensor is its own mean.)
        try SphericalMean.produce(job, onBase: false, on: executor, into: bytes) {
            Self.coefficients($0, maxIterations: maxIterations, tolerance: tolerance)
        }
    }
}
