import Foundation
import Testing
@testable import Training

// The training kernels against plain Float64 loops, on odd shapes and on lengths
// straddling the widths the optimizer vectorizes and unrolls by. Outputs live in
// buffers with guard regions that must come back untouched.

/// A deterministic value in [-1, 1).
private func value(_ i: Int, _ salt: Int) -> Float {
    var z = UInt64(bitPattern: Int64(i &* 7919 &+ salt &* 104_729)) &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return Float((z ^ (z >> 31)) >> 40) / Float(1 << 23) - 1
}

private func buffer(_ count: Int, salt: Int) -> FloatBuffer { FloatBuffer((0..<count).map { value($0, salt) }) }

/// |a − b| ≤ tolerance · (1 + |b|).
private func close(_ a: Float, _ b: Double, _ tolerance: Double = 1e-5) -> Bool {
    abs(Double(a) - b) <= tolerance * (1 + abs(b))
}

private let sentinel: Float = -12345.5

/// A buffer of `count` floats with `pad` guard floats after it, as a view of the first `count`.
private func guarded(_ count: Int, pad: Int = 7) -> FloatBuffer {
    let b = FloatBuffer(count: count + pad)
    for i in count..<(count + pad) { b[i] = sentinel }
    return b
}

private func guardsIntact(_ b: FloatBuffer, from count: Int) -> Bool {
    (count..<b.count).allSatisfy { b[$0] == sentinel }
}

/// Shapes (m, n, k) from the trivial to sizes that are no multiple of any block size.
private let shapes: [(Int, Int, Int)] = [(1, 1, 1), (1, 1, 0), (3, 5, 7), (5, 3, 1), (17, 33, 9), (33, 17, 65), (2, 64, 3)]

@Test("gemm equals naive loops for every transpose on odd shapes with padded leading dimensions")
func gemmMatchesNaiveProduct() {
    for (m, n, k) in shapes {
        for transA in [false, true] {
            for transB in [false, true] {
                // Leading dimensions one wider than needed, so the padding must be skipped.
                let (aRows, aColumns) = transA ? (k, m) : (m, k)
                let (bRows, bColumns) = transB ? (n, k) : (k, n)
                let lda = aColumns + 1, ldb = bColumns + 2, ldc = n + 3
                let a = buffer(aRows * lda, salt: 1), b = buffer(bRows * ldb, salt: 2)
                let cCount = m * ldc
                let c = guarded(cCount)
                for i in 0..<cCount { c[i] = value(i, 3) }
                let before = c.array
                let alpha: Float = 0.75, beta: Float = 0.5
                BLAS.gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                          a: a.elements, lda: lda, b: b.elements, ldb: ldb, beta: beta,
                          c: c.elements(at: 0, count: cCount), ldc: ldc)
                for i in 0..<m {
                    for j in 0..<ldc {
                        let index = i * ldc + j
                        guard j < n else {
                            #expect(c[index] == before[index], "padding of C touched")
                            continue
                        }
                        var sum: Double = 0
                        for p in 0..<k {
                            let x = transA ? a[p * lda + i] : a[i * lda + p]
                            let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                            sum += Double(x) * Double(y)
                        }
                        let expected = Double(alpha) * sum + Double(beta) * Double(before[index])
                        #expect(close(c[index], expected), "C[\(i),\(j)] of \(m)×\(n)×\(k) \(transA) \(transB)")
                    }
                }
                #expect(guardsIntact(c, from: cCount))
            }
        }
    }
}

@Test("linear and its backward equal naive loops on odd shapes")
func linearMatchesNaiveProduct() {
    for (rows, outFeatures, inFeatures) in shapes where inFeatures > 0 {
        let x = buffer(rows * inFeatures, salt: 4), w = buffer(outFeatures * inFeatures, salt: 5)
        let y = guarded(rows * outFeatures)
        BLAS.linear(x.elements, rows: rows, inFeatures: inFeatures, weight: w.elements, outFeatures: outFeatures,
                    into: y.elements(at: 0, count: rows * outFeatures))
        let dy = buffer(rows * outFeatures, salt: 6)
        let dw = guarded(outFeatures * inFeatures), dx = guarded(rows * inFeatures)
        for i in 0..<(outFeatures * inFeatures) { dw[i] = 0 }
        BLAS.linearBackward(dy: dy.elements, x: x.elements, rows: rows, inFeatures: inFeatures, outFeatures: outFeatures,
                            weight: w.elements, weightGradient: dw.elements(at: 0, count: outFeatures * inFeatures),
                            inputGradient: dx.elements(at: 0, count: rows * inFeatures), accumulate: false)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                var sum: Double = 0
                for i in 0..<inFeatures { sum += Double(x[r * inFeatures + i]) * Double(w[o * inFeatures + i]) }
                #expect(close(y[r * outFeatures + o], sum))
            }
            for i in 0..<inFeatures {
                var sum: Double = 0
                for o in 0..<outFeatures { sum += Double(dy[r * outFeatures + o]) * Double(w[o * inFeatures + i]) }
                #expect(close(dx[r * inFeatures + i], sum))
            }
        }
        for o in 0..<outFeatures {
            for i in 0..<inFeatures {
                var sum: Double = 0
                for r in 0..<rows { sum += Double(dy[r * outFeatures + o]) * Double(x[r * inFeatures + i]) }
                #expect(close(dw[o * inFeatures + i], sum))
            }
        }
        #expect(guardsIntact(y, from: rows * outFeatures) && guardsIntact(dw, from: outFeatures * inFeatures)
                && guardsIntact(dx, from: rows * inFeatures))
    }
}

/// Widths straddling vector widths and unroll factors.
private let widths = Array(1...40) + [63, 64, 65, 127, 128, 129]

@Test("rmsNorm and its backward equal plain Float64 loops at widths around the vector widths")
func rmsNormMatchesReference() {
    let rows = 3, epsilon: Float = 1e-5
    for width in widths {
        let x = buffer(rows * width, salt: width), weight = buffer(width, salt: width + 1)
        let y = guarded(rows * width), roots = guarded(rows)
        Kernels.rmsNorm(x.elements, weight: weight.elements, rows: rows, width: width, epsilon: epsilon,
                        output: y.elements(at: 0, count: rows * width), reciprocalRoot: roots.elements(at: 0, count: rows))
        let dy = buffer(rows * width, salt: width + 2)
        let dx = guarded(rows * width), dw = guarded(width)
        for i in 0..<(rows * width) { dx[i] = 0 }
        for i in 0..<width { dw[i] = 0 }
        Kernels.rmsNormBackward(dy: dy.elements, x: x.elements, weight: weight.elements,
                                reciprocalRoot: roots.elements(at: 0, count: rows), rows: rows, width: width,
                                inputGradient: dx.elements(at: 0, count: rows * width),
                                weightGradient: dw.elements(at: 0, count: width))
        var dwExpected = [Double](repeating: 0, count: width)
        for r in 0..<rows {
            var sum: Double = 0
            for i in 0..<width { sum += Double(x[r * width + i]) * Double(x[r * width + i]) }
            let inv = 1 / (sum / Double(width) + Double(epsilon)).squareRoot()
            #expect(close(roots[r], inv))
            var dot: Double = 0
            for i in 0..<width {
                let xi = Double(x[r * width + i]), dyi = Double(dy[r * width + i]), wi = Double(weight[i])
                #expect(close(y[r * width + i], wi * xi * inv), "y width \(width)")
                dot += dyi * wi * xi
                dwExpected[i] += dyi * xi * inv
            }
            for i in 0..<width {
                let xi = Double(x[r * width + i]), dyi = Double(dy[r * width + i]), wi = Double(weight[i])
                let expected = inv * dyi * wi - inv * inv * inv * dot / Double(width) * xi
                #expect(close(dx[r * width + i], expected, 1e-4), "dx width \(width)")
            }
        }
        for i in 0..<width { #expect(close(dw[i], dwExpected[i], 1e-4), "dw width \(width)") }
        #expect(guardsIntact(y, from: rows * width) && guardsIntact(roots, from: rows)
                && guardsIntact(dx, from: rows * width) && guardsIntact(dw, from: width))
    }
}

@Test("causal softmax and its backward equal plain Float64 loops at lengths around the vector widths")
func causalSoftmaxMatchesReference() {
    for length in Array(0...20) + [31, 32, 33, 63, 64, 65] {
        let count = length * length
        let scores = guarded(count), original = buffer(count, salt: length)
        for i in 0..<count { scores[i] = original[i] * 4 }
        Kernels.causalSoftmax(scores.elements(at: 0, count: count), length: length)
        let gradient = guarded(count), dP = buffer(count, salt: length + 7)
        for i in 0..<count { gradient[i] = dP[i] }
        let scale: Float = 0.3
        Kernels.causalSoftmaxBackward(gradient.elements(at: 0, count: count), probabilities: scores.elements(at: 0, count: count),
                                      length: length, scale: scale)
        for i in 0..<length {
            var peak = -Double.infinity
            for j in 0...i { peak = max(peak, Double(original[i * length + j] * 4)) }
            var sum: Double = 0
            for j in 0...i { sum += exp(Double(original[i * length + j] * 4) - peak) }
            var p = [Double](repeating: 0, count: length)
            for j in 0...i { p[j] = exp(Double(original[i * length + j] * 4) - peak) / sum }
            var dot: Double = 0
            for j in 0...i { dot += Double(dP[i * length + j]) * p[j] }
            for j in 0..<length {
                #expect(close(scores[i * length + j], p[j]), "P[\(i),\(j)] length \(length)")
                let expected = j <= i ? p[j] * (Double(dP[i * length + j]) - dot) * Double(scale) : 0
                #expect(close(gradient[i * length + j], expected, 1e-4), "dS[\(i),\(j)] length \(length)")
            }
        }
        #expect(guardsIntact(scores, from: count) && guardsIntact(gradient, from: count))
    }
}

@Test("SwiGLU and its backward equal plain Float64 loops at lengths 0…70 and around 128")
func swigluMatchesReference() {
    for count in Array(0...70) + [127, 128, 129] {
        let gate = buffer(count, salt: 11), up = buffer(count, salt: 12), dAct = buffer(count, salt: 13)
        let out = guarded(count), dGate = guarded(count), dUp = guarded(count)
        Kernels.swiglu(gate: gate.elements, up: up.elements, count: count, output: out.elements(at: 0, count: count))
        Kernels.swigluBackward(dAct: dAct.elements, gate: gate.elements, up: up.elements, count: count,
                               dGate: dGate.elements(at: 0, count: count), dUp: dUp.elements(at: 0, count: count))
        for i in 0..<count {
            let g = Double(gate[i]), u = Double(up[i]), d = Double(dAct[i])
            let sigma = 1 / (1 + exp(-g))
            #expect(close(out[i], g * sigma * u))
            #expect(close(dUp[i], d * g * sigma))
            #expect(close(dGate[i], d * u * sigma * (1 + g * (1 - sigma))))
        }
        #expect(guardsIntact(out, from: count) && guardsIntact(dGate, from: count) && guardsIntact(dUp, from: count))
    }
}

@Test("rotary embedding equals the rotate-half formula and its inverse undoes it")
func rotateMatchesReference() {
    for (rows, length, heads, headDimension) in [(1, 1, 1, 2), (5, 3, 2, 6), (7, 7, 3, 8), (9, 4, 1, 34)] {
        let half = headDimension / 2, width = heads * headDimension
        let original = buffer(rows * width, salt: rows + headDimension)
        let x = guarded(rows * width)
        for i in 0..<(rows * width) { x[i] = original[i] }
        let cosine = buffer(length * half, salt: 21), sine = buffer(length * half, salt: 22)
        Kernels.rotate(x.elements(at: 0, count: rows * width), rows: rows, length: length, heads: heads,
                       headDimension: headDimension, cosine: cosine.elements, sine: sine.elements, inverse: false)
        for r in 0..<rows {
            for h in 0..<heads {
                for i in 0..<half {
                    let c = Double(cosine[(r % length) * half + i]), s = Double(sine[(r % length) * half + i])
                    let base = r * width + h * headDimension
                    let a = Double(original[base + i]), b = Double(original[base + i + half])
                    #expect(close(x[base + i], a * c - b * s))
                    #expect(close(x[base + i + half], b * c + a * s))
                }
            }
        }
        #expect(guardsIntact(x, from: rows * width))
    }
}

@Test("kernels and checked views trap on buffers smaller than the sizes they are given")
func kernelsTrapOnShortBuffers() async {
    await #expect(processExitsWith: .failure) {
        let a = FloatBuffer(count: 15), b = FloatBuffer(count: 35), c = FloatBuffer(count: 20)  // C needs 3 × 7
        BLAS.gemm(transA: false, transB: false, m: 3, n: 7, k: 5, a: a.elements, lda: 5, b: b.elements, ldb: 7,
                  beta: 0, c: c.elements, ldc: 7)
    }
    await #expect(processExitsWith: .failure) {
        let a = FloatBuffer(count: 15), b = FloatBuffer(count: 35), c = FloatBuffer(count: 21)
        BLAS.gemm(transA: false, transB: false, m: 3, n: 7, k: 5, a: a.elements, lda: 4, b: b.elements, ldb: 7,
                  beta: 0, c: c.elements, ldc: 7)  // lda shorter than a row
    }
    await #expect(processExitsWith: .failure) {
        let scores = FloatBuffer(count: 8)  // a 3 × 3 block needs 9
        Kernels.causalSoftmax(scores.elements, length: 3)
    }
    await #expect(processExitsWith: .failure) {
        _ = FloatBuffer(count: 10).elements(at: 8, count: 3)
    }
}
