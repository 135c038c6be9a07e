// Longer than the other codec files: the five K formats share one super-block scheme
// and their scale packing, so their decoders and encoders stay together.
/// ggml's 256-element "K" super-block formats.
///
/// Decoding (Q2_K … Q6_K) reproduces `gguf.quants.dequantize` operation for
/// operation; encoding (Q4_K, Q6_K) follows ggml's reference quantizers
/// `quantize_row_q4_K_ref` / `quantize_row_q6_K_ref` (the deterministic ones,
/// without importance weights), keeping their order of Float32 operations so the
/// bytes match. Layouts (little-endian; d, dmin are IEEE halves):
///
/// | type | bytes | layout |
/// |---|---|---|
/// | Q2_K | 84 | 16 scale bytes (low nibble scale, high nibble min), 64 bytes of 2-bit quants, d, dmin |
/// | Q3_K | 110 | 32 bytes high-bit mask, 64 bytes of 2-bit quants, 12 bytes of 6-bit scales, d |
/// | Q4_K | 144 | d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles |
/// | Q5_K | 176 | d, dmin, 12 bytes of 6-bit scales and mins, 32 bytes of fifth bits, 128 bytes of nibbles |
/// | Q6_K | 210 | 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, d |
///
/// Bounds: the float side holds `blocks × 256` elements and the stored side exactly
/// `blocks × blockBytes` bytes, checked once at each kernel's entry by
/// `GGMLQuants.decoding` / `encoding`. The per-block helpers index one block
/// (and fixed-size scratch) at constant offsets below the block size.
enum GGMLKQuants {
    static let superBlock = 256
    /// ggml's GROUP_MAX_EPS: groups below this magnitude are all zero.
    static let groupMaxEpsilon: Float = 1e-15

    // MARK: Decoders

    static func decodeQ2_K(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = GGMLQuants.decoding(source, destination, blockElements: 256, blockBytes: 84)
        else { return }
        for b in 0..<blocks {
            let block = src + b * 84
            let scales = block.assumingMemoryBound(to: UInt8.self)
            let qs = (block + 16).assumingMemoryBound(to: UInt8.self)
            let d = GGMLQuants.loadHalf(block, 80)
            let dmin = GGMLQuants.loadHalf(block, 82)
            let out = dst + b * 256
            for h in 0..<2 {
                for s in 0..<4 {
                    for half in 0..<2 {
                        let sc = scales[h * 8 + s * 2 + half]
                        let dl = d * Float(sc & 0xf)
                        let ml = dmin * Float(sc >> 4)
                        let o = out + h * 128 + s * 32 + half * 16
                        let q = qs + h * 32 + half * 16
                        for l in 0..<16 { o[l] = dl * Float((q[l] >> UInt8(2 * s)) & 3) - ml }
                    }
                }
            }
        }
    }

    static func decodeQ3_K(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = GGMLQuants.decoding(source, destination, blockElements: 256, blockBytes: 110)
        else { return }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { scratch in
            let groupScale = scratch.baseAddress!
            for b in 0..<blocks {
                let block = src + b * 110
                let hmask = block.assumingMemoryBound(to: UInt8.self)
                let qs = (block + 32).assumingMemoryBound(to: UInt8.self)
                let packed = (block + 96).assumingMemoryBound(to: UInt8.self)
                let d = GGMLQuants.loadHalf(block, 108)
                // Sixteen 6-bit signed scales: low nibbles from bytes 0–7, high pairs from bytes 8–11.
                for g in 0..<16 {
                    let low = (packed[g % 8] >> UInt8(4 * (g / 8))) & 0xf
                    let high = (packed[8 + g % 4] >> UInt8(2 * (g / 4))) & 3
                    groupScale[g] = d * Float(Int32(low | high << 4) - 32)
                }
                let out = dst + b * 256
                for h in 0..<2 {
                    for s in 0..<4 {
                        let shift = UInt8(2 * s)
                        let maskShift = UInt8(h * 4 + s)
                        let o = out + h * 128 + s * 32
                        let q = qs + h * 32
                        for half in 0..<2 {
                            let dl = groupScale[(h * 128 + s * 32) / 16 + half]
                            for l in (16 * half)..<(16 * half + 16) {
                                let low = Int32((q[l] >> shift) & 3)
                                // A clear high bit means the quant is offset by −4.
                                let high = Int32((hmask[l] >> maskShift) & 1)
                                o[l] = dl * Float(low - 4 + 4 * high)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Scale and min number `j` (0..<8) of a Q4_K / Q5_K block's 12 packed bytes.
    @inline(__always)
    static func scaleMin(_ j: Int, _ q: UnsafePointer<UInt8>) -> (scale: UInt8, min: UInt8) {
        if j < 4 { return (q[j] & 63, q[j + 4] & 63) }
        return ((q[j + 4] & 0xf) | (q[j - 4] >> 6) << 4, (q[j + 4] >> 4) | (q[j] >> 6) << 4)
    }

    static func decodeQ4_K(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = GGMLQuants.decoding(source, destination, blockElements: 256, blockBytes: 144)
        else { return }
        for b in 0..<blocks {
            let block = src + b * 144
            let d = GGMLQuants.loadHalf(block, 0)
            let dmin = GGMLQuants.loadHalf(block, 2)
            let packed = (block + 4).assumingMemoryBound(to: UInt8.self)
            let qs = (block + 16).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 256
            for c in 0..<4 {
                let (sc1, m1) = scaleMin(2 * c, packed)
                let (sc2, m2) = scaleMin(2 * c + 1, packed)
                let d1 = d * Float(sc1), dm1 = dmin * Float(m1)
                let d2 = d * Float(sc2), dm2 = dmin * Float(m2)
                let q = qs + c * 32
                let o = out + c * 64
                for l in 0..<32 { o[l] = d1 * Float(q[l] & 0xf) - dm1 }
                for l in 0..<32 { o[32 + l] = d2 * Float(q[l] >> 4) - dm2 }
            }
        }
    }

    static func decodeQ5_K(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = GGMLQuants.decoding(source, destination, blockElements: 256, blockBytes: 176)
        else { return }
        for b in 0..<blocks {
            let block = src + b * 176
            let d = GGMLQuants.loadHalf(block, 0)
            let dmin = GGMLQuants.loadHalf(block, 2)
            let packed = (block + 4).assumingMemoryBound(to: UInt8.self)
            let qh = (block + 16).assumingMemoryBound(to: UInt8.self)
            let qs = (block + 48).assumingMemoryBound(to: UInt8.self)
            let out = dst + b * 256
            for c in 0..<4 {
                let (sc1, m1) = scaleMin(2 * c, packed)
                let (sc2, m2) = scaleMin(2 * c + 1, packed)
                let d1 = d * Float(sc1), dm1 = dmin * Float(m1)
                let d2 = d * Float(sc2), dm2 = dmin * Float(m2)
                let q = qs + c * 32
                let o = out + c * 64
                let lowBit = UInt8(2 * c), highBit = UInt8(2 * c + 1)
                for l in 0..<32 { o[l] = d1 * Float((q[l] & 0xf) | ((qh[l] >> lowBit) & 1) << 4) - dm1 }
                for l in 0..<32 { o[32 + l] = d2 * Float((q[l] >> 4) | ((qh[l] >> highBit) & 1) << 4) - dm2 }
            }
        }
    }

    static func decodeQ6_K(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, dst, blocks) = GGMLQuants.decoding(source, destination, blockElements: 256, blockBytes: 210)
        else { return }
        for b in 0..<blocks {
            let block = src + b * 210
            let ql = block.assumingMemoryBound(to: UInt8.self)
            let qh = (block + 128).assumingMemoryBound(to: UInt8.self)
            let scales = (block + 192).assumingMemoryBound(to: Int8.self)
            let d = GGMLQuants.loadHalf(block, 208)
            let out = dst + b * 256
            for h in 0..<2 {
                for quarter in 0..<4 {
                    let r0 = quarter * 32
                    let low = ql + h * 64 + r0 % 64
                    let lowShift = UInt8(4 * (r0 / 64))
                    let high = qh + h * 32
                    let highShift = UInt8(2 * quarter)
                    let o = out + h * 128 + r0
                    let g = (h * 128 + r0) / 16
                    for half in 0..<2 {
                        let dg = d * Float(scales[g + half])
                        for l in (16 * half)..<(16 * half + 16) {
                            let q = Int32(((low[l] >> lowShift) & 0xf) | ((high[l] >> highShift) & 3) << 4) - 32
                            o[l] = dg * Float(q)
                        }
                    }
                }
            }
        }
    }

    // MARK: Encoders
    //
    // The reference quantizers fit each group of a super-block on its own, with
    // sums accumulated in a fixed order. The groups are independent, so the kernels
    // below run them side by side, one group per SIMD lane: every lane performs the
    // reference's scalar operations in the reference's order, which keeps the bytes
    // identical while using the vector unit.

    /// ggml's `nearest_int` on every lane (see `GGMLQuants.nearestInt`).
    @inline(__always)
    static func nearestInt(_ x: SIMD8<Float>) -> SIMD8<Int32> {
        (unsafeBitCast(x + 12_582_912, to: SIMD8<Int32>.self) & 0x007f_ffff) &- 0x0040_0000
    }

    @inline(__always)
    static func nearestInt(_ x: SIMD16<Float>) -> SIMD16<Int32> {
        (unsafeBitCast(x + 12_582_912, to: SIMD16<Int32>.self) & 0x007f_ffff) &- 0x0040_0000
    }

    /// Float value of small integers (|l| < 2^22) on every lane: placing l in the
    /// mantissa of 1.5 × 2^23 and subtracting it again is exact, and unlike the
    /// generic SIMD conversion it compiles to two vector instructions.
    @inline(__always)
    static func float(_ l: SIMD8<Int32>) -> SIMD8<Float> {
        unsafeBitCast(l &+ 0x4b40_0000, to: SIMD8<Float>.self) - 12_582_912
    }

    @inline(__always)
    static func float(_ l: SIMD16<Int32>) -> SIMD16<Float> {
        unsafeBitCast(l &+ 0x4b40_0000, to: SIMD16<Float>.self) - 12_582_912
    }

    // Lane masks are kept as integer vectors (all ones or zero per lane) and lanes
    // are chosen with bitwise arithmetic: the generic `SIMD.replace(with:where:)`
    // goes lane by lane through memory and would dominate the encoders.

    @inline(__always)
    static func mask(_ m: SIMDMask<SIMD8<Int32>>) -> SIMD8<Int32> { unsafeBitCast(m, to: SIMD8<Int32>.self) }

    @inline(__always)
    static func mask(_ m: SIMDMask<SIMD16<Int32>>) -> SIMD16<Int32> { unsafeBitCast(m, to: SIMD16<Int32>.self) }

    /// `a` in the lanes `m` selects, `b` elsewhere.
    @inline(__always)
    static func select(_ m: SIMD8<Int32>, _ a: SIMD8<Int32>, _ b: SIMD8<Int32>) -> SIMD8<Int32> { (a & m) | (b & ~m) }

    @inline(__always)
    static func select(_ m: SIMD16<Int32>, _ a: SIMD16<Int32>, _ b: SIMD16<Int32>) -> SIMD16<Int32> { (a & m) | (b & ~m) }

    @inline(__always)
    static func select(_ m: SIMD8<Int32>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        let bits = select(m, unsafeBitCast(a, to: SIMD8<Int32>.self), unsafeBitCast(b, to: SIMD8<Int32>.self))
        return unsafeBitCast(bits, to: SIMD8<Float>.self)
    }

    @inline(__always)
    static func select(_ m: SIMD16<Int32>, _ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
        let bits = select(m, unsafeBitCast(a, to: SIMD16<Int32>.self), unsafeBitCast(b, to: SIMD16<Int32>.self))
        return unsafeBitCast(bits, to: SIMD16<Float>.self)
    }

    /// max(lower, min(upper, l)) on every lane, for |l| < 2^30, without comparisons:
    /// `(a − b) >> 31` is all ones exactly when a < b.
    @inline(__always)
    static func clamp(_ l: SIMD8<Int32>, _ lower: SIMD8<Int32>, _ upper: SIMD8<Int32>) -> SIMD8<Int32> {
        let over = l &- upper
        let capped = upper &+ (over & (over &>> 31))
        let under = capped &- lower
        return capped &- (under & (under &>> 31))
    }

    @inline(__always)
    static func clamp(_ l: SIMD16<Int32>, _ lower: SIMD16<Int32>, _ upper: SIMD16<Int32>) -> SIMD16<Int32> {
        let over = l &- upper
        let capped = upper &+ (over & (over &>> 31))
        let under = capped &- lower
        return capped &- (under & (under &>> 31))
    }

    /// C's `fabsf` on every lane: the sign bit cleared.
    @inline(__always)
    static func magnitude(_ x: SIMD8<Float>) -> SIMD8<Float> {
        unsafeBitCast(unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7fff_ffff, to: SIMD8<Float>.self)
    }

    @inline(__always)
    static func magnitude(_ x: SIMD16<Float>) -> SIMD16<Float> {
        unsafeBitCast(unsafeBitCast(x, to: SIMD16<UInt32>.self) & 0x7fff_ffff, to: SIMD16<Float>.self)
    }

    /// Q4_K (`quantize_row_q4_K_ref`): 8 groups of 32, each fitted as x ≈ scale·q − min
    /// with q in 0...15; scales and mins are then quantized to 6 bits against the
    /// super-block's d and dmin, and the quants recomputed with the stored values.
    static func encodeQ4_K(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, blocks) = GGMLQuants.encoding(source, destination, blockElements: 256, blockBytes: 144)
        else { return }
        withUnsafeTemporaryAllocation(of: SIMD8<Float>.self, capacity: 64) { floats in
            withUnsafeTemporaryAllocation(of: SIMD8<Int32>.self, capacity: 64) { ints in
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { levels in
                    let lanes = Q4_KLanes(
                        x: floats.baseAddress!, weights: floats.baseAddress! + 32, levels: ints.baseAddress!,
                        aux: ints.baseAddress! + 32)
                    for b in 0..<blocks {
                        encodeQ4_KBlock(src + b * 256, dst + b * 144, lanes, levels.baseAddress!)
                    }
                }
            }
        }
    }

    /// Per-block scratch of the Q4_K encoder, element i of group g at `[i][g]`.
    private struct Q4_KLanes {
        let x: UnsafeMutablePointer<SIMD8<Float>>
        let weights: UnsafeMutablePointer<SIMD8<Float>>
        let levels: UnsafeMutablePointer<SIMD8<Int32>>
        let aux: UnsafeMutablePointer<SIMD8<Int32>>
    }

    @inline(__always)
    private static func encodeQ4_KBlock(
        _ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer, _ lanes: Q4_KLanes,
        _ levels: UnsafeMutablePointer<UInt8>
    ) {
        let xs = lanes.x, ws = lanes.weights
        var sumX2 = SIMD8<Float>()
        for i in 0..<32 {
            var v = SIMD8<Float>()
            for g in 0..<8 { v[g] = x[32 * g + i] }
            xs[i] = v
            sumX2 += v * v
        }
        let avX = (sumX2 / 32).squareRoot()
        for i in 0..<32 { ws[i] = avX + magnitude(xs[i]) }
        let (scaleLanes, minLanes) = fitAffine(lanes)
        for i in 0..<32 {
            for g in 0..<8 { levels[32 * g + i] = UInt8(truncatingIfNeeded: lanes.levels[i][g]) }
        }

        var maxScale: Float = 0
        var maxMin: Float = 0
        for j in 0..<8 {
            if scaleLanes[j] > maxScale { maxScale = scaleLanes[j] }
            if minLanes[j] > maxMin { maxMin = minLanes[j] }
        }
        let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
        let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
        let packed = (block + 4).assumingMemoryBound(to: UInt8.self)
        for j in 0..<12 { packed[j] = 0 }
        for j in 0..<8 {
            let ls = min(63, UInt8(truncatingIfNeeded: GGMLQuants.nearestInt(invScale * scaleLanes[j])))
            let lm = min(63, UInt8(truncatingIfNeeded: GGMLQuants.nearestInt(invMin * minLanes[j])))
            if j < 4 {
                packed[j] = ls
                packed[j + 4] = lm
            } else {
                packed[j + 4] = (ls & 0xf) | (lm & 0xf) << 4
                packed[j - 4] |= (ls >> 4) << 6
                packed[j] |= (lm >> 4) << 6
            }
        }
        GGMLQuants.storeHalf(maxScale / 63, block, 0)
        GGMLQuants.storeHalf(maxMin / 63, block, 2)
        let d = GGMLQuants.loadHalf(block, 0)
        let dmin = GGMLQuants.loadHalf(block, 2)
        for j in 0..<8 {
            let (sc, m) = scaleMin(j, packed)
            let dj = d * Float(sc)
            if dj == 0 { continue }
            let dmj = dmin * Float(m)
            for i in 0..<32 {
                let l = GGMLQuants.nearestInt((x[32 * j + i] + dmj) / dj)
                levels[32 * j + i] = UInt8(truncatingIfNeeded: max(0, min(15, l)))
            }
        }
        let qs = (block + 16).assumingMemoryBound(to: UInt8.self)
        for c in 0..<4 {
            for l in 0..<32 { qs[c * 32 + l] = levels[c * 64 + l] | levels[c * 64 + 32 + l] << 4 }
        }
    }

    /// ggml's `make_qkx2_quants(32, 15, x, w, L, &min, Laux, -1, 0.1, 20, false)` on 8
    /// groups at once: fits x ≈ scale·L − min with L in 0...15, trying 21 candidate
    /// scales around the first guess and keeping the weighted least-squares fit
    /// with the lowest squared error. Leaves L in `lanes.levels`; returns (scale, min).
    @inline(__always)
    private static func fitAffine(_ lanes: Q4_KLanes) -> (scale: SIMD8<Float>, min: SIMD8<Float>) {
        let xs = lanes.x, ws = lanes.weights, levels = lanes.levels, aux = lanes.aux
        let nmax: Float = 15
        let zero = SIMD8<Int32>(), top = SIMD8<Int32>(repeating: 15)
        var lo = xs[0], hi = xs[0]
        var sumW = ws[0]
        var sumX = sumW * xs[0]
        for i in 1..<32 {
            lo = select(mask(xs[i] .< lo), xs[i], lo)
            hi = select(mask(xs[i] .> hi), xs[i], hi)
            sumW += ws[i]
            sumX += ws[i] * xs[i]
        }
        lo = select(mask(lo .> 0), SIMD8<Float>(), lo)
        let flat = mask(hi .== lo)  // such groups are all zeros: scale 0, L 0
        var iscale = nmax / (hi - lo)
        var scale = 1 / iscale
        var bestError = SIMD8<Float>()
        for i in 0..<32 {
            let l = clamp(nearestInt(iscale * (xs[i] - lo)), zero, top)
            levels[i] = l
            var diff = scale * float(l) + lo - xs[i]
            diff = diff * diff
            bestError += ws[i] * diff
        }
        for step in 0...20 {
            // `lo` moves with each better fit, and later candidates are centred on it, as in ggml.
            iscale = SIMD8<Float>(repeating: -1 + 0.1 * Float(step) + nmax) / (hi - lo)
            var sumL = SIMD8<Float>(), sumL2 = SIMD8<Float>(), sumXL = SIMD8<Float>()
            for i in 0..<32 {
                let l = clamp(nearestInt(iscale * (xs[i] - lo)), zero, top)
                aux[i] = l
                let w = ws[i]
                let fl = float(l)
                sumL += w * fl
                sumL2 += w * fl * fl
                sumXL += w * fl * xs[i]
            }
            let det = sumW * sumL2 - sumL * sumL
            var thisScale = (sumW * sumXL - sumX * sumL) / det
            var thisMin = (sumL2 * sumX - sumL * sumXL) / det
            let noOffset = mask(thisMin .> 0)
            thisMin = select(noOffset, SIMD8<Float>(), thisMin)
            thisScale = select(noOffset, sumXL / sumL2, thisScale)
            var error = SIMD8<Float>()
            for i in 0..<32 {
                var diff = thisScale * float(aux[i]) + thisMin - xs[i]
                diff = diff * diff
                error += ws[i] * diff
            }
            let better = mask(det .> 0) & mask(error .< bestError) & ~flat
            guard better != zero else { continue }
            for i in 0..<32 { levels[i] = select(better, aux[i], levels[i]) }
            bestError = select(better, error, bestError)
            scale = select(better, thisScale, scale)
            lo = select(better, thisMin, lo)
        }
        if flat != zero {
            for i in 0..<32 { levels[i] = select(flat, zero, levels[i]) }
            scale = select(flat, SIMD8<Float>(), scale)
        }
        return (scale, -lo)
    }

    /// Q6_K (`quantize_row_q6_K_ref`): 16 groups of 16, each fitted as x ≈ scale·q with
    /// q in −32...31; the scales are quantized to int8 against the super-block's d
    /// and the quants recomputed with the stored values.
    static func encodeQ6_K(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, blocks) = GGMLQuants.encoding(source, destination, blockElements: 256, blockBytes: 210)
        else { return }
        withUnsafeTemporaryAllocation(of: SIMD16<Float>.self, capacity: 16) { floats in
            withUnsafeTemporaryAllocation(of: SIMD16<Int32>.self, capacity: 32) { ints in
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { levels in
                    for b in 0..<blocks {
                        encodeQ6_KBlock(src + b * 256, dst + b * 210, floats.baseAddress!, ints.baseAddress!,
                                        levels.baseAddress!)
                    }
                }
            }
        }
    }

    @inline(__always)
    private static func encodeQ6_KBlock(
        _ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer, _ xs: UnsafeMutablePointer<SIMD16<Float>>,
        _ laneLevels: UnsafeMutablePointer<SIMD16<Int32>>, _ levels: UnsafeMutablePointer<UInt8>
    ) {
        for i in 0..<16 {
            var v = SIMD16<Float>()
            for g in 0..<16 { v[g] = x[16 * g + i] }
            xs[i] = v
        }
        let scales = fitSymmetric(xs, laneLevels, laneLevels + 16)
        for i in 0..<16 {
            for g in 0..<16 { levels[16 * g + i] = UInt8(truncatingIfNeeded: laneLevels[i][g]) }
        }
        var maxScale: Float = 0
        var maxAbsScale: Float = 0
        for g in 0..<16 where abs(scales[g]) > maxAbsScale {
            maxAbsScale = abs(scales[g])
            maxScale = scales[g]
        }
        if maxAbsScale < groupMaxEpsilon {
            block.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
            return
        }
        let iscale = -128 / maxScale
        GGMLQuants.storeHalf(1 / iscale, block, 208)
        let blockScales = (block + 192).assumingMemoryBound(to: Int8.self)
        for g in 0..<16 {
            blockScales[g] = Int8(truncatingIfNeeded: min(127, GGMLQuants.nearestInt(iscale * scales[g])))
        }
        let d = GGMLQuants.loadHalf(block, 208)
        for g in 0..<16 {
            let dg = d * Float(blockScales[g])
            if dg == 0 { continue }
            for i in 0..<16 {
                let l = GGMLQuants.nearestInt(x[16 * g + i] / dg)
                levels[16 * g + i] = UInt8(truncatingIfNeeded: max(-32, min(31, l)) + 32)
            }
        }
        let ql = block.assumingMemoryBound(to: UInt8.self)
        let qh = (block + 128).assumingMemoryBound(to: UInt8.self)
        for h in 0..<2 {
            let base = h * 128
            for l in 0..<32 {
                let q1 = levels[base + l], q2 = levels[base + l + 32]
                let q3 = levels[base + l + 64], q4 = levels[base + l + 96]
                ql[h * 64 + l] = (q1 & 0xf) | (q3 & 0xf) << 4
                ql[h * 64 + l + 32] = (q2 & 0xf) | (q4 & 0xf) << 4
                qh[h * 32 + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6
            }
        }
    }

    /// ggml's `make_qx_quants(16, 32, x, L, 1, NULL)` (weights x²) on 16 groups at
    /// once: fits x ≈ scale·(L − 32) with L in 0..<64, trying 18 scales around
    /// −32/max and keeping the best weighted least-squares score. Leaves L in
    /// `levels`; returns the scales.
    @inline(__always)
    private static func fitSymmetric(
        _ xs: UnsafeMutablePointer<SIMD16<Float>>, _ levels: UnsafeMutablePointer<SIMD16<Int32>>,
        _ aux: UnsafeMutablePointer<SIMD16<Int32>>
    ) -> SIMD16<Float> {
        let nmax: Float = 32
        let low = SIMD16<Int32>(repeating: -32), high = SIMD16<Int32>(repeating: 31), offset = SIMD16<Int32>(repeating: 32)
        var extreme = SIMD16<Float>()
        var amax = SIMD16<Float>()
        for i in 0..<16 {
            let a = magnitude(xs[i])
            let larger = mask(a .> amax)
            amax = select(larger, a, amax)
            extreme = select(larger, xs[i], extreme)
        }
        let empty = mask(amax .< groupMaxEpsilon)  // such groups are all zeros: scale 0, L 0
        var iscale = -nmax / extreme
        var sumLX = SIMD16<Float>()
        var sumL2 = SIMD16<Float>()
        for i in 0..<16 {
            let l = clamp(nearestInt(iscale * xs[i]), low, high)
            levels[i] = l &+ offset
            let w = xs[i] * xs[i]
            let fl = float(l)
            sumLX += w * xs[i] * fl
            sumL2 += w * fl * fl
        }
        var scale = select(mask(sumL2 .== 0), SIMD16<Float>(), sumLX / sumL2)
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = SIMD16<Float>(repeating: -(nmax + 0.1 * Float(step))) / extreme
            sumLX = SIMD16<Float>()
            sumL2 = SIMD16<Float>()
            for i in 0..<16 {
                let l = clamp(nearestInt(iscale * xs[i]), low, high)
                aux[i] = l
                let w = xs[i] * xs[i]
                let fl = float(l)
                sumLX += w * xs[i] * fl
                sumL2 += w * fl * fl
            }
            let better = mask(sumL2 .> 0) & mask(sumLX * sumLX .> best * sumL2) & ~empty
            guard better != SIMD16<Int32>() else { continue }
            for i in 0..<16 { levels[i] = select(better, aux[i] &+ offset, levels[i]) }
            scale = select(better, sumLX / sumL2, scale)
            best = select(better, scale * sumLX, best)
        }
        if empty != SIMD16<Int32>() {
            for i in 0..<16 { levels[i] = select(empty, SIMD16<Int32>(), levels[i]) }
            scale = select(empty, SIMD16<Float>(), scale)
        }
        return scale
    }
}
