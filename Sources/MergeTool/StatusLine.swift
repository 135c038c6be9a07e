import Checkpoints
import Foundation

/// A one-line status display (e.g. training steps) on standard error, shown only
/// when it is a terminal. Safe to update from several threads.
final class StatusLine: Sendable {
    /// True when standard error is a terminal, so anything is drawn at all.
    let enabled = isatty(STDERR_FILENO) == 1
    /// True while a line is drawn; writes to the terminal happen with it locked.
    private let shown = Locked(false)

    /// Replaces the line with `text` (its control characters shown as escapes).
    func update(_ text: String) {
        guard enabled else { return }
        let visible = DiagnosticText.escapingControls(text, keepingLayout: false)
        shown.withLock { shown in
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + visible).utf8))
            shown = true
        }
    }

    /// Erases the line, leaving the terminal as it was.
    func clear() {
        guard enabled else { return }
        shown.withLock { shown in
            if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            shown = false
        }
    }

    /// Ends the line so later output starts on a fresh one.
    func finish() {
        guard enabled else { return }
        shown.withLock { shown in
            if shown { FileHandle.standardError.write(Data("\n".utf8)) }
            shown = false
        }
    }
}
