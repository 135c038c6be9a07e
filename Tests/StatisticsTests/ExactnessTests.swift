import Checkpoints
import Foundation
import Testing
@testable import Merging

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
private struct SampledModel {
    static let names = ["model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.weight",
                 "model.layers.1.mlp.up_proj.weight", "lm_head.weight"]
    let deltas: [[String: [Float]]]
    let fixture = StatisticsFixture()
    var names: [String] { Self.names }

    func run(_ options: DeltaStatisticsOptions) throws -> StatisticsRun {
        let base = try fixture.checkpoint("base.safetensors", names.map { ($0, [deltas[0][$0]!.count], [Float](repeating: 0, count: deltas[0][$0]!.count)) })
        let tuned = try deltas.indices.map { d in
            try fixture.checkpoint("ft\(d).safetensors", names.map { ($0, [deltas[d][$0]!.count], deltas[d][$0]!) })
        }
        let plan = try StatisticsPlan(base: base, tuned: tuned)
        return try StatisticsRun(plan: plan, base: base, tuned: tuned, options: options)
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

/// Sampling in short runs, so every tensor of a few thousand entries is sampled, not read whole.
private func partialSampling() -> DeltaStatisticsOptions {
    var options = DeltaStatisticsOptions()
    options.sampling.wholeTensorLimit = 0
    options.sampling.runLength = 8
    options.sampling.sparsity = 4
    options.sampling.minimumRuns = 8
    options.sampling.maximumShare = 1
    options.chunkElements = 256
    options.workers = 2
    options.thresholds = [1.0 / 64, 0.25]
    return options
}

/// Deltas of multiples of 1/64 (exact sums, many ties); the second is sparse.
private func randomModel(seed: UInt64) -> SampledModel {
    var generator = SplitMix(state: seed)
    let sizes = [3001, 2048, 2500, 4096]
    var deltas: [[String: [Float]]] = [[:], [:]]
    for (name, n) in zip(SampledModel.names, sizes) {
        deltas[0][name] = (0..<n).map { _ in Float(Int.random(in: -40...40, using: &generator)) / 64 }
        deltas[1][name] = (0..<n).map { i in i % 5 == 0 ? Float(Int.random(in: -300...300, using: &generator)) / 64 : 0 }
    }
    return SampledModel(deltas: deltas)
}

@Test func sampledRangesResolveEveryTopKFigureInOnePass() throws {
    let model = randomModel(seed: 7)
    let options = partialSampling()
    let run = try model.run(options)
    try run.samplePass()
    try run.fullPass()
    run.resolveScopes()
    #expect(run.states.allSatisfy { !$0!.unresolved })
    for (tops, masses) in zip(run.scopeTop, run.scopeMass) {
        for (top, mass) in zip(tops, masses) { #expect((top == nil) == (mass == nil)) }
    }
    try run.boundaryPass()
    model.expectExact(run.report(names: ["a", "b"]), options: options)
}

@Test func aSampleThatMissesTheBoundaryFallsBackToTheBoundaryPass() throws {
    // Every sampled entry is tiny and every other one large: the sample places the
    // top-1 % and support boundaries far below the true ones.
    var options = partialSampling()
    options.sampling.sparsity = 8
    options.sampling.runLength = 4
    var deltas: [[String: [Float]]] = [[:], [:]]
    for (t, name) in SampledModel.names.enumerated() {
        let n = 2048 + 512 * t
        let runs = SampleRuns(elements: n, design: options.sampling)
        var sampled = [Bool](repeating: false, count: n)
        for start in runs.starts { for i in start..<(start + runs.length) { sampled[i] = true } }
        var first = [Float](repeating: 0, count: n), second = first
        for i in 0..<n {
            if sampled[i] {
                first[i] = Float(1 + i % 3) / 1024
                second[i] = -Float(1 + i % 5) / 2048
            } else {
                first[i] = Float(i % 97 + 1) / 8
                second[i] = i % 3 == 0 ? Float(i % 89 + 1) / 4 : 0
            }
        }
        deltas[0][name] = first
        deltas[1][name] = second
    }
    let model = SampledModel(deltas: deltas)
    let run = try model.run(options)
    try run.samplePass()
    try run.fullPass()
    run.resolveScopes()
    #expect(run.states.allSatisfy { $0!.unresolved })
    #expect(run.scopeMass[0].allSatisfy { $0 == nil })  // the model scope
    try run.boundaryPass()
    model.expectExact(run.report(names: ["a", "b"]), options: options)
}

@Test func scopesPastThePatternBudgetAreResolvedByTheBoundaryPass() throws {
    let model = randomModel(seed: 11)
    var options = partialSampling()
    options.sampling.scopePatternBudget = 0
    let run = try model.run(options)
    try run.samplePass()
    try run.fullPass()
    run.resolveScopes()
    #expect(run.scopeMass[0].allSatisfy { $0 == nil })
    try run.boundaryPass()
    model.expectExact(run.report(names: ["a", "b"]), options: options)
}

@Test func sampledFiguresDoNotDependOnWorkersOrChunks() throws {
    let model = randomModel(seed: 3)
    var options = partialSampling()
    let run = try model.run(options)
    let first = try { () throws -> DeltaStatisticsReport in
        try run.samplePass(); try run.fullPass(); run.resolveScopes(); try run.boundaryPass()
        return run.report(names: ["a", "b"])
    }()
    options.workers = 1
    options.chunkElements = 1024
    let copy = SampledModel(deltas: model.deltas)
    let other = try copy.run(options)
    try other.samplePass(); try other.fullPass(); other.resolveScopes(); try other.boundaryPass()
    let second = other.report(names: ["a", "b"])
    withExtendedLifetime((model, copy)) {}
    #expect(first.model == second.model)
    #expect(first.tensors == second.tensors)
    #expect(first.layers == second.layers)
}

@Test func sampleRunsAreEvenlySpacedInsideTheTensorOrTheWholeOfASmallOne() {
    let design = SampleDesign()
    let small = SampleRuns(elements: 1000, design: design)
    #expect(small.starts == [0] && small.length == 1000 && small.correction == 0)
    let large = SampleRuns(elements: 10_000_000, design: design)
    #expect(large.starts.count == 10_000_000 / (design.sparsity * design.runLength))
    #expect(large.starts.last! + large.length <= 10_000_000)
    let gaps = Set(zip(large.starts.dropFirst(), large.starts).map { $0 - $1 })
    #expect(gaps.count == 1)
    #expect(abs(large.weight * Double(large.sampled) - 10_000_000) < 1e-6)
}

@Test func aWholeSampleGivesTheExactBoundaryBin() {
    // 1000 entries 1…1000: the top 1 % ends at 991, the top 10 % at 901.
    var counts: [Int: Int] = [:]
    for v in 1...1000 { counts[Int(Float(v).bitPattern >> MagnitudeBins.shift), default: 0] += 1 }
    let sample = DeltaSample(sampled: 1000, nonFinite: 0, bins: counts.sorted { $0.key > $1.key }.map { ($0.key, $0.value) })
    let estimate = SampleEstimate()
    estimate.add(sample, runs: SampleRuns(elements: 1000, design: SampleDesign()))
    let bin = { (v: Float) in Int(v.bitPattern >> MagnitudeBins.shift) }
    #expect(estimate.range(share: 0.01, design: SampleDesign()) == CandidateRange(low: bin(991), high: bin(991)))
    #expect(estimate.range(share: 0.1, design: SampleDesign()) == CandidateRange(low: bin(901), high: bin(901)))
    // k past every non-zero entry: no boundary.
    #expect(estimate.range(share: 2, design: SampleDesign()) == CandidateRange(low: -1, high: -1))
}

@Test func patternCountsKeepEveryDistinctPatternAcrossGrowth() {
    let counts = PatternCounts(capacity: 16)
    var expected: [UInt32: Int] = [:]
    for i in 0..<20_000 {
        let key = Float(1 + i % 5000).bitPattern
        counts.add(key)
        expected[key, default: 0] += 1
    }
    #expect(counts.count == 5000)
    var seen: [UInt32: Int] = [:]
    counts.forEach { seen[$0] = $1 }
    #expect(seen == expected)
    let bin = Int(Float(4096).bitPattern >> MagnitudeBins.shift)
    let inBin = expected.filter { Int($0.key >> MagnitudeBins.shift) == bin }
    #expect(counts.count(bin: bin, atMost: Float(4100).bitPattern) == inBin.filter { $0.key <= Float(4100).bitPattern }.values.reduce(0, +))
    counts.removeAll()
    #expect(counts.count == 0)
    // Reused after clearing, through the list form, across growth again.
    let list = (0..<30_000).map { Float(1 + $0 % 7000).bitPattern }
    list.withUnsafeBufferPointer { counts.add($0.baseAddress!, count: $0.count) }
    var again: [UInt32: Int] = [:]
    counts.forEach { again[$0] = $1 }
    #expect(again == Dictionary(list.map { ($0, 1) }, uniquingKeysWith: +))
}

@Test func aCheckpointTruncatedAfterOpeningIsAReadError() throws {
    let fixture = StatisticsFixture()
    let n = 100_000
    let base = try fixture.checkpoint("base.safetensors", [("w", [n], [Float](repeating: 0, count: n))])
    let tuned = try fixture.checkpoint("ft.safetensors", [("w", [n], [Float](repeating: 1, count: n))])
    let handle = try #require(FileHandle(forWritingAtPath: tuned.path))
    try handle.truncate(atOffset: UInt64(tuned.files[0].size / 2))
    try handle.close()
    #expect {
        try DeltaStatistics.compute(base: base, tuned: [tuned], names: ["ft"])
    } throws: { error in
        guard case .checkpoint(.io(let file, let problem)) = error as? DeltaStatisticsError else { return false }
        return file == tuned.path && problem.contains("shorter")
    }
}

@Test(arguments: [0, 1])
func mostlyZeroDeltasGiveTheSameFiguresThroughTheSparsePaths(sparseIndex: Int) throws {
    // One delta 90 % zeros (with non-finite entries), the other dense: the histogram and
    // the support screen visit only the sparse one's non-zero entries.
    var generator = SplitMix(state: 19 + UInt64(sparseIndex))
    var deltas: [[String: [Float]]] = [[:], [:]]
    for (name, n) in zip(SampledModel.names, [3001, 2048, 2500, 4096]) {
        var sparse = [Float](repeating: 0, count: n)
        for i in 0..<n where Int.random(in: 0..<10, using: &generator) == 0 {
            sparse[i] = Float(Int.random(in: -300...300, using: &generator)) / 64
        }
        sparse[n / 3] = .nan
        sparse[n / 2] = -.infinity
        deltas[sparseIndex][name] = sparse
        deltas[1 - sparseIndex][name] = (0..<n).map { _ in Float(Int.random(in: -40...40, using: &generator)) / 64 }
    }
    let model = SampledModel(deltas: deltas)
    let options = partialSampling()
    let run = try model.run(options)
    try run.samplePass()
    try run.fullPass()
    run.resolveScopes()
    try run.boundaryPass()
    let report = run.report(names: ["a", "b"])
    model.expectExact(report, options: options)
    for tensor in report.tensors {
        let values = deltas[sparseIndex][tensor.name]!
        let figures = tensor.deltas[sparseIndex]
        #expect(figures.l1 == Direct.magnitudes(values).reduce(0, +))
        #expect(figures.nonFinite == 2)
        #expect(figures.log10Histogram.reduce(0, +) == values.filter { $0.isFinite && $0 != 0 }.count)
    }
}
