#if canImport(Glibc)
import Checkpoints
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Everything one forward pass keeps for the backward pass, plus the scratch
/// the backward needs, sized for one batch shape and reused while it lasts.
final class Activations {
    let sequences: Int
    let length: Int
    var tokens: [Int32] = []
    /// Residual stream entering each layer; the last entry is the stack's output.
    let layerInput: [FloatBuffer]
    let norm1, root1, query, key, value, probabilities, attention, middle: [FloatBuffer]
    let norm2, root2, gate, up, activated: [FloatBuffer]
    let finalNorm, finalRoot, logits: FloatBuffer
    /// Rotary tables for positions 0..<length: cos and sin of position · θ^(−2i/d).
    let cosine, sine: FloatBuffer
    // Backward scratch.
    let residualGradient, normGradient, attentionGradient, queryGradient, keyGradient, valueGradient: FloatBuffer
    let scoreGradient, activatedGradient, gateGradient, upGradient: FloatBuffer

    init(config c: LlamaConfig, sequences: Int, length: Int) {
        self.sequences = sequences
        self.length = length
        let n = sequences * length, h = c.hiddenSize, layers = c.layerCount
        func each(_ count: Int) -> [FloatBuffer] { (0..<layers).map { _ in FloatBuffer(count: count) } }
        layerInput = (0...layers).map { _ in FloatBuffer(count: n * h) }
        norm1 = each(n * h); root1 = each(n)
        query = each(n * c.queryWidth); key = each(n * c.keyValueWidth); value = each(n * c.keyValueWidth)
        probabilities = each(sequences * c.headCount * length * length)
        attention = each(n * c.queryWidth); middle = each(n * h)
        norm2 = each(n * h); root2 = each(n)
        gate = each(n * c.intermediateSize); up = each(n * c.intermediateSize); activated = each(n * c.intermediateSize)
        finalNorm = FloatBuffer(count: n * h); finalRoot = FloatBuffer(count: n)
        logits = FloatBuffer(count: n * c.vocabularySize)
        let half = c.headDimension / 2
        cosine = FloatBuffer(count: length * half); sine = FloatBuffer(count: length * half)
        for position in 0..<length {
            for i in 0..<half {
                // As transformers: inverse frequencies in Float32, then the angle in Float32.
                let inverseFrequency = Float(1 / pow(c.ropeTheta, Double(2 * i) / Double(c.headDimension)))
                let angle = Float(position) * inverseFrequency
                cosine[position * half + i] = cosf(angle)
                sine[position * half + i] = sinf(angle)
            }
        }
        residualGradient = FloatBuffer(count: n * h); normGradient = FloatBuffer(count: n * h)
        attentionGradient = FloatBuffer(count: n * c.queryWidth); queryGradient = FloatBuffer(count: n * c.queryWidth)
        keyGradient = FloatBuffer(count: n * c.keyValueWidth); valueGradient = FloatBuffer(count: n * c.keyValueWidth)
        scoreGradient = FloatBuffer(count: length * length)
        activatedGradient = FloatBuffer(count: n * c.intermediateSize)
        gateGradient = FloatBuffer(count: n * c.intermediateSize); upGradient = FloatBuffer(count: n * c.intermediateSize)
    }
}
