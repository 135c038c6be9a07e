/// How PEFT names the tensors of a LoRA adapter, and the base tensors they stand for.
///
/// An adapter saved by `save_pretrained` names each factor after the module it adapts,
/// under the prefix `base_model.model.`: `<module>.lora_A.weight` (r × in) and
/// `<module>.lora_B.weight` (out × r) adapt the base tensor `<module>.weight`;
/// embeddings use `<module>.lora_embedding_A` / `lora_embedding_B`. A module listed in
/// `modules_to_save` is stored whole under its base name with the prefix, and an adapted
/// layer's own weight, when saved (embeddings), as `<module>.base_layer.weight`. An
/// adapter trained with `bias: "lora_only"` or `"all"` stores an adapted layer's whole
/// bias as `<module>.base_layer.bias` (the trained value, not a difference), and with
/// `"all"` the biases of other modules under their base names.
public enum PEFTNames {
    /// The prefix of every tensor name in an adapter file.
    public static let prefix = "base_model.model."

    /// The names of lora_A and lora_B of the linear module `module` (its weight's name
    /// without `.weight`), as an adapter file stores them.
    public static func factorNames(_ module: String) -> (a: String, b: String) {
        (prefix + module + ".lora_A.weight", prefix + module + ".lora_B.weight")
    }

    /// The name under which base tensor `tensor` of a module saved whole is stored.
    public static func savedName(_ tensor: String) -> String { prefix + tensor }

    /// The name under which the whole bias of the adapted module `module` is stored
    /// (PEFT's `bias: "lora_only"`): the bias of the layer the adapter wraps.
    public static func biasName(ofModule module: String) -> String { prefix + module + baseLayerBias }

    /// The suffixes of an adapted layer's own tensors, saved beside its factors.
    static let baseLayerWeight = ".base_layer.weight"
    static let baseLayerBias = ".base_layer.bias"

    /// Which LoRA factor a tensor is.
    public enum Factor: Sendable, Equatable {
        case a
        case b
    }

    /// What one adapter tensor is.
    public enum Role: Sendable, Equatable {
        /// A factor of the module `module`; `embedding` for the embedding form, whose
        /// product is stored transposed in the base.
        case factor(module: String, Factor, embedding: Bool)
        /// A whole tensor standing for the base tensor `baseName` (modules_to_save).
        case whole(baseName: String)
    }

    /// Why an adapter tensor name is not understood.
    public enum NameProblem: Error, Equatable, Sendable, CustomStringConvertible {
        case noPrefix(String)
        case unsupported(String, what: String)

        public var description: String {
            switch self {
            case .noPrefix(let name): return "tensor '\(name)' does not start with '\(PEFTNames.prefix)' as PEFT adapter tensors do"
            case .unsupported(let name, let what): return "tensor '\(name)' is \(what), which Claire does not apply"
            }
        }
    }

    /// The role of the adapter tensor `name`.
    public static func role(of name: String) throws(NameProblem) -> Role {
        guard name.hasPrefix(prefix) else { throw .noPrefix(name) }
        let rest = String(name.dropFirst(prefix.count))
        let suffixes: [(String, Factor, Bool)] = [(".lora_A.weight", .a, false), (".lora_B.weight", .b, false),
                                                  (".lora_embedding_A", .a, true), (".lora_embedding_B", .b, true)]
        if rest.hasSuffix(baseLayerWeight) {
            // The adapted layer's own weight, saved beside its factors (PEFT saves embedding
            // layers it adapts): it replaces the base's before δ is added.
            return .whole(baseName: String(rest.dropLast(baseLayerWeight.count)) + ".weight")
        }
        if rest.hasSuffix(baseLayerBias) {
            // The adapted layer's trained bias (bias "lora_only" or "all"): it replaces the base's.
            return .whole(baseName: String(rest.dropLast(baseLayerBias.count)) + ".bias")
        }
        for (suffix, factor, embedding) in suffixes where rest.hasSuffix(suffix) {
            let module = String(rest.dropLast(suffix.count))
            guard !module.isEmpty else { break }
            return .factor(module: module, factor, embedding: embedding)
        }
        if rest.contains(".lora_B.bias") { throw .unsupported(name, what: "a LoRA bias (lora_bias)") }
        if rest.contains("lora_magnitude_vector") { throw .unsupported(name, what: "a DoRA magnitude (use_dora)") }
        if rest.contains(".lora_") { throw .unsupported(name, what: "a LoRA tensor of an unknown kind") }
        return .whole(baseName: rest)
    }

    /// The base tensor a module's factors adapt.
    public static func baseName(ofModule module: String) -> String { module + ".weight" }

    /// The adapter names of a module's factors, as `save_pretrained` writes them.
    public static func factorNames(ofModule module: String) -> (a: String, b: String) {
        (prefix + module + ".lora_A.weight", prefix + module + ".lora_B.weight")
    }

    /// True when `module` is `key` or ends with `.key` (PEFT's rule for the names in
    /// `target_modules`, `modules_to_save`, `rank_pattern` and `alpha_pattern`, taken
    /// literally).
    public static func module(_ module: String, matches key: String) -> Bool {
        module == key || module.hasSuffix("." + key)
    }

    /// True when `name` lies in the module `module`, or a module whose path ends with it.
    static func tensor(_ name: String, isIn module: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        let keyParts = module.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count > keyParts.count else { return false }
        for end in keyParts.count..<parts.count where parts[(end - keyParts.count)..<end].elementsEqual(keyParts) {
            return true
        }
        return false
    }
}
