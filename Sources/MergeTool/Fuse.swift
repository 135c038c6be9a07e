import ArgumentParser
import Checkpoints
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
                complete. Methods and parameters: docs/merging.md. nuslerp and multislerp \
                interpolate the task vectors from --base when one is given, else the models \
                themselves; karcher counts a base as one more input; their parameters besides \
                the weights (nuslerp_flatten, nuslerp_row_wise, normalize_weights, eps, max_iter, \
                tol) are set in a recipe.

                A recipe (--config) sets the method, models, parameters and seed; the merge \
                flags beside it are refused, and only --dtype overrides its output type. Its \
                arithmetic follows its dtype as mergekit's does (each operation rounded to it; without \
                dtype, to the inputs' type), so a BF16 recipe gives mergekit's bytes; --compute f32 \
                computes it in Float32 instead (more accurate; the command line always does). It may \
                name models by hub ID (org/name or org/name@revision) when they are in the local \
                Hugging Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub). \
                Parameters its method does not read are ignored with a warning, as mergekit does; \
                chat_template (alpaca, chatml, exaone, llama3, mistral, auto or a template) goes into \
                tokenizer_config.json. tokenizer_source (base, union or a model) or a tokenizer section \
                gives the output that tokenizer, with every model's embedding rows mapped to it by token; \
                without one, embedding row counts that differ are refused. \
                Recipe slices (sources with layer_range) stack layers, e.g. with passthrough and its \
                optional scale; config.json's num_hidden_layers counts the stacked layers. \
                mergekit's modules form is read too (Llama-family models have one module, default).

                A model may be a PEFT LoRA adapter folder (adapter_config.json and \
                adapter_model.safetensors), applied to --base, or BASE+ADAPTER as in mergekit: its \
                task vector is the adapter's δ = scale·B·A, computed while merging (docs/lora.md).

                Examples:
                  merge-tool fuse sft/ dpo/ --base base/ --density 0.3,1 -o out/
                  merge-tool fuse a/ b/ --base base/ --method dare_ties --seed 7 -o out/
                  merge-tool fuse --config recipe.yml -o out/
                  merge-tool fuse sft-lora/ dpo-lora/ --base base/ -o out/
                """)

        @Argument(help: "The fine-tuned models to merge (model folders, files, LoRA adapter folders or BASE+ADAPTER).")
        var models: [String] = []

        @Option(help: "The base model the task vectors are taken from.")
        var base: String?

        @Option(help: "A mergekit YAML recipe (instead of models and the merge flags; only --dtype may override it).")
        var config: String?

        @Option(name: [.short, .customLong("output")], help: "The output model folder.")
        var output: String

        // A typo gets the closest method name as a suggestion.
        @Option(help: OptionValue.help("Merge method.", default: MergeMethod.ties), transform: { try MergeMethod.named($0) })
        var method: MergeMethod?

        @Option(help: "Per-model weights, comma-separated (one value applies to all); each \(ParameterRange.describe("weight")).")
        var weights: String?

        @Option(help: "Per-model densities, the fraction of each task vector kept (comma-separated; \(ParameterRange.describe("density"))).")
        var density: String?

        @Option(name: .customLong("lambda"), help: "Scale of the fused delta, \(ParameterRange.describe("lambda")) (default 1).")
        var lambdaScale: Double?

        @Option(help: "Breadcrumbs: fraction of largest entries dropped as outliers, \(ParameterRange.describe("gamma")) (default 0.01).")
        var gamma: Double?

        @Option(help: "DELLA: spread of keep probabilities around the density (default 0.15); RAM: the |δ| above which an entry counts as changed (default 0.00001); \(ParameterRange.describe("epsilon")).")
        var epsilon: Double?

        @Option(name: .customLong("t"), help: "SLERP: interpolation factor from the base (0) to the other model (1); NearSwap: the distance below which an entry takes the other model's value; \(ParameterRange.describe("t")).")
        var interpolation: Double?

        @Option(name: .customLong("select-topk"), help: "SCE: fraction of entries kept, those varying most across the models, \(ParameterRange.describe("select_topk")) (default 1).")
        var selectTopK: Double?

        @Flag(help: "Model Stock: compute the interpolation factor per row.")
        var filterWise = false

        @Flag(inversion: .prefixedNo, help: "Divide by the sum of weights (default: per method).")
        var normalize: Bool?

        @Option(help: "Rescale after sparsifying (default: per method).")
        var rescale: Rescale?

        @Option(help: "Sign election of the TIES-style methods.")
        var consensus: Consensus?

        @Option(help: OptionValue.help("Magnitude trim per tensor or over the whole model.", default: TrimScope.tensor))
        var trim: TrimScope?

        @Option(help: "Seed of the random sparsifiers (DARE, DELLA; default 0).")
        var seed: UInt64?

        @Option(help: "Output element type (default: the base's).")
        var dtype: FloatOutputType?

        @Option(help: ArgumentHelp(
            "The arithmetic of a recipe (--config): recipe (the default) rounds each operation to the recipe's dtype as mergekit does, f32 computes in Float32 throughout.",
            discussion: "Merges from the command line always compute in Float32."))
        var compute: ComputeMode?

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

        @Option(help: ArgumentHelp(
            "Write one slice of the merge: I/N (I from 0 to N-1) writes slice I's shards, finish adds index and side files.",
            discussion: "Every slice runs the same command into the same output folder (a shared file system), each with its own I; the shards are dealt out by size from the plan alone. After all N have finished, the same command with --shard finish checks each slice's manifest and writes the index, config, tokenizer, model card and recipe: the folder is then byte-identical to a merge in one process. Folder output only. See docs/merging.md.",
            valueName: "I/N|finish"))
        var shard: String?

        @OptionGroup var input: InputOptions

        func validate() throws {
            if config != nil {
                guard models.isEmpty, base == nil else {
                    throw ValidationError("give either --config or models and --base, not both")
                }
                if let flag = mergeFlagsGiven.first {
                    throw ValidationError("\(flag) cannot be used with --config: the recipe sets it (edit the recipe instead)")
                }
            } else if models.isEmpty {
                throw ValidationError("name the models to merge, or a recipe with --config")
            } else if compute == .recipe {
                throw ValidationError("--compute recipe needs a recipe (--config); the command line computes in Float32")
            }
            for (flag, name, value) in [("--lambda", "lambda", lambdaScale), ("--gamma", "gamma", gamma),
                                        ("--epsilon", "epsilon", epsilon), ("--t", "t", interpolation),
                                        ("--select-topk", "select_topk", selectTopK)] {
                if let value, let problem = ParameterRange.problem(name: name, value: value) {
                    throw ValidationError("\(flag): \(problem)")
                }
            }
            _ = try numbers(weights, "--weights", parameter: "weight")
            _ = try numbers(density, "--density", parameter: "density")
            _ = try slice()
        }

        /// The part of a merge spread over processes that `--shard` names.
        private func slice() throws -> MergedModelWriter.Options.Slice? {
            guard let shard else { return nil }
            guard format == .safetensors else { throw ValidationError("--shard writes a model folder: it cannot be used with --format gguf") }
            if shard == "finish" { return .finish }
            let parts = shard.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]), count > 0, (0..<count).contains(index) else {
                throw ValidationError("--shard '\(shard)' is not I/N with 0 <= I < N, or finish")
            }
            return .part(index: index, count: count)
        }

        /// The merge flags given on the command line, which a recipe sets instead.
        private var mergeFlagsGiven: [String] {
            let given: [(String, Bool)] = [
                ("--method", method != nil), ("--weights", weights != nil), ("--density", density != nil),
                ("--lambda", lambdaScale != nil), ("--gamma", gamma != nil), ("--epsilon", epsilon != nil),
                ("--t", interpolation != nil), ("--select-topk", selectTopK != nil), ("--filter-wise", filterWise),
                (normalize == false ? "--no-normalize" : "--normalize", normalize != nil),
                ("--rescale", rescale != nil), ("--consensus", consensus != nil), ("--trim", trim != nil),
                ("--seed", seed != nil),
            ]
            return given.filter(\.1).map(\.0)
        }

        func run() throws {
            OutputPath.installInterruptCleanup()
            try reportingErrors {
                var (plan, recipe) = try makePlan()
                try checkOutput(plan)
                let prepared = try PreparedMerge.prepare(plan, followSymlinks: input.followSymlinks)
                // The flags' recipe names the output type written, so that mergekit (and
                // Claire) compute it in Float32 and write that type.
                if config == nil, plan.outputDType == nil {
                    plan.outputDType = prepared.jobs.first { $0.kind == .merge }?.outputDType
                    recipe = MergeRecipe.yaml(for: plan)
                }
                for warning in prepared.warnings { printError("warning: \(warning)") }
                var options = MergedModelWriter.Options(
                    format: format == .gguf ? .gguf(type: type.dtype) : .folder, maxShardSize: shards.bytes,
                    overwrite: work.force, followSymlinks: input.followSymlinks, workers: work.workerCount,
                    strict: strict, quantizedDelta: quantizedDelta, recipe: recipe)
                options.slice = try slice()
                let progress = ProgressLine(label: "fuse")
                try MergedModelWriter.write(prepared, to: output, options: options, progress: { progress.update($0) }) {
                    progress.finish()
                    printError("warning: \($0)")
                }
                progress.finish()
            }
        }

        /// The plan and the recipe text stored with the output.
        func makePlan() throws -> (MergePlan, String) {
            if let config {
                var (plan, text) = try MergeRecipe.load(config)
                if let dtype { plan.outputDType = dtype.dtype }
                if compute == .f32 { plan.computeType = .f32 }
                return (plan, text)
            }
            var parameters: [String: ParameterValue] = [:]
            if let lambdaScale { parameters["lambda"] = .number(lambdaScale) }
            if let gamma { parameters["gamma"] = .number(gamma) }
            if let epsilon { parameters["epsilon"] = .number(epsilon) }
            if let interpolation { parameters["t"] = .number(interpolation) }
            if let selectTopK { parameters["select_topk"] = .number(selectTopK) }
            if filterWise { parameters["filter_wise"] = .number(1) }
            if let normalize { parameters["normalize"] = .number(normalize ? 1 : 0) }
            let weightList = try numbers(weights, "--weights", parameter: "weight")
            let densityList = try numbers(density, "--density", parameter: "density")
            var specs: [ModelSpec] = []
            let method = method ?? .ties
            for (i, path) in models.enumerated() {
                var spec = ModelSpec(path: path)
                // Weights are always written out: mergekit requires them in a recipe.
                if method.parameterNames.contains("weight") { spec.parameters["weight"] = .number(pick(weightList, i) ?? 1) }
                if let d = pick(densityList, i) { spec.parameters["density"] = .number(d) }
                specs.append(spec)
            }
            let plan = MergePlan(
                method: method, base: base, models: specs, parameters: parameters,
                rescale: rescale, consensus: consensus, trim: trim ?? .tensor, seed: seed ?? 0, outputDType: dtype?.dtype)
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
            var inputs = plan.models.flatMap { AdapterInputs.paths($0.path) }
            if let base = plan.base { inputs.append(base) }
            inputs += plan.tokenizer?.modelPaths ?? []
            if let config { inputs.append(config) }
            try OutputGuard.check(output: output, inputs: inputs)
        }
    }
}
