/// A counter-based random source: the value for element `index` of a stream is a
/// pure function of (seed, tensor name, model, index), so a random mask is the
/// same whatever order or thread computes it.
///
/// The stream key mixes the seed with a 64-bit FNV-1a hash of the tensor name and
/// the model's position (SplitMix64's finalizer). Each draw hashes the element index
/// with 32-bit integer operations only (a keyed multiply, then a two-multiply
/// avalanche), so the per-element work vectorizes; indices past 2³² fold their
/// upper half into the key.
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

    /// 32 random bits for element `index`.
    @inline(__always)
    public func bits(_ index: Int) -> UInt32 {
        let (low, high) = keys(block: index)
        return CounterRandom.hash(UInt32(truncatingIfNeeded: index), low, high)
    }

    /// A uniform Float in [0, 1) for element `index` (24 random bits, exact in Float).
    @inline(__always)
    public func uniform(_ index: Int) -> Float {
        CounterRandom.unit(bits(index))
    }

    /// The two 32-bit keys for indices sharing `index`'s upper 32 bits.
    @inline(__always)
    func keys(block index: Int) -> (UInt32, UInt32) {
        let high = UInt32(truncatingIfNeeded: UInt64(bitPattern: Int64(index)) &>> 32)
        return (UInt32(truncatingIfNeeded: key) ^ (high &* 0x85eb_ca6b), UInt32(truncatingIfNeeded: key &>> 32))
    }

    /// The per-element hash: a keyed multiply, then a two-multiply avalanche.
    @inline(__always)
    static func hash(_ counter: UInt32, _ low: UInt32, _ high: UInt32) -> UInt32 {
        var x = ((counter ^ low) &* 0x9e37_79b1) ^ high
        x ^= x &>> 16
        x &*= 0x7feb_352d
        x ^= x &>> 15
        x &*= 0x846c_a68b
        return x ^ (x &>> 16)
    }

    /// The upper 24 bits as a Float in [0, 1).
    @inline(__always)
    static func unit(_ bits: UInt32) -> Float {
        Float(Int32(bitPattern: bits &>> 8)) * 0x1p-24
    }

    /// Keeps each entry of `values` (element indices from `start`) with probability
    /// `density`, multiplying kept entries by `scale` — the DARE kernel, written with
    /// 32-bit counters so it vectorizes.
    public func keepRandomly(_ values: UnsafeMutableBufferPointer<Float>, start: Int, density: Float, scale: Float) {
        var offset = 0
        while offset < values.count {
            let index = start + offset
            let blockEnd = ((index >> 32) + 1) << 32
            let run = min(values.count - offset, blockEnd - index)
            let (low, high) = keys(block: index)
            let first = UInt32(truncatingIfNeeded: index)
            let p = values.baseAddress! + offset
            for i in 0..<run {
                let u = CounterRandom.unit(CounterRandom.hash(first &+ UInt32(truncatingIfNeeded: i), low, high))
                p[i] *= u < density ? scale : 0
            }
            offset += run
        }
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
