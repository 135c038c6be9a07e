import Checkpoints

/// How the task vector of a quantized fine-tune of an unquantized base is taken.
public enum QuantizedDelta: String, CaseIterable, Sendable {
    /// δ = dequant(ft) − dequant(quant(base)), the base quantized to the fine-tune's own
    /// block type: elements of blocks the fine-tune left unchanged cancel exactly.
    case aware
    /// δ = dequant(ft) − base: the quantization error of every block becomes part of δ.
    case naive

    /// Whether a fine-tune stored as `tuned` over a base stored as `base` takes the
    /// quantization-aware delta: the fine-tune is quantized in a type Claire can
    /// encode and the base is not quantized.
    public func applies(tuned: DType, base: DType) -> Bool {
        self == .aware && tuned.isQuantized && tuned.isEncodable && !base.isQuantized
    }

    /// Elements requantized at a time: a whole number of blocks of every quantized type
    /// (32 or 256 elements), small enough for the stack.
    static let tileElements = 256

    /// Replaces `tuned` (the decoded fine-tune, in place) by `tuned − dequant(quant(base))`,
    /// the base quantized to `dtype` with Claire's encoder.
    /// - Precondition: both buffers hold the same whole number of `dtype` blocks, starting
    ///   on a block, and `dtype` is encodable (so the codec, given whole blocks, cannot fail).
    public static func subtractRequantized(
        _ base: UnsafeBufferPointer<Float>, from tuned: UnsafeMutableBufferPointer<Float>, as dtype: DType
    ) {
        let block = dtype.blockElements
        precondition(tuned.count == base.count && block > 0 && tileElements % block == 0 && tuned.count % block == 0,
                     "\(tuned.count) elements are not whole \(dtype) blocks")
        let tileBytes = tileElements / block * dtype.blockBytes
        withUnsafeTemporaryAllocation(of: Float.self, capacity: tileElements) { requantized in
            withUnsafeTemporaryAllocation(byteCount: tileBytes, alignment: 16) { bytes in
                var start = 0
                while start < tuned.count {
                    // A tile of whole blocks, within both buffers and the temporaries.
                    let count = min(tileElements, tuned.count - start)
                    let byteCount = count / block * dtype.blockBytes
                    let values = UnsafeMutableBufferPointer(rebasing: requantized[0..<count])
                    do {
                        try ElementCodec.encode(dtype, from: UnsafeBufferPointer(rebasing: base[start..<(start + count)]),
                                                into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<byteCount]))
                        try ElementCodec.decode(dtype, from: UnsafeRawBufferPointer(rebasing: bytes[0..<byteCount]), into: values)
                    } catch {
                        preconditionFailure("whole \(dtype) blocks failed to round-trip: \(error)")
                    }
                    for i in 0..<count { tuned[start + i] -= values[i] }
                    start += count
                }
            }
        }
    }
}
