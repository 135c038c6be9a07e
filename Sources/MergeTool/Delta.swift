import ArgumentParser
import Checkpoints
import Foundation
import Merging

extension MergeTool {
    struct Delta: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store a fine-tune compactly as its sparse, compressed difference from a base, and rebuild it.",
            discussion: """
                A .delta file holds, per tensor, the positions where the fine-tuned checkpoint differs \
                from its base and the changed bits there, compressed with zstd, with checksums of the \
                file and of every base tensor (format: docs/delta-format.md). With --density 1 (the \
                default) applying it gives back the fine-tuned checkpoint bit for bit.

                Examples:
                  merge-tool delta extract dpo/ --base base/ -o dpo.delta
                  merge-tool delta extract sft/ --base base/ --density 0.1 -o sft-10pct.delta
                  merge-tool delta apply dpo.delta --base base/ -o dpo-rebuilt/
                """,
            subcommands: [Extract.self, Apply.self])
    }
}

extension MergeTool.Delta {
    struct Extract: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write the difference between a fine-tuned checkpoint and its base to a .delta file.")

        @Argument(help: "The fine-tuned checkpoint (folder, .safetensors or .gguf), or a LoRA adapter folder of the base.")
        var tuned: String

        @Option(help: "The base checkpoint it was fine-tuned from.")
        var base: String

        @Option(help: "Share of entries to keep, in (0, 1]; 1 keeps every changed entry (lossless).")
        var density: Double = 1

        @Option(help: "How entries are chosen below density 1: magnitude (largest |δ|) or random.")
        var method: DeltaExtraction.Selection = .magnitude

        @Option(help: "Seed for --method random.")
        var seed: UInt64 = 0

        @Option(name: [.short, .customLong("output")], help: "The .delta file to write.")
        var output: String

        @OptionGroup var work: WorkOptions

        @OptionGroup var inputOptions: InputOptions

        func validate() throws {
            guard density > 0 && density <= 1 else { throw ValidationError("--density must be in (0, 1], got \(density)") }
        }

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                try OutputGuard.check(output: output, inputs: [tuned, base])
                let progress = ProgressLine(label: "extracting")
                let started = Date()
                let summary = try DeltaExtraction.extract(
                    tuned: tuned, base: base, output: output, density: density, selection: method, seed: seed,
                    overwrite: work.force, followSymlinks: inputOptions.followSymlinks, workers: work.workerCount,
                    progress: { progress.update(done: $0, total: $1) })
                progress.finish()
                let tunedBytes = summary.tunedBytes
                let fileSize = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? summary.bytes
                let percent = { (a: Int, b: Int) in b > 0 ? String(format: "%.1f %%", 100 * Double(a) / Double(b)) : "–" }
                printOutput("""
                    wrote \(output): \(summary.tensors) tensors, \(CheckpointSummary.humanBytes(fileSize)) \
                    (\(percent(fileSize, tunedBytes)) of the fine-tuned tensors' \(CheckpointSummary.humanBytes(tunedBytes)))
                      changed entries  \(summary.changed) of \(summary.elements) (\(percent(summary.changed, summary.elements)))
                      stored entries   \(summary.kept) (\(percent(summary.kept, summary.changed)) of changed)
                      time             \(String(format: "%.2f", Date().timeIntervalSince(started))) s
                    """)
            }
        }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rebuild a fine-tuned checkpoint from a .delta file and the base it was extracted against.")

        @Argument(help: "The .delta file.")
        var delta: String

        @Option(help: "The base checkpoint (must be the one the delta was extracted against).")
        var base: String

        @Option(name: [.short, .customLong("output")], help: "Output folder, or a file ending in .safetensors.")
        var output: String

        @OptionGroup var shards: ShardOptions

        @OptionGroup var work: WorkOptions

        @OptionGroup var inputOptions: InputOptions

        func validate() throws {
        }

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                try OutputGuard.check(output: output, inputs: [delta, base])
                let progress = ProgressLine(label: "applying")
                let count = try DeltaExtraction.apply(
                    delta: delta, base: base, output: output, overwrite: work.force,
                    followSymlinks: inputOptions.followSymlinks, maxShardSize: shards.bytes,
                    workers: work.workerCount, progress: { progress.update(done: $0, total: $1) })
                progress.finish()
                printOutput("wrote \(output): \(count) tensors")
            }
        }
    }
}

extension DeltaExtraction.Selection: ExpressibleByArgument {}
