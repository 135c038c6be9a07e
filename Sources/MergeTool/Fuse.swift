import ArgumentParser
import Checkpoints
import Dispatch
import Foundation
import Merging

extension MergeTool {
    struct Fuse: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Merge fine-tuned checkpoints of one base model into a new Hugging Face model folder.",
            discussion: """
                Inputs are .safetensors files, .gguf files or model folders, and may be mixed: a \
                Llama-family GGUF model is matched to a Hugging Face base by name (and the other way \
                round), its Q/K rows read in the base's order. The output folder gets \
                the merged weights (sharded above --max-shard-size), the base's config and tokenizer \
                files, a README.md model card and the recipe as merge-config.yml. Every input is \
                checked against the base before anything is written; the folder appears only when \
                complete. Methods and parameters: docs/merging.md.

                Examples:
                  merge-tool fuse sft/ dpo/ --base base/ --density 0.3,1 -o out/
                  merge-tool fuse a/ b/ --base base/ --method dare_ties --seed 7 -o out/
                  merge-tool fuse --config recipe.yml -o out/
                """)

        @Argument(help: "The fine-tuned models to merge.")
        var models: [String] = []

        @Option(help: "The base model the task vectors are taken from.")
        var base: String?

        @Option(help: "A mergekit YAML recipe (instead of models and flags).")
        var config: String?

        @Option(name: [.short, .customLong("output")], help: "The output model folder.")
        var output: String

        // A typo gets the closest method name as a suggestion.
        @Option(help: OptionValue.help("Merge method.", default: MergeMethod.ties), transform: { try MergeMethod.named($0) })
        var method: MergeMethod = .ties

        @Option(help: "Per-model weights, comma-separated (one value applies to all); each \(ParameterRange.describe("weight")).")
        var weights: String?

        @Option(help: "Per-model densities, the fraction of each task vector kept (comma-separated; \(ParameterRange.describe("density"))).")
        var density: String?

        @Option(name: .customLong("lambda"), help: "Scale of the fused delta, \(ParameterRange.describe("lambda")) (default 1).")
        var lambdaScale: Double?

        @Option(help: "Breadcrumbs: fraction of largest entries dropped as outliers, \(ParameterRange.describe("gamma")) (default 0.01).")
        var gamma: Double?

        @Option(help: "DELLA: spread of keep probabilities around the density, \(ParameterRange.describe("epsilon")) (default 0.15).")
        var epsilon: Double?

        @Option(name: .customLong("t"), help: "SLERP: interpolation factor from the base (0) to the other model (1), \(ParameterRange.describe("t")).")
        var interpolation: Double?

        @Flag(help: "Model Stock: compute the interpolation factor per row.")
        var filterWise = false

        @Flag(inversion: .prefixedNo, help: "Divide by the sum of weights (default: per method).")
        var normalize: Bool?

        @Option(help: "Rescale after sparsifying (default: per method).")
        var rescale: Rescale?

        @Option(help: "Sign election of the TIES-style methods.")
        var consensus: Consensus?

        @Option(help: "Magnitude trim per tensor or over the whole model.")
        var trim: TrimScope = .tensor

        @Option(help: "Seed of the random sparsifiers (DARE, DELLA).")
        var seed: UInt64 = 0

        @Option(help: "Output element type (default: the base's).")
        var dtype: FloatOutputType?

        @Option(help: "Output format: a model folder, or one GGUF file (from a base folder with config.json).")
        var format: OutputFormat = .safetensors

        @Option(help: OptionValue.help("GGUF tensor type with --format gguf.", default: GGUFOutputType.f16),
                transform: OptionValue.parse)
        var type: GGUFOutputType = .f16

        @OptionGroup var shards: ShardOptions

        @OptionGroup var work: WorkOptions

        @Flag(help: "Stop with an error when an input tensor holds NaN or infinite values (default: a warning per tensor).")
        var strict = false

        @Option(help: ArgumentHelp(
            "How the delta of a quantized fine-tune (Q8_0, Q4_K, …) of an unquantized base is taken.",
            discussion: "aware takes δ = dequant(ft) − dequant(quant(base)), the base quantized to the fine-tune's own block type, so blocks the fine-tune left unchanged give δ = 0 exactly; naive takes dequant(ft) − base, which turns every block's rounding error into δ. Types Claire cannot encode (Q2_K, Q3_K, Q5_K) always use naive."))
        var quantizedDelta: QuantizedDelta = .aware

        @OptionGroup var input: InputOptions

        func validate() throws {
            if config != nil {
                guard models.isEmpty, base == nil else {
                    throw ValidationError("give either --config or models and --base, not both")
                }
            } else if models.isEmpty {
                throw ValidationError("name the models to merge, or a recipe with --config")
            }
            for (flag, name, value) in [("--lambda", "lambda", lambdaScale), ("--gamma", "gamma", gamma),
                                        ("--epsilon", "epsilon", epsilon), ("--t", "t", interpolation)] {
                if let value, let problem = ParameterRange.problem(name: name, value: value) {
                    throw ValidationError("\(flag): \(problem)")
                }
            }
            _ = try numbers(weights, "--weights", parameter: "weight")
            _ = try numbers(density, "--density", parameter: "density")
        }

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                let (plan, recipe) = try makePlan()
                try checkOutput(plan)
                let prepared = try PreparedMerge.prepare(plan, followSymlinks: input.followSymlinks)
                for warning in prepared.warnings { printError("warning: \(warning)") }
                guard format == .gguf else {
                    try writeFolder(prepared, recipe: recipe, to: output, overwrite: work.force)
                    return
                }
                // GGUF: the merged folder is staged beside the output, then converted
                // (names, Q/K row order, metadata and tokenizer from its config.json).
                if FileManager.default.fileExists(atPath: output) && !work.force {
                    throw CheckpointError.io(file: output, problem: "already exists (use --force to replace it)")
                }
                // The conversion reads config.json from the base folder: check before merging.
                guard let templateFolder = folder(of: prepared.template.path) else {
                    throw CheckpointError.conversion(file: prepared.template.path, problem: .needsModelFolder)
                }
                guard FileManager.default.fileExists(atPath: templateFolder + "/config.json") else {
                    throw CheckpointError.conversion(file: templateFolder, problem: .missingConfigFile)
                }
                // The staging folder is a temporary of the output itself, so an interrupt
                // removes it and a later run sweeps it up after a kill.
                let stagingArea = try OutputPath(destination: output, isDirectory: true, overwrite: true)
                defer { stagingArea.abort() }
                let staging = stagingArea.temporaryPath(for: "merged")
                try writeFolder(prepared, recipe: recipe, to: staging, overwrite: true)
                let report: FormatConversion.Report
                do {
                    report = try FormatConversion.hfToGGUF(folder: staging, output: output, type: type.dtype,
                                                           overwrite: work.force, followSymlinks: input.followSymlinks,
                                                           workers: work.workerCount)
                } catch {
                    // The staged folder is gone by the time the message is read; its files
                    // come from the base folder, so that is what the message names.
                    throw RelabeledError(error, replacing: staging, with: templateFolder)
                }
                for warning in report.warnings {
                    printError("warning: " + warning.replacingOccurrences(of: staging, with: prepared.template.path))
                }
            }
        }

        /// Merges into the model folder `folder`, with side files, card and recipe.
        private func writeFolder(_ prepared: PreparedMerge, recipe: String, to folder: String, overwrite: Bool) throws {
            let writer = try HFFolderWriter(folder: folder, tensors: prepared.outputTensors,
                                            maxShardSize: shards.bytes, overwrite: overwrite)
            do {
                let progress = ProgressLine(label: "fuse")
                let executor = MergeExecutor(prepared, threads: work.workerCount)
                executor.strict = strict
                executor.quantizedDelta = quantizedDelta
                try executor.run(into: writer) { progress.update($0) }
                progress.finish()
                for tensor in executor.nonFiniteInputs {
                    printError("warning: input tensor \(tensor) holds NaN or infinite values (--strict makes this an error)")
                }
                try copySideFiles(prepared, into: writer)
                try writer.writeFile(name: ModelCard.recipeFileName, contents: Array(recipe.utf8))
                try writer.writeFile(name: "README.md", contents: Array(ModelCard.text(for: prepared.plan, recipe: recipe).utf8))
                try writer.commit()
            } catch {
                writer.abort()
                throw error
            }
        }

        /// The plan and the recipe text stored with the output.
        func makePlan() throws -> (MergePlan, String) {
            if let config {
                var (plan, text) = try MergeRecipe.load(config)
                if let dtype { plan.outputDType = dtype.dtype }
                return (plan, text)
            }
            var parameters: [String: ParameterValue] = [:]
            if let lambdaScale { parameters["lambda"] = .number(lambdaScale) }
            if let gamma { parameters["gamma"] = .number(gamma) }
            if let epsilon { parameters["epsilon"] = .number(epsilon) }
            if let interpolation { parameters["t"] = .number(interpolation) }
            if filterWise { parameters["filter_wise"] = .number(1) }
            if let normalize { parameters["normalize"] = .number(normalize ? 1 : 0) }
            let weightList = try numbers(weights, "--weights", parameter: "weight")
            let densityList = try numbers(density, "--density", parameter: "density")
            var specs: [ModelSpec] = []
            for (i, path) in models.enumerated() {
                var spec = ModelSpec(path: path)
                // Weights are always written out: mergekit requires them in a recipe.
                if method.parameterNames.contains("weight") { spec.parameters["weight"] = .number(pick(weightList, i) ?? 1) }
                if let d = pick(densityList, i) { spec.parameters["density"] = .number(d) }
                specs.append(spec)
            }
            let plan = MergePlan(
                method: method, base: base, models: specs, parameters: parameters,
                rescale: rescale, consensus: consensus, trim: trim, seed: seed, outputDType: dtype?.dtype)
            return (plan, MergeRecipe.yaml(for: plan))
        }

        /// A comma-separated list of values of `parameter`, each within its `ParameterRange`.
        private func numbers(_ text: String?, _ flag: String, parameter: String) throws -> [Double] {
            guard let text else { return [] }
            var values: [Double] = []
            for part in text.split(separator: ",", omittingEmptySubsequences: false) {
                guard let v = Double(part.trimmingCharacters(in: .whitespaces)) else {
                    throw ValidationError("\(flag): '\(part)' is not a number")
                }
                if let problem = ParameterRange.problem(name: parameter, value: v) { throw ValidationError("\(flag): \(problem)") }
                values.append(v)
            }
            guard values.count == 1 || values.count == models.count else {
                throw ValidationError("\(flag) has \(values.count) values for \(models.count) models")
            }
            return values
        }

        private func pick(_ values: [Double], _ i: Int) -> Double? {
            values.isEmpty ? nil : values[values.count == 1 ? 0 : i]
        }

        /// The output must not be, hold or lie inside an input (models, base, tokenizer source, recipe).
        func checkOutput(_ plan: MergePlan) throws {
            var inputs = plan.models.map(\.path)
            if let base = plan.base { inputs.append(base) }
            if let tokenizerSource = plan.tokenizerSource { inputs.append(tokenizerSource) }
            if let config { inputs.append(config) }
            try OutputGuard.check(output: output, inputs: inputs)
        }

        /// Config and tokenizer files from the base folder (tokenizer from `tokenizer_source` if given).
        private func copySideFiles(_ prepared: PreparedMerge, into writer: HFFolderWriter) throws {
            let templateFolder = folder(of: prepared.template.path)
            let tokenizerFolder = prepared.plan.tokenizerSource.map(folder(of:)) ?? templateFolder
            for name in ModelCard.configFiles {
                if let templateFolder, FileManager.default.fileExists(atPath: templateFolder + "/" + name) {
                    try writer.copyFile(from: templateFolder + "/" + name, followSymlinks: input.followSymlinks)
                }
            }
            for name in ModelCard.tokenizerFiles {
                if let tokenizerFolder, FileManager.default.fileExists(atPath: tokenizerFolder + "/" + name) {
                    try writer.copyFile(from: tokenizerFolder + "/" + name, followSymlinks: input.followSymlinks)
                }
            }
        }

        private func folder(of path: String) -> String? {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else { return nil }
            return path
        }
    }
}
