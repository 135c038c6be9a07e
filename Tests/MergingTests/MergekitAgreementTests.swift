import Checkpoints
import Foundation
import Testing
@testable import Merging

/// fixtures/merge, made by fixtures/merge/make_fixtures.py.
private let fixtureFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures/merge").path

/// BF16 bits as integers that order like the values (sign-magnitude to two's complement).
private func ordered(_ bits: UInt16) -> Int {
    bits & 0x8000 != 0 ? -Int(bits & 0x7fff) : Int(bits)
}

/// Runs a fixture recipe and compares it with mergekit's output, in BF16 steps.
/// Returns the largest difference over elements whose result is not a near-cancellation
/// (|result| at least 1/64 of the base's magnitude: below that, Float32 rounding of the
/// inputs alone spans several BF16 steps of the tiny result).
private func largestStepDifference(_ recipe: String) throws -> Int {
    let text = try String(contentsOfFile: fixtureFolder + "/recipes/\(recipe).yml", encoding: .utf8)
        .replacingOccurrences(of: "FIXTURE", with: fixtureFolder)
    let plan = try MergeRecipe.parse(text, file: "\(recipe).yml")
    let ours = try runMerge(plan)
    let reference = try Checkpoint.open(fixtureFolder + "/mergekit/\(recipe)/model.safetensors")
    let base = try Checkpoint.open(fixtureFolder + "/base")
    var worst = 0
    for entry in reference.tensors {
        let theirs = reference.data(of: entry).bindMemory(to: UInt16.self)
        let mine = try #require(ours.tensors[entry.name])
        let scale = try base.decode(try #require(base.tensor(named: entry.name)))
        mine.withUnsafeBytes { raw in
            let bits = raw.bindMemory(to: UInt16.self)
            for i in 0..<entry.elementCount {
                let value = Float(bitPattern: UInt32(bits[i]) << 16)
                guard abs(value) >= abs(scale[i]) / 64 else { continue }
                worst = max(worst, abs(ordered(bits[i]) - ordered(theirs[i])))
            }
        }
    }
    return worst
}

@Test(arguments: ["task_arithmetic", "ties", "linear", "breadcrumbs", "slerp", "model_stock",
                  "nuslerp", "nuslerp_rows", "nuslerp_row_wise", "multislerp", "multislerp_models"])
func agreesWithMergekitWithinOneBF16Step(recipe: String) throws {
    let worst = try largestStepDifference(recipe)
    print("mergekit agreement \(recipe): \(worst) BF16 steps")
    #expect(worst <= 1)
}

/// The Karcher mean is iterative: mergekit iterates on Float32 vectors, Claire on their
/// Gram matrix in Double, so the two may stop after different numbers of steps or with
/// means a few Float32 roundings apart. Both stop within `tol` of the same mean, far
/// below one BF16 step (2⁻⁸ relative): the tolerance is one BF16 step, as for the others.
@Test(arguments: ["karcher", "karcher_base"])
func karcherAgreesWithMergekitWithinOneBF16Step(recipe: String) throws {
    let worst = try largestStepDifference(recipe)
    print("mergekit agreement \(recipe): \(worst) BF16 steps")
    #expect(worst <= 1)
}
