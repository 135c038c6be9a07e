import Checkpoints

/// One input model of a merge and its own parameters.
public struct ModelSpec: Sendable, Equatable {
    /// A .safetensors file, a .gguf file or a model folder.
    public var path: String
    /// Per-model parameters (weight, density, gamma, epsilon, …); they override the global ones.
    public var parameters: [String: ParameterValue]

    /// A model with its own parameters.
    public init(path: String, parameters: [String: ParameterValue] = [:]) {
        self.path = path
        self.parameters = parameters
    }
}

/// One model's layers `layerRange` feeding one output slice, with the model's own parameters there.
public struct SliceSource: Sendable, Equatable {
    /// A model folder or .safetensors file.
    public var path: String
    /// Source layers [lower, upper).
    public var layerRange: Range<Int>
    /// Parameters for this model in this slice; they override the slice's and the global ones.
    public var parameters: [String: ParameterValue]

    public init(path: String, layerRange: Range<Int>, parameters: [String: ParameterValue] = [:]) {
        self.path = path
        self.layerRange = layerRange
        self.parameters = parameters
    }
}

/// A run of output layers merged from sources with equally many layers.
public struct OutputSlice: Sendable, Equatable {
    public var sources: [SliceSource]
    /// Parameters for every source of the slice; they override the global ones.
    public var parameters: [String: ParameterValue]

    public init(sources: [SliceSource], parameters: [String: ParameterValue] = [:]) {
        self.sources = sources
        self.parameters = parameters
    }

    /// Output layers the slice makes (the first source's range; all have the same length).
    public var layerCount: Int { sources.first?.layerRange.count ?? 0 }
}

/// Whether the magnitude trim ranks each tensor alone or the whole model at once.
public enum TrimScope: String, Sendable, CaseIterable {
    /// Per tensor and per model, as mergekit does.
    case tensor
    /// Over the whole model (the TIES paper), found by a streaming first pass.
    case global
}

/// What to merge and how: built from command-line flags or a mergekit YAML recipe.
public struct MergePlan: Sendable, Equatable {
    /// The merge method.
    public var method: MergeMethod
    /// The base model θ₀ (required by the methods whose row says `needsBase`).
    public var base: String?
    /// The models, in recipe order (for `linear`, all of them contribute).
    public var models: [ModelSpec]
    /// Global parameters; the defaults for per-model ones.
    public var parameters: [String: ParameterValue]
    /// Rescale after sparsifying; nil takes the method's default.
    public var rescale: Rescale?
    /// Sign election for the methods that have one; nil takes the method's default.
    public var consensus: Consensus?
    /// Scope of the magnitude trim.
    public var trim: TrimScope
    /// Seed of the random sparsifiers.
    public var seed: UInt64
    /// Output element type; nil keeps the base's.
    public var outputDType: DType?
    /// The output tokenizer (`tokenizer_source` or `tokenizer:`); nil: the base's files
    /// are copied and every model must have the base's vocabulary rows.
    public var tokenizer: TokenizerRecipe?
    /// The model whose tokenizer the output gets, when the recipe names one.
    public var tokenizerSource: String? {
        if case .model(let path)? = tokenizer?.source { return path }
        return nil
    }
    /// The type the arithmetic rounds to (a recipe's `dtype`); nil: each tensor's inputs'
    /// promoted type, as mergekit computes a recipe without `dtype`. Float32 on the
    /// command line.
    public var computeType: ComputeType? = .f32
    /// The chat template written into the output's tokenizer_config.json (nil: the copied one).
    public var chatTemplate: String?
    /// Output layers stacked from slices of the models (nil: every model whole). `models`
    /// then lists each model a slice names once, without parameters.
    public var slices: [OutputSlice]?

    /// A plan; every option defaults to the method's own default.
    public init(
        method: MergeMethod, base: String?, models: [ModelSpec], parameters: [String: ParameterValue] = [:],
        rescale: Rescale? = nil, consensus: Consensus? = nil, trim: TrimScope = .tensor, seed: UInt64 = 0,
        outputDType: DType? = nil, tokenizerSource: String? = nil
    ) {
        self.method = method
        self.base = base
        self.models = models
        self.parameters = parameters
        self.rescale = rescale
        self.consensus = consensus
        self.trim = trim
        self.seed = seed
        self.outputDType = outputDType
        self.tokenizer = tokenizerSource.map { TokenizerRecipe(source: .model($0)) }
    }

    /// The rescale in effect.
    public var effectiveRescale: Rescale { method.sparsifier == nil ? .none : (rescale ?? method.defaultRescale) }

    /// The compute type of a tensor whose base is `template` and inputs `inputs`.
    public func computeType(template: DType, inputs: [DType]) -> ComputeType {
        computeType ?? .promoted([template] + inputs)
    }

    /// The sign election in effect.
    public var effectiveConsensus: Consensus? {
        guard let elected = method.defaultConsensus else { return nil }
        return consensus ?? elected
    }

    /// The models that contribute besides the base (listing the base among the models,
    /// as mergekit recipes do, adds nothing); for methods that do not take the base as
    /// their reference, every listed model, and for `karcher` the base as well.
    public var contributingModels: [ModelSpec] {
        guard usesBaseAsReference, let base else {
            if method.optionalBase == .input, let base, !models.contains(where: { $0.path == base }) {
                return models + [ModelSpec(path: base)]
            }
            return models
        }
        return models.filter { $0.path != base }
    }

    /// True when the models are taken relative to the base: for every method that
    /// needs one, and for those whose optional base is given (`OptionalBase.reference`).
    public var usesBaseAsReference: Bool { method.needsBase || (base != nil && method.optionalBase == .reference) }

    /// Checks what can be checked without opening any file: model counts, known
    /// parameter names and values that would make the merge produce NaN.
    public func check() throws(MergeError) {
        if let slices {
            guard !slices.isEmpty else { throw .badPlan("'slices' lists no slice") }
            for (k, slice) in slices.enumerated() {
                guard let first = slice.sources.first else { throw .badPlan("slice \(k + 1) has no sources") }
                for source in slice.sources where source.layerRange.count != first.layerRange.count {
                    throw .badPlan("slice \(k + 1): every source must have as many layers (\(first.path) has \(first.layerRange.count), \(source.path) \(source.layerRange.count))")
                }
                if usesBaseAsReference, let base, !slice.sources.contains(where: { $0.path == base }) {
                    throw .badPlan("slice \(k + 1): \(method) needs the base model \(base) among the slice's sources")
                }
                do {
                    try plan(for: slice).check()
                } catch {
                    guard case .badPlan(let problem) = error else { throw error }
                    throw .badPlan("slice \(k + 1): \(problem)")
                }
            }
            return
        }
        if method.needsBase && base == nil { throw .badPlan("\(method) needs a base model (--base or base_model)") }
        try method.entry.kernel.check(self)
        // Every number a value can produce is checked against `ParameterRange` (gradients
        // interpolate between their numbers, so checking the numbers checks every value).
        // A parameter another method reads is ignored with a warning (`unusedParameters`),
        // as mergekit ignores it; a name no method reads is an error, most likely a typo.
        let owned = [(parameters, "")] + models.map { ($0.parameters, " (model \($0.path))") }
        for (values, owner) in owned {
            for (name, value) in values {
                guard method.parameterNames.contains(name) else {
                    if Self.anyMethodReads(name) { continue }
                    throw .badParameter(name: name, problem: "\(method) has no such parameter\(owner)")
                }
                for v in value.allNumbers {
                    if let problem = ParameterRange.problem(name: name, value: v) { throw .badParameter(name: name, problem: problem) }
                }
            }
        }
    }

    /// The parameters, global or per model, that other methods read but this one does
    /// not: the merge ignores them (so does mergekit). Sorted by name.
    public var unusedParameters: [String] {
        if let slices { return Set(slices.flatMap { plan(for: $0).unusedParameters }).sorted() }
        let known = method.parameterNames
        var names = Set(parameters.keys)
        for model in models { names.formUnion(model.parameters.keys) }
        return names.filter { !known.contains($0) && Self.anyMethodReads($0) }.sorted()
    }

    /// The plan of one slice as a `models` plan: its sources as models, each with the
    /// slice's parameters under its own, and the slice's parameters over the global ones.
    public func plan(for slice: OutputSlice) -> MergePlan {
        var sub = self
        sub.slices = nil
        sub.models = slice.sources.map { source in
            ModelSpec(path: source.path, parameters: slice.parameters.merging(source.parameters) { _, own in own })
        }
        sub.parameters = parameters.merging(slice.parameters) { _, own in own }
        return sub
    }

    private static func anyMethodReads(_ name: String) -> Bool {
        MergeMethod.allCases.contains { $0.parameterNames.contains(name) }
    }
}
