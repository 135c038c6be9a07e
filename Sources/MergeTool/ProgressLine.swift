import Checkpoints
import Foundation
import Merging

/// A one-line progress bar with ETA, drawn through a `StatusLine` (so only on a
/// terminal) at most ten times a second. Safe to update from several threads.
final class ProgressLine: Sendable {
    private let label: String
    /// What `done` and `total` count ("tensors", "models").
    private let unit: String
    private let line = StatusLine()
    private let start = Date()
    /// When the bar was last drawn; drawing happens with it locked.
    private let lastDraw = Locked(Date.distantPast)

    init(label: String, unit: String = "tensors") {
        self.label = label
        self.unit = unit
    }

    func update(_ p: MergeProgress) {
        draw(done: p.tensorsDone, total: p.tensorCount,
             fraction: p.elementCount > 0 ? Double(p.elementsDone) / Double(p.elementCount) : 1)
    }

    /// Progress counted in `unit`s alone.
    func update(done: Int, total: Int) {
        draw(done: done, total: total, fraction: total > 0 ? Double(done) / Double(total) : 1)
    }

    private func draw(done: Int, total: Int, fraction: Double) {
        guard line.enabled else { return }
        lastDraw.withLock { lastDraw in
            let now = Date()
            guard now.timeIntervalSince(lastDraw) > 0.1 || done == total else { return }
            lastDraw = now
            let width = 30
            let filled = Int(fraction * Double(width))
            let elapsed = now.timeIntervalSince(start)
            let eta = fraction > 0 ? elapsed / fraction - elapsed : 0
            let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
            line.update("\(label) [\(bar)] \(done)/\(total) \(unit), \(String(format: "%.1f", eta)) s left")
        }
    }

    /// Clears the bar, leaving the terminal as it was.
    func finish() {
        line.clear()
    }
}
