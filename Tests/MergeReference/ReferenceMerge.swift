import Foundation
import Merging

/// A plain implementation of every merge method, written from the method definitions
/// alone: one tensor at a time, whole arrays in memory, no chunks, no samples, no
/// vector kernels. The merge engine is checked against it (tests and the `merge`
/// fuzz target); it is slow and meant to be obviously right, not fast.
///
/// Values are Float32 (inputs already decoded); each result comes with a slack: 0
/// when the engine must produce exactly these Float32 values (every operation is
/// elementwise and done in the same order), otherwise an absolute bound on how far a
/// result computed with sums in another order may lie from it (see `Result`).
public enum ReferenceMerge {
    /// Everything a method reads for one tensor, resolved.
    public struct Parameters: Sendable {
        public var method: MergeMethod
        /// Per model (in order): weight wᵢ, density dᵢ, Breadcrumbs γᵢ, DELLA εᵢ.
        public var weights: [Float]
        public var densities: [Double]
        public var gammas: [Double]
        public var epsilons: [Double]
        public var lambda: Float = 1
        public var normalize: Bool
        public var rescale: Rescale
        public var consensus: Consensus?
        public var seed: UInt64 = 0
        /// SLERP's t, Model Stock's per-row form.
        public var t: Float = 0.5
        public var filterWise = false
        /// Passthrough's factor.
        public var scale: Float = 1
        /// NuSLERP's vectors: the whole tensor, else rows, or (row-wise) along the first axis.
        public var nuslerpFlatten = true
        public var nuslerpRowWise = false
        /// Multi-SLERP's weight normalization and ε.
        public var normalizeWeights = true
        public var eps = 1e-8
        /// The Karcher mean's iteration limit and tolerance.
        public var maxIterations = 10
        public var tolerance = 1e-5
        /// SCE's share of entries kept by variance.
        public var selectTopK = 1.0
        /// RAM's change threshold, RAM+'s r and α.
        public var ramEpsilon: Float = 1e-5
        public var r: Float = 0.1
        public var alpha: Float = 0.2

        /// The method's defaults for `models` models with weights 1 and densities 1.
        public init(method: MergeMethod, models: Int) {
            self.method = method
            weights = [Float](repeating: 1, count: models)
            densities = [Double](repeating: 1, count: models)
            gammas = [Double](repeating: 0.01, count: models)
            epsilons = [Double](repeating: 0.15, count: models)
            normalize = method.defaultNormalize
            rescale = method.sparsifier == nil ? .none : method.defaultRescale
            consensus = method.defaultConsensus
        }
    }

    /// A merged tensor: Float32 values and, per entry, the slack allowed to an engine
    /// that sums in another order (0: exact). An infinite slack marks an entry whose
    /// elected sign is a near-tie that a last-bit difference may flip.
    public struct Result: Sendable {
        public var values: [Float]
        public var slack: [Float]
    }

    /// Relative size of the rounding differences a reordered sum may cause, with a
    /// wide margin (Float32 sums over runs of at most a few hundred entries).
    public static let reorderTolerance: Float = 1e-4

    /// One merged tensor of `shape` from `base` (nil for `linear`; optional for
    /// `nuslerp` and `multislerp`; for `karcher`, one more input) and `models`.
    /// `windows` overrides the per-model kept-rank windows (whole-model trim) and
    /// `windowOffset` places this tensor in that model-wide order.
    public static func merge(
        name: String, shape: [Int], base: [Float]?, models: [[Float]], parameters p: Parameters,
        windows: [Range<Int>?]? = nil, windowOffset: Int = 0, windowKeys: [[UInt32]]? = nil
    ) -> Result {
        let n = models.first?.count ?? base?.count ?? 0
        switch p.method {
        case .linear:
            return Result(values: linear(models, weights: p.weights, normalize: p.normalize),
                          slack: [Float](repeating: 0, count: n))
        case .slerp:
            return slerp(base!, models[0], t: p.t)
        case .passthrough:
            return Result(values: models[0].map { $0 * p.scale }, slack: [Float](repeating: 0, count: n))
        case .modelStock:
            let row = p.filterWise ? rowLength(shape, count: n) : max(n, 1)
            return modelStock(base!, models, rowLength: row, exact: p.filterWise)
        case .nuslerp:
            return nuslerp(shape: shape, base: base, models[0], models[1], p: p)
        case .multislerp:
            return multislerp(base: base, models: models, p: p)
        case .karcher:
            return karcher(models + (base.map { [$0] } ?? []), maxIterations: p.maxIterations, tolerance: p.tolerance)
        case .sce:
            return sce(base!, models, selectTopK: p.selectTopK)
        case .nearswap:
            return Result(values: nearswap(base!, models[0], t: p.t), slack: [Float](repeating: 0, count: n))
        case .ram, .ramPlusTL:
            return Result(values: ram(base!, models, epsilon: p.ramEpsilon, r: p.r, alpha: p.alpha, plus: p.method == .ramPlusTL),
                          slack: [Float](repeating: 0, count: n))
        case .arceeFusion:
            let row = shape.count >= 2 && shape.last! > 0 ? shape.last! : max(n, 1)
            return Result(values: arceeFusion(base!, models[0], row: row), slack: [Float](repeating: 0, count: n))
        default:
            return taskVectors(name: name, shape: shape, base: base!, models: models, p: p, windows: windows,
                               windowOffset: windowOffset, windowKeys: windowKeys)
        }
    }

    /// Entries per row: the product of all but the leading axis (the whole count for 1-D).
    public static func rowLength(_ shape: [Int], count: Int) -> Int {
        guard shape.count >= 2, shape[0] > 0 else { return max(count, 1) }
        return count / shape[0]
    }

    // MARK: Task vectors

    /// The kept ranks of the ascending (|δ|, index) order for a rank-selecting sparsifier.
    public static func keptRanks(_ sparsifier: Sparsifier, count n: Int, density d: Double, gamma: Double) -> Range<Int> {
        if sparsifier == .magnitude {
            // TIES: the k = max(1, ⌊d·n⌋) largest.
            let k = min(n, max(1, Int((d * Double(n)).rounded(.down))))
            return (n - k)..<n
        }
        // Breadcrumbs: keep ⌊d·n⌋ above the smallest, below the top ⌊γ·n⌋.
        let keep = min(n, Int((d * Double(n)).rounded(.down)))
        let top = Int((gamma * Double(n)).rounded(.down))
        let bottom = max(0, n - keep - top)
        return bottom..<(bottom + keep)
    }

    /// The magnitude key of an entry: |x| as ordered bits.
    public static func key(_ x: Float) -> UInt32 { x.bitPattern & 0x7fff_ffff }

    /// Indices of `keys` in ascending (key, index) order.
    public static func order(_ keys: [UInt32]) -> [Int] {
        keys.indices.sorted { keys[$0] != keys[$1] ? keys[$0] < keys[$1] : $0 < $1 }
    }

    static func taskVectors(
        name: String, shape: [Int], base: [Float], models: [[Float]], p: Parameters,
        windows: [Range<Int>?]?, windowOffset: Int, windowKeys: [[UInt32]]?
    ) -> Result {
        let n = base.count
        var weighted: [[Float]] = []
        var inexact = false
        for (m, model) in models.enumerated() {
            var delta = [Float](repeating: 0, count: n)
            for i in 0..<n { delta[i] = model[i] - base[i] }
            let d = p.densities[m]
            var sparse = delta
            var sparsified = false
            if let sparsifier = p.method.sparsifier, d < 1 {
                sparsified = true
                if d <= 0 {
                    for i in 0..<n { sparse[i] = 0 }
                    sparsified = false  // nothing kept: no rescale
                } else {
                    let stream = CounterRandom(seed: p.seed, tensor: name, model: m)
                    switch sparsifier {
                    case .magnitude, .magnitudeOutliers:
                        var kept = [Bool](repeating: false, count: n)
                        if let window = windows?[m], let keys = windowKeys?[m] {
                            // Ranks over the whole model; this tensor starts at `windowOffset`.
                            let ordered = order(keys)
                            for r in window {
                                let i = ordered[r] - windowOffset
                                if i >= 0 && i < n { kept[i] = true }
                            }
                        } else {
                            let ordered = order(delta.map(key))
                            for r in keptRanks(sparsifier, count: n, density: d, gamma: p.gammas[m]) { kept[ordered[r]] = true }
                        }
                        let scale: Float = 1 / Float(d)
                        for i in 0..<n {
                            sparse[i] = kept[i] ? (p.rescale == .inverse ? delta[i] * scale : delta[i]) : 0
                        }
                    case .random:
                        // DARE: keep with probability d, the draw keyed by the element's index.
                        let density = Float(d)
                        let scale: Float = p.rescale == .inverse ? 1 / density : 1
                        for i in 0..<n { sparse[i] = delta[i] * (stream.uniform(i) < density ? scale : 0) }
                    case .dellaMagprune:
                        let density = Float(d), epsilon = Float(p.epsilons[m])
                        let row = rowLength(shape, count: n)
                        var start = 0
                        while start < n {
                            let m = min(row, n - start)
                            let ordered = order((0..<m).map { key(delta[start + $0]) })
                            let step: Float = m > 1 ? 2 * epsilon / Float(m - 1) : 0
                            let first: Float = m > 1 ? density - epsilon : density
                            for (r, j) in ordered.enumerated() {
                                let i = start + j
                                let keep = first + step * Float(r)
                                sparse[i] = stream.uniform(i) < keep ? (p.rescale == .inverse ? delta[i] / keep : delta[i]) : 0
                            }
                            start += m
                        }
                    }
                }
            }
            var factor: Float = 1
            if p.rescale == .l1 && sparsified {
                var before = 0.0, after = 0.0
                for i in 0..<n {
                    before += Double(abs(delta[i]))
                    after += Double(abs(sparse[i]))
                }
                factor = before < 1e-7 || after < 1e-7 ? 1 : Float(before / after)
                inexact = true
            }
            var u = [Float](repeating: 0, count: n)
            for i in 0..<n { u[i] = sparse[i] * factor * p.weights[m] }
            weighted.append(u)
        }

        var out = [Float](repeating: 0, count: n)
        var slack = [Float](repeating: 0, count: n)
        for i in 0..<n {
            var mixed: Float
            var divisor: Float
            var magnitude: Float = 0
            for u in weighted { magnitude += abs(u[i]) }
            if let consensus = p.consensus {
                var vote: Float = 0
                for u in weighted {
                    switch consensus {
                    case .sum: vote += u[i]
                    case .count: vote += u[i] > 0 ? 1 : (u[i] < 0 ? -1 : 0)
                    }
                }
                let sign: Float = vote >= 0 ? 1 : -1
                mixed = 0
                divisor = 0
                for (m, u) in weighted.enumerated() {
                    let agrees = u[i] * sign > 0
                    mixed = m == 0 ? (agrees ? u[i] : u[i] * 0) : mixed + (agrees ? u[i] : u[i] * 0)
                    divisor = m == 0 ? (agrees ? p.weights[m] : p.weights[m] * 0) : divisor + (agrees ? p.weights[m] : p.weights[m] * 0)
                }
                if divisor == 0 { divisor = 1 }
                if inexact && consensus == .sum && abs(vote) <= reorderTolerance * magnitude { slack[i] = .infinity }
            } else {
                mixed = weighted.isEmpty ? 0 : weighted[0][i]
                for u in weighted.dropFirst() { mixed += u[i] }
                divisor = 0
                for w in p.weights { divisor += w }
                if abs(divisor) < 1e-8 { divisor = 1 }
            }
            out[i] = p.normalize ? base[i] + mixed / divisor * p.lambda : base[i] + mixed * p.lambda
            if inexact && slack[i] == 0 {
                slack[i] = reorderTolerance * magnitude * abs(p.lambda) / (p.normalize ? min(abs(divisor), 1) : 1)
            }
        }
        return Result(values: out, slack: slack)
    }

    // MARK: Interpolations

    static func linear(_ models: [[Float]], weights: [Float], normalize: Bool) -> [Float] {
        let n = models[0].count
        var total: Float = 0
        for w in weights { total += w }
        var out = [Float](repeating: 0, count: n)
        for (m, x) in models.enumerated() {
            for i in 0..<n { out[i] += weights[m] * x[i] }
        }
        if normalize { for i in 0..<n { out[i] /= total } }
        return out
    }

    /// SLERP over the whole tensor as one vector, `a` the base.
    static func slerp(_ a: [Float], _ b: [Float], t: Float) -> Result {
        var aa = 0.0, bb = 0.0, ab = 0.0
        for i in a.indices {
            aa += Double(a[i]) * Double(a[i])
            bb += Double(b[i]) * Double(b[i])
            ab += Double(a[i]) * Double(b[i])
        }
        var na = Float(aa.squareRoot()), nb = Float(bb.squareRoot())
        if !(na > 1e-8) { na = 1 }
        if !(nb > 1e-8) { nb = 1 }
        let cosine = min(max(Float(ab) / na / nb, -1), 1)
        var ca = 1 - t, cb = t
        if abs(cosine) <= 0.9995 {
            let theta = acos(cosine)
            ca = sin((1 - t) * theta) / sin(theta)
            cb = sin(t * theta) / sin(theta)
        }
        var out = [Float](repeating: 0, count: a.count), slack = out
        for i in a.indices {
            out[i] = ca * a[i] + cb * b[i]
            slack[i] = reorderTolerance * (abs(ca) + abs(cb) + 1) * (abs(a[i]) + abs(b[i]))
        }
        return Result(values: out, slack: slack)
    }

    /// Model Stock per span of `rowLength` entries (the whole tensor unless filter-wise).
    /// `exact`: every span lies inside one chunk of the engine (filter-wise rows), whose
    /// sums then run in the same order.
    static func modelStock(_ base: [Float], _ models: [[Float]], rowLength: Int, exact: Bool) -> Result {
        let n = base.count, count = models.count
        var out = [Float](repeating: 0, count: n), slack = out
        var start = 0
        while start < n {
            let span = start..<min(n, start + rowLength)
            var norms = [Double](repeating: 0, count: count)
            for m in 0..<count {
                for i in span {
                    let d = Double(models[m][i] - base[i])
                    norms[m] += d * d
                }
            }
            var total = 0.0, pairs = 0
            for x in 0..<count {
                for y in (x + 1)..<max(x + 1, count) {
                    var dot = 0.0
                    for i in span { dot += Double(models[x][i] - base[i]) * Double(models[y][i] - base[i]) }
                    total += min(max(dot / max(norms[x].squareRoot() * norms[y].squareRoot(), 1e-6), -1), 1)
                    pairs += 1
                }
            }
            let cosine = pairs > 0 ? total / Double(pairs) : 0
            let denominator = 1 + Double(count - 1) * cosine
            let t = abs(denominator) < 1e-6 ? 0 : Float(Double(count) * cosine / denominator)
            for i in span {
                var sum: Float = 0
                for m in 0..<count { sum += models[m][i] }
                out[i] = t * (sum / Float(count)) + (1 - t) * base[i]
                // Sums over a span split across chunks are added in another order.
                slack[i] = !exact ? reorderTolerance * (abs(t) + 1) * (abs(sum / Float(count)) + abs(base[i])) : 0
            }
            start = span.upperBound
        }
        return Result(values: out, slack: slack)
    }

    // MARK: Spherical methods

    /// NuSLERP of `x0` and `x1` (their task vectors given a base, which is added back)
    /// with t = w₁/(w₀ + w₁): per vector, cos θ from the norms (each at least 1e-7) and
    /// the dot product summed in index order, linear when 1 − cos²θ ≤ 1e-16. Rows and
    /// vectors along the first axis lie in one chunk or are summed in the same order by
    /// the engine (exact); the whole tensor is summed chunk by chunk.
    static func nuslerp(shape: [Int], base: [Float]?, _ x0: [Float], _ x1: [Float], p: Parameters) -> Result {
        let n = x0.count
        let total = Double(p.weights[0]) + Double(p.weights[1])
        let t = Float(abs(total) < 1e-6 ? 0.5 : Double(p.weights[1]) / total)
        var a = x0, b = x1
        if let base {
            for i in 0..<n {
                a[i] = x0[i] - base[i]
                b[i] = x1[i] - base[i]
            }
        }
        var vectors: [[Int]]
        var exact = true
        if p.nuslerpFlatten || shape.count < 2 || shape[0] == 0 || n == 0 {
            vectors = [Array(0..<n)]
            exact = false
        } else if !p.nuslerpRowWise {
            let length = shape[shape.count - 1]
            vectors = stride(from: 0, to: n, by: length).map { Array($0..<($0 + length)) }
        } else {
            let columns = n / shape[0]
            vectors = (0..<columns).map { j in (0..<shape[0]).map { $0 * columns + j } }
        }
        var out = [Float](repeating: 0, count: n), slack = out
        for v in vectors {
            var aa = 0.0, bb = 0.0, ab = 0.0
            for i in v {
                aa += Double(a[i]) * Double(a[i])
                bb += Double(b[i]) * Double(b[i])
                ab += Double(a[i]) * Double(b[i])
            }
            let cosine = Float(min(max(ab / (max(aa.squareRoot(), 1e-7) * max(bb.squareRoot(), 1e-7)), -1), 1))
            var ca = 1 - t, cb = t
            if 1 - cosine * cosine > 1e-16 {
                let theta = acos(cosine)
                ca = sin((1 - t) * theta) / sin(theta)
                cb = sin(t * theta) / sin(theta)
            }
            for i in v {
                out[i] = ca * a[i] + cb * b[i]
                if let base { out[i] += base[i] }
                slack[i] = exact ? 0 : reorderTolerance * (abs(ca) + abs(cb) + 1) * (abs(a[i]) + abs(b[i]))
            }
        }
        return Result(values: out, slack: slack)
    }

    // MARK: SCE, NearSwap, Arcee Fusion

    /// SCE: δᵢ = θᵢ − θ₀; with s < 1 only the ⌊nz·s⌋ entries of largest variance across
    /// the models survive (nz: non-zero variances; ties keep the later entries); each
    /// model weighs its mean δ² over the tensor, divided by the total (equal weights
    /// when it is below 10⁻⁶); per entry the δᵢ of the sign of Σδᵢ are averaged by weight.
    /// The energies are sums over the tensor, which the engine adds in another order.
    static func sce(_ base: [Float], _ models: [[Float]], selectTopK: Double) -> Result {
        let n = base.count, count = models.count
        var deltas = models.map { x in (0..<n).map { x[$0] - base[$0] } }
        if selectTopK < 1 {
            var keep = [Bool](repeating: false, count: n)
            if selectTopK > 0 {
                var variance = [Float](repeating: 0, count: n)
                for i in 0..<n {
                    var mean = 0.0
                    for d in deltas { mean += Double(d[i]) }
                    mean /= Double(count)
                    var sum = 0.0
                    for d in deltas { sum += (Double(d[i]) - mean) * (Double(d[i]) - mean) }
                    variance[i] = Float(sum / Double(count))
                }
                let nonzero = variance.filter { $0 != 0 }.count
                let k = Int((Float(nonzero) * Float(selectTopK)).rounded(.towardZero))
                let ordered = order(variance.map(key))
                for r in max(0, n - k)..<n where k > 0 { keep[ordered[r]] = true }
            }
            for m in 0..<count { for i in 0..<n where !keep[i] { deltas[m][i] = 0 } }
        }
        var weights = deltas.map { d -> Float in
            var sum = 0.0
            for x in d { sum += Double(x) * Double(x) }
            return Float(sum / Double(max(n, 1)))
        }
        var total: Float = 0
        for w in weights { total += w }
        weights = weights.map { abs(Double(total)) < 1e-6 ? 1 / Float(count) : $0 / total }
        var out = [Float](repeating: 0, count: n), slack = out
        for i in 0..<n {
            var vote: Float = 0
            for d in deltas { vote += d[i] }
            var mixed: Float = 0, divisor: Float = 0, magnitude: Float = 0
            for (m, d) in deltas.enumerated() {
                let agrees = vote >= 0 ? d[i] > 0 : d[i] < 0
                if agrees {
                    mixed += d[i] * weights[m]
                    divisor += weights[m]
                }
                magnitude += abs(d[i])
            }
            out[i] = base[i] + mixed / max(divisor, 1e-6)
            slack[i] = reorderTolerance * magnitude
        }
        return Result(values: out, slack: slack)
    }

    static func norm(_ x: [Double]) -> Double { x.reduce(0) { $0 + $1 * $1 }.squareRoot() }

    static func dot(_ x: [Double], _ y: [Double]) -> Double {
        var s = 0.0
        for i in x.indices { s += x[i] * y[i] }
        return s
    }

    /// Multi-SLERP on the vectors themselves: unit vectors uᵢ = xᵢ/(‖xᵢ‖ + ε), their
    /// normalized weighted mean m, the weighted tangent components at m mapped back by
    /// the exponential map, scaled by Σ wᵢ‖xᵢ‖ (xᵢ the task vectors given a base).
    static func multislerp(base: [Float]?, models: [[Float]], p: Parameters) -> Result {
        let n = models[0].count, k = models.count
        if k == 1 { return Result(values: models[0], slack: [Float](repeating: 0, count: n)) }
        // Task vectors in Float32, as the models are given.
        var x: [[Double]] = []
        for m in models {
            var v = [Double](repeating: 0, count: n)
            for e in 0..<n { v[e] = Double(base.map { m[e] - $0[e] } ?? m[e]) }
            x.append(v)
        }
        var w = p.weights.map { Double($0) }
        if p.normalizeWeights {
            let total = w.reduce(0, +)
            w = w.map { $0 / total }
        }
        let norms = x.map(norm)
        let units = (0..<k).map { i in x[i].map { norms[i] + p.eps > 0 ? $0 / (norms[i] + p.eps) : 0 } }
        var mean = [Double](repeating: 0, count: n)
        for i in 0..<k { for e in 0..<n { mean[e] += w[i] * units[i][e] } }
        let meanNorm = norm(mean)
        var out = [Float](repeating: 0, count: n), slack = out
        var magnitude = [Double](repeating: 0, count: n)
        if !(meanNorm >= p.eps) {
            precondition(k == 2, "multislerp: the weighted mean vanishes")
            for e in 0..<n {
                let v = x[0][e] * w[0] + x[1][e] * w[1]
                out[e] = Float(v + Double(base?[e] ?? 0))
                slack[e] = reorderTolerance * Float(abs(x[0][e] * w[0]) + abs(x[1][e] * w[1]) + Double(abs(base?[e] ?? 0)))
            }
            return Result(values: out, slack: slack)
        }
        mean = mean.map { $0 / meanNorm }
        var tangent = [Double](repeating: 0, count: n)
        for i in 0..<k {
            let d = dot(units[i], mean)
            for e in 0..<n { tangent[e] += w[i] * (units[i][e] - d * mean[e]) }
        }
        let tangentNorm = norm(tangent) + p.eps
        var average = 0.0
        for i in 0..<k { average += norms[i] * w[i] }
        for i in 0..<k {
            for e in 0..<n { magnitude[e] += abs(w[i] * x[i][e]) * abs(average) / (norms[i] + p.eps) / meanNorm }
        }
        for e in 0..<n {
            let v = (mean[e] * cos(tangentNorm) + tangent[e] * sin(tangentNorm) / tangentNorm) * average
            out[e] = Float(v + Double(base?[e] ?? 0))
            slack[e] = reorderTolerance * Float(magnitude[e] + abs(v) + Double(abs(base?[e] ?? 0)))
        }
        return Result(values: out, slack: slack)
    }

    /// The Karcher mean on the vectors themselves, each input weighted 1/N: unit vectors
    /// of the inputs longer than `tolerance`, their normalized mean moved along the
    /// weighted log maps (inputs within `tolerance` of it, or opposite it, left out)
    /// until the step is below `tolerance` or after `maxIterations`, times the mean norm.
    static func karcher(_ inputs: [[Float]], maxIterations: Int, tolerance tol: Double) -> Result {
        let n = inputs[0].count, k = inputs.count
        if k == 1 { return Result(values: inputs[0], slack: [Float](repeating: 0, count: n)) }
        let x: [[Double]] = inputs.map { $0.map(Double.init) }
        let norms = x.map(norm)
        let units = (0..<k).map { i in x[i].map { norms[i] == 0 ? 0 : $0 / norms[i] } }
        let valid = (0..<k).filter { norms[$0] > tol }
        guard let first = valid.first else {
            return Result(values: [Float](repeating: 0, count: n), slack: [Float](repeating: 0, count: n))
        }
        let beta = 1 / Double(valid.count)
        var mean = [Double](repeating: 0, count: n)
        for i in valid { for e in 0..<n { mean[e] += beta * units[i][e] } }
        let meanNorm = norm(mean)
        mean = meanNorm < tol ? units[first] : mean.map { $0 / meanNorm }
        for _ in 0..<maxIterations {
            var tangent = [Double](repeating: 0, count: n)
            for i in valid {
                let d = min(max(dot(mean, units[i]), -1), 1)
                let theta = acos(d)
                if theta < tol || sin(theta) < 1e-7 { continue }
                for e in 0..<n { tangent[e] += beta * theta / sin(theta) * (units[i][e] - d * mean[e]) }
            }
            let tangentNorm = norm(tangent)
            if tangentNorm < tol { break }
            mean = (0..<n).map { cos(tangentNorm) * mean[$0] + sin(tangentNorm) * tangent[$0] / tangentNorm }
            let unitNorm = norm(mean)
            if unitNorm > tol { mean = mean.map { $0 / unitNorm } }
        }
        let scale = norms.reduce(0, +) / Double(k)
        var out = [Float](repeating: 0, count: n), slack = out
        for e in 0..<n {
            out[e] = Float(scale * mean[e])
            var magnitude = abs(scale * mean[e])
            for i in 0..<k { magnitude += scale * abs(units[i][e]) }
            // An engine may stop one step earlier or later: m moves by less than `tol`.
            slack[e] = reorderTolerance * Float(magnitude) + Float(scale * tol)
        }
        return Result(values: out, slack: slack)
    }

    /// NearSwap: θ₀ moves to θ₁ by w = clamp(t / max(|θ₀ − θ₁|, 10⁻⁶), 0, 1), the
    /// quotient taken as the reciprocal times t.
    static func nearswap(_ a: [Float], _ b: [Float], t: Float) -> [Float] {
        a.indices.map { i in
            let w = min(max((1 / max(abs(a[i] - b[i]), 1e-6)) * t, 0), 1)
            return w * b[i] + (1 - w) * a[i]
        }
    }

    /// Arcee Fusion: importance |θ₁ − θ₀| · KL(softmax(θ₁) + 10⁻⁸ ‖ softmax(θ₀) + 10⁻⁸)
    /// per row of `row` entries (in Float64); θ₁ − θ₀ is added to θ₀ where the
    /// importance reaches median + 1.5·(Q3 − Q1), quantiles from the sorted importances
    /// at index ⌊q·(n − 1)⌋.
    static func arceeFusion(_ base: [Float], _ model: [Float], row: Int) -> [Float] {
        let n = base.count
        guard n > 0 else { return [] }
        var importance = [Float](repeating: 0, count: n)
        for start in stride(from: 0, to: n, by: row) {
            let span = start..<min(n, start + row)
            let mx = span.map { Double(model[$0]) }.max()!, mb = span.map { Double(base[$0]) }.max()!
            var sx = 0.0, sb = 0.0
            for i in span {
                sx += exp(Double(model[i]) - mx)
                sb += exp(Double(base[i]) - mb)
            }
            var kl = 0.0
            for i in span {
                let p = exp(Double(model[i]) - mx) / sx + 1e-8
                let q = exp(Double(base[i]) - mb) / sb + 1e-8
                kl += p * log(p / q)
            }
            for i in span { importance[i] = abs(model[i] - base[i]) * Float(kl) }
        }
        let sorted = importance.sorted()
        let q = [Float(0.25), 0.5, 0.75].map { sorted[Int(($0 * Float(n - 1)).rounded(.towardZero))] }
        let threshold = q[1] + 1.5 * (q[2] - q[0])
        return (0..<n).map { base[$0] + (model[$0] - base[$0]) * (importance[$0] >= threshold ? 1 : 0) }
    }

    /// RAM: an entry is changed by model i when |δᵢ| > ε; changed by one model it takes
    /// that δ (times λᵢ for RAM+), by several their mean. RAM+'s
    /// λᵢ = 1 + r·min(max(ρᵢ, 0), α), ρᵢ = model i's entries changed with others over
    /// those it alone changed (at least ε).
    static func ram(_ base: [Float], _ models: [[Float]], epsilon: Float, r: Float, alpha: Float, plus: Bool) -> [Float] {
        let n = base.count
        let deltas = models.map { x in (0..<n).map { x[$0] - base[$0] } }
        let changed = (0..<n).map { i in deltas.filter { abs($0[i]) > epsilon }.count }
        let scales = deltas.map { d -> Float in
            guard plus else { return 1 }
            let shared = (0..<n).filter { abs(d[$0]) > epsilon && changed[$0] > 1 }.count
            let unique = (0..<n).filter { abs(d[$0]) > epsilon && changed[$0] == 1 }.count
            let rho = Float(shared) / max(Float(unique), epsilon)
            return 1 + r * min(max(rho, 0), alpha)
        }
        return (0..<n).map { i in
            var merged: Float = 0
            for (m, d) in deltas.enumerated() where abs(d[i]) > epsilon {
                merged += changed[i] == 1 ? d[i] * scales[m] : d[i] / Float(changed[i])
            }
            return base[i] + merged
        }
    }
}
