import Checkpoints
import Foundation
import Testing
@testable import Training

/// Activation memory grows with the square of the longest example, which the data
/// decides; a run that would need more than the budget is refused before it starts.
struct ActivationBudgetTests {
    @Test func aLongLineUnderAHugePositionLimitIsRefusedBeforeAnythingIsWritten() throws {
        var config = LlamaConfig.demo
        config.maxPositions = 1_000_000_000
        let model = LlamaModel.initialized(config: config, seed: 0)
        let data = try TrainingData.documents([String(repeating: "a", count: 100_000)], maxPositions: config.maxPositions,
                                              file: "long.jsonl")
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("claire-budget-\(UUID().uuidString)").path
        var options = TrainingRun.defaultOptions(for: .pretrain)
        options.steps = 1
        do {
            try TrainingRun.train(model, task: .pretrain, data: data, options: options, output: output, dataFile: "long.jsonl")
            Issue.record("a 100,000-token example needs terabytes of attention activations")
        } catch {
            guard case .data(let file, let line, let problem) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(file == "long.jsonl" && line == 1 && problem.contains("training budget"))
        }
        #expect(!FileManager.default.fileExists(atPath: output))
    }

    @Test func theEstimateCountsTheAttentionSquare() {
        let c = LlamaConfig.demo
        let short = c.activationBytes(sequences: 1, length: 64), long = c.activationBytes(sequences: 1, length: 128)
        // Doubling the length more than doubles the bytes (the L² attention term), and batches scale linearly.
        #expect(long > 2 * short)
        #expect(c.activationBytes(sequences: 4, length: 64) > 3.9 * short)
        #expect(c.activationBytes(sequences: 16, length: 128) < LlamaConfig.maximumActivationBytes)
    }
}
