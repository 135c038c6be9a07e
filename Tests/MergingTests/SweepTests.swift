import Foundation
import Testing
import Yams
@testable import Merging

private let recipe = """
    merge_method: ties
    base_model: base
    models:
      - model: sft
        parameters:
          density: 0.5
          weight: 1
      - model: dpo
        parameters:
          weight: 1
    parameters:
      normalize: true
    """

@Suite struct SweepAxisTests {
    @Test(arguments: [
        ("models.0.parameters.density=0.1:0.9:5", ["0.1", "0.3", "0.5", "0.7", "0.9"]),
        ("parameters.t=0:1:3", ["0", "0.5", "1"]),
        ("parameters.lambda=2:1:2", ["2", "1"]),
        ("a=0.5:0.5:1", ["0.5"]),
        ("models.1.parameters.weight=0.50, 1,2e-1", ["0.5", "1", "0.2"]),
        ("merge_method=ties,dare_ties", ["ties", "dare_ties"]),
    ])
    func parsesRangesAndLists(text: String, values: [String]) throws {
        let axis = try SweepAxis(parsing: text)
        #expect(axis.gridValues == values)
        #expect(axis.path.description == String(text[..<text.firstIndex(of: "=")!]))
    }

    @Test func rangeValuesAreEvenlySpacedWithExactEnds() throws {
        let axis = try SweepAxis(parsing: "x=0.1:0.7:7")
        let values = axis.gridValues.map { Double($0)! }
        #expect(values.first == 0.1 && values.last == 0.7 && values.count == 7)
        for (a, b) in zip(values, values.dropFirst()) { #expect(abs((b - a) - 0.1) < 1e-12) }
    }

    @Test(arguments: [
        ("density", "expected PATH=FROM:TO:COUNT"),
        ("=1,2", "a path is keys and indices"),
        ("a..b=1", "a path is keys and indices"),
        ("x=1:2", "a range is FROM:TO:COUNT"),
        ("x=1:2:3:4", "a range is FROM:TO:COUNT"),
        ("x=1:2:0", "COUNT '0' must be"),
        ("x=1:2:two", "COUNT 'two' must be"),
        ("x=1:2:10001", "COUNT '10001' must be"),
        ("x=a:2:3", "'a' is not a finite number"),
        ("x=0:inf:3", "'inf' is not a finite number"),
        ("x=1:2:1", "a range of one value"),
        ("x=1,,2", "an empty value"),
        ("x=", "an empty value"),
        ("x=1,1.0", "a value is listed twice"),
        ("x=nan,1", "'nan' is not a finite number"),
    ])
    func rejectsBadAxes(text: String, problem: String) {
        #expect {
            _ = try SweepAxis(parsing: text)
        } throws: { error in
            guard let error = error as? SweepError, case .badAxis(let axis, _) = error else { return false }
            return axis == text && error.description.contains(problem)
        }
    }
}

@Suite struct RecipePathTests {
    private func document() throws -> Node { try Yams.compose(yaml: recipe)! }

    @Test func replacesAValueInAListEntry() throws {
        let edited = try RecipePath(parsing: "models.1.parameters.weight").setting("0.25", in: document(), file: "r.yml")
        let plan = try MergeRecipe.parse(try Yams.serialize(node: edited), file: "r.yml")
        #expect(plan.models[1].parameters["weight"] == .number(0.25))
        #expect(plan.models[0].parameters["weight"] == .number(1))
        #expect(plan.models[0].parameters["density"] == .number(0.5))
    }

    @Test func addsAMissingLastKeyToAnExistingMapping() throws {
        let edited = try RecipePath(parsing: "models.1.parameters.density").setting("0.7", in: document(), file: "r.yml")
        let plan = try MergeRecipe.parse(try Yams.serialize(node: edited), file: "r.yml")
        #expect(plan.models[1].parameters["density"] == .number(0.7))
        let top = try RecipePath(parsing: "seed").setting("4", in: document(), file: "r.yml")
        #expect(try MergeRecipe.parse(try Yams.serialize(node: top), file: "r.yml").seed == 4)
    }

    @Test(arguments: [
        ("models.2.parameters.weight", "'models.2' does not exist (the list has 2 entries, indices 0 to 1)"),
        ("models.first.weight", "'models.first' meets a list: 'first' must be an index"),
        ("modles.0.parameters.weight", "'modles' does not exist (keys there: merge_method, base_model, models, parameters)"),
        ("models.1.params.weight", "'models.1.params' does not exist"),
        ("merge_method.name", "'merge_method' is a single value"),
    ])
    func refusesPathsWhoseParentIsMissing(path: String, problem: String) throws {
        let document = try document()
        #expect {
            _ = try RecipePath(parsing: path).setting("1", in: document, file: "r.yml")
        } throws: { error in
            "\(error)".hasPrefix("r.yml: path '\(path)': ") && "\(error)".contains(problem)
        }
    }
}

@Suite struct SweepPlanTests {
    private let axes = [try! SweepAxis(parsing: "models.0.parameters.density=0.2:0.6:3"),
                        try! SweepAxis(parsing: "models.1.parameters.weight=0.5,1")]

    @Test func gridIsTheProductWithTheLastAxisFastest() throws {
        let candidates = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: axes, selection: .grid)
        #expect(candidates.count == 6)
        #expect(candidates.map(\.index) == Array(0..<6))
        #expect(candidates.map(\.key) == [
            "models.0.parameters.density=0.2 models.1.parameters.weight=0.5",
            "models.0.parameters.density=0.2 models.1.parameters.weight=1",
            "models.0.parameters.density=0.4 models.1.parameters.weight=0.5",
            "models.0.parameters.density=0.4 models.1.parameters.weight=1",
            "models.0.parameters.density=0.6 models.1.parameters.weight=0.5",
            "models.0.parameters.density=0.6 models.1.parameters.weight=1",
        ])
        for candidate in candidates {
            let plan = try MergeRecipe.parse(candidate.recipe, file: "c.yml")
            #expect(plan.models[0].parameters["density"] == .number(Double(candidate.values[0].value)!))
            #expect(plan.models[1].parameters["weight"] == .number(Double(candidate.values[1].value)!))
            #expect(plan.method == .ties && plan.base == "base")
        }
    }

    @Test func randomDrawsAreSeededAndInsideTheAxes() throws {
        let a = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: axes, selection: .random(count: 5, seed: 1))
        let b = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: axes, selection: .random(count: 5, seed: 1))
        let c = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: axes, selection: .random(count: 5, seed: 2))
        #expect(a.count == 5)
        #expect(a.map(\.key) == b.map(\.key))
        #expect(a.map(\.key) != c.map(\.key))
        #expect(Set(a.map(\.key)).count == 5)
        for candidate in a + c {
            let density = Double(candidate.values[0].value)!
            #expect(density >= 0.2 && density <= 0.6)
            #expect(["0.5", "1"].contains(candidate.values[1].value))
        }
    }

    @Test func randomStopsWhenAListHoldsFewerCombinations() throws {
        let axis = try SweepAxis(parsing: "models.1.parameters.weight=0.5,1,2")
        let drawn = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: [axis], selection: .random(count: 10, seed: 0))
        #expect(drawn.count == 3)
    }

    @Test func aValueTheRecipeCannotTakeIsReportedBeforeMerging() throws {
        let axis = try SweepAxis(parsing: "merge_method=ties,tie")
        #expect {
            _ = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: [axis], selection: .grid)
        } throws: { error in
            "\(error)".hasPrefix("candidate merge_method=tie: unknown merge method 'tie'")
        }
    }

    @Test func refusesAPathSweptTwiceAndAnOversizedGrid() throws {
        let twice = [axes[0], axes[0]]
        #expect(throws: SweepError.self) {
            _ = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: twice, selection: .grid)
        }
        let big = try ["models.0.parameters.density=0:1:1000", "models.1.parameters.weight=0:1:1000"].map(SweepAxis.init(parsing:))
        #expect {
            _ = try SweepPlan.candidates(recipe: recipe, file: "r.yml", axes: big, selection: .grid)
        } throws: { "\($0)".contains("more than 100000 candidates") }
    }
}

@Suite struct ParetoFrontTests {
    /// The definition, checked pair by pair.
    private func bruteForce(_ points: [(x: Double, y: Double)], _ goals: (x: MetricGoal, y: MetricGoal)) -> [Int] {
        func atLeast(_ a: Double, _ b: Double, _ goal: MetricGoal) -> Bool { goal.maximize ? a >= b : a <= b }
        return points.indices.filter { i in
            !points.indices.contains { j in
                j != i && atLeast(points[j].x, points[i].x, goals.x) && atLeast(points[j].y, points[i].y, goals.y)
                    && (points[j].x != points[i].x || points[j].y != points[i].y)
            }
        }
    }

    @Test(arguments: [(true, true), (true, false), (false, true), (false, false)])
    func matchesTheDefinitionOnRandomPointsWithTies(maximizeX: Bool, maximizeY: Bool) {
        let goals = (x: MetricGoal(name: "a", maximize: maximizeX), y: MetricGoal(name: "b", maximize: maximizeY))
        var random = SystemRandomNumberGenerator()
        for size in [0, 1, 2, 3, 5, 10, 40, 200] {
            for _ in 0..<20 {
                // Few distinct values, so equal coordinates and equal points are common.
                let points = (0..<size).map { _ in (x: Double(Int.random(in: 0..<8, using: &random)),
                                                    y: Double(Int.random(in: 0..<8, using: &random)) / 2) }
                #expect(ParetoFront.indices(points, goals: goals) == bruteForce(points, goals))
            }
        }
    }

    @Test func keepsTheTradeOffAndDropsTheDominated() {
        let points: [(x: Double, y: Double)] = [(1, 5), (2, 4), (2, 3), (3, 1), (0, 0), (3, 1)]
        let goals = (x: MetricGoal(parsing: "acc")!, y: MetricGoal(parsing: "margin")!)
        #expect(ParetoFront.indices(points, goals: goals) == [0, 1, 3, 5])
        let minimizing = (x: MetricGoal(parsing: "-loss")!, y: MetricGoal(parsing: "-ppl")!)
        #expect(ParetoFront.indices(points, goals: minimizing) == [4])
    }

    @Test func goalsParse() {
        #expect(MetricGoal(parsing: "-loss") == MetricGoal(name: "loss", maximize: false))
        #expect(MetricGoal(parsing: "acc") == MetricGoal(name: "acc", maximize: true))
        #expect(MetricGoal(parsing: "-") == nil)
        #expect(MetricGoal(parsing: "a,b") == nil)
    }
}

@Suite struct SweepResultsTests {
    private let candidate = SweepRecord(
        subject: .candidate(index: 3, values: [SweepValue(path: "models.0.parameters.density", value: "0.3"),
                                               SweepValue(path: "merge_method", value: "ties")]),
        metrics: ["acc": 0.75, "loss": 1.5], seconds: 1.25, fingerprint: "0123456789abcdef")

    @Test func recordsRoundTripThroughTheirLine() {
        let failed = SweepRecord(subject: .candidate(index: 0, values: [SweepValue(path: "a", value: "1")]),
                                 error: "the evaluation command exited with status 1", seconds: 0.5)
        let parent = SweepRecord(subject: .parent(model: "models/sft \"x\""), metrics: ["acc": 0.5], seconds: 0)
        for record in [candidate, failed, parent] {
            #expect(SweepRecord(jsonLine: record.jsonLine) == record)
        }
        #expect(candidate.jsonLine == "{\"kind\":\"candidate\",\"index\":3,\"parameters\":{\"models.0.parameters.density\":0.3,"
            + "\"merge_method\":\"ties\"},\"metrics\":{\"acc\":0.75,\"loss\":1.5},\"seconds\":1.250,"
            + "\"fingerprint\":\"0123456789abcdef\"}")
        #expect(candidate.key == "models.0.parameters.density=0.3 merge_method=ties")
        #expect(candidate.label == "#3 0.density=0.3 merge_method=ties")
    }

    @Test func readingKeepsTheLastRecordOfAKeyAndSkipsBrokenLines() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var failed = candidate
        failed.metrics = [:]
        failed.error = "boom"
        let other = SweepRecord(subject: .candidate(index: 4, values: [SweepValue(path: "a", value: "2")]), error: "no")
        let text = [failed.jsonLine, "not json", other.jsonLine, candidate.jsonLine, String(candidate.jsonLine.prefix(30))]
            .joined(separator: "\n")
        try text.write(toFile: folder + "/results.jsonl", atomically: true, encoding: .utf8)
        let records = try SweepResults.read(folder + "/results.jsonl")
        #expect(records == [candidate, other])
        #expect(SweepResults.done(records) == [candidate.key: "0123456789abcdef"])
        #expect(try SweepResults.read(folder + "/missing.jsonl").isEmpty)
    }

    @Test func fingerprintsDifferWithAnyPart() {
        let a = SweepResults.fingerprint(["merge_method: ties\n", "builtin"])
        #expect(a.count == 16)
        #expect(a == SweepResults.fingerprint(["merge_method: ties\n", "builtin"]))
        #expect(a != SweepResults.fingerprint(["merge_method: ties\n", "sh score.sh"]))
        #expect(a != SweepResults.fingerprint(["merge_method: ties\nbuiltin"]))
    }

    @Test func rankingPutsTheBestFirstAndFailuresLast() {
        func record(_ i: Int, _ acc: Double?, error: String? = nil) -> SweepRecord {
            SweepRecord(subject: .candidate(index: i, values: [SweepValue(path: "a", value: String(i))]),
                        metrics: acc.map { ["acc": $0] } ?? ["other": 1], error: error)
        }
        let records = [record(0, 0.5), record(1, nil, error: "x"), record(2, 0.9), record(3, nil), record(4, 0.5), record(5, 0.1)]
        let up = SweepResults.ranked(records, by: MetricGoal(parsing: "acc")!)
        #expect(up.map(\.key) == ["a=2", "a=0", "a=4", "a=5", "a=3", "a=1"])
        let down = SweepResults.ranked(records, by: MetricGoal(parsing: "-acc")!)
        #expect(down.map(\.key) == ["a=5", "a=0", "a=4", "a=2", "a=3", "a=1"])
    }

    @Test(arguments: [
        ("{\"acc\": 0.5, \"loss\": 2}\n", ["acc": 0.5, "loss": 2.0]),
        ("loading...\nstep 3\n{\"acc\": 1, \"margin\": null}\n", ["acc": 1.0]),
    ])
    func readsMetricsFromAnEvaluationsOutput(output: String, metrics: [String: Double]) throws {
        #expect(try SweepRecord.metrics(fromOutput: output) == metrics)
    }

    @Test(arguments: [
        ("", "printed nothing"),
        ("[1, 2]", "not a JSON object of metrics"),
        ("{\"acc\": \"high\"}", "metric 'acc' is not a finite number"),
        ("{\"acc\": 1e999}", "metric 'acc' is not a finite number"),
        ("{}", "reported no metrics"),
        ("{\"acc\": 1", "not a JSON object"),
    ])
    func refusesOutputThatIsNotMetrics(output: String, problem: String) {
        #expect { _ = try SweepRecord.metrics(fromOutput: output) } throws: { "\($0)".contains(problem) }
    }
}

@Suite struct SweepScatterTests {
    @Test func drawsEveryKindOfPointAndEscapesLabels() {
        let points = [
            SweepScatter.Point(x: 1, y: 2, kind: .candidate, label: "#0 a=1"),
            SweepScatter.Point(x: 2, y: 3, kind: .front, label: "#1 a=2"),
            SweepScatter.Point(x: 3, y: 1, kind: .front, label: "#2 a=3"),
            SweepScatter.Point(x: 0.5, y: 0.5, kind: .parent, label: "models/<sft>&"),
            SweepScatter.Point(x: .nan, y: 0.5, kind: .candidate, label: "nan"),
        ]
        let svg = SweepScatter.svg(points, x: MetricGoal(parsing: "acc")!, y: MetricGoal(parsing: "-loss")!, title: "r.yml")
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        #expect(svg.hasSuffix("</svg>\n"))
        #expect(svg.components(separatedBy: "<circle").count - 1 == 3)
        #expect(svg.components(separatedBy: "fill=\"#1f77b4\"><title>").count - 1 == 2)
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 1)
        #expect(svg.contains("<title>models/&lt;sft&gt;&amp;</title>"))
        #expect(svg.contains(">&lt;sft&gt;&amp;</text>"))
        #expect(svg.contains("acc (higher is better)") && svg.contains("loss (lower is better)"))
        #expect(!svg.contains("nan"))
    }
}
