import Checkpoints
import Foundation
import Testing
@testable import Merging

/// fixtures/dtype, made by fixtures/dtype/make_fixtures.py with mergekit 0.1.5.
private let fixtureFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures/dtype").path

// MARK: Rounding

/// Float32 values that exercise every rounding case: ties to even in both directions,
/// values just past a tie, subnormals of every type, the overflow edges of BF16 and
/// F16, infinities and NaNs (quiet and signalling, both signs).
private func awkwardValues(_ count: Int) -> [Float] {
    let specials: [UInt32] = [
        0x0000_0000, 0x8000_0000, 0x3f80_8000, 0x3f81_8000, 0x3f80_8001, 0xbf80_7fff, 0x0000_0001, 0x8000_8000,
        0x007f_ffff, 0x7f7f_ffff, 0x7f7f_8000, 0xff7f_7fff, 0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7f80_0001,
        0xffbf_ffff, 0x477f_f000, 0x477f_efff, 0x3380_0000, 0x3300_0000, 0x3300_0001, 0x387f_c000, 0x3880_1000,
    ]
    let stream = CounterRandom(seed: 7, tensor: "rounding", model: 0)
    return (0..<count).map { i in
        if i < specials.count { return Float(bitPattern: specials[i]) }
        // Random bit patterns, half of them with the low 13 or 16 bits at a tie.
        var bits = UInt32(truncatingIfNeeded: stream.bits(i))
        if i % 4 == 1 { bits = bits & 0xffff_0000 | 0x8000 }
        if i % 4 == 2 { bits = bits & 0xffff_e000 | 0x1000 }
        return Float(bitPattern: bits)
    }
}

/// The plain reference: each value through the codec's BF16 or F16 encoder and back.
private func referenceRounded(_ x: Float, _ type: ComputeType) -> Float {
    switch type {
    case .bf16: Float(bitPattern: UInt32(ElementCodec.floatToBF16(x)) << 16)
    case .f16: ElementCodec.halfToFloat(ElementCodec.floatToHalf(x))
    case .f32, .f64: x
    }
}

@Test(arguments: [ComputeType.bf16, .f16], [0, 1, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 63, 64, 65, 1000])
func roundingABufferMatchesTheCodecValueByValue(type: ComputeType, count: Int) {
    let values = awkwardValues(count)
    var rounded = values
    rounded.withUnsafeMutableBufferPointer { type.round($0) }
    for i in 0..<count {
        let expected = referenceRounded(values[i], type)
        // NaN payloads may differ; a NaN must stay a NaN, everything else bit for bit.
        if expected.isNaN {
            #expect(rounded[i].isNaN, "\(type) [\(i)] \(values[i].bitPattern)")
        } else {
            #expect(rounded[i].bitPattern == expected.bitPattern, "\(type) [\(i)] \(String(values[i].bitPattern, radix: 16))")
        }
        #expect(type.round(values[i]).bitPattern == rounded[i].bitPattern || expected.isNaN)
    }
}

/// A view into a larger buffer rounds only its own elements.
@Test func roundingASliceLeavesItsNeighboursAlone() {
    var values = [Float](repeating: 1.001, count: 40)
    values.withUnsafeMutableBufferPointer { ComputeType.bf16.round(UnsafeMutableBufferPointer(rebasing: $0[3..<29])) }
    #expect(values[2] == 1.001 && values[29] == 1.001)
    #expect(values[3..<29].allSatisfy { $0 == 1 })
}

@Test func inputsWithoutARecipeDTypeComputeInTheirPromotedType() {
    #expect(ComputeType.promoted([.bf16, .bf16]) == .bf16)
    #expect(ComputeType.promoted([.f16, .f16, .f16]) == .f16)
    #expect(ComputeType.promoted([.bf16, .f16]) == .f32)
    #expect(ComputeType.promoted([.bf16, .f32]) == .f32)
    #expect(ComputeType.promoted([.f16, .f64, .bf16]) == .f64)
    #expect(ComputeType.promoted([.q8_0, .q8_0]) == .f32)
}

@Test func aRecipeDTypeIsTheComputeTypeAndAbsentMeansTheInputs() throws {
    let models = "merge_method: task_arithmetic\nbase_model: b\nmodels:\n  - model: m\n"
    #expect(try MergeRecipe.parse(models, file: "r.yml").computeType == nil)
    #expect(try MergeRecipe.parse(models + "dtype: bfloat16\n", file: "r.yml").computeType == .bf16)
    let f64 = try MergeRecipe.parse(models + "dtype: float64\n", file: "r.yml")
    #expect(f64.computeType == .f64 && f64.outputDType == .f64)
    let out = try MergeRecipe.parse(models + "dtype: float64\nout_dtype: float16\n", file: "r.yml")
    #expect(out.computeType == .f64 && out.outputDType == .f16)
    #expect(throws: MergeError.self) { try MergeRecipe.parse(models + "dtype: float8\n", file: "r.yml") }
    // The command line computes in Float32, and its recipe says so for mergekit.
    let plan = MergePlan(method: .ties, base: "b", models: [ModelSpec(path: "m")], outputDType: .bf16)
    #expect(plan.computeType == .f32)
    #expect(MergeRecipe.yaml(for: plan).contains("dtype: float32\nout_dtype: bfloat16\n"))
    #expect(try MergeRecipe.parse(MergeRecipe.yaml(for: plan), file: "r.yml") == plan)
}

// MARK: Agreement with mergekit

/// How a merge's bytes compare with mergekit's, tensor by tensor in the output type.
struct DTypeAgreement {
    var elements = 0
    /// Elements with the same bytes.
    var identical = 0
    /// Elements at most one step of the output type apart (identical ones included).
    var withinOneStep = 0
    /// The largest difference in Float32 steps of the larger of the result and the
    /// base's value (for F64 outputs: θ₀ + δ in Float32 carries the base's rounding,
    /// whatever the size of the result).
    var worstFloat32Steps = 0.0
    /// Differing elements that are not among the entries tied at a trim threshold.
    var differingUntied = 0
    var problems: [String] = []
}

/// The elements of a task-vector job that a magnitude trim may keep or drop depending
/// on how a sort orders equal magnitudes: for each model, when the entries at the
/// ranks on both sides of a window boundary have the same |δ| (δ in the compute type),
/// every entry of that magnitude.
private func tiedAtAThreshold(_ job: MergeJob, in prepared: PreparedMerge) throws -> Set<Int> {
    guard case .taskVectors(let p) = job.parameters, let sparsifier = prepared.plan.method.sparsifier,
          sparsifier == .magnitude || sparsifier == .magnitudeOutliers else { return [] }
    let compute = job.computeType
    let base = try prepared.checkpoints[job.templateCheckpoint].decode(job.template).map { compute.round($0) }
    var tied = Set<Int>()
    for (m, input) in job.inputs.enumerated() where p.densities[m] < 1 {
        let x = try prepared.checkpoints[input.checkpoint].decode(input.tensor)
        let magnitudes = (0..<base.count).map { abs(compute.round(compute.round(x[$0]) - base[$0])) }
        let sorted = magnitudes.sorted()
        let window = sparsifier.rankWindow(count: base.count, density: p.densities[m], gamma: p.gammas[m])
        for rank in [window.lowerBound, window.upperBound] where rank > 0 && rank < base.count && sorted[rank] == sorted[rank - 1] {
            for i in magnitudes.indices where magnitudes[i] == sorted[rank] { tied.insert(i) }
        }
    }
    return tied
}

private func value(_ bytes: ArraySlice<UInt8>, _ dtype: DType) -> Double {
    var bits: UInt64 = 0
    for (k, b) in bytes.enumerated() { bits |= UInt64(b) << (8 * UInt64(k)) }
    switch dtype {
    case .f64: return Double(bitPattern: bits)
    case .f32: return Double(Float(bitPattern: UInt32(bits)))
    case .bf16: return Double(Float(bitPattern: UInt32(bits) << 16))
    default: return Double(ElementCodec.halfToFloat(UInt16(bits)))
    }
}

/// Runs fixtures/dtype/recipes/`recipe`.yml (with `compute` overriding the recipe's
/// arithmetic when given) and compares every tensor with mergekit's output.
func dtypeAgreement(_ recipe: String, compute: ComputeType? = nil) throws -> DTypeAgreement {
    let text = try String(contentsOfFile: fixtureFolder + "/recipes/\(recipe).yml", encoding: .utf8)
        .replacingOccurrences(of: "FIXTURE", with: fixtureFolder)
    var plan = try MergeRecipe.parse(text, file: "\(recipe).yml")
    if let compute { plan.computeType = compute }
    let prepared = try PreparedMerge.prepare(plan)
    let sink = MemorySink()
    try MergeExecutor(prepared, threads: 2).run(into: sink)
    let reference = try Checkpoint.open(fixtureFolder + "/mergekit/\(recipe)/model.safetensors")
    var result = DTypeAgreement()
    let ours = Dictionary(uniqueKeysWithValues: prepared.outputTensors.map { ($0.name, $0) })
    if Set(ours.keys) != Set(reference.tensors.map(\.name)) { result.problems.append("tensor sets differ") }
    for entry in reference.tensors {
        guard let spec = ours[entry.name], let mine = sink.tensors[entry.name] else { continue }
        guard spec.dtype == entry.dtype, spec.shape == entry.shape else {
            result.problems.append("\(entry.name): \(spec.dtype) \(spec.shape), mergekit \(entry.dtype) \(entry.shape)")
            continue
        }
        let theirs = Array(reference.data(of: entry))
        let width = entry.dtype.blockBytes
        let job = try #require(prepared.jobs.first { $0.name == entry.name })
        let tied = try tiedAtAThreshold(job, in: prepared)
        let base = try prepared.checkpoints[job.templateCheckpoint].decode(job.template)
        for i in 0..<entry.elementCount {
            let a = mine[(i * width)..<((i + 1) * width)], b = theirs[(i * width)..<((i + 1) * width)]
            result.elements += 1
            if a == b { result.identical += 1 } else if !tied.contains(i) { result.differingUntied += 1 }
            let (difference, overflow) = orderedBits(a).subtractingReportingOverflow(orderedBits(b))
            if !overflow, abs(difference) <= 1 { result.withinOneStep += 1 }
            let x = value(a, entry.dtype), y = value(b, entry.dtype)
            result.worstFloat32Steps = max(result.worstFloat32Steps, abs(x - y) / Double(Float(max(abs(y), Double(abs(base[i])))).ulp))
        }
    }
    return result
}

/// The recipes where mergekit is deterministic and Claire reproduces each torch
/// operation's rounding: BF16 inputs without `dtype` (computed in BF16), with
/// `dtype: bfloat16`, BF16 compute written as float16, and `dtype: float16`. DARE
/// and DELLA run at density 1, where their random masks keep everything and the
/// rest of the arithmetic is deterministic.
@Test(arguments: ["linear", "linear_f16", "task_arithmetic", "task_arithmetic_bf16", "task_arithmetic_f16_out",
                  "task_arithmetic_f16", "task_arithmetic_three", "dare_ties", "dare_linear", "della", "della_linear",
                  "model_stock", "model_stock_f16", "model_stock_three", "slerp", "slerp_f16"])
func bf16RecipesGiveMergekitsBytes(recipe: String) throws {
    let a = try dtypeAgreement(recipe)
    print("dtype agreement \(recipe): \(a.identical) of \(a.elements) identical, \(a.withinOneStep) within one step")
    #expect(a.problems.isEmpty, "\(a.problems)")
    #expect(a.elements > 0)
    #expect(a.identical == a.elements, "\(a.elements - a.identical) of \(a.elements) elements differ")
}

/// The magnitude trims (TIES, Breadcrumbs) rank |δ|, and BF16 deltas share
/// magnitudes: where equal magnitudes straddle the trim threshold, mergekit keeps those
/// torch's unstable sort happens to put first (an order no rule reproduces), Claire the
/// earliest or latest by index. Every other element is mergekit's, bit for bit.
@Test(arguments: ["ties", "ties_f16", "ties_three", "breadcrumbs", "breadcrumbs_ties"])
func magnitudeTrimsDifferOnlyAmongTiesAtTheThreshold(recipe: String) throws {
    let a = try dtypeAgreement(recipe)
    print("dtype agreement \(recipe): \(a.identical) of \(a.elements) identical, \(a.withinOneStep) within one step; the others are tied at a threshold")
    #expect(a.problems.isEmpty, "\(a.problems)")
    #expect(a.elements > 0)
    #expect(a.differingUntied == 0, "\(a.differingUntied) elements differ that are not tied at a trim threshold")
}

/// `dtype: float64` computes in Float32 here (see `ComputeType.f64`): the F64 output
/// lies within a few Float32 steps (of the result or the base's value, the larger: the
/// weights, products, sums, λ and θ₀ + δ each round once) of mergekit's Float64
/// arithmetic, and rounded to BF16
/// it is mergekit's but where the Float64 result lies within Float32 rounding of a
/// midpoint between two BF16 values.
@Test func float64RecipesAgreeToFloat32Precision() throws {
    let f64 = try dtypeAgreement("task_arithmetic_f64")
    print("dtype agreement task_arithmetic_f64: \(f64.identical) of \(f64.elements) identical, at most \(f64.worstFloat32Steps) Float32 steps apart")
    #expect(f64.problems.isEmpty, "\(f64.problems)")
    #expect(f64.elements > 0 && f64.worstFloat32Steps <= 4)
    let bf16 = try dtypeAgreement("task_arithmetic_f64_bf16_out")
    print("dtype agreement task_arithmetic_f64_bf16_out: \(bf16.identical) of \(bf16.elements) identical, \(bf16.withinOneStep) within one step")
    #expect(bf16.problems.isEmpty, "\(bf16.problems)")
    #expect(bf16.elements > 0 && bf16.withinOneStep * 1000 >= bf16.elements * 999)
}

/// Float32 arithmetic (`--compute f32`) is not mergekit's for a BF16 recipe: the
/// rounding the recipe's type calls for is what makes the bytes agree.
@Test(arguments: ["task_arithmetic", "model_stock", "task_arithmetic_f16_out"])
func float32ArithmeticDiffersFromMergekitsBF16(recipe: String) throws {
    let a = try dtypeAgreement(recipe, compute: .f32)
    print("dtype agreement \(recipe) in Float32: \(a.identical) of \(a.elements) identical")
    #expect(a.identical < a.elements)
}
