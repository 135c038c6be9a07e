#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a training step minimizes. Every objective is a function of the
/// per-token log-probabilities log π(target | prefix) of the counted targets, so
/// each returns the loss and ∂L/∂logp per row; `LogitLoss` turns that into ∂L/∂logits.
public enum Objective: Equatable, Sendable {
    /// Mean next-token cross-entropy over every counted target (pretraining and SFT,
    /// where the batch counts only response tokens).
    case crossEntropy
    /// Direct preference optimization: sequences come in (chosen, rejected) pairs;
    /// `referenceLogProbs` holds log π_ref(y|x) summed over response tokens, one per sequence.
    case dpo(beta: Double)
    /// Odds-ratio preference optimization with weight `lambda` on the odds-ratio term.
    case orpo(lambda: Double)
}

/// Per-sequence and per-row log-probabilities of the counted targets.
struct TargetLogProbs {
    /// log π(target) per row, 0 where nothing is counted.
    var rows: [Double]
    /// Sum over each sequence's counted rows.
    var sums: [Double]
    /// Number of counted rows per sequence.
    var counts: [Int]
}

/// The log-softmax side of every loss: log-probs of targets, and the gradient
/// with respect to the logits from a per-row ∂L/∂logp.
enum LogitLoss {
    /// Log-probabilities of the targets, and leaves the softmax in `logits` (in place)
    /// for `logitGradient`. Bounds: `logits` holds `rowCount × vocabulary` floats and every
    /// counted target is below `vocabulary` (both checked: once, and once per row).
    static func targetLogProbs(logits: UnsafeMutableBufferPointer<Float>, batch: TokenBatch, vocabulary: Int) -> TargetLogProbs {
        precondition(vocabulary > 0 && logits.count >= batch.rowCount * vocabulary && batch.targets.count >= batch.rowCount)
        var result = TargetLogProbs(rows: [Double](repeating: 0, count: batch.rowCount),
                                    sums: [Double](repeating: 0, count: batch.sequenceCount),
                                    counts: [Int](repeating: 0, count: batch.sequenceCount))
        for r in 0..<batch.rowCount {
            // In range: (r + 1) · vocabulary ≤ rowCount · vocabulary ≤ logits.count.
            let row = UnsafeMutableBufferPointer(rebasing: logits[(r * vocabulary)..<((r + 1) * vocabulary)])
            var peak = -Float.infinity
            for v in 0..<vocabulary { peak = max(peak, row[v]) }
            var sum: Double = 0
            for v in 0..<vocabulary {
                let e = expf(row[v] - peak)
                row[v] = e
                sum += Double(e)
            }
            let target = Int(batch.targets[r])
            precondition(target < vocabulary, "target token out of range")
            if target >= 0 {
                let logp = log(Double(row[target])) - log(sum)
                result.rows[r] = logp
                result.sums[r / batch.length] += logp
                result.counts[r / batch.length] += 1
            }
            let inv = Float(1 / sum)
            for v in 0..<vocabulary { row[v] *= inv }
        }
        return result
    }

    /// Overwrites the softmax in `logits` with ∂L/∂logits = g·(onehot − softmax) per row.
    /// Bounds: as `targetLogProbs`, checked the same way.
    static func logitGradient(softmax: UnsafeMutableBufferPointer<Float>, batch: TokenBatch, vocabulary: Int, rowGradient: [Double]) {
        precondition(vocabulary > 0 && softmax.count >= batch.rowCount * vocabulary && batch.targets.count >= batch.rowCount)
        for r in 0..<batch.rowCount {
            // In range: (r + 1) · vocabulary ≤ rowCount · vocabulary ≤ softmax.count.
            let row = UnsafeMutableBufferPointer(rebasing: softmax[(r * vocabulary)..<((r + 1) * vocabulary)])
            let g = Float(rowGradient[r])
            let target = Int(batch.targets[r])
            precondition(target < vocabulary, "target token out of range")
            if target < 0 || g == 0 {
                row.update(repeating: 0)
                continue
            }
            for v in 0..<vocabulary { row[v] = -g * row[v] }
            row[target] += g
        }
    }
}

extension Objective {
    /// The loss and ∂L/∂logp per row for `logProbs`. For preference objectives the
    /// batch holds pairs: sequence 2i is chosen, 2i + 1 rejected.
    func evaluate(_ logProbs: TargetLogProbs, batch: TokenBatch, referenceLogProbs: [Double]) -> (loss: Double, rowGradient: [Double]) {
        var gradient = [Double](repeating: 0, count: batch.rowCount)
        let t = batch.length
        switch self {
        case .crossEntropy:
            let total = logProbs.counts.reduce(0, +)
            guard total > 0 else { return (0, gradient) }
            var loss: Double = 0
            for r in 0..<batch.rowCount where batch.targets[r] >= 0 {
                loss -= logProbs.rows[r]
                gradient[r] = -1 / Double(total)
            }
            return (loss / Double(total), gradient)
        case .dpo(let beta):
            let pairs = batch.sequenceCount / 2
            var loss: Double = 0
            for i in 0..<pairs {
                let w = 2 * i, l = 2 * i + 1
                let z = beta * ((logProbs.sums[w] - referenceLogProbs[w]) - (logProbs.sums[l] - referenceLogProbs[l]))
                loss += softplus(-z)
                // d softplus(−z)/dz = −σ(−z)
                let dz = -sigmoid(-z) / Double(pairs)
                for r in (w * t)..<((w + 1) * t) where batch.targets[r] >= 0 { gradient[r] = dz * beta }
                for r in (l * t)..<((l + 1) * t) where batch.targets[r] >= 0 { gradient[r] = -dz * beta }
            }
            return (loss / Double(pairs), gradient)
        case .orpo(let lambda):
            let pairs = batch.sequenceCount / 2
            var loss: Double = 0
            for i in 0..<pairs {
                let w = 2 * i, l = 2 * i + 1
                let nw = Double(max(logProbs.counts[w], 1)), nl = Double(max(logProbs.counts[l], 1))
                let mw = logProbs.sums[w] / nw, ml = logProbs.sums[l] / nl
                // log odds(y) = m − log(1 − e^m), with m the mean token log-prob (< 0).
                let ratio = logOdds(mw) - logOdds(ml)
                loss += -mw + lambda * softplus(-ratio)
                let dRatio = -lambda * sigmoid(-ratio)
                let dmw = -1 + dRatio * logOddsDerivative(mw)
                let dml = -dRatio * logOddsDerivative(ml)
                for r in (w * t)..<((w + 1) * t) where batch.targets[r] >= 0 { gradient[r] = dmw / nw / Double(pairs) }
                for r in (l * t)..<((l + 1) * t) where batch.targets[r] >= 0 { gradient[r] = dml / nl / Double(pairs) }
            }
            return (loss / Double(pairs), gradient)
        }
    }

    /// True for objectives whose batches are (chosen, rejected) pairs.
    var isPreference: Bool {
        if case .crossEntropy = self { return false }
        return true
    }
}

/// log(1 + eˣ) without overflow.
func softplus(_ x: Double) -> Double { x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)) }

/// 1 / (1 + e⁻ˣ).
func sigmoid(_ x: Double) -> Double { 1 / (1 + exp(-x)) }

/// log(P / (1 − P)) for P = eᵐ, m < 0.
func logOdds(_ m: Double) -> Double { m - log(-expm1(min(m, -1e-12))) }

/// d/dm of `logOdds`: 1 / (1 − eᵐ).
func logOddsDerivative(_ m: Double) -> Double { 1 / -expm1(min(m, -1e-12)) }
