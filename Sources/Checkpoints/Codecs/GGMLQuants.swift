/// ggml's 32-element block formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1).
///
/// Decoding follows the arithmetic of `gguf.quants.dequantize` operation for
/// operation (scale × quant, then + min, never fused), and encoding follows ggml's
/// reference quantizers (`quantize_row_*_ref`), which `gguf.quants.quantize`
/// reproduces bit for bit. Block layouts (little-endian, `d`/`m` are IEEE halves):
///
/// | type | bytes | layout |
/// |---|---|---|
/// | Q8_0 | 34 | d, 32 × int8 |
/// | Q4_0 | 18 | d, 16 bytes of nibbles (element j low, j + 16 high) |
/// | Q4_1 | 20 | d, m, 16 bytes of nibbles |
/// | Q5_0 | 22 | d, u32 fifth bits (bit j = element j), 16 bytes of nibbles |
/// | Q5_1 | 24 | d, m, u32 fifth bits, 16 bytes of nibbles |
///
/// Every kernel takes whole blocks: the float side holds `blocks × 32` elements and
/// the stored side exactly `blocks × blockBytes` bytes. `wholeBlocks` checks that once
/// at each kernel's entry; inside, a block's pointer is `blocks` strides in at most.
enum GGMLQuants {

    /// The number of whole blocks `elements` floats and `bytes` stored bytes describe.
    /// Traps (in release builds too) unless both sides hold exactly the same whole
    /// blocks, so a wrong caller stops here instead of reading or writing past a buffer.
    @inline(__always)
    static func wholeBlocks(elements: Int, bytes: Int, blockElements: Int, blockBytes: Int) -> Int {
        let blocks = elements / blockElements
        precondition(elements >= 0 && elements == blocks * blockElements && bytes == blocks * blockBytes,
                     "block kernel given \(elements) elements and \(bytes) bytes")
        return blocks
    }

    /// Checked entry of a decoder: whole blocks, source and destination base addresses
    /// (nil when there is no block).
    @inline(__always)
    static func decoding(
        _ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>, blockElements: Int,
        blockBytes: Int
    ) -> (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int)? {
        let blocks = wholeBlocks(elements: destination.count, bytes: source.count, blockElements: blockElements,
                                 blockBytes: blockBytes)
        guard blocks > 0 else { return nil }
        return (source.baseAddress!, destination.baseAddress!, blocks)
    }

    /// Checked entry of an encoder: whole blocks, source and destination base addresses
    /// (nil when there is no block).
    @inline(__always)
    static func encoding(
        _ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer, blockElements: Int,
        blockBytes: Int
    ) -> (UnsafePointer<Float>, UnsafeMutableRawPointer, Int)? {
        let blocks = wholeBlocks(elements: source.count, bytes: destination.count, blockElements: blockElements,
                                 blockBytes: blockBytes)
        guard blocks > 0 else { return nil }
        return (source.baseAddress!, destination.baseAddress!, blocks)
    }

    // MARK: Scalar helpers shared with the K-quant kernels

    /// ggml's `nearest_int`: adding 1.5 × 2^23 leaves round-half-even(x) in the low
    /// mantissa bits for |x| < 2^22. Larger inputs give the same garbage ggml gets,
    /// which the callers clamp.
    @inline(__always)
    static func nearestInt(_ x: Float) -> Int32 {
        let bits = Int32(bitPattern: (x + 12_582_912).bitPattern)
        return (bits & 0x007f_ffff) &- 0x0040_0000
    }

    /// C's `roundf` (half away from zero) for |x| < 2^22, without a library call:
    /// round half to even, then move ties that went toward zero one step away.
    @inline(__always)
    static func roundHalfAway(_ x: Float) -> Int32 {
        let even = nearestInt(x)
        let remainder = x - Float(even)
        let up: Int32 = remainder == 0.5 && x > 0 ? 1 : 0
        let down: Int32 = remainder == -0.5 && x < 0 ? 1 : 0
        return even &+ up &- down
    }

    /// C's `MIN(limit, (int)x)` for the non-negative values the reference quantizers
    /// produce: clamps to `[0, limit]`, then truncates toward zero.
    @inline(__always)
    static func truncate(_ x: Float, clampedTo limit: Float) -> UInt8 {
        var c = x > 0 ? x : 0  // also maps NaN to 0 instead of trapping
        c = c < limit ? c : limit
        return UInt8(truncatingIfNeeded: Int32(c))
    }

    @inline(__always)
    static func loadHalf(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        ElementCodec.halfToFloat(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
    }

    @inline(__always)
    static func storeHalf(_ x: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
        p.storeBytes(of: ElementCodec.floatToHalf(x).littleEndian, toByteOffset: offset, as: UInt16.self)
    }

    // MARK: Q8_0

    static func decodeQ8_0(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = decoding(source, destination, blockElements: 32, blockBytes: 34) else { return }
        for b in 0..<blocks {
            let block = src + b * 34
            let d = loadHalf(block, 0)
            let q = (block + 2).assumingMemoryBound(to: Int8.self)
            let out = dst + b * 32
            for i in 0..<32 { out[i] = Float(q[i]) * d }
        }
    }

    static func encodeQ8_0(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, blocks) = encoding(source, destination, blockElements: 32, blockBytes: 34) else { return }
        for b in 0..<blocks {
            let x = src + b * 32
            let block = dst + b * 34
            // |x| compared as integers: for non-NaN floats the order of the
            // sign-cleared bit patterns is the order of the magnitudes.
            let bits = UnsafeRawPointer(x).assumingMemoryBound(to: UInt32.self)
            var amaxBits: UInt32 = 0
            for i in 0..<32 { amaxBits = max(amaxBits, bits[i] & 0x7fff_ffff) }
            let d = Float(bitPattern: amaxBits) / 127
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, block, 0)
            let q = (block + 2).assumingMemoryBound(to: Int8.self)
            for i in 0..<32 { q[i] = Int8(truncatingIfNeeded: roundHalfAway(x[i] * id)) }
        }
    }

    // MARK: Q4_0 / Q4_1

    static func decodeQ4_0(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = decoding(source, destination, blockElements: 32, blockBytes: 18) else { return }
        for b in 0..<blocks {
            let block = src + b * 18
            let d = loadHalf(block, 0)
            let qs = (block + 2).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 32
            for j in 0..<16 {
                out[j] = d * Float(Int32(qs[j] & 0xf) - 8)
                out[j + 16] = d * Float(Int32(qs[j] >> 4) - 8)
            }
        }
    }

    static func encodeQ4_0(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, blocks) = encoding(source, destination, blockElements: 32, blockBytes: 18) else { return }
        encodeSymmetric(src, dst, blocks: blocks, blockBytes: 18, levels: 8, fifthBit: false)
    }

    static func decodeQ4_1(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = decoding(source, destination, blockElements: 32, blockBytes: 20) else { return }
        for b in 0..<blocks {
            let block = src + b * 20
            let d = loadHalf(block, 0)
            let m = loadHalf(block, 2)
            let qs = (block + 4).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 32
            for j in 0..<16 {
                out[j] = d * Float(qs[j] & 0xf) + m
                out[j + 16] = d * Float(qs[j] >> 4) + m
            }
        }
    }

    static func encodeQ4_1(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, blocks) = encoding(source, destination, blockElements: 32, blockBytes: 20) else { return }
        encodeAffine(src, dst, blocks: blocks, blockBytes: 20, maxLevel: 15, fifthBit: false)
    }

    // MARK: Q5_0 / Q5_1

    static func decodeQ5_0(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = decoding(source, destination, blockElements: 32, blockBytes: 22) else { return }
        for b in 0..<blocks {
            let block = src + b * 22
            let d = loadHalf(block, 0)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
            let qs = (block + 6).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 32
            for j in 0..<16 {
                let lo = Int32(qs[j] & 0xf) | Int32((qh >> UInt32(j)) & 1) << 4
                let hi = Int32(qs[j] >> 4) | Int32((qh >> UInt32(j + 16)) & 1) << 4
                out[j] = d * Float(lo - 16)
                out[j + 16] = d * Float(hi - 16)
            }
        }
    }

    static func encodeQ5_0(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, blocks) = encoding(source, destination, blockElements: 32, blockBytes: 22) else { return }
        encodeSymmetric(src, dst, blocks: blocks, blockBytes: 22, levels: 16, fifthBit: true)
    }

    static func decodeQ5_1(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = decoding(source, destination, blockElements: 32, blockBytes: 24) else { return }
        for b in 0..<blocks {
            let block = src + b * 24
            let d = loadHalf(block, 0)
            let m = loadHalf(block, 2)
            let qh = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
            let qs = (block + 8).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 32
            for j in 0..<16 {
                let lo = UInt32(qs[j] & 0xf) | ((qh >> UInt32(j)) & 1) << 4
                let hi = UInt32(qs[j] >> 4) | ((qh >> UInt32(j + 16)) & 1) << 4
                out[j] = d * Float(lo) + m
                out[j + 16] = d * Float(hi) + m
            }
        }
    }

    static func encodeQ5_1(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, blocks) = encoding(source, destination, blockElements: 32, blockBytes: 24) else { return }
        encodeAffine(src, dst, blocks: blocks, blockBytes: 24, maxLevel: 31, fifthBit: true)
    }

    // MARK: Shared encoders

    /// Q4_0 / Q5_0: d = (the value of largest magnitude, first one on ties) / −levels,
    /// q = trunc(x / d + levels + ½) capped at 2·levels − 1.
    /// Bound: called only by the encoders above after their checked entry, with `blocks` whole blocks.
    private static func encodeSymmetric(
        _ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, blocks: Int, blockBytes: Int, levels: Float,
        fifthBit: Bool
    ) {
        let maxLevel = 2 * levels - 1
        let offset = levels + 0.5
        for b in 0..<blocks {
            let x = src + b * 32
            let block = dst + b * blockBytes
            var amax: Float = 0
            var extreme: Float = 0
            for i in 0..<32 where amax < abs(x[i]) {
                amax = abs(x[i])
                extreme = x[i]
            }
            let d = extreme / -levels
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, block, 0)
            packQuants(block, quantsAt: fifthBit ? 6 : 2, fifthBitsAt: fifthBit ? 2 : nil) { i in
                truncate(x[i] * id + offset, clampedTo: maxLevel)
            }
        }
    }

    /// Q4_1 / Q5_1: d = (max − min) / maxLevel, m = min, q = trunc((x − min) / d + ½) capped at maxLevel.
    /// Bound: called only by the encoders above after their checked entry, with `blocks` whole blocks.
    private static func encodeAffine(
        _ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, blocks: Int, blockBytes: Int, maxLevel: Float,
        fifthBit: Bool
    ) {
        for b in 0..<blocks {
            let x = src + b * 32
            let block = dst + b * blockBytes
            var lo = Float.greatestFiniteMagnitude
            var hi = -Float.greatestFiniteMagnitude
            for i in 0..<32 {
                if x[i] < lo { lo = x[i] }
                if x[i] > hi { hi = x[i] }
            }
            let d = (hi - lo) / maxLevel
            let id: Float = d != 0 ? 1 / d : 0
            storeHalf(d, block, 0)
            storeHalf(lo, block, 2)
            packQuants(block, quantsAt: fifthBit ? 8 : 4, fifthBitsAt: fifthBit ? 4 : nil) { i in
                truncate((x[i] - lo) * id + 0.5, clampedTo: maxLevel)
            }
        }
    }

    /// Stores 32 quants as nibbles (element j low, j + 16 high) and, for 5-bit
    /// types, their fifth bits as a little-endian u32 (bit j = element j).
    @inline(__always)
    private static func packQuants(
        _ block: UnsafeMutableRawPointer, quantsAt: Int, fifthBitsAt: Int?, _ quant: (Int) -> UInt8
    ) {
        let qs = (block + quantsAt).assumingMemoryBound(to: UInt8.self)
        var qh: UInt32 = 0
        for j in 0..<16 {
            let lo = quant(j)
            let hi = quant(j + 16)
            qs[j] = (lo & 0xf) | (hi & 0xf) << 4
            qh |= UInt32(lo >> 4 & 1) << UInt32(j) | UInt32(hi >> 4 & 1) << UInt32(j + 16)
        }
        if let at = fifthBitsAt { block.storeBytes(of: qh.littleEndian, toByteOffset: at, as: UInt32.self) }
    }
}
