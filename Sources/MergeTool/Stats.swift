import ArgumentParser
import Checkpoints
import Foundation
import Merging
import Statistics

extension StatisticsGrouping: ExpressibleByArgument {}

extension MergeTool {
    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Measure the deltas between fine-tuned checkpoints and their base: sparsity, mass, interference.",
            discussion: """
                Streams δ = FT − BASE for each FT (safetensors files, GGUF files or model \
                folders, mixed) and prints a short summary, then a table. With two or more \
                deltas it also compares them: cosine, shared entries, sign agreement, top-k \
                support overlap and what a TIES election would drop. Every figure and the \
                JSON schema are described in docs/stats.md.

                A LoRA adapter folder counts as the model it makes of BASE: δ = scale·B·A \
                where it adapts a tensor (computed a chunk at a time), the saved tensor − BASE \
                for modules it saves whole, and 0 elsewhere. For adapters stats also reports \
                each adapted module's rank, ‖δ‖_F, effective rank and energy spectrum \
                (singular values of scale·B·A, found from r × r problems). A Llama-family GGUF \
                fine-tune of a Hugging Face base (or the reverse) is read with the tensor names \
                and Q/K rows of the base.

                Examples:
                  merge-tool stats sft/ dpo/ --base base/
                  merge-tool stats sft/ dpo/ --base base/ --by layer --plot stats.svg
                  merge-tool stats ft.safetensors --base base.safetensors --json | jq .model
                """)

        @Argument(help: "Fine-tuned checkpoints (files or folders).")
        var tuned: [String]

        @Option(help: "The base checkpoint the deltas are taken against.")
        var base: String

        @Flag(help: "Print every figure as JSON (schema in docs/stats.md) instead of text.")
        var json = false

        @Option(help: ArgumentHelp("Also draw histograms and per-layer density to this SVG file.", valueName: "file.svg"))
        var plot: String?

        @Option(help: "Table rows: one per tensor, layer or kind.")
        var by: StatisticsGrouping = .kind

        @Option(help: ArgumentHelp("Comma-separated thresholds τ for the share with |δ| ≤ τ.", valueName: "list"))
        var thresholds = "1e-6,1e-5,1e-4,1e-3"

        @Option(help: "Density at which top-k supports are compared (0 < d ≤ 1).")
        var density = 0.1

        @Option(help: "How the delta of a quantized fine-tune (Q8_0, Q4_K, …) of an unquantized base is taken: aware quantizes the base to the fine-tune's block type first, so unchanged blocks give δ = 0; naive subtracts the base as it is (as fuse --quantized-delta).")
        var quantizedDelta: QuantizedDelta = .aware

        @Option(help: ArgumentHelp("Comma-separated display names, one per fine-tuned checkpoint.", valueName: "list"))
        var names: String?

        @OptionGroup var inputOptions: InputOptions

        func validate() throws {
            guard !tuned.isEmpty else { throw ValidationError("Give at least one fine-tuned checkpoint.") }
            guard density > 0 && density <= 1 else { throw ValidationError("--density must lie in (0, 1], got \(density).") }
            _ = try parsedThresholds()
            _ = try displayNames()
        }

        func parsedThresholds() throws -> [Float] {
            var values: [Float] = []
            for part in thresholds.split(separator: ",", omittingEmptySubsequences: false) {
                let text = part.trimmingCharacters(in: .whitespaces)
                guard let value = Float(text), value.isFinite, value >= 0 else {
                    throw ValidationError("--thresholds: '\(text)' is not a non-negative number.")
                }
                values.append(value)
            }
            return values
        }

        func displayNames() throws -> [String] {
            guard let names else { return tuned.map(checkpointName) }
            let list = names.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard list.count == tuned.count, list.allSatisfy({ !$0.isEmpty }) else {
                throw ValidationError("--names needs \(tuned.count) non-empty names, one per fine-tuned checkpoint.")
            }
            return list
        }

        func run() throws {
            var options = DeltaStatisticsOptions()
            options.thresholds = try parsedThresholds()
            options.density = density
            options.quantizedDelta = quantizedDelta
            let labels = try displayNames()
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                if let plot {
                    try OutputGuard.check(output: plot, inputs: [base] + tuned)
                    var info = stat()
                    if stat(plot, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
                        throw CheckpointError.io(file: plot, problem: "is a folder; --plot names the .svg file to write")
                    }
                }
                let baseCheckpoint = try Checkpoint.open(base, followSymlinks: inputOptions.followSymlinks)
                var inputs: [StatisticsInput] = []
                var adapters: [(label: String, adapter: LoRAAdapter)] = []
                for (path, label) in zip(tuned, labels) {
                    if LoRAAdapter.isAdapter(path) {
                        let adapter = try LoRAAdapter.open(path, base: baseCheckpoint, followSymlinks: inputOptions.followSymlinks)
                        inputs.append(.adapter(adapter))
                        adapters.append((label, adapter))
                    } else {
                        inputs.append(.checkpoint(try Checkpoint.open(path, followSymlinks: inputOptions.followSymlinks)))
                    }
                }
                let spectra = adapters.isEmpty ? nil : try LoraStats.spectra(of: adapters)
                let report = try DeltaStatistics.compute(base: baseCheckpoint, tuned: inputs, names: labels, options: options)
                if let plot {
                    try DeltaStatisticsPlot(report).write(to: plot)
                }
                if json {
                    var value = report.json
                    if let spectra, case .object(var members) = value {
                        members.append(("adapters", spectra.json))
                        value = .object(members)
                    }
                    printOutput(value.prettyText)
                } else {
                    printOutput(report.text(by: by) + (spectra.map { "\n\n" + $0.text } ?? ""))
                }
            }
        }
    }
}

/// The name a checkpoint is shown under: its folder or file name without extension.
func checkpointName(_ path: String) -> String {
    var trimmed = path
    while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
    let last = trimmed.split(separator: "/").last.map(String.init) ?? trimmed
    for suffix in [".safetensors", ".gguf"] where last.hasSuffix(suffix) {
        return String(last.dropLast(suffix.count))
    }
    return last
}
