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
        var budget = maximumParameterValues
        return try parse(text, file: file, budget: &budget)
    }

    private static func parse(_ text: String, file: String, budget: inout Int) throws(MergeError) -> MergePlan {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw .recipe(file: file, problem: "not valid YAML: \(yamlProblem(error))")
        }
        guard let root, let top = root.mapping else {
            throw .recipe(file: file, problem: "a recipe is a mapping with merge_method, base_model and models")
        }
        var fields: [String: Node] = [:]
        for (keyNode, value) in top {
            guard let key = keyNode.string else { throw .recipe(file: file, problem: "keys must be strings") }
            guard topLevelKeys.contains(key) else {
                let hint = closest(to: key, among: topLevelKeys).map { " (did you mean '\($0)'?)" } ?? ""
                throw .recipe(file: file, problem: "unknown key '\(key)'\(hint)\(at(keyNode))")
            }
            fields[key] = value
        }
        // `modules` names each module of the architecture; the Llama family has one,
        // `default`, whose `models` or `slices` are the recipe's.
        var moduleParameters: [String: ParameterValue] = [:]
        if let node = fields["modules"] {
            guard fields["models"] == nil, fields["slices"] == nil else {
                throw .recipe(file: file, problem: "give one of 'models', 'slices' or 'modules'")
            }
            let module = try defaultModule(node, file: file)
            fields["models"] = module["models"]
            fields["slices"] = module["slices"]
            if let parameters = module["parameters"] {
                moduleParameters = try self.parameters(parameters, file: file, allowOptions: false, budget: &budget).values
            }
        }
        guard let methodName = fields["merge_method"]?.string else {
            throw .recipe(file: file, problem: "missing 'merge_method'")
        }
        let method = try MergeMethod.named(methodName)
        var plan = MergePlan(method: method, base: fields["base_model"]?.string, models: [])
        if let node = fields["base_model"], node.string == nil {
            throw .recipe(file: file, problem: "'base_model' must be a path\(at(node))")
        }

        if let node = fields["slices"] {
            guard fields["models"] == nil else { throw .recipe(file: file, problem: "give either 'models' or 'slices', not both") }
            let slices = try slices(node, file: file, budget: &budget)
            plan.slices = slices
            for source in slices.flatMap(\.sources) where !plan.models.contains(where: { $0.path == source.path }) {
                plan.models.append(ModelSpec(path: source.path))
            }
        }
        guard let modelList = fields["models"]?.sequence ?? (plan.slices != nil ? [] : nil) else {
            throw .recipe(file: file, problem: "missing 'models' (a list of {model, parameters}) or 'slices'")
        }
        for entry in modelList {
            guard let mapping = entry.mapping else {
                throw .recipe(file: file, problem: "each entry of 'models' must be a mapping with 'model'\(at(entry))")
            }
            var spec = ModelSpec(path: "")
            for (keyNode, value) in mapping {
                switch keyNode.string {
                case "model":
                    guard let path = value.string else { throw .recipe(file: file, problem: "'model' must be a path\(at(value))") }
                    spec.path = path
                case "parameters":
                    spec.parameters = try parameters(value, file: file, allowOptions: false, budget: &budget).values
                default:
                    throw .recipe(file: file, problem: "unknown key '\(keyNode.string ?? "?")' in a model entry (expected model, parameters)\(at(keyNode))")
                }
            }
            guard !spec.path.isEmpty else { throw .recipe(file: file, problem: "a model entry has no 'model'\(at(entry))") }
            plan.models.append(spec)
        }

        if let node = fields["parameters"] {
            let parsed = try parameters(node, file: file, allowOptions: true, budget: &budget)
            plan.parameters = parsed.values
            for (key, valueNode) in parsed.options {
                try applyOption(key, valueNode, to: &plan, file: file)
            }
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
                throw .recipe(file: file, problem: "unknown \(key) '\(node.string ?? "?")' (float32, float16, bfloat16 or float64)\(at(node))")
            }
            if key == "dtype" { plan.computeType = type }
            plan.outputDType = type.dtype
        }
        if let node = fields["tokenizer_source"] {
            guard fields["tokenizer"] == nil else {
                throw .recipe(file: file, problem: "give either 'tokenizer_source' or 'tokenizer', not both")
            }
            plan.tokenizer = TokenizerRecipe(source: try tokenizerSource(node, file: file))
        }
        if let node = fields["tokenizer"] {
            plan.tokenizer = try tokenizerSection(node, file: file)
        }
        if let node = fields["chat_template"] {
            guard let value = node.string, let template = ChatTemplate.template(for: value) else {
                let names = ChatTemplate.names.joined(separator: ", ")
                throw .recipe(file: file, problem: "'chat_template' must be \(names) or a Jinja template\(at(node))")
            }
            plan.chatTemplate = template
        }
        if let node = fields["seed"] {
            guard let seed = node.int, seed >= 0 else { throw .recipe(file: file, problem: "'seed' must be a non-negative integer\(at(node))") }
            plan.seed = UInt64(seed)
        }
        return plan
    }

    /// The one module of a `modules` mapping, `default`, as its keys (`models` or
    /// `slices`, and `parameters`).
    private static func defaultModule(_ node: Node, file: String) throws(MergeError) -> [String: Node] {
        guard let mapping = node.mapping, !mapping.isEmpty else {
            throw .recipe(file: file, problem: "'modules' must be a mapping of module names to {models or slices, parameters}\(at(node))")
        }
        for (keyNode, _) in mapping where keyNode.string != "default" {
            throw .recipe(file: file, problem: "unknown module '\(keyNode.string ?? "?")': Llama, Mistral and Qwen2 models have one module, 'default'\(at(keyNode))")
        }
        guard let module = mapping.first?.value, let entries = module.mapping else {
            throw .recipe(file: file, problem: "module 'default' must be a mapping with 'models' or 'slices'\(at(node))")
        }
        var fields: [String: Node] = [:]
        for (keyNode, value) in entries {
            guard let key = keyNode.string, ["models", "slices", "parameters"].contains(key) else {
                throw .recipe(file: file, problem: "unknown key '\(keyNode.string ?? "?")' in module 'default' (expected models or slices, and parameters)\(at(keyNode))")
            }
            fields[key] = value
        }
        guard (fields["models"] == nil) != (fields["slices"] == nil) else {
            throw .recipe(file: file, problem: "module 'default' needs either 'models' or 'slices'\(at(module))")
        }
        return fields
    }

    /// The `slices` list: each a mapping with `sources` (each `model`, `layer_range`
    /// [first, end) and optional `parameters`) and optional `parameters`.
    private static func slices(_ node: Node, file: String, budget: inout Int) throws(MergeError) -> [OutputSlice] {
        guard let list = node.sequence, !list.isEmpty else {
            throw .recipe(file: file, problem: "'slices' must be a list of {sources, parameters}\(at(node))")
        }
        var slices: [OutputSlice] = []
        for item in list {
            guard let mapping = item.mapping else {
                throw .recipe(file: file, problem: "each slice must be a mapping with 'sources'\(at(item))")
            }
            var slice = OutputSlice(sources: [])
            var hasSources = false
            for (keyNode, value) in mapping {
                switch keyNode.string {
                case "sources":
                    guard let sources = value.sequence, !sources.isEmpty else {
                        throw .recipe(file: file, problem: "'sources' must be a list of {model, layer_range}\(at(value))")
                    }
                    hasSources = true
                    for sourceNode in sources { slice.sources.append(try source(sourceNode, file: file, budget: &budget)) }
                case "parameters":
                    slice.parameters = try parameters(value, file: file, allowOptions: false, budget: &budget).values
                default:
                    throw .recipe(file: file, problem: "unknown key '\(keyNode.string ?? "?")' in a slice (expected sources, parameters)\(at(keyNode))")
                }
            }
            guard hasSources else { throw .recipe(file: file, problem: "a slice has no 'sources'\(at(item))") }
            slices.append(slice)
        }
        return slices
    }

    private static func source(_ node: Node, file: String, budget: inout Int) throws(MergeError) -> SliceSource {
        budget -= 1
        guard budget >= 0 else {
            throw .recipe(file: file, problem: "slices expand to more than \(maximumParameterValues) sources and values (through YAML aliases?)")
        }
        guard let mapping = node.mapping else {
            throw .recipe(file: file, problem: "each source must be a mapping with 'model' and 'layer_range'\(at(node))")
        }
        var path: String?
        var range: Range<Int>?
        var parameters: [String: ParameterValue] = [:]
        for (keyNode, value) in mapping {
            switch keyNode.string {
            case "model":
                guard let p = value.string, !p.isEmpty else { throw .recipe(file: file, problem: "'model' must be a path\(at(value))") }
                path = p
            case "layer_range":
                guard let pair = value.sequence, pair.count == 2, let first = pair[0].int, let end = pair[1].int,
                      first >= 0, first < end else {
                    throw .recipe(file: file, problem: "'layer_range' must be [first, end] with 0 ≤ first < end\(at(value))")
                }
                range = first..<end
            case "parameters":
                parameters = try self.parameters(value, file: file, allowOptions: false, budget: &budget).values
            default:
                throw .recipe(file: file, problem: "unknown key '\(keyNode.string ?? "?")' in a source (expected model, layer_range, parameters)\(at(keyNode))")
            }
        }
        guard let path else { throw .recipe(file: file, problem: "a source has no 'model'\(at(node))") }
        guard let range else { throw .recipe(file: file, problem: "a source has no 'layer_range'\(at(node))") }
        return SliceSource(path: path, layerRange: range, parameters: parameters)
    }

    /// A parameters mapping: weighing values, and (globally) the option keys kept as nodes.
    private static func parameters(_ node: Node, file: String, allowOptions: Bool, budget: inout Int) throws(MergeError)
        -> (values: [String: ParameterValue], options: [(String, Node)])
    {
        guard let mapping = node.mapping else { throw .recipe(file: file, problem: "'parameters' must be a mapping\(at(node))") }
        var values: [String: ParameterValue] = [:]
        var options: [(String, Node)] = []
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { throw .recipe(file: file, problem: "parameter names must be strings\(at(keyNode))") }
            if allowOptions, optionKeys.contains(key) {
                options.append((key, value))
                continue
            }
            values[key] = try parameterValue(value, name: key, file: file, budget: &budget)
        }
        return (values, options)
    }

    /// Converts one parameter's node; each scalar, list and entry spends one unit of
    /// `budget`, so aliases nested inside aliases cannot expand without bound.
    private static func parameterValue(_ node: Node, name: String, file: String, budget: inout Int) throws(MergeError)
        -> ParameterValue
    {
        budget -= 1
        guard budget >= 0 else {
            throw .recipe(file: file, problem: "parameters expand to more than \(maximumParameterValues) values (through YAML aliases?)")
        }
        if let scalar = node.scalar {
            if let number = node.float ?? node.int.map(Double.init) { return .number(number) }
            if let flag = node.bool { return .number(flag ? 1 : 0) }
            throw .recipe(file: file, problem: "parameter '\(name)': '\(scalar.string)' is not a number\(at(node))")
        }
        guard let items = node.sequence, !items.isEmpty else {
            throw .recipe(file: file, problem: "parameter '\(name)' must be a number, a list of numbers or a list of {filter, value}\(at(node))")
        }
        if items.allSatisfy({ $0.mapping != nil }) {
            var entries: [FilteredParameter] = []
            for item in items {
                var entry = FilteredParameter(filter: nil, value: .number(0))
                var hasValue = false
                for (keyNode, value) in item.mapping! {
                    switch keyNode.string {
                    case "filter":
                        guard let filter = value.string else { throw .recipe(file: file, problem: "parameter '\(name)': 'filter' must be a string\(at(value))") }
                        entry.filter = filter
                    case "value":
                        entry.value = try parameterValue(value, name: name, file: file, budget: &budget)
                        hasValue = true
                    default:
                        throw .recipe(file: file, problem: "parameter '\(name)': unknown key '\(keyNode.string ?? "?")' (expected filter, value)\(at(keyNode))")
                    }
                }
                guard hasValue else { throw .recipe(file: file, problem: "parameter '\(name)': an entry has no 'value'\(at(item))") }
                entries.append(entry)
            }
            return .filtered(entries)
        }
        var numbers: [Double] = []
        for item in items {
            budget -= 1
            guard budget >= 0 else {
                throw .recipe(file: file, problem: "parameters expand to more than \(maximumParameterValues) values (through YAML aliases?)")
            }
            guard let number = item.float ?? item.int.map(Double.init) else {
                throw .recipe(file: file, problem: "parameter '\(name)': gradient entries must be numbers\(at(item))")
            }
            numbers.append(number)
        }
        return .gradient(numbers)
    }

    private static func applyOption(_ key: String, _ node: Node, to plan: inout MergePlan, file: String) throws(MergeError) {
        switch key {
        case "rescale":
            if let flag = node.bool {
                plan.rescale = flag ? .l1 : Rescale.none
            } else if let name = node.string, let rescale = Rescale(rawValue: name) {
                plan.rescale = rescale
            } else {
                throw .recipe(file: file, problem: "'rescale' must be true, false, l1, inverse or none\(at(node))")
            }
        case "consensus":
            guard let name = node.string, let consensus = Consensus(rawValue: name) else {
                throw .recipe(file: file, problem: "'consensus' must be sum or count\(at(node))")
            }
            plan.consensus = consensus
        default:
            guard let name = node.string, let scope = TrimScope(rawValue: name) else {
                throw .recipe(file: file, problem: "'trim' must be tensor or global\(at(node))")
            }
            plan.trim = scope
        }
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

    private static func at(_ node: Node) -> String {
        guard let mark = node.mark else { return "" }
        return " (line \(mark.line))"
    }

    /// Output element types by recipe or flag name (`bfloat16`, `bf16`, `BF16`, …).
    public static func outputDType(named name: String) -> DType? {
        switch name.lowercased() {
        case "float32", "fp32", "f32": return .f32
        case "float16", "fp16", "f16", "half": return .f16
        case "bfloat16", "bf16": return .bf16
        default: return nil
        }
    }
}
