import Testing
@testable import Checkpoints

@Test func parsesNestedObjectsKeepingOrder() throws {
    let value = try JSONParser.parse(#"{"b": [1, 2.5, -3e2], "a": {"x": "y\n\u00e9"}, "c": null}"#)
    guard case .object(let members) = value else { Issue.record("not an object"); return }
    #expect(members.map(\.key) == ["b", "a", "c"])
    #expect(value["b"] == .array([.number("1"), .number("2.5"), .number("-3e2")]))
    #expect(value["a"]?["x"] == .string("y\né"))
}

@Test func duplicateKeysAreRejected() {
    #expect(throws: JSONError.duplicateKey("a")) { try JSONParser.parse(#"{"a": 1, "b": {"a": 2}, "a": 3}"#) }
}

@Test func deepNestingIsRefusedInsteadOfRecursingWithoutBound() {
    let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
    #expect(throws: JSONError.tooDeep) { try JSONParser.parse(deep) }
    let fine = String(repeating: "[", count: 60) + String(repeating: "]", count: 60)
    #expect(throws: Never.self) { try JSONParser.parse(fine) }
}

@Test(arguments: [#"{"a" 1}"#, #"{"a":1,}"#, "[1,]", "01", "1.", "-", #""\x""#, #""\ud800""#, "tru", "{} {}", "\"a\nb\""])
func malformedTextIsRejected(text: String) {
    #expect(throws: JSONError.self) { try JSONParser.parse(text) }
}

@Test func surrogatePairsDecode() throws {
    #expect(try JSONParser.parse(#""\ud83d\ude00 \u00e9""#) == .string("😀 é"))
}

@Test func compactTextEscapesLikeTheReferenceWriter() {
    let value = JSONValue.object([("k\"\\/\n\u{1}é", .array([.integer(1), .string("\t")]))])
    #expect(value.compactText == #"{"k\"\\/\n\u0001é":[1,"\t"]}"#)
}

@Test func nonNegativeIntegersAreDigitsOnly() {
    #expect(JSONValue.number("42").nonNegativeInteger == 42)
    #expect(JSONValue.number("4.0").nonNegativeInteger == nil)
    #expect(JSONValue.number("-4").nonNegativeInteger == nil)
    #expect(JSONValue.number("4e1").nonNegativeInteger == nil)
}
