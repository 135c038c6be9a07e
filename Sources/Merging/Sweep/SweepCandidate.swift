import Checkpoints
import Foundation
import Yams

/// One point of a sweep: the recipe with each axis's value substituted.
public struct SweepCandidate: Equatable, Sendable {
    /// Its place in the sweep's order (the order of the grid, or of the draws).
    public var index: Int
    /// Each axis's path and the value it takes here, in axis order.
    public var values: [SweepValue]
    /// The candidate's recipe text, as `fuse --config` reads it.
    public var recipe: String

    /// What identifies the candidate in a results file: its values as `path=value`,
    /// joined by spaces (the same for the same values, whatever run made them).
    public var key: String { Self.key(values) }

    static func key(_ values: [SweepValue]) -> String {
        values.map { "\($0.path)=\($0.value)" }.joined(separator: " ")
    }
}

/// The candidates of a sweep over a recipe.
public enum SweepPlan {
    /// The most candidates a sweep makes.
    public static let maximumCandidates = 100_000

    /// How candidates are chosen from the axes.
    public enum Selection: Equatable, Sendable {
        /// Every combination of the axes' grid values; the last axis varies fastest.
        case grid
        /// `count` draws (duplicates dropped): ranges sampled uniformly, lists picked
        /// uniformly, from a generator seeded with `seed`.
        case random(count: Int, seed: UInt64)
    }

    /// The candidates of `recipe` (YAML text read from `file`) over `axes`. Each is a valid
    /// recipe: the substituted document is parsed as `fuse --config` would, so a value
    /// a recipe cannot take is reported before anything is merged.
    public static func candidates(recipe: String, file: String, axes: [SweepAxis], selection: Selection)
        throws(SweepError) -> [SweepCandidate]
    {
        let root: Node?
        do {
            root = try Yams.compose(yaml: recipe)
        } catch {
            throw .badPath(file: file, path: "", problem: "not valid YAML: \(MergeRecipe.yamlProblem(error))")
        }
        guard let document = root else { throw .badPath(file: file, path: "", problem: "the recipe is empty") }
        var seen = Set<String>()
        for axis in axes {
            guard seen.insert(axis.path.description).inserted else {
                throw .badAxis(axis: axis.path.description, problem: "the path is swept twice")
            }
        }
        var points: [[String]] = []
        switch selection {
        case .grid:
            var total = 1
            for axis in axes {
                let (product, overflow) = total.multipliedReportingOverflow(by: axis.gridValues.count)
                guard !overflow, product <= maximumCandidates else {
                    throw .badAxis(axis: axis.path.description,
                                   problem: "the grid has more than \(maximumCandidates) candidates (use --random N)")
                }
                total = product
            }
            points = [[]]
            for axis in axes {
                let values = axis.gridValues
                points = points.flatMap { point in values.map { point + [$0] } }
            }
        case .random(let count, let seed):
            guard count >= 1, count <= maximumCandidates else {
                throw .badAxis(axis: "--random", problem: "N must be from 1 to \(maximumCandidates)")
            }
            let random = CounterRandom(seed: seed, tensor: "sweep", model: 0)
            var keys = Set<String>()
            var draw = 0
            // Lists can hold fewer combinations than asked for: stop after many repeats.
            while points.count < count, draw < count * 20 {
                var point: [String] = []
                for axis in axes {
                    point.append(axis.sample(unit(random, draw)))
                    draw += 1
                }
                if keys.insert(point.joined(separator: "\u{0}")).inserted { points.append(point) }
                if axes.isEmpty { break }
            }
        }
        var candidates: [SweepCandidate] = []
        for (index, point) in points.enumerated() {
            var node = document
            var values: [SweepValue] = []
            for (axis, value) in zip(axes, point) {
                node = try axis.path.setting(value, in: node, file: file)
                values.append(SweepValue(path: axis.path.description, value: value))
            }
            let text: String
            do {
                text = try Yams.serialize(node: node, sortKeys: false)
            } catch {
                throw .badPath(file: file, path: "", problem: "cannot write the candidate: \(error)")
            }
            do {
                _ = try MergeRecipe.parse(text, file: file)
            } catch {
                throw .badCandidate(values: SweepCandidate.key(values), problem: "\(error)")
            }
            candidates.append(SweepCandidate(index: index, values: values, recipe: text))
        }
        return candidates
    }

    /// A uniform Double in [0, 1) for draw `n` of `random`, from three of its 16-bit draws.
    private static func unit(_ random: CounterRandom, _ n: Int) -> Double {
        let bits = UInt64(random.bits(3 * n)) << 32 | UInt64(random.bits(3 * n + 1)) << 16 | UInt64(random.bits(3 * n + 2))
        return Double(bits) * 0x1.0p-48
    }
}
