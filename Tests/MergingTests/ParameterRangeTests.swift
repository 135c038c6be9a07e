import Checkpoints
import Foundation
import Testing
@testable import Merging

/// Base and two fine-tunes of one small tensor `w` (values given per model).
private func models(_ dtype: DType = .f32, base: [Float], a: [Float], b: [Float]) -> String {
    let dir = temporaryFolder()
    writeCheckpoint(dir + "/base.safetensors", [TestTensor(name: "w", shape: [base.count], values: base, dtype: dtype)])
    writeCheckpoint(dir + "/a.safetensors", [TestTensor(name: "w", shape: [a.count], values: a, dtype: dtype)])
    writeCheckpoint(dir + "/b.safetensors", [TestTensor(name: "w", shape: [b.count], values: b, dtype: dtype)])
    return dir
}

@Suite struct ParameterRangeTests {
    @Test(arguments: [("weight", 1e39), ("weight", -2e6), ("lambda", 1e39), ("t", 1e39), ("t", -0.5),
                      ("gamma", 1e39), ("gamma", 2), ("epsilon", 1e39), ("density", -0.1)])
    func finiteValuesOutsideTheirRangeAreRefused(name: String, value: Double) {
        #expect(ParameterRange.problem(name: name, value: value) != nil)
        let method: MergeMethod = name == "t" ? .slerp : name == "gamma" ? .breadcrumbs : name == "epsilon" ? .della : .ties
        let models = method == .slerp ? [ModelSpec(path: "b"), ModelSpec(path: "x")] : [ModelSpec(path: "x")]
        let global = MergePlan(method: method, base: "b", models: models, parameters: [name: .number(value)])
        #expect(throws: MergeError.self) { try global.check() }
        // The same value inside a gradient or a filter list of one model.
        let nested: ParameterValue = .filtered([FilteredParameter(filter: "mlp", value: .gradient([0.5, value]))])
        var perModel = MergePlan(method: method, base: "b", models: models)
        perModel.models[models.count - 1].parameters[name] = nested
        if method == .slerp { perModel.parameters["t"] = .number(0.5) }
        #expect(throws: MergeError.self) { try perModel.check() }
    }

    @Test(arguments: [("weight", 1e6), ("weight", -3), ("lambda", -1e6), ("t", 0), ("t", 1), ("gamma", 0.5),
                      ("epsilon", 0.1), ("density", 0), ("density", 2)])
    func valuesInsideTheirRangeAreAccepted(name: String, value: Double) {
        #expect(ParameterRange.problem(name: name, value: value) == nil)
    }

    @Test func linearWeightsThatCancelAreRefusedWhenNormalizing() throws {
        let dir = models(base: [1, 2], a: [1, 2], b: [3, 4])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let specs = [ModelSpec(path: dir + "/a.safetensors", parameters: ["weight": .number(1)]),
                     ModelSpec(path: dir + "/b.safetensors", parameters: ["weight": .number(-1)])]
        let plan = MergePlan(method: .linear, base: nil, models: specs)
        #expect(throws: MergeError.self) { try PreparedMerge.prepare(plan) }
        // Nearly cancelling is refused too; without normalizing the same weights are fine.
        var near = plan
        near.models[1].parameters["weight"] = .number(-0.9999999)
        #expect(throws: MergeError.self) { try PreparedMerge.prepare(near) }
        var plain = plan
        plain.parameters["normalize"] = .number(0)
        let merged = try runMerge(plain).values("w")
        #expect(merged == [-2, -2])
    }

    @Test func inverseRescaleRefusesKeepProbabilitiesItCannotDivideBy() {
        let plan = MergePlan(method: .dareTies, base: "b", models: [ModelSpec(path: "x")], rescale: .inverse)
        #expect(throws: MergeError.self) { try plan.checkResolved(density: 1e-300, epsilon: 0, model: "x", tensor: "w") }
        #expect(throws: Never.self) { try plan.checkResolved(density: 0.01, epsilon: 0, model: "x", tensor: "w") }
        let della = MergePlan(method: .della, base: "b", models: [ModelSpec(path: "x")], rescale: .inverse)
        #expect(throws: MergeError.self) { try della.checkResolved(density: 0.2, epsilon: 0.2 - 1e-12, model: "x", tensor: "w") }
    }

    @Test(arguments: [DType.f16, .bf16, .f32])
    func anOutputBeyondTheOutputTypeIsRefusedNotWrittenAsInf(dtype: DType) throws {
        // Finite inputs and in-range parameters whose sum leaves the type's range.
        let large: Float = dtype == .f16 ? 60000 : 3e38
        let dir = models(dtype, base: [large, 1], a: [large, 1], b: [large, 1])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let specs = [ModelSpec(path: dir + "/a.safetensors"), ModelSpec(path: dir + "/b.safetensors")]
        let plan = MergePlan(method: .linear, base: nil, models: specs, parameters: ["normalize": .number(0)])
        #expect(throws: MergeError.outputOutOfRange(tensor: "w", dtype: dtype)) { try runMerge(plan) }
    }

    @Test func nonFiniteInputsStillCarryThroughWithAWarning() throws {
        let dir = models(base: [1, 1], a: [.nan, 1], b: [1, 1])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let plan = MergePlan(method: .taskArithmetic, base: dir + "/base.safetensors",
                             models: [ModelSpec(path: dir + "/a.safetensors"), ModelSpec(path: dir + "/b.safetensors")])
        let prepared = try PreparedMerge.prepare(plan)
        let executor = MergeExecutor(prepared, threads: 1)
        let sink = MemorySink()
        try executor.run(into: sink)
        #expect(executor.nonFiniteInputs == ["'w' in \(dir)/a.safetensors"])
        #expect(sink.values("w")[0].isNaN)
    }

    @Test func outputRangeScanFindsEachCase() {
        func scan(_ values: [Float], _ dtype: DType) -> OutputRange.Finding {
            values.withUnsafeBufferPointer { OutputRange.scan($0, as: dtype) }
        }
        #expect(scan([65504, -65504, 1], .f16) == .fits)
        #expect(scan([65519], .f16) == .fits)
        #expect(scan([65520], .f16) == .tooLarge)
        #expect(scan([.greatestFiniteMagnitude], .bf16) == .tooLarge)
        #expect(scan([.greatestFiniteMagnitude], .f32) == .fits)
        #expect(scan([Float(bitPattern: 0x7f7f_7fff)], .bf16) == .fits)
        #expect(scan([.infinity, 1], .f32) == .nonFinite)
        #expect(scan([.nan, 70000], .f16) == .tooLarge)
    }

    @Test func largestMagnitudeMatchesAPlainLoopAcrossTheLaneWidth() {
        var generator = SystemRandomNumberGenerator()
        for count in Array(0...25) + [63, 64, 65, 1023, 1024, 1025] {
            // The largest value placed in turn in every position, vector body and tail alike.
            for position in [0, count / 2, count - 1] where position >= 0 && position < max(count, 1) {
                var values = (0..<count).map { _ in Float.random(in: -1...1, using: &generator) }
                if count > 0 { values[position] = -1e30 }
                let plain = values.map { $0.bitPattern & 0x7fff_ffff }.max() ?? 0
                #expect(values.withUnsafeBufferPointer { OutputRange.largestMagnitudeBits($0) } == plain, "\(count) \(position)")
            }
        }
    }
}
