import Yams

/// A dotted path into a recipe's YAML: map keys and list indices, e.g.
/// `models.1.parameters.weight` or `parameters.t`. A component that meets a list
/// is read as an index (from 0); one that meets a mapping is read as a key.
public struct RecipePath: Equatable, Hashable, Sendable, CustomStringConvertible {
    /// The components, in order from the top of the document.
    public var components: [String]

    public init(parsing text: String) throws(SweepError) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard !text.isEmpty, !parts.contains(where: \.isEmpty) else {
            throw .badPath(file: "--grid", path: text, problem: "a path is keys and indices joined by single dots, e.g. models.0.parameters.density")
        }
        components = parts
    }

    public var description: String { components.joined(separator: ".") }

    /// `document` with the scalar `value` at this path. Every component but the last must
    /// exist; the last may be a new key of an existing mapping (it is added), never a new
    /// list index. Lists and mappings met on the way are edited in place.
    public func setting(_ value: String, in document: Node, file: String) throws(SweepError) -> Node {
        try set(Node(value), in: document, at: 0, file: file)
    }

    private func set(_ value: Node, in node: Node, at depth: Int, file: String) throws(SweepError) -> Node {
        let component = components[depth]
        let isLast = depth == components.count - 1
        let here = components[...depth].joined(separator: ".")
        switch node {
        case .mapping(var mapping):
            if let index = mapping.firstIndex(where: { $0.key.string == component }) {
                let child = mapping[index].value
                mapping[index] = (mapping[index].key, isLast ? value : try set(value, in: child, at: depth + 1, file: file))
            } else {
                guard isLast else {
                    let keys = mapping.compactMap { $0.key.string }.joined(separator: ", ")
                    throw .badPath(file: file, path: description, problem: "'\(here)' does not exist (keys there: \(keys))")
                }
                mapping[component] = value
            }
            return .mapping(mapping)
        case .sequence(var sequence):
            guard let index = Int(component), index >= 0 else {
                throw .badPath(file: file, path: description, problem: "'\(here)' meets a list: '\(component)' must be an index")
            }
            guard index < sequence.count else {
                throw .badPath(file: file, path: description,
                               problem: "'\(here)' does not exist (the list has \(sequence.count) entries, indices 0 to \(sequence.count - 1))")
            }
            sequence[index] = isLast ? value : try set(value, in: sequence[index], at: depth + 1, file: file)
            return .sequence(sequence)
        default:
            let parent = depth == 0 ? "the recipe" : "'\(components[..<depth].joined(separator: "."))'"
            throw .badPath(file: file, path: description, problem: "\(parent) is a single value, not a mapping or a list")
        }
    }
}
