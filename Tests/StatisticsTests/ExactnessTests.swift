import Checkpoints
import Foundation
import Testing
@testable import Statistics

/// A seeded generator, so a failure can be replayed.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// Top-k figures computed directly from the values, for the engine to match.
private enum Direct {
    static func magnitudes(_ delta: [Float]) -> [Double] {
        delta.filter(\.isFinite).map { Double(abs($0)) }
    }

    /// Σ of the max(1, ⌊n/100⌋) largest magnitudes.
    static func topMass(_ delta: [Float]) -> Double {
        let m = magnitudes(delta)
        return m.sorted(by: >).prefix(max(1, m.count / 100)).reduce(0, +)
    }

    /// Positions of the top-k support: non-zero entries at or above the k-th largest magnitude.
    static func support(_ delta: [Float], density: Double) -> Set<Int> {
        let m = magnitudes(delta)
        let k = max(1, Int(density * Double(m.count)))
        let sorted = m.sorted(by: >)
        let threshold = k <= sorted.count ? sorted[k - 1] : 0
        return Set(delta.indices.filter { delta[$0].isFinite && delta[$0] != 0 && Double(abs(delta[$0])) >= threshold })
    }

    static func within(_ delta: [Float], _ tau: Float) -> Int {
        delta.filter { $0.isFinite && abs($0) <= tau }.count
    }
}

/// Checkpoints of several tensors with a zero base, two deltas, and the engine's run over them.
private struct TestModel {
    static let names = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.1.mlp.up_proj.weight", "lm_head.weight"]
    let deltas: [[String: [Float]]]
    let fixture = StatisticsFixture()
    var names: [String] { Self.names }

    func run(_ options: DeltaStatisticsOptions) throws -> DeltaStatisticsReport {
        let base = try fixture.checkpoint("base.safetensors", names.map { ($0, [deltas[0][$0]!.count], [Float](repeating: 0, count: deltas[0][$0]!.count)) })
        let tuned = try deltas.indices.map { d in
            try fixture.checkpoint("ft\(d).safetensors", names.map { ($0, [deltas[d][$0]!.count], deltas[d][$0]!) })
        }
        return try DeltaStatistics.compute(base: base, tuned: tuned, names: ["a", "b"], options: options)
    }

    /// Every top-k and threshold figure of `report` against the direct computation.
    func expectExact(_ report: DeltaStatisticsReport, options: DeltaStatisticsOptions) {
        for tensor in report.tensors {
            let values = deltas.map { $0[tensor.name]! }
            for d in deltas.indices {
                #expect(tensor.deltas[d].topMass == Direct.topMass(values[d]), "\(tensor.name) delta \(d)")
                for (t, tau) in options.thresholds.enumerated() {
                    #expect(tensor.deltas[d].withinThreshold[t] == Direct.within(values[d], tau))
                }
            }
            let a = Direct.support(values[0], density: options.density), b = Direct.support(values[1], density: options.density)
            #expect(tensor.pairs[0].supportFirst == a.count)
            #expect(tensor.pairs[0].supportSecond == b.count)
            #expect(tensor.pairs[0].supportIntersection == a.intersection(b).count, "\(tensor.name)")
        }
        for d in deltas.indices {
            let all = names.flatMap { deltas[d][$0]! }
            #expect(report.model.deltas[d].topMass == Direct.topMass(all))
            for layer in report.layers {
                let values = names.filter { layerIndex(ofTensor: $0) == layer.layer }.flatMap { deltas[d][$0]! }
                #expect(layer.deltas[d].topMass == Direct.topMass(values), "\(layer.name)")
            }
            for kind in report.kinds {
                let values = names.filter { TensorKind(tensorName: $0).rawValue == kind.name }.flatMap { deltas[d][$0]! }
                #expect(kind.deltas[d].topMass == Direct.topMass(values), "\(kind.name)")
            }
        }
    }
}

/// Small chunks, so every tensor spans several, on two workers.
private func smallChunks() -> DeltaStatisticsOptions {
    var options = DeltaStatisticsOptions()
    options.chunkElements = 256
    options.workers = 2
    options.thresholds = [1.0 / 64, 0.25]
    return options
}

/// Deltas of multiples of 1/64 (exact sums, many ties); the second is sparse.
private func randomModel(seed: UInt64) -> TestModel {
    var generator = SplitMix(state: seed)
    let sizes = [3001, 2048, 2500, 4096]
    var deltas: [[String: [Float]]] = [[:], [:]]
    for (name, n) in zip(TestModel.names, sizes) {
        deltas[0][name] = (0..<n).map { _ in Float(Int.random(in: -40...40, using: &generator)) / 64 }
        deltas[1][name] = (0..<n).map { i in i % 5 == 0 ? Float(Int.random(in: -300...300, using: &generator)) / 64 : 0 }
    }
    return TestModel(deltas: deltas)
}

@Test(arguments: [7, 5, 11] as [UInt64])
func everyTopKAndThresholdFigureIsExactInEveryScope(seed: UInt64) throws {
    let model = randomModel(seed: seed)
    let options = smallChunks()
    model.expectExact(try model.run(options), options: options)
}

@Test(arguments: [7, 8, 9, 17])
func chunksShorterThanAVectorGroupAndSlicesOfManyChunksGiveExactFigures(chunk: Int) throws {
    // A slice is 64 chunks, so every tensor here spans several slices, and chunks of 7, 9
    // and 17 leave a tail shorter than the 8 vector lanes in every chunk.
    let model = randomModel(seed: 23)
    var options = smallChunks()
    options.chunkElements = chunk
    model.expectExact(try model.run(options), options: options)
}

@Test func figuresDoNotDependOnWorkersChunksOrKeptPositions() throws {
    let model = randomModel(seed: 3)
    var options = smallChunks()
    let first = try model.run(options)
    options.workers = 1
    options.chunkElements = 1024
    options.supportRecordLimit = 0
    let second = try TestModel(deltas: model.deltas).run(options)
    #expect(first.model == second.model)
    #expect(first.tensors == second.tensors)
    #expect(first.layers == second.layers)
    #expect(first.kinds == second.kinds)
}

@Test(arguments: [1 << 20, 100, 0])
func aSupportBoundaryOfManyEqualMagnitudesKeepsEveryTie(recordLimit: Int) throws {
    // Both deltas hold one magnitude almost everywhere: every position of both lies in
    // the boundary bins, so the intersection is decided entirely from kept positions, or,
    // past the limit of kept positions, in a third pass.
    let n = 1000
    let a = (0..<n).map { i in Float(i % 3 == 0 ? -1 : 1) / 8 }
    let b = (0..<n).map { i in i % 7 == 0 ? Float(0) : Float(i % 2 == 0 ? 1 : -1) / 8 }
    var options = DeltaStatisticsOptions()
    options.density = 0.1
    options.supportRecordLimit = recordLimit
    options.chunkElements = 64
    let report = try StatisticsFixture().run([a, b], options: options)
    let pair = report.tensors[0].pairs[0]
    let sa = Direct.support(a, density: 0.1), sb = Direct.support(b, density: 0.1)
    #expect(pair.supportFirst == sa.count && pair.supportSecond == sb.count)
    #expect(pair.supportIntersection == sa.intersection(sb).count)
}

@Test(arguments: [0, 1])
func mostlyZeroDeltasGiveTheSameFiguresThroughTheSparsePaths(sparseIndex: Int) throws {
    // One delta 90 % zeros (with non-finite entries), the other dense: the histogram
    // of the sparse one skips groups of zeros.
    var generator = SplitMix(state: 19 + UInt64(sparseIndex))
    var deltas: [[String: [Float]]] = [[:], [:]]
    for (name, n) in zip(TestModel.names, [3001, 2048, 2500, 4096]) {
        var sparse = [Float](repeating: 0, count: n)
        for i in 0..<n where Int.random(in: 0..<10, using: &generator) == 0 {
            sparse[i] = Float(Int.random(in: -300...300, using: &generator)) / 64
        }
        sparse[n / 3] = .nan
        sparse[n / 2] = -.infinity
        deltas[sparseIndex][name] = sparse
        deltas[1 - sparseIndex][name] = (0..<n).map { _ in Float(Int.random(in: -40...40, using: &generator)) / 64 }
    }
    let model = TestModel(deltas: deltas)
    let options = smallChunks()
    let report = try model.run(options)
    model.expectExact(report, options: options)
    for tensor in report.tensors {
        let values = deltas[sparseIndex][tensor.name]!
        let figures = tensor.deltas[sparseIndex]
        #expect(figures.l1 == Direct.magnitudes(values).reduce(0, +))
        #expect(figures.nonFinite == 2)
        #expect(figures.log10Histogram.reduce(0, +) == values.filter { $0.isFinite && $0 != 0 }.count)
    }
}

/// Path of a file under the package's fixtures/ folder.
private func fixture(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures").appendingPathComponent(relative).path
}

@Test func blockQuantizedGGUFTensorsAreReadBlockByBlock() throws {
    // q8_0 stores 32 elements in 34 bytes: chunks are read by blocks, not by element width.
    let base = try Checkpoint.open(fixture("conversion/llamacpp-f32.gguf"))
    let tuned = try Checkpoint.open(fixture("conversion/llamacpp-q8_0.gguf"))
    // A chunk of 80 elements is read as two Q8_0 blocks at a time, and gives what
    // the default chunk does.
    // The plain difference of the decoded values (the quantization-aware delta of this
    // pair is zero throughout, checked below).
    var naive = DeltaStatisticsOptions()
    naive.quantizedDelta = .naive
    var small = naive
    small.chunkElements = 80
    let report = try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["q8"], options: small)
    let defaultReport = try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["q8"], options: naive)
    #expect(defaultReport.tensors.map(\.deltas[0].zeros) == report.tensors.map(\.deltas[0].zeros))
    #expect(defaultReport.tensors.map(\.deltas[0].topMass) == report.tensors.map(\.deltas[0].topMass))
    #expect(report.tensors.contains { tuned.tensor(named: $0.name)?.dtype == .q8_0 })
    for scope in report.tensors {
        let delta = zip(try tuned.decode(tuned.tensor(named: scope.name)!), try base.decode(base.tensor(named: scope.name)!)).map { $0 - $1 }
        #expect(scope.deltas[0].zeros == delta.filter { $0 == 0 }.count, "\(scope.name)")
        #expect(scope.deltas[0].maxAbs == delta.map(\.magnitude).max()!)
        #expect(scope.deltas[0].topMass == Direct.topMass(delta))
    }
    // The q8_0 file is llama.cpp's quantization of the f32 one, and Claire's Q8_0
    // quantizer gives the same blocks, so the quantization-aware delta vanishes.
    let aware = try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["q8"], options: DeltaStatisticsOptions())
    for scope in aware.tensors where tuned.tensor(named: scope.name)?.dtype == .q8_0 {
        #expect(scope.deltas[0].maxAbs == 0, "\(scope.name)")
    }
}
