import Checkpoints

/// A merge whose inputs are open and checked: every tensor of the output is known,
/// with its sources and resolved parameters, before the first byte is written.
public final class PreparedMerge: Sendable {
    /// The plan the merge was prepared from.
    public let plan: MergePlan
    /// Opened checkpoints; index 0 is the base (or the first model for `linear` without one).
    public let checkpoints: [Checkpoint]
    /// Output tensors in the template's order.
    public let jobs: [MergeJob]
    /// Things the user should know that do not stop the merge.
    public let warnings: [String]
    /// The output's layer count when slices set it (the config's `num_hidden_layers`); nil: the template's.
    public let outputLayerCount: Int?
    /// The tokenizer written when the recipe names one (its row count is config.json's
    /// `vocab_size`); nil: the base's tokenizer files are copied.
    public let outputTokenizer: OutputTokenizer?

    init(plan: MergePlan, checkpoints: [Checkpoint], jobs: [MergeJob], warnings: [String], outputLayerCount: Int? = nil,
         outputTokenizer: OutputTokenizer? = nil) {
        self.plan = plan
        self.checkpoints = checkpoints
        self.jobs = jobs
        self.warnings = warnings
        self.outputLayerCount = outputLayerCount
        self.outputTokenizer = outputTokenizer
    }

    /// The output's tensor list for a writer.
    public var outputTensors: [TensorSpec] {
        jobs.map { TensorSpec(name: $0.name, dtype: $0.outputDType, shape: $0.shape) }
    }

    /// The checkpoint the output is modelled on (config and tokenizer files come from it).
    public var template: Checkpoint { checkpoints[0] }

    /// Opens every input and checks it against the base; all problems are reported together.
    /// Shards of input folders that are links leaving them are refused unless `followSymlinks`.
    public static func prepare(_ plan: MergePlan, followSymlinks: Bool = false) throws(MergeError) -> PreparedMerge {
        try plan.check()
        if plan.slices != nil { return try prepareSlices(plan, followSymlinks: followSymlinks) }
        var opened = OpenedCheckpoints(followSymlinks: followSymlinks, allowsAdapters: true)
        let contributing = plan.contributingModels
        let templatePath = plan.base ?? contributing[0].path
        _ = try opened.index(of: templatePath)
        var modelIndex: [Int] = []
        for model in contributing { modelIndex.append(try opened.index(of: model.path)) }
        let template = opened.checkpoints[0]
        let bridges = modelIndex.map { opened.adapters[$0] != nil ? nil : FormatBridge(base: template, model: opened.checkpoints[$0]) }
        let vocabulary = try VocabularyAlignment.build(plan, basePath: templatePath, followSymlinks: followSymlinks)
        var matched = [Set<String>](repeating: [], count: contributing.count)

        let layerCount = layerCount(of: template)

        var problems: [String] = []
        var warnings = plan.unusedParameters.map { "parameter '\($0)' is not used by \(plan.method); it is ignored" }
        var jobs: [MergeJob] = []
        var quantizedBase = 0
        let method = plan.method
        let kernel = method.entry.kernel
        // Adds the job of `entry`, with the family's parameters resolved for a merged tensor.
        func add(_ entry: TensorEntry, _ kind: MergeJob.Kind, _ dtype: DType, _ inputs: [MergeInput] = [],
                 shape: [Int]? = nil, baseRows: VocabularyRows? = nil) {
            var parameters = MergeJob.Parameters.none
            if kind == .merge {
                let t = LayerPosition.fraction(of: entry.name, layerCount: layerCount)
                parameters = kernel.parameters(models: contributing, plan: plan) { name, model, fallback in
                    if let v = model?.parameters[name]?.value(forTensor: entry.name, at: t) { return v }
                    return plan.parameters[name]?.value(forTensor: entry.name, at: t) ?? fallback
                }
            }
            var job = MergeJob(name: entry.name, kind: kind, shape: shape ?? entry.shape, outputDType: dtype, template: entry,
                               templateCheckpoint: 0, inputs: inputs, parameters: parameters, baseRows: baseRows)
            if kind == .merge { job.computeType = plan.computeType(template: entry.dtype, inputs: inputs.map(\.tensor.dtype)) }
            jobs.append(job)
        }
        for entry in template.tensors {
            let mergeable = entry.dtype.isFloatingPoint && entry.dtype.isDecodable
            guard mergeable else {
                for m in contributing.indices {
                    if let name = FormatBridge.modelName(for: entry.name, through: bridges[m]) { matched[m].insert(name) }
                }
                add(entry, .copy, entry.dtype)
                continue
            }
            var outputDType = plan.outputDType ?? entry.dtype
            if outputDType.isQuantized {
                // Block-quantized (GGUF) base tensors have no safetensors type.
                quantizedBase += 1
                outputDType = .bf16
            } else if !outputDType.isEncodable {
                warnings.append("tensor '\(entry.name)' is \(entry.dtype), which cannot be written; writing F32")
                outputDType = .f32
            }
            var inputs: [MergeInput] = []
            var missing: [String] = []
            for (m, model) in contributing.enumerated() {
                if let (adapter, baseIndex) = opened.adapters[modelIndex[m]] {
                    // An adapter: its saved tensor, else its base's, plus δ where it adapts the tensor.
                    let lora = adapter.module(adapting: entry.name).map { LoRAInput(adapter: adapter, module: $0, checkpoint: modelIndex[m]) }
                    if let saved = adapter.saved[entry.name] {
                        guard saved.shape == entry.shape else {
                            problems.append("tensor '\(entry.name)' has shape \(saved.shape) in \(adapter.weights.path) but \(entry.shape) in the base")
                            continue
                        }
                        inputs.append(MergeInput(checkpoint: modelIndex[m], tensor: saved, rowOrder: nil, lora: lora))
                    } else if let tensor = opened.checkpoints[baseIndex].tensor(named: entry.name) {
                        guard tensor.shape == entry.shape, tensor.dtype.isFloatingPoint, tensor.dtype.isDecodable else {
                            problems.append("tensor '\(entry.name)' is \(tensor.dtype) \(tensor.shape) in \(adapter.weights.path)'s base, \(entry.dtype) \(entry.shape) in the base")
                            continue
                        }
                        inputs.append(MergeInput(checkpoint: baseIndex, tensor: tensor, rowOrder: nil, lora: lora))
                    } else {
                        missing.append(model.path)
                    }
                    continue
                }
                let checkpoint = opened.checkpoints[modelIndex[m]]
                guard let name = FormatBridge.modelName(for: entry.name, through: bridges[m]),
                      let tensor = checkpoint.tensor(named: name) else {
                    missing.append(model.path)
                    continue
                }
                matched[m].insert(name)
                var rowOrder: RowOrder?
                if let bridge = bridges[m] {
                    switch bridge.rowOrder(for: entry.name, shape: entry.shape) {
                    case .success(let order): rowOrder = order
                    case .failure(let problem):
                        problems.append("tensor '\(entry.name)' cannot be read from \(model.path): \(problem.description)")
                        continue
                    }
                }
                if !tensor.dtype.isFloatingPoint || !tensor.dtype.isDecodable {
                    problems.append("tensor '\(entry.name)' is \(tensor.dtype) in \(model.path), \(entry.dtype) in the base")
                    continue
                }
                if tensor.shape != entry.shape {
                    let rowsDiffer = isVocabularyTensor(entry.name) && entry.shape.count >= 1 && tensor.shape.count == entry.shape.count
                        && tensor.shape.dropFirst() == entry.shape.dropFirst()
                    if rowsDiffer, vocabulary == nil {
                        // As mergekit: rows of different vocabularies are not merged unless a
                        // tokenizer says which row is which token.
                        problems.append("tensor '\(entry.name)' has \(tensor.shape[0]) rows in \(model.path) but \(entry.shape[0]) in the base; set tokenizer_source (base, union or a model) to map the rows by token")
                        continue
                    } else if !rowsDiffer {
                        problems.append("tensor '\(entry.name)' has shape \(tensor.shape) in \(model.path) but \(entry.shape) in the base")
                        continue
                    }
                }
                inputs.append(MergeInput(checkpoint: modelIndex[m], tensor: tensor, rowOrder: rowOrder))
            }
            let complete = inputs.count == contributing.count
            let baseOnly = missing.count == contributing.count && plan.usesBaseAsReference
            if let vocabulary, isVocabularyTensor(entry.name), entry.shape.count >= 1, complete || baseOnly {
                // Rows follow the output tokenizer: each model's mapped to it by token.
                do {
                    if let mapped = try mapRows(entry.name, reference: (templatePath, template, entry), inputs: complete ? inputs : [],
                                                paths: contributing.map(\.path), checkpoints: opened.checkpoints, vocabulary: vocabulary) {
                        add(entry, complete ? .merge : .convert, outputDType, mapped.inputs, shape: mapped.shape, baseRows: mapped.baseRows)
                        continue
                    }
                } catch {
                    problems.append(error.description)
                    continue
                }
            }
            if baseOnly {
                add(entry, .convert, outputDType)
                continue
            }
            for path in missing { problems.append("tensor '\(entry.name)' is missing from \(path)") }
            if complete { add(entry, .merge, outputDType, inputs) }
        }
        if quantizedBase > 0 { warnings.append("\(quantizedBase) quantized base tensors are written as BF16 (choose another type with --dtype)") }
        let baseOnly = jobs.filter { $0.kind == .convert }.count
        if baseOnly > 0 { warnings.append("\(baseOnly) tensors only in the base are copied from it") }
        for (m, model) in contributing.enumerated() where opened.adapters[modelIndex[m]] == nil {
            let extra = opened.checkpoints[modelIndex[m]].tensors.filter { !matched[m].contains($0.name) }.count
            if extra > 0 { warnings.append("\(model.path): \(extra) tensors not in the base are left out") }
        }
        if !problems.isEmpty { throw .incompatibleInputs(base: templatePath, problems: problems) }
        for j in jobs where j.kind == .merge { try kernel.checkResolved(j, plan: plan) }
        if plan.trim == .global {
            guard method.sparsifier == .magnitude else {
                throw .badPlan("--trim global applies to the magnitude trim (ties), not to \(method)")
            }
            for model in contributing {
                if case .number = model.parameters["density"] ?? plan.parameters["density"] ?? .number(1) { continue }
                throw .badPlan("--trim global needs one density per model, not a filter or gradient (model \(model.path))")
            }
        }
        return PreparedMerge(plan: plan, checkpoints: opened.checkpoints, jobs: jobs, warnings: warnings,
                             outputTokenizer: vocabulary?.output)
    }

    /// The rows of a vocabulary tensor mapped to the output tokenizer, for a merge of
    /// models and for a slice alike: the reference model's (whose tensor `name` is the
    /// job's template) and each input's (`paths[m]` names the model of `inputs[m]`), and
    /// the output shape; nil when every model already has the output's rows in its order.
    static func mapRows(_ name: String, reference: (path: String, checkpoint: Checkpoint, tensor: TensorEntry),
                        inputs: [MergeInput], paths: [String], checkpoints: [Checkpoint],
                        vocabulary: VocabularyAlignment) throws(MergeError)
        -> (inputs: [MergeInput], baseRows: VocabularyRows, shape: [Int])?
    {
        let entry = reference.tensor
        let shape = [vocabulary.output.rowCount] + entry.shape.dropFirst()
        guard shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }) < Int.max / 8 else {
            throw .badPlan("tensor '\(name)' would have \(vocabulary.output.rowCount) rows of \(entry.shape.dropFirst()), too many elements")
        }
        let rowCounts = [entry.shape[0]] + inputs.map { $0.tensor.shape.first ?? 0 }
        if rowCounts.allSatisfy({ vocabulary.isIdentity(rows: $0) }) { return nil }
        func model(_ path: String) throws(MergeError) -> Int {
            guard let k = vocabulary.models.firstIndex(of: path) else {
                throw .badPlan("tensor '\(name)': \(path) is not a model of the recipe")
            }
            return k
        }
        // Each model of the alignment: its tensor here.
        var tensors = [(checkpoint: Checkpoint, tensor: TensorEntry)?](repeating: nil, count: vocabulary.models.count)
        let r = try model(reference.path)
        tensors[r] = (reference.checkpoint, entry)
        var slot: [Int] = []
        for (input, path) in zip(inputs, paths) {
            let k = try model(path)
            if input.lora != nil || input.rowOrder != nil {
                throw .badPlan("tensor '\(name)': the rows of \(path) (an adapter or another format) cannot be mapped to the output tokenizer")
            }
            tensors[k] = (checkpoints[input.checkpoint], input.tensor)
            slot.append(k)
        }
        let rows = try vocabulary.rows(of: tensors, name: name)
        var mapped = inputs
        for m in mapped.indices { mapped[m].rows = rows[slot[m]] }
        return (mapped, rows[r]!, shape)
    }

    /// One past the highest layer number among the tensors of `checkpoint`.
    static func layerCount(of checkpoint: Checkpoint) -> Int {
        var count = 0
        for t in checkpoint.tensors {
            // A layer number comes from a file: Int.max must not overflow the count.
            if let layer = LayerPosition.layer(of: t.name) { count = max(count, layer == .max ? layer : layer + 1) }
        }
        return count
    }

    /// Embedding and output-projection tensors, whose rows follow the vocabulary.
    static func isVocabularyTensor(_ name: String) -> Bool {
        name.contains("embed_tokens") || name.contains("lm_head") || name.contains("wte")
            || name.hasPrefix("token_embd") || name == "output.weight"
    }
}

/// The inputs of a merge, each file or folder opened once however often the plan names it.
/// A LoRA adapter (a folder with `adapter_config.json`, or `base+adapter`) is opened
/// against its base, which is opened first: the merge's base (the first path opened) for
/// a bare adapter. Its entry in `checkpoints` is the adapter's weights file.
struct OpenedCheckpoints {
    let followSymlinks: Bool
    /// False where only full models make sense (slices): an adapter is then refused.
    let allowsAdapters: Bool
    private(set) var checkpoints: [Checkpoint] = []
    /// Index in `checkpoints` of each path opened.
    private(set) var indexByPath: [String: Int] = [:]
    /// The adapter opened at a checkpoint index, with the index of its base.
    private(set) var adapters: [Int: (adapter: LoRAAdapter, base: Int)] = [:]

    init(followSymlinks: Bool, allowsAdapters: Bool = false) {
        self.followSymlinks = followSymlinks
        self.allowsAdapters = allowsAdapters
    }

    /// The index of `path` in `checkpoints`, opening it the first time.
    mutating func index(of path: String) throws(MergeError) -> Int {
        if let i = indexByPath[path] { return i }
        let split = AdapterInputs.split(path)
        if split != nil || LoRAAdapter.isAdapter(path) {
            guard allowsAdapters else { throw .badPlan("\(path) is a LoRA adapter; slices take full models") }
            guard split != nil || !checkpoints.isEmpty else {
                throw .badPlan("\(path) is a LoRA adapter, which needs a base model (--base, or base+adapter)")
            }
            let base = try split.map { (s) throws(MergeError) in try index(of: s.base) } ?? 0
            if adapters[base] != nil { throw .badPlan("\(path): the model an adapter is applied to cannot be an adapter") }
            // The adapter's tensors are its base's, found under the merge base's names: a GGUF
            // model and a folder name them differently (no bridge is applied to adapters).
            if (checkpoints[base].format == .gguf) != (checkpoints[0].format == .gguf) {
                throw .badPlan("\(path): an adapter applied to \(checkpoints[base].format == .gguf ? "a GGUF model" : "a Hugging Face model") "
                               + "merges only onto a base of the same format, not \(checkpoints[0].path)")
            }
            do {
                let adapter = try LoRAAdapter.open(split?.adapter ?? path, base: checkpoints[base], followSymlinks: followSymlinks)
                checkpoints.append(adapter.weights)
                adapters[checkpoints.count - 1] = (adapter, base)
            } catch {
                throw .checkpoint(error)
            }
        } else {
            do {
                checkpoints.append(try Checkpoint.open(path, followSymlinks: followSymlinks))
            } catch {
                throw .checkpoint(error)
            }
        }
        indexByPath[path] = checkpoints.count - 1
        return checkpoints.count - 1
    }
}
