import Checkpoints
import Foundation
import Testing
@testable import Training
@testable import MergeTool

struct DemoCommandTests {
    @Test func engineMergerWritesTaskArithmeticOfTrainedFolders() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("claire-demo-merge-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let config = LlamaConfig(hiddenSize: 8, layerCount: 1, headCount: 2, keyValueHeadCount: 1, intermediateSize: 8,
                                 maxPositions: 16)
        var models: [LlamaModel] = []
        for (i, name) in ["base", "a", "b"].enumerated() {
            let model = LlamaModel.initialized(config: config, seed: UInt64(i))
            try ModelFolder.save(model, to: folder + "/" + name)
            models.append(model)
        }
        try EngineMerger().merge(DemoMergeRequest(
            name: "ta", method: "task_arithmetic", models: [folder + "/a", folder + "/b"], base: folder + "/base",
            weights: [1, 0.5], density: 1, seed: 0, output: folder + "/merged"))
        let merged = try ModelFolder.load(folder + "/merged").parameterValues
        let base = models[0].parameterValues, a = models[1].parameterValues, b = models[2].parameterValues
        var largest: Float = 0
        for i in merged.indices { largest = max(largest, abs(merged[i] - (base[i] + (a[i] - base[i]) + 0.5 * (b[i] - base[i])))) }
        #expect(largest < 1e-6)
        #expect(FileManager.default.fileExists(atPath: folder + "/merged/tokenizer.json"))
        let statistics = try EngineMerger().deltaStatistics(models: [folder + "/a", folder + "/b"], names: ["first", "second"],
                                                            base: folder + "/base")
        #expect(statistics.contains("first vs second"))
    }
}

/// The demo's plot: merges on skill against preference, the undominated ones on the
/// front, the trained models as parents.
@Test func demoPlotMarksTheFrontAndTheTrainedModels() throws {
    func row(_ name: String, exact: Double, polite: Double, method: String? = nil) -> DemoRow {
        DemoRow(name: name, report: EvaluationReport(instructionLoss: 1, exactMatch: exact, preferenceAccuracy: 0.5,
                                                     rewardMargin: nil, politeRate: polite, perplexity: 2), method: method)
    }
    let result = DemoResult(rows: [row("sft", exact: 0.9, polite: 0.1), row("dpo", exact: 0.1, polite: 0.9),
                                   row("ta w2", exact: 0.5, polite: 0.5, method: "task_arithmetic"),
                                   row("ties d0.3", exact: 0.8, polite: 0.2, method: "ties"),
                                   row("ties d0.7", exact: 0.4, polite: 0.4, method: "ties")],
                            statistics: "")
    let svg = MergeTool.Demo.paretoPlot(result)
    func marks(_ fill: String) -> [String] {
        svg.components(separatedBy: "fill=\"\(fill)\"><title>").dropFirst().map { String($0.prefix { $0 != "<" }) }
    }
    #expect(Set(marks("#1f77b4")) == ["ta w2", "ties d0.3"])
    #expect(marks("#999") == ["ties d0.7"])
    #expect(marks("#ff7f0e") == ["sft", "dpo"])
    #expect(svg.hasPrefix(MergeTool.Demo.writtenFileHeadings["pareto.svg"]!))
}
