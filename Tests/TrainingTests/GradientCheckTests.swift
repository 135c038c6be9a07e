import Checkpoints
import Testing
@testable import Training

/// Finite-difference checks of the hand-written backward pass, tensor by tensor
/// and loss by loss, on a model small enough that each check takes milliseconds.
///
/// The model computes in Float32, so each check compares a directional derivative
/// along a random unit direction inside one tensor (central differences, step 1e-2)
/// with the analytic gradient's projection on that direction.
struct GradientCheckTests {
    static let tiny = LlamaConfig(hiddenSize: 8, layerCount: 2, headCount: 2, keyValueHeadCount: 1, intermediateSize: 12,
                                  maxPositions: 16)

    /// A model whose norm weights are not all one, so their gradients are exercised.
    static func model(_ config: LlamaConfig, seed: UInt64) -> LlamaModel {
        let m = LlamaModel.initialized(config: config, seed: seed)
        var random = SeededGenerator(seed: seed + 100)
        for i in 0..<m.parameters.count { m.parameters[i] += Float(0.3 * random.normal()) }
        return m
    }

    static func batch(preferencePairs: Bool) -> TokenBatch {
        if preferencePairs {
            return TokenBatch(sequences: [
                (ByteTokenizer.prompt("ab") + ByteTokenizer.response("Yes!"), 4),
                (ByteTokenizer.prompt("ab") + ByteTokenizer.response("no"), 4),
                (ByteTokenizer.prompt("xyz") + ByteTokenizer.response("Ok"), 5),
                (ByteTokenizer.prompt("xyz") + ByteTokenizer.response("bad one"), 5),
            ])
        }
        return TokenBatch(sequences: [
            (ByteTokenizer.prompt("hi") + ByteTokenizer.response("HI"), 4),
            (ByteTokenizer.document("a cat sat"), 1),
        ])
    }

    /// Relative disagreement between analytic and numeric directional derivatives in `slot`.
    static func disagreement(model m: LlamaModel, slot: ParameterLayout.Slot, batch: TokenBatch, objective: Objective,
                             reference: [Double], seed: UInt64) -> (analytic: Double, numeric: Double) {
        let gradient = FloatBuffer(count: m.layout.count)
        _ = m.lossAndGradient(batch, objective: objective, referenceLogProbs: reference, into: gradient)
        var random = SeededGenerator(seed: seed)
        var direction = [Double](repeating: 0, count: slot.count)
        var norm: Double = 0
        for i in 0..<slot.count { direction[i] = random.normal(); norm += direction[i] * direction[i] }
        norm = norm.squareRoot()
        var analytic: Double = 0
        for i in 0..<slot.count {
            direction[i] /= norm
            analytic += direction[i] * Double(gradient[slot.offset + i])
        }
        let step = 1e-2
        let saved = m.values(of: slot)
        func shifted(_ sign: Double) -> Double {
            for i in 0..<slot.count { m.parameters[slot.offset + i] = saved[i] + Float(sign * step * direction[i]) }
            return m.loss(batch, objective: objective, referenceLogProbs: reference)
        }
        let numeric = (shifted(1) - shifted(-1)) / (2 * step)
        for i in 0..<slot.count { m.parameters[slot.offset + i] = saved[i] }
        return (analytic, numeric)
    }

    static func check(_ config: LlamaConfig, objective: Objective) {
        let m = model(config, seed: 7)
        let batch = batch(preferencePairs: objective.isPreference)
        var reference: [Double] = []
        if objective.isPreference {
            let frozen = model(config, seed: 8)
            reference = frozen.targetLogProbs(batch).sums
        }
        for (k, slot) in m.layout.slots.enumerated() {
            let (analytic, numeric) = disagreement(model: m, slot: slot, batch: batch, objective: objective,
                                                   reference: reference, seed: UInt64(k))
            let error = abs(analytic - numeric) / max(abs(numeric), 1e-3)
            #expect(error < 2e-2, "\(slot.name): analytic \(analytic), numeric \(numeric)")
        }
    }

    @Test func crossEntropyGradientMatchesFiniteDifferencesForEveryTensor() {
        Self.check(Self.tiny, objective: .crossEntropy)
    }

    @Test func tiedEmbeddingGradientMatchesFiniteDifferences() {
        var config = Self.tiny
        config.tieWordEmbeddings = true
        Self.check(config, objective: .crossEntropy)
    }

    @Test func groupedQueryAttentionWithFourHeadsMatchesFiniteDifferences() {
        let config = LlamaConfig(hiddenSize: 16, layerCount: 1, headCount: 4, keyValueHeadCount: 2, intermediateSize: 8,
                                 maxPositions: 16)
        Self.check(config, objective: .crossEntropy)
    }

    @Test func dpoGradientMatchesFiniteDifferencesForEveryTensor() {
        Self.check(Self.tiny, objective: .dpo(beta: 0.5))
    }

    @Test func orpoGradientMatchesFiniteDifferencesForEveryTensor() {
        Self.check(Self.tiny, objective: .orpo(lambda: 0.5))
    }
}
