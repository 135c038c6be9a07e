import Testing
@testable import MergeTool

@Test func statsRejectsADensityOutsideZeroToOne() {
    #expect(throws: (any Error).self) { try MergeTool.Stats.parse(["ft", "--base", "base", "--density", "0"]) }
    #expect(throws: (any Error).self) { try MergeTool.Stats.parse(["ft", "--base", "base", "--density", "1.5"]) }
}

@Test func statsRejectsThresholdsThatAreNotNonNegativeNumbers() {
    #expect(throws: (any Error).self) { try MergeTool.Stats.parse(["ft", "--base", "base", "--thresholds", "1e-3,x"]) }
    #expect(throws: (any Error).self) { try MergeTool.Stats.parse(["ft", "--base", "base", "--thresholds", "-1"]) }
}

@Test func statsNeedsOneNamePerCheckpoint() throws {
    #expect(throws: (any Error).self) { try MergeTool.Stats.parse(["a", "b", "--base", "base", "--names", "sft"]) }
    let command = try MergeTool.Stats.parse(["a/", "b.safetensors", "--base", "base"])
    #expect(try command.displayNames() == ["a", "b"])
    #expect(try MergeTool.Stats.parse(["a", "b", "--base", "c", "--names", "sft, dpo"]).displayNames() == ["sft", "dpo"])
}

@Test func statsGroupsByKindUnlessAsked() throws {
    #expect(try MergeTool.Stats.parse(["a", "--base", "b"]).by == .kind)
    #expect(try MergeTool.Stats.parse(["a", "--base", "b", "--by", "layer"]).by == .layer)
}
