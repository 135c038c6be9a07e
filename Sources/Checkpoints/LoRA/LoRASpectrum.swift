#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The singular values of a LoRA module's δ = scale·B·A, from r × r problems only.
///
/// With G_A = A·Aᵀ and G_B = Bᵀ·B (both r × r), the squared singular values of B·A are the
/// eigenvalues of G_B·G_A, and those of the symmetric S·G_B·S with S = G_A^{1/2} (S from the
/// eigen-decomposition of G_A, negative rounding clamped to 0). Both decompositions are
/// cyclic Jacobi sweeps in Float64; nothing out × in is formed.
public enum LoRASpectrum {
    /// What the spectrum says about one module.
    public struct Summary: Sendable, Equatable {
        /// The module's configured rank r.
        public var rank: Int
        /// Singular values of δ, largest first (r of them).
        public var singularValues: [Double]
        /// ‖δ‖_F = √Σσ².
        public var frobenius: Double { singularValues.reduce(0) { $0 + $1 * $1 }.squareRoot() }
        /// exp of the entropy of σ/Σσ (Roy and Vetterli's effective rank): r for a flat spectrum, 1 for one direction.
        public var effectiveRank: Double {
            let total = singularValues.reduce(0, +)
            guard total > 0 else { return 0 }
            var entropy = 0.0
            for s in singularValues where s > 0 {
                let p = s / total
                entropy -= p * log(p)
            }
            return exp(entropy)
        }
        /// Cumulative share of the energy Σσ² held by the first k values, k = 1…r.
        public var energy: [Double] {
            let total = singularValues.reduce(0) { $0 + $1 * $1 }
            var running = 0.0
            return singularValues.map { s in
                running += s * s
                return total > 0 ? running / total : 0
            }
        }
        /// The fewest singular values holding `share` of the energy (0 for δ = 0).
        public func rank(holding share: Double) -> Int {
            guard let k = energy.firstIndex(where: { $0 >= share - 1e-12 }) else { return 0 }
            return singularValues[0] > 0 ? k + 1 : 0
        }
    }

    /// The spectrum of `module` of `adapter`. The r × r work space must be no larger than
    /// the factors the file holds (r ≤ in + out); a rank past that is refused.
    public static func summary(of module: LoRAModule, in adapter: LoRAAdapter) throws(CheckpointError) -> Summary {
        guard module.rank <= module.inFeatures + module.outFeatures else {
            throw .adapter(file: adapter.weights.path, problem: "module '\(module.module)' has rank \(module.rank), more than its \(module.inFeatures) inputs and \(module.outFeatures) outputs together; its spectrum is not computed")
        }
        let (a, b) = try adapter.factors(of: module)
        return Summary(rank: module.rank, singularValues: singularValues(a: a, b: b, of: module.geometry))
    }

    /// Singular values of scale·B·A, largest first; A is r × in and B out × r, row-major.
    public static func singularValues(a: [Float], b: [Float], of g: LoRAProduct.Geometry) -> [Double] {
        let r = g.rank
        precondition(a.count >= r * g.inFeatures && b.count >= g.outFeatures * r, "LoRA factors too small for \(g)")
        guard r > 0 else { return [] }
        var ga = [Double](repeating: 0, count: r * r), gb = ga
        for i in 0..<r {
            for j in i..<r {
                var s = 0.0
                for x in 0..<g.inFeatures { s += Double(a[i * g.inFeatures + x]) * Double(a[j * g.inFeatures + x]) }
                ga[i * r + j] = s
                ga[j * r + i] = s
                var t = 0.0
                for o in 0..<g.outFeatures { t += Double(b[o * r + i]) * Double(b[o * r + j]) }
                gb[i * r + j] = t
                gb[j * r + i] = t
            }
        }
        // S = V·√Λ·Vᵀ.
        let (lambda, v) = symmetricEigen(ga, r)
        var root = [Double](repeating: 0, count: r * r)
        for i in 0..<r {
            for j in 0..<r {
                var s = 0.0
                for k in 0..<r { s += v[i * r + k] * max(lambda[k], 0).squareRoot() * v[j * r + k] }
                root[i * r + j] = s
            }
        }
        let m = multiply(multiply(root, gb, r), root, r)
        let scale = abs(Double(g.scale))
        return symmetricEigen(m, r).values.map { max($0, 0).squareRoot() * scale }.sorted(by: >)
    }

    private static func multiply(_ x: [Double], _ y: [Double], _ n: Int) -> [Double] {
        var z = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for k in 0..<n where x[i * n + k] != 0 {
                for j in 0..<n { z[i * n + j] += x[i * n + k] * y[k * n + j] }
            }
        }
        return z
    }

    /// Eigenvalues and eigenvectors (columns of `vectors`) of the symmetric n × n `matrix`,
    /// by cyclic Jacobi rotations until the off-diagonal mass is negligible (at most 100 sweeps).
    static func symmetricEigen(_ matrix: [Double], _ n: Int) -> (values: [Double], vectors: [Double]) {
        var m = matrix
        var v = [Double](repeating: 0, count: n * n)
        for i in 0..<n { v[i * n + i] = 1 }
        let total = m.reduce(0) { $0 + $1 * $1 }
        for _ in 0..<100 {
            var off = 0.0
            for i in 0..<n { for j in 0..<n where i != j { off += m[i * n + j] * m[i * n + j] } }
            if off <= 1e-30 * total || off == 0 { break }
            for p in 0..<n {
                for q in (p + 1)..<n where m[p * n + q] != 0 {
                    let theta = (m[q * n + q] - m[p * n + p]) / (2 * m[p * n + q])
                    let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                    let c = 1 / (t * t + 1).squareRoot(), s = t * c
                    for k in 0..<n {
                        let mkp = m[k * n + p], mkq = m[k * n + q]
                        m[k * n + p] = c * mkp - s * mkq
                        m[k * n + q] = s * mkp + c * mkq
                    }
                    for k in 0..<n {
                        let mpk = m[p * n + k], mqk = m[q * n + k]
                        m[p * n + k] = c * mpk - s * mqk
                        m[q * n + k] = s * mpk + c * mqk
                    }
                    for k in 0..<n {
                        let vkp = v[k * n + p], vkq = v[k * n + q]
                        v[k * n + p] = c * vkp - s * vkq
                        v[k * n + q] = s * vkp + c * vkq
                    }
                }
            }
        }
        return ((0..<n).map { m[$0 * n + $0] }, v)
    }
}
