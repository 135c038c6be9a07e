/// The four training objectives the command line offers.
public enum TrainingTask: String, CaseIterable, Sendable {
    case pretrain, sft, dpo, orpo
}

/// The knobs of one training run.
public struct TrainingOptions: Equatable, Sendable {
    public var steps: Int = 200
    /// Examples per step (pairs count once).
    public var batchSize: Int = 16
    public var learningRate: Double = 1e-3
    /// Linear warmup length; nil means a tenth of the run.
    public var warmupSteps: Int? = nil
    /// Decoupled AdamW weight decay.
    public var weightDecay: Double = 0
    /// Global gradient-norm limit.
    public var clipNorm: Double = 1
    public var seed: UInt64 = 0
    /// Weight of the L1 penalty on the delta from the starting weights (0 = off).
    public var l1: Double = 0
    /// DPO temperature.
    public var beta: Double = 0.1
    /// ORPO odds-ratio weight.
    public var lambda: Double = 0.1

    public init() {}

    /// The schedule these options imply.
    public var schedule: LearningRateSchedule {
        LearningRateSchedule(peak: learningRate, warmupSteps: warmupSteps ?? max(1, steps / 10), totalSteps: steps)
    }
}

/// What happened at one step, for progress displays.
public struct StepReport: Sendable {
    public let step: Int
    public let steps: Int
    public let loss: Double
    public let learningRate: Double
    public let gradientNorm: Double
}

/// How a run ended.
public enum TrainingOutcome: Equatable, Sendable {
    /// All steps ran; the mean loss of the last tenth of them.
    case completed(finalLoss: Double)
    /// Step `step` produced a non-finite loss or gradient; the model holds the
    /// weights after `keptStep` updates, the last ones with a finite loss.
    case diverged(step: Int, keptStep: Int)
}

/// Runs an objective over a model with AdamW, warmup + cosine, clipping and the
/// optional L1 proximal step. The model is updated in place; the same seed, data
/// and thread count give the same weights to the byte.
public final class Trainer {
    public let model: LlamaModel
    public let task: TrainingTask
    public let options: TrainingOptions
    private let data: TrainingData
    private let reference: LlamaModel?
    private let start: FloatBuffer?

    /// Prepares a run; DPO freezes a copy of `model` as its reference, and L1 keeps the start.
    public init(model: LlamaModel, task: TrainingTask, data: TrainingData, options: TrainingOptions) {
        self.model = model
        self.task = task
        self.options = options
        self.data = data
        reference = task == .dpo ? model.copy() : nil
        start = options.l1 > 0 ? model.parameters.clone() : nil
    }

    var objective: Objective {
        switch task {
        case .pretrain, .sft: return .crossEntropy
        case .dpo: return .dpo(beta: options.beta)
        case .orpo: return .orpo(lambda: options.lambda)
        }
    }

    /// Trains for `options.steps` steps, calling `progress` after each.
    public func run(progress: (StepReport) -> Void = { _ in }) -> TrainingOutcome {
        let optimizer = AdamW(parameterCount: model.layout.count, weightDecay: Float(options.weightDecay))
        let gradient = FloatBuffer(count: model.layout.count)
        let lastGood = model.parameters.clone()
        let schedule = options.schedule
        let objective = self.objective
        var random = SeededGenerator(seed: options.seed)
        var order = Array(0..<data.count)
        var cursor = order.count
        let batchSize = min(options.batchSize, data.count)
        var recent: [Double] = []
        for step in 0..<options.steps {
            if cursor + batchSize > order.count {
                for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, random.below(i + 1)) }
                cursor = 0
            }
            let batch = data.batch(order[cursor..<(cursor + batchSize)])
            cursor += batchSize
            let referenceLogProbs = reference?.targetLogProbs(batch).sums ?? []
            gradient.zero()
            let loss = model.lossAndGradient(batch, objective: objective, referenceLogProbs: referenceLogProbs, into: gradient)
            let norm = ParameterUpdate.clip(gradient, maximum: options.clipNorm)
            guard loss.isFinite, norm.isFinite else {
                model.parameters.copy(from: lastGood)
                return .diverged(step: step + 1, keptStep: max(0, step - 1))
            }
            lastGood.copy(from: model.parameters)
            let rate = schedule.rate(at: step)
            optimizer.update(model.parameters, gradient: gradient, rate: rate)
            if let start {
                ParameterUpdate.shrinkDelta(model.parameters, start: start, threshold: Float(rate * options.l1))
            }
            recent.append(loss)
            progress(StepReport(step: step + 1, steps: options.steps, loss: loss, learningRate: rate, gradientNorm: norm))
        }
        let tail = recent.suffix(max(1, recent.count / 10))
        return .completed(finalLoss: tail.isEmpty ? .nan : tail.reduce(0, +) / Double(tail.count))
    }
}
