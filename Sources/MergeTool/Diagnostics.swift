import ArgumentParser
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a message line (an error or a warning) to standard error, made safe to
/// show by `DiagnosticText.line(_:)`: one line, no terminal controls, bounded length.
func printError(_ line: String) {
    var bytes = Array((DiagnosticText.line(line) + "\n").utf8)
    _ = write(STDERR_FILENO, &bytes, bytes.count)
}

/// Runs a command body, turning any failure into the one-line
/// `error: <file>: <problem>` message and exit status 1.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        printError("error: \(error)")
        throw ExitCode(1)
    }
}

/// Writes `text` and a newline to standard output; control characters other than
/// line breaks and tabs (which reports use for layout) are shown as escapes, so a
/// tensor name read from a file cannot drive the terminal.
func printOutput(_ text: String) {
    print(DiagnosticText.escapingControls(text, keepingLayout: true))
}

/// How text that may hold names read from files (tensor names, metadata, YAML) is
/// made safe to print as a message line.
enum DiagnosticText {
    /// The longest a quoted value ('…') in a message is shown.
    static let maximumQuotedLength = 200
    /// The longest a message line is shown.
    static let maximumLineLength = 4000

    /// `message` as one printable line: control characters escaped, quoted values
    /// and the whole line shortened with an ellipsis. (Writers name the destination
    /// the user gave, never its temporary: see `TensorSink`.)
    static func line(_ message: String) -> String {
        var text = escapingControls(message, keepingLayout: false)
        text = shorteningQuotedValues(text)
        return shortened(text, to: maximumLineLength)
    }

    /// Control characters (C0, DEL, C1), line and paragraph separators and the
    /// bidirectional overrides shown as visible escapes (`\n`, `\t`, `\x1b`, `\u{202e}`).
    /// With `keepingLayout`, line feeds and tabs stay as they are.
    static func escapingControls(_ text: String, keepingLayout: Bool) -> String {
        guard text.unicodeScalars.contains(where: needsEscape) else { return text }
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            guard needsEscape(scalar), !(keepingLayout && (scalar == "\n" || scalar == "\t")) else {
                out.append(scalar)
                continue
            }
            let escape: String
            switch scalar {
            case "\n": escape = "\\n"
            case "\r": escape = "\\r"
            case "\t": escape = "\\t"
            default:
                let hex = String(scalar.value, radix: 16)
                escape = scalar.value < 0x100
                    ? "\\x" + (hex.count < 2 ? "0" + hex : hex)
                    : "\\u{" + hex + "}"
            }
            out.append(contentsOf: escape.unicodeScalars)
        }
        return String(out)
    }

    private static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0..<0x20, 0x7f..<0xa0: return true
        case 0x2028, 0x2029: return true  // line and paragraph separators
        case 0x200e, 0x200f, 0x202a...0x202e, 0x2066...0x2069: return true  // bidirectional controls
        default: return false
        }
    }

    /// Each value between single quotes longer than `maximumQuotedLength` cut to
    /// that length with an ellipsis. Quotes pair up left to right, as messages write them.
    static func shorteningQuotedValues(_ text: String) -> String {
        let parts = text.split(separator: "'", omittingEmptySubsequences: false)
        guard parts.count > 2 else { return text }
        var out = ""
        for (i, part) in parts.enumerated() {
            if i > 0 { out += "'" }
            // Odd parts lie between an opening and a closing quote.
            if i % 2 == 1 && i < parts.count - 1 {
                out += shortened(String(part), to: maximumQuotedLength)
            } else {
                out += part
            }
        }
        return out
    }

    /// `text` cut to `limit` characters, the cut marked by an ellipsis and the count left out.
    static func shortened(_ text: String, to limit: Int) -> String {
        guard text.unicodeScalars.count > limit else { return text }
        let kept = String(String.UnicodeScalarView(text.unicodeScalars.prefix(limit)))
        return kept + "… (\(text.unicodeScalars.count - limit) more characters)"
    }
}
