import ArgumentParser
import Checkpoints
import Training

extension MergeTool {
    struct Eval: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure a trained model on the built-in held-out tasks.",
            discussion: """
                Reports held-out instruction loss and exact-match accuracy (greedy decoding), \
                preference accuracy (log π(chosen) > log π(rejected)), the rate of polite \
                answers, held-out pretraining perplexity, and with --base the mean DPO reward \
                margin against that base.

                Examples:
                  merge-tool eval sft --base base
                  merge-tool eval merged --base base --json
                """)

        @Argument(help: "Model folder to evaluate.")
        var model: String

        @Option(help: "Base model folder for the reward margin.")
        var base: String?

        @Option(help: "β of the reward margin.")
        var beta: Double = 0.1

        @Flag(help: "Print a JSON object.")
        var json = false

        @OptionGroup var inputOptions: InputOptions

        func validate() throws {
            if !(beta > 0) { throw ValidationError("--beta must be positive") }
        }

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                let follow = inputOptions.followSymlinks
                let policy = try ModelFolder.load(model, followSymlinks: follow)
                let reference = try base.map { (path) throws(TrainingError) in try ModelFolder.load(path, followSymlinks: follow) }
                let report = Evaluator.evaluate(policy, base: reference, beta: beta)
                if json {
                    printOutput(report.json)
                    return
                }
                printOutput("""
                    instruction loss     \(format(report.instructionLoss))
                    exact match          \(format(report.exactMatch))
                    preference accuracy  \(format(report.preferenceAccuracy))
                    reward margin        \(report.rewardMargin.map(format) ?? "– (needs --base)")
                    polite rate          \(format(report.politeRate))
                    perplexity           \(format(report.perplexity))
                    """)
            }
        }
    }
}
