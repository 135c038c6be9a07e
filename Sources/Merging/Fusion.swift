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

    public init(consensus: Consensus?, normalize: Bool, lambda: Float) {
        self.consensus = consensus
        self.normalize = normalize
        self.lambda = lambda
    }

    /// out = base + λ · mixed (/ divisor when normalizing), element by element.
    ///
    /// `deltas[i]` holds the weighted, sparsified delta uᵢ = wᵢ·δ̂ᵢ of model i.
    /// With consensus, only entries whose sign matches the elected sign count, in
    /// both the sum and the divisor; an entry that is 0 never agrees.
    public func combine(
        base: UnsafeBufferPointer<Float>, deltas: [UnsafeMutableBufferPointer<Float>], weights: [Float],
        into out: UnsafeMutableBufferPointer<Float>
    ) {
        let n = out.count
        let models = deltas.count
        guard let consensus else {
            var divisor: Float = 0
            for w in weights { divisor += w }
            if abs(divisor) < 1e-8 { divisor = 1 }
            for i in 0..<n { out[i] = 0 }
            for m in 0..<models {
                let u = deltas[m]
                for i in 0..<n { out[i] += u[i] }
            }
            if normalize {
                for i in 0..<n { out[i] = base[i] + out[i] / divisor * lambda }
            } else {
                for i in 0..<n { out[i] = base[i] + out[i] * lambda }
            }
            return
        }
        // `out` first holds the elected sign (+1 or −1).
        switch consensus {
        case .sum:
            for i in 0..<n { out[i] = 0 }
            for m in 0..<models {
                let u = deltas[m]
                for i in 0..<n { out[i] += u[i] }
            }
            for i in 0..<n { out[i] = out[i] >= 0 ? 1 : -1 }
        case .count:
            for i in 0..<n { out[i] = 0 }
            for m in 0..<models {
                let u = deltas[m]
                for i in 0..<n { out[i] += u[i] > 0 ? 1 : (u[i] < 0 ? -1 : 0) }
            }
            for i in 0..<n { out[i] = out[i] >= 0 ? 1 : -1 }
        }
        for i in 0..<n {
            let sign = out[i]
            var mixed: Float = 0
            var divisor: Float = 0
            for m in 0..<models {
                let u = deltas[m][i]
                if u * sign > 0 {
                    mixed += u
                    divisor += weights[m]
                }
            }
            if divisor == 0 { divisor = 1 }
            let fused = normalize ? mixed / divisor : mixed
            out[i] = base[i] + fused * lambda
        }
    }
}
