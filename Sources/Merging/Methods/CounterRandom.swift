/// A counter-based random source: the value for element `index` of a stream is a
/// pure function of (seed, tensor name, model, index), so a random mask is the
/// same whatever order or thread computes it.
///
/// The stream key mixes the seed with a 64-bit FNV-1a hash of the tensor name and
/// the model's position (SplitMix64's finalizer). Each draw hashes the index of an
/// element pair with 32-bit integer operations only (a keyed multiply, then a
/// two-multiply avalanche), so the work vectorizes; the halves of the hash are the two
/// elements' 16-bit uniforms. Counters past 2³² fold their upper half into the key.
public struct CounterRandom: Sendable, Hashable {
    /// The stream key derived from seed, tensor name and model position.
    public let key: UInt64

    /// The stream for model `model` (0-based) on tensor `tensor`.
    public init(seed: UInt64, tensor: String, model: Int) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in tensor.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        key = CounterRandom.mix(seed ^ CounterRandom.mix(hash &+ UInt64(truncatingIfNeeded: model) &* 0x9e37_79b9_7f4a_7c15))
    }

    /// 16 random bits for element `index`: one 32-bit hash serves a pair of elements
    /// (2i and 2i + 1 take its low and high halves), halving the work per element.
    @inline(__always)
    public func bits(_ index: Int) -> UInt32 {
        let pair = index >> 1
        let (low, high) = keys(block: pair)
        let h = CounterRandom.hash(UInt32(truncatingIfNeeded: pair), low, high)
        return (index & 1 == 0 ? h : h &>> 16) & 0xffff
    }

    /// A uniform Float in [0, 1) for element `index`, in steps of 2⁻¹⁶.
    @inline(__always)
    public func uniform(_ index: Int) -> Float {
        Float(bits(index)) * 0x1p-16
    }

    /// The two 32-bit keys for pair counters sharing `pair`'s upper 32 bits.
    @inline(__always)
    func keys(block pair: Int) -> (UInt32, UInt32) {
        let high = UInt32(truncatingIfNeeded: UInt64(bitPattern: Int64(pair)) &>> 32)
        return (UInt32(truncatingIfNeeded: key) ^ (high &* 0x85eb_ca6b), UInt32(truncatingIfNeeded: key &>> 32))
    }

    /// The per-pair hash: a keyed multiply, then a two-multiply avalanche.
    @inline(__always)
    static func hash(_ counter: UInt32, _ low: UInt32, _ high: UInt32) -> UInt32 {
        var x = ((counter ^ low) &* 0x9e37_79b1) ^ high
        x ^= x &>> 16
        x &*= 0x7feb_352d
        x ^= x &>> 15
        x &*= 0x846c_a68b
        return x ^ (x &>> 16)
    }

    /// Walks `count` elements from `start` the way the draws are made: a lone element
    /// (`single(i, index)`) where the range starts or ends inside a pair, and between,
    /// runs of whole pairs whose counters share their upper 32 bits
    /// (`pairs(i, first counter, pair count, keys)`); `i` is the offset from `start`.
    /// Every offset it hands out, and i + 2·run for a run, stays within `count`.
    @inline(__always)
    func forEachPairRun(start: Int, count: Int, single: (Int, Int) -> Void,
                        pairs: (Int, UInt32, Int, (low: UInt32, high: UInt32)) -> Void) {
        var i = 0
        if start & 1 == 1, count > 0 {
            single(0, start)
            i = 1
        }
        while count - i >= 2 {
            let pair = (start + i) >> 1
            let blockEnd = ((pair >> 32) + 1) << 32
            let run = min((count - i) / 2, blockEnd - pair)
            pairs(i, UInt32(truncatingIfNeeded: pair), run, keys(block: pair))
            i += 2 * run
        }
        if i < count { single(i, start + i) }
    }

    /// Calls `body(i, keep)` for the entries of `count` elements from `start`, where
    /// `keep` is `scale` with probability `density` and 0 otherwise — the DARE mask,
    /// written pair by pair with 32-bit counters so it vectorizes.
    @inline(__always)
    func forEachKeep(start: Int, count: Int, density: Float, scale: Float, _ body: (Int, Float) -> Void) {
        forEachPairRun(start: start, count: count, single: { i, index in
            body(i, uniform(index) < density ? scale : 0)
        }, pairs: { i, first, run, keys in
            for j in 0..<run {
                let h = CounterRandom.hash(first &+ UInt32(truncatingIfNeeded: j), keys.low, keys.high)
                body(i + 2 * j, Float(h & 0xffff) * 0x1p-16 < density ? scale : 0)
                body(i + 2 * j + 1, Float(h &>> 16) * 0x1p-16 < density ? scale : 0)
            }
        })
    }

    /// Keeps each entry of `values` (element indices from `start`) with probability
    /// `density`, multiplying kept entries by `scale` — the DARE kernel.
    /// `forEachKeep` calls its body only with offsets below `values.count`.
    public func keepRandomly(_ values: UnsafeMutableBufferPointer<Float>, start: Int, density: Float, scale: Float) {
        guard let p = values.baseAddress else { return }
        forEachKeep(start: start, count: values.count, density: density, scale: scale) { i, keep in p[i] *= keep }
    }

    /// Records in `keep` (1 kept, 0 dropped) the decisions `keepRandomly` takes for
    /// `count` elements from `start`, so a mask drawn once can be measured
    /// (`L1Norm.of(_:keptBy:)`) and replayed with `applyRecorded`. `keep` holds at
    /// least `count` bytes (the caller checks); the walk writes offsets below `count`
    /// only (a pair run of `run` pairs from offset i ends at i + 2·run ≤ count).
    public func drawMask(start: Int, count: Int, density: Float, into keep: UnsafeMutablePointer<UInt8>) {
        let threshold = CounterRandom.threshold(density)
        forEachPairRun(start: start, count: count, single: { i, index in
            keep[i] = uniform(index) < density ? 1 : 0
        }, pairs: { i, first, run, keys in
            CounterRandom.drawPairs(first: first, pairs: run, keys.low, keys.high, threshold: threshold,
                                    into: UnsafeMutableRawPointer(keep + i))
        })
    }

    /// The number of 16-bit draws b with b·2⁻¹⁶ < `density`: a draw keeps its element
    /// exactly when it is below this.
    static func threshold(_ density: Float) -> UInt32 {
        guard density > 0 else { return 0 }
        return UInt32(min(65536, (density * 65536).rounded(.up)))
    }

    /// Keep bytes for `pairs` element pairs from counter `first`, four pairs per step
    /// in vector lanes; each pair's two bytes are written as one little-endian UInt16.
    /// Writes bytes 0..<2·pairs of `keep`, which the caller sizes.
    static func drawPairs(first: UInt32, pairs: Int, _ low: UInt32, _ high: UInt32, threshold: UInt32,
                          into keep: UnsafeMutableRawPointer) {
        let lowKey = SIMD4<UInt32>(repeating: low), highKey = SIMD4<UInt32>(repeating: high)
        let limit = SIMD4<UInt32>(repeating: threshold)
        let zero = SIMD4<UInt32>(repeating: 0)
        var j = 0
        while j + 4 <= pairs {
            var x = SIMD4<UInt32>(repeating: first &+ UInt32(truncatingIfNeeded: j)) &+ SIMD4<UInt32>(0, 1, 2, 3)
            x = ((x ^ lowKey) &* 0x9e37_79b1) ^ highKey
            x ^= x &>> 16
            x &*= 0x7feb_352d
            x ^= x &>> 15
            x &*= 0x846c_a68b
            x ^= x &>> 16
            let even = zero.replacing(with: 1, where: (x & 0xffff) .< limit)
            let odd = zero.replacing(with: 0x100, where: (x &>> 16) .< limit)
            keep.storeBytes(of: SIMD4<UInt16>(truncatingIfNeeded: even | odd), toByteOffset: 2 * j, as: SIMD4<UInt16>.self)
            j += 4
        }
        while j < pairs {
            let h = hash(first &+ UInt32(truncatingIfNeeded: j), low, high)
            let bytes: UInt16 = (h & 0xffff < threshold ? 1 : 0) | (h &>> 16 < threshold ? 0x100 : 0)
            keep.storeBytes(of: bytes, toByteOffset: 2 * j, as: UInt16.self)
            j += 1
        }
    }

    /// The recorded mask applied to `values`, then the L1 factor and the model weight:
    /// ((x · keep) · factor) · weight — the products `keepRandomly` with scale 1 and the
    /// separate scalings would take, in one pass and bit for bit the same. `keep`
    /// holds at least `values.count` bytes (the caller checks).
    public static func applyRecorded(
        _ values: UnsafeMutableBufferPointer<Float>, keep: UnsafePointer<UInt8>, factor: Float = 1, weight: Float = 1
    ) {
        applyRecorded(Float32Arithmetic.self, values, keep: keep, factor: factor, weight: weight)
    }

    /// `applyRecorded` with the two scalings each rounded by `A` (x · keep is exact).
    static func applyRecorded<A: Arithmetic>(
        _ arithmetic: A.Type, _ values: UnsafeMutableBufferPointer<Float>, keep: UnsafePointer<UInt8>,
        factor: Float, weight: Float
    ) {
        for i in 0..<values.count { values[i] = A.round(A.round(values[i] * Float(keep[i]) * factor) * weight) }
    }

    /// SplitMix64's output function.
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z &>> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z &>> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z &>> 31)
    }
}
