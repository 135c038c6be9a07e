#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How the learning rate moves over a run: linear warmup from 0, then a cosine
/// decay to `minimumFraction` of the peak at the last step.
public struct LearningRateSchedule: Equatable, Sendable {
    public var peak: Double
    public var warmupSteps: Int
    public var totalSteps: Int
    public var minimumFraction: Double

    public init(peak: Double, warmupSteps: Int, totalSteps: Int, minimumFraction: Double = 0.1) {
        self.peak = peak
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.minimumFraction = minimumFraction
    }

    /// The rate for 0-based `step`.
    public func rate(at step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step + 1) / Double(warmupSteps) }
        let span = max(1, totalSteps - warmupSteps - 1)
        let progress = min(1, Double(step - warmupSteps) / Double(span))
        let cosine = 0.5 * (1 + cos(Double.pi * progress))
        return peak * (minimumFraction + (1 - minimumFraction) * cosine)
    }
}

/// Adam with decoupled weight decay (Loshchilov & Hutter) over the flat parameter vector.
final class AdamW {
    let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float
    private let first: FloatBuffer
    private let second: FloatBuffer
    private(set) var stepCount = 0

    init(parameterCount: Int, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        first = FloatBuffer(count: parameterCount)
        second = FloatBuffer(count: parameterCount)
    }

    /// One update of `parameters` from `gradient` at learning rate `rate`.
    func update(_ parameters: FloatBuffer, gradient: FloatBuffer, rate: Double) {
        stepCount += 1
        let correction1 = 1 - pow(Double(beta1), Double(stepCount))
        let correction2 = 1 - pow(Double(beta2), Double(stepCount))
        let stepSize = Float(rate / correction1)
        let rootCorrection2 = Float(correction2.squareRoot())
        let decay = 1 - Float(rate) * weightDecay
        precondition(gradient.count == parameters.count && first.count == parameters.count && second.count == parameters.count)
        let p = parameters.pointer, g = gradient.pointer, m = first.pointer, v = second.pointer
        let b1 = beta1, b2 = beta2, eps = epsilon
        for i in 0..<parameters.count {
            let gi = g[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            p[i] = p[i] * decay - stepSize * m[i] / (v[i].squareRoot() / rootCorrection2 + eps)
        }
    }
}

/// Gradient clipping and the L1 proximal step, the two other per-step passes over all parameters.
enum ParameterUpdate {
    /// The global L2 norm of `gradient`.
    static func norm(_ gradient: FloatBuffer) -> Double {
        var sum: Double = 0
        let g = gradient.pointer
        for i in 0..<gradient.count { sum += Double(g[i]) * Double(g[i]) }
        return sum.squareRoot()
    }

    /// Scales `gradient` so its global norm is at most `maximum`; returns the norm before clipping.
    @discardableResult
    static func clip(_ gradient: FloatBuffer, maximum: Double) -> Double {
        let total = norm(gradient)
        if total > maximum, total.isFinite {
            let scale = Float(maximum / total)
            let g = gradient.pointer
            for i in 0..<gradient.count { g[i] *= scale }
        }
        return total
    }

    /// Soft-thresholds the delta from `start`: δ ← sign(δ)·max(|δ| − threshold, 0), so
    /// small deltas become exact zeros (the parameter equals its starting value bit for bit).
    static func shrinkDelta(_ parameters: FloatBuffer, start: FloatBuffer, threshold: Float) {
        precondition(start.count == parameters.count)
        let p = parameters.pointer, s = start.pointer
        for i in 0..<parameters.count {
            let delta = p[i] - s[i]
            if abs(delta) <= threshold {
                p[i] = s[i]
            } else {
                p[i] = s[i] + (delta > 0 ? delta - threshold : delta + threshold)
            }
        }
    }
}
