import Foundation
import Testing
import Checkpoints
@testable import Training

/// A merger for the pipeline test: plain task arithmetic θ₀ + Σ wᵢ(θᵢ − θ₀) whatever the
/// method, and the count of unchanged weights per delta — enough to check the pipeline's wiring.
struct TaskArithmeticMerger: DemoMerger {
    func merge(_ request: DemoMergeRequest) throws {
        let base = try ModelFolder.load(request.base)
        var merged = base.parameterValues
        let start = base.parameterValues
        for (model, weight) in zip(request.models, request.weights) {
            let values = try ModelFolder.load(model).parameterValues
            for i in merged.indices { merged[i] += Float(weight) * (values[i] - start[i]) }
        }
        try ModelFolder.save(LlamaModel(config: base.config, parameters: merged), to: request.output, overwrite: true)
    }

    func deltaStatistics(models: [String], names: [String], base: String) throws -> String {
        let start = try ModelFolder.load(base).parameterValues
        var lines: [String] = []
        for (model, name) in zip(models, names) {
            let values = try ModelFolder.load(model).parameterValues
            var unchanged = 0
            for i in values.indices where values[i] == start[i] { unchanged += 1 }
            lines.append("\(name): \(unchanged) of \(values.count) unchanged")
        }
        return lines.joined(separator: "\n")
    }
}

/// Held by tests that change OpenBLAS's process-wide thread count (the demo) or that
/// need it to stay put while they compare runs bit for bit.
let blasThreadCount = NSLock()

struct PAFTDemoTests {
    /// The skill is taught outside the chat format and the preference inside it, so SFT
    /// on the skill never trains an answer to a chat turn.
    @Test func skillAndPreferenceUseSeparatePromptFamilies() throws {
        let suite = TaskSuite.builtIn(trainDocuments: 10, heldOut: 4)
        let chatTokens: Set<Int32> = [Int32(ByteTokenizer.user), Int32(ByteTokenizer.assistant)]
        guard case .sequences(let skill) = try TrainingRun.builtInData(for: .sft, suite: suite, maxPositions: 128),
              case .pairs(let pairs) = try TrainingRun.builtInData(for: .dpo, suite: suite, maxPositions: 128) else {
            Issue.record("unexpected data kinds")
            return
        }
        #expect(!skill.isEmpty && skill.allSatisfy { chatTokens.isDisjoint(with: $0.tokens) })
        #expect(!pairs.isEmpty && pairs.allSatisfy { $0.chosen.tokens.contains(Int32(ByteTokenizer.assistant)) })
        for example in suite.instructionHeldOut {
            #expect(chatTokens.isDisjoint(with: example.promptTokens))
            #expect(TrainingData.sequence(example).tokens.starts(with: example.promptTokens))
        }
        #expect(suite.preferenceHeldOut.allSatisfy { !$0.prompt.hasPrefix("Write in capitals") })
    }

    @Test func pipelineTrainsMergesAndTabulatesEveryModel() throws {
        try blasThreadCount.withLock { try runPipeline() }
    }

    /// A BF16 folder stores every weight rounded to BF16, so an update below half a BF16
    /// step of its weight is lost on saving; F32 keeps it.
    @Test func bf16StorageRoundsWeightsAndDropsTinyUpdates() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("claire-bf16-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let model = LlamaModel.initialized(config: TrainerTests.config, seed: 3)
        try ModelFolder.save(model, to: folder + "/start", storage: .bf16)
        let start = try ModelFolder.load(folder + "/start")
        #expect(try Checkpoint.open(folder + "/start").tensors.allSatisfy { $0.dtype == .bf16 })
        let original = model.parameterValues
        var values = start.parameterValues
        for i in values.indices {
            #expect(values[i].bitPattern & 0xffff == 0)
            #expect(abs(values[i] - original[i]) <= abs(original[i]) / 256)
        }
        // A tiny update (a thousandth of a BF16 step) on every weight.
        for i in values.indices { values[i] += values[i] / 256 / 1000 }
        let nudged = LlamaModel(config: start.config, parameters: values)
        try ModelFolder.save(nudged, to: folder + "/bf16", storage: .bf16)
        try ModelFolder.save(nudged, to: folder + "/f32", storage: .f32)
        let base = start.parameterValues
        let bf16 = try ModelFolder.load(folder + "/bf16").parameterValues, f32 = try ModelFolder.load(folder + "/f32").parameterValues
        #expect(bf16 == base)
        #expect(zip(f32, base).filter { $0 != $1 }.count > base.count / 2)
        #expect(try Checkpoint.open(folder + "/f32").tensors.allSatisfy { $0.dtype == .f32 })
    }

    /// The best merge of a method is the one whose larger shortfall against the parents
    /// (exact match below SFT's, polite rate below DPO's) is smallest; the report says
    /// whether any merge beats both parents and by how much each misses.
    @Test func bestMergePerMethodIsJudgedAgainstBothParents() {
        func row(_ name: String, exact: Double, polite: Double, method: String? = nil) -> DemoRow {
            DemoRow(name: name, report: EvaluationReport(instructionLoss: 1, exactMatch: exact, preferenceAccuracy: 0.5,
                                                         rewardMargin: 0, politeRate: polite, perplexity: 2), method: method)
        }
        let parents = [row("sft", exact: 0.8, polite: 0.1), row("dpo", exact: 0, polite: 0.9),
                       row("sft→dpo (sequential)", exact: 0.5, polite: 0.5)]
        let missing = DemoResult(rows: parents + [row("ta a", exact: 0.7, polite: 0.2, method: "task_arithmetic"),
                                                  row("ta b", exact: 0.5, polite: 0.7, method: "task_arithmetic"),
                                                  row("ties a", exact: 0.1, polite: 0.9, method: "ties")], statistics: "")
        #expect(missing.bestMerges.map(\.name) == ["ta b", "ties a"])
        #expect(missing.bestMergeReport.contains("ta b does not beat both parents: exact match 0.300 below SFT's, polite rate 0.200 below DPO's."))
        #expect(missing.bestMergeReport.contains("No merge beats both parents."))
        let beating = DemoResult(rows: parents + [row("ties b", exact: 0.8, polite: 0.95, method: "ties")], statistics: "")
        #expect(beating.bestMergeReport.contains("ties b beats both parents"))
        #expect(!beating.bestMergeReport.contains("No merge beats both parents."))
    }

    private func runPipeline() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("claire-demo-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var demo = PAFTDemo(folder: folder)
        demo.config = TrainerTests.config
        demo.suite = TaskSuite.builtIn(trainDocuments: 100, heldOut: 4)
        for keyPath in [\PAFTDemo.pretrain, \PAFTDemo.sft, \PAFTDemo.dpo] {
            demo[keyPath: keyPath].steps = 3
            demo[keyPath: keyPath].batchSize = 4
        }
        demo.l1 = 1
        let result = try demo.run(merger: TaskArithmeticMerger()) { _ in }
        #expect(result.rows.map(\.name) == ["base", "sft", "sft-l1", "dpo", "sft→dpo (sequential)"] + demo.mergeRequests().map(\.name))
        #expect(demo.mergeRequests().count == 2 * (2 + 2 * 2 + 2 * 2))
        #expect(result.rows.count == 5 + demo.mergeRequests().count)
        #expect(result.markdownTable.split(separator: "\n").count == result.rows.count + 2)
        #expect(result.bestMerges.map(\.method) == ["task_arithmetic", "ties", "dare_ties"])
        #expect(Set(demo.mergeRequests().map(\.output)).count == demo.mergeRequests().count)
        #expect(result.statistics.contains("sft-l1: "))
        #expect(result.rows[0].report.rewardMargin == 0)
        for name in ["base", "sft", "dpo", "sft-dpo"] {
            #expect(try Checkpoint.open(demo.path(name)).tensors.allSatisfy { $0.dtype == .bf16 })
        }
    }
}
