import Testing
@testable import MergeTool

@Test func rootCommandNamesTheTool() {
    #expect(MergeTool.configuration.commandName == "merge-tool")
}
