/// A merge method by its mergekit name, with its defaults.
public enum MergeMethod: String, Sendable, CaseIterable, CustomStringConvertible {
    case taskArithmetic = "task_arithmetic"
    case ties
    case dareTies = "dare_ties"
    case dareLinear = "dare_linear"
    case breadcrumbs
    case breadcrumbsTies = "breadcrumbs_ties"
    case della
    case dellaLinear = "della_linear"
    case linear
    case slerp
    case modelStock = "model_stock"

    public var description: String { rawValue }

    /// The sparsifier applied to each task vector (nil: none, or not a task-vector method).
    public var sparsifier: Sparsifier? {
        switch self {
        case .ties: return .magnitude
        case .dareTies, .dareLinear: return .random
        case .breadcrumbs, .breadcrumbsTies: return .magnitudeOutliers
        case .della, .dellaLinear: return .dellaMagprune
        case .taskArithmetic, .linear, .slerp, .modelStock: return nil
        }
    }

    /// The default sign election (nil: deltas are added without one).
    public var defaultConsensus: Consensus? {
        switch self {
        case .ties, .dareTies, .breadcrumbsTies, .della: return .sum
        default: return nil
        }
    }

    /// True for the methods built on task vectors δᵢ = θᵢ − θ₀ and `Fusion`.
    public var fusesTaskVectors: Bool {
        switch self {
        case .linear, .slerp, .modelStock: return false
        default: return true
        }
    }

    /// Whether weights are divided by their sum unless the recipe says otherwise.
    public var defaultNormalize: Bool {
        switch self {
        case .ties, .della, .linear: return true
        default: return false
        }
    }

    /// The rescale used unless the recipe says otherwise.
    public var defaultRescale: Rescale {
        switch self {
        case .dareTies, .dareLinear, .della, .dellaLinear: return .l1
        default: return .none
        }
    }

    /// True when the method needs a base model.
    public var needsBase: Bool { self != .linear }

    /// The per-model and global parameter names this method reads.
    public var parameterNames: Set<String> {
        var names: Set<String> = []
        switch self {
        case .linear: names = ["weight", "normalize"]
        case .slerp: names = ["t"]
        case .modelStock: names = ["filter_wise"]
        default:
            names = ["weight", "density", "lambda", "normalize", "rescale", "consensus", "int8_mask"]
            if sparsifier == .magnitudeOutliers { names.insert("gamma") }
            if sparsifier == .dellaMagprune { names.insert("epsilon") }
        }
        return names
    }

    /// Looks a method up by name; a typo gets the closest known name as a suggestion.
    public static func named(_ name: String) throws(MergeError) -> MergeMethod {
        if let method = MergeMethod(rawValue: name) { return method }
        let names = allCases.map(\.rawValue)
        throw .unknownMethod(name: name, suggestion: closest(to: name, among: names))
    }
}

/// The candidate nearest to `word` by edit distance, when it is close enough to be a typo.
func closest(to word: String, among candidates: [String]) -> String? {
    var best: (name: String, distance: Int)?
    for candidate in candidates {
        let d = editDistance(word.lowercased(), candidate)
        if d < (best?.distance ?? Int.max) { best = (candidate, d) }
    }
    guard let best, best.distance <= max(2, word.count / 3) else { return nil }
    return best.name
}

/// Levenshtein distance between two short strings.
func editDistance(_ a: String, _ b: String) -> Int {
    let x = Array(a.utf8), y = Array(b.utf8)
    var previous = Array(0...y.count)
    var current = previous
    for i in 1...max(x.count, 1) where !x.isEmpty {
        current[0] = i
        for j in 1...max(y.count, 1) where !y.isEmpty {
            let substitution = previous[j - 1] + (x[i - 1] == y[j - 1] ? 0 : 1)
            current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
        }
        swap(&previous, &current)
    }
    return x.isEmpty ? y.count : previous[y.count]
}
