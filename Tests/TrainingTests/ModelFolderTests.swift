import Checkpoints
import Foundation
import Testing
@testable import Training

struct ModelFolderTests {
    /// Saves a model of `config`, replaces its config.json with `edited`, and returns the load error.
    func loadError(saving config: LlamaConfig, thenConfig edited: LlamaConfig) throws -> String? {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("claire-folder-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try ModelFolder.save(LlamaModel.initialized(config: config, seed: 1), to: folder)
        try (edited.configJSON.prettyText).write(toFile: folder + "/config.json", atomically: true, encoding: .utf8)
        do {
            _ = try ModelFolder.load(folder)
            return nil
        } catch {
            return "\(error)".replacingOccurrences(of: folder, with: "M")
        }
    }

    @Test func tensorShapeDisagreeingWithConfigIsRejected() throws {
        var edited = GradientCheckTests.tiny
        edited.intermediateSize = 16
        #expect(try loadError(saving: GradientCheckTests.tiny, thenConfig: edited)
                == "M: tensor 'model.layers.0.mlp.gate_proj.weight' has shape [12, 8], config.json implies [16, 8]")
    }

    @Test func missingTensorIsNamed() throws {
        var tied = GradientCheckTests.tiny
        tied.tieWordEmbeddings = true
        #expect(try loadError(saving: tied, thenConfig: GradientCheckTests.tiny) == "M: tensor 'lm_head.weight' is missing")
    }

    @Test func configFarBeyondToyScaleIsRejectedBeforeAllocating() {
        let huge = LlamaConfig(hiddenSize: 65536, layerCount: 200, headCount: 64, keyValueHeadCount: 8, intermediateSize: 200_000)
        #expect(throws: TrainingError.self) { try huge.validate(file: "config.json") }
    }
}
