import Checkpoints
import Foundation

/// A self-contained SVG picture of a statistics report: the log10 |δ|
/// histograms of every delta overlaid, and the per-layer density (share of
/// entries changed) of each. No scripts, fonts or images from elsewhere.
public struct DeltaStatisticsPlot {
    public let report: DeltaStatisticsReport

    static let width = 1000.0
    static let height = 440.0
    static let palette = ["#1f6fb4", "#d0402b", "#2b9a3e", "#8a55b8", "#e08a10", "#6b4a3a"]

    public init(_ report: DeltaStatisticsReport) {
        self.report = report
    }

    /// Writes the SVG to `path` through a temporary file renamed into place.
    public func write(to path: String) throws(CheckpointError) {
        let output = try OutputPath(destination: path, isDirectory: false, overwrite: true)
        guard FileManager.default.createFile(atPath: output.temporary, contents: Data(svg.utf8)) else {
            throw .io(file: path, problem: "cannot write")
        }
        try output.commit()
    }

    /// The SVG document.
    public var svg: String {
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(Self.width))" height="\(Int(Self.height))" \
            viewBox="0 0 \(Int(Self.width)) \(Int(Self.height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>

            """
        out += histogramPanel(Frame(x: 70, y: 50, width: 480, height: 310))
        out += densityPanel(Frame(x: 640, y: 50, width: 330, height: 310))
        out += legend(x: 70, y: 412)
        out += "</svg>\n"
        return out
    }

    struct Frame {
        let x: Double, y: Double, width: Double, height: Double
        func px(_ t: Double) -> Double { x + t * width }
        func py(_ t: Double) -> Double { y + height - t * height }
    }

    private func color(_ d: Int) -> String { Self.palette[d % Self.palette.count] }

    /// log10 |δ| histograms: share of each delta's entries per 0.1-wide bin.
    private func histogramPanel(_ f: Frame) -> String {
        let shares = report.model.deltas.map { delta in delta.log10Histogram.map { Double($0) / Double(max(delta.elements, 1)) } }
        let occupied = shares.flatMap { h in h.indices.filter { h[$0] > 0 } }
        var out = panelTitle(f, "Distribution of log10 |δ| (non-zero entries)")
        guard let first = occupied.min(), let last = occupied.max() else { return out + emptyNote(f, "every delta is zero") }
        let lowEdge = (Log10Bins.lowerEdge(first) - 0.5).rounded(.down)
        let highEdge = (Log10Bins.lowerEdge(last + 1) + 0.5).rounded(.up)
        let yMax = niceCeiling(shares.joined().max() ?? 0)
        out += axes(f, xLabel: "log10 |δ|", yLabel: "share of entries per 0.1 bin",
                    xTicks: stride(from: lowEdge, through: highEdge, by: 1).map { ($0, String(Int($0))) },
                    xRange: (lowEdge, highEdge), yMax: yMax)
        for (d, h) in shares.enumerated() {
            var points: [(Double, Double)] = [(lowEdge, 0)]
            for i in first...last {
                points.append((Log10Bins.lowerEdge(i), h[i]))
                points.append((Log10Bins.lowerEdge(i + 1), h[i]))
            }
            points.append((highEdge, 0))
            let path = points.map { "\(fmt(f.px(($0.0 - lowEdge) / (highEdge - lowEdge)))),\(fmt(f.py($0.1 / yMax)))" }
            out += "<polyline points=\"\(path.joined(separator: " "))\" fill=\"\(color(d))\" fill-opacity=\"0.15\" "
                + "stroke=\"\(color(d))\" stroke-width=\"1.5\"/>\n"
        }
        return out
    }

    /// Share of entries changed (non-zero δ) in each layer.
    private func densityPanel(_ f: Frame) -> String {
        var out = panelTitle(f, "Density per layer")
        let layers = report.layers
        guard let firstLayer = layers.first?.layer, let lastLayer = layers.last?.layer else {
            return out + emptyNote(f, "no tensor names a layer")
        }
        let span = Double(max(lastLayer - firstLayer, 1))
        let lo = Double(firstLayer) - 0.5, hi = Double(firstLayer) + span + 0.5
        let step = max(1, Int((span / 8).rounded(.up)))
        out += axes(f, xLabel: "layer", yLabel: "share of entries changed",
                    xTicks: stride(from: firstLayer, through: lastLayer, by: step).map { (Double($0), String($0)) },
                    xRange: (lo, hi), yMax: 1)
        for d in report.names.indices {
            var points: [String] = []
            var marks = ""
            for scope in layers {
                guard let layer = scope.layer, let zero = scope.deltas[d].zeroShare else { continue }
                let x = f.px((Double(layer) - lo) / (hi - lo)), y = f.py(1 - zero)
                points.append("\(fmt(x)),\(fmt(y))")
                marks += "<circle cx=\"\(fmt(x))\" cy=\"\(fmt(y))\" r=\"3\" fill=\"\(color(d))\"/>\n"
            }
            out += "<polyline points=\"\(points.joined(separator: " "))\" fill=\"none\" stroke=\"\(color(d))\" stroke-width=\"1.5\"/>\n"
            out += marks
        }
        return out
    }

    private func legend(x: Double, y: Double) -> String {
        var out = ""
        var cursor = x
        for (d, name) in report.names.enumerated() {
            let f = report.model.deltas[d]
            let label = "\(name): \(percent(f.zeroShare)) zero, top 1 % holds \(percent(f.topMassShare)) of |δ| mass"
            out += "<rect x=\"\(fmt(cursor))\" y=\"\(fmt(y - 10))\" width=\"14\" height=\"10\" fill=\"\(color(d))\"/>\n"
            out += "<text x=\"\(fmt(cursor + 20))\" y=\"\(fmt(y))\">\(XMLText.escape(label))</text>\n"
            cursor += 30 + Double(label.count) * 6.6
        }
        return out
    }

    private func axes(_ f: Frame, xLabel: String, yLabel: String, xTicks: [(Double, String)],
                      xRange: (Double, Double), yMax: Double) -> String {
        var out = "<rect x=\"\(fmt(f.x))\" y=\"\(fmt(f.y))\" width=\"\(fmt(f.width))\" height=\"\(fmt(f.height))\" "
            + "fill=\"none\" stroke=\"#333\"/>\n"
        for (value, label) in xTicks {
            let x = f.px((value - xRange.0) / (xRange.1 - xRange.0))
            out += "<line x1=\"\(fmt(x))\" y1=\"\(fmt(f.y + f.height))\" x2=\"\(fmt(x))\" y2=\"\(fmt(f.y + f.height + 5))\" stroke=\"#333\"/>\n"
            out += "<text x=\"\(fmt(x))\" y=\"\(fmt(f.y + f.height + 18))\" text-anchor=\"middle\">\(XMLText.escape(label))</text>\n"
        }
        for i in 0...4 {
            let t = Double(i) / 4, y = f.py(t)
            let value = yMax * t
            let label = String(format: value * 100 < 10 && value > 0 ? "%.1f %%" : "%.0f %%", value * 100)
            out += "<line x1=\"\(fmt(f.x - 5))\" y1=\"\(fmt(y))\" x2=\"\(fmt(f.x + f.width))\" y2=\"\(fmt(y))\" "
                + "stroke=\"\(i == 0 ? "#333" : "#ddd")\"/>\n"
            out += "<text x=\"\(fmt(f.x - 8))\" y=\"\(fmt(y + 4))\" text-anchor=\"end\">\(label)</text>\n"
        }
        out += "<text x=\"\(fmt(f.x + f.width / 2))\" y=\"\(fmt(f.y + f.height + 36))\" text-anchor=\"middle\">\(XMLText.escape(xLabel))</text>\n"
        let cy = f.y + f.height / 2
        out += "<text x=\"\(fmt(f.x - 52))\" y=\"\(fmt(cy))\" text-anchor=\"middle\" "
            + "transform=\"rotate(-90 \(fmt(f.x - 52)) \(fmt(cy)))\">\(XMLText.escape(yLabel))</text>\n"
        return out
    }

    private func panelTitle(_ f: Frame, _ title: String) -> String {
        "<text x=\"\(fmt(f.x))\" y=\"\(fmt(f.y - 14))\" font-size=\"14\" font-weight=\"bold\">\(XMLText.escape(title))</text>\n"
    }

    private func emptyNote(_ f: Frame, _ note: String) -> String {
        "<text x=\"\(fmt(f.x + f.width / 2))\" y=\"\(fmt(f.y + f.height / 2))\" text-anchor=\"middle\">\(XMLText.escape(note))</text>\n"
    }

    /// The smallest round number at or above `value` whose quarters are round too.
    private func niceCeiling(_ value: Double) -> Double {
        guard value > 0 else { return 1 }
        let power = pow(10, (log10(value)).rounded(.down))
        for m in [1.0, 1.2, 1.6, 2, 2.4, 3.2, 4, 6, 8, 10] where m * power >= value * 1.0001 { return m * power }
        return 10 * power
    }

    private func fmt(_ v: Double) -> String { String(format: "%.1f", v) }
}
