#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The element-wise and per-row kernels of the Llama block, forward and backward.
///
/// Every kernel works on `rows` contiguous rows of `width` floats; callers pass
/// pointers into buffers that hold at least `rows × width` elements.
enum Kernels {
    /// RMSNorm: `y = x / sqrt(mean(x²) + eps) · w`; stores the reciprocal root per row.
    static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, rows: Int, width: Int, epsilon: Float,
                        output y: UnsafeMutablePointer<Float>, reciprocalRoot: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            let row = x + r * width
            var sum: Float = 0
            for i in 0..<width { sum += row[i] * row[i] }
            let inv = 1 / (sum / Float(width) + epsilon).squareRoot()
            reciprocalRoot[r] = inv
            let out = y + r * width
            for i in 0..<width { out[i] = weight[i] * (row[i] * inv) }
        }
    }

    /// Backward of `rmsNorm`: `dx += ∂L/∂x` and `dw += ∂L/∂w`.
    static func rmsNormBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                reciprocalRoot: UnsafePointer<Float>, rows: Int, width: Int,
                                inputGradient dx: UnsafeMutablePointer<Float>, weightGradient dw: UnsafeMutablePointer<Float>) {
        for r in 0..<rows {
            let xr = x + r * width, dyr = dy + r * width, dxr = dx + r * width
            let inv = reciprocalRoot[r]
            var dot: Float = 0
            for i in 0..<width {
                dot += dyr[i] * weight[i] * xr[i]
                dw[i] += dyr[i] * xr[i] * inv
            }
            let k = inv * inv * inv * dot / Float(width)
            for i in 0..<width { dxr[i] += inv * dyr[i] * weight[i] - k * xr[i] }
        }
    }

    /// Rotary embedding in the rotate-half convention, in place, for `heads` heads per row:
    /// `out[i] = x[i]·cos − x[i+d/2]·sin`, `out[i+d/2] = x[i+d/2]·cos + x[i]·sin`.
    /// Row `r` is at position `r % length`. `inverse` applies the transpose (the backward).
    static func rotate(_ x: UnsafeMutablePointer<Float>, rows: Int, length: Int, heads: Int, headDimension: Int,
                       cosine: UnsafePointer<Float>, sine: UnsafePointer<Float>, inverse: Bool) {
        let half = headDimension / 2
        let width = heads * headDimension
        let direction: Float = inverse ? -1 : 1
        for r in 0..<rows {
            let table = (r % length) * half
            for h in 0..<heads {
                let v = x + r * width + h * headDimension
                for i in 0..<half {
                    let c = cosine[table + i], s = sine[table + i] * direction
                    let a = v[i], b = v[i + half]
                    v[i] = a * c - b * s
                    v[i + half] = b * c + a * s
                }
            }
        }
    }

    /// SwiGLU: `act = silu(gate) · up`.
    static func swiglu(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int, output: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let g = gate[i]
            output[i] = g / (1 + expf(-g)) * up[i]
        }
    }

    /// Backward of `swiglu`: overwrites `dGate` and `dUp` from `dAct`.
    static func swigluBackward(dAct: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int,
                               dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>) {
        for i in 0..<count {
            let g = gate[i]
            let sigma = 1 / (1 + expf(-g))
            let silu = g * sigma
            dUp[i] = dAct[i] * silu
            dGate[i] = dAct[i] * up[i] * sigma * (1 + g * (1 - sigma))
        }
    }

    /// Causal softmax over a `length × length` score block, in place (entries above the diagonal become 0).
    static func causalSoftmax(_ scores: UnsafeMutablePointer<Float>, length: Int) {
        for i in 0..<length {
            let row = scores + i * length
            var peak = -Float.infinity
            for j in 0...i { peak = max(peak, row[j]) }
            var sum: Float = 0
            for j in 0...i {
                let e = expf(row[j] - peak)
                row[j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0...i { row[j] *= inv }
            for j in (i + 1)..<length { row[j] = 0 }
        }
    }

    /// Backward of `causalSoftmax` followed by a `scale`: turns `dP` into `dS` in place given `P`.
    static func causalSoftmaxBackward(_ gradient: UnsafeMutablePointer<Float>, probabilities: UnsafePointer<Float>,
                                      length: Int, scale: Float) {
        for i in 0..<length {
            let g = gradient + i * length, p = probabilities + i * length
            var dot: Float = 0
            for j in 0...i { dot += g[j] * p[j] }
            for j in 0...i { g[j] = p[j] * (g[j] - dot) * scale }
            for j in (i + 1)..<length { g[j] = 0 }
        }
    }
}
