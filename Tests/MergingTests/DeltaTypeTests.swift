import Foundation
import Testing
import Checkpoints
@testable import Merging

/// A delta is applied into safetensors, so extracting one from a model whose
/// tensors safetensors cannot hold is refused before any output exists.
@Suite struct DeltaTypeTests {
    private func fixture(_ relative: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures").appendingPathComponent(relative).path
    }

    @Test func extractingFromAQ8GGUFIsRefused() throws {
        let dir = NSTemporaryDirectory() + "claire-delta-type-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let q8 = fixture("conversion/llamacpp-q8_0.gguf")
        do {
            _ = try DeltaExtraction.extract(tuned: q8, base: q8, output: dir + "/d.delta", density: 1, selection: .magnitude,
                                            seed: 0, overwrite: false, workers: 1)
            Issue.record("a Q8_0 tensor cannot come back out of a delta as safetensors")
        } catch let error as CheckpointError {
            guard case .conversion(let file, .unsupportedType(let what)) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(file == q8 && what.hasPrefix("Q8_0 (tensor '"))
        }
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).isEmpty)
    }
}
