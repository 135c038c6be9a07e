import Foundation
import Testing
@testable import Merging

/// Singular values of the row-major `m × n` matrix `a` by one-sided (Hestenes) Jacobi in
/// Double: column pairs are rotated until all are orthogonal; the column norms are then
/// the singular values. A plain reference for small matrices, descending.
func jacobiSingularValues(_ a: [Float], m: Int, n: Int) -> [Double] {
    // Work on the taller orientation, columns as arrays.
    let (rows, cols) = m >= n ? (m, n) : (n, m)
    var c = [[Double]](repeating: [Double](repeating: 0, count: rows), count: cols)
    for i in 0..<m {
        for j in 0..<n {
            if m >= n { c[j][i] = Double(a[i * n + j]) } else { c[i][j] = Double(a[i * n + j]) }
        }
    }
    for _ in 0..<100 {
        var rotated = false
        for p in 0..<cols {
            for q in (p + 1)..<cols {
                var alpha = 0.0, beta = 0.0, gamma = 0.0
                for k in 0..<rows {
                    alpha += c[p][k] * c[p][k]
                    beta += c[q][k] * c[q][k]
                    gamma += c[p][k] * c[q][k]
                }
                guard abs(gamma) > 1e-15 * (alpha * beta).squareRoot(), gamma != 0 else { continue }
                rotated = true
                let zeta = (beta - alpha) / (2 * gamma)
                let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
                let cs = 1 / (1 + t * t).squareRoot(), sn = cs * t
                for k in 0..<rows {
                    let x = c[p][k], y = c[q][k]
                    c[p][k] = cs * x - sn * y
                    c[q][k] = sn * x + cs * y
                }
            }
        }
        if !rotated { break }
    }
    return c.map { $0.reduce(0) { $0 + $1 * $1 }.squareRoot() }.sorted(by: >)
}

/// U·diag(s)·Vᵀ of a factorization, row-major m × n.
func product(_ f: TruncatedSVD.Factors) -> [Float] {
    var out = [Float](repeating: 0, count: f.m * f.n)
    for i in 0..<f.m {
        for j in 0..<f.n {
            var sum: Float = 0
            for k in 0..<f.rank { sum += f.u[i * f.rank + k] * f.s[k] * f.vt[k * f.n + j] }
            out[i * f.n + j] = sum
        }
    }
    return out
}

/// A row-major `m × n` matrix of rank `rank`: the product of two noise matrices.
func lowRank(m: Int, n: Int, rank: Int, seed: UInt64) -> [Float] {
    let left = noise(m * rank, seed: seed), right = noise(rank * n, seed: seed + 1000)
    var out = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
        for j in 0..<n {
            var sum: Float = 0
            for k in 0..<rank { sum += left[i * rank + k] * right[k * n + j] }
            out[i * n + j] = sum
        }
    }
    return out
}

func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }
func maxDifference(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) } }

@Suite struct TruncatedSVDTests {
    @Test(arguments: [(12, 7), (7, 12), (9, 9), (1, 5)])
    func exactSpectrumMatchesJacobiReference(shape: (Int, Int)) throws {
        let (m, n) = shape
        let a = noise(m * n, seed: UInt64(m * 31 + n))
        let f = try TruncatedSVD.exact(a, m: m, n: n, rank: nil)
        let reference = jacobiSingularValues(a, m: m, n: n)
        #expect(f.spectrum.count == min(m, n))
        for (s, r) in zip(f.spectrum, reference) { #expect(abs(Double(s) - r) <= 1e-5 * reference[0]) }
        // Full rank rebuilds the matrix.
        #expect(maxDifference(product(f), a) <= 1e-5 * maxAbs(a))
    }

    @Test func exactTruncationKeepsTheLeadingTriples() throws {
        let (m, n) = (10, 8)
        let a = noise(m * n, seed: 4)
        let f = try TruncatedSVD.exact(a, m: m, n: n, rank: 3)
        #expect(f.rank == 3 && f.u.count == m * 3 && f.vt.count == 3 * n)
        // ‖A − A₃‖² = Σ_{i≥3} sᵢ² (Eckart–Young), checked against the reference spectrum.
        let reference = jacobiSingularValues(a, m: m, n: n)
        let residual = zip(product(f), a).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let expected = reference.dropFirst(3).reduce(0) { $0 + $1 * $1 }
        #expect(abs(residual - expected) <= 1e-4 * expected)
    }

    @Test(arguments: [(40, 30), (30, 40), (64, 64)])
    func randomizedRecoversAMatrixOfItsRank(shape: (Int, Int)) throws {
        let (m, n) = shape
        let a = lowRank(m: m, n: n, rank: 5, seed: 9)
        let f = try TruncatedSVD.randomized(a, m: m, n: n, rank: 5, random: CounterRandom(seed: 1, tensor: "t", model: 0))
        #expect(maxDifference(product(f), a) <= 1e-5 * maxAbs(a))
        let reference = jacobiSingularValues(a, m: m, n: n)
        for k in 0..<5 { #expect(abs(Double(f.s[k]) - reference[k]) <= 1e-5 * reference[0]) }
    }

    @Test func randomizedIsNearOptimalOnAFullRankMatrix() throws {
        let (m, n) = (80, 60)
        let a = noise(m * n, seed: 21)
        let r = try TruncatedSVD.randomized(a, m: m, n: n, rank: 8, random: CounterRandom(seed: 0, tensor: "t", model: 0))
        let e = try TruncatedSVD.exact(a, m: m, n: n, rank: 8)
        func error(_ f: TruncatedSVD.Factors) -> Double {
            zip(product(f), a).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }.squareRoot()
        }
        // Never better than the optimum, and within 5 % of it with two power iterations.
        #expect(error(r) >= error(e) * (1 - 1e-5))
        #expect(error(r) <= error(e) * 1.05)
    }

    @Test func randomizedIsDeterministicForItsSeed() throws {
        let a = noise(50 * 40, seed: 3)
        let one = try TruncatedSVD.randomized(a, m: 50, n: 40, rank: 4, random: CounterRandom(seed: 7, tensor: "w", model: 0))
        let two = try TruncatedSVD.randomized(a, m: 50, n: 40, rank: 4, random: CounterRandom(seed: 7, tensor: "w", model: 0))
        #expect(one.u.map(\.bitPattern) == two.u.map(\.bitPattern))
        #expect(one.vt.map(\.bitPattern) == two.vt.map(\.bitPattern))
        #expect(one.s.map(\.bitPattern) == two.s.map(\.bitPattern))
    }

    @Test func energyRankIsTheSmallestReachingTheShare() {
        // Energies 16, 9, 4, 1 of 30: cumulative shares 0.533, 0.833, 0.967, 1.
        let spectrum: [Float] = [4, 3, 2, 1]
        #expect(TruncatedSVD.rank(forEnergy: 0.5, spectrum: spectrum) == 1)
        #expect(TruncatedSVD.rank(forEnergy: 16.0 / 30, spectrum: spectrum) == 1)
        #expect(TruncatedSVD.rank(forEnergy: 0.54, spectrum: spectrum) == 2)
        #expect(TruncatedSVD.rank(forEnergy: 0.9, spectrum: spectrum) == 3)
        #expect(TruncatedSVD.rank(forEnergy: 0.97, spectrum: spectrum) == 4)
        #expect(TruncatedSVD.rank(forEnergy: 1, spectrum: spectrum) == 4)
        #expect(TruncatedSVD.rank(forEnergy: 0.9, spectrum: [0, 0]) == 1)
    }

    @Test func autoPrefersRandomizedOnlyForSmallRanks() {
        #expect(TruncatedSVD.prefersRandomized(m: 1024, n: 2816, rank: 64))
        #expect(!TruncatedSVD.prefersRandomized(m: 1024, n: 2816, rank: 512))
        #expect(!TruncatedSVD.prefersRandomized(m: 32, n: 32, rank: 4))
    }
}
