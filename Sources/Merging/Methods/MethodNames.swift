extension MergeMethod {
    public var description: String { rawValue }

    /// The fields of the method's row, read through the method: `method.sparsifier`, …
    public subscript<Value>(dynamicMember field: KeyPath<MethodEntry, Value>) -> Value { entry[keyPath: field] }

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
