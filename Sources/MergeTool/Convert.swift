import ArgumentParser
import Checkpoints
import Foundation

extension MergeTool {
    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Convert between Hugging Face safetensors folders and GGUF, or re-type and re-shard safetensors.",
            discussion: """
                The direction follows the paths:
                  HF folder → OUT.gguf     Llama, Mistral and Qwen2 models; tensor names, Q/K row \
                order, hyperparameters and the byte-level BPE tokenizer carried over as llama.cpp's \
                converter does. --type picks the tensor type (default f16); 1-D tensors and norms \
                stay f32, and rows that do not fill whole quantization blocks fall back to f16.
                  IN.gguf → folder         back to a Hugging Face folder, every tensor dequantized to \
                --dtype (default bf16), config.json and tokenizer files rebuilt from the metadata.
                  safetensors → safetensors   floating-point tensors re-typed to --dtype, shards of at \
                most --max-shard-size; OUT ending in .safetensors writes one file.

                The output appears only when complete; an existing output is refused unless --force.

                Examples:
                  merge-tool convert my-model/ my-model-q8_0.gguf --type q8_0
                  merge-tool convert my-model-q8_0.gguf my-model-hf/ --dtype f16
                  merge-tool convert my-model/ my-model-f16/ --dtype f16 --max-shard-size 2GB
                """)

        @Argument(help: "Input: a model folder, a .safetensors file or a .gguf file.")
        var input: String

        @Argument(help: "Output: a .gguf file, a model folder, or a .safetensors file.")
        var output: String

        @Option(help: OptionValue.help("GGUF tensor type.", default: GGUFOutputType.f16), transform: OptionValue.parse)
        var type: GGUFOutputType = .f16

        @Option(help: "Safetensors dtype for floating-point tensors (GGUF input default: bf16).")
        var dtype: FloatOutputType?

        @OptionGroup var shards: ShardOptions

        @OptionGroup var work: WorkOptions

        @OptionGroup var inputOptions: InputOptions

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                try OutputGuard.check(output: output, inputs: [input])
                let shardSize = shards.bytes
                let storedType = dtype?.dtype
                let follow = inputOptions.followSymlinks
                let progress = ProgressLine(label: "converting")
                let update: FormatConversion.Progress = { done, total in progress.update(done: done, total: total) }
                let report: FormatConversion.Report
                let inputIsGGUF = input.hasSuffix(".gguf")
                if output.hasSuffix(".gguf") {
                    guard !inputIsGGUF else { throw UsageProblem("GGUF to GGUF conversion is not supported; convert to a folder first") }
                    report = try FormatConversion.hfToGGUF(folder: input, output: output, type: type.dtype,
                                                           overwrite: work.force, followSymlinks: follow,
                                                           workers: work.workerCount, progress: update)
                } else if inputIsGGUF {
                    report = try FormatConversion.ggufToHF(input: input, output: output, dtype: storedType ?? .bf16,
                                                           maxShardSize: shardSize, overwrite: work.force, followSymlinks: follow,
                                                           workers: work.workerCount,
                                                           progress: update)
                } else {
                    report = try FormatConversion.retype(input: input, output: output, dtype: storedType,
                                                         maxShardSize: shardSize, overwrite: work.force, followSymlinks: follow,
                                                         workers: work.workerCount,
                                                         progress: update)
                }
                progress.finish()
                for warning in report.warnings { printError("warning: \(warning)") }
                printOutput("wrote \(output): \(report.tensors) tensors, \(CheckpointSummary.humanBytes(report.bytesWritten))")
            }
        }
    }
}
