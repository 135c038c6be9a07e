import Checkpoints
import Foundation

/// A scatter plot of a sweep's scored models on two metrics, as a standalone SVG:
/// candidates as grey dots, the Pareto front as blue dots joined by a line, parents as
/// labelled orange squares.
public enum SweepScatter {
    /// A point of the plot.
    public struct Point: Equatable, Sendable {
        /// How a point is drawn.
        public enum Kind: Equatable, Sendable { case candidate, front, parent }
        public var x: Double
        public var y: Double
        public var kind: Kind
        /// Shown beside parents and in every point's tooltip.
        public var label: String

        public init(x: Double, y: Double, kind: Kind, label: String) {
            self.x = x
            self.y = y
            self.kind = kind
            self.label = label
        }
    }

    /// A scored model as plotted: its two metrics and its label.
    public typealias Scored = (x: Double, y: Double, label: String)

    /// The points of `candidates`, those on their Pareto front under `goals` marked,
    /// followed by `parents`; with the front's indices into `candidates`.
    public static func points(candidates: [Scored], parents: [Scored],
                              goals: (x: MetricGoal, y: MetricGoal)) -> (points: [Point], front: Set<Int>) {
        let front = Set(ParetoFront.indices(candidates.map { (x: $0.x, y: $0.y) }, goals: goals))
        let points = candidates.enumerated().map { i, c in
            Point(x: c.x, y: c.y, kind: front.contains(i) ? .front : .candidate, label: c.label)
        } + parents.map { Point(x: $0.x, y: $0.y, kind: .parent, label: $0.label) }
        return (points, front)
    }

    static let width = 640.0, height = 480.0
    static let left = 70.0, right = 20.0, top = 56.0, bottom = 60.0

    /// The SVG document of `points` (non-finite ones are left out) with axes named
    /// after `goals` (their direction shown as "higher is better" or "lower is better").
    public static func svg(_ points: [Point], x xGoal: MetricGoal, y yGoal: MetricGoal, title: String) -> String {
        let shown = points.filter { $0.x.isFinite && $0.y.isFinite }
        let (x0, x1) = span(shown.map(\.x)), (y0, y1) = span(shown.map(\.y))
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * plotWidth }
        func py(_ y: Double) -> Double { top + plotHeight - (y - y0) / (y1 - y0) * plotHeight }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(n(width / 2))" y="22" text-anchor="middle" font-size="14">\(XMLText.escape(title))</text>
            <rect x="\(n(left))" y="\(n(top))" width="\(n(plotWidth))" height="\(n(plotHeight))" fill="none" stroke="#444"/>

            """
        for tick in ticks(x0, x1) {
            svg += "<line x1=\"\(n(px(tick)))\" y1=\"\(n(top + plotHeight))\" x2=\"\(n(px(tick)))\" y2=\"\(n(top + plotHeight + 5))\" stroke=\"#444\"/>"
            svg += "<text x=\"\(n(px(tick)))\" y=\"\(n(top + plotHeight + 18))\" text-anchor=\"middle\">\(label(tick))</text>\n"
        }
        for tick in ticks(y0, y1) {
            svg += "<line x1=\"\(n(left - 5))\" y1=\"\(n(py(tick)))\" x2=\"\(n(left))\" y2=\"\(n(py(tick)))\" stroke=\"#444\"/>"
            svg += "<text x=\"\(n(left - 8))\" y=\"\(n(py(tick) + 4))\" text-anchor=\"end\">\(label(tick))</text>\n"
        }
        svg += "<text x=\"\(n(left + plotWidth / 2))\" y=\"\(n(height - 18))\" text-anchor=\"middle\">\(XMLText.escape(axisName(xGoal)))</text>\n"
        svg += "<text transform=\"translate(16 \(n(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(XMLText.escape(axisName(yGoal)))</text>\n"

        let front = shown.filter { $0.kind == .front }.sorted { $0.x < $1.x }
        if front.count > 1 {
            let line = front.map { "\(n(px($0.x))),\(n(py($0.y)))" }.joined(separator: " ")
            svg += "<polyline points=\"\(line)\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>\n"
        }
        for point in shown where point.kind == .candidate {
            svg += "<circle cx=\"\(n(px(point.x)))\" cy=\"\(n(py(point.y)))\" r=\"3.5\" fill=\"#999\"><title>\(XMLText.escape(point.label))</title></circle>\n"
        }
        for point in front {
            svg += "<circle cx=\"\(n(px(point.x)))\" cy=\"\(n(py(point.y)))\" r=\"5\" fill=\"#1f77b4\"><title>\(XMLText.escape(point.label))</title></circle>\n"
        }
        for point in shown where point.kind == .parent {
            let (x, y) = (px(point.x), py(point.y))
            svg += "<rect x=\"\(n(x - 5))\" y=\"\(n(y - 5))\" width=\"10\" height=\"10\" fill=\"#ff7f0e\"><title>\(XMLText.escape(point.label))</title></rect>"
            svg += "<text x=\"\(n(x + 8))\" y=\"\(n(y - 6))\" fill=\"#b35900\">\(XMLText.escape(shortName(point.label)))</text>\n"
        }
        // Legend in one row between the title and the frame, where no point can hide it.
        let legend: [(String, String)] = [("#999", "candidate"), ("#1f77b4", "Pareto front"), ("#ff7f0e", "parent")]
        var x = left
        for (color, name) in legend {
            let y = top - 12
            svg += "<rect x=\"\(n(x))\" y=\"\(n(y - 8))\" width=\"9\" height=\"9\" fill=\"\(color)\"/>"
            svg += "<text x=\"\(n(x + 14))\" y=\"\(n(y))\">\(name)</text>\n"
            x += 30 + Double(name.count) * 7
        }
        return svg + "</svg>\n"
    }

    /// The metric's name and which way is better.
    static func axisName(_ goal: MetricGoal) -> String {
        goal.name + (goal.maximize ? " (higher is better)" : " (lower is better)")
    }

    /// The last path component of a model path, for labels.
    static func shortName(_ path: String) -> String {
        let trimmed = path.hasSuffix("/") ? String(path.dropLast()) : path
        return trimmed.split(separator: "/").last.map(String.init) ?? path
    }

    /// The data range padded by 5 % on each side (a unit span around a single value).
    static func span(_ values: [Double]) -> (Double, Double) {
        guard let low = values.min(), let high = values.max() else { return (0, 1) }
        guard high > low else { return (low - 0.5, high + 0.5) }
        let pad = (high - low) * 0.05
        return (low - pad, high + pad)
    }

    /// About five round tick positions inside [low, high].
    static func ticks(_ low: Double, _ high: Double) -> [Double] {
        let raw = (high - low) / 5
        let magnitude = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= raw } ?? raw
        var tick = ceil(low / step) * step
        var result: [Double] = []
        while tick <= high, result.count < 20 {
            result.append(tick)
            tick += step
        }
        return result
    }

    static func label(_ v: Double) -> String {
        let text = String(format: "%.4g", v)
        return text == "-0" ? "0" : text
    }

    static func n(_ v: Double) -> String { String(format: "%.1f", v) }
}
