import Foundation

/// The text table a sweep prints: candidates best first by the objective, then the parents.
public enum SweepTable {
    /// The table of `ranked` candidates (failed ones at the end, with their error) and
    /// `parents`; the objective's column comes first, `*` marks members of `front`.
    public static func text(ranked: [SweepRecord], parents: [SweepRecord], goal: MetricGoal, front: [SweepRecord]) -> String {
        let names = Set((ranked + parents).flatMap(\.metrics.keys)).subtracting([goal.name]).sorted()
        let columns = [goal.name] + names
        let frontKeys = Set(front.map(\.key))
        let header = ["rank", "candidate"] + columns.map { $0 == goal.name ? "\(goal.name) (objective, \(goal.maximize ? "max" : "min"))" : $0 }
        var rows: [[String]] = []
        for (i, record) in ranked.enumerated() {
            let rank = record.error == nil ? String(i + 1) + (frontKeys.contains(record.key) ? "*" : "") : "–"
            rows.append([rank, record.label] + cells(record, columns))
        }
        for record in parents { rows.append(["parent", record.label] + cells(record, columns)) }
        var widths = header.map(\.count)
        // A failed row's error runs on past the columns and does not widen them.
        for row in rows {
            for (j, cell) in row.enumerated() where j < widths.count && (row.count == header.count || j < row.count - 1) {
                widths[j] = max(widths[j], cell.count)
            }
        }
        func line(_ row: [String]) -> String {
            var text = ""
            for (j, cell) in row.enumerated() {
                let padded = j == row.count - 1 ? cell : cell.padding(toLength: widths[j], withPad: " ", startingAt: 0)
                text += (j == 0 ? "" : "  ") + padded
            }
            return text
        }
        var lines = [line(header)] + rows.map(line)
        if !frontKeys.isEmpty { lines.append("* on the Pareto front") }
        return lines.joined(separator: "\n")
    }

    private static func cells(_ record: SweepRecord, _ columns: [String]) -> [String] {
        if let error = record.error { return ["failed: " + error] }
        return columns.map { record.metrics[$0].map { String(format: "%.4g", $0) } ?? "–" }
    }
}
