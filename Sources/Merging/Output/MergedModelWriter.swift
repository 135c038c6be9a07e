import Checkpoints
import Foundation

/// Writes a prepared merge as a model: a Hugging Face folder (merged shards, the
/// base's config and tokenizer files, and with a recipe a README.md model card and
/// merge-config.yml), or one GGUF file converted from such a folder. The output
/// appears only when complete; on any failure nothing is left under the
/// destination or beside it. `merge-tool fuse` and the PAFT demo both write
/// through here.
public enum MergedModelWriter {
    /// What to write and how.
    public struct Options: Sendable {
        /// The form of the output.
        public enum Format: Sendable, Equatable {
            /// A model folder of safetensors shards and side files.
            case folder
            /// One GGUF file whose tensors are written in `type` (where the rows allow;
            /// see `FormatConversion.ggufType`). Needs a base folder with config.json.
            case gguf(type: DType)
        }

        public var format: Format = .folder
        /// Shard limit of a folder output (and of the folder staged for GGUF).
        public var maxShardSize = HFFolderWriter.defaultMaxShardSize
        /// Replace an existing destination.
        public var overwrite = false
        /// Accept side files (and shards of a base folder) that are links leaving their folder.
        public var followSymlinks = false
        /// Threads of the merge and of the GGUF conversion.
        public var workers = WorkerQueue.processors
        /// Stop at an input tensor holding NaN or infinite values instead of warning.
        public var strict = false
        /// How the task vector of a quantized fine-tune of an unquantized base is taken.
        public var quantizedDelta = QuantizedDelta.aware
        /// The recipe text: stored as merge-config.yml and quoted by the README.md
        /// model card. Without one, neither file is written.
        public var recipe: String?
        /// One part of a merge spread over several processes (folder output only).
        public var slice: Slice?

        /// A part of a merge spread over processes that share the output folder.
        public enum Slice: Sendable, Equatable {
            /// Writes the shards of slice `index` (from 0) of `count` and its manifest.
            case part(index: Int, count: Int)
            /// Checks every slice's manifest and shards, then writes the index and side files.
            case finish
        }

        public init(format: Format = .folder, maxShardSize: Int = HFFolderWriter.defaultMaxShardSize, overwrite: Bool = false,
                    followSymlinks: Bool = false, workers: Int = WorkerQueue.processors, strict: Bool = false,
                    quantizedDelta: QuantizedDelta = .aware, recipe: String? = nil) {
            self.format = format
            self.maxShardSize = maxShardSize
            self.overwrite = overwrite
            self.followSymlinks = followSymlinks
            self.workers = workers
            self.strict = strict
            self.quantizedDelta = quantizedDelta
            self.recipe = recipe
        }
    }

    /// Writes `prepared` to `destination`. `progress` follows the merge; `warn`
    /// receives each warning (an input tensor holding non-finite values, a GGUF
    /// without tokenizer) when it arises.
    public static func write(_ prepared: PreparedMerge, to destination: String, options: Options,
                             progress: (MergeProgress) -> Void = { _ in },
                             warn: (String) -> Void = { _ in }) throws {
        // Adapter inputs compute δ with OpenBLAS inside the merge's workers: one BLAS thread each.
        let blasThreads = prepared.jobs.contains { $0.inputs.contains { $0.lora != nil } } ? LoRAProduct.useOneThread() : nil
        defer { if let blasThreads { LoRAProduct.restoreThreads(blasThreads) } }
        if let slice = options.slice {
            guard options.format == .folder else {
                throw MergeError.badPlan("a merge spread over processes writes a model folder, not a GGUF file")
            }
            try writeSlice(slice, of: prepared, to: destination, options: options, progress: progress, warn: warn)
            return
        }
        guard case .gguf(let type) = options.format else {
            try writeFolder(prepared, to: destination, overwrite: options.overwrite, options: options,
                            progress: progress, warn: warn)
            return
        }
        // GGUF: the merged folder is staged beside the output, then converted
        // (names, Q/K row order, metadata and tokenizer from its config.json).
        if FileManager.default.fileExists(atPath: destination) && !options.overwrite {
            throw CheckpointError.io(file: destination, problem: "already exists (use --force to replace it)")
        }
        // The conversion reads config.json from the base folder: checked before merging.
        guard let templateFolder = folder(of: prepared.template.path) else {
            throw CheckpointError.conversion(file: prepared.template.path, problem: .needsModelFolder)
        }
        guard FileManager.default.fileExists(atPath: templateFolder + "/config.json") else {
            throw CheckpointError.conversion(file: templateFolder, problem: .missingConfigFile)
        }
        // The staging folder is a temporary of the output itself, so an interrupt
        // removes it and a later run sweeps it up after a kill.
        let stagingArea = try OutputPath(destination: destination, isDirectory: true, overwrite: true)
        defer { stagingArea.abort() }
        let staging = stagingArea.temporaryPath(for: "merged")
        do {
            try writeFolder(prepared, to: staging, overwrite: true, options: options, progress: progress, warn: warn)
        } catch {
            // A write into the staged folder is a write of the output: named so.
            switch error {
            case let error as CheckpointError where error.file.hasPrefix(staging):
                throw error.reported(in: destination)
            case MergeError.checkpoint(let error) where error.file.hasPrefix(staging):
                throw MergeError.checkpoint(error.reported(in: destination))
            default:
                throw error
            }
        }
        let report: FormatConversion.Report
        do {
            report = try FormatConversion.hfToGGUF(folder: staging, output: destination, type: type,
                                                   overwrite: options.overwrite, followSymlinks: options.followSymlinks,
                                                   workers: options.workers)
        } catch {
            // The staged folder is gone by the time the message is read; its files
            // come from the base folder, so that is what the message names.
            throw RelabeledError(error, replacing: staging, with: templateFolder)
        }
        for warning in report.warnings {
            warn(warning.replacingOccurrences(of: staging, with: prepared.template.path))
        }
    }

    /// Merges into the model folder `folder`, with side files, and card and recipe when there is a recipe.
    private static func writeFolder(_ prepared: PreparedMerge, to folder: String, overwrite: Bool, options: Options,
                                    progress: (MergeProgress) -> Void, warn: (String) -> Void) throws {
        let writer = try HFFolderWriter(folder: folder, tensors: prepared.outputTensors,
                                        maxShardSize: options.maxShardSize, overwrite: overwrite)
        do {
            try merge(prepared, into: writer, options: options, progress: progress, warn: warn)
            try writeSideFiles(prepared, into: writer, options: options, warn: warn)
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
    }

    /// Runs the merge into `sink` (only the tensors of `only` when given), warning of
    /// input tensors holding non-finite values.
    private static func merge(_ prepared: PreparedMerge, into sink: any TensorSink, options: Options, only: Set<String>? = nil,
                              progress: (MergeProgress) -> Void, warn: (String) -> Void) throws {
        let executor = MergeExecutor(prepared, threads: options.workers)
        executor.strict = options.strict
        executor.quantizedDelta = options.quantizedDelta
        executor.onlyTensors = only
        try executor.run(into: sink, progress: progress)
        for tensor in executor.nonFiniteInputs {
            warn("input tensor \(tensor) holds NaN or infinite values (--strict makes this an error)")
        }
    }

    /// The side files (`copySideFiles`) and, with a recipe, merge-config.yml and the README.md model card.
    private static func writeSideFiles(_ prepared: PreparedMerge, into writer: some SideFileSink, options: Options,
                                       warn: (String) -> Void) throws {
        try copySideFiles(prepared, into: writer, followSymlinks: options.followSymlinks, warn: warn)
        if let recipe = options.recipe {
            try writer.writeFile(name: ModelCard.recipeFileName, contents: Array(recipe.utf8))
            try writer.writeFile(name: "README.md", contents: Array(ModelCard.text(for: prepared.plan, recipe: recipe).utf8))
        }
    }

    /// One slice's shards (`HFFolderSlices.SliceWriter`), or the last step: every
    /// slice checked, then side files, card, recipe and index (`HFFolderSlices.Finisher`).
    /// The folder ends byte for byte as `writeFolder` makes it.
    private static func writeSlice(_ slice: Options.Slice, of prepared: PreparedMerge, to folder: String, options: Options,
                                   progress: (MergeProgress) -> Void, warn: (String) -> Void) throws {
        // What decides the shards' contents besides their layout: a slice written
        // with other settings is refused by the last step.
        let identity = (options.recipe ?? "") + "\nquantized-delta: \(options.quantizedDelta)"
        switch slice {
        case .part(let index, let count):
            let writer = try HFFolderSlices.SliceWriter(folder: folder, tensors: prepared.outputTensors,
                                                        maxShardSize: options.maxShardSize, slice: index, of: count, identity: identity)
            do {
                try merge(prepared, into: writer, options: options, only: writer.tensorNames, progress: progress, warn: warn)
                try writer.commit()
            } catch {
                writer.abort()
                throw error
            }
        case .finish:
            let finisher = try HFFolderSlices.Finisher(folder: folder, tensors: prepared.outputTensors,
                                                       maxShardSize: options.maxShardSize, identity: identity)
            do {
                try writeSideFiles(prepared, into: finisher, options: options, warn: warn)
                try finisher.commit()
            } catch {
                finisher.abort()
                throw error
            }
        }
    }

    /// Config files from the base folder and tokenizer files from the tokenizer
    /// source (the base unless the plan names one), those present. config.json names
    /// the output type, layer count and, with a recipe's tokenizer, the vocabulary size;
    /// tokens the recipe's tokenizer appends go into tokenizer.json and
    /// tokenizer_config.json; a recipe's chat template replaces the one copied.
    private static func copySideFiles(_ prepared: PreparedMerge, into writer: some SideFileSink, followSymlinks: Bool,
                                      warn: (String) -> Void) throws {
        let templateFolder = folder(of: prepared.template.path)
        let output = prepared.outputTokenizer
        let tokenizerFolder = output.map { folder(of: $0.folder) } ?? templateFolder
        var template = prepared.plan.chatTemplate
        if template == ChatTemplate.automatic {
            // The template most of the models have (none: the copied one stays).
            template = ChatTemplate.plurality(of: prepared.plan.models.map(\.path) + (prepared.plan.base.map { [$0] } ?? []),
                                              followSymlinks: followSymlinks)
        }
        let appends = !(output?.appended.isEmpty ?? true)
        for (names, source) in [(ModelCard.configFiles, templateFolder), (ModelCard.tokenizerFiles, tokenizerFolder)] {
            guard let source else { continue }
            for name in names where FileManager.default.fileExists(atPath: source + "/" + name) {
                switch name {
                case "config.json":
                    try FormatConversion.copyConfig(from: source, to: writer, dtype: prepared.plan.outputDType,
                                                    layerCount: prepared.outputLayerCount, vocabularySize: output?.rowCount,
                                                    followSymlinks: followSymlinks)
                // A chat_template.jinja file would take precedence over tokenizer_config.json's
                // template, so it is left out when the recipe sets one.
                case "chat_template.jinja" where template != nil:
                    continue
                // The slow tokenizer's list of added tokens would not have the appended ones.
                case "added_tokens.json" where appends:
                    continue
                case "tokenizer.json" where appends:
                    let path = try HFFolder.sideFile(name, in: source, followSymlinks: followSymlinks)
                    let json = output!.tokenizerJSON(from: try readJSONFile(path, rejectDuplicateKeys: false))
                    try writer.writeFile(name: name, contents: Array((json.prettyText + "\n").utf8))
                case "tokenizer_config.json" where template != nil || appends:
                    let path = try HFFolder.sideFile(name, in: source, followSymlinks: followSymlinks)
                    var config = try readJSONFile(path, rejectDuplicateKeys: false)
                    if let output { config = output.tokenizerConfig(from: config) }
                    if let template {
                        guard let set = ChatTemplate.settingTemplate(template, in: config) else {
                            throw CheckpointError.io(file: path, problem: "is not a JSON object")
                        }
                        config = set
                    }
                    try writer.writeFile(name: name, contents: Array((config.prettyText + "\n").utf8))
                default:
                    try writer.copyFile(from: source + "/" + name, as: nil, followSymlinks: followSymlinks)
                }
            }
        }
        if template != nil, !(tokenizerFolder.map { FileManager.default.fileExists(atPath: $0 + "/tokenizer_config.json") } ?? false) {
            warn("the recipe's chat_template is not written: \(tokenizerFolder ?? prepared.template.path) has no tokenizer_config.json")
        }
    }

    /// `path` when it is a folder.
    private static func folder(of path: String) -> String? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { return nil }
        return path
    }
}

/// An error whose message names a path the user knows in place of one that exists
/// only while the output is written (the folder staged for a GGUF output).
struct RelabeledError: Error, CustomStringConvertible {
    let description: String

    init(_ error: any Error, replacing path: String, with shown: String) {
        description = String(describing: error).replacingOccurrences(of: path, with: shown)
    }
}
