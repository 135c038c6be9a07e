/// What `merge-tool inspect` reports about a checkpoint, as text or JSON.
public struct CheckpointSummary: Sendable {
    /// Per-dtype totals.
    public struct DTypeTotal: Sendable, Equatable {
        public var dtype: DType
        public var tensors: Int
        public var parameters: Int
        public var bytes: Int
    }

    public let checkpoint: Checkpoint
    /// Totals per dtype, largest byte count first.
    public let dtypeTotals: [DTypeTotal]

    /// Arrays longer than this are summarized (type, count, first items).
    public static let arraySummaryThreshold = 16

    public init(_ checkpoint: Checkpoint) {
        self.checkpoint = checkpoint
        var totals: [DType: DTypeTotal] = [:]
        for t in checkpoint.tensors {
            totals[t.dtype, default: DTypeTotal(dtype: t.dtype, tensors: 0, parameters: 0, bytes: 0)].tensors += 1
            totals[t.dtype]!.parameters += t.elementCount
            totals[t.dtype]!.bytes += t.byteCount
        }
        dtypeTotals = totals.values.sorted { ($0.bytes, $1.dtype.rawValue) > ($1.bytes, $0.dtype.rawValue) }
    }

    private func fileName(_ t: TensorEntry) -> String {
        let path = checkpoint.files[t.fileIndex].path
        return path.split(separator: "/").last.map(String.init) ?? path
    }

    /// The human-readable report; `listAll` lists every tensor instead of a compact excerpt.
    public func text(listAll: Bool, excerpt: Int = 12) -> String {
        let c = checkpoint
        var lines: [String] = []
        lines.append("\(c.path)")
        lines.append("  format      \(c.format.rawValue), \(c.files.count) file\(c.files.count == 1 ? "" : "s")")
        lines.append("  tensors     \(c.tensors.count)")
        lines.append("  parameters  \(c.parameterCount) (\(Self.humanCount(c.parameterCount)))")
        lines.append("  bytes       \(c.tensorBytes) (\(Self.humanBytes(c.tensorBytes)))")
        if !dtypeTotals.isEmpty {
            lines.append("")
            // GGUF files mix quantized types, so they also show the storage cost per weight.
            let showBits = c.format == .gguf
            lines.append("  dtype      tensors     parameters        bytes" + (showBits ? "  bits/weight" : ""))
            for d in dtypeTotals {
                lines.append("  " + Self.pad(d.dtype.rawValue, 8) + Self.lpad(String(d.tensors), 10)
                             + Self.lpad(Self.humanCount(d.parameters), 15) + Self.lpad(Self.humanBytes(d.bytes), 13)
                             + (showBits ? Self.lpad(Self.formatTwoDecimals(d.dtype.bitsPerWeight), 13) : ""))
            }
        }
        if !c.metadata.isEmpty {
            lines.append("")
            lines.append("  metadata")
            let width = min(c.metadata.map(\.key.count).max() ?? 0, 40)
            for entry in c.metadata {
                lines.append("    " + Self.pad(entry.key, width) + "  " + Self.describe(entry.value))
            }
        }
        if !c.tensors.isEmpty {
            lines.append("")
            let shown: [TensorEntry]
            if listAll || c.tensors.count <= excerpt {
                shown = c.tensors
            } else {
                shown = Array(c.tensors.prefix(excerpt / 2)) + Array(c.tensors.suffix(excerpt / 2))
            }
            let nameWidth = min(shown.map(\.name.count).max() ?? 4, 60)
            lines.append("  " + Self.pad("name", nameWidth) + "  dtype    " + Self.pad("shape", 18) + Self.lpad("bytes", 12))
            for (i, t) in shown.enumerated() {
                if !listAll && c.tensors.count > excerpt && i == excerpt / 2 {
                    lines.append("  … \(c.tensors.count - excerpt) more (use --tensors to list all)")
                }
                let shape = "[" + t.shape.map(String.init).joined(separator: ", ") + "]"
                lines.append("  " + Self.pad(t.name, nameWidth) + "  " + Self.pad(t.dtype.rawValue, 7) + "  "
                             + Self.pad(shape, 18) + Self.lpad(String(t.byteCount), 12))
            }
        }
        return lines.joined(separator: "\n")
    }

    /// The stable JSON report (schema in docs/inspect.md).
    public var json: JSONValue {
        let c = checkpoint
        let files = c.files.map { f -> JSONValue in .string(f.path) }
        let dtypes = dtypeTotals.map { d -> (key: String, value: JSONValue) in
            var fields: [(key: String, value: JSONValue)] = [
                ("tensors", .integer(d.tensors)), ("parameters", .integer(d.parameters)), ("bytes", .integer(d.bytes)),
            ]
            if c.format == .gguf {
                fields.append(("ggml_type", .integer(Int(d.dtype.ggmlTypeID ?? 0))))
                fields.append(("bits_per_weight", .number(Self.formatTwoDecimals(d.dtype.bitsPerWeight))))
            }
            return (d.dtype.rawValue, .object(fields))
        }
        let metadata = c.metadata.map { e -> (key: String, value: JSONValue) in (e.key, Self.json(e.value)) }
        let tensors = c.tensors.map { t -> JSONValue in
            var fields: [(key: String, value: JSONValue)] = [
                ("name", .string(t.name)), ("dtype", .string(t.dtype.rawValue)),
                ("shape", .array(t.shape.map { .integer($0) })), ("parameters", .integer(t.elementCount)),
                ("bytes", .integer(t.byteCount)), ("file", .string(fileName(t))),
            ]
            if c.format == .gguf { fields.append(("ggml_type", .integer(Int(t.dtype.ggmlTypeID ?? 0)))) }
            return .object(fields)
        }
        return .object([
            ("path", .string(c.path)), ("format", .string(c.format.rawValue)), ("files", .array(files)),
            ("tensor_count", .integer(c.tensors.count)), ("parameter_count", .integer(c.parameterCount)),
            ("tensor_bytes", .integer(c.tensorBytes)), ("dtypes", .object(dtypes)),
            ("metadata", .object(metadata)), ("tensors", .array(tensors)),
        ])
    }

    /// A metadata value as JSON; long arrays become `{"type":"array","element_type":…,"count":…,"head":[…]}`.
    public static func json(_ value: MetadataValue) -> JSONValue {
        switch value {
        case .string(let s): return .string(s)
        case .bool(let b): return .bool(b)
        case .float32(let f): return f.isFinite ? .number("\(f)") : .string("\(f)")
        case .float64(let f): return f.isFinite ? .number("\(f)") : .string("\(f)")
        case .array(let a):
            if a.values.count <= arraySummaryThreshold { return .array(a.values.map(json)) }
            return .object([
                ("type", .string("array")), ("element_type", .string(a.elementType.description)),
                ("count", .integer(a.values.count)), ("head", .array(a.values.prefix(8).map(json))),
            ])
        // u64 values above Int.max have no Int form; print them from the UInt64 itself.
        case .uint64(let v): return .number(String(v))
        default: return .number(String(value.intValue ?? 0))
        }
    }

    /// A metadata value for the text report.
    public static func describe(_ value: MetadataValue) -> String {
        switch value {
        case .string(let s):
            let oneLine = s.split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "\\n")
            return oneLine.count > 80 ? String(oneLine.prefix(77)) + "…" : oneLine
        case .array(let a):
            let head = a.values.prefix(6).map(describe).joined(separator: ", ")
            let more = a.values.count > 6 ? ", …" : ""
            return "[\(a.elementType)] × \(a.values.count): [\(head)\(more)]"
        default:
            return json(value).compactText
        }
    }

    /// 254123008 → "254.1 M".
    public static func humanCount(_ n: Int) -> String {
        let units: [(Double, String)] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
        for (scale, suffix) in units where Double(n) >= scale {
            return formatOneDecimal(Double(n) / scale) + " " + suffix
        }
        return String(n)
    }

    /// 508246016 → "508.2 MB" (decimal units, as model hubs show sizes).
    public static func humanBytes(_ n: Int) -> String {
        let units: [(Double, String)] = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")]
        for (scale, suffix) in units where Double(n) >= scale {
            return formatOneDecimal(Double(n) / scale) + " " + suffix
        }
        return "\(n) B"
    }

    static func formatOneDecimal(_ x: Double) -> String {
        let tenths = Int((x * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    /// 4.5 → "4.50".
    static func formatTwoDecimals(_ x: Double) -> String {
        let hundredths = Int((x * 100).rounded())
        let fraction = hundredths % 100
        return "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction)"
    }

    static func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    static func lpad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }
}
