import ArgumentParser
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Checkpoints
import Training

extension TrainingTask: ExpressibleByArgument {}

extension MergeTool {
    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a small Llama model: pretraining, SFT, DPO or ORPO.",
            discussion: """
                Without --data the built-in task suite is used (see docs/training.md). \
                pretrain starts from --base, or from fresh weights shaped by --config \
                (a config.json; default: the demo model). sft, dpo and orpo need --base. \
                The output is a Hugging Face folder (config.json, model.safetensors, \
                tokenizer files) that transformers loads as LlamaForCausalLM.

                Examples:
                  merge-tool train pretrain -o base
                  merge-tool train sft --base base -o sft
                  merge-tool train sft --base base --l1 1e-3 -o sft-sparse
                  merge-tool train dpo --base base --beta 0.1 -o dpo
                  merge-tool train sft --base base --data my.jsonl --steps 500 -o mine
                """)

        @Argument(help: "The objective: pretrain, sft, dpo or orpo.")
        var task: TrainingTask

        @Option(help: "Model folder to start from.")
        var base: String?

        @Option(help: "config.json for a fresh model (pretrain without --base).")
        var config: String?

        @Option(help: "JSONL data: {\"text\"}, {\"prompt\",\"response\"} or {\"prompt\",\"chosen\",\"rejected\"}.")
        var data: String?

        @Option(help: "Optimizer steps (default depends on the task).")
        var steps: Int?

        @Option(name: .customLong("batch-size"), help: "Examples per step (pairs count once).")
        var batchSize: Int?

        @Option(help: "Peak learning rate.")
        var lr: Double?

        @Option(help: "Warmup steps (default: a tenth of the run).")
        var warmup: Int?

        @Option(name: .customLong("weight-decay"), help: "Decoupled AdamW weight decay.")
        var weightDecay: Double = 0

        @Option(help: "Gradient-norm clip.")
        var clip: Double = 1

        @Option(help: "Random seed (same seed, same bytes).")
        var seed: UInt64 = 0

        @Option(help: "L1 weight on the delta from the base, applied as a proximal step (exact zeros).")
        var l1: Double = 0

        @Option(help: "DPO temperature β.")
        var beta: Double = 0.1

        @Option(help: "ORPO odds-ratio weight λ.")
        var lambda: Double = 0.1

        @Option(name: .shortAndLong, help: "Output model folder.")
        var output: String

        @Flag(help: "Replace the output folder if it exists.")
        var force = false

        @OptionGroup var inputOptions: InputOptions

        func validate() throws {
            if task != .pretrain && base == nil { throw ValidationError("\(task.rawValue) needs --base") }
            if base != nil && config != nil { throw ValidationError("--config and --base exclude each other") }
            if let steps, steps < 1 { throw ValidationError("--steps must be at least 1") }
            if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
            if let lr, !(lr > 0) { throw ValidationError("--lr must be positive") }
            if let warmup, warmup < 0 { throw ValidationError("--warmup must not be negative") }
            if !(l1 >= 0) { throw ValidationError("--l1 must not be negative") }
            if !(beta > 0) { throw ValidationError("--beta must be positive") }
            if !(lambda >= 0) { throw ValidationError("--lambda must not be negative") }
            if !(clip > 0) { throw ValidationError("--clip must be positive") }
            if !(weightDecay >= 0) { throw ValidationError("--weight-decay must not be negative") }
        }

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                try OutputGuard.check(output: output, inputs: [base, config, data].compactMap { $0 })
                let model: LlamaModel
                if let base {
                    model = try ModelFolder.load(base, followSymlinks: inputOptions.followSymlinks)
                } else if let config {
                    model = LlamaModel.initialized(config: try LlamaConfig.load(config), seed: seed)
                } else {
                    model = LlamaModel.initialized(config: .demo, seed: seed)
                }
                var options = TrainingRun.defaultOptions(for: task)
                if let steps { options.steps = steps }
                if let batchSize { options.batchSize = batchSize }
                if let lr { options.learningRate = lr }
                options.warmupSteps = warmup
                options.weightDecay = weightDecay
                options.clipNorm = clip
                options.seed = seed
                options.l1 = l1
                options.beta = beta
                options.lambda = lambda
                let positions = model.config.maxPositions
                let examples = try data.map { (path) throws(TrainingError) in
                    try TrainingRun.fileData(for: task, path: path, maxPositions: positions)
                } ?? TrainingRun.builtInData(for: task, suite: .builtIn(), maxPositions: positions)
                let progress = StatusLine()
                defer { progress.finish() }
                let loss = try TrainingRun.train(model, task: task, data: examples, options: options, output: output,
                                                 overwrite: force, dataFile: data ?? "built-in data") { report in
                    progress.update("\(task.rawValue) step \(report.step)/\(report.steps)  loss \(format(report.loss))  "
                                    + "lr \(format(report.learningRate))")
                }
                progress.finish()
                printOutput("\(task.rawValue): \(options.steps) steps, final loss \(format(loss)), wrote \(output)")
            }
        }
    }
}

/// A number with four significant digits.
func format(_ x: Double) -> String {
    guard x.isFinite else { return String(x) }
    if x != 0 && (abs(x) < 1e-3 || abs(x) >= 1e5) {
        let exponent = Int((log10(abs(x))).rounded(.down))
        let mantissa = x / pow(10, Double(exponent))
        return "\((mantissa * 1000).rounded() / 1000)e\(exponent)"
    }
    return String((x * 10000).rounded() / 10000)
}
