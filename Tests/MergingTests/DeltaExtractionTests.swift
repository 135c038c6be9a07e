import Foundation
import Testing
import Checkpoints
@testable import Merging

@Suite struct DeltaExtractionTests {
    private func fixture(_ relative: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures").appendingPathComponent(relative).path
    }

    private func scratch() -> String {
        let path = NSTemporaryDirectory() + "claire-delta-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test(arguments: ["merge/sft", "merge/dpo"])
    func fullDensityRebuildsTheFineTuneBitForBit(model: String) throws {
        let dir = scratch()
        let summary = try DeltaExtraction.extract(tuned: fixture(model), base: fixture("merge/base"), output: dir + "/d.delta",
                                                  density: 1, selection: .magnitude, seed: 0, overwrite: false, workers: 2)
        #expect(summary.kept == summary.changed)
        _ = try DeltaExtraction.apply(delta: dir + "/d.delta", base: fixture("merge/base"), output: dir + "/out", overwrite: false, workers: 2)
        let original = try Checkpoint.open(fixture(model))
        let rebuilt = try Checkpoint.open(dir + "/out")
        for t in original.tensors {
            let r = try #require(rebuilt.tensor(named: t.name))
            #expect(Array(rebuilt.data(of: r)) == Array(original.data(of: t)), "\(t.name)")
        }
        #expect(rebuilt.metadata == original.metadata)
        #expect(FileManager.default.fileExists(atPath: dir + "/out/config.json"))
    }

    @Test func magnitudeDensityKeepsTheLargestChangesAndRevertsTheRest() throws {
        let dir = scratch()
        let tunedPath = fixture("merge/sft"), basePath = fixture("merge/base")
        _ = try DeltaExtraction.extract(tuned: tunedPath, base: basePath, output: dir + "/d.delta", density: 0.25,
                                        selection: .magnitude, seed: 0, overwrite: false, workers: 2)
        _ = try DeltaExtraction.apply(delta: dir + "/d.delta", base: basePath, output: dir + "/out.safetensors",
                                      overwrite: false, workers: 1)
        let tuned = try Checkpoint.open(tunedPath), base = try Checkpoint.open(basePath)
        let rebuilt = try Checkpoint.open(dir + "/out.safetensors")
        for t in tuned.tensors where t.dtype.isFloatingPoint {
            let ft = try tuned.decode(t), b = try base.decode(base.tensor(named: t.name)!)
            let out = try rebuilt.decode(rebuilt.tensor(named: t.name)!)
            let magnitudes = zip(ft, b).map { abs($0 - $1) }
            let k = max(1, Int(0.25 * Double(ft.count)))
            let threshold = magnitudes.sorted(by: >)[k - 1]
            for i in ft.indices {
                if magnitudes[i] > threshold { #expect(out[i] == ft[i], "\(t.name)[\(i)] should keep the fine-tuned value") }
                if magnitudes[i] < threshold { #expect(out[i] == b[i], "\(t.name)[\(i)] should revert to the base") }
            }
        }
    }

    @Test func randomSelectionIsReproducibleForASeed() throws {
        let dir = scratch()
        for (name, threads) in [("a", 1), ("b", 2)] {
            _ = try DeltaExtraction.extract(tuned: fixture("merge/sft"), base: fixture("merge/base"), output: dir + "/\(name).delta",
                                            density: 0.5, selection: .random, seed: 42, overwrite: false, workers: threads)
        }
        #expect(FileManager.default.contents(atPath: dir + "/a.delta") == FileManager.default.contents(atPath: dir + "/b.delta"))
    }

    @Test func applyingToAnotherBaseIsRefusedAndWritesNothing() throws {
        let dir = scratch()
        _ = try DeltaExtraction.extract(tuned: fixture("merge/dpo"), base: fixture("merge/base"), output: dir + "/d.delta",
                                        density: 1, selection: .magnitude, seed: 0, overwrite: false, workers: 2)
        #expect(throws: CheckpointError.self) {
            _ = try DeltaExtraction.apply(delta: dir + "/d.delta", base: fixture("merge/sft"), output: dir + "/out",
                                          overwrite: false, workers: 2)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["d.delta"])
    }

    @Test func densityOutsideTheRangeIsRefused() {
        #expect(throws: MergeError.self) {
            _ = try DeltaExtraction.extract(tuned: fixture("merge/dpo"), base: fixture("merge/base"), output: scratch() + "/d.delta",
                                            density: 0, selection: .magnitude, seed: 0, overwrite: false)
        }
    }
}
