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

/// How far a fixture recipe's merge lies from mergekit's output, in BF16 steps, over
/// the elements whose result is not a near-cancellation (|result| at least 1/64 of
/// the base's magnitude: below that, Float32 rounding of the inputs alone spans
/// several BF16 steps of the tiny result): the largest difference, and how many of
/// the compared elements differ by more than one step.
private func stepDifferences(_ recipe: String) throws -> (worst: Int, beyondOne: Int, compared: Int) {
    let text = try String(contentsOfFile: fixtureFolder + "/recipes/\(recipe).yml", encoding: .utf8)
        .replacingOccurrences(of: "FIXTURE", with: fixtureFolder)
    let plan = try MergeRecipe.parse(text, file: "\(recipe).yml")
    let ours = try runMerge(plan)
    let reference = try Checkpoint.open(fixtureFolder + "/mergekit/\(recipe)/model.safetensors")
    let base = try Checkpoint.open(fixtureFolder + "/base")
    var worst = 0, beyondOne = 0, compared = 0
    for entry in reference.tensors {
        let theirs = reference.data(of: entry).bindMemory(to: UInt16.self)
        let mine = try #require(ours.tensors[entry.name])
        let scale = try base.decode(try #require(base.tensor(named: entry.name)))
        mine.withUnsafeBytes { raw in
            let bits = raw.bindMemory(to: UInt16.self)
            for i in 0..<entry.elementCount {
                let value = Float(bitPattern: UInt32(bits[i]) << 16)
                guard abs(value) >= abs(scale[i]) / 64 else { continue }
                let difference = abs(ordered(bits[i]) - ordered(theirs[i]))
                worst = max(worst, difference)
                if difference > 1 { beyondOne += 1 }
                compared += 1
            }
        }
    }
    return (worst, beyondOne, compared)
}

@Test(arguments: ["task_arithmetic", "ties", "linear", "breadcrumbs", "slerp", "model_stock",
                  "nuslerp", "nuslerp_rows", "nuslerp_row_wise", "multislerp", "multislerp_models",
                  "sce", "nearswap", "ram", "ramplus_tl"])
func agreesWithMergekitWithinOneBF16Step(recipe: String) throws {
    let worst = try stepDifferences(recipe).worst
    print("mergekit agreement \(recipe): \(worst) BF16 steps")
    #expect(worst <= 1)
}

/// The Karcher mean is iterative: mergekit iterates on Float32 vectors, Claire on their
/// Gram matrix in Double, so the two may stop after different numbers of steps or with
/// means a few Float32 roundings apart. Both stop within `tol` of the same mean, far
/// below one BF16 step (2⁻⁸ relative): the tolerance is one BF16 step, as for the others.
@Test(arguments: ["karcher", "karcher_base"])
func karcherAgreesWithMergekitWithinOneBF16Step(recipe: String) throws {
    let worst = try stepDifferences(recipe).worst
    print("mergekit agreement \(recipe): \(worst) BF16 steps")
    #expect(worst <= 1)
}

/// Arcee Fusion keeps the changes whose importance reaches a threshold, and mergekit
/// computes each row's KL divergence in Float32 while Claire does in Float64: an
/// entry whose importance lies within that rounding of the threshold may be kept by
/// one and not the other. On the "far" fine-tune (changes as large as the weights,
/// so the divergences stand well above Float32 rounding) at least 99.9 % of the
/// entries must lie within one BF16 step of mergekit's.
@Test func arceeFusionAgreesWithMergekitOnAllButATenthOfAPercent() throws {
    let (_, beyondOne, compared) = try stepDifferences("arcee_fusion")
    #expect(compared > 0)
    #expect(beyondOne * 1000 <= compared, "\(beyondOne) of \(compared) entries differ by more than one BF16 step")
}
