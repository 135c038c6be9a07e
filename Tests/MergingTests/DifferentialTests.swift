import Checkpoints
import Foundation
import MergeReference
import Testing
@_spi(Testing) @testable import Merging

// The merge engine against `ReferenceMerge`, a plain whole-array implementation of
// every method, on tensor sizes on both sides of every boundary the engine has:
// chunks (and chunks rounded to whole rows for the row-wise methods), output
// windows and the sample of the trim search (tensors of up to 4·128·256 entries
// are sampled whole).
//
// Expected agreement: the same output bytes wherever the engine does the same
// Float32 operations in the same order — every elementwise step, the rank windows,
// the random masks (the same counter-based draw per element), DELLA's per-row ranks
// and filter-wise Model Stock rows (a row never spans two chunks). Where the engine
// sums a whole tensor chunk by chunk (the L1 rescale factors, SLERP's norms, Model
// Stock's cosines), the sums are added in another order; there the output may
// differ from the reference by the entry's slack (`ReferenceMerge.reorderTolerance`
// = 1e-4 relative to the magnitudes it is made of) plus one step of the output type
// at that value, and an entry whose elected sign is a near-tie of the reordered sum
// (|Σuᵢ| ≤ 1e-4·Σ|uᵢ|) is not compared.

/// One run of the engine against the reference.
struct DifferentialCase: CustomStringConvertible, Sendable {
    var method: MergeMethod
    var shape: [Int]
    var dtype: DType = .f32
    var threads = 1
    var density = 1.0
    /// Chunk target of the executor (nil: the engine's own).
    var chunk: Int? = nil
    /// Output window target of the executor (nil: the engine's own).
    var window: Int? = nil
    var models = 2
    var rescale: Rescale? = nil
    var consensus: Consensus? = nil
    var normalize: Bool? = nil
    var lambda = 1.0
    var filterWise = false
    var globalTrim = false
    var seed: UInt64 = 7
    /// A second tensor in the same checkpoints (whole-model trim ranks both).
    var secondShape: [Int]? = nil
    /// NuSLERP's and Multi-SLERP's base (else the models themselves), NuSLERP's vectors,
    /// Multi-SLERP's weight normalization and the Karcher mean's iteration limit.
    var withBase = true
    var flatten = true
    var rowWise = false
    var normalizeWeights = true
    var maxIterations: Int? = nil
    /// How many of the models (the first ones) are LoRA adapters of the base (see `writeAdapter`).
    var adapters = 0

    var description: String {
        var text = "\(method) \(shape) \(dtype) threads \(threads) density \(density)"
        if let chunk { text += " chunk \(chunk)" }
        if let window { text += " window \(window)" }
        if let rescale { text += " rescale \(rescale)" }
        if let consensus { text += " consensus \(consensus)" }
        if let normalize { text += " normalize \(normalize)" }
        if lambda != 1 { text += " lambda \(lambda)" }
        if filterWise { text += " filter_wise" }
        if globalTrim { text += " trim global" }
        if models != 2 { text += " \(models) models" }
        if !withBase { text += " without base" }
        if !flatten { text += rowWise ? " row-wise" : " rows" }
        if !normalizeWeights { text += " normalize_weights false" }
        if let maxIterations { text += " max_iter \(maxIterations)" }
        if adapters > 0 { text += " \(adapters) adapters" }
        return text
    }
}

/// Writes a PEFT adapter for `model` adapting the 2-D tensors of `names` (rank 3; model 1
/// with rsLoRA, model 2 with fan_in_fan_out), factors stored as `dtype`; the second tensor,
/// when there is one, is a module saved whole. Returns the values of the model the adapter
/// stands for: base + δ in Float32 (δ whole, through the same OpenBLAS product the engine
/// uses; its rows computed a chunk at a time are tested equal to it), the saved tensor, or
/// the base where the adapter leaves a tensor alone.
func writeAdapter(_ folder: String, model m: Int, names: [String], shapes: [[Int]], bases: [[Float]], dtype: DType,
                  seed: UInt64) -> [[Float]] {
    try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let rank = 3, transposed = m == 2
    var tensors: [TestTensor] = []
    var models: [[Float]] = []
    var saved: [String] = []
    for (k, shape) in shapes.enumerated() {
        guard shape.count == 2 else { models.append(bases[k]); continue }
        let module = String(names[k].dropLast(".weight".count))
        if k == 1 {
            // Saved whole: the model's value is the saved tensor, so its "δ" makes base + δ that tensor.
            let stream = CounterRandom(seed: seed, tensor: "saved", model: m)
            let values = ReferenceInputs.roundTrip((0..<(shape[0] * shape[1])).map { stream.uniform($0) - 0.5 }, dtype)
            tensors.append(TestTensor(name: PEFTNames.prefix + names[k], shape: shape, values: values, dtype: dtype))
            models.append(values)
            saved.append(module.components(separatedBy: ".").last!)
            continue
        }
        let (outF, inF) = transposed ? (shape[1], shape[0]) : (shape[0], shape[1])
        let sa = CounterRandom(seed: seed, tensor: "lora_A", model: m), sb = CounterRandom(seed: seed, tensor: "lora_B", model: m)
        let a = ReferenceInputs.roundTrip((0..<(rank * inF)).map { sa.uniform($0) - 0.5 }, dtype)
        let b = ReferenceInputs.roundTrip((0..<(outF * rank)).map { (sb.uniform($0) - 0.5) * 0.2 }, dtype)
        tensors.append(TestTensor(name: PEFTNames.prefix + module + ".lora_A.weight", shape: [rank, inF], values: a, dtype: dtype))
        tensors.append(TestTensor(name: PEFTNames.prefix + module + ".lora_B.weight", shape: [outF, rank], values: b, dtype: dtype))
        let scale = m == 1 ? Float(6 / Double(rank).squareRoot()) : 1
        let g = LoRAProduct.Geometry(rank: rank, inFeatures: inF, outFeatures: outF, scale: scale, transposed: transposed)
        var delta = [Float](repeating: 0, count: shape[0] * shape[1])
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in delta.withUnsafeMutableBufferPointer { LoRAProduct.rows(0..<g.rows, of: g, a: a, b: b, into: $0) } }
        }
        models.append(zip(bases[k], delta).map { $0 + $1 })
    }
    let alpha = m == 1 ? 6 : rank
    let config = #"{"peft_type": "LORA", "r": \#(rank), "lora_alpha": \#(alpha), "use_rslora": \#(m == 1), "fan_in_fan_out": \#(transposed), "modules_to_save": \#(saved)}"#
    FileManager.default.createFile(atPath: folder + "/adapter_config.json", contents: Data(config.utf8))
    writeCheckpoint(folder + "/adapter_model.safetensors", tensors)
    return models
}

/// Runs `c` through the executor and the reference and compares the outputs.
func runDifferential(_ c: DifferentialCase) throws -> ReferenceComparison {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let shapes = [c.shape] + (c.secondShape.map { [$0] } ?? [])
    let names = ["model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.k_proj.weight"]
    var inputs: [(base: [Float], models: [[Float]])] = []
    for (k, shape) in shapes.enumerated() {
        inputs.append(ReferenceInputs.trio(count: shape.reduce(1, *), models: c.models, dtype: c.dtype, seed: c.seed &+ UInt64(k) &* 977))
    }
    let basePath = folder + "/base.safetensors"
    writeCheckpoint(basePath, shapes.indices.map { TestTensor(name: names[$0], shape: shapes[$0], values: inputs[$0].base, dtype: c.dtype) })
    var modelPaths: [String] = []
    for m in 0..<c.models {
        if m < c.adapters {
            // The reference merges the model the adapter stands for: base + δ in Float32.
            let adapter = folder + "/adapter\(m)"
            let values = writeAdapter(adapter, model: m, names: names, shapes: shapes, bases: inputs.map(\.base),
                                      dtype: c.dtype, seed: c.seed)
            for k in shapes.indices { inputs[k].models[m] = values[k] }
            // `linear` has no base: the adapter names the model it applies to, as mergekit's base+adapter.
            modelPaths.append(c.method == .linear ? basePath + "+" + adapter : adapter)
            continue
        }
        let path = folder + "/model\(m).safetensors"
        writeCheckpoint(path, shapes.indices.map { TestTensor(name: names[$0], shape: shapes[$0], values: inputs[$0].models[m], dtype: c.dtype) })
        modelPaths.append(path)
    }

    // The plan as `fuse` builds it, and the same parameters for the reference.
    var p = ReferenceMerge.Parameters(method: c.method, models: c.models)
    var specs: [ModelSpec] = []
    var global: [String: ParameterValue] = [:]
    switch c.method {
    case .slerp:
        specs = [ModelSpec(path: basePath), ModelSpec(path: modelPaths[0])]
        global["t"] = .number(0.3)
        p.t = 0.3
    case .passthrough:
        specs = [ModelSpec(path: modelPaths[0], parameters: ["scale": .number(0.75)])]
        p.scale = 0.75
    case .modelStock:
        specs = modelPaths.map { ModelSpec(path: $0) }
        if c.filterWise { global["filter_wise"] = .number(1) }
        p.filterWise = c.filterWise
    case .nuslerp, .multislerp:
        for m in 0..<c.models {
            let w = m == 0 ? 1 : 0.5 + 0.25 * Double(m)
            specs.append(ModelSpec(path: modelPaths[m], parameters: ["weight": .number(w)]))
            p.weights[m] = Float(w)
        }
        if !c.flatten {
            global["nuslerp_flatten"] = .number(0)
            p.nuslerpFlatten = false
        }
        if c.rowWise {
            global["nuslerp_row_wise"] = .number(1)
            p.nuslerpRowWise = true
        }
        if !c.normalizeWeights {
            global["normalize_weights"] = .number(0)
            p.normalizeWeights = false
        }
    case .karcher:
        specs = modelPaths.map { ModelSpec(path: $0) }
        if let maxIterations = c.maxIterations {
            global["max_iter"] = .number(Double(maxIterations))
            p.maxIterations = maxIterations
        }
    case .sce:
        // The case's density is SCE's select_topk.
        specs = modelPaths.map { ModelSpec(path: $0) }
        global["select_topk"] = .number(c.density)
        p.selectTopK = c.density
    case .nearswap:
        specs = [ModelSpec(path: basePath), ModelSpec(path: modelPaths[0])]
        global["t"] = .number(0.04)
        p.t = 0.04
    case .arceeFusion:
        specs = [ModelSpec(path: basePath), ModelSpec(path: modelPaths[0])]
    case .ram, .ramPlusTL:
        // ε above the smallest grid step, so some changes count as none.
        specs = modelPaths.map { ModelSpec(path: $0) }
        global["epsilon"] = .number(0.01)
        p.ramEpsilon = 0.01
        if c.method == .ramPlusTL {
            global["r"] = .number(0.5)
            global["alpha"] = .number(0.3)
            p.r = 0.5
            p.alpha = 0.3
        }
    default:
        for m in 0..<c.models {
            var parameters: [String: ParameterValue] = ["weight": .number(m == 0 ? 1 : 0.5 + 0.25 * Double(m))]
            p.weights[m] = m == 0 ? 1 : Float(0.5 + 0.25 * Double(m))
            if c.method.sparsifier != nil {
                let d = m == 1 && c.density == 0.5 ? 0.7 : c.density
                parameters["density"] = .number(d)
                p.densities[m] = d
                if c.method.sparsifier == .dellaMagprune {
                    let epsilon = d < 0.1 ? d / 2 : 0.15
                    parameters["epsilon"] = .number(epsilon)
                    p.epsilons[m] = epsilon
                }
                if c.method.sparsifier == .magnitudeOutliers {
                    parameters["gamma"] = .number(0.05)
                    p.gammas[m] = 0.05
                }
            }
            specs.append(ModelSpec(path: modelPaths[m], parameters: parameters))
        }
        if c.method != .linear {
            global["lambda"] = .number(c.lambda)
            p.lambda = Float(c.lambda)
        }
        if let normalize = c.normalize {
            global["normalize"] = .number(normalize ? 1 : 0)
            p.normalize = normalize
        }
    }
    let withBase = c.method != .linear && c.withBase
    let plan = MergePlan(method: c.method, base: withBase ? basePath : nil, models: specs,
                         parameters: global, rescale: c.rescale, consensus: c.consensus,
                         trim: c.globalTrim ? .global : .tensor, seed: c.seed)
    p.rescale = plan.effectiveRescale
    p.consensus = plan.effectiveConsensus
    p.seed = c.seed

    let prepared = try PreparedMerge.prepare(plan)
    let executor = MergeExecutor(prepared, threads: c.threads, chunkElements: c.chunk ?? MergeExecutor.chunkElements,
                                 windowElements: c.window ?? MergeExecutor.windowElements)
    let sink = MemorySink()
    try executor.run(into: sink)

    // Whole-model trim: ranks over the tensors' deltas one after another, in job order.
    var windows: [Range<Int>?]? = nil
    var windowKeys: [[UInt32]]? = nil
    var offsets = [Int](repeating: 0, count: shapes.count)
    if c.globalTrim {
        let order = prepared.jobs.compactMap { job in names.firstIndex(of: job.name) }
        var keys = [[UInt32]](repeating: [], count: c.models)
        var total = 0
        for k in order {
            offsets[k] = total
            total += inputs[k].base.count
            for m in 0..<c.models {
                keys[m] += ReferenceInputs.deltaKeys(inputs[k].models[m], inputs[k].base)
            }
        }
        windowKeys = keys
        windows = (0..<c.models).map { m in
            p.densities[m] > 0 && p.densities[m] < 1
                ? ReferenceMerge.keptRanks(.magnitude, count: total, density: p.densities[m], gamma: 0) : nil
        }
    }

    var outcome = ReferenceComparison()
    for (k, shape) in shapes.enumerated() {
        let expected = ReferenceMerge.merge(
            name: names[k], shape: shape, base: withBase ? inputs[k].base : nil, models: inputs[k].models,
            parameters: p, windows: windows, windowOffset: offsets[k], windowKeys: windowKeys)
        outcome.add(expected, actual: try #require(sink.tensors[names[k]]), dtype: c.dtype, name: names[k])
    }
    return outcome
}

func expectAgreement(_ c: DifferentialCase) throws {
    let outcome = try runDifferential(c)
    #expect(outcome.elements > 0, "\(c)")
    #expect(outcome.mismatches == 0, "\(c): \(outcome.mismatches) of \(outcome.elements) entries differ, first \(outcome.firstMismatch ?? "")")
}

let densitySweep = [0.0, 0.01, 0.5, 1.0]
let dtypeSweep: [DType] = [.f32, .bf16, .f16]

/// The densities a method accepts among `densitySweep` (DELLA needs d − ε > 0).
func densities(for method: MergeMethod) -> [Double] {
    if method == .sce { return densitySweep }  // as select_topk
    return method.sparsifier == nil ? [1] : method.sparsifier == .dellaMagprune ? densitySweep.filter { $0 > 0 } : densitySweep
}

/// Sizes around the boundaries of an executor with 256-entry chunks: 1, chunk ± 1,
/// chunk, 2·chunk ± 1, 4·chunk ± 1, many chunks; and
/// 2-D shapes whose rows of 96 make the row-wise chunk 192 entries (and rows of 300,
/// longer than a chunk, a chunk of one row).
let smallShapes: [[Int]] = [[1], [255], [256], [257], [511], [513], [1023], [1025], [4097],
                            [1, 96], [2, 96], [3, 96], [5, 96], [3, 300], [2, 256]]

/// Output windows of three chunks (768, which tensors of 1025 and 4097 entries
/// straddle) and of one chunk: the windowed output is the reference's bytes.
@Test(arguments: MergeMethod.allCases)
func engineMatchesTheReferenceInSmallOutputWindows(method: MergeMethod) throws {
    var run = 0
    for shape in [[1], [257], [1025], [4097], [5, 96], [3, 300]] {
        for window in [256, 768] {
            for density in densities(for: method) {
                run += 1
                try expectAgreement(DifferentialCase(method: method, shape: shape, dtype: dtypeSweep[run % 3],
                                                     threads: 1 + run % 2, density: density, chunk: 256,
                                                     window: window))
            }
        }
    }
}

@Test(arguments: MergeMethod.allCases)
func engineMatchesTheReferenceAcrossSmallChunkBoundaries(method: MergeMethod) throws {
    var run = 0
    for shape in smallShapes {
        for density in densities(for: method) {
            run += 1
            try expectAgreement(DifferentialCase(method: method, shape: shape, dtype: dtypeSweep[run % 3],
                                                 threads: 1 + run % 2, density: density, chunk: 256))
        }
    }
    // Every input type on both thread counts, on sizes below, at and past one chunk.
    for shape in [[1], [257], [3, 96]] {
        for dtype in dtypeSweep {
            for threads in [1, 2] {
                for density in densities(for: method) {
                    try expectAgreement(DifferentialCase(method: method, shape: shape, dtype: dtype, threads: threads,
                                                         density: density, chunk: 256))
                }
            }
        }
    }
}

/// Sizes around the engine's own chunk of 65,536 entries and the 131,072 entries up to
/// which the trim search samples a tensor whole (114,688 = 128 × 896 is a real model's
/// K projection), with the engine's own chunk size.
let fullSizeShapes: [[Int]] = [[65_535], [65_536], [65_537], [128, 896], [131_071], [131_072], [131_073]]

@Test(arguments: MergeMethod.allCases)
func engineMatchesTheReferenceAcrossItsOwnChunkAndSampleBoundaries(method: MergeMethod) throws {
    for (k, shape) in fullSizeShapes.enumerated() {
        let density = method.sparsifier == nil && method != .sce ? 1 : [0.3, 0.01, 0.5][k % 3]
        try expectAgreement(DifferentialCase(method: method, shape: shape, dtype: dtypeSweep[k % 3], threads: 1 + k % 2,
                                             density: density))
    }
}

/// The options that change the arithmetic: every rescale, both consensus rules,
/// normalize both ways, λ, whole-model trim, three models, filter-wise Model Stock.
@Test func engineMatchesTheReferenceWithEveryOption() throws {
    var cases: [DifferentialCase] = []
    for method in MergeMethod.allCases where method.sparsifier != nil {
        for rescale in Rescale.allCases {
            cases.append(DifferentialCase(method: method, shape: [7, 96], dtype: .bf16, threads: 2, density: 0.5,
                                          chunk: 256, rescale: rescale, lambda: 0.8))
        }
    }
    for method in MergeMethod.allCases where method.fusesTaskVectors {
        for consensus in Consensus.allCases {
            for normalize in [false, true] {
                cases.append(DifferentialCase(method: method, shape: [1000], dtype: .f16, threads: 2, density: 0.5,
                                              chunk: 256, models: 3, consensus: consensus,
                                              normalize: normalize, lambda: 1.5))
            }
        }
    }
    cases.append(DifferentialCase(method: .linear, shape: [700], threads: 2, chunk: 256, models: 3, normalize: false))
    cases.append(DifferentialCase(method: .modelStock, shape: [9, 96], dtype: .bf16, threads: 2, chunk: 256,
                                  models: 3, filterWise: true))
    cases.append(DifferentialCase(method: .modelStock, shape: [3, 300], threads: 2, chunk: 256, filterWise: true))
    // The spherical methods with and without a base, NuSLERP per row and per column,
    // three models, unnormalized weights, an iteration limit.
    for withBase in [true, false] {
        for (flatten, rowWise) in [(true, false), (false, false), (false, true)] {
            for shape in [[7, 96], [3, 300], [1000]] {
                cases.append(DifferentialCase(method: .nuslerp, shape: shape, dtype: .bf16, threads: 2, chunk: 256,
                                              withBase: withBase, flatten: flatten, rowWise: rowWise))
            }
        }
        for normalizeWeights in [true, false] {
            cases.append(DifferentialCase(method: .multislerp, shape: [700], dtype: .f16, threads: 2, chunk: 256,
                                          models: 3, withBase: withBase, normalizeWeights: normalizeWeights))
        }
        cases.append(DifferentialCase(method: .multislerp, shape: [5, 96], threads: 2, chunk: 256, models: 1,
                                      withBase: withBase))
        cases.append(DifferentialCase(method: .karcher, shape: [700], dtype: .bf16, threads: 2, chunk: 256,
                                      models: 3, withBase: withBase))
    }
    cases.append(DifferentialCase(method: .karcher, shape: [9, 96], threads: 2, chunk: 256, maxIterations: 1))
    cases.append(DifferentialCase(method: .karcher, shape: [9, 96], threads: 2, chunk: 256, maxIterations: 0))
    for topK in [0.3, 0.9] {
        cases.append(DifferentialCase(method: .sce, shape: [1000], dtype: .f16, threads: 2, density: topK, chunk: 256,
                                      models: 3))
    }
    cases.append(DifferentialCase(method: .arceeFusion, shape: [2, 3, 64], dtype: .bf16, threads: 2, chunk: 256))
    for method in [MergeMethod.ram, .ramPlusTL] {
        cases.append(DifferentialCase(method: method, shape: [1000], dtype: .f16, threads: 2, chunk: 256, models: 3))
    }
    for density in [0.01, 0.3] {
        cases.append(DifferentialCase(method: .ties, shape: [5, 96], dtype: .bf16, threads: 2, density: density, chunk: 256,
                                      globalTrim: true, secondShape: [1500]))
    }
    for c in cases { try expectAgreement(c) }
}

/// The trim search samples a tensor of up to 131,072 entries whole; such a tensor is
/// read in pieces no longer than a chunk, as every other pass reads it.
@Test func tiesOnATensorBetweenOneAndTwoChunksMatchesTheReference() throws {
    try expectAgreement(DifferentialCase(method: .ties, shape: [128, 896], dtype: .bf16, threads: 2, density: 0.3))
}

/// Adapters in place of fine-tunes, for every method: the first model alone, or every
/// model, on 2-D shapes around chunk boundaries (rows of 96 and 300 against 256-entry
/// chunks), every factor type and both thread counts; one case with a module saved whole.
@Test(arguments: MergeMethod.allCases)
func engineMatchesTheReferenceWithAdapterInputs(method: MergeMethod) throws {
    var run = 0
    for shape in [[1, 96], [3, 96], [5, 96], [3, 300], [2, 256], [9, 33]] {
        for adapters in [1, 2] {
            run += 1
            let density = method.sparsifier == nil ? 1 : [0.5, 0.01, 1][run % 3]
            try expectAgreement(DifferentialCase(method: method, shape: shape, dtype: dtypeSweep[run % 3], threads: 1 + run % 2,
                                                 density: density, chunk: 256, adapters: adapters))
        }
    }
    // Three adapters, for the methods that take more than two models.
    if ![.slerp, .nuslerp, .passthrough].contains(method) {
        try expectAgreement(DifferentialCase(method: method, shape: [4, 96], dtype: .bf16, threads: 2,
                                             density: method.sparsifier == nil ? 1 : 0.5, chunk: 256, models: 3,
                                             secondShape: [3, 64], adapters: 3))
    }
}
