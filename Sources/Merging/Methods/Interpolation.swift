import Foundation

/// The merge methods that interpolate weights directly instead of fusing task vectors.
public enum Interpolation {
    /// Linear: out = Σ wᵢθᵢ (/ Σ wᵢ when normalizing), accumulated in model order.
    /// With `fused`, each step is one fused multiply-add, as torch's `addcmul_` (which
    /// mergekit accumulates with) computes it; otherwise the product is rounded first.
    public static func linear(
        _ models: [UnsafeBufferPointer<Float>], weights: [Float], normalize: Bool,
        into out: UnsafeMutableBufferPointer<Float>, fused: Bool = false
    ) {
        precondition(weights.count == models.count && models.allSatisfy { $0.count == out.count }, "linear buffers differ in length")
        var total: Float = 0
        for w in weights { total += w }
        for i in 0..<out.count { out[i] = 0 }
        for m in 0..<models.count {
            let x = models[m]
            let w = weights[m]
            if fused {
                for i in 0..<out.count { out[i].addProduct(w, x[i]) }
            } else {
                for i in 0..<out.count { out[i] += w * x[i] }
            }
        }
        if normalize {
            for i in 0..<out.count { out[i] /= total }
        }
    }

    /// The two SLERP coefficients for one row pair from its statistics:
    /// ‖a‖², ‖b‖² and a·b. Norms ≤ 1e-8 count as 1; nearly parallel rows
    /// (|cos Ω| > 0.9995) fall back to linear interpolation.
    public static func slerpCoefficients(t: Float, normA2: Double, normB2: Double, dot: Double) -> (Float, Float) {
        var na = Float(normA2.squareRoot())
        var nb = Float(normB2.squareRoot())
        if !(na > 1e-8) { na = 1 }
        if !(nb > 1e-8) { nb = 1 }
        let cosine = min(max(Float(dot) / na / nb, -1), 1)
        if abs(cosine) > 0.9995 { return (1 - t, t) }
        let theta = acos(cosine)
        let s = sin(theta)
        return (sin((1 - t) * theta) / s, sin(t * theta) / s)
    }

    /// ‖a‖², ‖b‖² and a·b in Double, in index order.
    public static func slerpSums(_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>) -> (aa: Double, bb: Double, ab: Double) {
        precondition(a.count == b.count, "slerp buffers differ in length")
        var aa = 0.0, bb = 0.0, ab = 0.0
        for i in 0..<a.count {
            let x = Double(a[i]), y = Double(b[i])
            aa += x * x
            bb += y * y
            ab += x * y
        }
        return (aa, bb, ab)
    }

    /// out = ca·a + cb·b.
    public static func blend(
        _ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, _ ca: Float, _ cb: Float,
        into out: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(a.count == out.count && b.count == out.count, "slerp buffers differ in length")
        for i in 0..<out.count { out[i] = ca * a[i] + cb * b[i] }
    }
}

/// Model Stock: the interpolation factor between the average of the fine-tuned
/// models and the base, from the angle between their offsets.
public struct ModelStockStatistics: Sendable {
    /// Number of fine-tuned models N.
    public let models: Int
    /// ‖δᵢ‖² per model, then δᵢ·δⱼ per pair i < j (row-major pair order).
    public private(set) var sums: [Double]

    /// Empty statistics for `models` fine-tuned models.
    public init(models: Int) {
        self.models = models
        sums = [Double](repeating: 0, count: models + models * (models - 1) / 2)
    }

    /// Adds the offsets δᵢ = θᵢ − θ₀ of one span of entries (computed on the fly).
    /// With a compute type that rounds, each offset and each product δᵢ·δⱼ is
    /// rounded to it first (torch's elementwise operations in that type); in Float32
    /// the products are taken in Double.
    public mutating func accumulate(base: UnsafeBufferPointer<Float>, models x: [UnsafeBufferPointer<Float>],
                                    in compute: ComputeType = .f32) {
        switch compute {
        case .bf16: accumulate(BFloat16Arithmetic.self, base: base, models: x)
        case .f16: accumulate(Float16Arithmetic.self, base: base, models: x)
        case .f32, .f64: accumulate(Float32Arithmetic.self, base: base, models: x)
        }
    }

    private mutating func accumulate<A: Arithmetic>(
        _ arithmetic: A.Type, base: UnsafeBufferPointer<Float>, models x: [UnsafeBufferPointer<Float>]
    ) {
        let count = base.count
        precondition(x.count == models && x.allSatisfy { $0.count == count }, "model stock buffers differ in length")
        var slot = models
        for i in 0..<models {
            var s = 0.0
            let a = x[i]
            for e in 0..<count {
                let d = Double(A.round(a[e] - base[e]))
                s += d * d
            }
            sums[i] += s
        }
        for i in 0..<models {
            for j in (i + 1)..<max(i + 1, models) {
                var s = 0.0
                let a = x[i], b = x[j]
                for e in 0..<count {
                    let da = A.round(a[e] - base[e]), db = A.round(b[e] - base[e])
                    s += A.rounds ? Double(A.round(da * db)) : Double(da) * Double(db)
                }
                sums[slot] += s
                slot += 1
            }
        }
    }

    /// Adds another span's statistics (combine spans in a fixed order for identical results).
    public mutating func absorb(_ other: ModelStockStatistics) {
        for k in 0..<sums.count { sums[k] += other.sums[k] }
    }

    /// t = N·cos θ / (1 + (N − 1)·cos θ), cos θ the mean pairwise cosine (each clamped
    /// to [−1, 1], norms' product at least 1e-6); t = 0 when the denominator is below 1e-6.
    public var interpolationFactor: Float { interpolationFactor(in: .f32) }

    /// The factor as mergekit computes it in `compute`: for a type that rounds, each
    /// norm, product, cosine and the steps of t are values of that type (torch's
    /// reductions of BF16 and F16 accumulate in Float32 and round once; Claire
    /// accumulates in Double, which rounds to the same value but where a sum lies
    /// within Float32 rounding of a midpoint between two values of the type). Otherwise
    /// it is computed in Double.
    public func interpolationFactor(in compute: ComputeType) -> Float {
        compute.rounds ? interpolationFactor(compute.round as (Float) -> Float) : Float(interpolationFactor { (x: Double) in x })
    }

    /// t computed in `T`, each step's result rounded by `r`.
    private func interpolationFactor<T: BinaryFloatingPoint>(_ r: (T) -> T) -> T {
        var slot = models
        var total: T = 0
        var pairs = 0
        for i in 0..<models {
            for j in (i + 1)..<max(i + 1, models) {
                let normProduct = max(r(r(T(sums[i].squareRoot())) * r(T(sums[j].squareRoot()))), r(1e-6))
                total += min(max(r(r(T(sums[slot])) / normProduct), -1), 1)
                pairs += 1
                slot += 1
            }
        }
        // One pair's mean is its cosine (and none gives 0).
        let cosine = pairs > 1 ? r(total / T(pairs)) : total
        let n = T(models)
        let denominator = r(1 + r((n - 1) * cosine))
        if abs(denominator) < 1e-6 { return 0 }
        return r(r(n * cosine) / denominator)
    }

    /// out = t·mean(θᵢ) + (1 − t)·θ₀.
    public static func blend(
        base: UnsafeBufferPointer<Float>, models: [UnsafeBufferPointer<Float>], t: Float,
        into out: UnsafeMutableBufferPointer<Float>
    ) {
        blend(Float32Arithmetic.self, base: base, models: models, t: t, into: out)
    }

    /// `blend` with each operation rounded by `A`, in mergekit's order: the models
    /// added one at a time (Python's `sum` of tensors), the mean, t·mean, (1 − t)·θ₀
    /// and their sum.
    static func blend<A: Arithmetic>(
        _ arithmetic: A.Type, base: UnsafeBufferPointer<Float>, models: [UnsafeBufferPointer<Float>], t: Float,
        into out: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(base.count == out.count && models.allSatisfy { $0.count == out.count }, "model stock buffers differ in length")
        for i in 0..<out.count { out[i] = 0 }
        for m in 0..<models.count {
            let x = models[m]
            for i in 0..<out.count { out[i] = A.round(out[i] + x[i]) }
        }
        let n = Float(models.count)
        let rest = A.round(1 - t)
        for i in 0..<out.count { out[i] = A.round(A.round(t * A.round(out[i] / n)) + A.round(rest * base[i])) }
    }
}
