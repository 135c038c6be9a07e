import Checkpoints
import Testing
@testable import Training

struct TrainerTests {
    static let config = LlamaConfig(hiddenSize: 16, layerCount: 1, headCount: 2, keyValueHeadCount: 1, intermediateSize: 32,
                                    maxPositions: 96)
    static let suite = TaskSuite.builtIn(trainDocuments: 200, heldOut: 16)

    static func options(steps: Int, lr: Double = 1e-2, seed: UInt64 = 1) -> TrainingOptions {
        var o = TrainingOptions()
        o.steps = steps
        o.learningRate = lr
        o.batchSize = 8
        o.seed = seed
        return o
    }

    static func sftData() throws -> TrainingData {
        try TrainingRun.builtInData(for: .sft, suite: suite, maxPositions: config.maxPositions)
    }

    @Test func sftReducesHeldOutInstructionLoss() throws {
        let model = LlamaModel.initialized(config: Self.config, seed: 2)
        let heldOut = Self.suite.instructionHeldOut.map { TrainingData.chat($0.prompt, $0.response) }
        let before = Evaluator.meanNegativeLogProb(model, heldOut)
        let outcome = Trainer(model: model, task: .sft, data: try Self.sftData(), options: Self.options(steps: 30)).run()
        let after = Evaluator.meanNegativeLogProb(model, heldOut)
        #expect(outcome != .diverged(step: 0, keptStep: 0))
        #expect(after < before - 1, "held-out loss \(before) → \(after)")
    }

    @Test func sameSeedGivesTheSameWeightsToTheBit() throws {
        func run(seed: UInt64) throws -> [Float] {
            let model = LlamaModel.initialized(config: Self.config, seed: 2)
            _ = Trainer(model: model, task: .sft, data: try Self.sftData(), options: Self.options(steps: 5, seed: seed)).run()
            return model.parameterValues
        }
        // The demo test sets OpenBLAS's process-wide thread count while it runs, which
        // changes the order of BLAS sums between the runs compared here.
        let (a, b, c) = try blasThreadCount.withLock { (try run(seed: 9), try run(seed: 9), try run(seed: 10)) }
        #expect(a.map(\.bitPattern) == b.map(\.bitPattern))
        #expect(a != c)
    }

    @Test func l1ProximalStepLeavesExactZerosInTheDelta() throws {
        let start = LlamaModel.initialized(config: Self.config, seed: 2)
        func train(l1: Double) throws -> Int {
            let model = start.copy()
            var o = Self.options(steps: 10, lr: 1e-3)
            o.l1 = l1
            _ = Trainer(model: model, task: .sft, data: try Self.sftData(), options: o).run()
            // Embedding rows of bytes the data never uses get no gradient at all: count the rest.
            var unchanged = 0
            for slot in start.layout.slots where slot.name != "model.embed_tokens.weight" {
                let before = start.values(of: slot), after = model.values(of: slot)
                for i in before.indices where before[i].bitPattern == after[i].bitPattern { unchanged += 1 }
            }
            return unchanged
        }
        let dense = try train(l1: 0), sparse = try train(l1: 1.5)
        var total = 0
        for slot in start.layout.slots where slot.name != "model.embed_tokens.weight" { total += slot.count }
        #expect(dense < total / 100, "plain SFT leaves \(dense) of \(total) weights untouched")
        #expect(sparse > total / 2, "L1 SFT leaves \(sparse) of \(total) weights untouched")
    }

    @Test func divergingRunStopsAndKeepsFiniteWeights() throws {
        let model = LlamaModel.initialized(config: Self.config, seed: 2)
        var o = Self.options(steps: 50, lr: 1e6)
        o.clipNorm = 1e30
        let outcome = Trainer(model: model, task: .sft, data: try Self.sftData(), options: o).run()
        guard case .diverged(let step, let kept) = outcome else {
            Issue.record("expected divergence, got \(outcome)")
            return
        }
        #expect(kept < step)
        let batch = try Self.sftData().batch([0, 1, 2, 3])
        #expect(model.loss(batch, objective: .crossEntropy).isFinite)
    }

    @Test func dpoRaisesTheChosenOverRejectedMargin() throws {
        let model = LlamaModel.initialized(config: Self.config, seed: 2)
        _ = Trainer(model: model, task: .sft, data: try Self.sftData(), options: Self.options(steps: 10)).run()
        let reference = model.copy()
        let pairs = try TrainingRun.builtInData(for: .dpo, suite: Self.suite, maxPositions: Self.config.maxPositions)
        var o = Self.options(steps: 30, lr: 1e-2)
        o.beta = 0.5
        _ = Trainer(model: model, task: .dpo, data: pairs, options: o).run()
        let before = Evaluator.evaluate(reference, suite: Self.suite).preferenceAccuracy
        let report = Evaluator.evaluate(model, base: reference, suite: Self.suite, beta: 0.5)
        #expect(report.rewardMargin! > 0.5, "margin \(report.rewardMargin!)")
        #expect(report.preferenceAccuracy > before, "preference accuracy \(before) → \(report.preferenceAccuracy)")
    }

    @Test func orpoRaisesPreferenceAccuracy() throws {
        let model = LlamaModel.initialized(config: Self.config, seed: 2)
        let pairs = try TrainingRun.builtInData(for: .orpo, suite: Self.suite, maxPositions: Self.config.maxPositions)
        var o = Self.options(steps: 20, lr: 1e-2)
        o.lambda = 1
        let before = Evaluator.evaluate(model, suite: Self.suite).preferenceAccuracy
        _ = Trainer(model: model, task: .orpo, data: pairs, options: o).run()
        let after = Evaluator.evaluate(model, suite: Self.suite).preferenceAccuracy
        #expect(after > before + 0.2, "preference accuracy \(before) → \(after)")
    }
}

struct OptimizerTests {
    @Test func scheduleWarmsUpLinearlyThenDecaysByCosineToTheFloor() {
        let s = LearningRateSchedule(peak: 1, warmupSteps: 4, totalSteps: 14, minimumFraction: 0.1)
        #expect(s.rate(at: 0) == 0.25)
        #expect(s.rate(at: 3) == 1)
        #expect(s.rate(at: 4) == 1)
        #expect(abs(s.rate(at: 13) - 0.1) < 1e-12)
        #expect(s.rate(at: 8) < s.rate(at: 6))
    }

    @Test func firstAdamWStepMovesEachWeightByTheRateAgainstTheGradientSign() {
        let parameters = FloatBuffer([1, -2, 3]), gradient = FloatBuffer([0.5, -4, 0])
        AdamW(parameterCount: 3).update(parameters, gradient: gradient, rate: 0.1)
        #expect(abs(parameters[0] - 0.9) < 1e-6)
        #expect(abs(parameters[1] - -1.9) < 1e-6)
        #expect(parameters[2] == 3)
    }

    @Test func weightDecayIsDecoupledFromTheGradient() {
        let parameters = FloatBuffer([2]), gradient = FloatBuffer([0])
        AdamW(parameterCount: 1, weightDecay: 0.5).update(parameters, gradient: gradient, rate: 0.1)
        #expect(abs(parameters[0] - 1.9) < 1e-6)
    }

    @Test func clippingScalesTheGlobalNormDown() {
        let gradient = FloatBuffer([3, 4])
        let norm = ParameterUpdate.clip(gradient, maximum: 1)
        #expect(norm == 5)
        #expect(abs(gradient[0] - 0.6) < 1e-6 && abs(gradient[1] - 0.8) < 1e-6)
    }

    @Test func shrinkingTheDeltaSoftThresholds() {
        let start = FloatBuffer([1, 1, 1]), parameters = FloatBuffer([1.05, 0.5, 1.5])
        ParameterUpdate.shrinkDelta(parameters, start: start, threshold: 0.1)
        #expect(parameters[0] == 1)
        #expect(abs(parameters[1] - 0.6) < 1e-6 && abs(parameters[2] - 1.4) < 1e-6)
    }
}
