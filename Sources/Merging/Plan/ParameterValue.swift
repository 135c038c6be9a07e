/// A recipe parameter: a number, a gradient across layers, or a list of
/// `{filter, value}` entries chosen by tensor name.
public indirect enum ParameterValue: Sendable, Equatable, CustomStringConvertible {
    /// One value for every tensor (booleans are 1 and 0).
    case number(Double)
    /// Values interpolated linearly across the layers, first to last.
    case gradient([Double])
    /// The first entry whose filter is a substring of the tensor name (or is nil or `*`) wins.
    case filtered([FilteredParameter])

    /// The value for the tensor `name`, at position `t` ∈ [0, 1] across the layers;
    /// nil when no filter matches.
    public func value(forTensor name: String, at t: Double) -> Double? {
        switch self {
        case .number(let v):
            return v
        case .gradient(let values):
            return ParameterValue.interpolate(values, at: t)
        case .filtered(let entries):
            for entry in entries where entry.matches(name) {
                return entry.value.value(forTensor: name, at: t)
            }
            return nil
        }
    }

    /// This value where it has one for a tensor, else `fallback`'s: how a module's
    /// parameters sit over the recipe's global ones. A number or gradient always has
    /// one; a filter list falls through when no entry matches.
    public func layered(over fallback: ParameterValue?) -> ParameterValue {
        guard case .filtered(let entries) = self, let fallback else { return self }
        return .filtered(entries + [FilteredParameter(filter: nil, value: fallback)])
    }

    /// A gradient [v₀ … v_{m−1}] at t: x = t·(m − 1), i = ⌊x⌋, (1 − f)·vᵢ + f·v_{i+1}.
    public static func interpolate(_ values: [Double], at t: Double) -> Double {
        guard values.count > 1 else { return values.first ?? 0 }
        let x = min(max(t, 0), 1) * Double(values.count - 1)
        let i = min(Int(x.rounded(.down)), values.count - 2)
        let f = x - Double(i)
        return (1 - f) * values[i] + f * values[i + 1]
    }

    /// Every number the value can produce (for checks before any work).
    public var allNumbers: [Double] {
        switch self {
        case .number(let v): return [v]
        case .gradient(let values): return values
        case .filtered(let entries): return entries.flatMap { $0.value.allNumbers }
        }
    }

    public var description: String {
        switch self {
        case .number(let v): return formatNumber(v)
        case .gradient(let values): return "[" + values.map(formatNumber).joined(separator: ", ") + "]"
        case .filtered(let entries):
            return "[" + entries.map { e in
                (e.filter.map { "{filter: \($0), value: " } ?? "{value: ") + e.value.description + "}"
            }.joined(separator: ", ") + "]"
        }
    }
}

/// One `{filter, value}` entry of a filtered parameter.
public struct FilteredParameter: Sendable, Equatable {
    /// Substring of the tensor name; nil or `*` matches every tensor.
    public var filter: String?
    /// The value taken when the filter matches.
    public var value: ParameterValue

    /// An entry; a nil filter matches every tensor.
    public init(filter: String?, value: ParameterValue) {
        self.filter = filter
        self.value = value
    }

    func matches(_ name: String) -> Bool {
        guard let filter, filter != "*" else { return true }
        return name.contains(filter)
    }
}

/// A number as a recipe shows it: integers without a fraction, others in shortest form.
func formatNumber(_ v: Double) -> String {
    if v == v.rounded(), abs(v) < 1e15 { return String(Int(v)) }
    return "\(v)"
}

/// Where a tensor sits among the transformer layers.
public enum LayerPosition {
    /// The layer number in names like `model.layers.12.mlp…`, `blk.12.…` or `h.12.…`.
    public static func layer(of name: String) -> Int? {
        let parts = name.split(separator: ".")
        for i in 1..<max(parts.count, 1) where ["layers", "blk", "h", "layer"].contains(parts[i - 1]) {
            if let n = Int(parts[i]), n >= 0 { return n }
        }
        return nil
    }

    /// `name` with its layer number (the one `layer(of:)` reads) replaced by `layer`.
    public static func name(_ name: String, withLayer layer: Int) -> String {
        var parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        for i in 1..<max(parts.count, 1) where ["layers", "blk", "h", "layer"].contains(parts[i - 1]) {
            if let n = Int(parts[i]), n >= 0 {
                parts[i] = String(layer)
                return parts.joined(separator: ".")
            }
        }
        return name
    }

    /// t = ℓ/(L − 1) for layer ℓ of L (1 when L = 1); 0 outside the layers.
    public static func fraction(of name: String, layerCount: Int) -> Double {
        guard let layer = layer(of: name) else { return 0 }
        return layerCount > 1 ? Double(layer) / Double(layerCount - 1) : 1
    }
}

/// The values each numeric merge parameter may take: finite, and bounded so that the
/// Float32 arithmetic of a merge stays finite on real weights (a delta times a weight
/// times λ is at most 10¹² times the delta). One table for flags and recipes alike;
/// docs/merging.md states the same ranges.
public enum ParameterRange {
    /// The largest |weight| and |lambda|.
    public static let maximumScale = 1e6
    /// The smallest keep probability (density, or density − epsilon for DELLA) that
    /// `--rescale inverse` divides by.
    public static let minimumInverseKeep = 1e-6
    /// With `normalize`, |Σ wᵢ| must be at least this share of Σ |wᵢ|: dividing by a
    /// sum that cancels to nearly 0 would blow the result up (or divide by zero).
    public static let minimumWeightSumShare = 1e-6
    /// Checks that `weights` do not cancel to (nearly) 0, for a method that divides by
    /// their sum; `remedy` ends the message.
    static func checkWeightSum(_ weights: [Float], of tensor: String, remedy: String) throws(MergeError) {
        var sum = 0.0, magnitude = 0.0
        for w in weights {
            sum += Double(w)
            magnitude += abs(Double(w))
        }
        guard abs(sum) < minimumWeightSumShare * magnitude || sum == 0 else { return }
        let list = weights.map { formatNumber(Double($0)) }.joined(separator: ", ")
        throw .badParameter(name: "weight", problem: "the weights of '\(tensor)' (\(list)) sum to \(formatNumber(sum)), and \(remedy)")
    }
    /// The most iterations the Karcher mean may take (`max_iter`, a whole number).
    public static let maximumIterations = 10_000

    /// The allowed values of parameter `name`; nil for a parameter with no bound
    /// beyond being finite (flags such as `normalize`).
    public static func bounds(of name: String) -> ClosedRange<Double>? {
        switch name {
        case "weight", "lambda", "scale", "r", "alpha": return -maximumScale...maximumScale
        case "density": return 0...Double.greatestFiniteMagnitude
        case "gamma", "epsilon", "t", "select_topk": return 0...1
        case "tol", "eps": return 0...1
        case "max_iter": return 0...Double(maximumIterations)
        default: return nil
        }
    }

    /// Why `value` is not allowed for parameter `name`, or nil when it is.
    public static func problem(name: String, value: Double) -> String? {
        guard value.isFinite else { return "\(value) is not a finite number" }
        guard let range = bounds(of: name), !range.contains(value) else { return nil }
        if range.upperBound == .greatestFiniteMagnitude { return "\(formatNumber(value)) is negative" }
        return "\(formatNumber(value)) lies outside [\(formatNumber(range.lowerBound)), \(formatNumber(range.upperBound))]"
    }

    /// The range of `name` as help text shows it.
    public static func describe(_ name: String) -> String {
        guard let range = bounds(of: name) else { return "any finite number" }
        if range.upperBound == .greatestFiniteMagnitude { return "at least \(formatNumber(range.lowerBound))" }
        return "\(formatNumber(range.lowerBound)) to \(formatNumber(range.upperBound))"
    }
}
