import Foundation
import Testing
@testable import Merging

@Test func slerpNeedsExactlyOneModelBesidesTheBase() {
    let plan = MergePlan(method: .slerp, base: "b", models: [ModelSpec(path: "x"), ModelSpec(path: "y")], parameters: ["t": .number(0.5)])
    #expect(throws: MergeError.badPlan("slerp needs exactly two models, one of them the base")) { try plan.check() }
}

@Test func slerpNeedsT() {
    let plan = MergePlan(method: .slerp, base: "b", models: [ModelSpec(path: "b"), ModelSpec(path: "x")])
    #expect(throws: MergeError.badPlan("slerp needs the interpolation factor t")) { try plan.check() }
}

@Test func modelStockNeedsTwoModels() {
    let plan = MergePlan(method: .modelStock, base: "b", models: [ModelSpec(path: "x")])
    #expect(throws: MergeError.self) { try plan.check() }
}

@Test func taskVectorMethodsNeedABase() {
    #expect(throws: MergeError.badPlan("ties needs a base model (--base or base_model)")) {
        try MergePlan(method: .ties, base: nil, models: [ModelSpec(path: "x")]).check()
    }
}

@Test func parametersNoMethodHasAreRejected() {
    let plan = MergePlan(method: .linear, base: nil, models: [ModelSpec(path: "x", parameters: ["densty": .number(0.5)])])
    #expect(throws: MergeError.badParameter(name: "densty", problem: "linear has no such parameter (model x)")) { try plan.check() }
    let global = MergePlan(method: .ties, base: "b", models: [ModelSpec(path: "x")], parameters: ["lamda": .number(1)])
    #expect(throws: MergeError.badParameter(name: "lamda", problem: "ties has no such parameter")) { try global.check() }
}

@Test func parametersAnotherMethodReadsAreIgnoredAndListed() throws {
    let stock = MergePlan(method: .modelStock, base: "b",
                          models: [ModelSpec(path: "x", parameters: ["weight": .number(0.5)]),
                                   ModelSpec(path: "y", parameters: ["weight": .number(-7), "density": .number(0.3)])])
    try stock.check()
    #expect(stock.unusedParameters == ["density", "weight"])
    let linear = MergePlan(method: .linear, base: nil, models: [ModelSpec(path: "x"), ModelSpec(path: "y")],
                           parameters: ["int8_mask": .number(1), "normalize": .number(1)])
    try linear.check()
    #expect(linear.unusedParameters == ["int8_mask"])
}

@Test func nonFiniteParametersAreRejected() {
    let plan = MergePlan(method: .ties, base: "b", models: [ModelSpec(path: "x")], parameters: ["lambda": .number(.nan)])
    #expect(throws: MergeError.self) { try plan.check() }
}

@Test func dellaEpsilonMustKeepProbabilitiesInsideZeroOne() {
    let plan = MergePlan(method: .della, base: "b", models: [ModelSpec(path: "x")])
    #expect(throws: MergeError.self) { try plan.checkResolved(density: 0.1, epsilon: 0.15, model: "x", tensor: "w") }
    #expect(throws: MergeError.self) { try plan.checkResolved(density: 0.9, epsilon: 0.1, model: "x", tensor: "w") }
    #expect(throws: MergeError.self) { try plan.checkResolved(density: 0, epsilon: 0.1, model: "x", tensor: "w") }
    #expect(throws: Never.self) { try plan.checkResolved(density: 0.5, epsilon: 0.15, model: "x", tensor: "w") }
}

@Test func densityZeroWithInverseRescaleIsRejected() {
    let plan = MergePlan(method: .dareTies, base: "b", models: [ModelSpec(path: "x")], rescale: .inverse)
    #expect(throws: MergeError.self) { try plan.checkResolved(density: 0, epsilon: 0.15, model: "x", tensor: "w") }
    #expect(throws: MergeError.self) { try plan.checkResolved(density: -0.1, epsilon: 0.15, model: "x", tensor: "w") }
}

@Test func methodTypoSuggestsTheClosestName() {
    #expect(throws: MergeError.unknownMethod(name: "task_arithmatic", suggestion: "task_arithmetic")) {
        try MergeMethod.named("task_arithmatic")
    }
    #expect(throws: MergeError.unknownMethod(name: "frobnicate", suggestion: nil)) { try MergeMethod.named("frobnicate") }
}

// MARK: Inputs against the base

private func write(_ folder: String, _ name: String, _ tensors: [TestTensor]) -> String {
    let path = folder + "/" + name + ".safetensors"
    writeCheckpoint(path, tensors)
    return path
}

@Test func everyMismatchIsListedAtOnce() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = write(folder, "base", [TestTensor(name: "p", shape: [2], values: [0, 0]),
                                      TestTensor(name: "q", shape: [2, 2], values: [0, 0, 0, 0])])
    let a = write(folder, "a", [TestTensor(name: "q", shape: [4], values: [1, 1, 1, 1])])
    let b = write(folder, "b", [TestTensor(name: "p", shape: [2], values: [1, 1]),
                                TestTensor(name: "q", shape: [2, 2], values: [0, 0, 0, 0], dtype: .bf16)])
    let plan = MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: a), ModelSpec(path: b)])
    #expect(throws: MergeError.incompatibleInputs(base: base, problems: [
        "tensor 'p' is missing from \(a)",
        "tensor 'q' has shape [4] in \(a) but [2, 2] in the base",
    ])) { try PreparedMerge.prepare(plan) }
}

@Test func extraVocabularyRowsAreRefusedWithoutATokenizer() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = write(folder, "base", [TestTensor(name: "model.embed_tokens.weight", shape: [2, 2], values: [0, 0, 0, 0])])
    let a = write(folder, "a", [TestTensor(name: "model.embed_tokens.weight", shape: [3, 2], values: [1, 2, 3, 4, 5, 6])])
    let plan = MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: a)])
    #expect(throws: MergeError.incompatibleInputs(base: base, problems: [
        "tensor 'model.embed_tokens.weight' has 3 rows in \(a) but 2 in the base; set tokenizer_source (base, union or a model) to map the rows by token",
    ])) { try PreparedMerge.prepare(plan) }
}

@Test func fewerVocabularyRowsThanTheBaseIsAnError() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = write(folder, "base", [TestTensor(name: "lm_head.weight", shape: [3, 1], values: [0, 0, 0])])
    let a = write(folder, "a", [TestTensor(name: "lm_head.weight", shape: [2, 1], values: [1, 1])])
    #expect(throws: MergeError.self) {
        try PreparedMerge.prepare(MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: a)]))
    }
}
