import ArgumentParser
import Checkpoints
import Foundation
import Merging

extension MergeTool {
    struct Lora: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make and use LoRA adapters in PEFT's format.",
            discussion: """
                Adapters are PEFT folders: adapter_config.json and adapter_model.safetensors \
                (docs/lora.md). fuse, stats and delta extract also take an adapter wherever \
                they take a fine-tune.

                Examples:
                  merge-tool lora merge sft-lora/ --base base/ -o sft-merged/
                  merge-tool lora extract sft/ --base base/ --rank 64 -o sft-lora/
                  merge-tool lora extract sft/ --base base/ --energy 0.9 -o sft-lora/
                """,
            subcommands: [LoraMerge.self, LoraExtract.self])
    }
}

/// `lora merge`: the adapter merged into its base, as PEFT's `merge_and_unload()`.
struct LoraMerge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Write a LoRA adapter merged into its base as a full model.",
        discussion: """
            Each adapted weight becomes base + scale·B·A (scale α/r, or α/√r with use_rslora; \
            transposed for fan_in_fan_out and embeddings), rounded once to the base's type as \
            PEFT's merge_and_unload() does; modules_to_save tensors and stored biases \
            (<module>.base_layer.bias) replace the base's; every other tensor, and the base \
            folder's config and tokenizer files, are copied. The adapter is checked against \
            the base before anything is written.

            A GGUF base (llama, qwen2) gives a GGUF file (-o must end in .gguf) with the \
            base's metadata and types: the adapter's module names are mapped to llama.cpp's \
            and lora_B's rows of Q and K permuted as the GGUF stores them. Its adapted \
            tensors must be F32, F16 or BF16 (fuse writes a merge of a quantized base as BF16).

            Examples:
              merge-tool lora merge sft-lora/ --base base/ -o sft-merged/
              merge-tool lora merge sft-lora/ --base base-f16.gguf -o sft-f16.gguf
            """)

    @Argument(help: "The adapter folder.")
    var adapter: String

    @Option(help: "The base model the adapter was trained on.")
    var base: String

    @Option(name: [.short, .customLong("output")], help: "Output folder, or a file ending in .safetensors (.gguf for a GGUF base).")
    var output: String

    @OptionGroup var shards: ShardOptions

    @OptionGroup var work: WorkOptions

    @OptionGroup var inputOptions: InputOptions

    func run() throws {
        OutputPath.installInterruptCleanup()
        try reportingErrors {
            try OutputGuard.check(output: output, inputs: [adapter, base])
            let progress = ProgressLine(label: "merging")
            let (adapted, saved) = try LoRAMerging.apply(
                adapter: adapter, base: base, output: output, overwrite: work.force,
                followSymlinks: inputOptions.followSymlinks, maxShardSize: shards.bytes,
                workers: work.workerCount, progress: { progress.update(done: $0, total: $1) })
            progress.finish()
            printOutput("wrote \(output): \(adapted) tensors adapted, \(saved) replaced")
        }
    }
}
