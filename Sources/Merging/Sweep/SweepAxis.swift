import Foundation

/// Why a sweep cannot start or its results file cannot be read.
public enum SweepError: Error, Equatable, CustomStringConvertible {
    /// A `--grid` axis that does not parse.
    case badAxis(axis: String, problem: String)
    /// A path into the recipe that leads nowhere.
    case badPath(file: String, path: String, problem: String)
    /// A candidate recipe that is not a valid recipe after the substitution.
    case badCandidate(values: String, problem: String)
    /// An evaluation's output that is not a JSON object of numeric metrics.
    case badMetrics(String)

    public var description: String {
        switch self {
        case .badAxis(let axis, let problem): return "--grid '\(axis)': \(problem)"
        case .badPath(let file, let path, let problem): return "\(file): path '\(path)': \(problem)"
        case .badCandidate(let values, let problem): return "candidate \(values): \(problem)"
        case .badMetrics(let problem): return problem
        }
    }
}

/// One dimension of a parameter sweep: a place in the recipe and the values it takes.
///
/// Written `PATH=FROM:TO:COUNT` (COUNT evenly spaced numbers from FROM to TO, both
/// included) or `PATH=v1,v2,…` (the values as listed: numbers, or words such as
/// method names). PATH is a `RecipePath`.
public struct SweepAxis: Equatable, Sendable {
    /// The values an axis takes.
    public enum Values: Equatable, Sendable {
        /// `count` evenly spaced numbers from `from` to `to`, both ends included.
        case range(from: Double, to: Double, count: Int)
        /// The listed YAML scalars, in order.
        case list([String])
    }

    /// The most values one axis may list or span.
    public static let maximumValues = 10_000

    /// Where the values go in the recipe.
    public var path: RecipePath
    /// What the axis takes.
    public var values: Values

    public init(path: RecipePath, values: Values) {
        self.path = path
        self.values = values
    }

    /// Parses `PATH=FROM:TO:COUNT` or `PATH=v1,v2,…`.
    public init(parsing text: String) throws(SweepError) {
        guard let equals = text.firstIndex(of: "=") else {
            throw .badAxis(axis: text, problem: "expected PATH=FROM:TO:COUNT or PATH=v1,v2,…")
        }
        let pathText = String(text[..<equals]).trimmingCharacters(in: .whitespaces)
        let valueText = String(text[text.index(after: equals)...]).trimmingCharacters(in: .whitespaces)
        do {
            path = try RecipePath(parsing: pathText)
        } catch {
            guard case .badPath(_, _, let problem) = error else { throw error }
            throw .badAxis(axis: text, problem: problem)
        }
        func fields(separatedBy separator: Character) -> [String] {
            valueText.split(separator: separator, omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
        }
        func finite(_ item: String) throws(SweepError) -> Double {
            guard let number = Double(item), number.isFinite else {
                throw .badAxis(axis: text, problem: "'\(item)' is not a finite number")
            }
            return number
        }
        if valueText.contains(":") {
            let parts = fields(separatedBy: ":")
            guard parts.count == 3 else {
                throw .badAxis(axis: text, problem: "a range is FROM:TO:COUNT, e.g. 0.1:0.9:5")
            }
            let from = try finite(parts[0]), to = try finite(parts[1])
            guard let count = Int(parts[2]), count >= 1, count <= Self.maximumValues else {
                throw .badAxis(axis: text, problem: "COUNT '\(parts[2])' must be a whole number from 1 to \(Self.maximumValues)")
            }
            guard count > 1 || from == to else {
                throw .badAxis(axis: text, problem: "a range of one value must have FROM = TO (or give COUNT ≥ 2)")
            }
            values = .range(from: from, to: to, count: count)
        } else {
            let items = fields(separatedBy: ",")
            guard !valueText.isEmpty, !items.contains(where: \.isEmpty) else {
                throw .badAxis(axis: text, problem: "an empty value (list values are separated by single commas)")
            }
            guard items.count <= Self.maximumValues else {
                throw .badAxis(axis: text, problem: "more than \(Self.maximumValues) values")
            }
            // Numbers in one spelling, so the same value always makes the same candidate key.
            let canonical = try items.map { (item) throws(SweepError) in
                Double(item) == nil ? item : Self.format(try finite(item))
            }
            guard Set(canonical).count == canonical.count else {
                throw .badAxis(axis: text, problem: "a value is listed twice")
            }
            values = .list(canonical)
        }
    }

    /// The grid values, as the YAML scalars written into candidates.
    public var gridValues: [String] {
        switch values {
        case .list(let items): return items
        case .range(let from, let to, let count):
            guard count > 1 else { return [Self.format(from)] }
            return (0..<count).map { i in
                // The last value is `to` exactly, not `from` plus rounded steps.
                i == count - 1 ? Self.format(to) : Self.format(from + (to - from) * Double(i) / Double(count - 1))
            }
        }
    }

    /// A value drawn from the axis with the uniform numbers `u`, `v` in [0, 1): a range
    /// is sampled uniformly between its ends (to 4 significant digits, so tables stay
    /// readable), a list picks one of its values.
    func sample(_ u: Double) -> String {
        switch values {
        case .list(let items): return items[min(items.count - 1, Int(u * Double(items.count)))]
        case .range(let from, let to, _):
            let x = from + (to - from) * u
            return Self.format(Double(String(format: "%.4g", x)) ?? x)
        }
    }

    /// A number as a YAML scalar: rounded to 12 significant digits (so 0.1 + 2 × 0.2
    /// shows as 0.5), integers without a fraction.
    static func format(_ x: Double) -> String {
        let rounded = Double(String(format: "%.12g", x)) ?? x
        if rounded == rounded.rounded(), abs(rounded) < 1e15 { return String(Int(rounded)) }
        return "\(rounded)"
    }
}
