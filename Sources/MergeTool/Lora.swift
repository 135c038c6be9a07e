import ArgumentParser

extension MergeTool {
    struct Lora: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make and use LoRA adapters in PEFT's format.",
            discussion: """
                Adapters are PEFT folders: adapter_config.json and adapter_model.safetensors \
                (docs/lora.md).

                Examples:
                  merge-tool lora extract sft/ --base base/ --rank 64 -o sft-lora/
                  merge-tool lora extract sft/ --base base/ --energy 0.9 -o sft-lora/
                """,
            subcommands: [LoraExtract.self])
    }
}
