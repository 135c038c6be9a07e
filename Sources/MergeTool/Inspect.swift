import ArgumentParser
import Checkpoints

extension MergeTool {
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what a checkpoint holds: format, tensors, dtypes, shapes and metadata.",
            discussion: """
                PATH is a .safetensors file, a .gguf file, or a Hugging Face model folder \
                (model.safetensors, or shards listed in model.safetensors.index.json). \
                The file is validated completely before anything is printed; nothing is \
                read beyond the headers.

                Examples:
                  merge-tool inspect fixtures/safetensors/dtypes.safetensors
                  merge-tool inspect my-model/ --tensors
                  merge-tool inspect model.gguf --json | jq .parameter_count
                """)

        @Argument(help: "A .safetensors file, a .gguf file or a model folder.")
        var path: String

        @Flag(help: "List every tensor instead of the first and last few.")
        var tensors = false

        @Flag(help: "Print a JSON report (schema in docs/inspect.md).")
        var json = false

        @OptionGroup var inputOptions: InputOptions

        func run() throws {
            // Nothing is written, but a mapped input truncated meanwhile is reported as usual.
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                let checkpoint = try Checkpoint.open(path, followSymlinks: inputOptions.followSymlinks)
                let summary = CheckpointSummary(checkpoint)
                printOutput(json ? summary.json.prettyText : summary.text(listAll: tensors))
            }
        }
    }
}
