/// A counter-based random source: the value for element `index` of a stream is a
/// pure function of (seed, tensor name, model, index), so a random mask is the
/// same whatever order or thread computes it.
///
/// The stream key mixes the seed with a 64-bit FNV-1a hash of the tensor name and
/// the model's position; each draw is the SplitMix64 finalizer applied to
/// `key + index · γ` (γ = 2⁶⁴/φ), which passes standard statistical batteries for
/// sequential counters.
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

    /// 64 random bits for element `index`.
    @inline(__always)
    public func bits(_ index: Int) -> UInt64 {
        CounterRandom.mix(key &+ UInt64(truncatingIfNeeded: index) &* 0x9e37_79b9_7f4a_7c15)
    }

    /// A uniform Float in [0, 1) for element `index` (24 random bits, exact in Float).
    @inline(__always)
    public func uniform(_ index: Int) -> Float {
        Float(UInt32(truncatingIfNeeded: bits(index) &>> 40)) * 0x1p-24
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
