import ArgumentParser
import Checkpoints
import Foundation
import Merging
import Training

extension MergeTool {
    struct Sweep: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Search a recipe's parameters: merge and score every candidate, rank them and keep the best recipe.",
            discussion: """
                Each --grid axis is PATH=FROM:TO:COUNT (COUNT evenly spaced values, both ends \
                included) or PATH=v1,v2,…; PATH is a dotted path into the recipe (map keys and \
                list indices, e.g. models.1.parameters.weight or parameters.t). A missing last \
                key is added to its mapping; any other missing step is an error. Without \
                --random every combination is a candidate; --random N draws N instead (ranges \
                uniformly, lists by pick) from --seed.

                Every candidate is merged into OUTPUT/candidates/ and scored, then its model is \
                removed (unless --keep). --eval builtin runs the held-out tasks of `merge-tool \
                eval` (models `merge-tool train` makes; the reward margin against the recipe's \
                base); any other --eval is a shell command, {model} replaced by the candidate's \
                folder, that prints a JSON object of numeric metrics. A candidate whose \
                evaluation fails is reported on one line and the sweep goes on. The recipe's \
                input models (the parents) are scored too.

                OUTPUT gets results.jsonl (one line per scored model: parameters, metrics or \
                error), best.yml (the best candidate's recipe: `merge-tool fuse --config \
                best.yml` remakes its model), candidates/N.yml (every candidate's recipe) and, \
                with --pareto, pareto.svg. A re-run with the same OUTPUT skips what \
                results.jsonl already scored. Details: docs/sweep.md.

                Examples:
                  merge-tool sweep recipe.yml --grid 'models.0.parameters.density=0.1:0.9:5' \\
                    --grid 'models.1.parameters.weight=0.5,1' --eval builtin -o sweep/ \\
                    --objective preference_accuracy --pareto exact_match,preference_accuracy
                  merge-tool sweep recipe.yml --grid 'parameters.lambda=0.5:1.5:11' \\
                    --eval 'python score.py {model}' --objective=-loss -o sweep/
                  merge-tool sweep recipe.yml --grid 'models.0.parameters.density=0.05:1:2' \\
                    --grid 'models.1.parameters.density=0.05:1:2' --random 20 --seed 3 \\
                    --eval builtin --objective exact_match -o sweep/
                """)

        @Argument(help: "The recipe to sweep (a mergekit YAML recipe, as `fuse --config` reads).")
        var recipe: String

        @Option(name: .customLong("grid"), help: "An axis, PATH=FROM:TO:COUNT or PATH=v1,v2,… (repeat for more axes).")
        var grid: [String] = []

        @Option(help: "Draw this many candidates from the axes instead of the whole grid.")
        var random: Int?

        @Option(help: "Seed of --random.")
        var seed: UInt64 = 0

        @Option(help: "builtin, or a shell command printing a JSON object of metrics ({model} is the model folder).")
        var eval: String

        @Option(help: "Base model of the builtin reward margin (default: the recipe's base_model).")
        var base: String?

        @Option(help: "The metric the table and best.yml rank by (prefix - to minimise: --objective=-loss).")
        var objective: String

        @Option(help: "Two metrics, M1,M2, for the Pareto front and pareto.svg (each maximised unless prefixed -).")
        var pareto: String?

        @Option(name: [.short, .customLong("output")], help: "The sweep folder (created; a re-run resumes it).")
        var output: String

        @Option(help: "Candidates merged and scored at once (default: one per core).")
        var jobs: Int?

        @Flag(help: "Keep every candidate's merged model in OUTPUT/candidates/N/.")
        var keep = false

        @Flag(help: "Print the results as a JSON object.")
        var json = false

        @OptionGroup var input: InputOptions

        func validate() throws {
            guard !grid.isEmpty else { throw ValidationError("give at least one --grid axis") }
            _ = try axes()
            if let random, !(1...SweepPlan.maximumCandidates).contains(random) {
                throw ValidationError("--random must be from 1 to \(SweepPlan.maximumCandidates)")
            }
            if let jobs, !(1...WorkOptions.maximumThreads).contains(jobs) {
                throw ValidationError("--jobs must be from 1 to \(WorkOptions.maximumThreads)")
            }
            guard MetricGoal(parsing: objective) != nil else {
                throw ValidationError("--objective: '\(objective)' is not a metric name (prefix - to minimise)")
            }
            _ = try paretoGoals()
            if eval.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--eval is empty") }
            if base != nil, eval != "builtin" { throw ValidationError("--base is read by --eval builtin only") }
        }

        func axes() throws -> [SweepAxis] {
            try grid.map { text in
                do {
                    return try SweepAxis(parsing: text)
                } catch {
                    throw ValidationError("\(error)")
                }
            }
        }

        func paretoGoals() throws -> (x: MetricGoal, y: MetricGoal)? {
            guard let pareto else { return nil }
            let parts = pareto.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, let x = MetricGoal(parsing: parts[0]), let y = MetricGoal(parsing: parts[1]) else {
                throw ValidationError("--pareto: '\(pareto)' must name two metrics, M1,M2")
            }
            return (x, y)
        }

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                let axes = try axes()
                let goal = MetricGoal(parsing: objective)!
                let (plan, text) = try MergeRecipe.load(recipe)
                let candidates = try SweepPlan.candidates(
                    recipe: text, file: recipe, axes: axes,
                    selection: random.map { .random(count: $0, seed: seed) } ?? .grid)
                let models = plan.models.map(\.path)
                let parents = plan.base.map { models.contains($0) ? models : [$0] + models } ?? models
                var inputs = parents + [recipe]
                if let base { inputs.append(base) }
                try OutputGuard.check(output: output, inputs: inputs)
                let evaluation = try evaluation(plan: plan)
                var isFolder: ObjCBool = false
                if FileManager.default.fileExists(atPath: output, isDirectory: &isFolder), !isFolder.boolValue {
                    throw SweepFailure(message: "\(output): exists and is not a folder; choose another output")
                }
                do {
                    try FileManager.default.createDirectory(atPath: output + "/candidates", withIntermediateDirectories: true)
                } catch {
                    let reason = ((error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError)?.localizedDescription
                    throw SweepFailure(message: "\(output): cannot create the sweep folder: \(reason ?? "\(error)")")
                }

                // Every candidate's recipe under this run's numbering, scored now or before.
                for candidate in candidates {
                    try OutputFile.write(candidate.recipe, to: output + "/candidates/\(candidate.index).yml")
                }
                let resultsPath = output + "/" + SweepResults.fileName
                // Every model to score, parents first, with the fingerprint of what its score
                // depends on: a score is reused only for the same recipe text and the same evaluation.
                let evaluationName = eval == "builtin" ? "builtin " + (base ?? plan.base ?? "") : eval
                let records = parents.map {
                    SweepRecord(subject: .parent(model: $0), fingerprint: SweepResults.fingerprint(["parent", $0, evaluationName]))
                } + candidates.map {
                    SweepRecord(subject: .candidate(index: $0.index, values: $0.values),
                                fingerprint: SweepResults.fingerprint([$0.recipe, evaluationName]))
                }
                let done = SweepResults.done(try SweepResults.read(resultsPath))
                let pending = records.filter { done[$0.key] != .some($0.fingerprint) }
                let scoredBefore = candidates.count - pending.count(where: { $0.candidateIndex != nil })
                let stale = records.count(where: {
                    $0.candidateIndex != nil && done[$0.key] != nil && done[$0.key] != .some($0.fingerprint)
                })
                if scoredBefore > 0 {
                    printError("sweep: resuming \(output): \(scoredBefore) of \(candidates.count) candidates already scored")
                }
                if stale > 0 {
                    printError("sweep: \(stale) candidates in \(resultsPath) were scored with another recipe or evaluation; scoring them again")
                }

                let workers = min(jobs ?? WorkerQueue.processors, max(1, pending.count))
                // Each merge splits the cores with the others running beside it.
                let runner = try CandidateRunner(
                    folder: output, resultsPath: resultsPath, evaluation: evaluation, keep: keep,
                    followSymlinks: input.followSymlinks, mergeWorkers: max(1, WorkerQueue.processors / workers),
                    total: pending.count)
                let started = Date()
                let score = {
                    WorkerQueue.forEach(count: pending.count, workers: workers) { (worker, job) in
                        runner.score(pending[job], worker: worker)
                    }
                }
                // Several evaluations at once each get one BLAS thread.
                if workers > 1 { Evaluator.withBLASThreads(1, score) } else { score() }
                runner.progress.finish()
                if let problem = runner.writeFailure.withLock({ $0 }) {
                    throw SweepFailure(message: "\(resultsPath): cannot append results: \(problem)")
                }
                let seconds = Date().timeIntervalSince(started)

                try report(candidates: candidates, parents: parents, resultsPath: resultsPath, goal: goal,
                           scored: candidates.count - scoredBefore, seconds: seconds)
            }
        }

        /// The evaluation `--eval` names.
        func evaluation(plan: MergePlan) throws -> CandidateRunner.Evaluation {
            guard eval == "builtin" else { return .command(eval) }
            guard let basePath = base ?? plan.base else { return .builtin(base: nil) }
            _ = try ModelFolder.load(basePath, followSymlinks: input.followSymlinks)
            return .builtin(base: basePath)
        }

        /// Prints the table (or JSON) and writes best.yml and pareto.svg from every record
        /// of this sweep's candidates and parents in the results file.
        func report(candidates: [SweepCandidate], parents: [String], resultsPath: String, goal: MetricGoal,
                    scored: Int, seconds: Double) throws {
            let byKey = Dictionary(candidates.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
            let parentKeys = Set(parents.map { SweepRecord(subject: .parent(model: $0)).key })
            var candidateRecords: [SweepRecord] = [], parentRecords: [SweepRecord] = []
            for record in try SweepResults.read(resultsPath) {
                switch record.subject {
                case .parent:
                    if parentKeys.contains(record.key) { parentRecords.append(record) }
                case .candidate:
                    // The index of this run's order (a resumed record may come from a --random draw order).
                    guard let candidate = byKey[record.key] else { continue }
                    var current = record
                    current.subject = .candidate(index: candidate.index, values: candidate.values)
                    candidateRecords.append(current)
                }
            }
            let ranked = SweepResults.ranked(candidateRecords, by: goal)
            let failed = candidateRecords.filter { $0.error != nil }.count
            guard let best = ranked.first, best.error == nil, best.metrics[goal.name] != nil,
                  let bestCandidate = byKey[best.key] else {
                let reported = Set(candidateRecords.flatMap(\.metrics.keys)).sorted().joined(separator: ", ")
                throw SweepFailure(message: "\(output): no candidate has the metric '\(goal.name)' "
                    + "(\(failed) of \(candidateRecords.count) failed"
                    + (reported.isEmpty ? "" : "; the others reported \(reported)") + "; see \(resultsPath))")
            }
            try OutputFile.write(bestCandidate.recipe, to: output + "/best.yml")

            var front: [SweepRecord] = []
            if let goals = try paretoGoals() {
                func scored(_ record: SweepRecord) -> SweepScatter.Scored? {
                    guard let x = record.metrics[goals.x.name], let y = record.metrics[goals.y.name] else { return nil }
                    return (x, y, record.label)
                }
                let scoredRecords = ranked.filter { scored($0) != nil }
                let (plotted, frontIndices) = SweepScatter.points(candidates: scoredRecords.compactMap(scored),
                                                                  parents: parentRecords.compactMap(scored), goals: goals)
                front = frontIndices.sorted().map { scoredRecords[$0] }
                let title = "\(URL(fileURLWithPath: recipe).lastPathComponent): \(scoredRecords.count) candidates"
                try OutputFile.write(SweepScatter.svg(plotted, x: goals.x, y: goals.y, title: title), to: output + "/pareto.svg")
                front.sort { goals.x.better($1.metrics[goals.x.name]!, than: $0.metrics[goals.x.name]!) }
            }

            if json {
                printOutput(JSONValue.object([
                    ("objective", .string(goal.description)), ("best", best.json), ("candidates", .array(ranked.map(\.json))),
                    ("pareto", .array(front.map(\.json))), ("parents", .array(parentRecords.map(\.json))),
                    ("folder", .string(output)),
                ]).compactText)
                return
            }
            printOutput(SweepTable.text(ranked: ranked, parents: parentRecords, goal: goal, front: front))
            var summary = "\(candidateRecords.count) candidates (\(scored) scored now in \(String(format: "%.1f", seconds)) s"
            summary += failed > 0 ? ", \(failed) failed)" : ")"
            printOutput(summary + "; best: \(best.label); recipe: \(output)/best.yml")
        }
    }
}

/// A sweep that ends without a result.
struct SweepFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Writing a small result file whole: a temporary beside it, renamed over it.
enum OutputFile {
    static func write(_ text: String, to path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
