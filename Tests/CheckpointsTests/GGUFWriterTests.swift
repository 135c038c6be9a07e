import Foundation
import Testing
@testable import Checkpoints

/// Writes every tensor of `checkpoint` through a GGUFWriter with the same metadata.
private func rewrite(_ checkpoint: Checkpoint, to path: String) throws {
    let specs = checkpoint.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
    let writer = try GGUFWriter(path: path, tensors: specs, metadata: checkpoint.metadata)
    for t in checkpoint.tensors.reversed() { try writer.write(t.name, bytes: checkpoint.data(of: t)) }
    try writer.commit()
}

@Test("rewriting a file made by gguf.GGUFWriter gives the same bytes",
      arguments: ["gguf/quants.gguf", "gguf/metadata.gguf"])
func rewriteIsByteIdentical(_ name: String) throws {
    let source = fixture(name)
    let out = temporaryFolder() + "/copy.gguf"
    try rewrite(try Checkpoint.open(source), to: out)
    #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: source))
}

@Test("quantized tensors written from Float32 read back as their own decoding, with type keys set")
func quantizedWriteReadsBack() throws {
    var values = [Float](repeating: 0, count: 2 * 512)
    for i in values.indices { values[i] = cos(Float(i) * 0.11) * Float(1 + i % 5) }
    let types: [DType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K]
    let specs = types.map { TensorSpec(name: "w.\($0)", dtype: $0, shape: [2, 512]) }
    // Every metadata type, from the gguf-made fixture, with another alignment.
    let typed = try Checkpoint.open(fixture("gguf/metadata.gguf")).metadata.filter {
        $0.key != "general.alignment" && $0.key != "general.file_type"
    }
    let path = temporaryFolder() + "/q.gguf"
    let writer = try GGUFWriter(path: path, tensors: specs,
                                metadata: typed + [MetadataEntry("general.alignment", .uint32(128))])
    var encoded: [String: [UInt8]] = [:]
    for spec in specs {
        var bytes = [UInt8](repeating: 0, count: spec.byteCount)
        try values.withUnsafeBufferPointer { src in
            try bytes.withUnsafeMutableBytes { try ElementCodec.encode(spec.dtype, from: src, into: $0) }
        }
        encoded[spec.name] = bytes
        try bytes.withUnsafeBytes { try writer.write(spec.name, bytes: $0) }
    }
    try writer.commit()
    // fixtures/gguf/check_written.py verifies such a file with the Python reader:
    // CLAIRE_KEEP_WRITTEN_GGUF=/tmp/w.gguf swift test --filter quantizedWriteReadsBack
    if let keep = ProcessInfo.processInfo.environment["CLAIRE_KEEP_WRITTEN_GGUF"] {
        try? FileManager.default.removeItem(atPath: keep)
        try FileManager.default.copyItem(atPath: path, toPath: keep)
    }

    let c = try Checkpoint.open(path)
    #expect(Array(c.metadata.dropLast(3)) == typed)
    #expect(c.metadata.suffix(3).map(\.key) == ["general.alignment", "general.file_type", "general.quantization_version"])
    #expect(c.metadata[c.metadata.count - 2].value == .uint32(1))  // F16: first of the types tied at one matrix each
    #expect(c.metadata.last?.value == .uint32(2))
    for spec in specs {
        let t = try #require(c.tensor(named: spec.name))
        #expect(t.dtype == spec.dtype && t.shape == [2, 512])
        #expect((t.offset - c.tensors[0].offset) % 128 == 0)
        #expect(Array(c.data(of: t)) == encoded[spec.name])
    }
}

@Test("the file type is the type most matrices use")
func fileTypeFollowsMajority() {
    let specs = [
        TensorSpec(name: "norm", dtype: .f32, shape: [64]),
        TensorSpec(name: "a", dtype: .q6_K, shape: [4, 256]),
        TensorSpec(name: "b", dtype: .q4_K, shape: [4, 256]),
        TensorSpec(name: "c", dtype: .q4_K, shape: [4, 256]),
    ]
    #expect(GGUFWriter.fileType(of: specs) == 15)
    #expect(GGUFWriter.fileType(of: [TensorSpec(name: "x", dtype: .f32, shape: [2, 2])]) == 0)
    #expect(GGUFWriter.fileType(of: [TensorSpec(name: "x", dtype: .q8_0, shape: [2, 32])]) == 7)
}

@Test("nothing appears at the destination before finish, and abort leaves nothing")
func abortLeavesNothing() throws {
    let folder = temporaryFolder()
    let writer = try GGUFWriter(path: folder + "/out.gguf", tensors: [TensorSpec(name: "x", dtype: .f32, shape: [4])],
                                metadata: [])
    #expect(!FileManager.default.fileExists(atPath: folder + "/out.gguf"))
    writer.abort()
    #expect(listing(folder).isEmpty)
}

@Test("finishing before every tensor is written fails")
func missingTensorFails() throws {
    let path = temporaryFolder() + "/out.gguf"
    let writer = try GGUFWriter(path: path, tensors: [TensorSpec(name: "x", dtype: .f32, shape: [4])], metadata: [])
    #expect(throws: CheckpointError.io(file: path, problem: "tensor 'x' was never written")) { try writer.commit() }
    writer.abort()
}

@Test("plans GGUF cannot hold are refused", arguments: [
    TensorSpec(name: "x", dtype: .q8_0, shape: [2, 33]),
    TensorSpec(name: "x", dtype: .f32, shape: [1, 1, 1, 1, 1]),
    TensorSpec(name: "x", dtype: .u8, shape: [4]),
])
func unwritablePlansAreRefused(_ spec: TensorSpec) {
    #expect(throws: CheckpointError.self) {
        try GGUFWriter(path: temporaryFolder() + "/out.gguf", tensors: [spec], metadata: [])
    }
}

@Test("an alignment that is not a power of two is refused")
func badAlignmentIsRefused() {
    #expect(throws: CheckpointError.self) {
        try GGUFWriter(path: temporaryFolder() + "/out.gguf", tensors: [],
                       metadata: [MetadataEntry("general.alignment", .uint32(24))])
    }
}
