/// A strict JSON reader and writer for format headers.
///
/// Format headers come from untrusted files, so this parser keeps what a general
/// decoder throws away: key order, duplicate keys (rejected) and the exact text
/// of numbers (so `1.0`, `-1` and `1e3` can be refused where an integer is
/// required). Nesting is capped so a header of brackets cannot exhaust the stack.
public indirect enum JSONValue: Equatable, Sendable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    /// A number, kept as its source text.
    case number(String)
    case bool(Bool)
    case null

    public static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.object(let x), .object(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.array(let x), .array(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.number(let x), .number(let y)): return x == y
        case (.bool(let x), .bool(let y)): return x == y
        case (.null, .null): return true
        default: return false
        }
    }

    /// The value as a non-negative integer, when it is written as one (digits only).
    public var nonNegativeInteger: Int? {
        guard case .number(let text) = self, !text.isEmpty, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
            return nil
        }
        return Int(text)
    }

    /// The value as a Double, when it is a number.
    public var doubleValue: Double? {
        if case .number(let text) = self { return Double(text) }
        return nil
    }

    /// The string, when the value is one.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// Looks up `key` in an object (first occurrence).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.first(where: { $0.key == key })?.value
    }
}

/// Why a JSON text could not be parsed.
public enum JSONError: Error, Equatable, CustomStringConvertible {
    case syntax(offset: Int, expected: String)
    case duplicateKey(String)
    case tooDeep
    case arrayTooLong(limit: Int)

    public var description: String {
        switch self {
        case .syntax(let offset, let expected): return "expected \(expected) at byte \(offset)"
        case .duplicateKey(let key): return "duplicate key '\(key)'"
        case .tooDeep: return "nesting deeper than \(JSONParser.maximumDepth) levels"
        case .arrayTooLong(let limit): return "an array holds more than \(limit) elements"
        }
    }
}

/// Recursive-descent parser over UTF-8 bytes.
public struct JSONParser {
    static let maximumDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private var depth = 0
    /// When true, an object with a repeated key is an error.
    private let rejectDuplicateKeys: Bool
    /// Most elements an array nested `cappedFromDepth` or more levels deep may hold
    /// (the outermost value is level 1). A format whose arrays are short says so, and
    /// a text of millions of elements is refused as it is read, before it costs a
    /// value tree many times its size.
    private let maximumArrayLength: Int
    private let cappedFromDepth: Int

    /// Parses one JSON value filling all of `bytes` (surrounding white space allowed).
    public static func parse(_ bytes: UnsafeRawBufferPointer, rejectDuplicateKeys: Bool = true,
                             maximumArrayLength: Int = .max, cappedFromDepth: Int = 1) throws(JSONError) -> JSONValue {
        var parser = JSONParser(bytes: bytes, rejectDuplicateKeys: rejectDuplicateKeys, maximumArrayLength: maximumArrayLength,
                                cappedFromDepth: cappedFromDepth)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw .syntax(offset: parser.position, expected: "end of input") }
        return value
    }

    /// Parses a Swift string.
    public static func parse(_ text: String, rejectDuplicateKeys: Bool = true) throws(JSONError) -> JSONValue {
        let bytes = Array(text.utf8)
        let result: Result<JSONValue, JSONError> = bytes.withUnsafeBytes { buffer in
            Result { () throws(JSONError) in try parse(buffer, rejectDuplicateKeys: rejectDuplicateKeys) }
        }
        return try result.get()
    }

    private init(bytes: UnsafeRawBufferPointer, rejectDuplicateKeys: Bool, maximumArrayLength: Int, cappedFromDepth: Int) {
        self.bytes = bytes
        self.rejectDuplicateKeys = rejectDuplicateKeys
        self.maximumArrayLength = maximumArrayLength
        self.cappedFromDepth = cappedFromDepth
    }

    private var current: UInt8? { position < bytes.count ? bytes[position] : nil }

    private mutating func skipWhitespace() {
        while let c = current, c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09 { position += 1 }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws(JSONError) {
        guard current == byte else { throw .syntax(offset: position, expected: what) }
        position += 1
    }

    private mutating func parseValue() throws(JSONError) -> JSONValue {
        guard let c = current else { throw .syntax(offset: position, expected: "a value") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try parseLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try parseLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try parseLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw .syntax(offset: position, expected: "a value")
        }
    }

    private mutating func parseLiteral(_ word: StaticString) throws(JSONError) {
        let start = position
        for byte in UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount) {
            guard current == byte else { throw .syntax(offset: start, expected: "\(word)") }
            position += 1
        }
    }

    private mutating func enter() throws(JSONError) {
        depth += 1
        if depth > JSONParser.maximumDepth { throw .tooDeep }
    }

    private mutating func parseObject() throws(JSONError) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        position += 1
        var members: [(key: String, value: JSONValue)] = []
        var seen = Set<String>()
        skipWhitespace()
        if current == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard current == UInt8(ascii: "\"") else { throw .syntax(offset: position, expected: "a key string") }
            let key = try parseString()
            if rejectDuplicateKeys, !seen.insert(key).inserted { throw .duplicateKey(key) }
            skipWhitespace()
            try expect(UInt8(ascii: ":"), "':'")
            skipWhitespace()
            members.append((key, try parseValue()))
            skipWhitespace()
            if current == UInt8(ascii: ",") { position += 1; continue }
            try expect(UInt8(ascii: "}"), "',' or '}'")
            return .object(members)
        }
    }

    private mutating func parseArray() throws(JSONError) -> JSONValue {
        try enter()
        defer { depth -= 1 }
        position += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if current == UInt8(ascii: "]") {
            position += 1
            return .array(items)
        }
        while true {
            skipWhitespace()
            guard items.count < maximumArrayLength || depth < cappedFromDepth else { throw .arrayTooLong(limit: maximumArrayLength) }
            items.append(try parseValue())
            skipWhitespace()
            if current == UInt8(ascii: ",") { position += 1; continue }
            try expect(UInt8(ascii: "]"), "',' or ']'")
            return .array(items)
        }
    }

    private mutating func parseNumber() throws(JSONError) -> JSONValue {
        let start = position
        if current == UInt8(ascii: "-") { position += 1 }
        func digits(_ p: inout JSONParser) -> Int {
            var n = 0
            while let c = p.current, c >= 0x30 && c <= 0x39 { p.position += 1; n += 1 }
            return n
        }
        if current == UInt8(ascii: "0") {
            position += 1
        } else if digits(&self) == 0 {
            throw .syntax(offset: position, expected: "a digit")
        }
        if current == UInt8(ascii: ".") {
            position += 1
            guard digits(&self) > 0 else { throw .syntax(offset: position, expected: "a digit") }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            position += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { position += 1 }
            guard digits(&self) > 0 else { throw .syntax(offset: position, expected: "a digit") }
        }
        return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self))
    }

    private mutating func parseString() throws(JSONError) -> String {
        position += 1
        let start = position
        // Fast path: no escapes.
        while let c = current, c != UInt8(ascii: "\""), c != UInt8(ascii: "\\"), c >= 0x20 { position += 1 }
        if current == UInt8(ascii: "\"") {
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
            position += 1
            return text
        }
        var scalars = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<position]))
        while true {
            guard let c = current else { throw .syntax(offset: position, expected: "closing '\"'") }
            if c == UInt8(ascii: "\"") { position += 1; break }
            if c < 0x20 { throw .syntax(offset: position, expected: "an escaped control character") }
            if c != UInt8(ascii: "\\") { scalars.append(c); position += 1; continue }
            position += 1
            guard let e = current else { throw .syntax(offset: position, expected: "an escape") }
            position += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(e)
            case UInt8(ascii: "b"): scalars.append(0x08)
            case UInt8(ascii: "f"): scalars.append(0x0c)
            case UInt8(ascii: "n"): scalars.append(0x0a)
            case UInt8(ascii: "r"): scalars.append(0x0d)
            case UInt8(ascii: "t"): scalars.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHex4()
                if (0xD800..<0xDC00).contains(code) {
                    guard current == UInt8(ascii: "\\") else { throw .syntax(offset: position, expected: "a low surrogate") }
                    position += 1
                    guard current == UInt8(ascii: "u") else { throw .syntax(offset: position, expected: "a low surrogate") }
                    position += 1
                    let low = try parseHex4()
                    guard (0xDC00..<0xE000).contains(low) else { throw .syntax(offset: position, expected: "a low surrogate") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(code) {
                    throw .syntax(offset: position, expected: "a high surrogate first")
                }
                scalars.append(contentsOf: Array(String(Character(Unicode.Scalar(code)!)).utf8))
            default:
                throw .syntax(offset: position - 1, expected: "a valid escape")
            }
        }
        return String(decoding: scalars, as: UTF8.self)
    }

    private mutating func parseHex4() throws(JSONError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let c = current else { throw .syntax(offset: position, expected: "4 hex digits") }
            let digit: UInt32
            switch c {
            case 0x30...0x39: digit = UInt32(c - 0x30)
            case 0x41...0x46: digit = UInt32(c - 0x41 + 10)
            case 0x61...0x66: digit = UInt32(c - 0x61 + 10)
            default: throw .syntax(offset: position, expected: "4 hex digits")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }
}

extension JSONValue {
    /// Compact JSON text, escaped as serde_json does (the safetensors reference
    /// writer): `"` `\` and control characters escaped, everything else raw UTF-8.
    public var compactText: String {
        var out = ""
        write(to: &out, indent: nil, level: 0)
        return out
    }

    /// Indented JSON text (two spaces per level), for files people read.
    public var prettyText: String {
        var out = ""
        write(to: &out, indent: "  ", level: 0)
        return out
    }

    private func write(to out: inout String, indent: String?, level: Int) {
        let newline = indent.map { _ in "\n" } ?? ""
        func pad(_ l: Int) -> String { indent.map { String(repeating: $0, count: l) } ?? "" }
        let colon = indent == nil ? ":" : ": "
        switch self {
        case .object(let members):
            if members.isEmpty { out += "{}"; return }
            out += "{" + newline
            for (i, m) in members.enumerated() {
                out += pad(level + 1)
                JSONValue.escape(m.key, into: &out)
                out += colon
                m.value.write(to: &out, indent: indent, level: level + 1)
                out += (i + 1 < members.count ? "," : "") + newline
            }
            out += pad(level) + "}"
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "[" + newline
            for (i, item) in items.enumerated() {
                out += pad(level + 1)
                item.write(to: &out, indent: indent, level: level + 1)
                out += (i + 1 < items.count ? "," : "") + newline
            }
            out += pad(level) + "]"
        case .string(let s): JSONValue.escape(s, into: &out)
        case .number(let n): out += n
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        }
    }

    /// Appends `s` as a JSON string literal.
    public static func escape(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    /// A number value from an integer.
    public static func integer(_ n: Int) -> JSONValue { .number(String(n)) }
}
