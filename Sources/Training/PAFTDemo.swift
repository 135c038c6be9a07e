import Checkpoints
import Foundation

/// One merge the PAFT demo asks the merge engine for.
public struct DemoMergeRequest: Sendable, Equatable {
    /// Row label in the final table, e.g. "ties(sft-l1, dpo)".
    public let name: String
    /// The merge method, by its mergekit name: `task_arithmetic`, `ties` or `dare_ties`.
    public let method: String
    /// Fine-tuned model folders, in order.
    public let models: [String]
    /// The base folder the task vectors are taken against.
    public let base: String
    /// Per-model weights.
    public let weights: [Double]
    /// Per-model density (1 keeps every entry).
    public let density: Double
    /// Seed for random sparsifiers.
    public let seed: UInt64
    /// Folder to write the merged model to (replace it if present).
    public let output: String

    public init(name: String, method: String, models: [String], base: String, weights: [Double], density: Double,
                seed: UInt64, output: String) {
        self.name = name
        self.method = method
        self.models = models
        self.base = base
        self.weights = weights
        self.density = density
        self.seed = seed
        self.output = output
    }
}

/// What the demo needs from the merge side of Claire: merging model folders, and
/// describing the deltas it merges (sparsity, magnitude, sign agreement).
public protocol DemoMerger: Sendable {
    /// Writes the merge described by `request` to `request.output` as a model folder.
    func merge(_ request: DemoMergeRequest) throws
    /// A report of the task vectors of `models` (named `names`) against `base`.
    func deltaStatistics(models: [String], names: [String], base: String) throws -> String
}

/// One row of the demo's table.
public struct DemoRow: Sendable, Equatable {
    public let name: String
    public let report: EvaluationReport
    /// The merge method of a merged model (nil for trained ones).
    public var method: String? = nil
}

/// The demo's outcome: every model × every metric, and the delta statistics.
public struct DemoResult: Sendable {
    public let rows: [DemoRow]
    public let statistics: String

    /// The table as Markdown.
    public var markdownTable: String {
        func cell(_ x: Double?) -> String {
            guard let x, x.isFinite else { return "–" }
            return String(format: "%.3f", x)
        }
        var lines = ["| model | SFT loss ↓ | exact match ↑ | pref. acc. ↑ | reward margin ↑ | polite ↑ | perplexity ↓ |",
                     "|---|---:|---:|---:|---:|---:|---:|"]
        for row in rows {
            let r = row.report
            lines.append("| \(row.name) | \(cell(r.instructionLoss)) | \(cell(r.exactMatch)) | \(cell(r.preferenceAccuracy)) "
                         + "| \(cell(r.rewardMargin)) | \(cell(r.politeRate)) | \(cell(r.perplexity)) |")
        }
        return lines.joined(separator: "\n")
    }

    /// A merge's shortfall against the parents: how far its exact match falls below SFT's
    /// and its polite rate below DPO's (0 where it reaches the parent).
    public func shortfall(_ row: DemoRow) -> (skill: Double, preference: Double)? {
        guard let sft = rows.first(where: { $0.name == "sft" }), let dpo = rows.first(where: { $0.name == "dpo" }) else { return nil }
        return (max(0, sft.report.exactMatch - row.report.exactMatch), max(0, dpo.report.politeRate - row.report.politeRate))
    }

    /// The best merge of each method, in method order: the one whose larger shortfall
    /// against the parents is smallest (ties to the smaller sum, then the earlier row).
    public var bestMerges: [DemoRow] {
        var best: [DemoRow] = []
        for row in rows {
            guard let method = row.method, let gap = shortfall(row) else { continue }
            guard let i = best.firstIndex(where: { $0.method == method }) else { best.append(row); continue }
            guard let old = shortfall(best[i]) else { continue }
            if (max(gap.skill, gap.preference), gap.skill + gap.preference) < (max(old.skill, old.preference), old.skill + old.preference) {
                best[i] = row
            }
        }
        return best
    }

    /// The best merge per method against SFT, DPO and the sequential SFT → DPO baseline,
    /// as Markdown, and whether any merge beats both parents (by how much it misses if not).
    public var bestMergeReport: String {
        let parents = rows.filter { ["sft", "dpo", "sft→dpo (sequential)"].contains($0.name) }
        let best = bestMerges
        let table = DemoResult(rows: parents + best, statistics: "").markdownTable
        var lines = [table, ""]
        func f(_ x: Double) -> String { String(format: "%.3f", x) }
        for row in best {
            guard let gap = shortfall(row) else { continue }
            lines.append(gap.skill == 0 && gap.preference == 0
                ? "- \(row.name) beats both parents: exact match ≥ SFT's and polite rate ≥ DPO's."
                : "- \(row.name) does not beat both parents: exact match \(f(gap.skill)) below SFT's, "
                  + "polite rate \(f(gap.preference)) below DPO's.")
        }
        if !best.contains(where: { shortfall($0).map { $0.skill == 0 && $0.preference == 0 } ?? false }) {
            lines += ["", "No merge beats both parents."]
        }
        return lines.joined(separator: "\n")
    }
}

/// PAFT end to end on the built-in tasks: pretrain a base (or reuse one), train
/// SFT, DPO and L1-sparse SFT from it in parallel, the sequential SFT → DPO
/// baseline, merge through a `DemoMerger` over a small sweep of weights and
/// densities per method, and evaluate every model.
public struct PAFTDemo: Sendable {
    /// Folder that receives every model (`base`, `sft`, `sft-l1`, `dpo`, `sft-dpo`, merges).
    public var folder: String
    public var config: LlamaConfig = .demo
    public var suite: TaskSuite = .builtIn()
    public var pretrain = TrainingRun.defaultOptions(for: .pretrain)
    public var sft = TrainingRun.defaultOptions(for: .sft)
    public var dpo = TrainingRun.defaultOptions(for: .dpo)
    /// L1 weight of the sparse SFT run.
    public var l1: Double = 0.1
    /// The DPO model's weights the merges sweep (the SFT model's weight is 1).
    public var sweepWeights: [Double] = [1, 2]
    /// The densities the TIES and DARE-TIES merges sweep (task arithmetic keeps every entry).
    public var sweepDensities: [Double] = [0.3, 0.7]
    /// How every trained model is stored. BF16, as released checkpoints are, drops the
    /// updates smaller than half a BF16 step of their weight; F32 keeps them.
    public var storage: WeightStorage = .bf16

    public init(folder: String) { self.folder = folder }

    /// Names of everything `run` writes into `folder` (`base` is reused instead when it
    /// already holds a model of `config`).
    public func outputNames() -> [String] {
        ["base", "sft", "sft-l1", "dpo", "sft-dpo"]
            + mergeRequests().map { String($0.output.utf8.split(separator: UInt8(ascii: "/")).last.map { Substring($0) } ?? "") }
            + ["results.md", "pareto.svg"]
    }

    /// The merges the demo performs, in table order.
    public func mergeRequests() -> [DemoMergeRequest] {
        var requests: [DemoMergeRequest] = []
        for sftName in ["sft", "sft-l1"] {
            for method in ["task_arithmetic", "ties", "dare_ties"] {
                for weight in sweepWeights {
                    for density in method == "task_arithmetic" ? [1] : sweepDensities {
                        let setting = "w 1,\(Self.number(weight))" + (density < 1 ? " d \(Self.number(density))" : "")
                        requests.append(DemoMergeRequest(
                            name: "\(method)(\(sftName), dpo) \(setting)", method: method, models: [path(sftName), path("dpo")],
                            base: path("base"), weights: [1, weight], density: density, seed: 0,
                            output: path("merge-\(method)-\(sftName)-w\(Self.number(weight))"
                                         + (density < 1 ? "-d\(Self.number(density))" : ""))))
                    }
                }
            }
        }
        return requests
    }

    /// `x` without a trailing ".0".
    static func number(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : String(x)
    }

    /// The path of `name` inside `folder`.
    public func path(_ name: String) -> String { folder + "/" + name }

    /// Runs every stage; `progress` receives one line per event (from several threads at once).
    public func run(merger: DemoMerger, progress: @escaping @Sendable (String) -> Void) throws -> DemoResult {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        if let reused = try? ModelFolder.load(path("base")), reused.config == config,
           let stored = try? Checkpoint.open(path("base")), stored.tensors.allSatisfy({ $0.dtype == storage.dtype }) {
            progress("base: reusing \(path("base"))")
        } else {
            let initial = LlamaModel.initialized(config: config, seed: pretrain.seed)
            let data = try TrainingRun.builtInData(for: .pretrain, suite: suite, maxPositions: config.maxPositions)
            try TrainingRun.train(initial, task: .pretrain, data: data, options: pretrain, output: path("base"), overwrite: true,
                                  storage: storage) {
                progress("pretrain step \($0.step)/\($0.steps) loss \(String(format: "%.4f", $0.loss))")
            }
        }

        // The three fine-tunes from the base are independent: one thread each, one BLAS thread each.
        var l1Options = sft
        l1Options.l1 = l1
        let jobs: [(name: String, task: TrainingTask, options: TrainingOptions)] =
            [("sft", .sft, sft), ("dpo", .dpo, dpo), ("sft-l1", .sft, l1Options)]
        let threads = BLAS.threads
        BLAS.setThreads(1)
        let fineTunes = Result { () throws(TrainingError) in
            try WorkerQueue.forEach(count: jobs.count, workers: jobs.count) { (_, i) throws(TrainingError) in
                let job = jobs[i]
                try fineTune(from: path("base"), task: job.task, options: job.options, output: path(job.name)) {
                    progress("\(job.name) step \($0.step)/\($0.steps) loss \(String(format: "%.4f", $0.loss))")
                }
            }
        }
        BLAS.setThreads(threads)
        try fineTunes.get()
        try fineTune(from: path("sft"), task: .dpo, options: dpo, output: path("sft-dpo")) {
            progress("sft→dpo step \($0.step)/\($0.steps) loss \(String(format: "%.4f", $0.loss))")
        }

        var rows: [(name: String, folder: String, method: String?)] =
            [("base", path("base"), nil), ("sft", path("sft"), nil), ("sft-l1", path("sft-l1"), nil),
             ("dpo", path("dpo"), nil), ("sft→dpo (sequential)", path("sft-dpo"), nil)]
        for request in mergeRequests() {
            progress("merging \(request.name)")
            try merger.merge(request)
            rows.append((request.name, request.output, request.method))
        }
        progress("delta statistics")
        let deltaNames = ["sft", "sft-l1", "dpo"]
        let statistics = try merger.deltaStatistics(models: deltaNames.map(path), names: deltaNames, base: path("base"))
        // Evaluations are independent: one per core, one BLAS thread each. Each loads its own
        // copy of the base as stored (the reward margin's reference, the start of every
        // fine-tune), as models are not shared across threads.
        let evaluated = rows
        let workers = max(1, min(evaluated.count, WorkerQueue.processors))
        let (suite, beta, basePath) = (suite, dpo.beta, path("base"))
        let reports = try Evaluator.withBLASThreads(workers > 1 ? 1 : BLAS.threads) { () throws(TrainingError) in
            try WorkerQueue.map(count: evaluated.count, workers: workers) { (_, i) throws(TrainingError) -> EvaluationReport in
                progress("evaluating \(evaluated[i].name)")
                let model = try ModelFolder.load(evaluated[i].folder)
                return Evaluator.evaluate(model, base: try ModelFolder.load(basePath), suite: suite, beta: beta)
            }
        }
        var results: [DemoRow] = []
        for (row, report) in zip(rows, reports) { results.append(DemoRow(name: row.name, report: report, method: row.method)) }
        return DemoResult(rows: results, statistics: statistics)
    }

    private func fineTune(from start: String, task: TrainingTask, options: TrainingOptions, output: String,
                          progress: (StepReport) -> Void) throws(TrainingError) {
        let model = try ModelFolder.load(start)
        let data = try TrainingRun.builtInData(for: task, suite: suite, maxPositions: model.config.maxPositions)
        try TrainingRun.train(model, task: task, data: data, options: options, output: output, overwrite: true,
                              storage: storage, progress: progress)
    }
}
