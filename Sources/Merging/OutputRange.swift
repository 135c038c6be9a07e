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

    /// Scans `values` once: the largest finite magnitude against the type's limit, and
    /// whether any value is NaN or infinite.
    static func scan(_ values: UnsafeBufferPointer<Float>, as dtype: DType) -> Finding {
        let limit = overflowBits(for: dtype)
        var largestFinite: UInt32 = 0
        var special: UInt32 = 0
        for v in values {
            let magnitude = v.bitPattern & 0x7fff_ffff
            let isSpecial: UInt32 = magnitude >= 0x7f80_0000 ? 1 : 0
            special |= isSpecial
            largestFinite = max(largestFinite, isSpecial == 1 ? 0 : magnitude)
        }
        if largestFinite >= limit { return .tooLarge }
        return special != 0 ? .nonFinite : .fits
    }
}
