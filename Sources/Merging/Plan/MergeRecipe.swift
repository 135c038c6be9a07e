import Checkpoints
import Foundation
import Yams

/// mergekit's YAML recipe format: reading it into a `MergePlan` and writing a plan back.
///
/// Accepted keys: `models` (each `model` and optional `parameters`) or `slices` (each
/// `sources` of `model`, `layer_range` and optional `parameters`, and the slice's own
/// `parameters`), or `modules` (the one module `default`, holding `models` or `slices`
/// and `parameters`), `base_model`, `merge_method`, `parameters`, `dtype` (the compute
/// type), `out_dtype`, `tokenizer_source` or `tokenizer`, `chat_template`, and Claire's
/// own `seed`. Anything else is an error, so a misspelt key never silently changes a merge.
public enum MergeRecipe {
    static let topLevelKeys = ["models", "slices", "modules", "base_model", "merge_method", "parameters", "dtype", "out_dtype",
                               "tokenizer_source", "tokenizer", "chat_template", "seed"]
    /// Parameters that are switches, written as true/false.
    static let flagParameters: Set<String> = ["normalize", "filter_wise", "int8_mask"]
    /// Global keys that configure the merge rather than weigh tensors.
    static let optionKeys: Set<String> = ["rescale", "consensus", "trim"]

    /// The most values a recipe's parameters may expand to (every number of every
    /// gradient and filter list, counted once per use of a YAML alias).
    public static let maximumParameterValues = 100_000

    /// Reads and parses the recipe at `path`, returning the plan and the recipe's text.
    /// Model names that are hub IDs (`org/name[@revision]`) and no local path are
    /// replaced by their snapshot in the hub cache `locator` searches.
    public static func load(_ path: String, locator: ModelLocator = ModelLocator()) throws(MergeError)
        -> (plan: MergePlan, text: String)
    {
        let bytes: [UInt8]
        do {
            bytes = try InputFile.readAll(path, cap: InputFile.maximumRecipeSize, what: "a recipe")
        } catch {
            guard case .io(_, let problem) = error else { throw .checkpoint(error) }
            throw .recipe(file: path, problem: "cannot read recipe: \(problem)")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw .recipe(file: path, problem: "not valid UTF-8")
        }
        var plan = try parse(text, file: path)
        do {
            if let base = plan.base { plan.base = try locator.locate(base) }
            for i in plan.models.indices { plan.models[i].path = try locator.locate(plan.models[i].path) }
            for k in plan.slices?.indices ?? 0..<0 {
                for j in plan.slices![k].sources.indices {
                    plan.slices![k].sources[j].path = try locator.locate(plan.slices![k].sources[j].path)
                }
            }
            if var tokenizer = plan.tokenizer {
                var located: [String: String] = [:]
                for name in tokenizer.modelPaths { located[name] = try locator.locate(name) }
                tokenizer.mapPaths { located[$0] ?? $0 }
                plan.tokenizer = tokenizer
            }
        } catch {
            throw .recipe(file: path, problem: error.description)
        }
        return (plan, text)
    }

    /// Parses recipe text; `file` names it in messages.
    public static func parse(_ text: String, file: String) throws(MergeError) -> MergePlan {
        var reader = RecipeReader(file: file)
        return try reader.plan(text)
    }

    /// A Yams error as a short message: where and what, without the snippet of the
    /// offending line Yams appends (a recipe line may be megabytes long).
    static func yamlProblem(_ error: any Error) -> String {
        guard let error = error as? YamlError else { return "\(error)" }
        func place(_ context: YamlError.Context?, _ problem: String, _ mark: Mark) -> String {
            var text = "line \(mark.line), column \(mark.column): \(problem)"
            if let context { text += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))" }
            return text
        }
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            return place(context, problem, mark)
        case .reader(let problem, let offset, _, _):
            return offset.map { "\(problem) at byte \($0)" } ?? problem
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.sorted().map { "'\($0)'" }.joined(separator: ", ")
            return "line \(context.mark.line): keys given twice in one mapping: \(keys)"
        default:
            return String(describing: error).split(separator: "\n").first.map(String.init) ?? "unreadable"
        }
    }

    /// Output element types by recipe or flag name (`bfloat16`, `bf16`, `BF16`, …): the
    /// compute types' names but Float64's, a type merges do not write.
    public static func outputDType(named name: String) -> DType? {
        guard let type = ComputeType(recipeName: name), type != .f64 else { return nil }
        return type.dtype
    }
}

/// Reading one recipe's YAML into a plan: every message names the recipe's file (and the
/// line of the node at fault), and the values its parameters expand to are counted.
struct RecipeReader {
    let file: String
    /// Values left before the recipe is refused; each scalar, list and entry spends one,
    /// so aliases nested inside aliases cannot expand without bound.
    private var budget = MergeRecipe.maximumParameterValues

    init(file: String) {
        self.file = file
    }

    /// A problem with the recipe, at `node`'s line when it has one.
    func problem(_ text: String, at node: Node? = nil) -> MergeError {
        .recipe(file: file, problem: text + (node?.mark.map { " (line \($0.line))" } ?? ""))
    }

    /// The entries of `mapping` by key; a key not among `keys` is refused with the
    /// message `unknown` makes of it.
    func fields(of mapping: Node.Mapping, keys: [String], unknown: (String) -> String) throws(MergeError) -> [String: Node] {
        var fields: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.string, keys.contains(key) else { throw problem(unknown(keyNode.string ?? "?"), at: keyNode) }
            fields[key] = value
        }
        return fields
    }

    /// Spends one value of the budget, failing with `exceeded` when none is left.
    private mutating func spend(_ exceeded: String) throws(MergeError) {
        budget -= 1
        guard budget >= 0 else { throw problem(exceeded) }
    }

    private static let parametersExceeded =
        "parameters expand to more than \(MergeRecipe.maximumParameterValues) values (through YAML aliases?)"

    /// The plan of recipe text.
    mutating func plan(_ text: String) throws(MergeError) -> MergePlan {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw problem("not valid YAML: \(MergeRecipe.yamlProblem(error))")
        }
        guard let root, let top = root.mapping else {
            throw problem("a recipe is a mapping with merge_method, base_model and models")
        }
        var fields: [String: Node] = [:]
        for (keyNode, value) in top {
            guard let key = keyNode.string else { throw problem("keys must be strings") }
            guard MergeRecipe.topLevelKeys.contains(key) else {
                let hint = closest(to: key, among: MergeRecipe.topLevelKeys).map { " (did you mean '\($0)'?)" } ?? ""
                throw problem("unknown key '\(key)'\(hint)", at: keyNode)
            }
            fields[key] = value
        }
        // `modules` names each module of the architecture; the Llama family has one,
        // `default`, whose `models` or `slices` are the recipe's.
        var moduleParameters: [String: ParameterValue] = [:]
        if let node = fields["modules"] {
            guard fields["models"] == nil, fields["slices"] == nil else {
                throw problem("give one of 'models', 'slices' or 'modules'")
            }
            let module = try defaultModule(node)
            fields["models"] = module["models"]
            fields["slices"] = module["slices"]
            if let parameters = module["parameters"] {
                moduleParameters = try self.parameters(parameters, allowOptions: false).values
            }
        }
        guard let methodName = fields["merge_method"]?.string else { throw problem("missing 'merge_method'") }
        var plan = MergePlan(method: try MergeMethod.named(methodName), base: fields["base_model"]?.string, models: [])
        if let node = fields["base_model"], node.string == nil { throw problem("'base_model' must be a path", at: node) }

        if let node = fields["slices"] {
            guard fields["models"] == nil else { throw problem("give either 'models' or 'slices', not both") }
            let slices = try slices(node)
            plan.slices = slices
            for source in slices.flatMap(\.sources) where !plan.models.contains(where: { $0.path == source.path }) {
                plan.models.append(ModelSpec(path: source.path))
            }
        }
        guard let modelList = fields["models"]?.sequence ?? (plan.slices != nil ? [] : nil) else {
            throw problem("missing 'models' (a list of {model, parameters}) or 'slices'")
        }
        for entry in modelList { plan.models.append(try model(entry)) }

        if let node = fields["parameters"] {
            let parsed = try parameters(node, allowOptions: true)
            plan.parameters = parsed.values
            for (key, valueNode) in parsed.options { try applyOption(key, valueNode, to: &plan) }
        }
        for (name, value) in moduleParameters {
            plan.parameters[name] = value.layered(over: plan.parameters[name])
        }
        // `dtype` is the compute type (without it, each tensor's inputs' type, as in
        // mergekit); it also names the output type when `out_dtype` is absent.
        plan.computeType = nil
        for key in ["dtype", "out_dtype"] {
            guard let node = fields[key] else { continue }
            guard let name = node.string, let type = ComputeType(recipeName: name) else {
                throw problem("unknown \(key) '\(node.string ?? "?")' (float32, float16, bfloat16 or float64)", at: node)
            }
            if key == "dtype" { plan.computeType = type }
            plan.outputDType = type.dtype
        }
        if let node = fields["tokenizer_source"] {
            guard fields["tokenizer"] == nil else { throw problem("give either 'tokenizer_source' or 'tokenizer', not both") }
            plan.tokenizer = TokenizerRecipe(source: try tokenizerSource(node))
        }
        if let node = fields["tokenizer"] { plan.tokenizer = try tokenizerSection(node) }
        if let node = fields["chat_template"] {
            guard let value = node.string, let template = ChatTemplate.template(for: value) else {
                throw problem("'chat_template' must be \(ChatTemplate.names.joined(separator: ", ")) or a Jinja template", at: node)
            }
            plan.chatTemplate = template
        }
        if let node = fields["seed"] {
            guard let seed = node.int, seed >= 0 else { throw problem("'seed' must be a non-negative integer", at: node) }
            plan.seed = UInt64(seed)
        }
        return plan
    }

    /// One entry of `models`: `model` and optional `parameters`.
    private mutating func model(_ entry: Node) throws(MergeError) -> ModelSpec {
        guard let mapping = entry.mapping else { throw problem("each entry of 'models' must be a mapping with 'model'", at: entry) }
        let fields = try fields(of: mapping, keys: ["model", "parameters"]) {
            "unknown key '\($0)' in a model entry (expected model, parameters)"
        }
        if let node = fields["model"], node.string == nil { throw problem("'model' must be a path", at: node) }
        guard let path = fields["model"]?.string, !path.isEmpty else { throw problem("a model entry has no 'model'", at: entry) }
        var spec = ModelSpec(path: path)
        if let node = fields["parameters"] { spec.parameters = try parameters(node, allowOptions: false).values }
        return spec
    }

    /// The one module of a `modules` mapping, `default`, as its keys (`models` or
    /// `slices`, and `parameters`).
    private func defaultModule(_ node: Node) throws(MergeError) -> [String: Node] {
        guard let mapping = node.mapping, !mapping.isEmpty else {
            throw problem("'modules' must be a mapping of module names to {models or slices, parameters}", at: node)
        }
        _ = try fields(of: mapping, keys: ["default"]) {
            "unknown module '\($0)': Llama, Mistral and Qwen2 models have one module, 'default'"
        }
        guard let module = mapping.first?.value, let entries = module.mapping else {
            throw problem("module 'default' must be a mapping with 'models' or 'slices'", at: node)
        }
        let fields = try fields(of: entries, keys: ["models", "slices", "parameters"]) {
            "unknown key '\($0)' in module 'default' (expected models or slices, and parameters)"
        }
        guard (fields["models"] == nil) != (fields["slices"] == nil) else {
            throw problem("module 'default' needs either 'models' or 'slices'", at: module)
        }
        return fields
    }

    /// The `slices` list: each a mapping with `sources` (each `model`, `layer_range`
    /// [first, end) and optional `parameters`) and optional `parameters`.
    private mutating func slices(_ node: Node) throws(MergeError) -> [OutputSlice] {
        guard let list = node.sequence, !list.isEmpty else { throw problem("'slices' must be a list of {sources, parameters}", at: node) }
        var slices: [OutputSlice] = []
        for item in list {
            guard let mapping = item.mapping else { throw problem("each slice must be a mapping with 'sources'", at: item) }
            let fields = try fields(of: mapping, keys: ["sources", "parameters"]) {
                "unknown key '\($0)' in a slice (expected sources, parameters)"
            }
            guard let value = fields["sources"] else { throw problem("a slice has no 'sources'", at: item) }
            guard let sources = value.sequence, !sources.isEmpty else {
                throw problem("'sources' must be a list of {model, layer_range}", at: value)
            }
            var slice = OutputSlice(sources: [])
            for sourceNode in sources { slice.sources.append(try source(sourceNode)) }
            if let node = fields["parameters"] { slice.parameters = try parameters(node, allowOptions: false).values }
            slices.append(slice)
        }
        return slices
    }

    private mutating func source(_ node: Node) throws(MergeError) -> SliceSource {
        try spend("slices expand to more than \(MergeRecipe.maximumParameterValues) sources and values (through YAML aliases?)")
        guard let mapping = node.mapping else { throw problem("each source must be a mapping with 'model' and 'layer_range'", at: node) }
        let fields = try fields(of: mapping, keys: ["model", "layer_range", "parameters"]) {
            "unknown key '\($0)' in a source (expected model, layer_range, parameters)"
        }
        guard let modelNode = fields["model"] else { throw problem("a source has no 'model'", at: node) }
        guard let path = modelNode.string, !path.isEmpty else { throw problem("'model' must be a path", at: modelNode) }
        guard let value = fields["layer_range"] else { throw problem("a source has no 'layer_range'", at: node) }
        guard let pair = value.sequence, pair.count == 2, let first = pair[0].int, let end = pair[1].int, first >= 0, first < end else {
            throw problem("'layer_range' must be [first, end] with 0 ≤ first < end", at: value)
        }
        var source = SliceSource(path: path, layerRange: first..<end)
        if let node = fields["parameters"] { source.parameters = try parameters(node, allowOptions: false).values }
        return source
    }

    /// A parameters mapping: weighing values, and (globally) the option keys kept as nodes.
    private mutating func parameters(_ node: Node, allowOptions: Bool) throws(MergeError)
        -> (values: [String: ParameterValue], options: [(String, Node)])
    {
        guard let mapping = node.mapping else { throw problem("'parameters' must be a mapping", at: node) }
        var values: [String: ParameterValue] = [:]
        var options: [(String, Node)] = []
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { throw problem("parameter names must be strings", at: keyNode) }
            if allowOptions, MergeRecipe.optionKeys.contains(key) {
                options.append((key, value))
                continue
            }
            values[key] = try parameterValue(value, name: key)
        }
        return (values, options)
    }

    /// One parameter's value: a number, a gradient, or a list of `{filter, value}`.
    private mutating func parameterValue(_ node: Node, name: String) throws(MergeError) -> ParameterValue {
        try spend(Self.parametersExceeded)
        if let scalar = node.scalar {
            if let number = node.float ?? node.int.map(Double.init) { return .number(number) }
            if let flag = node.bool { return .number(flag ? 1 : 0) }
            throw problem("parameter '\(name)': '\(scalar.string)' is not a number", at: node)
        }
        guard let items = node.sequence, !items.isEmpty else {
            throw problem("parameter '\(name)' must be a number, a list of numbers or a list of {filter, value}", at: node)
        }
        if items.allSatisfy({ $0.mapping != nil }) {
            var entries: [FilteredParameter] = []
            for item in items {
                let fields = try fields(of: item.mapping!, keys: ["filter", "value"]) {
                    "parameter '\(name)': unknown key '\($0)' (expected filter, value)"
                }
                if let filter = fields["filter"], filter.string == nil {
                    throw problem("parameter '\(name)': 'filter' must be a string", at: filter)
                }
                guard let value = fields["value"] else { throw problem("parameter '\(name)': an entry has no 'value'", at: item) }
                entries.append(FilteredParameter(filter: fields["filter"]?.string, value: try parameterValue(value, name: name)))
            }
            return .filtered(entries)
        }
        var numbers: [Double] = []
        for item in items {
            try spend(Self.parametersExceeded)
            guard let number = item.float ?? item.int.map(Double.init) else {
                throw problem("parameter '\(name)': gradient entries must be numbers", at: item)
            }
            numbers.append(number)
        }
        return .gradient(numbers)
    }

    /// A global option kept out of the parameters: `rescale`, `consensus` or `trim`.
    private func applyOption(_ key: String, _ node: Node, to plan: inout MergePlan) throws(MergeError) {
        switch key {
        case "rescale":
            if let flag = node.bool {
                plan.rescale = flag ? .l1 : Rescale.none
            } else if let name = node.string, let rescale = Rescale(rawValue: name) {
                plan.rescale = rescale
            } else {
                throw problem("'rescale' must be true, false, l1, inverse or none", at: node)
            }
        case "consensus":
            guard let name = node.string, let consensus = Consensus(rawValue: name) else {
                throw problem("'consensus' must be sum or count", at: node)
            }
            plan.consensus = consensus
        default:
            guard let name = node.string, let scope = TrimScope(rawValue: name) else { throw problem("'trim' must be tensor or global", at: node) }
            plan.trim = scope
        }
    }
}
