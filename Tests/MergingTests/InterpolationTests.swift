import Testing
@testable import Merging

/// SLERP of `a` towards `b` in rows of `row` entries, each row interpolated on its own
/// from its sums, as the executor does for a whole tensor.
private func slerp(_ a: [Float], _ b: [Float], t: Float, row: Int) -> [Float] {
    var out = [Float](repeating: .nan, count: a.count)
    for start in stride(from: 0, to: a.count, by: row) {
        let end = min(start + row, a.count)
        let x = Array(a[start..<end]), y = Array(b[start..<end])
        var part = [Float](repeating: .nan, count: x.count)
        x.withUnsafeBufferPointer { x in
            y.withUnsafeBufferPointer { y in
                let sums = Interpolation.slerpSums(x, y)
                let (ca, cb) = Interpolation.slerpCoefficients(t: t, normA2: sums.aa, normB2: sums.bb, dot: sums.ab)
                part.withUnsafeMutableBufferPointer { Interpolation.blend(x, y, ca, cb, into: $0) }
            }
        }
        out.replaceSubrange(start..<end, with: part)
    }
    return out
}

@Test func slerpAtZeroGivesTheBase() {
    #expect(slerp([1, 2, 3, 4], [4, -3, 2, 1], t: 0, row: 2) == [1, 2, 3, 4])
}

@Test func slerpOfOrthogonalRowsFollowsTheArc() {
    // Ω = π/2: both coefficients are sin(π/4).
    let out = slerp([1, 0], [0, 1], t: 0.5, row: 2)
    #expect(abs(out[0] - 0.70710677) < 1e-6 && abs(out[1] - 0.70710677) < 1e-6)
}

@Test func slerpOfParallelRowsIsLinear() {
    #expect(slerp([1, 2], [2, 4], t: 0.25, row: 2) == [1.25, 2.5])
}

@Test func slerpTreatsEachRowSeparately() {
    // Row 0 parallel (linear), row 1 orthogonal (arc).
    let out = slerp([1, 1, 1, 0], [2, 2, 0, 1], t: 0.5, row: 2)
    #expect(out[0] == 1.5 && out[1] == 1.5)
    #expect(abs(out[2] - 0.70710677) < 1e-6 && abs(out[3] - 0.70710677) < 1e-6)
}

@Test func linearWeighsAndNormalizes() {
    var out = [Float](repeating: 0, count: 2)
    let a: [Float] = [1, 2], b: [Float] = [3, 6]
    a.withUnsafeBufferPointer { x in
        b.withUnsafeBufferPointer { y in
            out.withUnsafeMutableBufferPointer { Interpolation.linear([x, y], weights: [1, 3], normalize: true, into: $0) }
        }
    }
    #expect(out == [2.5, 5])
}

private func modelStockFactor(base: [Float], _ models: [[Float]]) -> Float {
    var stats = ModelStockStatistics(models: models.count)
    base.withUnsafeBufferPointer { b in
        let pointers = models.map { m in m.withUnsafeBufferPointer { UnsafeBufferPointer(start: $0.baseAddress, count: $0.count) } }
        stats.accumulate(base: b, models: pointers)
        withExtendedLifetime(models) {}
    }
    return stats.interpolationFactor
}

@Test func modelStockFactorFollowsTheAngle() {
    // Orthogonal offsets: cos 0 → t = 0. Equal offsets: cos 1 → t = 2/(1+1) = 1.
    #expect(modelStockFactor(base: [0, 0], [[1, 0], [0, 1]]) == 0)
    #expect(modelStockFactor(base: [0, 0], [[1, 1], [2, 2]]) == 1)
    // cos 60° between [1,0] and [0.5, √3/2]: t = 2·0.5/(1 + 0.5) = 2/3.
    let t = modelStockFactor(base: [1, 1], [[2, 1], [1.5, 1 + Float(3).squareRoot() / 2]])
    #expect(abs(t - 2 / Float(3)) < 1e-5)
}

@Test func modelStockFactorIsZeroAtTheSingularity() {
    // Opposite offsets with N = 2: 1 + cos θ = 0.
    #expect(modelStockFactor(base: [0, 0], [[1, 0], [-1, 0]]) == 0)
}
