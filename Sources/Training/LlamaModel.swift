#if canImport(Glibc)
import Checkpoints
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
        Array(parameters.elements(at: slot.offset, count: slot.count))
    }

    /// All weights, in layout order.
    public var parameterValues: [Float] { parameters.array }

    /// Runs the model on `batch` and returns the logits, `rowCount × vocabularySize`, row-major.
    public func logits(_ batch: TokenBatch) -> [Float] {
        let a = forward(batch)
        return Array(a.logits.elements(at: 0, count: batch.rowCount * config.vocabularySize))
    }

    /// The weights (or, from `gradient`, their gradients) of the tensors the passes use,
    /// as views checked against the buffer once each.
    private struct Weights {
        let inputNorm, query, key, value, output, postNorm, gate, up, down: UnsafeMutableBufferPointer<Float>

        init(_ buffer: FloatBuffer, _ s: ParameterLayout.LayerSlots, _ c: LlamaConfig) {
            let h = c.hiddenSize, inter = c.intermediateSize
            inputNorm = buffer.elements(at: s.inputNorm, count: h)
            query = buffer.elements(at: s.query, count: c.queryWidth * h)
            key = buffer.elements(at: s.key, count: c.keyValueWidth * h)
            value = buffer.elements(at: s.value, count: c.keyValueWidth * h)
            output = buffer.elements(at: s.output, count: h * c.queryWidth)
            postNorm = buffer.elements(at: s.postNorm, count: h)
            gate = buffer.elements(at: s.gate, count: inter * h)
            up = buffer.elements(at: s.up, count: inter * h)
            down = buffer.elements(at: s.down, count: h * inter)
        }
    }

    /// The forward pass; the returned activations stay valid until the next call.
    @discardableResult
    func forward(_ batch: TokenBatch) -> Activations {
        let a = workspace(sequences: batch.sequenceCount, length: batch.length)
        let c = config, n = batch.rowCount, h = c.hiddenSize, hd = c.headDimension
        let eps = Float(c.rmsNormEpsilon)
        precondition(batch.inputs.count >= n)
        a.tokens = batch.inputs
        let embedded = a.layerInput[0]
        for r in 0..<n {
            let token = Int(batch.inputs[r])
            precondition(token >= 0 && token < c.vocabularySize, "token id out of range")
            let row = parameters.elements(at: layout.embedding + token * h, count: h)
            let out = embedded.elements(at: r * h, count: h)
            for i in 0..<h { out[i] = row[i] }
        }
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.keyValueHeadCount
        let inter = c.intermediateSize
        for l in 0..<c.layerCount {
            let w = Weights(parameters, layout.layers[l], c), x = a.layerInput[l].elements
            let norm1 = a.norm1[l].elements, query = a.query[l], key = a.key[l], value = a.value[l]
            Kernels.rmsNorm(x, weight: w.inputNorm, rows: n, width: h, epsilon: eps,
                            output: norm1, reciprocalRoot: a.root1[l].elements)
            BLAS.linear(norm1, rows: n, inFeatures: h, weight: w.query, outFeatures: c.queryWidth, into: query.elements)
            BLAS.linear(norm1, rows: n, inFeatures: h, weight: w.key, outFeatures: c.keyValueWidth, into: key.elements)
            BLAS.linear(norm1, rows: n, inFeatures: h, weight: w.value, outFeatures: c.keyValueWidth, into: value.elements)
            Kernels.rotate(query.elements, rows: n, length: a.length, heads: c.headCount, headDimension: hd,
                           cosine: a.cosine.elements, sine: a.sine.elements, inverse: false)
            Kernels.rotate(key.elements, rows: n, length: a.length, heads: c.keyValueHeadCount, headDimension: hd,
                           cosine: a.cosine.elements, sine: a.sine.elements, inverse: false)
            let t = a.length
            for b in 0..<a.sequences {
                for head in 0..<c.headCount {
                    let kv = head / group
                    let q = query.elements(from: b * t * c.queryWidth + head * hd)
                    let k = key.elements(from: b * t * c.keyValueWidth + kv * hd)
                    let v = value.elements(from: b * t * c.keyValueWidth + kv * hd)
                    let p = a.probabilities[l].elements(at: (b * c.headCount + head) * t * t, count: t * t)
                    BLAS.gemm(transA: false, transB: true, m: t, n: t, k: hd, alpha: scale, a: q, lda: c.queryWidth,
                              b: k, ldb: c.keyValueWidth, beta: 0, c: p, ldc: t)
                    Kernels.causalSoftmax(p, length: t)
                    BLAS.gemm(transA: false, transB: false, m: t, n: hd, k: t, a: p, lda: t, b: v, ldb: c.keyValueWidth,
                              beta: 0, c: a.attention[l].elements(from: b * t * c.queryWidth + head * hd), ldc: c.queryWidth)
                }
            }
            // Residual: mid = x + attention · Woᵀ.
            let mid = a.middle[l]
            mid.copy(from: a.layerInput[l])
            BLAS.gemm(transA: false, transB: true, m: n, n: h, k: c.queryWidth, a: a.attention[l].elements, lda: c.queryWidth,
                      b: w.output, ldb: c.queryWidth, beta: 1, c: mid.elements, ldc: h)
            let norm2 = a.norm2[l].elements
            Kernels.rmsNorm(mid.elements, weight: w.postNorm, rows: n, width: h, epsilon: eps,
                            output: norm2, reciprocalRoot: a.root2[l].elements)
            BLAS.linear(norm2, rows: n, inFeatures: h, weight: w.gate, outFeatures: inter, into: a.gate[l].elements)
            BLAS.linear(norm2, rows: n, inFeatures: h, weight: w.up, outFeatures: inter, into: a.up[l].elements)
            Kernels.swiglu(gate: a.gate[l].elements, up: a.up[l].elements, count: n * inter, output: a.activated[l].elements)
            let next = a.layerInput[l + 1]
            next.copy(from: mid)
            BLAS.gemm(transA: false, transB: true, m: n, n: h, k: inter, a: a.activated[l].elements, lda: inter,
                      b: w.down, ldb: inter, beta: 1, c: next.elements, ldc: h)
        }
        Kernels.rmsNorm(a.layerInput[c.layerCount].elements, weight: parameters.elements(at: layout.finalNorm, count: h),
                        rows: n, width: h, epsilon: eps, output: a.finalNorm.elements, reciprocalRoot: a.finalRoot.elements)
        BLAS.linear(a.finalNorm.elements, rows: n, inFeatures: h,
                    weight: parameters.elements(at: layout.lmHead, count: c.vocabularySize * h),
                    outFeatures: c.vocabularySize, into: a.logits.elements)
        return a
    }

    /// The backward pass for the last `forward`: `logitGradient` (`rowCount × vocabularySize`)
    /// is ∂L/∂logits; the parameter gradient is added into `gradient` (one value per parameter).
    func backward(logitGradient: UnsafeMutableBufferPointer<Float>, into gradient: FloatBuffer) {
        guard let a = activations else { preconditionFailure("backward without forward") }
        precondition(gradient.count == layout.count)
        let c = config, n = a.sequences * a.length, h = c.hiddenSize, hd = c.headDimension, t = a.length
        let dx = a.residualGradient.elements, dh = a.normGradient.elements
        let vocabulary = c.vocabularySize
        dx.update(repeating: 0)
        BLAS.linearBackward(dy: logitGradient, x: a.finalNorm.elements, rows: n, inFeatures: h, outFeatures: vocabulary,
                            weight: parameters.elements(at: layout.lmHead, count: vocabulary * h),
                            weightGradient: gradient.elements(at: layout.lmHead, count: vocabulary * h),
                            inputGradient: dh, accumulate: false)
        Kernels.rmsNormBackward(dy: dh, x: a.layerInput[c.layerCount].elements,
                                weight: parameters.elements(at: layout.finalNorm, count: h),
                                reciprocalRoot: a.finalRoot.elements, rows: n, width: h, inputGradient: dx,
                                weightGradient: gradient.elements(at: layout.finalNorm, count: h))
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.keyValueHeadCount
        let inter = c.intermediateSize
        for l in stride(from: c.layerCount - 1, through: 0, by: -1) {
            let w = Weights(parameters, layout.layers[l], c), g = Weights(gradient, layout.layers[l], c)
            // MLP: dx holds ∂L/∂(layer output) = ∂L/∂(down output), and flows through the residual.
            BLAS.linearBackward(dy: dx, x: a.activated[l].elements, rows: n, inFeatures: inter, outFeatures: h,
                                weight: w.down, weightGradient: g.down, inputGradient: a.activatedGradient.elements,
                                accumulate: false)
            Kernels.swigluBackward(dAct: a.activatedGradient.elements, gate: a.gate[l].elements, up: a.up[l].elements,
                                   count: n * inter, dGate: a.gateGradient.elements, dUp: a.upGradient.elements)
            BLAS.linearBackward(dy: a.gateGradient.elements, x: a.norm2[l].elements, rows: n, inFeatures: h, outFeatures: inter,
                                weight: w.gate, weightGradient: g.gate, inputGradient: dh, accumulate: false)
            BLAS.linearBackward(dy: a.upGradient.elements, x: a.norm2[l].elements, rows: n, inFeatures: h, outFeatures: inter,
                                weight: w.up, weightGradient: g.up, inputGradient: dh, accumulate: true)
            Kernels.rmsNormBackward(dy: dh, x: a.middle[l].elements, weight: w.postNorm, reciprocalRoot: a.root2[l].elements,
                                    rows: n, width: h, inputGradient: dx, weightGradient: g.postNorm)
            // Attention: dx now holds ∂L/∂mid, which is ∂L/∂(o_proj output).
            let dAttention = a.attentionGradient
            BLAS.linearBackward(dy: dx, x: a.attention[l].elements, rows: n, inFeatures: c.queryWidth, outFeatures: h,
                                weight: w.output, weightGradient: g.output, inputGradient: dAttention.elements,
                                accumulate: false)
            let dq = a.queryGradient, dk = a.keyGradient, dv = a.valueGradient
            dk.zero()
            dv.zero()
            let dp = a.scoreGradient.elements(at: 0, count: t * t)
            for b in 0..<a.sequences {
                for head in 0..<c.headCount {
                    let kv = head / group
                    let qOffset = b * t * c.queryWidth + head * hd
                    let kvOffset = b * t * c.keyValueWidth + kv * hd
                    let p = a.probabilities[l].elements(at: (b * c.headCount + head) * t * t, count: t * t)
                    let dOut = dAttention.elements(from: qOffset)
                    BLAS.gemm(transA: false, transB: true, m: t, n: t, k: hd, a: dOut, lda: c.queryWidth,
                              b: a.value[l].elements(from: kvOffset), ldb: c.keyValueWidth, beta: 0, c: dp, ldc: t)
                    BLAS.gemm(transA: true, transB: false, m: t, n: hd, k: t, a: p, lda: t, b: dOut, ldb: c.queryWidth,
                              beta: 1, c: dv.elements(from: kvOffset), ldc: c.keyValueWidth)
                    Kernels.causalSoftmaxBackward(dp, probabilities: p, length: t, scale: scale)
                    BLAS.gemm(transA: false, transB: false, m: t, n: hd, k: t, a: dp, lda: t,
                              b: a.key[l].elements(from: kvOffset), ldb: c.keyValueWidth, beta: 0,
                              c: dq.elements(from: qOffset), ldc: c.queryWidth)
                    BLAS.gemm(transA: true, transB: false, m: t, n: hd, k: t, a: dp, lda: t,
                              b: a.query[l].elements(from: qOffset), ldb: c.queryWidth, beta: 1,
                              c: dk.elements(from: kvOffset), ldc: c.keyValueWidth)
                }
            }
            Kernels.rotate(dq.elements, rows: n, length: t, heads: c.headCount, headDimension: hd,
                           cosine: a.cosine.elements, sine: a.sine.elements, inverse: true)
            Kernels.rotate(dk.elements, rows: n, length: t, heads: c.keyValueHeadCount, headDimension: hd,
                           cosine: a.cosine.elements, sine: a.sine.elements, inverse: true)
            BLAS.linearBackward(dy: dq.elements, x: a.norm1[l].elements, rows: n, inFeatures: h, outFeatures: c.queryWidth,
                                weight: w.query, weightGradient: g.query, inputGradient: dh, accumulate: false)
            BLAS.linearBackward(dy: dk.elements, x: a.norm1[l].elements, rows: n, inFeatures: h, outFeatures: c.keyValueWidth,
                                weight: w.key, weightGradient: g.key, inputGradient: dh, accumulate: true)
            BLAS.linearBackward(dy: dv.elements, x: a.norm1[l].elements, rows: n, inFeatures: h, outFeatures: c.keyValueWidth,
                                weight: w.value, weightGradient: g.value, inputGradient: dh, accumulate: true)
            Kernels.rmsNormBackward(dy: dh, x: a.layerInput[l].elements, weight: w.inputNorm, reciprocalRoot: a.root1[l].elements,
                                    rows: n, width: h, inputGradient: dx, weightGradient: g.inputNorm)
        }
        for r in 0..<n {
            let token = Int(a.tokens[r])
            precondition(token >= 0 && token < vocabulary, "token id out of range")
            let row = gradient.elements(at: layout.embedding + token * h, count: h)
            for i in 0..<h { row[i] += dx[r * h + i] }
        }
    }

    private func workspace(sequences: Int, length: Int) -> Activations {
        if let a = activations, a.sequences == sequences, a.length == length { return a }
        let a = Activations(config: config, sequences: sequences, length: length)
        activations = a
        return a
    }
}
