import Foundation
import Testing
@testable import Checkpoints

/// What Claire writes, Claire and the reference readers read back: the
/// safetensors writer refuses plans that would break a reader's rule, before
/// creating anything.
@Suite struct WriterRuleTests {
    private func writing(_ tensors: [TensorSpec]) -> (error: CheckpointError?, folder: String) {
        let folder = temporaryFolder()
        do {
            let writer = try SafetensorsFileWriter(path: folder + "/m.safetensors", tensors: tensors)
            try writer.finish()
            return (nil, folder)
        } catch {
            return (error, folder)
        }
    }

    @Test func aTensorNamedLikeTheMetadataKeyIsRefused() {
        let (error, folder) = writing([TensorSpec(name: "__metadata__", dtype: .f32, shape: [0])])
        #expect(error == .io(file: folder + "/m.safetensors",
                             problem: "a tensor cannot be named '__metadata__' in safetensors (the header's metadata key)"))
        #expect(listing(folder).isEmpty)
    }

    @Test func aBlockQuantizedTypeIsRefused() {
        let (error, folder) = writing([TensorSpec(name: "w", dtype: .q8_0, shape: [32])])
        #expect(error == .io(file: folder + "/m.safetensors", problem: "tensor 'w': safetensors has no dtype Q8_0"))
        #expect(listing(folder).isEmpty)
    }

    @Test func aHeaderPastTheReadersLimitIsRefused() {
        let long = String(repeating: "x", count: 34_000_000)
        let tensors = (0..<3).map { TensorSpec(name: long + String($0), dtype: .f32, shape: [0]) }
        let (error, folder) = writing(tensors)
        guard case .io(_, let problem)? = error else {
            Issue.record("a 102 MB header is more than safetensors readers accept")
            return
        }
        #expect(problem.contains("more than the 100000000 safetensors readers accept"))
        #expect(listing(folder).isEmpty)
    }

    @Test func aFolderWriterRefusingItsPlanLeavesNothing() {
        let parent = temporaryFolder()
        #expect(throws: CheckpointError.self) {
            _ = try HFFolderWriter(folder: parent + "/out", tensors: [TensorSpec(name: "w", dtype: .q4_0, shape: [32])])
        }
        #expect(listing(parent).isEmpty)
    }

    @Test func writtenFilesReadBack() throws {
        let (error, folder) = writing([TensorSpec(name: "a", dtype: .bf16, shape: [0]), TensorSpec(name: "b", dtype: .f32, shape: [0, 3])])
        #expect(error == nil)
        let checkpoint = try Checkpoint.open(folder + "/m.safetensors")
        #expect(checkpoint.tensors.map(\.name).sorted() == ["a", "b"])
    }
}

/// Headers are parsed with their arrays capped, so one absurd shape costs nothing.
@Suite struct SafetensorsRankTests {
    @Test func aShapeOfMillionsOfDimensionsIsRefusedWhileParsing() {
        let dims = Array(repeating: "1", count: 2_000_000).joined(separator: ",")
        let bytes = safetensorsBytes(header: #"{"w":{"dtype":"F32","shape":["# + dims + #"],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        #expect(throws: SafetensorsViolation.tooManyDimensions(limit: 64)) {
            _ = try bytes.withUnsafeBytes { try SafetensorsReader.parse($0) }
        }
    }

    @Test func sixtyFourDimensionsAreAccepted() throws {
        let dims = Array(repeating: "1", count: 64).joined(separator: ",")
        let bytes = safetensorsBytes(header: #"{"w":{"dtype":"F32","shape":["# + dims + #"],"data_offsets":[0,4]}}"#, data: [0, 0, 0, 0])
        let header = try bytes.withUnsafeBytes { try SafetensorsReader.parse($0) }
        #expect(header.tensors.first?.shape.count == 64)
    }
}

/// GGUF metadata arrays are capped in all by the reader; the writer keeps to the same cap.
@Test func ggufMetadataArraysPastTheReadersCapAreRefused() {
    let folder = temporaryFolder()
    let half = GGUFReader.maximumArrayElements / 2 + 1
    let array = MetadataValue.array(MetadataArray(elementType: .uint8, values: Array(repeating: .uint8(0), count: half)))
    let metadata = [MetadataEntry("general.architecture", .string("llama")), MetadataEntry("a", array), MetadataEntry("b", array)]
    #expect(throws: CheckpointError.self) {
        _ = try GGUFWriter(path: folder + "/m.gguf", tensors: [], metadata: metadata)
    }
    #expect(listing(folder).isEmpty)
}

/// Tensor sizes summing past Int.max are refused, not an overflow trap.
@Test func ggufTensorsTooLargeTogetherAreRefused() {
    let folder = temporaryFolder()
    let tensors = (0..<5).map { TensorSpec(name: "t\($0)", dtype: .i8, shape: [1 << 61]) }
    #expect(throws: CheckpointError.self) {
        _ = try GGUFWriter(path: folder + "/m.gguf", tensors: tensors, metadata: [MetadataEntry("general.architecture", .string("llama"))])
    }
    #expect(listing(folder).isEmpty)
}
