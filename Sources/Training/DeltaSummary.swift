/// The shape of the task vectors the PAFT demo merges: how sparse and how large
/// each delta θ − θ₀ is, and how often two deltas agree in sign where both move.
public struct DeltaSummary: Sendable {
    /// Per delta: name, fraction of exact zeros, L2 norm, mean |δ| over non-zeros.
    public let rows: [(name: String, zeroFraction: Double, norm: Double, meanMagnitude: Double)]
    /// Per pair of deltas: names, entries where both are non-zero, fraction of those with equal signs.
    public let agreements: [(first: String, second: String, overlap: Int, signAgreement: Double)]

    /// Summarizes `deltas` (whole models, in layout order) against `base`.
    public init(base: [Float], deltas: [(name: String, values: [Float])]) {
        var rows: [(String, Double, Double, Double)] = []
        for (name, values) in deltas {
            var zeros = 0
            var squares: Double = 0, magnitudes: Double = 0
            for i in base.indices {
                let d = Double(values[i]) - Double(base[i])
                if values[i] == base[i] { zeros += 1 } else { magnitudes += abs(d) }
                squares += d * d
            }
            let nonZero = base.count - zeros
            rows.append((name, Double(zeros) / Double(max(1, base.count)), squares.squareRoot(),
                         nonZero == 0 ? 0 : magnitudes / Double(nonZero)))
        }
        var agreements: [(String, String, Int, Double)] = []
        for a in deltas.indices {
            for b in (a + 1)..<deltas.count {
                var overlap = 0, same = 0
                let x = deltas[a].values, y = deltas[b].values
                for i in base.indices where x[i] != base[i] && y[i] != base[i] {
                    overlap += 1
                    if (x[i] > base[i]) == (y[i] > base[i]) { same += 1 }
                }
                agreements.append((deltas[a].name, deltas[b].name, overlap, overlap == 0 ? 0 : Double(same) / Double(overlap)))
            }
        }
        self.rows = rows
        self.agreements = agreements
    }

    /// The summary as Markdown tables.
    public var text: String {
        func fixed(_ x: Double, _ digits: Int) -> String {
            var scale = 1.0
            for _ in 0..<digits { scale *= 10 }
            return String((x * scale).rounded() / scale)
        }
        var lines = ["| delta | exact zeros | L2 norm | mean \\|δ\\| of non-zeros |", "|---|---:|---:|---:|"]
        for r in rows {
            lines.append("| \(r.name) | \(fixed(100 * r.zeroFraction, 1)) % | \(fixed(r.norm, 3)) | \(fixed(r.meanMagnitude, 5)) |")
        }
        lines.append("")
        lines.append("| deltas | both non-zero | same sign |")
        lines.append("|---|---:|---:|")
        for a in agreements {
            lines.append("| \(a.first) vs \(a.second) | \(a.overlap) | \(fixed(100 * a.signAgreement, 1)) % |")
        }
        return lines.joined(separator: "\n")
    }
}
