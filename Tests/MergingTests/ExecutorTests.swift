import Checkpoints
import Foundation
import Testing
@testable import Merging

/// Base, A and B with one 2×2 weight, a norm vector, an integer tensor and (base only) a bias.
private func smallTrio(_ folder: String) -> (base: String, a: String, b: String) {
    let base = folder + "/base.safetensors", a = folder + "/a.safetensors", b = folder + "/b.safetensors"
    writeCheckpoint(base, [
        TestTensor(name: "model.layers.0.w", shape: [2, 2], values: [1, 1, 1, 1]),
        TestTensor(name: "model.layers.1.w", shape: [2, 2], values: [0, 0, 0, 0]),
        TestTensor(name: "ids", shape: [2], values: [7, 9], dtype: .i32),
        TestTensor(name: "bias", shape: [2], values: [0.5, -0.5]),
    ])
    writeCheckpoint(a, [
        TestTensor(name: "model.layers.0.w", shape: [2, 2], values: [2, 0.5, 1, 4]),   // δ = 1, −0.5, 0, 3
        TestTensor(name: "model.layers.1.w", shape: [2, 2], values: [1, 2, 3, 4]),
        TestTensor(name: "ids", shape: [2], values: [0, 0], dtype: .i32),
    ])
    writeCheckpoint(b, [
        TestTensor(name: "model.layers.0.w", shape: [2, 2], values: [-2, 2, 1, 2]),    // δ = −3, 1, 0, 1
        TestTensor(name: "model.layers.1.w", shape: [2, 2], values: [4, 3, 2, 1]),
        TestTensor(name: "ids", shape: [2], values: [0, 0], dtype: .i32),
    ])
    return (base, a, b)
}

@Test func taskArithmeticAddsWeightedDeltas() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, b) = smallTrio(folder)
    let plan = MergePlan(method: .taskArithmetic, base: base, models: [
        ModelSpec(path: a, parameters: ["weight": .number(1)]), ModelSpec(path: b, parameters: ["weight": .number(0.5)]),
    ])
    let out = try runMerge(plan)
    let expected: [Float] = [0.5, 1, 1, 4.5]  // 1 + δa + 0.5·δb
    #expect(out.values("model.layers.0.w") == expected)
    // Every tensor once, in the base's storage order.
    #expect(out.order == (try Checkpoint.open(base)).tensors.map(\.name))
}

@Test func nonFloatAndBaseOnlyTensorsComeFromTheBase() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, b) = smallTrio(folder)
    let prepared = try PreparedMerge.prepare(MergePlan(method: .ties, base: base, models: [ModelSpec(path: a), ModelSpec(path: b)]))
    #expect(prepared.jobs.first { $0.name == "ids" }?.kind == .copy)
    #expect(prepared.jobs.first { $0.name == "bias" }?.kind == .convert)
    let sink = MemorySink()
    try MergeExecutor(prepared, threads: 1).run(into: sink)
    #expect(sink.values("ids", .i32) == [7, 9])
    #expect(sink.values("bias") == [0.5, -0.5])
}

@Test func tiesTrimsElectsAndNormalizes() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, b) = smallTrio(folder)
    // A trimmed to density 0.5: keeps 3 and 1 (δ = 1, 0, 0, 3). B whole: −3, 1, 0, 1.
    // Sums −2, 1, 0, 4 elect −, +, +, +; agreeing means: −3, 1, (none), (3 + 1)/2.
    let plan = MergePlan(method: .ties, base: base, models: [
        ModelSpec(path: a, parameters: ["density": .number(0.5)]), ModelSpec(path: b),
    ])
    let out = try runMerge(plan)
    let expected: [Float] = [-2, 2, 1, 3]
    #expect(out.values("model.layers.0.w") == expected)
}

@Test func filtersAndGradientsResolvePerTensor() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, _) = smallTrio(folder)
    // Weight gradient [0, 1] over two layers: layer 0 gets 0, layer 1 gets 1.
    let plan = MergePlan(method: .taskArithmetic, base: base, models: [
        ModelSpec(path: a, parameters: ["weight": .gradient([0, 1])]),
    ], parameters: ["lambda": .filtered([FilteredParameter(filter: "layers.1", value: .number(2)),
                                         FilteredParameter(filter: nil, value: .number(1))])])
    let out = try runMerge(plan)
    #expect(out.values("model.layers.0.w") == [1, 1, 1, 1])
    #expect(out.values("model.layers.1.w") == [2, 4, 6, 8])
}

@Test func linearNeedsNoBase() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (_, a, b) = smallTrio(folder)
    let plan = MergePlan(method: .linear, base: nil, models: [
        ModelSpec(path: a, parameters: ["weight": .number(3)]), ModelSpec(path: b, parameters: ["weight": .number(1)]),
    ])
    let out = try runMerge(plan)
    #expect(out.values("model.layers.1.w") == [1.75, 2.25, 2.75, 3.25])
}

@Test func slerpAndModelStockRunOnCheckpoints() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, b) = smallTrio(folder)
    let slerp = try runMerge(MergePlan(method: .slerp, base: base, models: [ModelSpec(path: base), ModelSpec(path: a)],
                                       parameters: ["t": .number(0)]))
    #expect(slerp.values("model.layers.0.w") == [1, 1, 1, 1])
    // Layer 1: base 0, offsets [1,2,3,4] and [4,3,2,1]: cos = 20/30, t = 2c/(1+c) = 0.8.
    let stock = try runMerge(MergePlan(method: .modelStock, base: base, models: [ModelSpec(path: a), ModelSpec(path: b)]))
    let values = stock.values("model.layers.1.w")
    for v in values { #expect(abs(v - 2) < 1e-5) }  // 0.8 · mean 2.5
}

/// A base and two models with one weight bigger than several chunks.
private func bigTrio(_ folder: String, rows: Int = 300, columns: Int = 700) -> (base: String, a: String, b: String) {
    let n = rows * columns
    let base = folder + "/base.safetensors", a = folder + "/a.safetensors", b = folder + "/b.safetensors"
    let b0 = noise(n, seed: 1)
    var x = noise(n, seed: 2, scale: 0.01), y = noise(n, seed: 3, scale: 0.01)
    for i in 0..<n {
        x[i] += b0[i]
        y[i] += b0[i]
    }
    writeCheckpoint(base, [TestTensor(name: "w", shape: [rows, columns], values: b0, dtype: .bf16)])
    writeCheckpoint(a, [TestTensor(name: "w", shape: [rows, columns], values: x, dtype: .bf16)])
    writeCheckpoint(b, [TestTensor(name: "w", shape: [rows, columns], values: y, dtype: .bf16)])
    return (base, a, b)
}

@Test(arguments: [MergeMethod.ties, .dareTies, .breadcrumbsTies, .della, .slerp, .modelStock])
func outputBytesDoNotDependOnThreadCount(method: MergeMethod) throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, b) = bigTrio(folder)
    var models = [ModelSpec(path: a, parameters: ["density": .number(0.3)]), ModelSpec(path: b, parameters: ["density": .number(0.6)])]
    if method == .slerp { models = [ModelSpec(path: a)] }
    if method == .modelStock { models = [ModelSpec(path: a), ModelSpec(path: b)] }
    var parameters: [String: ParameterValue] = method == .slerp ? ["t": .number(0.3)] : [:]
    if method == .della { parameters["epsilon"] = .number(0.1) }
    let plan = MergePlan(method: method, base: base, models: models, parameters: parameters, seed: 42)
    let one = try runMerge(plan, threads: 1)
    let three = try runMerge(plan, threads: 3)
    #expect(one.tensors["w"] == three.tensors["w"])
}

@Test func streamedTiesMatchesTheInMemorySparsifier() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, _) = bigTrio(folder)
    let out = try runMerge(MergePlan(method: .ties, base: base, models: [ModelSpec(path: a, parameters: ["density": .number(0.2)])]))
    let b0 = try Checkpoint.open(base), x = try Checkpoint.open(a)
    let bv = try b0.decode(b0.tensor(named: "w")!)
    var delta = try x.decode(x.tensor(named: "w")!)
    for i in delta.indices { delta[i] -= bv[i] }
    Sparsifier.magnitude.sparsify(&delta, density: 0.2, rescale: .none, stream: CounterRandom(seed: 0, tensor: "w", model: 0))
    var expected = [Float](repeating: 0, count: delta.count)
    for i in delta.indices { expected[i] = Float(bitPattern: UInt32(ElementCodec.floatToBF16(bv[i] + delta[i])) << 16) }
    #expect(out.values("w", .bf16) == expected)
}

@Test func seedChangesDareOutputAndIsReproducible() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let (base, a, b) = bigTrio(folder, rows: 20, columns: 50)
    func run(_ seed: UInt64) throws -> [UInt8] {
        try runMerge(MergePlan(method: .dareTies, base: base, models: [
            ModelSpec(path: a, parameters: ["density": .number(0.5)]), ModelSpec(path: b, parameters: ["density": .number(0.5)]),
        ], seed: seed)).tensors["w"]!
    }
    #expect(try run(7) == run(7))
    #expect(try run(7) != run(8))
}

@Test func globalTrimKeepsTheTopEntriesOfTheWholeModel() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = folder + "/base.safetensors", a = folder + "/a.safetensors"
    writeCheckpoint(base, [TestTensor(name: "p", shape: [3], values: [0, 0, 0]), TestTensor(name: "q", shape: [3], values: [0, 0, 0])])
    writeCheckpoint(a, [TestTensor(name: "p", shape: [3], values: [5, 1, 4]), TestTensor(name: "q", shape: [3], values: [-2, 6, 3])])
    // Density 0.5 of 6 entries keeps 6, 5, 4 — two in p, one in q (per tensor it would be one and one).
    let plan = MergePlan(method: .ties, base: base, models: [ModelSpec(path: a, parameters: ["density": .number(0.5)])],
                         trim: .global)
    let out = try runMerge(plan)
    #expect(out.values("p") == [5, 0, 4])
    #expect(out.values("q") == [0, 6, 0])
}

@Test(arguments: [MergeMethod.ties, .breadcrumbs])
func massiveTiesSplitAcrossChunksMatchTheInMemorySparsifier(method: MergeMethod) throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    // 200 000 entries with five magnitudes: every boundary falls inside a huge group of
    // equal entries that spans many chunks.
    let n = 200_000
    var values = [Float](repeating: 0, count: n)
    for i in 0..<n { values[i] = Float((i * 7919) % 5 + 1) * (i % 3 == 0 ? -1 : 1) }
    let base = folder + "/base.safetensors", a = folder + "/a.safetensors"
    writeCheckpoint(base, [TestTensor(name: "w", shape: [400, 500], values: [Float](repeating: 0, count: n))])
    writeCheckpoint(a, [TestTensor(name: "w", shape: [400, 500], values: values)])
    var parameters: [String: ParameterValue] = ["density": .number(0.45)]
    if method == .breadcrumbs { parameters["gamma"] = .number(0.1) }
    let plan = MergePlan(method: method, base: base, models: [ModelSpec(path: a, parameters: parameters)])
    let out = try runMerge(plan, threads: 2)
    var expected = values
    method.sparsifier!.sparsify(&expected, density: 0.45, gamma: 0.1, rescale: .none,
                                stream: CounterRandom(seed: 0, tensor: "w", model: 0))
    #expect(out.values("w") == expected)
}

@Test func quantizedGGUFInputsAreDecodedChunkByChunk() throws {
    let conversion = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures/conversion").path
    let base = conversion + "/llamacpp-f32.gguf", quantized = conversion + "/llamacpp-q8_0.gguf"
    // Task arithmetic with weight 1 and the plain difference gives the tuned model back:
    // here, Q8_0 decoded.
    let plan = MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: quantized)])
    let out = try runMerge(plan, quantizedDelta: .naive)
    let reference = try Checkpoint.open(quantized)
    var checked = 0
    for entry in reference.tensors where entry.dtype == .q8_0 {
        let expected = try reference.decode(entry)
        let merged = out.values(entry.name)
        #expect(merged.count == expected.count)
        for i in 0..<min(merged.count, expected.count) where abs(merged[i] - expected[i]) > 1e-6 * max(1, abs(expected[i])) {
            Issue.record("\(entry.name)[\(i)]: \(merged[i]) vs \(expected[i])")
            break
        }
        checked += 1
    }
    #expect(checked == 16)
    // The Q8_0 file is llama.cpp's quantization of the F32 one, which Claire's quantizer
    // reproduces: the quantization-aware delta is zero and the merge gives the base back.
    let aware = try runMerge(plan)
    let baseFile = try Checkpoint.open(base)
    for entry in reference.tensors where entry.dtype == .q8_0 {
        #expect(try aware.values(entry.name) == baseFile.decode(baseFile.tensor(named: entry.name)!), "\(entry.name)")
    }
}

@Test func aSampleThatMissesFallsBackToTheExactSearch() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    // The sample sees only small changes; the kept quarter lies among the large ones.
    let rows = 400, columns = 500, n = rows * columns
    var values = [Float](repeating: 0, count: n)
    for i in 0..<n { values[i] = Float(i % 97 + 100) * (i % 2 == 0 ? 1 : -1) }
    for r in CandidateRankSearch.sampleRanges(count: n) { for i in r { values[i] = Float(i % 13 + 1) * 0.001 } }
    let base = folder + "/base.safetensors", a = folder + "/a.safetensors"
    writeCheckpoint(base, [TestTensor(name: "w", shape: [rows, columns], values: [Float](repeating: 0, count: n))])
    writeCheckpoint(a, [TestTensor(name: "w", shape: [rows, columns], values: values)])
    let out = try runMerge(MergePlan(method: .ties, base: base, models: [ModelSpec(path: a, parameters: ["density": .number(0.25)])]))
    var expected = values
    Sparsifier.magnitude.sparsify(&expected, density: 0.25, rescale: .none, stream: CounterRandom(seed: 0, tensor: "w", model: 0))
    #expect(out.values("w") == expected)
}

private let conversionFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures/conversion").path

@Test func aGGUFModelMergesIntoAHuggingFaceBase() throws {
    // llama.cpp's f32 GGUF of the same weights: every delta is zero only if names map
    // and the Q/K rows are read back in Hugging Face's order.
    let base = conversionFixtures + "/tiny-llama-gqa", gguf = conversionFixtures + "/llamacpp-f32.gguf"
    let prepared = try PreparedMerge.prepare(MergePlan(method: .ties, base: base,
                                                       models: [ModelSpec(path: gguf, parameters: ["density": .number(0.5)])]))
    #expect(prepared.warnings.allSatisfy { !$0.contains("left out") })
    let out = try runMerge(prepared.plan)
    let reference = try Checkpoint.open(base)
    for entry in reference.tensors {
        let same = out.tensors[entry.name] == Array(reference.data(of: entry))
        #expect(same, "\(entry.name)")
    }
    #expect(out.tensors.count == reference.tensors.count)
}

@Test func aHuggingFaceModelMergesIntoAGGUFBase() throws {
    let base = conversionFixtures + "/llamacpp-f32.gguf", folder = conversionFixtures + "/tiny-llama-gqa"
    let out = try runMerge(MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: folder)]))
    let reference = try Checkpoint.open(base)
    var merged = 0
    for entry in reference.tensors where entry.dtype == .f32 {
        let same = try out.values(entry.name) == reference.decode(entry)
        #expect(same, "\(entry.name)")
        merged += 1
    }
    #expect(merged == reference.tensors.count)
}

@Test func aQuantizedGGUFModelIsReadInTheBaseLayout() throws {
    // Weight 1 and the plain difference give the model back: the Q8_0 values, un-permuted,
    // as GGUF → HF conversion yields them.
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = conversionFixtures + "/tiny-llama-gqa", gguf = conversionFixtures + "/llamacpp-q8_0.gguf"
    let out = try runMerge(MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: gguf)], outputDType: .f32),
                           quantizedDelta: .naive)
    try FormatConversion.ggufToHF(input: gguf, output: folder + "/hf", dtype: .f32)
    let converted = try Checkpoint.open(folder + "/hf")
    for entry in converted.tensors {
        let expected = try converted.decode(entry), merged = out.values(entry.name)
        #expect(merged.count == expected.count)
        for i in 0..<min(merged.count, expected.count) where abs(merged[i] - expected[i]) > 1e-6 * max(1e-2, abs(expected[i])) {
            Issue.record("\(entry.name)[\(i)]: \(merged[i]) vs \(expected[i])")
            break
        }
    }
}

@Test func rowOrdersBetweenTheLayoutsAreInverse() {
    for (rows, heads) in [(8, 2), (12, 3), (64, 4)] {
        for row in 0..<rows {
            let hf = LlamaFamily.sourceRow(row, rows: rows, heads: heads, toGGUF: true)
            #expect(LlamaFamily.sourceRow(hf, rows: rows, heads: heads, toGGUF: false) == row)
        }
    }
    // Two heads of four rows: GGUF interleaves each head's halves.
    #expect((0..<8).map { LlamaFamily.sourceRow($0, rows: 8, heads: 2, toGGUF: true) } == [0, 2, 1, 3, 4, 6, 5, 7])
}
