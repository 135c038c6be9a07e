#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A Llama-architecture causal language model with a hand-written backward pass.
///
/// Parameters live in one flat buffer laid out by `ParameterLayout`. `forward`
/// keeps every activation the backward needs; `backward` turns the gradient of
/// the loss with respect to the logits into the gradient of every parameter.
public final class LlamaModel {
    public let config: LlamaConfig
    public let layout: ParameterLayout
    /// The weights, in `layout` order.
    let parameters: FloatBuffer
    private var activations: Activations?

    /// A model holding `parameters` (one value per `layout` element).
    public init(config: LlamaConfig, parameters: [Float]) {
        self.config = config
        layout = ParameterLayout(config: config)
        precondition(parameters.count == layout.count, "parameter count does not match the layout")
        self.parameters = FloatBuffer(parameters)
    }

    init(config: LlamaConfig, buffer: FloatBuffer) {
        self.config = config
        layout = ParameterLayout(config: config)
        precondition(buffer.count == layout.count)
        parameters = buffer
    }

    /// A freshly initialized model: weights ~ N(0, 0.02²) as HF's `initializer_range`,
    /// norm weights 1; the same seed gives the same weights.
    public static func initialized(config: LlamaConfig, seed: UInt64) -> LlamaModel {
        let layout = ParameterLayout(config: config)
        var values = [Float](repeating: 0, count: layout.count)
        var random = SeededGenerator(seed: seed)
        for slot in layout.slots {
            let isNorm = ParameterLayout.isNorm(slot)
            for i in slot.offset..<(slot.offset + slot.count) {
                values[i] = isNorm ? 1 : Float(0.02 * random.normal())
            }
        }
        return LlamaModel(config: config, parameters: values)
    }

    /// A copy with its own weights.
    public func copy() -> LlamaModel { LlamaModel(config: config, buffer: parameters.clone()) }

    /// The weights of one named tensor.
    public func values(of slot: ParameterLayout.Slot) -> [Float] {
        Array(UnsafeBufferPointer(start: parameters.pointer + slot.offset, count: slot.count))
    }

    /// All weights, in layout order.
    public var parameterValues: [Float] { parameters.array }

    /// Runs the model on `batch` and returns the logits, `rowCount × vocabularySize`, row-major.
    public func logits(_ batch: TokenBatch) -> [Float] {
        let a = forward(batch)
        return Array(UnsafeBufferPointer(start: a.logits.pointer, count: batch.rowCount * config.vocabularySize))
    }

    /// The forward pass; the returned activations stay valid until the next call.
    @discardableResult
    func forward(_ batch: TokenBatch) -> Activations {
        let a = workspace(sequences: batch.sequenceCount, length: batch.length)
        let c = config, n = batch.rowCount, h = c.hiddenSize, hd = c.headDimension
        let w = parameters.pointer
        let eps = Float(c.rmsNormEpsilon)
        a.tokens = batch.inputs
        for r in 0..<n {
            let token = Int(batch.inputs[r])
            precondition(token >= 0 && token < c.vocabularySize, "token id out of range")
            (a.layerInput[0].pointer + r * h).update(from: w + layout.embedding + token * h, count: h)
        }
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.keyValueHeadCount
        for l in 0..<c.layerCount {
            let s = layout.layers[l], x = a.layerInput[l].pointer
            Kernels.rmsNorm(x, weight: w + s.inputNorm, rows: n, width: h, epsilon: eps,
                            output: a.norm1[l].pointer, reciprocalRoot: a.root1[l].pointer)
            BLAS.linear(a.norm1[l].pointer, rows: n, inFeatures: h, weight: w + s.query, outFeatures: c.queryWidth, into: a.query[l].pointer)
            BLAS.linear(a.norm1[l].pointer, rows: n, inFeatures: h, weight: w + s.key, outFeatures: c.keyValueWidth, into: a.key[l].pointer)
            BLAS.linear(a.norm1[l].pointer, rows: n, inFeatures: h, weight: w + s.value, outFeatures: c.keyValueWidth, into: a.value[l].pointer)
            Kernels.rotate(a.query[l].pointer, rows: n, length: a.length, heads: c.headCount, headDimension: hd,
                           cosine: a.cosine.pointer, sine: a.sine.pointer, inverse: false)
            Kernels.rotate(a.key[l].pointer, rows: n, length: a.length, heads: c.keyValueHeadCount, headDimension: hd,
                           cosine: a.cosine.pointer, sine: a.sine.pointer, inverse: false)
            let t = a.length
            for b in 0..<a.sequences {
                for head in 0..<c.headCount {
                    let kv = head / group
                    let q = a.query[l].pointer + b * t * c.queryWidth + head * hd
                    let k = a.key[l].pointer + b * t * c.keyValueWidth + kv * hd
                    let v = a.value[l].pointer + b * t * c.keyValueWidth + kv * hd
                    let p = a.probabilities[l].pointer + (b * c.headCount + head) * t * t
                    BLAS.gemm(transA: false, transB: true, m: t, n: t, k: hd, alpha: scale, a: q, lda: c.queryWidth,
                              b: k, ldb: c.keyValueWidth, beta: 0, c: p, ldc: t)
                    Kernels.causalSoftmax(p, length: t)
                    BLAS.gemm(transA: false, transB: false, m: t, n: hd, k: t, a: p, lda: t, b: v, ldb: c.keyValueWidth,
                              beta: 0, c: a.attention[l].pointer + b * t * c.queryWidth + head * hd, ldc: c.queryWidth)
                }
            }
            // Residual: mid = x + attention · Woᵀ.
            let mid = a.middle[l].pointer
            mid.update(from: x, count: n * h)
            BLAS.gemm(transA: false, transB: true, m: n, n: h, k: c.queryWidth, a: a.attention[l].pointer, lda: c.queryWidth,
                      b: w + s.output, ldb: c.queryWidth, beta: 1, c: mid, ldc: h)
            Kernels.rmsNorm(mid, weight: w + s.postNorm, rows: n, width: h, epsilon: eps,
                            output: a.norm2[l].pointer, reciprocalRoot: a.root2[l].pointer)
            let inter = c.intermediateSize
            BLAS.linear(a.norm2[l].pointer, rows: n, inFeatures: h, weight: w + s.gate, outFeatures: inter, into: a.gate[l].pointer)
            BLAS.linear(a.norm2[l].pointer, rows: n, inFeatures: h, weight: w + s.up, outFeatures: inter, into: a.up[l].pointer)
            Kernels.swiglu(gate: a.gate[l].pointer, up: a.up[l].pointer, count: n * inter, output: a.activated[l].pointer)
            let next = a.layerInput[l + 1].pointer
            next.update(from: mid, count: n * h)
            BLAS.gemm(transA: false, transB: true, m: n, n: h, k: inter, a: a.activated[l].pointer, lda: inter,
                      b: w + s.down, ldb: inter, beta: 1, c: next, ldc: h)
        }
        Kernels.rmsNorm(a.layerInput[c.layerCount].pointer, weight: w + layout.finalNorm, rows: n, width: h, epsilon: eps,
                        output: a.finalNorm.pointer, reciprocalRoot: a.finalRoot.pointer)
        BLAS.linear(a.finalNorm.pointer, rows: n, inFeatures: h, weight: w + layout.lmHead, outFeatures: c.vocabularySize,
                    into: a.logits.pointer)
        return a
    }

    /// The backward pass for the last `forward`: `logitGradient` (`rowCount × vocabularySize`)
    /// is ∂L/∂logits; the parameter gradient is added into `gradient` (one value per parameter).
    func backward(logitGradient: UnsafePointer<Float>, into gradient: FloatBuffer) {
        guard let a = activations else { preconditionFailure("backward without forward") }
        precondition(gradient.count == layout.count)
        let c = config, n = a.sequences * a.length, h = c.hiddenSize, hd = c.headDimension, t = a.length
        let w = parameters.pointer, g = gradient.pointer
        let dx = a.residualGradient.pointer, dh = a.normGradient.pointer
        dx.update(repeating: 0, count: n * h)
        BLAS.linearBackward(dy: logitGradient, x: a.finalNorm.pointer, rows: n, inFeatures: h, outFeatures: c.vocabularySize,
                            weight: w + layout.lmHead, weightGradient: g + layout.lmHead, inputGradient: dh, accumulate: false)
        Kernels.rmsNormBackward(dy: dh, x: a.layerInput[c.layerCount].pointer, weight: w + layout.finalNorm,
                                reciprocalRoot: a.finalRoot.pointer, rows: n, width: h, inputGradient: dx,
                                weightGradient: g + layout.finalNorm)
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.keyValueHeadCount
        let inter = c.intermediateSize
        for l in stride(from: c.layerCount - 1, through: 0, by: -1) {
            let s = layout.layers[l]
            // MLP: dx holds ∂L/∂(layer output) = ∂L/∂(down output), and flows through the residual.
            BLAS.linearBackward(dy: dx, x: a.activated[l].pointer, rows: n, inFeatures: inter, outFeatures: h,
                                weight: w + s.down, weightGradient: g + s.down, inputGradient: a.activatedGradient.pointer,
                                accumulate: false)
            Kernels.swigluBackward(dAct: a.activatedGradient.pointer, gate: a.gate[l].pointer, up: a.up[l].pointer,
                                   count: n * inter, dGate: a.gateGradient.pointer, dUp: a.upGradient.pointer)
            BLAS.linearBackward(dy: a.gateGradient.pointer, x: a.norm2[l].pointer, rows: n, inFeatures: h, outFeatures: inter,
                                weight: w + s.gate, weightGradient: g + s.gate, inputGradient: dh, accumulate: false)
            BLAS.linearBackward(dy: a.upGradient.pointer, x: a.norm2[l].pointer, rows: n, inFeatures: h, outFeatures: inter,
                                weight: w + s.up, weightGradient: g + s.up, inputGradient: dh, accumulate: true)
            Kernels.rmsNormBackward(dy: dh, x: a.middle[l].pointer, weight: w + s.postNorm, reciprocalRoot: a.root2[l].pointer,
                                    rows: n, width: h, inputGradient: dx, weightGradient: g + s.postNorm)
            // Attention: dx now holds ∂L/∂mid, which is ∂L/∂(o_proj output).
            let dAttention = a.attentionGradient.pointer
            BLAS.linearBackward(dy: dx, x: a.attention[l].pointer, rows: n, inFeatures: c.queryWidth, outFeatures: h,
                                weight: w + s.output, weightGradient: g + s.output, inputGradient: dAttention, accumulate: false)
            let dq = a.queryGradient.pointer, dk = a.keyGradient.pointer, dv = a.valueGradient.pointer
            dk.update(repeating: 0, count: n * c.keyValueWidth)
            dv.update(repeating: 0, count: n * c.keyValueWidth)
            let dp = a.scoreGradient.pointer
            for b in 0..<a.sequences {
                for head in 0..<c.headCount {
                    let kv = head / group
                    let qOffset = b * t * c.queryWidth + head * hd
                    let kvOffset = b * t * c.keyValueWidth + kv * hd
                    let p = a.probabilities[l].pointer + (b * c.headCount + head) * t * t
                    let dOut = dAttention + qOffset
                    BLAS.gemm(transA: false, transB: true, m: t, n: t, k: hd, a: dOut, lda: c.queryWidth,
                              b: a.value[l].pointer + kvOffset, ldb: c.keyValueWidth, beta: 0, c: dp, ldc: t)
                    BLAS.gemm(transA: true, transB: false, m: t, n: hd, k: t, a: p, lda: t, b: dOut, ldb: c.queryWidth,
                              beta: 1, c: dv + kvOffset, ldc: c.keyValueWidth)
                    Kernels.causalSoftmaxBackward(dp, probabilities: p, length: t, scale: scale)
                    BLAS.gemm(transA: false, transB: false, m: t, n: hd, k: t, a: dp, lda: t, b: a.key[l].pointer + kvOffset,
                              ldb: c.keyValueWidth, beta: 0, c: dq + qOffset, ldc: c.queryWidth)
                    BLAS.gemm(transA: true, transB: false, m: t, n: hd, k: t, a: dp, lda: t, b: a.query[l].pointer + qOffset,
                              ldb: c.queryWidth, beta: 1, c: dk + kvOffset, ldc: c.keyValueWidth)
                }
            }
            Kernels.rotate(dq, rows: n, length: t, heads: c.headCount, headDimension: hd,
                           cosine: a.cosine.pointer, sine: a.sine.pointer, inverse: true)
            Kernels.rotate(dk, rows: n, length: t, heads: c.keyValueHeadCount, headDimension: hd,
                           cosine: a.cosine.pointer, sine: a.sine.pointer, inverse: true)
            BLAS.linearBackward(dy: dq, x: a.norm1[l].pointer, rows: n, inFeatures: h, outFeatures: c.queryWidth,
                                weight: w + s.query, weightGradient: g + s.query, inputGradient: dh, accumulate: false)
            BLAS.linearBackward(dy: dk, x: a.norm1[l].pointer, rows: n, inFeatures: h, outFeatures: c.keyValueWidth,
                                weight: w + s.key, weightGradient: g + s.key, inputGradient: dh, accumulate: true)
            BLAS.linearBackward(dy: dv, x: a.norm1[l].pointer, rows: n, inFeatures: h, outFeatures: c.keyValueWidth,
                                weight: w + s.value, weightGradient: g + s.value, inputGradient: dh, accumulate: true)
            Kernels.rmsNormBackward(dy: dh, x: a.layerInput[l].pointer, weight: w + s.inputNorm, reciprocalRoot: a.root1[l].pointer,
                                    rows: n, width: h, inputGradient: dx, weightGradient: g + s.inputNorm)
        }
        for r in 0..<n {
            let token = Int(a.tokens[r])
            let row = g + layout.embedding + token * h, d = dx + r * h
            for i in 0..<h { row[i] += d[i] }
        }
    }

    private func workspace(sequences: Int, length: Int) -> Activations {
        if let a = activations, a.sequences == sequences, a.length == length { return a }
        let a = Activations(config: config, sequences: sequences, length: length)
        activations = a
        return a
    }
}
