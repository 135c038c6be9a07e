import Testing
@testable import Checkpoints

@Test("inspect of a GGUF file lists ggml types, bits per weight and summarizes long arrays")
func ggufSummary() throws {
    let summary = CheckpointSummary(try Checkpoint.open(fixture("gguf/quants.gguf")))
    let q4k = try #require(summary.json["dtypes"]?["Q4_K"])
    #expect(q4k["ggml_type"] == .integer(12))
    #expect(q4k["bits_per_weight"] == .number("4.50"))
    let text = summary.text(listAll: true)
    #expect(text.contains("  Q4_K             1          2.0 k       1.2 kB         4.50"))
    #expect(text.contains("  Q4_K.quantized  Q4_K     [2, 1024]                 1152"))

    let metadata = CheckpointSummary(try Checkpoint.open(fixture("gguf/metadata.gguf")))
    #expect(metadata.json["metadata"]?["test.array.long"]?["count"] == .integer(100))
    #expect(metadata.json["metadata"]?["test.u64"] == .number("18000000000000000000"))
    #expect(metadata.text(listAll: false).contains("test.array.long       [i32] × 100: [0, 1, 2, 3, 4, 5, …]"))
}
