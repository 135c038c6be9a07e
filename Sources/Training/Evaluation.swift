#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Held-out measurements of one model on the built-in task suite: the skill metrics on
/// the skill's prompts (in their own format), the preference metrics on the request prompts.
public struct EvaluationReport: Equatable, Sendable {
    /// Mean token cross-entropy on held-out instruction responses.
    public var instructionLoss: Double
    /// Fraction of held-out instructions answered exactly (greedy decoding).
    public var exactMatch: Double
    /// Fraction of held-out pairs with log π(chosen) > log π(rejected).
    public var preferenceAccuracy: Double
    /// Mean β·[(log π − log π_base)(chosen) − (log π − log π_base)(rejected)], when a base is given.
    public var rewardMargin: Double?
    /// Fraction of held-out preference prompts answered politely (greedy decoding, `TaskSuite.isPolite`).
    public var politeRate: Double
    /// exp of the mean token cross-entropy on held-out pretraining documents.
    public var perplexity: Double

    /// The report as a JSON object (nil margin as null).
    public var json: String {
        func number(_ x: Double) -> String { x.isFinite ? String(x) : "null" }
        return "{\"instruction_loss\":\(number(instructionLoss)),\"exact_match\":\(number(exactMatch)),"
            + "\"preference_accuracy\":\(number(preferenceAccuracy)),"
            + "\"reward_margin\":\(rewardMargin.map(number) ?? "null"),\"polite_rate\":\(number(politeRate)),"
            + "\"perplexity\":\(number(perplexity))}"
    }
}

/// Evaluates models on the held-out splits of a `TaskSuite`.
public enum Evaluator {
    /// Sequences per forward pass while evaluating.
    static let chunk = 32

    /// All held-out metrics of `model`; `base` enables the reward margin (with temperature `beta`).
    public static func evaluate(_ model: LlamaModel, base: LlamaModel? = nil, suite: TaskSuite = .builtIn(),
                                beta: Double = 0.1) -> EvaluationReport {
        let instructions = suite.instructionHeldOut.map(TrainingData.sequence)
        let documents = suite.pretrainingHeldOut.map { TrainingSequence(tokens: ByteTokenizer.document($0), promptLength: 1) }
        var chosen: [TrainingSequence] = [], rejected: [TrainingSequence] = []
        for pair in suite.preferenceHeldOut {
            chosen.append(TrainingData.chat(pair.prompt, pair.chosen))
            rejected.append(TrainingData.chat(pair.prompt, pair.rejected))
        }
        let answers = greedy(model, prompts: suite.instructionHeldOut.map(\.promptTokens), maxNewTokens: 40)
        var exact = 0
        for (answer, example) in zip(answers, suite.instructionHeldOut) where answer == example.response { exact += 1 }
        let requests = greedy(model, prompts: suite.preferenceHeldOut.map { ByteTokenizer.prompt($0.prompt) }, maxNewTokens: 48)
        let polite = requests.filter(TaskSuite.isPolite).count

        let policyChosen = sums(model, chosen).sums, policyRejected = sums(model, rejected).sums
        var wins = 0
        for i in policyChosen.indices where policyChosen[i] > policyRejected[i] { wins += 1 }
        var margin: Double?
        if let base {
            let baseChosen = sums(base, chosen).sums, baseRejected = sums(base, rejected).sums
            var total: Double = 0
            for i in policyChosen.indices {
                total += beta * ((policyChosen[i] - baseChosen[i]) - (policyRejected[i] - baseRejected[i]))
            }
            margin = total / Double(max(1, policyChosen.count))
        }
        return EvaluationReport(
            instructionLoss: meanNegativeLogProb(model, instructions),
            exactMatch: Double(exact) / Double(max(1, answers.count)),
            preferenceAccuracy: Double(wins) / Double(max(1, policyChosen.count)),
            rewardMargin: margin,
            politeRate: Double(polite) / Double(max(1, requests.count)),
            perplexity: exp(meanNegativeLogProb(model, documents)))
    }

    /// Summed log-probabilities of the counted tokens of each sequence, and the token counts.
    static func sums(_ model: LlamaModel, _ sequences: [TrainingSequence]) -> (sums: [Double], counts: [Int]) {
        var sums: [Double] = [], counts: [Int] = []
        var start = 0
        while start < sequences.count {
            let end = min(sequences.count, start + chunk)
            var list: [(tokens: [Int32], promptLength: Int)] = []
            for s in sequences[start..<end] { list.append((s.tokens, s.promptLength)) }
            let logProbs = model.targetLogProbs(TokenBatch(sequences: list))
            sums += logProbs.sums
            counts += logProbs.counts
            start = end
        }
        return (sums, counts)
    }

    /// Mean negative log-probability per counted token.
    static func meanNegativeLogProb(_ model: LlamaModel, _ sequences: [TrainingSequence]) -> Double {
        let (s, c) = sums(model, sequences)
        let tokens = c.reduce(0, +)
        return tokens == 0 ? .nan : -s.reduce(0, +) / Double(tokens)
    }

    /// Greedy continuations of `prompts` until `eos` or `maxNewTokens`, decoded as text.
    public static func greedy(_ model: LlamaModel, prompts: [[Int32]], maxNewTokens: Int) -> [String] {
        var results: [String] = []
        var start = 0
        while start < prompts.count {
            let end = min(prompts.count, start + chunk)
            results += greedyChunk(model, Array(prompts[start..<end]), maxNewTokens: maxNewTokens)
            start = end
        }
        return results
    }

    private static func greedyChunk(_ model: LlamaModel, _ prompts: [[Int32]], maxNewTokens: Int) -> [String] {
        var sequences = prompts
        var generated = [[Int32]](repeating: [], count: prompts.count)
        var finished = [Bool](repeating: false, count: prompts.count)
        let vocabulary = model.config.vocabularySize
        for _ in 0..<maxNewTokens {
            var length = 0
            for s in sequences { length = max(length, s.count) }
            if length >= model.config.maxPositions { break }
            var inputs = [Int32](repeating: Int32(ByteTokenizer.pad), count: sequences.count * length)
            for (b, s) in sequences.enumerated() {
                for (t, token) in s.enumerated() { inputs[b * length + t] = token }
            }
            let activations = model.forward(TokenBatch(inputs: inputs, sequenceCount: sequences.count, length: length))
            for b in sequences.indices where !finished[b] {
                let row = activations.logits.elements(at: (b * length + sequences[b].count - 1) * vocabulary, count: vocabulary)
                var best = 0
                for v in 1..<vocabulary where row[v] > row[best] { best = v }
                if best == ByteTokenizer.eos { finished[b] = true; continue }
                sequences[b].append(Int32(best))
                generated[b].append(Int32(best))
            }
            if !finished.contains(false) { break }
        }
        return generated.map(ByteTokenizer.decode)
    }
}
