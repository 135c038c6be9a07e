import Testing
@testable import Merging

/// Fuses weighted deltas `u` over `base` and returns the output.
private func fuse(_ fusion: Fusion, base: [Float], _ u: [[Float]], weights: [Float]) -> [Float] {
    var out = [Float](repeating: .nan, count: base.count)
    var copies = u
    let pointers = (0..<copies.count).map { i in
        copies[i].withUnsafeMutableBufferPointer { UnsafeMutableBufferPointer(start: $0.baseAddress, count: $0.count) }
    }
    base.withUnsafeBufferPointer { b in
        out.withUnsafeMutableBufferPointer { fusion.combine(base: b, deltas: pointers, weights: weights, into: $0) }
    }
    _ = copies
    return out
}

private let base: [Float] = [10, 10, 10, 10]
private let u1: [Float] = [1, -2, 0, 1]
private let u2: [Float] = [-3, 1, 0, 1]

@Test func sumConsensusKeepsOnlyAgreeingDeltas() {
    // Sums −2, −1, 0, 2 elect −, −, +, +; entry 2 has no agreeing delta (0 never agrees).
    let out = fuse(Fusion(consensus: .sum, normalize: true, lambda: 1), base: base, [u1, u2], weights: [1, 1])
    #expect(out == [7, 8, 10, 11])
}

@Test func countConsensusFollowsTheMajorityOfSigns() {
    // Votes 0, 0, 0, +2: every tie counts as +.
    let out = fuse(Fusion(consensus: .count, normalize: true, lambda: 1), base: base, [u1, u2], weights: [1, 1])
    #expect(out == [11, 11, 10, 11])
}

@Test func aSignTieElectsPlus() {
    let out = fuse(Fusion(consensus: .sum, normalize: false, lambda: 1), base: [0], [[1], [-1]], weights: [1, 1])
    #expect(out == [1])
}

@Test func consensusDivisorCountsOnlyAgreeingWeights() {
    // u = w·δ with w = 2 and 1: entry agreeing in both → (2·1 + 1·3)/(2 + 1).
    let out = fuse(Fusion(consensus: .sum, normalize: true, lambda: 1), base: [0], [[2], [3]], weights: [2, 1])
    #expect(out == [5 / Float(3)])
}

@Test func withoutConsensusDeltasAddUpAndLambdaScales() {
    let plain = fuse(Fusion(consensus: nil, normalize: false, lambda: 0.5), base: base, [u1, u2], weights: [1, 1])
    #expect(plain == [9, 9.5, 10, 11])
    let normalized = fuse(Fusion(consensus: nil, normalize: true, lambda: 1), base: base, [u1, u2], weights: [1, 3])
    #expect(normalized == [9.5, 9.75, 10, 10.5])
}

@Test func zeroWeightSumDoesNotDivideByZero() {
    let out = fuse(Fusion(consensus: nil, normalize: true, lambda: 1), base: [1], [[2], [-2]], weights: [1, -1])
    #expect(out == [1])
}
