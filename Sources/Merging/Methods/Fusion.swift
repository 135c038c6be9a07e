/// TIES sign election: which sign each entry of the fused delta takes.
public enum Consensus: String, Sendable, CaseIterable {
    /// The sign of the sum of the weighted deltas (0 counts as +).
    case sum
    /// The sign with more votes among the weighted deltas (a tie counts as +).
    case count
}

/// How weighted task vectors become one delta and the output tensor.
public struct Fusion: Sendable, Hashable {
    /// Sign election, or nil to add every delta.
    public var consensus: Consensus?
    /// Divide by the sum of the (agreeing) weights.
    public var normalize: Bool
    /// Final scale λ of the fused delta.
    public var lambda: Float

    /// A fusion with the given sign election, normalization and scale.
    public init(consensus: Consensus?, normalize: Bool, lambda: Float) {
        self.consensus = consensus
        self.normalize = normalize
        self.lambda = lambda
    }

    /// out = base + λ · mixed (/ divisor when normalizing), element by element.
    ///
    /// `deltas[i]` holds the weighted, sparsified delta uᵢ = wᵢ·δ̂ᵢ of model i; the
    /// deltas may be used as scratch.
    /// Only entries whose sign matches the elected sign count, in both the sum and the
    /// divisor; an entry that is 0 never agrees. `divisors` is scratch of the same length.
    /// Every step is a plain loop over one model at a time, so it vectorizes.
    /// Two deltas — the usual SFT + preference pair — take a one-loop form with the same
    /// operations in the same order, so the result is bit for bit the general one.
    /// Every loop below runs over `0..<out.count`, which the checks here bound by the
    /// length of every buffer it indexes.
    public func combine(
        base: UnsafeBufferPointer<Float>, deltas: [UnsafeMutableBufferPointer<Float>], weights: [Float],
        into out: UnsafeMutableBufferPointer<Float>, divisors: UnsafeMutableBufferPointer<Float>
    ) {
        combine(Float32Arithmetic.self, base: base, deltas: deltas, weights: weights, into: out, divisors: divisors)
    }

    /// `combine` with each torch operation's result rounded by `A` (the weights are
    /// already values of the compute type): the sign election on the rounded sum, the
    /// sums over the models accumulated in Float32 and rounded once (as torch's
    /// `sum(dim=0)` of BF16 or F16 does), then the division, the scale and the
    /// addition of the base each rounded.
    func combine<A: Arithmetic>(
        _ arithmetic: A.Type, base: UnsafeBufferPointer<Float>, deltas: [UnsafeMutableBufferPointer<Float>],
        weights: [Float], into out: UnsafeMutableBufferPointer<Float>, divisors: UnsafeMutableBufferPointer<Float>
    ) {
        let n = out.count
        precondition(base.count == n && divisors.count >= n && weights.count == deltas.count
                     && deltas.allSatisfy { $0.count == n }, "fusion buffers differ in length")
        guard n > 0 else { return }
        if deltas.count == 2 {
            combinePair(A.self, base: base, deltas[0], deltas[1], weights: (weights[0], weights[1]), into: out)
        } else {
            combineEach(A.self, base: base, deltas: deltas, weights: weights, into: out, divisors: divisors)
        }
    }

    /// `combine` for two deltas in one pass over the entries.
    func combinePair<A: Arithmetic>(
        _ arithmetic: A.Type, base: UnsafeBufferPointer<Float>, _ u0: UnsafeMutableBufferPointer<Float>, _ u1: UnsafeMutableBufferPointer<Float>,
        weights: (Float, Float), into out: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(base.count == out.count && u0.count == out.count && u1.count == out.count, "fusion buffers differ in length")
        let n = out.count
        let (w0, w1) = weights
        let lambda = self.lambda
        guard let consensus else {
            var divisor = A.round(w0 + w1)
            if abs(divisor) < 1e-8 { divisor = 1 }
            if normalize {
                for i in 0..<n { out[i] = A.round(base[i] + A.round(A.round(A.round(u0[i] + u1[i]) / divisor) * lambda)) }
            } else {
                for i in 0..<n { out[i] = A.round(base[i] + A.round(A.round(u0[i] + u1[i]) * lambda)) }
            }
            return
        }
        switch consensus {
        case .sum:
            fusePair(A.self, base: base, u0, u1, weights: weights, into: out) { a, b in A.round(a + b) >= 0 ? 1 : -1 }
        case .count:
            fusePair(A.self, base: base, u0, u1, weights: weights, into: out) { a, b in
                let votes: Float = (a > 0 ? 1 : (a < 0 ? -1 : 0)) + (b > 0 ? 1 : (b < 0 ? -1 : 0))
                return votes >= 0 ? 1 : -1
            }
        }
    }

    /// The elected-sign fusion of two deltas in one loop; `elect` gives the sign (±1)
    /// of an entry's pair. Inlined per election rule, so each loop vectorizes.
    @inline(__always)
    private func fusePair<A: Arithmetic>(
        _ arithmetic: A.Type, base: UnsafeBufferPointer<Float>, _ u0: UnsafeMutableBufferPointer<Float>, _ u1: UnsafeMutableBufferPointer<Float>,
        weights: (Float, Float), into out: UnsafeMutableBufferPointer<Float>, elect: (Float, Float) -> Float
    ) {
        let (w0, w1) = weights
        let lambda = self.lambda
        if normalize {
            for i in 0..<out.count {
                let a = u0[i], b = u1[i], sign = elect(a, b)
                let agreesA: Float = a * sign > 0 ? 1 : 0
                let agreesB: Float = b * sign > 0 ? 1 : 0
                let divisor = A.round(w0 * agreesA + w1 * agreesB)
                let mixed = A.round(a * agreesA + b * agreesB)
                out[i] = A.round(base[i] + A.round(A.round(mixed / (divisor == 0 ? 1 : divisor)) * lambda))
            }
        } else {
            for i in 0..<out.count {
                let a = u0[i], b = u1[i], sign = elect(a, b)
                let agreesA: Float = a * sign > 0 ? 1 : 0
                let agreesB: Float = b * sign > 0 ? 1 : 0
                out[i] = A.round(base[i] + A.round(A.round(a * agreesA + b * agreesB) * lambda))
            }
        }
    }

    /// `combine` for any number of deltas, one model at a time.
    func combineEach<A: Arithmetic>(
        _ arithmetic: A.Type, base: UnsafeBufferPointer<Float>, deltas: [UnsafeMutableBufferPointer<Float>], weights: [Float],
        into out: UnsafeMutableBufferPointer<Float>, divisors: UnsafeMutableBufferPointer<Float>
    ) {
        let n = out.count
        precondition(base.count == n && divisors.count >= n && weights.count == deltas.count
                     && deltas.allSatisfy { $0.count == n }, "fusion buffers differ in length")
        guard let consensus else {
            Fusion.sum(deltas, into: out, n)
            var divisor: Float = 0
            for w in weights { divisor += w }
            divisor = A.round(divisor)
            if abs(divisor) < 1e-8 { divisor = 1 }
            if normalize {
                for i in 0..<n { out[i] = A.round(base[i] + A.round(A.round(A.round(out[i]) / divisor) * lambda)) }
            } else {
                for i in 0..<n { out[i] = A.round(base[i] + A.round(A.round(out[i]) * lambda)) }
            }
            return
        }
        // `out` first holds the elected sign (+1 or −1).
        switch consensus {
        case .sum:
            Fusion.sum(deltas, into: out, n)
        case .count:
            out.update(repeating: 0)
            for u in deltas {
                for i in 0..<n { out[i] += u[i] > 0 ? 1 : (u[i] < 0 ? -1 : 0) }
            }
        }
        for i in 0..<n { out[i] = A.round(out[i]) >= 0 ? 1 : -1 }
        // The first delta becomes the running masked sum, `divisors` the agreeing weights;
        // 1 or 0 as a number rather than a branch, so the loops vectorize.
        let mixed = deltas[0]
        let w0 = weights[0]
        for i in 0..<n {
            let agrees: Float = mixed[i] * out[i] > 0 ? 1 : 0
            mixed[i] *= agrees
            divisors[i] = w0 * agrees
        }
        for m in 1..<deltas.count {
            let u = deltas[m]
            let w = weights[m]
            for i in 0..<n {
                let agrees: Float = u[i] * out[i] > 0 ? 1 : 0
                mixed[i] += u[i] * agrees
                divisors[i] += w * agrees
            }
        }
        if normalize {
            for i in 0..<n {
                let divisor = A.round(divisors[i])
                let d = divisor == 0 ? 1 : divisor
                out[i] = A.round(base[i] + A.round(A.round(A.round(mixed[i]) / d) * lambda))
            }
        } else {
            for i in 0..<n { out[i] = A.round(base[i] + A.round(A.round(mixed[i]) * lambda)) }
        }
    }

    /// out = Σ deltas, added in model order (`combine` checked that every buffer holds `n`).
    @inline(__always)
    static func sum(_ deltas: [UnsafeMutableBufferPointer<Float>], into out: UnsafeMutableBufferPointer<Float>, _ n: Int) {
        guard let first = deltas.first, n > 0 else {
            out.update(repeating: 0)
            return
        }
        out.baseAddress!.update(from: first.baseAddress!, count: n)
        for u in deltas.dropFirst() { add(u, into: out, n) }
    }

    @inline(__always)
    static func add(_ u: UnsafeMutableBufferPointer<Float>, into out: UnsafeMutableBufferPointer<Float>, _ n: Int) {
        for i in 0..<n { out[i] += u[i] }
    }
}
