import Checkpoints

/// Whether merged Float32 values fit the output's element type: a value that would
/// be written as ±Inf (or is NaN) is refused rather than stored.
enum OutputRange {
    /// What a scan of merged values found.
    enum Finding: Equatable {
        /// Every value is finite and rounds to a finite value of the type.
        case fits
        /// Some values are NaN or infinite already in Float32 (and none is merely too large).
        case nonFinite
        /// Some finite value rounds to infinity in the output type.
        case tooLarge
    }

    /// The smallest Float32 magnitude (as bits) that rounds to infinity in `dtype`
    /// under round-to-nearest-even; Float32's own infinity for the other types.
    static func overflowBits(for dtype: DType) -> UInt32 {
        switch dtype {
        case .f16: return 0x477f_f000  // 65520: halfway between 65504 and 65536
        case .bf16: return 0x7f7f_8000  // halfway between BF16's largest finite value and 2^128
        default: return 0x7f80_0000
        }
    }

    /// Scans `values`: one max-reduction over the magnitudes (the common case ends
    /// there), and only when it reaches the limit a second pass telling a too-large
    /// finite value from NaN or infinity.
    static func scan(_ values: UnsafeBufferPointer<Float>, as dtype: DType) -> Finding {
        let limit = overflowBits(for: dtype)
        if largestMagnitudeBits(values) < limit { return .fits }
        var largestFinite: UInt32 = 0
        for v in values {
            let magnitude = v.bitPattern & 0x7fff_ffff
            if magnitude < 0x7f80_0000 { largestFinite = max(largestFinite, magnitude) }
        }
        return largestFinite >= limit ? .tooLarge : .nonFinite
    }

    /// The largest `bitPattern & 0x7fff_ffff` of `values` (0 when empty), eight lanes
    /// at a time. Stays in bounds: vector loads start at multiples of 8 below
    /// `values.count / 8 * 8`, so each reads 8 elements that exist; the tail is read
    /// through the buffer's own checked subscript.
    static func largestMagnitudeBits(_ values: UnsafeBufferPointer<Float>) -> UInt32 {
        let whole = values.count / 8 * 8
        var lanes = SIMD8<UInt32>()
        if let start = values.baseAddress, whole > 0 {
            let raw = UnsafeRawPointer(start)
            let magnitude = SIMD8<UInt32>(repeating: 0x7fff_ffff)
            for i in stride(from: 0, to: whole, by: 8) {
                let bits = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self) & magnitude
                lanes = pointwiseMax(lanes, bits)
            }
        }
        var largest = lanes.max()
        for i in whole..<values.count { largest = max(largest, values[i].bitPattern & 0x7fff_ffff) }
        return largest
    }
}
