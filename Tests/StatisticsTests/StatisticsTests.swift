import Checkpoints
import Foundation
import Testing
@testable import Statistics

/// A scratch folder with small F32 checkpoints written by the project's own writer.
final class StatisticsFixture {
    let folder: String

    init() {
        folder = NSTemporaryDirectory() + "claire-stats-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: folder) }

    /// Writes `tensors` (name, shape, values) as F32 and opens the file.
    func checkpoint(_ file: String, _ tensors: [(String, [Int], [Float])]) throws -> Checkpoint {
        let path = folder + "/" + file
        let writer = try SafetensorsFileWriter(path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: .f32, shape: $0.1) })
        for (name, _, values) in tensors {
            try values.withUnsafeBytes { bytes in try writer.write(name, bytes: bytes) }
        }
        try writer.finish()
        return try Checkpoint.open(path)
    }

    /// Base of zeros and one fine-tune per list of deltas, all one tensor `name`.
    func run(_ deltas: [[Float]], name: String = "w", options: DeltaStatisticsOptions = DeltaStatisticsOptions()) throws -> DeltaStatisticsReport {
        let n = deltas[0].count
        let base = try checkpoint("base.safetensors", [(name, [n], [Float](repeating: 0, count: n))])
        var tuned: [Checkpoint] = []
        for (i, d) in deltas.enumerated() { tuned.append(try checkpoint("ft\(i).safetensors", [(name, [n], d)])) }
        return try DeltaStatistics.compute(base: base, tuned: tuned, names: deltas.indices.map { "d\($0)" }, options: options)
    }
}

@Test func zeroShareAndThresholdSharesCountEntriesAtOrBelowEachThreshold() throws {
    let delta: [Float] = [0, 0, 1e-7, -5e-6, 5e-5, -5e-4, 1e-2, -0.5]
    let figures = try StatisticsFixture().run([delta]).model.deltas[0]
    #expect(figures.elements == 8)
    #expect(figures.zeros == 2)
    #expect(figures.zeroShare == 0.25)
    #expect(figures.withinThreshold == [3, 4, 5, 6])
    #expect(figures.thresholdShare(3) == 0.75)
    #expect(figures.maxAbs == 0.5)
}

@Test func customThresholdsAreComparedInFloat32() throws {
    var options = DeltaStatisticsOptions()
    options.thresholds = [0, 0.25, 1]
    let figures = try StatisticsFixture().run([[0, 0.25, -0.5, 1, 2]], options: options).model.deltas[0]
    #expect(figures.withinThreshold == [1, 2, 4])
}

@Test(arguments: [
    ([1, 0, 0, 0] as [Float], 1.0),
    ([1, 1, -1, 1] as [Float], 0.0),
    ([3, 4] as [Float], (2.0.squareRoot() - 7.0 / 5.0) / (2.0.squareRoot() - 1)),
])
func hoyerSparsityMatchesItsDefinition(delta: [Float], expected: Double) throws {
    let figures = try StatisticsFixture().run([delta]).model.deltas[0]
    #expect(abs(figures.hoyer! - expected) < 1e-12)
}

@Test func hoyerIsUndefinedForAZeroDelta() throws {
    let figures = try StatisticsFixture().run([[0, 0, 0]]).model.deltas[0]
    #expect(figures.hoyer == nil)
    #expect(figures.topMassShare == nil)
}

@Test func normsAndMeanAreSumsOfMagnitudes() throws {
    let figures = try StatisticsFixture().run([[3, -4, 0, 0]]).model.deltas[0]
    #expect(figures.l1 == 7)
    #expect(figures.l2 == 5)
    #expect(figures.meanAbs == 1.75)
}

@Test func topOnePercentMassTakesTheLargestEntries() throws {
    // 200 entries 1…200 (shuffled): the top 1 % is 200 and 199.
    var delta = (1...200).map { Float($0) }
    delta.shuffle()
    let figures = try StatisticsFixture().run([delta]).model.deltas[0]
    #expect(figures.topEntries == 2)
    #expect(figures.topMass == 399)
    #expect(figures.topMassShare == 399.0 / 20100.0)
}

@Test func topMassIsExactWhenManyValuesShareTheBoundaryBin() throws {
    // Values that differ only in their lowest mantissa bits all land in one coarse bin.
    var delta: [Float] = []
    for i in 0..<1000 { delta.append(Float(bitPattern: Float(1).bitPattern + UInt32(i * 7 % 1000))) }
    let figures = try StatisticsFixture().run([delta]).model.deltas[0]
    let sorted = delta.map { Double($0) }.sorted(by: >)
    #expect(figures.topMass == sorted[0..<10].reduce(0, +))
}

@Test func signAgreementCosineAndTiesElectionOnKnownDeltas() throws {
    let a: [Float] = [1, -1, 2, 0, 3]
    let b: [Float] = [1, 1, -3, 5, 0]
    let model = try StatisticsFixture().run([a, b]).model
    let pair = model.pairs[0]
    #expect(pair.positions == 5)
    #expect(pair.bothNonzero == 3)
    #expect(pair.signAgreements == 1)
    #expect(pair.bothNonzeroShare == 0.6)
    #expect(abs(pair.cosine! - (-6 / 540.0.squareRoot())) < 1e-12)
    // Sums 2, 0, −1, 5, 3 elect +, +, −, +, +: a loses at −1 and 2, b never.
    #expect(model.electionEntries == 8)
    #expect(model.electionDropped == 2)
    #expect(model.electionDroppedShare == 0.25)
}

@Test func topKSupportOverlapIsTheJaccardIndexOfTheKeptEntries() throws {
    var options = DeltaStatisticsOptions()
    options.density = 0.5
    let disjoint = try StatisticsFixture().run([[4, 3, 2, 1], [1, 2, 3, 4]], options: options).model.pairs[0]
    #expect(disjoint.supportFirst == 2)
    #expect(disjoint.supportSecond == 2)
    #expect(disjoint.supportIntersection == 0)
    #expect(disjoint.supportOverlap == 0)
    // Ties at the k-th value are all kept: b keeps {0, 1, 2}; a keeps {0, 1}.
    let tied = try StatisticsFixture().run([[4, -3, 2, 1], [2, 2, -2, 1]], options: options).model.pairs[0]
    #expect(tied.supportFirst == 2)
    #expect(tied.supportSecond == 3)
    #expect(tied.supportIntersection == 2)
    #expect(tied.supportOverlap == 2.0 / 3.0)
}

@Test func supportOfASparseDeltaIsEveryNonZeroEntry() throws {
    var options = DeltaStatisticsOptions()
    options.density = 0.5
    let pair = try StatisticsFixture().run([[0, 0, 0, 1, 0, 0], [1, 1, 1, 1, 0, 0]], options: options).model.pairs[0]
    #expect(pair.supportFirst == 1)
    #expect(pair.supportSecond == 4)
    #expect(pair.supportIntersection == 1)
}

@Test func nonFiniteEntriesAreCountedAndLeftOut() throws {
    let a: [Float] = [1, .nan, -.infinity, 0, 2]
    let b: [Float] = [1, 1, 1, 1, .nan]
    let model = try StatisticsFixture().run([a, b]).model
    #expect(model.deltas[0].nonFinite == 2)
    #expect(model.deltas[0].elements == 3)
    #expect(model.deltas[0].l1 == 3)
    #expect(model.deltas[0].maxAbs == 2)
    #expect(model.deltas[1].nonFinite == 1)
    #expect(model.deltas[1].l1 == 4)
    #expect(model.pairs[0].positions == 2)  // positions 0 and 3
    #expect(model.electionEntries == 3)
}

/// Brute-force figures over all tensors, for the chunked and parallel engine to match.
@Test func chunkedParallelRunMatchesDirectComputation() throws {
    let fixture = StatisticsFixture()
    var generator = SystemRandomNumberGenerator()
    let shapes: [(String, Int)] = [("model.layers.0.mlp.up_proj.weight", 1003), ("model.layers.1.self_attn.q_proj.weight", 517),
                                   ("model.norm.weight", 64), ("lm_head.weight", 2000)]
    var base: [(String, [Int], [Float])] = [], first: [(String, [Int], [Float])] = [], second: [(String, [Int], [Float])] = []
    var all: [[Float]] = [[], []]
    for (name, n) in shapes {
        let b = (0..<n).map { _ in Float.random(in: -1...1, using: &generator) }
        // Few distinct magnitudes, so ties and shared boundary bins are common.
        let d1 = (0..<n).map { _ in Float(Int.random(in: -20...20, using: &generator)) / 64 }
        let d2 = (0..<n).map { i in i % 3 == 0 ? Float(Int.random(in: -9...9, using: &generator)) / 32 : 0 }
        base.append((name, [n], b))
        first.append((name, [n], zip(b, d1).map { $0 + $1 }))
        second.append((name, [n], zip(b, d2).map { $0 + $1 }))
        all[0] += zip(b, d1).map { ($0 + $1) - $0 }
        all[1] += zip(b, d2).map { ($0 + $1) - $0 }
    }
    var options = DeltaStatisticsOptions()
    options.chunkElements = 40
    options.workers = 3
    let report = try DeltaStatistics.compute(
        base: try fixture.checkpoint("base.safetensors", base),
        tuned: [try fixture.checkpoint("a.safetensors", first), try fixture.checkpoint("b.safetensors", second)],
        names: ["a", "b"], options: options)
    for d in 0..<2 {
        let magnitudes = all[d].map { Double(abs($0)) }
        let figures = report.model.deltas[d]
        #expect(figures.zeros == magnitudes.filter { $0 == 0 }.count)
        #expect(abs(figures.l1 - magnitudes.reduce(0, +)) < 1e-9)
        let k = magnitudes.count / 100
        #expect(figures.topMass == magnitudes.sorted(by: >)[0..<k].reduce(0, +))
    }
    var both = 0, agree = 0
    for i in all[0].indices where all[0][i] != 0 && all[1][i] != 0 {
        both += 1
        if (all[0][i] > 0) == (all[1][i] > 0) { agree += 1 }
    }
    #expect(report.model.pairs[0].bothNonzero == both)
    #expect(report.model.pairs[0].signAgreements == agree)
    #expect(report.tensors.map(\.name) == shapes.map(\.0).sorted())  // the base file's order
    #expect(report.layers.map(\.layer) == [0, 1])
    #expect(report.kinds.map(\.name) == ["embeddings", "attention", "mlp", "norms"])
}

@Test(arguments: [
    ("model.embed_tokens.weight", TensorKind.embeddings), ("lm_head.weight", .embeddings), ("token_embd.weight", .embeddings),
    ("output.weight", .embeddings), ("model.layers.3.self_attn.k_proj.weight", .attention), ("blk.3.attn_q.weight", .attention),
    ("model.layers.3.mlp.down_proj.weight", .mlp), ("blk.0.ffn_gate.weight", .mlp),
    ("model.layers.3.post_attention_layernorm.weight", .norms), ("blk.2.attn_norm.weight", .norms),
    ("model.norm.weight", .norms), ("rope.freqs", .other),
])
func tensorKindsFollowTheName(name: String, kind: TensorKind) {
    #expect(TensorKind(tensorName: name) == kind)
}

@Test func layerIndexReadsLayersAndBlkPrefixes() {
    #expect(layerIndex(ofTensor: "model.layers.12.mlp.up_proj.weight") == 12)
    #expect(layerIndex(ofTensor: "blk.7.attn_q.weight") == 7)
    #expect(layerIndex(ofTensor: "model.embed_tokens.weight") == nil)
    #expect(layerIndex(ofTensor: "model.layers.x.mlp.weight") == nil)
}

@Test func groupingSumsTensorsIntoKindsAndLayers() throws {
    let fixture = StatisticsFixture()
    let names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
                 "model.layers.1.self_attn.q_proj.weight", "model.embed_tokens.weight"]
    let base = try fixture.checkpoint("base.safetensors", names.map { ($0, [2], [0, 0]) })
    let tuned = try fixture.checkpoint("ft.safetensors", names.enumerated().map { ($0.1, [2], [Float($0.0), 0]) })
    let report = try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["ft"])
    #expect(report.layers.map(\.name) == ["layer 0", "layer 1"])
    #expect(report.layers.map(\.tensorCount) == [2, 1])
    #expect(report.layers[0].deltas[0].l1 == 1)
    #expect(report.layers[1].deltas[0].l1 == 2)
    let attention = report.kinds.first { $0.name == "attention" }!
    #expect(attention.tensorCount == 2)
    #expect(attention.deltas[0].l1 == 2)
    #expect(attention.deltas[0].zeros == 3)
    #expect(report.model.elements == 8)
    #expect(report.scopes(by: .tensor).count == 4)
}

@Test func mismatchedShapesNameTheTensorAndBothShapes() throws {
    let fixture = StatisticsFixture()
    let base = try fixture.checkpoint("base.safetensors", [("w", [2, 3], [Float](repeating: 0, count: 6))])
    let tuned = try fixture.checkpoint("ft.safetensors", [("w", [3, 2], [Float](repeating: 0, count: 6))])
    #expect(throws: DeltaStatisticsError.shapeMismatch(file: tuned.path, tensor: "w", shape: [3, 2], baseShape: [2, 3])) {
        try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["ft"])
    }
    let error = DeltaStatisticsError.shapeMismatch(file: "ft.safetensors", tensor: "w", shape: [3, 2], baseShape: [2, 3])
    #expect(error.description == "ft.safetensors: tensor 'w' has shape [3, 2] but the base has [2, 3]")
}

@Test func aBaseSharingNoTensorIsAnError() throws {
    let fixture = StatisticsFixture()
    let base = try fixture.checkpoint("base.safetensors", [("a", [1], [0])])
    let tuned = try fixture.checkpoint("ft.safetensors", [("b", [1], [1])])
    #expect(throws: DeltaStatisticsError.noSharedTensors(file: tuned.path, base: base.path)) {
        try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["ft"])
    }
}

@Test func tensorsMissingFromAFineTuneAreSkippedAndListed() throws {
    let fixture = StatisticsFixture()
    let base = try fixture.checkpoint("base.safetensors", [("a", [1], [0]), ("b", [1], [0])])
    let tuned = try fixture.checkpoint("ft.safetensors", [("a", [1], [1]), ("c", [1], [1])])
    let report = try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["ft"])
    #expect(report.tensors.map(\.name) == ["a"])
    #expect(Set(report.skipped.map(\.name)) == ["b", "c"])
}

@Test func jsonHoldsEveryFigureUnderStableKeys() throws {
    let report = try StatisticsFixture().run([[0, 1, -2, 0], [0, 1, 2, 3]])
    let json = report.json
    #expect(json["schema_version"] == .number("1"))
    let delta = json["model"]?["deltas"].flatMap { if case .array(let items) = $0 { return items.first } else { return nil } }
    for key in ["name", "elements", "non_finite", "zeros", "zero_share", "within", "l1", "l2", "max_abs", "mean_abs",
                "relative_mean_abs", "hoyer", "top_entries", "top_mass", "top_mass_share", "log10_histogram"] {
        #expect(delta?[key] != nil, "missing \(key)")
    }
    #expect(delta?["zero_share"] == .number("0.5"))
    #expect(delta?["relative_mean_abs"] == .null)  // the base is all zeros
    let text = json.prettyText
    #expect(try JSONParser.parse(text) == json)
}

@Test func summaryCallsASparseDeltaUnchangedAndADenseOneDense() throws {
    var sparse = [Float](repeating: 0, count: 100)
    sparse[3] = 1
    let dense = (0..<100).map { Float($0 + 1) }
    let summary = try StatisticsFixture().run([dense, sparse]).summary
    #expect(summary.contains("d0: dense (0.0 % unchanged)"))
    #expect(summary.contains("d1: 99.0 % of entries unchanged"))
    #expect(summary.contains("sign conflicts: 0.0 % of shared entries"))
}

@Test func plotIsSelfContainedAndReplacesTheFileAtomically() throws {
    let fixture = StatisticsFixture()
    let names = ["model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"]
    let base = try fixture.checkpoint("base.safetensors", names.map { ($0, [4], [0, 0, 0, 0]) })
    let a = try fixture.checkpoint("a.safetensors", names.map { ($0, [4], [1e-3, 2e-3, 0, -1e-4]) })
    let b = try fixture.checkpoint("b.safetensors", names.map { ($0, [4], [0, 0, 5e-4, 0]) })
    let report = try DeltaStatistics.compute(base: base, tuned: [a, b], names: ["sft", "dpo"])
    let plot = DeltaStatisticsPlot(report)
    let svg = plot.svg
    #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
    #expect(!svg.contains("href") && !svg.contains("<script") && !svg.contains("url("))
    #expect(svg.components(separatedBy: "<polyline").count - 1 == 4)  // two histograms, two density lines
    #expect(svg.contains("log10 |δ|") && svg.contains("layer") && svg.contains("sft: 25.0 % zero"))
    let path = fixture.folder + "/stats.svg"
    try "old".write(toFile: path, atomically: false, encoding: .utf8)
    try plot.write(to: path)
    #expect(try String(contentsOfFile: path, encoding: .utf8) == svg)
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: fixture.folder).filter { $0.hasPrefix(".") }
    #expect(leftovers.isEmpty)
}

@Test func plotOfAModelWithoutLayersSaysSo() throws {
    let svg = DeltaStatisticsPlot(try StatisticsFixture().run([[0, 1]])).svg
    #expect(svg.contains("no tensor names a layer"))
}

/// The sum-consensus election with unit weights, position by position.
private func directElection(_ deltas: [[Float]]) -> (entries: Int, dropped: Int) {
    var entries = 0, dropped = 0
    for i in deltas[0].indices where deltas.allSatisfy({ $0[i].isFinite }) {
        let sum = deltas.reduce(Float(0)) { $0 + $1[i] }
        for d in deltas where d[i] != 0 {
            entries += 1
            if (d[i] < 0) != (sum < 0) { dropped += 1 }
        }
    }
    return (entries, dropped)
}

@Test func twoDeltaElectionFollowsTheSumRuleWithTiesZerosAndNonFiniteChunks() throws {
    var generator = SystemRandomNumberGenerator()
    let n = 3000
    var a = (0..<n).map { _ in Float(Int.random(in: -4...4, using: &generator)) / 8 }
    var b = (0..<n).map { _ in Float(Int.random(in: -4...4, using: &generator)) / 8 }
    for i in stride(from: 0, to: n, by: 7) { b[i] = -a[i] }  // exact ties: the sum is zero and elects +
    a[5] = -0.0
    b[2500] = .nan  // one chunk goes through the election kernel
    var options = DeltaStatisticsOptions()
    options.chunkElements = 256
    let model = try StatisticsFixture().run([a, b], options: options).model
    let expected = directElection([a, b])
    #expect(model.electionEntries == expected.entries)
    #expect(model.electionDropped == expected.dropped)
}

@Test func threeDeltasGiveThreePairsInOrderAndOneElection() throws {
    let report = try StatisticsFixture().run([[1, 2], [1, -2], [-3, 0]])
    #expect(report.model.pairs.map { [$0.first, $0.second] } == [[0, 1], [0, 2], [1, 2]])
    // Sums −1 (elects −) and 0 (elects +): 1, 1 lose at the first; −2 loses at the second.
    #expect(report.model.electionEntries == 5)
    #expect(report.model.electionDropped == 3)
    #expect(report.model.pairs[1].signAgreements == 0)
}
