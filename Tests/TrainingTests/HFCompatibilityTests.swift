import Checkpoints
import Foundation
import Testing
@testable import Training

/// Claire's forward pass against the logits `transformers` computed for the same
/// Claire-written folder (fixtures/training, made by check_hf_logits.py).
struct HFCompatibilityTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures/training").path

    @Test func forwardMatchesTransformersLogitsWithin1e4() throws {
        let model = try ModelFolder.load(Self.fixtures + "/tiny-llama")
        let text = try String(contentsOfFile: Self.fixtures + "/hf-logits.json", encoding: .utf8)
        let json = try JSONParser.parse(text)
        guard case .array(let records)? = json["records"] else { Issue.record("no records"); return }
        #expect(records.count == 3)
        var largest: Double = 0
        for record in records {
            guard case .array(let tokenValues)? = record["tokens"], case .array(let rows)? = record["last_logits"] else {
                Issue.record("malformed record"); return
            }
            let tokens = tokenValues.map { Int32($0.nonNegativeInteger!) }
            let logits = model.logits(TokenBatch(inputs: tokens, sequenceCount: 1, length: tokens.count))
            let vocabulary = model.config.vocabularySize
            for (k, row) in rows.enumerated() {
                guard case .array(let expected) = row else { Issue.record("malformed row"); return }
                let position = tokens.count - rows.count + k
                for v in 0..<vocabulary {
                    largest = max(largest, abs(Double(logits[position * vocabulary + v]) - expected[v].doubleValue!))
                }
            }
        }
        #expect(largest <= 1e-4, "max |Claire − transformers| = \(largest)")
    }

    @Test func promptEncodingMatchesTheChatTemplateIds() {
        #expect(ByteTokenizer.prompt("hé") == [256, 259, 104, 195, 169, 260])
        #expect(ByteTokenizer.response("A") == [65, 257])
    }

    @Test func savedFolderReloadsWithIdenticalWeights() throws {
        let model = LlamaModel.initialized(config: GradientCheckTests.tiny, seed: 5)
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("claire-roundtrip-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try ModelFolder.save(model, to: folder)
        let loaded = try ModelFolder.load(folder)
        #expect(loaded.parameterValues == model.parameterValues)
        #expect(loaded.config == model.config)
        for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            #expect(FileManager.default.fileExists(atPath: folder + "/" + name), "\(name) missing")
        }
    }
}

/// A model folder whose config.json is a link leaving it loads only when the caller allows it.
@Test func modelFolderFollowsAnOutsideConfigOnlyWhenAsked() throws {
    let dir = NSTemporaryDirectory() + "claire-link-" + UUID().uuidString
    defer { try? FileManager.default.removeItem(atPath: dir) }
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let folder = dir + "/model"
    try FileManager.default.copyItem(atPath: HFCompatibilityTests.fixtures + "/tiny-llama", toPath: folder)
    try FileManager.default.moveItem(atPath: folder + "/config.json", toPath: dir + "/config.json")
    try FileManager.default.createSymbolicLink(atPath: folder + "/config.json", withDestinationPath: dir + "/config.json")
    #expect(throws: TrainingError.self) { _ = try ModelFolder.load(folder) }
    let followed = try ModelFolder.load(folder, followSymlinks: true)
    #expect(followed.parameterValues == (try ModelFolder.load(HFCompatibilityTests.fixtures + "/tiny-llama")).parameterValues)
    #expect(throws: TrainingError.self) { _ = try ModelFolder.load(folder) }
}
