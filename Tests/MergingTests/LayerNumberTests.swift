import Checkpoints
import Foundation
import Testing
@testable import Merging

/// Layer numbers in tensor names come from files: the largest Int is a layer
/// like any other, not an overflow.
@Test func aLayerNumberOfIntMaxMergesWithoutTrapping() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let name = "model.layers.9223372036854775807.w"
    let base = folder + "/base.safetensors", a = folder + "/a.safetensors"
    writeCheckpoint(base, [TestTensor(name: name, shape: [2], values: [1, 1])])
    writeCheckpoint(a, [TestTensor(name: name, shape: [2], values: [2, 3])])
    let plan = MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: a, parameters: ["weight": .number(1)])])
    let out = try runMerge(plan)
    #expect(out.values(name) == [2, 3])
}
