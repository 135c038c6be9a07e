import Foundation
import Testing
@testable import Checkpoints

/// The three writers behind `TensorSink`: each names the destination in its
/// messages, never the temporary it writes, and leaves nothing on abort.
@Suite struct TensorSinkTests {
    private static let spec = TensorSpec(name: "x", dtype: .f32, shape: [4])

    /// Each writer kind, writing `out` inside `folder`.
    private static func sinks(in folder: String) throws -> [(sink: any TensorSink, destination: String, file: String)] {
        let hf = try HFFolderWriter(folder: folder + "/hf", tensors: [spec])
        let sharded = try HFFolderWriter(folder: folder + "/sharded", tensors: [spec, TensorSpec(name: "y", dtype: .f32, shape: [4])],
                                         maxShardSize: 16)
        let single = try SafetensorsFileOutput(path: folder + "/one.safetensors", tensors: [spec])
        let gguf = try GGUFWriter(path: folder + "/one.gguf", tensors: [spec], metadata: [])
        return [(hf, folder + "/hf", folder + "/hf/model.safetensors"),
                (sharded, folder + "/sharded", folder + "/sharded/model-00001-of-00002.safetensors"),
                (single, folder + "/one.safetensors", folder + "/one.safetensors"),
                (gguf, folder + "/one.gguf", folder + "/one.gguf")]
    }

    @Test func aWriteErrorNamesTheDestinationFile() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (sink, _, file) in try Self.sinks(in: folder) {
            let short = [UInt8](repeating: 0, count: 8)
            #expect(throws: CheckpointError.io(file: file, problem: "tensor 'x': 8 bytes given, 16 planned")) {
                try short.withUnsafeBytes { try sink.write("x", bytes: $0) }
            }
            sink.abort()
        }
        #expect(listing(folder).isEmpty)
    }

    @Test func aMissingTensorAtCommitNamesTheDestinationAndLeavesNothing() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        for (sink, _, file) in try Self.sinks(in: folder) {
            #expect(throws: CheckpointError.io(file: file, problem: "tensor 'x' was never written")) { try sink.commit() }
            sink.abort()
        }
        #expect(listing(folder).isEmpty)
    }

    @Test func commitMovesEachOutputIntoPlace() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let values: [Float] = [1, 2, 3, 4]
        for (sink, destination, _) in try Self.sinks(in: folder) {
            for name in destination.hasSuffix("sharded") ? ["x", "y"] : ["x"] {
                try values.withUnsafeBytes { try sink.write(name, bytes: $0) }
            }
            try sink.commit()
            let written = try Checkpoint.open(destination)
            #expect(Array(written.data(of: try #require(written.tensor(named: "x")))) == values.withUnsafeBytes { Array($0) })
        }
        #expect(listing(folder) == ["hf", "one.gguf", "one.safetensors", "sharded"])
    }

    @Test func aReportedErrorKeepsItsProblem() {
        let error = CheckpointError.codec(file: "/t/.out.partial-1-a/model.safetensors", tensor: "w", problem: .sizeMismatch(dtype: .f32, elements: 4, bytes: 8))
        #expect(error.reported(in: "/t/out") == .codec(file: "/t/out", tensor: "w", problem: .sizeMismatch(dtype: .f32, elements: 4, bytes: 8)))
    }
}
