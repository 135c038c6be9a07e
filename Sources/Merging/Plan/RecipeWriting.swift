import Checkpoints
import Foundation
import Yams

/// Writing a plan back as a recipe that mergekit 0.1.5 runs and Claire reads.
extension MergeRecipe {
    /// The plan as a mergekit recipe (what `fuse` stores beside its output). mergekit
    /// 0.1.5 validates and runs it; a leading comment names the options it would ignore
    /// or refuse, which Claire reads back.
    public static func yaml(for plan: MergePlan) -> String {
        var pairs: [(Node, Node)] = [("merge_method", Node(plan.method.rawValue))]
        if let base = plan.base { pairs.append(("base_model", Node(base))) }
        var models: [Node] = []
        for model in modelsForMergekit(plan) {
            var entry: [(Node, Node)] = [("model", Node(model.path))]
            if !model.parameters.isEmpty { entry.append(("parameters", node(for: model.parameters, options: []))) }
            models.append(Node.mapping(Node.Mapping(entry)))
        }
        pairs.append(("models", Node.sequence(Node.Sequence(models))))
        var options: [(String, String)] = []
        // mergekit's rescale is a switch: true is the l1 rescale.
        if let rescale = plan.rescale { options.append(("rescale", rescale == .l1 ? "true" : rescale == .none ? "false" : rescale.rawValue)) }
        if let consensus = plan.consensus { options.append(("consensus", consensus.rawValue)) }
        if plan.trim != .tensor { options.append(("trim", plan.trim.rawValue)) }
        if !plan.parameters.isEmpty || !options.isEmpty {
            pairs.append(("parameters", node(for: plan.parameters, options: options)))
        }
        // With an output type, the compute type is written too: without `dtype` mergekit
        // computes in the inputs' type. (`dtype` alone would also set the output type.)
        if let dtype = plan.outputDType {
            pairs.append(("dtype", Node(recipeName(of: (plan.computeType ?? .f32).dtype))))
            pairs.append(("out_dtype", Node(recipeName(of: dtype))))
        } else if let compute = plan.computeType, compute != .f32 {
            pairs.append(("dtype", Node(recipeName(of: compute.dtype))))
        }
        if let tokenizer = plan.tokenizer { pairs.append(tokenizerPair(tokenizer)) }
        if let template = plan.chatTemplate { pairs.append(("chat_template", Node(template))) }
        if plan.method.sparsifier == .random || plan.method.sparsifier == .dellaMagprune {
            pairs.append(("seed", Node(String(plan.seed))))
        }
        let body = (try? Yams.serialize(node: Node.mapping(Node.Mapping(pairs)), sortKeys: false)) ?? ""
        let notes = mergekitNotes(for: plan)
        guard !notes.isEmpty else { return body }
        return (["# For mergekit:"] + notes.map { "#   " + $0 }).joined(separator: "\n") + "\n" + body
    }

    /// `tokenizer_source: …`, or a `tokenizer:` section when tokens or padding are set.
    static func tokenizerPair(_ tokenizer: TokenizerRecipe) -> (Node, Node) {
        let source: Node
        switch tokenizer.source {
        case .base: source = "base"
        case .union: source = "union"
        case .model(let path): source = Node(path)
        }
        guard !tokenizer.tokens.isEmpty || tokenizer.padToMultipleOf != nil else { return ("tokenizer_source", source) }
        var section: [(Node, Node)] = [("source", source)]
        if !tokenizer.tokens.isEmpty {
            var tokens: [(Node, Node)] = []
            for (token, setting) in tokenizer.tokens {
                var entry: [(Node, Node)] = []
                switch setting.source {
                case .model(let path)?: entry.append(("source", Node(path)))
                case .zero?: entry.append(("source", Node.mapping(Node.Mapping([("kind", "zero")]))))
                case .modelToken(let model, let token, let id)?:
                    var fields: [(Node, Node)] = [("kind", "model_token"), ("model", Node(model))]
                    if let token { fields.append(("token", Node(token))) }
                    if let id { fields.append(("token_id", Node(String(id)))) }
                    entry.append(("source", Node.mapping(Node.Mapping(fields))))
                case nil: break
                }
                if setting.force { entry.append(("force", "true")) }
                tokens.append((Node(token), Node.mapping(Node.Mapping(entry))))
            }
            section.append(("tokens", Node.mapping(Node.Mapping(tokens))))
        }
        if let n = tokenizer.padToMultipleOf { section.append(("pad_to_multiple_of", Node(String(n)))) }
        return ("tokenizer", Node.mapping(Node.Mapping(section)))
    }

    /// The plan's models as written: mergekit's `linear` merges `base_model` as one more
    /// model (and requires its weight), while Claire's takes only the config from it, so
    /// a base not among the models is listed with weight 0 — the same sum in both.
    static func modelsForMergekit(_ plan: MergePlan) -> [ModelSpec] {
        guard plan.method == .linear, let base = plan.base, !plan.models.contains(where: { $0.path == base }) else {
            return plan.models
        }
        return plan.models + [ModelSpec(path: base, parameters: ["weight": .number(0)])]
    }

    /// What mergekit 0.1.5 would do differently with the recipe of `plan`, one line each.
    static func mergekitNotes(for plan: MergePlan) -> [String] {
        var notes: [String] = []
        if modelsForMergekit(plan).count != plan.models.count {
            notes.append("the base is listed with weight 0, as mergekit's linear merges base_model too")
        }
        if plan.rescale == .inverse, plan.method.sparsifier != nil {
            notes.append("rescale: inverse has no mergekit equivalent (mergekit refuses it; true is the l1 rescale)")
        }
        if plan.consensus == .count, plan.method.defaultConsensus != nil {
            notes.append("consensus: count is ignored by mergekit, whose \(plan.method) elects signs by sum")
        }
        if plan.trim == .global { notes.append("trim: global is ignored by mergekit, which trims each tensor alone") }
        if plan.method.sparsifier == .random || plan.method.sparsifier == .dellaMagprune {
            notes.append("seed is ignored by mergekit, which draws its own random masks (mergekit-yaml --random-seed)")
        }
        return notes
    }

    private static func node(for parameters: [String: ParameterValue], options: [(String, String)]) -> Node {
        var pairs: [(Node, Node)] = []
        for name in parameters.keys.sorted() {
            let value = parameters[name]!
            if flagParameters.contains(name), case .number(let v) = value {
                pairs.append((Node(name), Node(v != 0 ? "true" : "false")))
            } else {
                pairs.append((Node(name), node(for: value)))
            }
        }
        for (name, value) in options { pairs.append((Node(name), Node(value))) }
        return Node.mapping(Node.Mapping(pairs))
    }

    private static func node(for value: ParameterValue) -> Node {
        switch value {
        case .number(let v): return Node(formatNumber(v))
        case .gradient(let values):
            return Node.sequence(Node.Sequence(values.map { Node(formatNumber($0)) }, .implicit, .flow))
        case .filtered(let entries):
            return Node.sequence(Node.Sequence(entries.map { e in
                var pairs: [(Node, Node)] = []
                if let filter = e.filter { pairs.append(("filter", Node(filter))) }
                pairs.append(("value", node(for: e.value)))
                return Node.mapping(Node.Mapping(pairs))
            }))
        }
    }

    static func recipeName(of dtype: DType) -> String { dtype.torchName ?? dtype.rawValue }
}
