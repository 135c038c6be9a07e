import Checkpoints
import Foundation
import Merging
import Testing
@testable import Statistics

/// Path of a file under the package's fixtures/ folder.
private func fixture(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures").appendingPathComponent(relative).path
}

/// The figures of one tensor that do not depend on the order δ is summed in.
private func exactFigures(_ f: DeltaFigures) -> [Double] {
    [Double(f.elements), Double(f.nonFinite), Double(f.zeros), f.l1, Double(f.maxAbs), f.topMass]
        + f.withinThreshold.map(Double.init) + f.log10Histogram.map(Double.init)
}

/// A fine-tune converted to an F32 GGUF file, read against its Hugging Face base in
/// chunks of 3 elements (so chunks end inside rows, and slices inside a Q or K head's
/// rows), gives every tensor the figures of the Hugging Face fine-tune itself.
@Test func ggufFineTuneIsReadInTheBaseRowOrderChunkByChunk() throws {
    let folder = NSTemporaryDirectory() + "claire-stats-source-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let gguf = folder + "/sft.gguf"
    _ = try FormatConversion.hfToGGUF(folder: fixture("merge/sft"), output: gguf, type: .f32, workers: 1)
    let base = try Checkpoint.open(fixture("merge/base"))
    var small = DeltaStatisticsOptions()
    small.chunkElements = 3
    let bridged = try DeltaStatistics.compute(base: base, tuned: [try Checkpoint.open(gguf)], names: ["ft"], options: small)
    let direct = try DeltaStatistics.compute(base: base, tuned: [try Checkpoint.open(fixture("merge/sft"))], names: ["ft"])
    #expect(bridged.tensors.map(\.name) == direct.tensors.map(\.name))
    #expect(bridged.skipped.isEmpty)
    #expect(bridged.tensors.contains { $0.name.hasSuffix("q_proj.weight") })
    for (a, b) in zip(bridged.tensors, direct.tensors) {
        #expect(exactFigures(a.deltas[0]) == exactFigures(b.deltas[0]), "\(a.name)")
        #expect(abs(a.deltas[0].l2 - b.deltas[0].l2) <= 1e-6 * b.deltas[0].l2, "\(a.name)")
    }
}

/// An adapter's δ computed over chunks that start and end inside rows equals the one
/// computed over whole tensors, and is zero in the tensors it leaves alone.
@Test func adapterDeltaDoesNotDependOnTheChunks() throws {
    let base = try Checkpoint.open(fixture("merge/base"))
    let adapter = try LoRAAdapter.open(fixture("lora/sft-lora"), base: base)
    var small = DeltaStatisticsOptions()
    small.chunkElements = 5
    let chunked = try DeltaStatistics.compute(base: base, tuned: [.adapter(adapter)], names: ["ft"], options: small)
    let whole = try DeltaStatistics.compute(base: base, tuned: [.adapter(adapter)], names: ["ft"])
    #expect(chunked.tensors.count == base.tensors.count)
    for (a, b) in zip(chunked.tensors, whole.tensors) {
        let adapted = adapter.module(adapting: a.name) != nil
        #expect(a.deltas[0].zeros == (adapted ? b.deltas[0].zeros : a.elements), "\(a.name)")
        #expect(abs(a.deltas[0].l1 - b.deltas[0].l1) <= 1e-6 * b.deltas[0].l1, "\(a.name)")
        #expect(abs(a.deltas[0].topMass - b.deltas[0].topMass) <= 1e-6 * b.deltas[0].topMass, "\(a.name)")
    }
}
