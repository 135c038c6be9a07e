import ArgumentParser
import Checkpoints
import Foundation
import Merging
import Statistics
import Training

extension WeightStorage: ExpressibleByArgument {}

extension MergeTool {
    struct Demo: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "PAFT end to end on the built-in tasks: train, merge, evaluate, print the table.",
            discussion: """
                Pretrains a base (or reuses OUT/base), trains SFT, DPO and L1-sparse SFT from it \
                in parallel, the sequential SFT → DPO baseline, merges the deltas with task \
                arithmetic, TIES and DARE-TIES over a small sweep of weights (DPO 1, 2) and \
                densities (0.3, 0.7), evaluates every model on held-out data and reports the \
                best merge per method against SFT, DPO and the sequential baseline. \
                The table is printed and written to OUT/results.md, and the merges are plotted on \
                skill against preference, with their Pareto front and the trained models, in \
                OUT/pareto.svg (docs/paft-demo.md explains both). \
                Every model is stored in BF16 unless --dtype f32.

                Example:
                  merge-tool demo --out paft-demo
                """)

        @Option(help: "Folder for every model the demo trains and merges.")
        var out: String = "paft-demo"

        @Option(help: "How trained and merged models store their weights: bf16 (as released checkpoints) or f32.")
        var dtype: WeightStorage = .bf16

        @Flag(help: "Replace files and folders under the demo's output names that an earlier demo run did not write.")
        var force = false

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                var demo = PAFTDemo(folder: out)
                demo.storage = dtype
                if !force { try refuseReplacing(demo) }
                let status = StatusLine()
                let started = Date()
                let result = try demo.run(merger: EngineMerger()) { line in
                    status.update("[\(Int(Date().timeIntervalSince(started))) s] \(line)")
                }
                status.finish()
                let text = "\(Self.resultsHeading)\n\(result.markdownTable)\n\n## Best merge per method\n\n\(result.bestMergeReport)\n\n## Task vectors (weights stored as \(dtype.dtype.rawValue))\n\n\(result.statistics)\n"
                try Self.write(text, to: out + "/results.md")
                try Self.write(Self.paretoPlot(result), to: out + "/pareto.svg")
                printOutput(text)
                printOutput("total \(Int(Date().timeIntervalSince(started))) s; models, results.md and pareto.svg in \(out)")
            }
        }
    }
}

extension MergeTool.Demo {
    /// Without --force, only what an earlier demo run wrote may be replaced: a model
    /// folder holding a model of the demo's shape (the base is reused, not replaced),
    /// or a results.md the demo wrote. Anything else under an output name is refused.
    func refuseReplacing(_ demo: PAFTDemo) throws {
        for name in demo.outputNames() {
            let path = demo.path(name)
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            if let heading = Self.writtenFileHeadings[name] {
                let start = try? InputFile.readAll(path, cap: 1 << 20, what: "a \(name)")
                if let start, start.starts(with: Array(heading.utf8)) { continue }
            } else if let model = try? ModelFolder.load(path), model.config == demo.config {
                continue
            }
            throw CheckpointError.io(file: path, problem: "already exists (use --force to replace it)")
        }
    }

    /// The first line of results.md.
    static let resultsHeading = "## Every model × every metric\n"

    /// How the files the demo writes begin, by name: a file that begins so is the demo's own.
    static let writtenFileHeadings = ["results.md": resultsHeading, "pareto.svg": "<svg xmlns=\"http://www.w3.org/2000/svg\""]

    /// The skill (exact match) and preference (polite rate) axes of the plot, both higher is better.
    static let plotAxes = (x: MetricGoal(name: "exact_match", maximize: true), y: MetricGoal(name: "polite_rate", maximize: true))

    /// Every merge on skill against preference, those on their Pareto front joined, and
    /// the trained models (base, SFT, DPO, L1-sparse SFT, sequential SFT → DPO) marked as parents.
    static func paretoPlot(_ result: DemoResult) -> String {
        func scored(merged: Bool) -> [SweepScatter.Scored] {
            result.rows.filter { ($0.method != nil) == merged }.map { (x: $0.report.exactMatch, y: $0.report.politeRate, label: $0.name) }
        }
        let points = SweepScatter.points(candidates: scored(merged: true), parents: scored(merged: false), goals: plotAxes).points
        return SweepScatter.svg(points, x: plotAxes.x, y: plotAxes.y, title: "PAFT demo: merges against the trained models")
    }

    /// Writes `text` to `path` through a temporary file renamed into place.
    static func write(_ text: String, to path: String) throws {
        let file = try OutputPath(destination: path, isDirectory: false, overwrite: true)
        guard FileManager.default.createFile(atPath: file.temporary, contents: Data(text.utf8)) else {
            throw TrainingError.io(file: path, problem: "cannot write")
        }
        try file.commit()
    }
}

/// Runs the demo's merges through the merge engine, as `merge-tool fuse` would, and
/// measures the deltas as `merge-tool stats` does.
struct EngineMerger: DemoMerger {
    func deltaStatistics(models: [String], names: [String], base: String) throws -> String {
        var tuned: [Checkpoint] = []
        for model in models { tuned.append(try Checkpoint.open(model)) }
        return try DeltaStatistics.compute(base: try Checkpoint.open(base), tuned: tuned, names: names).text(by: .kind)
    }

    func merge(_ request: DemoMergeRequest) throws {
        var specs: [ModelSpec] = []
        for (path, weight) in zip(request.models, request.weights) {
            var spec = ModelSpec(path: path, parameters: ["weight": .number(weight)])
            if request.density < 1 { spec.parameters["density"] = .number(request.density) }
            specs.append(spec)
        }
        let plan = MergePlan(method: try MergeMethod.named(request.method), base: request.base, models: specs, seed: request.seed)
        try MergedModelWriter.write(try PreparedMerge.prepare(plan), to: request.output,
                                    options: MergedModelWriter.Options(overwrite: true))
    }
}
