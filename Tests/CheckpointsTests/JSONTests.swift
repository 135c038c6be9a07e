import Testing
@testable import Checkpoints

@Test func parsesNestedObjectsKeepingOrder() throws {
    let value = try JSONParser.parse(#"{"b": [1, 2.5, -3e2], "a": {"x": "y\n\u00e9"}, "c": null}"#)
    guard case .object(let members) = value else { Issue.record("not an object"); return }
    #expect(members.map(\.key) == ["b", "a", "c"])
    #expect(value["b"] == .array([.number("1"), .number("2.5"), .number("-3e2")]))
    #expect(value["a"]?["x"] == .string("y\né"))
}
