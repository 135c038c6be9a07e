import ArgumentParser
import Checkpoints
import Foundation
import Merging

extension LoRAExtraction.WholeModules: ExpressibleByArgument {}
extension TruncatedSVD.Algorithm: ExpressibleByArgument {}

/// `merge-tool lora extract`: a fine-tune's difference from its base as a low-rank PEFT adapter.
struct LoraExtract: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Write the difference between a fine-tune and its base as a LoRA adapter (truncated SVD).",
        discussion: """
            For each 2-D linear weight, δ = FT − BASE is decomposed by a truncated SVD \
            δ ≈ U·S·Vᵀ and written as lora_B = U·√S, lora_A = √S·Vᵀ with lora_alpha = r \
            (scale 1), in a folder peft.PeftModel.from_pretrained loads. Embeddings and \
            norms are stored whole (modules_to_save) or left out, and so are changed biases \
            of decomposed modules (as <module>.base_layer.bias, bias "lora_only", which \
            PEFT loads in place of the base's). Prints each module's \
            relative error ‖δ − B·A‖/‖δ‖ with the factors as stored.

            --rank R gives every module rank R; --energy E gives each module the smallest \
            rank whose singular values hold the share E of ‖δ‖² (--rank then caps it). \
            --svd auto uses the randomized SVD (seeded, deterministic) when the rank is \
            small against the weight, the exact LAPACK SVD otherwise (always with --energy).
            """)

    @Argument(help: "The fine-tuned checkpoint (model folder or .safetensors file).")
    var tuned: String

    @Option(help: "The base checkpoint it was fine-tuned from.")
    var base: String

    @Option(help: "Rank of every module; with --energy, the largest rank.")
    var rank: Int?

    @Option(help: "Choose each module's rank as the smallest holding this share of ‖δ‖², in (0, 1].")
    var energy: Double?

    @Option(help: ArgumentHelp("Comma-separated linear modules to decompose, by last name (default: every 2-D weight but the embeddings).",
                               valueName: "q_proj,k_proj,…"))
    var targetModules: String?

    @Option(help: "Embeddings (embed_tokens, lm_head): stored whole in modules_to_save, or left out.")
    var embeddings: LoRAExtraction.WholeModules = .save

    @Option(help: "Norm weights: stored whole in modules_to_save, or left out.")
    var norms: LoRAExtraction.WholeModules = .save

    @Option(help: "Biases of decomposed modules that differ from the base's (Qwen2's q/k/v_proj): stored whole as PEFT's trained biases (bias \"lora_only\"), or left out.")
    var biases: LoRAExtraction.WholeModules = .save

    @Option(help: "SVD: auto, exact (LAPACK sgesdd) or randomized.")
    var svd: TruncatedSVD.Algorithm = .auto

    @Option(help: "Seed of the randomized SVD's test matrix.")
    var seed: UInt64 = 0

    @Option(help: "Type of the factors (default: the fine-tune's weights' type).")
    var dtype: FloatOutputType?

    @Option(help: "base_model_name_or_path in adapter_config.json (default: the --base path).")
    var baseName: String?

    @Option(name: [.short, .customLong("output")], help: "The adapter folder to write.")
    var output: String

    @Flag(help: "Print the report as JSON.")
    var json = false

    @OptionGroup var work: WorkOptions

    @OptionGroup var inputOptions: InputOptions

    func validate() throws {
        guard rank != nil || energy != nil else { throw ValidationError("give --rank or --energy") }
        if let rank, rank <= 0 { throw ValidationError("--rank must be at least 1, got \(rank)") }
        if let energy, !(energy > 0 && energy <= 1) { throw ValidationError("--energy must be in (0, 1], got \(energy)") }
        if energy != nil && svd == .randomized { throw ValidationError("--energy needs every singular value: use --svd exact or auto") }
        if let targetModules, targets(targetModules).isEmpty { throw ValidationError("--target-modules names no module") }
    }

    private func targets(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func run() throws {
        OutputPath.installInterruptCleanup()
        try reportingErrors {
            try OutputGuard.check(output: output, inputs: [tuned, base])
            var options = LoRAExtraction.Options(rank: rank, energy: energy)
            options.targets = targetModules.map(targets)
            options.embeddings = embeddings
            options.norms = norms
            options.biases = biases
            options.algorithm = svd
            options.seed = seed
            options.dtype = dtype?.dtype
            options.baseName = baseName
            options.overwrite = work.force
            options.followSymlinks = inputOptions.followSymlinks
            options.workers = work.workerCount
            let progress = ProgressLine(label: "decomposing")
            let started = Date()
            let summary = try LoRAExtraction.extract(tuned: tuned, base: base, output: output, options: options,
                                                     progress: { progress.update(done: $0, total: $1) })
            progress.finish()
            let seconds = Date().timeIntervalSince(started)
            if !summary.leftOut.isEmpty {
                let shown = summary.leftOut.prefix(5).map { "'\($0)'" }.joined(separator: ", ")
                let more = summary.leftOut.count > 5 ? " and \(summary.leftOut.count - 5) more" : ""
                printError("warning: \(summary.leftOut.count) tensors differ from the base but are not in the adapter: \(shown)\(more)")
            }
            printOutput(json ? Self.json(summary, output: output, seconds: seconds).prettyText
                             : Self.table(summary, output: output, seconds: seconds))
        }
    }

    static func table(_ summary: LoRAExtraction.Summary, output: String, seconds: Double) -> String {
        let width = max(6, summary.modules.map(\.name.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
        var lines = [pad("module", width) + "  " + pad("shape", 11) + "  rank  rel. error  svd"]
        for m in summary.modules {
            lines.append(pad(m.name, width) + "  " + pad("\(m.outFeatures)×\(m.inFeatures)", 11) + "  "
                         + pad(String(m.rank), 4) + "  " + pad(String(format: "%.6f", m.relativeError), 10) + "  "
                         + (m.randomized ? "randomized" : "exact"))
        }
        let ranks = Set(summary.modules.map(\.rank))
        let rankText = ranks.count == 1 ? "rank \(ranks.first!)" : "ranks \(ranks.min() ?? 0)–\(ranks.max() ?? 0)"
        let worst = summary.modules.map(\.relativeError).max() ?? 0
        let mean = summary.modules.isEmpty ? 0 : summary.modules.map(\.relativeError).reduce(0, +) / Double(summary.modules.count)
        lines.append("wrote \(output): \(summary.modules.count) modules (\(rankText)), \(summary.saved.count) tensors stored whole; "
                     + "relative error mean \(String(format: "%.6f", mean)), worst \(String(format: "%.6f", worst)); "
                     + String(format: "%.2f s", seconds))
        return lines.joined(separator: "\n")
    }

    static func json(_ summary: LoRAExtraction.Summary, output: String, seconds: Double) -> JSONValue {
        .object([
            ("output", .string(output)),
            ("seconds", .number(String(format: "%.3f", seconds))),
            ("modules", .array(summary.modules.map { m in
                .object([
                    ("name", .string(m.name)),
                    ("out_features", .number(String(m.outFeatures))),
                    ("in_features", .number(String(m.inFeatures))),
                    ("rank", .number(String(m.rank))),
                    ("relative_error", .number(m.relativeError.isFinite ? String(m.relativeError) : "null")),
                    ("svd", .string(m.randomized ? "randomized" : "exact")),
                ])
            })),
            ("saved", .array(summary.saved.map(JSONValue.string))),
            ("left_out", .array(summary.leftOut.map(JSONValue.string))),
        ])
    }
}
