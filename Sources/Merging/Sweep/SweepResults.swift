import Checkpoints
import Foundation

/// One scored model of a sweep: a candidate (its axis values) or a parent (one of the
/// recipe's input models), with its metrics or the reason it has none.
public struct SweepRecord: Equatable, Sendable {
    /// What was scored.
    public enum Subject: Equatable, Sendable {
        /// Candidate `index` with its axis values.
        case candidate(index: Int, values: [SweepValue])
        /// An input model of the recipe, by its path.
        case parent(model: String)
    }

    public var subject: Subject
    /// The metrics the evaluation reported (empty when it failed).
    public var metrics: [String: Double]
    /// Why the candidate has no metrics, when it failed.
    public var error: String?
    /// Seconds spent merging and scoring it.
    public var seconds: Double?
    /// What the score depends on besides the key (`SweepResults.fingerprint`): a resumed
    /// run reuses the record only when it is the same.
    public var fingerprint: String?

    public init(subject: Subject, metrics: [String: Double] = [:], error: String? = nil, seconds: Double? = nil,
                fingerprint: String? = nil) {
        self.subject = subject
        self.metrics = metrics
        self.error = error
        self.seconds = seconds
        self.fingerprint = fingerprint
    }

    /// What identifies the record across runs: a candidate's `SweepCandidate.key`, or
    /// `parent MODEL`.
    public var key: String {
        switch subject {
        case .candidate(_, let values): return SweepCandidate.key(values)
        case .parent(let model): return "parent " + model
        }
    }

    /// The candidate's place in the sweep's order; nil for a parent.
    public var candidateIndex: Int? {
        if case .candidate(let index, _) = subject { return index }
        return nil
    }

    /// A short name for tables and messages.
    public var label: String {
        switch subject {
        case .candidate(let index, let values):
            return "#\(index) " + values.map { "\(Self.lastComponents($0.path))=\($0.value)" }.joined(separator: " ")
        case .parent(let model): return model
        }
    }

    /// `models.1.parameters.weight` as `1.weight`: the list index and the key, enough to
    /// tell axes apart in a table.
    static func lastComponents(_ path: String) -> String {
        let parts = path.split(separator: ".")
        guard parts.count > 1 else { return path }
        if let index = parts.lastIndex(where: { Int($0) != nil }), index < parts.count - 1 {
            return parts[index] + "." + parts[parts.count - 1]
        }
        return String(parts[parts.count - 1])
    }

    /// The record as one JSON line (without the newline).
    public var jsonLine: String { json.compactText }

    /// The record as a JSON object, its members in the order a results line lists them.
    public var json: JSONValue {
        var members: [(key: String, value: JSONValue)]
        switch subject {
        case .candidate(let index, let values):
            // YAML also reads `.5`, `+1`, `1e3`: numbers are written as Swift prints them.
            let parameters = values.map { v in
                (key: v.path, value: Double(v.value).map { JSONValue.number(Self.jsonNumber($0)) } ?? .string(v.value))
            }
            members = [("kind", .string("candidate")), ("index", .number(String(index))), ("parameters", .object(parameters))]
        case .parent(let model):
            members = [("kind", .string("parent")), ("model", .string(model))]
        }
        if let error {
            members.append(("error", .string(error)))
        } else {
            members.append(("metrics", .object(metrics.keys.sorted().map { ($0, .number(Self.jsonNumber(metrics[$0]!))) })))
        }
        if let seconds { members.append(("seconds", .number(String(format: "%.3f", seconds)))) }
        if let fingerprint { members.append(("fingerprint", .string(fingerprint))) }
        return .object(members)
    }

    /// A number in JSON's grammar.
    static func jsonNumber(_ v: Double) -> String {
        guard v.isFinite else { return "null" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int(v)) }
        return "\(v)"
    }

    /// Reads a record written by `jsonLine`; nil for a line that is not one (a line cut
    /// short by an interrupted run).
    public init?(jsonLine line: String) {
        guard let value = try? JSONParser.parse(line), case .object = value else { return nil }
        switch value["kind"]?.stringValue {
        case "candidate":
            guard let index = value["index"]?.nonNegativeInteger, case .object(let members)? = value["parameters"] else {
                return nil
            }
            var values: [SweepValue] = []
            for (path, v) in members {
                switch v {
                case .number(let text), .string(let text): values.append(SweepValue(path: path, value: text))
                default: return nil
                }
            }
            subject = .candidate(index: index, values: values)
        case "parent":
            guard let model = value["model"]?.stringValue else { return nil }
            subject = .parent(model: model)
        default:
            return nil
        }
        metrics = [:]
        error = value["error"]?.stringValue
        seconds = value["seconds"]?.doubleValue
        fingerprint = value["fingerprint"]?.stringValue
        if error == nil {
            guard case .object(let members)? = value["metrics"] else { return nil }
            for (name, v) in members {
                if let number = v.doubleValue { metrics[name] = number }
            }
        }
    }

    /// The metrics of an evaluation's output: a JSON object of numbers (nulls are
    /// skipped), either the whole output or its last non-empty line, so a scorer may log
    /// before it.
    public static func metrics(fromOutput output: String) throws(SweepError) -> [String: Double] {
        let trimmed = output.trimmingCharacters(in: .whitespacesAndNewlines)
        let lastLine = trimmed.split(whereSeparator: \.isNewline).last.map(String.init) ?? ""
        guard let value = (try? JSONParser.parse(trimmed)) ?? (try? JSONParser.parse(lastLine)),
              case .object(let members) = value else {
            let shown = lastLine.isEmpty ? "nothing" : "'\(lastLine.prefix(80))'"
            throw .badMetrics("the evaluation printed \(shown), not a JSON object of metrics")
        }
        var metrics: [String: Double] = [:]
        for (name, v) in members {
            if v == .null { continue }
            guard let x = v.doubleValue, x.isFinite else {
                throw .badMetrics("metric '\(name)' is not a finite number")
            }
            metrics[name] = x
        }
        guard !metrics.isEmpty else { throw .badMetrics("the evaluation reported no metrics") }
        return metrics
    }
}

/// One axis's value in a candidate.
public struct SweepValue: Equatable, Hashable, Sendable {
    public var path: String
    public var value: String

    public init(path: String, value: String) {
        self.path = path
        self.value = value
    }
}

/// The `results.jsonl` of a sweep folder: one record per line, appended as models are
/// scored, read back to resume.
public enum SweepResults {
    /// The file's name inside the sweep folder.
    public static let fileName = "results.jsonl"

    /// The records of the file at `path` (none when it does not exist); lines that are
    /// not records are skipped. Only the last record of each key counts.
    public static func read(_ path: String) throws(CheckpointError) -> [SweepRecord] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        let bytes = try InputFile.readAll(path, cap: InputFile.maximumJSONSize, what: "a sweep results file")
        var latest: [String: Int] = [:]
        var records: [SweepRecord] = []
        for line in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
            guard let record = SweepRecord(jsonLine: String(line)) else { continue }
            if let earlier = latest[record.key] {
                records[earlier] = record
            } else {
                latest[record.key] = records.count
                records.append(record)
            }
        }
        return records
    }

    /// The keys a resumed run skips, each with the fingerprint it was scored under:
    /// those scored without an error (a failed candidate is tried again).
    public static func done(_ records: [SweepRecord]) -> [String: String?] {
        var done: [String: String?] = [:]
        for record in records where record.error == nil { done[record.key] = record.fingerprint }
        return done
    }

    /// A short hash of everything a score depends on besides the key (the candidate's
    /// whole recipe, the evaluation), so a re-run with an edited recipe or another
    /// evaluation scores again instead of reusing stale results.
    public static func fingerprint(_ parts: [String]) -> String {
        let text = parts.joined(separator: "\u{0}")
        let hash = Array(text.utf8).withUnsafeBytes { XXHash64.hash($0) }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Records sorted best first by `goal`: those with the metric by its value (ties by
    /// candidate order), then those without it, then the failed ones.
    public static func ranked(_ records: [SweepRecord], by goal: MetricGoal) -> [SweepRecord] {
        func tier(_ r: SweepRecord) -> Int { r.error != nil ? 2 : r.metrics[goal.name] == nil ? 1 : 0 }
        return records.enumerated().sorted { a, b in
            let (ta, tb) = (tier(a.element), tier(b.element))
            if ta != tb { return ta < tb }
            if ta == 0, let x = a.element.metrics[goal.name], let y = b.element.metrics[goal.name], x != y {
                return goal.better(x, than: y)
            }
            let (oa, ob) = (a.element.candidateIndex ?? -1, b.element.candidateIndex ?? -1)
            return oa != ob ? oa < ob : a.offset < b.offset
        }.map(\.element)
    }
}
