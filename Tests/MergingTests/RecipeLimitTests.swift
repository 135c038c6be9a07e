import Foundation
import Testing
@testable import Merging

@Suite struct RecipeLimitTests {
    /// A recipe of about a kilobyte whose aliases nest ten deep per level: expanded,
    /// its parameters would hold 10⁷ values.
    static let nestedAliases: String = {
        var lines = ["merge_method: linear", "models:", "  - model: a", "    parameters:",
                     "      a0: &a0 [" + (1...10).map { "{value: \($0)}" }.joined(separator: ", ") + "]"]
        for i in 1...6 {
            lines.append("      a\(i): &a\(i) [" + Array(repeating: "{value: *a\(i - 1)}", count: 10).joined(separator: ", ") + "]")
        }
        return lines.joined(separator: "\n") + "\n"
    }()

    @Test func nestedAliasesStopAtTheExpansionCap() {
        #expect(Self.nestedAliases.utf8.count < 1200)
        let started = Date()
        #expect(throws: MergeError.recipe(file: "r.yml", problem: "parameters expand to more than 100000 values (through YAML aliases?)")) {
            try MergeRecipe.parse(Self.nestedAliases, file: "r.yml")
        }
        #expect(Date().timeIntervalSince(started) < 30)
    }

    @Test func aFewAliasesStillWork() throws {
        let plan = try MergeRecipe.parse("""
            merge_method: ties
            base_model: base
            models:
              - model: a
                parameters: &p {weight: 1, density: [0.2, 0.6]}
              - model: b
                parameters: *p
            """, file: "r.yml")
        #expect(plan.models[1].parameters["density"] == .gradient([0.2, 0.6]))
    }

    @Test func aYAMLErrorIsShortAndOnOneLine() {
        let line = "merge_method: [" + String(repeating: "x", count: 100_000)
        do {
            _ = try MergeRecipe.parse(line + "\n", file: "r.yml")
            Issue.record("parsed")
        } catch {
            let text = error.description
            #expect(text.hasPrefix("r.yml: not valid YAML: line 2, column 1: "))
            #expect(!text.contains("\n"))
            #expect(text.count < 300)
        }
    }
}
