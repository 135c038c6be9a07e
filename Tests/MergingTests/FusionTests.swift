import Testing
@testable import Merging

/// Fuses weighted deltas `u` over `base` and returns the output.
private func fuse(_ fusion: Fusion, base: [Float], _ u: [[Float]], weights: [Float]) -> [Float] {
    var out = [Float](repeating: .nan, count: base.count)
    var divisors = [Float](repeating: .nan, count: base.count)
    var copies = u
    let pointers = (0..<copies.count).map { i in
        copies[i].withUnsafeMutableBufferPointer { UnsafeMutableBufferPointer(start: $0.baseAddress, count: $0.count) }
    }
    base.withUnsafeBufferPointer { b in
        out.withUnsafeMutableBufferPointer { o in
            divisors.withUnsafeMutableBufferPointer { fusion.combine(base: b, deltas: pointers, weights: weights, into: o, divisors: $0) }
        }
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

@Test(arguments: [Consensus.sum, .count, nil], [true, false])
func twoDeltasFuseInOnePassExactlyAsInGeneral(consensus: Consensus?, normalize: Bool) {
    for arithmetic: any Arithmetic.Type in [Float32Arithmetic.self, BFloat16Arithmetic.self, Float16Arithmetic.self] {
        twoDeltasFuseInOnePassExactlyAsInGeneral(arithmetic, consensus: consensus, normalize: normalize)
    }
}

/// The pair form and the general form agree bit for bit in every compute type.
private func twoDeltasFuseInOnePassExactlyAsInGeneral<A: Arithmetic>(_ arithmetic: A.Type, consensus: Consensus?, normalize: Bool) {
    // Signed zeros, exact cancellations and zero weights included.
    let n = 4096
    let baseValues = noise(n, seed: 11)
    var a = noise(n, seed: 12), b = noise(n, seed: 13)
    for i in stride(from: 0, to: n, by: 5) { a[i] = 0 }
    for i in stride(from: 1, to: n, by: 7) { b[i] = -0.0 }
    for i in stride(from: 2, to: n, by: 11) { b[i] = -a[i] }
    for i in stride(from: 3, to: n, by: 13) { a[i] = -0.0; b[i] = 0 }
    for weights: [Float] in [[1, 1], [0.3, 0.7], [1, -1], [0, 0]] {
        let fusion = Fusion(consensus: consensus, normalize: normalize, lambda: 0.9)
        var pair = [Float](repeating: .nan, count: n), general = [Float](repeating: .nan, count: n)
        var divisors = [Float](repeating: .nan, count: n)
        var a1 = a, b1 = b, a2 = a, b2 = b
        baseValues.withUnsafeBufferPointer { base in
            a1.withUnsafeMutableBufferPointer { a1 in
                b1.withUnsafeMutableBufferPointer { b1 in
                    pair.withUnsafeMutableBufferPointer {
                        fusion.combinePair(A.self, base: base, a1, b1, weights: (weights[0], weights[1]), into: $0)
                    }
                }
            }
            a2.withUnsafeMutableBufferPointer { a2 in
                b2.withUnsafeMutableBufferPointer { b2 in
                    general.withUnsafeMutableBufferPointer { out in
                        divisors.withUnsafeMutableBufferPointer {
                            fusion.combineEach(A.self, base: base, deltas: [a2, b2], weights: weights, into: out, divisors: $0)
                        }
                    }
                }
            }
        }
        #expect(pair.map(\.bitPattern) == general.map(\.bitPattern), "\(A.self)")
    }
}
