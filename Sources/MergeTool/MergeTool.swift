import ArgumentParser
import Checkpoints

@main
struct MergeTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge-tool",
        abstract: "Merge, inspect and convert LLM checkpoints (safetensors and GGUF).",
        subcommands: [Inspect.self, Fuse.self, Stats.self, Convert.self, Delta.self, Lora.self, Train.self, Eval.self, Demo.self]
    )
}
