#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A one-line progress display on standard error, shown only when it is a terminal.
final class ProgressLine {
    private let enabled = isatty(STDERR_FILENO) == 1
    private var shown = false

    /// Replaces the line with `text`.
    func update(_ text: String) {
        guard enabled else { return }
        var bytes = Array(("\r\u{1B}[K" + text).utf8)
        _ = write(STDERR_FILENO, &bytes, bytes.count)
        shown = true
    }

    /// Ends the line so later output starts on a fresh one.
    func finish() {
        guard enabled, shown else { return }
        var newline: [UInt8] = [0x0A]
        _ = write(STDERR_FILENO, &newline, 1)
        shown = false
    }
}
