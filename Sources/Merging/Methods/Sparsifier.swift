/// How a task vector is thinned before fusion (one per merge method family).
public enum Sparsifier: String, Sendable, CaseIterable {
    /// TIES trim: keep the k = max(1, ⌊d·n⌋) entries of largest |δ|.
    case magnitude
    /// DARE: keep each entry independently with probability d.
    case random
    /// Breadcrumbs: drop the smallest entries and the top γ·n outliers, keep ⌊d·n⌋.
    case magnitudeOutliers = "magnitude_outliers"
    /// DELLA: per row, keep with a probability that grows with the entry's magnitude rank.
    case dellaMagprune = "della_magprune"

    /// The window of kept ranks, ascending (|δ|, index) order, for `count` entries.
    /// Only for the rank-selecting sparsifiers with 0 < density < 1.
    public func rankWindow(count n: Int, density: Double, gamma: Double) -> Range<Int> {
        switch self {
        case .magnitude:
            let k = min(n, max(1, Int((density * Double(n)).rounded(.down))))
            return (n - k)..<n
        case .magnitudeOutliers:
            let keep = min(n, max(0, Int((density * Double(n)).rounded(.down))))
            let top = max(0, Int((gamma * Double(n)).rounded(.down)))
            let bottom = max(0, n - keep - top)
            return bottom..<(bottom + keep)
        case .random, .dellaMagprune:
            preconditionFailure("\(self) does not select by rank")
        }
    }
}

/// How kept entries are scaled back up after sparsification.
public enum Rescale: String, Sendable, CaseIterable {
    /// Leave kept entries as they are.
    case none
    /// Scale the kept entries so the tensor's L1 norm is unchanged (mergekit's meaning);
    /// skipped when either norm is below 1e-7.
    case l1
    /// Divide each kept entry by its keep probability (the DARE and DELLA papers).
    case inverse
}

/// One model's sparsifier made concrete for one tensor: what the executor applies
/// chunk by chunk.
public enum TensorMask: Sendable, Hashable {
    case keepAll
    case keepNone
    case window(MagnitudeWindow, density: Float)
    case random(density: Float, stream: CounterRandom)
    case della(density: Float, epsilon: Float, stream: CounterRandom)

    /// Applies the mask to `values`, the entries starting at flat index `start` of the
    /// tensor, laid out in rows of `rowLength` (chunks hold whole rows). With
    /// `inverse`, kept entries are divided by their keep probability.
    /// `ties` are the counts of boundary-key entries before this chunk (see
    /// `MagnitudeWindow.apply`); `rowScratch` holds at least `rowLength` slots.
    public func apply(
        to values: UnsafeMutableBufferPointer<Float>, start: Int, rowLength: Int, inverse: Bool,
        ties: ChunkTies = ChunkTies(), rowScratch: UnsafeMutableBufferPointer<UInt64>
    ) {
        switch self {
        case .keepAll:
            return
        case .keepNone:
            values.update(repeating: 0)
        case .window(let window, let density):
            window.apply(to: values, ties: ties)
            if inverse { Self.scale(values, by: 1 / density) }
        case .random(let density, let stream):
            stream.keepRandomly(values, start: start, density: density, scale: inverse ? 1 / density : 1)
        case .della(let density, let epsilon, let stream):
            precondition(rowLength > 0 && rowScratch.count >= min(rowLength, values.count), "row scratch shorter than a row")
            var row = 0
            while row < values.count {
                let m = min(rowLength, values.count - row)
                Self.dellaRow(UnsafeMutableBufferPointer(rebasing: values[row..<(row + m)]), start: start + row,
                              density: density, epsilon: epsilon, stream: stream, inverse: inverse,
                              scratch: rowScratch)
                row += m
            }
        }
    }

    /// Multiplies every entry by `factor` (indices below `values.count`).
    static func scale(_ values: UnsafeMutableBufferPointer<Float>, by factor: Float) {
        for i in 0..<values.count { values[i] *= factor }
    }

    /// DELLA on one row: rank entries by (|δ|, index) ascending, r = 0…m−1; keep with
    /// probability p = (d − ε) + 2ε·r/(m − 1) (p = d for a one-entry row).
    static func dellaRow(
        _ row: UnsafeMutableBufferPointer<Float>, start: Int, density: Float, epsilon: Float, stream: CounterRandom,
        inverse: Bool, scratch: UnsafeMutableBufferPointer<UInt64>
    ) {
        let m = row.count
        // Slots 0..<m of `scratch`; the low 32 bits of each slot are an index below m.
        precondition(scratch.count >= m && m <= Int(UInt32.max), "row scratch shorter than the row")
        for i in 0..<m { scratch[i] = UInt64(magnitudeKey(row[i])) &<< 32 | UInt64(i) }
        var ordered = UnsafeMutableBufferPointer(rebasing: scratch[0..<m])
        ordered.sort()
        let step: Float = m > 1 ? 2 * epsilon / Float(m - 1) : 0
        let first: Float = m > 1 ? density - epsilon : density
        for r in 0..<m {
            let i = Int(truncatingIfNeeded: ordered[r] & 0xffff_ffff)
            let p = first + step * Float(r)
            row[i] = stream.uniform(start + i) < p ? (inverse ? row[i] / p : row[i]) : 0
        }
    }
}

extension Sparsifier {
    /// Sparsifies a whole tensor held in memory — the reference form of what the
    /// streaming executor does chunk by chunk. `rowLength` is the last-axis
    /// product (the whole count for a 1-D tensor); `stream` supplies the random draws.
    public func sparsify(
        _ values: inout [Float], density: Double, gamma: Double = 0.01, epsilon: Double = 0.15,
        rescale: Rescale, stream: CounterRandom, rowLength: Int? = nil
    ) {
        let mask = prepare(values: values, density: density, gamma: gamma, epsilon: epsilon, stream: stream)
        let before = Self.l1(values)
        let m = rowLength ?? max(values.count, 1)
        var scratch = [UInt64](repeating: 0, count: m)
        values.withUnsafeMutableBufferPointer { v in
            scratch.withUnsafeMutableBufferPointer { s in
                mask.apply(to: v, start: 0, rowLength: m, inverse: rescale == .inverse, rowScratch: s)
            }
        }
        if rescale == .l1, mask != .keepAll {
            let factor = Self.l1RescaleFactor(before: before, after: Self.l1(values))
            for i in values.indices { values[i] *= factor }
        }
    }

    /// One model's mask for a tensor at `density`; the rank-selecting sparsifiers keep
    /// the window `window()` gives (nil: not known yet, to be searched).
    func mask(density: Double, epsilon: Double, stream: CounterRandom, window: () -> MagnitudeWindow?) -> TensorMask? {
        guard density < 1 else { return .keepAll }
        if density <= 0 { return .keepNone }
        switch self {
        case .random: return .random(density: Float(density), stream: stream)
        case .dellaMagprune: return .della(density: Float(density), epsilon: Float(epsilon), stream: stream)
        case .magnitude, .magnitudeOutliers: return window().map { .window($0, density: Float(density)) }
        }
    }

    /// The mask for an in-memory tensor (rank search over one chunk).
    func prepare(values: [Float], density: Double, gamma: Double, epsilon: Double, stream: CounterRandom) -> TensorMask {
        mask(density: density, epsilon: epsilon, stream: stream) {
            let window = rankWindow(count: values.count, density: density, gamma: gamma)
            var search = RankSearch(ranks: [window.lowerBound, window.upperBound])
            values.withUnsafeBufferPointer { search.countCoarse($0) }
            search.finishCoarse()
            values.withUnsafeBufferPointer { search.countFine($0) }
            let found = search.boundaries()
            return MagnitudeWindow.ranks(window.lowerBound, window.upperBound, count: values.count) {
                $0 == window.lowerBound ? found[0] : found[1]
            }
        }!
    }

    static func l1(_ values: [Float]) -> Double {
        var sum = 0.0
        for v in values { sum += Double(abs(v)) }
        return sum
    }

    /// The L1 rescale factor: before / after, or 1 when either norm is below 1e-7.
    /// In BF16 (mergekit rescales a BF16 δ in BF16; an F16 one in Float32) both norms
    /// and their quotient are BF16 values, as torch's BF16 `sum` and division give them.
    public static func l1RescaleFactor(before: Double, after: Double, in compute: ComputeType = .f32) -> Float {
        guard compute == .bf16 else { return before < 1e-7 || after < 1e-7 ? 1 : Float(before / after) }
        let b = compute.round(Float(before)), a = compute.round(Float(after))
        return b < 1e-7 || a < 1e-7 ? 1 : compute.round(b / a)
    }
}

/// L1 norms of chunks for the streaming rescale: Float sums in eight fixed lanes over
/// runs of 256 entries, each run added in Double. The order of every addition depends
/// only on the entries, so the sums are the same on any thread count.
public enum L1Norm {
    /// Σ|x|.
    public static func of(_ values: UnsafeBufferPointer<Float>) -> Double {
        guard let v = values.baseAddress else { return 0 }
        return sums(count: values.count, keep: nil, lanes: { magnitudes(v + $0) }, entry: { abs(v[$0]) }).before
    }

    /// (Σ|x|, Σ|x| over the entries whose `keep` byte is 1); `keep` holds at least
    /// `values.count` bytes (the caller checks).
    public static func of(_ values: UnsafeBufferPointer<Float>, keptBy keep: UnsafePointer<UInt8>) -> (before: Double, after: Double) {
        guard let v = values.baseAddress else { return (0, 0) }
        return sums(count: values.count, keep: keep, lanes: { magnitudes(v + $0) }, entry: { abs(v[$0]) })
    }

    /// `of(_:keptBy:)` for δ = x − base of two BF16 tensors, read straight from their
    /// bytes: the same differences in the same order, without decoding into buffers.
    /// `x`, `base` and `keep` each hold at least `count` entries (the caller checks).
    public static func ofDifference(
        bf16 x: UnsafePointer<UInt16>, minus base: UnsafePointer<UInt16>, count: Int, keptBy keep: UnsafePointer<UInt8>
    ) -> (before: Double, after: Double) {
        @inline(__always) func widen(_ p: UnsafePointer<UInt16>) -> SIMD8<Float> {
            let halves = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt16>.self)
            return unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: halves) &<< 16, to: SIMD8<Float>.self)
        }
        return sums(count: count, keep: keep, lanes: { i in
            let delta = widen(x + i) - widen(base + i)
            return unsafeBitCast(unsafeBitCast(delta, to: SIMD8<UInt32>.self) & 0x7fff_ffff, to: SIMD8<Float>.self)
        }, entry: { i in
            abs(Float(bitPattern: UInt32(x[i]) &<< 16) - Float(bitPattern: UInt32(base[i]) &<< 16))
        })
    }

    @inline(__always)
    static func magnitudes(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        let bits = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt32>.self) & 0x7fff_ffff
        return unsafeBitCast(bits, to: SIMD8<Float>.self)
    }

    /// The sums over `count` entries whose magnitudes `lanes` gives eight at a time
    /// and `entry` one at a time: `lanes(i)` is called only with i + 8 ≤ count,
    /// `entry(i)` and `keep[i]` only with i < count.
    @inline(__always)
    static func sums(
        count: Int, keep: UnsafePointer<UInt8>?, lanes: (Int) -> SIMD8<Float>, entry: (Int) -> Float
    ) -> (before: Double, after: Double) {
        var before = 0.0, after = 0.0
        var i = 0
        while i < count {
            let end = min(i + 256, count)
            var runBefore = SIMD8<Float>(), runAfter = SIMD8<Float>()
            while i + 8 <= end {
                let magnitude = lanes(i)
                runBefore += magnitude
                if let keep {
                    let kept = UnsafeRawPointer(keep + i).loadUnaligned(as: SIMD8<UInt8>.self)
                    runAfter += magnitude * SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: kept))
                }
                i += 8
            }
            var b: Float = 0, a: Float = 0
            for lane in 0..<8 {
                b += runBefore[lane]
                a += runAfter[lane]
            }
            while i < end {
                let magnitude = entry(i)
                b += magnitude
                if let keep { a += magnitude * Float(keep[i]) }
                i += 1
            }
            before += Double(b)
            after += Double(a)
        }
        return (before, keep == nil ? before : after)
    }
}
