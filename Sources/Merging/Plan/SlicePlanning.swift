import Checkpoints

/// Planning a merge written with `slices`: each output layer is numbered by its place in
/// the stack (slice after slice) and read from layer `layer_range.lowerBound + i` of each
/// of its slice's sources, as mergekit numbers them. Tensors outside the layers come
/// from the first slice's sources (embeddings) or the last slice's (final norm, output
/// head), with t = 0. Within a slice of n layers, layer i has t = i/(n − 1) (1 when
/// n = 1). A parameter is looked up in the source's own parameters, then the slice's,
/// then the global ones; the first that has a value for the tensor wins.
extension PreparedMerge {
    static func prepareSlices(_ plan: MergePlan, followSymlinks: Bool) throws(MergeError) -> PreparedMerge {
        guard let slices = plan.slices, let first = slices.first?.sources.first else {
            throw .badPlan("'slices' lists no slice")
        }
        var opened = OpenedCheckpoints(followSymlinks: followSymlinks)
        // The config and tokenizer come from the base, else from the first slice's first source.
        let templatePath = plan.base ?? first.path
        _ = try opened.index(of: templatePath)
        for source in slices.flatMap(\.sources) { _ = try opened.index(of: source.path) }
        let template = opened.checkpoints[0]

        var problems: [String] = []
        for (path, index) in opened.indexByPath.sorted(by: { $0.value < $1.value }) where index > 0 {
            if FormatBridge(base: template, model: opened.checkpoints[index]) != nil {
                problems.append("\(path) is not in the format of \(templatePath); slices need models in one format")
            }
        }
        if !problems.isEmpty { throw .incompatibleInputs(base: templatePath, problems: problems) }

        let layerCounts = opened.checkpoints.map(layerCount)
        for (k, slice) in slices.enumerated() {
            for source in slice.sources where source.layerRange.upperBound > layerCounts[opened.indexByPath[source.path]!] {
                problems.append("slice \(k + 1): layer_range [\(source.layerRange.lowerBound), \(source.layerRange.upperBound)] is past the \(layerCounts[opened.indexByPath[source.path]!]) layers of \(source.path)")
            }
        }
        if !problems.isEmpty { throw .incompatibleInputs(base: templatePath, problems: problems) }

        let method = plan.method
        let kernel = method.entry.kernel
        var jobs: [MergeJob] = []
        // With a recipe's tokenizer, embedding rows are mapped to it by token, over the
        // models of the slice the tensor comes from (as mergekit does).
        let vocabulary = try VocabularyAlignment.build(plan, basePath: templatePath, followSymlinks: followSymlinks)
        var warnings = plan.unusedParameters.map { "parameter '\($0)' is not used by \(plan.method); it is ignored" }
        // The source whose tensor is a job's template: the base for methods on deltas,
        // else the slice's first source.
        func reference(of slice: OutputSlice) -> SliceSource {
            plan.usesBaseAsReference ? slice.sources.first { $0.path == plan.base }! : slice.sources[0]
        }

        /// One output tensor of `slice`: `outputName` read as `sourceName(source)` from each source.
        var jobSlice: [Int] = []
        func addJob(_ k: Int, outputName: String, t: Double, sourceName: (SliceSource) -> String) {
            let slice = slices[k]
            // The reference's tensor is the job's template; the other sources contribute.
            let reference = reference(of: slice)
            let contributing = plan.usesBaseAsReference ? slice.sources.filter { $0.path != plan.base } : slice.sources
            let referenceIndex = opened.indexByPath[reference.path]!
            guard let entry = opened.checkpoints[referenceIndex].tensor(named: sourceName(reference)) else {
                problems.append("tensor '\(sourceName(reference))' is missing from \(reference.path)")
                return
            }
            guard entry.dtype.isFloatingPoint && entry.dtype.isDecodable else {
                jobs.append(MergeJob(name: outputName, kind: .copy, shape: entry.shape, outputDType: entry.dtype,
                                     template: entry, templateCheckpoint: referenceIndex, inputs: [], parameters: .none))
                jobSlice.append(k)
                return
            }
            var outputDType = plan.outputDType ?? entry.dtype
            if !outputDType.isEncodable || outputDType.isQuantized {
                warnings.append("tensor '\(outputName)' is \(entry.dtype), which cannot be written; writing F32")
                outputDType = .f32
            }
            var inputs: [MergeInput] = []
            for source in contributing {
                let index = opened.indexByPath[source.path]!
                let name = sourceName(source)
                guard let tensor = opened.checkpoints[index].tensor(named: name) else {
                    problems.append("tensor '\(name)' is missing from \(source.path)")
                    continue
                }
                guard tensor.dtype.isFloatingPoint && tensor.dtype.isDecodable else {
                    problems.append("tensor '\(name)' is \(tensor.dtype) in \(source.path), \(entry.dtype) in \(reference.path)")
                    continue
                }
                let rowsDiffer = vocabulary != nil && isVocabularyTensor(outputName) && tensor.shape.count == entry.shape.count
                    && !entry.shape.isEmpty && tensor.shape.dropFirst() == entry.shape.dropFirst()
                guard tensor.shape == entry.shape || rowsDiffer else {
                    problems.append("tensor '\(name)' has shape \(tensor.shape) in \(source.path) but \(entry.shape) in \(reference.path)")
                    continue
                }
                inputs.append(MergeInput(checkpoint: index, tensor: tensor, rowOrder: nil))
            }
            guard inputs.count == contributing.count else { return }
            // Source, then slice, then global parameters; per-model filters match the
            // source's tensor name, shared ones the output's.
            let models = contributing.map { ModelSpec(path: $0.path, parameters: $0.parameters) }
            func value(_ name: String, _ model: ModelSpec?, default fallback: Double) -> Double {
                if let model {
                    let tensorName = contributing.first { $0.path == model.path }.map(sourceName) ?? outputName
                    if let v = model.parameters[name]?.value(forTensor: tensorName, at: t) { return v }
                    if let v = slice.parameters[name]?.value(forTensor: tensorName, at: t) { return v }
                    return plan.parameters[name]?.value(forTensor: tensorName, at: t) ?? fallback
                }
                if let v = slice.parameters[name]?.value(forTensor: outputName, at: t) { return v }
                return plan.parameters[name]?.value(forTensor: outputName, at: t) ?? fallback
            }
            let parameters = kernel.parameters(models: models, plan: plan.plan(for: slice), value: value)
            var shape = entry.shape, baseRows: VocabularyRows?
            if let vocabulary, isVocabularyTensor(outputName), !entry.shape.isEmpty {
                do {
                    if let mapped = try mapRows(outputName, reference: (reference.path, opened.checkpoints[referenceIndex], entry),
                                                inputs: inputs, paths: contributing.map(\.path), checkpoints: opened.checkpoints,
                                                vocabulary: vocabulary) {
                        inputs = mapped.inputs
                        baseRows = mapped.baseRows
                        shape = mapped.shape
                    }
                } catch {
                    problems.append(error.description)
                    return
                }
            }
            var job = MergeJob(name: outputName, kind: .merge, shape: shape, outputDType: outputDType,
                               template: entry, templateCheckpoint: referenceIndex, inputs: inputs,
                               parameters: parameters, baseRows: baseRows)
            job.computeType = plan.computeType(template: entry.dtype, inputs: inputs.map(\.tensor.dtype))
            jobs.append(job)
            jobSlice.append(k)
        }

        // Tensors outside the layers, in the template's order: embeddings first, the rest after the layers.
        let outside = template.tensors.filter { LayerPosition.layer(of: $0.name) == nil }.map(\.name)
        let leading = outside.filter(isEmbedding)
        let trailing = outside.filter { !isEmbedding($0) }
        for name in leading { addJob(0, outputName: name, t: 0) { _ in name } }

        // Each checkpoint's layer tensors by layer number, in file order.
        var byLayer: [Int: [Int: [TensorEntry]]] = [:]
        var outputLayer = 0
        for (k, slice) in slices.enumerated() {
            let reference = reference(of: slice)
            let referenceIndex = opened.indexByPath[reference.path]!
            if byLayer[referenceIndex] == nil {
                var layers: [Int: [TensorEntry]] = [:]
                for tensor in opened.checkpoints[referenceIndex].tensors {
                    if let layer = LayerPosition.layer(of: tensor.name) { layers[layer, default: []].append(tensor) }
                }
                byLayer[referenceIndex] = layers
            }
            let n = slice.layerCount
            for i in 0..<n {
                let t = n > 1 ? Double(i) / Double(n - 1) : 1
                let layer = reference.layerRange.lowerBound + i
                // A layer number is only as large as the file's tensors make it: stop at
                // the first missing layer rather than step through a range of absent ones.
                guard let tensors = byLayer[referenceIndex]?[layer] else {
                    problems.append("slice \(k + 1): layer \(layer) of \(reference.path) has no tensors")
                    break
                }
                for tensor in tensors {
                    let outputName = LayerPosition.name(tensor.name, withLayer: outputLayer)
                    addJob(k, outputName: outputName, t: t) { source in
                        LayerPosition.name(tensor.name, withLayer: source.layerRange.lowerBound + i)
                    }
                }
                outputLayer += 1
            }
        }
        for name in trailing { addJob(slices.count - 1, outputName: name, t: 0) { _ in name } }

        if !problems.isEmpty { throw .incompatibleInputs(base: templatePath, problems: problems) }
        // The template's tensor order for the names it has (so full-range slices write
        // what `models` writes), then the layers past its own in stacking order.
        var templateOrder: [String: Int] = [:]
        for (i, t) in template.tensors.enumerated() { templateOrder[t.name] = i }
        let order = jobs.indices.sorted { a, b in
            (templateOrder[jobs[a].name] ?? Int.max, a) < (templateOrder[jobs[b].name] ?? Int.max, b)
        }
        jobs = order.map { jobs[$0] }
        jobSlice = order.map { jobSlice[$0] }
        // Each job's values are checked against its own slice's models.
        for (j, k) in zip(jobs, jobSlice) where j.kind == .merge { try kernel.checkResolved(j, plan: plan.plan(for: slices[k])) }
        if plan.trim == .global { throw .badPlan("--trim global is not available with slices") }
        return PreparedMerge(plan: plan, checkpoints: opened.checkpoints, jobs: jobs, warnings: warnings,
                             outputLayerCount: outputLayer, outputTokenizer: vocabulary?.output)
    }

    /// Token embeddings, which precede the layers.
    private static func isEmbedding(_ name: String) -> Bool {
        name.contains("embed_tokens") || name.contains("wte") || name.hasPrefix("token_embd")
    }
}
