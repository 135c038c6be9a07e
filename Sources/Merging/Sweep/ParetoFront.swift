/// A metric to rank by and the direction that is better: `name` is maximised, `-name`
/// minimised.
public struct MetricGoal: Equatable, Sendable, CustomStringConvertible {
    /// The metric's name as the evaluation reports it.
    public var name: String
    /// Whether larger values are better.
    public var maximize: Bool

    public init(name: String, maximize: Bool) {
        self.name = name
        self.maximize = maximize
    }

    /// Reads `name` (maximise) or `-name` (minimise).
    public init?(parsing text: String) {
        let minimize = text.hasPrefix("-")
        let name = minimize ? String(text.dropFirst()) : text
        guard !name.isEmpty, !name.contains(","), name.allSatisfy({ !$0.isWhitespace }) else { return nil }
        self.init(name: name, maximize: !minimize)
    }

    public var description: String { maximize ? name : "-" + name }

    /// Whether `a` is strictly better than `b`.
    public func better(_ a: Double, than b: Double) -> Bool { maximize ? a > b : a < b }
}

/// The Pareto front of points scored on two metrics.
public enum ParetoFront {
    /// The indices (ascending) of the points no other point dominates. A point dominates
    /// another when it is at least as good on both goals and better on one; equal points
    /// do not dominate each other, so both stay on the front. Sorting makes this
    /// O(n log n): scanning from the best x down, a point is dominated exactly when an
    /// earlier group (better x) reached its y, or its own group (same x) passed it.
    public static func indices(_ points: [(x: Double, y: Double)], goals: (x: MetricGoal, y: MetricGoal)) -> [Int] {
        // Both goals as "larger is better".
        let oriented = points.map { (x: goals.x.maximize ? $0.x : -$0.x, y: goals.y.maximize ? $0.y : -$0.y) }
        let order = oriented.indices.sorted { oriented[$0].x > oriented[$1].x }
        var front: [Int] = []
        var bestBefore = -Double.infinity
        var start = 0
        while start < order.count {
            var end = start
            var groupBest = -Double.infinity
            while end < order.count, oriented[order[end]].x == oriented[order[start]].x {
                groupBest = max(groupBest, oriented[order[end]].y)
                end += 1
            }
            for i in order[start..<end] {
                let y = oriented[i].y
                if !(bestBefore >= y), !(groupBest > y) { front.append(i) }
            }
            bestBefore = max(bestBefore, groupBest)
            start = end
        }
        return front.sorted()
    }
}
