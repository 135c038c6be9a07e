import Foundation
import Testing
@testable import Training

struct DataTests {
    func instructionError(_ contents: String) -> String? {
        withFile(contents) { (path) -> String? in
            do {
                _ = try JSONLData.instructions(path)
                return nil
            } catch {
                return "\(error)".replacingOccurrences(of: path, with: "data.jsonl")
            }
        }
    }

    /// Runs `body` on a temporary file holding `contents`.
    func withFile<T>(_ contents: String, _ body: (String) throws -> T) rethrows -> T {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("claire-data-\(UUID().uuidString).jsonl").path
        _ = FileManager.default.createFile(atPath: path, contents: Data(contents.utf8))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try body(path)
    }

    @Test func instructionLinesAreReadAndBlankLinesSkipped() throws {
        let examples = try withFile("{\"prompt\":\"a\",\"response\":\"b\"}\n\n{\"prompt\":\"c\",\"response\":\"d\"}\n") { path in
            try JSONLData.instructions(path)
        }
        #expect(examples == [InstructionExample(prompt: "a", response: "b"), InstructionExample(prompt: "c", response: "d")])
    }

    @Test func preferenceLinesAreRead() throws {
        let pairs = try withFile("{\"prompt\":\"p\",\"chosen\":\"y\",\"rejected\":\"n\"}") { path in try JSONLData.preferences(path) }
        #expect(pairs == [PreferencePair(prompt: "p", chosen: "y", rejected: "n")])
    }

    @Test func missingFieldNamesLineAndField() {
        #expect(instructionError("{\"prompt\":\"a\",\"response\":\"b\"}\n{\"prompt\":\"c\"}\n")
                == "data.jsonl: line 2: missing field \"response\"")
    }

    @Test func nonStringFieldNamesLineAndField() {
        #expect(instructionError("{\"prompt\":3,\"response\":\"b\"}") == "data.jsonl: line 1: field \"prompt\" is not a string")
    }

    @Test func malformedJSONNamesTheLine() {
        #expect(instructionError("{\"prompt\":\"a\",\"response\":\"b\"}\n{\"prompt\":\n")?.hasPrefix("data.jsonl: line 2: not valid JSON") == true)
    }

    @Test func nonObjectLineIsRejected() {
        #expect(instructionError("[1,2]") == "data.jsonl: line 1: not a JSON object")
    }

    @Test func emptyFileIsRejected() {
        #expect(instructionError("\n\n") == "data.jsonl: no {\"prompt\", \"response\"} example")
    }

    @Test func overlongExampleNamesTheLine() {
        let long = String(repeating: "x", count: 100)
        #expect(throws: TrainingError.data(file: "f", line: 2, problem: "example is 105 tokens, more than the model's 64 positions")) {
            _ = try TrainingData.instructions([InstructionExample(prompt: "a", response: "b"),
                                               InstructionExample(prompt: long, response: "b")], maxPositions: 64, file: "f")
        }
    }

    @Test func builtInSuiteIsDeterministicAndHeldOutIsDisjoint() {
        let a = TaskSuite.builtIn(trainDocuments: 100), b = TaskSuite.builtIn(trainDocuments: 100)
        #expect(a.instructionTrain == b.instructionTrain && a.preferenceHeldOut == b.preferenceHeldOut)
        let trainPrompts = Set(a.instructionTrain.map(\.prompt))
        #expect(a.instructionHeldOut.allSatisfy { !trainPrompts.contains($0.prompt) })
        let trainRequests = Set(a.preferenceTrain.map(\.prompt))
        #expect(a.preferenceHeldOut.allSatisfy { !trainRequests.contains($0.prompt) })
        #expect(a.preferenceHeldOut.allSatisfy { TaskSuite.isPolite($0.chosen) && !TaskSuite.isPolite($0.rejected) })
    }
}
