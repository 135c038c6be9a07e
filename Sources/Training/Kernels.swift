#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The element-wise and per-row kernels of the Llama block, forward and backward.
///
/// Every kernel works on `rows` contiguous rows of `width` floats. Each one states
/// the sizes it relies on and checks them once at entry with `precondition` (kept
/// in release builds), so a wrong caller traps instead of touching memory outside
/// its buffers; the loops then index within those sizes only.
enum Kernels {
    /// RMSNorm: `y = x / sqrt(mean(x²) + eps) · w`; stores the reciprocal root per row.
    /// Bounds: `x` and `y` hold `rows × width` floats, `weight` `width`, `reciprocalRoot` `rows`.
    static func rmsNorm(_ x: UnsafeMutableBufferPointer<Float>, weight: UnsafeMutableBufferPointer<Float>, rows: Int,
                        width: Int, epsilon: Float, output y: UnsafeMutableBufferPointer<Float>,
                        reciprocalRoot: UnsafeMutableBufferPointer<Float>) {
        precondition(rows >= 0 && width >= 0)
        let size = rows * width
        precondition(x.count >= size && y.count >= size && weight.count >= width && reciprocalRoot.count >= rows)
        for r in 0..<rows {
            let base = r * width
            var sum: Float = 0
            for i in 0..<width { sum += x[base + i] * x[base + i] }
            let inv = 1 / (sum / Float(width) + epsilon).squareRoot()
            reciprocalRoot[r] = inv
            for i in 0..<width { y[base + i] = weight[i] * (x[base + i] * inv) }
        }
    }

    /// Backward of `rmsNorm`: `dx += ∂L/∂x` and `dw += ∂L/∂w`.
    /// Bounds: `dy`, `x` and `dx` hold `rows × width` floats, `weight` and `dw` `width`,
    /// `reciprocalRoot` `rows`.
    static func rmsNormBackward(dy: UnsafeMutableBufferPointer<Float>, x: UnsafeMutableBufferPointer<Float>,
                                weight: UnsafeMutableBufferPointer<Float>,
                                reciprocalRoot: UnsafeMutableBufferPointer<Float>, rows: Int, width: Int,
                                inputGradient dx: UnsafeMutableBufferPointer<Float>,
                                weightGradient dw: UnsafeMutableBufferPointer<Float>) {
        precondition(rows >= 0 && width >= 0)
        let size = rows * width
        precondition(dy.count >= size && x.count >= size && dx.count >= size)
        precondition(weight.count >= width && dw.count >= width && reciprocalRoot.count >= rows)
        for r in 0..<rows {
            let base = r * width
            let inv = reciprocalRoot[r]
            var dot: Float = 0
            for i in 0..<width {
                dot += dy[base + i] * weight[i] * x[base + i]
                dw[i] += dy[base + i] * x[base + i] * inv
            }
            let k = inv * inv * inv * dot / Float(width)
            for i in 0..<width { dx[base + i] += inv * dy[base + i] * weight[i] - k * x[base + i] }
        }
    }

    /// Rotary embedding in the rotate-half convention, in place, for `heads` heads per row:
    /// `out[i] = x[i]·cos − x[i+d/2]·sin`, `out[i+d/2] = x[i+d/2]·cos + x[i]·sin`.
    /// Row `r` is at position `r % length`. `inverse` applies the transpose (the backward).
    /// Bounds: `x` holds `rows × heads × headDimension` floats, `cosine` and `sine`
    /// `length × headDimension / 2`.
    static func rotate(_ x: UnsafeMutableBufferPointer<Float>, rows: Int, length: Int, heads: Int, headDimension: Int,
                       cosine: UnsafeMutableBufferPointer<Float>, sine: UnsafeMutableBufferPointer<Float>,
                       inverse: Bool) {
        precondition(rows >= 0 && heads >= 0 && headDimension >= 0 && (rows == 0 || length > 0))
        let half = headDimension / 2
        let width = heads * headDimension
        precondition(x.count >= rows * width && cosine.count >= length * half && sine.count >= length * half)
        let direction: Float = inverse ? -1 : 1
        for r in 0..<rows {
            let table = (r % length) * half
            for h in 0..<heads {
                let v = r * width + h * headDimension
                for i in 0..<half {
                    let c = cosine[table + i], s = sine[table + i] * direction
                    let a = x[v + i], b = x[v + i + half]
                    x[v + i] = a * c - b * s
                    x[v + i + half] = b * c + a * s
                }
            }
        }
    }

    /// SwiGLU: `act = silu(gate) · up`. Bounds: every buffer holds `count` floats.
    static func swiglu(gate: UnsafeMutableBufferPointer<Float>, up: UnsafeMutableBufferPointer<Float>, count: Int,
                       output: UnsafeMutableBufferPointer<Float>) {
        precondition(count >= 0 && gate.count >= count && up.count >= count && output.count >= count)
        for i in 0..<count {
            let g = gate[i]
            output[i] = g / (1 + expf(-g)) * up[i]
        }
    }

    /// Backward of `swiglu`: overwrites `dGate` and `dUp` from `dAct`.
    /// Bounds: every buffer holds `count` floats.
    static func swigluBackward(dAct: UnsafeMutableBufferPointer<Float>, gate: UnsafeMutableBufferPointer<Float>,
                               up: UnsafeMutableBufferPointer<Float>, count: Int,
                               dGate: UnsafeMutableBufferPointer<Float>, dUp: UnsafeMutableBufferPointer<Float>) {
        precondition(count >= 0 && dAct.count >= count && gate.count >= count && up.count >= count)
        precondition(dGate.count >= count && dUp.count >= count)
        for i in 0..<count {
            let g = gate[i]
            let sigma = 1 / (1 + expf(-g))
            let silu = g * sigma
            dUp[i] = dAct[i] * silu
            dGate[i] = dAct[i] * up[i] * sigma * (1 + g * (1 - sigma))
        }
    }

    /// Causal softmax over a `length × length` score block, in place (entries above the diagonal become 0).
    /// Bound: `scores` holds `length × length` floats.
    static func causalSoftmax(_ scores: UnsafeMutableBufferPointer<Float>, length: Int) {
        precondition(length >= 0 && scores.count >= length * length)
        for i in 0..<length {
            let row = i * length
            var peak = -Float.infinity
            for j in 0...i { peak = max(peak, scores[row + j]) }
            var sum: Float = 0
            for j in 0...i {
                let e = expf(scores[row + j] - peak)
                scores[row + j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0...i { scores[row + j] *= inv }
            for j in (i + 1)..<length { scores[row + j] = 0 }
        }
    }

    /// Backward of `causalSoftmax` followed by a `scale`: turns `dP` into `dS` in place given `P`.
    /// Bound: `gradient` and `probabilities` hold `length × length` floats.
    static func causalSoftmaxBackward(_ gradient: UnsafeMutableBufferPointer<Float>,
                                      probabilities: UnsafeMutableBufferPointer<Float>, length: Int, scale: Float) {
        precondition(length >= 0 && gradient.count >= length * length && probabilities.count >= length * length)
        for i in 0..<length {
            let row = i * length
            var dot: Float = 0
            for j in 0...i { dot += gradient[row + j] * probabilities[row + j] }
            for j in 0...i { gradient[row + j] = probabilities[row + j] * (gradient[row + j] - dot) * scale }
            for j in (i + 1)..<length { gradient[row + j] = 0 }
        }
    }
}
