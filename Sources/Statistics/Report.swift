import Checkpoints
import Foundation

extension DeltaStatisticsReport {
    /// Schema version of `json`; bumped only when a field changes meaning or goes away.
    public static let schemaVersion = 1

    // MARK: Text

    /// A few lines a person reads first: how sparse each delta is, where its mass
    /// sits, and how the deltas interfere.
    public var summary: String {
        var lines: [String] = []
        for (d, name) in names.enumerated() {
            let f = model.deltas[d]
            let unchanged = percent(f.zeroShare)
            let top = "top 1 % holds \(percent(f.topMassShare)) of the mass"
            if (f.zeroShare ?? 0) >= 0.5 {
                lines.append("\(name): \(unchanged) of entries unchanged; \(top)")
            } else {
                lines.append("\(name): dense (\(unchanged) unchanged), \(top)")
            }
            if f.nonFinite > 0 {
                lines.append("\(name): \(f.nonFinite) NaN/Inf entries, left out of every figure")
            }
        }
        for pair in model.pairs {
            let label = "\(names[pair.first]) vs \(names[pair.second])"
            let conflicts = pair.signAgreement.map { 1 - $0 }
            lines.append("\(label): sign conflicts: \(percent(conflicts)) of shared entries "
                + "(both changed at \(percent(pair.bothNonzeroShare)) of entries); cosine \(fixed(pair.cosine, 3)); "
                + "top-\(fixed(density * 100, 0)) % supports overlap \(percent(pair.supportOverlap)) (Jaccard)")
        }
        if names.count > 1 {
            lines.append("TIES election (sum, weights 1) drops \(percent(model.electionDroppedShare)) of non-zero entries as conflicting")
        }
        if !skipped.isEmpty {
            lines.append("\(skipped.count) tensors not compared (see --json \"skipped\")")
        }
        return lines.joined(separator: "\n")
    }

    /// The summary followed by a table of the scopes `grouping` selects and the model total.
    public func text(by grouping: StatisticsGrouping) -> String {
        var rows: [[String]] = []
        var header = ["scope", "delta", "elements", "zero"]
        header += thresholds.map { "≤\(shortNumber(Double($0)))" }
        header += ["L2", "max|δ|", "mean|δ|/|θ₀|", "Hoyer", "top1%mass"]
        for scope in scopes(by: grouping) + [model] {
            for (d, name) in names.enumerated() {
                let f = scope.deltas[d]
                var row = [scope.name, name, String(f.elements), percent(f.zeroShare)]
                row += thresholds.indices.map { percent(f.thresholdShare($0)) }
                row += [scientific(f.l2), scientific(Double(f.maxAbs)), scientific(scope.relativeMeanAbs(d)),
                        fixed(f.hoyer, 3), percent(f.topMassShare)]
                rows.append(row)
            }
        }
        var text = summary + "\n\n" + table(header: header, rows: rows)
        if names.count > 1 {
            var pairRows: [[String]] = []
            for scope in scopes(by: grouping) + [model] {
                for pair in scope.pairs {
                    pairRows.append([scope.name, "\(names[pair.first])/\(names[pair.second])", fixed(pair.cosine, 3),
                                     percent(pair.bothNonzeroShare), percent(pair.signAgreement),
                                     percent(pair.supportOverlap), percent(scope.electionDroppedShare)])
                }
            }
            let pairHeader = ["scope", "pair", "cosine", "both≠0", "same sign", "top-k overlap", "TIES dropped"]
            text += "\n\n" + table(header: pairHeader, rows: pairRows)
        }
        return text
    }

    private func table(header: [String], rows: [[String]]) -> String {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            var out = ""
            for (i, cell) in cells.enumerated() {
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                out += i < 2 ? cell + pad : pad + cell
                if i + 1 < cells.count { out += "  " }
            }
            return out
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    // MARK: JSON

    /// Every figure, in the schema documented in docs/stats.md.
    public var json: JSONValue {
        .object([
            ("schema_version", .integer(Self.schemaVersion)),
            ("base", .string(basePath)),
            ("deltas", .array(names.indices.map { .object([("name", .string(names[$0])), ("path", .string(paths[$0]))]) })),
            ("thresholds", .array(thresholds.map(number))),
            ("density", number(density)),
            ("top_fraction", number(0.01)),
            ("log10_bins", .object([
                ("lowest", number(Log10Bins.lowest)), ("width", number(Log10Bins.width)),
                ("count", .integer(Log10Bins.count)),
            ])),
            ("model", json(model)),
            ("kinds", .array(kinds.map(json))),
            ("layers", .array(layers.map(json))),
            ("tensors", .array(tensors.map(json))),
            ("skipped", .array(skipped.map { .object([("name", .string($0.name)), ("reason", .string($0.reason))]) })),
        ])
    }

    private func json(_ scope: ScopeStatistics) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("name", .string(scope.name)),
            ("layer", scope.layer.map { .integer($0) } ?? .null),
            ("tensors", .integer(scope.tensorCount)),
            ("elements", .integer(scope.elements)),
            ("base_mean_abs", number(scope.baseFinite > 0 ? scope.baseL1 / Double(scope.baseFinite) : nil)),
        ]
        members.append(("deltas", .array(names.indices.map { d in
            let f = scope.deltas[d]
            let first = f.log10Histogram.firstIndex { $0 != 0 } ?? 0
            let last = f.log10Histogram.lastIndex { $0 != 0 } ?? -1
            return .object([
                ("name", .string(names[d])), ("elements", .integer(f.elements)), ("non_finite", .integer(f.nonFinite)),
                ("zeros", .integer(f.zeros)), ("zero_share", number(f.zeroShare)),
                ("within", .array(thresholds.indices.map { j in
                    .object([("threshold", number(thresholds[j])), ("count", .integer(f.withinThreshold[j])),
                             ("share", number(f.thresholdShare(j)))])
                })),
                ("l1", number(f.l1)), ("l2", number(f.l2)), ("max_abs", number(Double(f.maxAbs))), ("mean_abs", number(f.meanAbs)),
                ("relative_mean_abs", number(scope.relativeMeanAbs(d))), ("hoyer", number(f.hoyer)),
                ("top_entries", .integer(f.topEntries)), ("top_mass", number(f.topMass)), ("top_mass_share", number(f.topMassShare)),
                ("log10_histogram", .object([
                    ("start", .integer(first)),
                    ("counts", .array(first <= last ? f.log10Histogram[first...last].map { .integer($0) } : [])),
                ])),
            ])
        })))
        members.append(("pairs", .array(scope.pairs.map { p in
            .object([
                ("first", .string(names[p.first])), ("second", .string(names[p.second])),
                ("positions", .integer(p.positions)), ("cosine", number(p.cosine)),
                ("both_nonzero", .integer(p.bothNonzero)), ("both_nonzero_share", number(p.bothNonzeroShare)),
                ("sign_agreements", .integer(p.signAgreements)), ("sign_agreement", number(p.signAgreement)),
                ("support_first", .integer(p.supportFirst)), ("support_second", .integer(p.supportSecond)),
                ("support_intersection", .integer(p.supportIntersection)), ("support_overlap", number(p.supportOverlap)),
            ])
        })))
        members.append(("ties", names.count < 2 ? .null : .object([
            ("entries", .integer(scope.electionEntries)),
            ("dropped", .integer(scope.electionDropped)),
            ("dropped_share", number(scope.electionDroppedShare)),
        ])))
        return .object(members)
    }
}

/// A JSON number for a finite value, null otherwise.
func number(_ value: Double?) -> JSONValue {
    guard let value, value.isFinite else { return .null }
    if value == value.rounded(), value.magnitude < 1e15 { return .number(String(Int(value))) }
    return .number("\(value)")
}

/// A JSON number for a Float32 setting, written as its shortest text (1e-06, not 9.99999997e-07).
func number(_ value: Float) -> JSONValue {
    value.isFinite ? .number("\(value)") : .null
}

func percent(_ value: Double?) -> String {
    guard let value else { return "–" }
    return String(format: "%.1f %%", value * 100)
}

func fixed(_ value: Double?, _ digits: Int) -> String {
    guard let value else { return "–" }
    return String(format: "%.\(digits)f", value)
}

func scientific(_ value: Double?) -> String {
    guard let value else { return "–" }
    return String(format: "%.3g", value)
}

/// 1e-06 → "1e-6", 0.5 → "0.5".
func shortNumber(_ value: Double) -> String {
    let text = String(format: "%g", value)
    return text.replacingOccurrences(of: "e-0", with: "e-").replacingOccurrences(of: "e+0", with: "e")
}
