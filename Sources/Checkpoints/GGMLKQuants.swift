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
/// Bounds: the source holds `blocks × blockBytes` bytes, the destination
/// `blocks × 256` elements (or the reverse for encoders).
enum GGMLKQuants {
    static let superBlock = 256
    /// ggml's GROUP_MAX_EPS: groups below this magnitude are all zero.
    static let groupMaxEpsilon: Float = 1e-15

    // MARK: Decoders

    static func decodeQ2_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, blocks: Int) {
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

    static func decodeQ3_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, blocks: Int) {
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
                        let group = groupScale + (h * 128 + s * 32) / 16
                        for l in 0..<32 {
                            let low = Int32((q[l] >> shift) & 3)
                            // A clear high bit means the quant is offset by −4.
                            let value = low - (((hmask[l] >> maskShift) & 1) == 0 ? 4 : 0)
                            o[l] = group[l / 16] * Float(value)
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

    static func decodeQ4_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, blocks: Int) {
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

    static func decodeQ5_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, blocks: Int) {
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

    static func decodeQ6_K(_ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, blocks: Int) {
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

    // MARK: Q4_K encoder (quantize_row_q4_K_ref)

    static func encodeQ4_K(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, blocks: Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 32) { scratch in
            let levels = scratch.baseAddress!
            let aux = levels + 256
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 8 + 8) { floats in
                let weights = floats.baseAddress!
                let scales = weights + 32
                let mins = scales + 8
                for b in 0..<blocks {
                    encodeQ4_KBlock(src + b * 256, dst + b * 144, levels, aux, weights, scales, mins)
                }
            }
        }
    }

    @inline(__always)
    private static func encodeQ4_KBlock(
        _ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer, _ levels: UnsafeMutablePointer<UInt8>,
        _ aux: UnsafeMutablePointer<UInt8>, _ weights: UnsafeMutablePointer<Float>,
        _ scales: UnsafeMutablePointer<Float>, _ mins: UnsafeMutablePointer<Float>
    ) {
        var maxScale: Float = 0
        var maxMin: Float = 0
        for j in 0..<8 {
            let xj = x + 32 * j
            var sumX2: Float = 0
            for l in 0..<32 { sumX2 += xj[l] * xj[l] }
            let avX = (sumX2 / 32).squareRoot()
            for l in 0..<32 { weights[l] = avX + abs(xj[l]) }
            var theMin: Float = 0
            scales[j] = fitAffine(
                32, maxLevel: 15, xj, weights, levels + 32 * j, &theMin, aux, rmin: -1, rdelta: 0.1, steps: 20)
            mins[j] = theMin
            if scales[j] > maxScale { maxScale = scales[j] }
            if theMin > maxMin { maxMin = theMin }
        }
        let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
        let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
        let packed = (block + 4).assumingMemoryBound(to: UInt8.self)
        for j in 0..<12 { packed[j] = 0 }
        for j in 0..<8 {
            let ls = min(63, UInt8(truncatingIfNeeded: GGMLQuants.nearestInt(invScale * scales[j])))
            let lm = min(63, UInt8(truncatingIfNeeded: GGMLQuants.nearestInt(invMin * mins[j])))
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

    /// ggml's `make_qkx2_quants` (squared error): fits x ≈ scale·L − min with
    /// L in 0...maxLevel, trying `steps + 1` candidate scales around the first
    /// guess and keeping the weighted least-squares fit with the lowest error.
    /// Returns the scale; `theMin` receives the (non-negative) min.
    private static func fitAffine(
        _ n: Int, maxLevel nmax: Int32, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>,
        _ levels: UnsafeMutablePointer<UInt8>, _ theMin: inout Float, _ aux: UnsafeMutablePointer<UInt8>,
        rmin: Float, rdelta: Float, steps: Int
    ) -> Float {
        var lo = x[0]
        var hi = x[0]
        var sumW = weights[0]
        var sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < lo { lo = x[i] }
            if x[i] > hi { hi = x[i] }
            let w = weights[i]
            sumW += w
            sumX += w * x[i]
        }
        if lo > 0 { lo = 0 }
        if hi == lo {
            for i in 0..<n { levels[i] = 0 }
            theMin = -lo
            return 0
        }
        let maxLevel = Float(nmax)
        var iscale = maxLevel / (hi - lo)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = GGMLQuants.nearestInt(iscale * (x[i] - lo))
            levels[i] = UInt8(truncatingIfNeeded: max(0, min(nmax, l)))
            var diff = scale * Float(levels[i]) + lo - x[i]
            diff = diff * diff
            bestError += weights[i] * diff
        }
        for step in 0...steps {
            iscale = (rmin + rdelta * Float(step) + maxLevel) / (hi - lo)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = max(0, min(nmax, GGMLQuants.nearestInt(iscale * (x[i] - lo))))
                aux[i] = UInt8(truncatingIfNeeded: l)
                let w = weights[i]
                let fl = Float(l)
                sumL += w * fl
                sumL2 += w * fl * fl
                sumXL += w * fl * x[i]
            }
            let det = sumW * sumL2 - sumL * sumL
            if det > 0 {
                var thisScale = (sumW * sumXL - sumX * sumL) / det
                var thisMin = (sumL2 * sumX - sumL * sumXL) / det
                if thisMin > 0 {
                    thisMin = 0
                    thisScale = sumXL / sumL2
                }
                var error: Float = 0
                for i in 0..<n {
                    var diff = thisScale * Float(aux[i]) + thisMin - x[i]
                    diff = diff * diff
                    error += weights[i] * diff
                }
                if error < bestError {
                    for i in 0..<n { levels[i] = aux[i] }
                    bestError = error
                    scale = thisScale
                    lo = thisMin
                }
            }
        }
        theMin = -lo
        return scale
    }

    // MARK: Q6_K encoder (quantize_row_q6_K_ref)

    static func encodeQ6_K(_ src: UnsafePointer<Float>, _ dst: UnsafeMutableRawPointer, blocks: Int) {
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { scratch in
            let levels = scratch.baseAddress!
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { floats in
                let scales = floats.baseAddress!
                for b in 0..<blocks { encodeQ6_KBlock(src + b * 256, dst + b * 210, levels, scales) }
            }
        }
    }

    @inline(__always)
    private static func encodeQ6_KBlock(
        _ x: UnsafePointer<Float>, _ block: UnsafeMutableRawPointer, _ levels: UnsafeMutablePointer<Int8>,
        _ scales: UnsafeMutablePointer<Float>
    ) {
        var maxScale: Float = 0
        var maxAbsScale: Float = 0
        for g in 0..<16 {
            let scale = fitSymmetric(16, maxLevel: 32, x + 16 * g, levels + 16 * g)
            scales[g] = scale
            if abs(scale) > maxAbsScale {
                maxAbsScale = abs(scale)
                maxScale = scale
            }
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
                levels[16 * g + i] = Int8(truncatingIfNeeded: max(-32, min(31, l)) + 32)
            }
        }
        let ql = block.assumingMemoryBound(to: UInt8.self)
        let qh = (block + 128).assumingMemoryBound(to: UInt8.self)
        let L = UnsafeRawPointer(levels).assumingMemoryBound(to: UInt8.self)
        for h in 0..<2 {
            let base = h * 128
            for l in 0..<32 {
                let q1 = L[base + l], q2 = L[base + l + 32], q3 = L[base + l + 64], q4 = L[base + l + 96]
                ql[h * 64 + l] = (q1 & 0xf) | (q3 & 0xf) << 4
                ql[h * 64 + l + 32] = (q2 & 0xf) | (q4 & 0xf) << 4
                qh[h * 32 + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6
            }
        }
    }

    /// ggml's `make_qx_quants` with rmse_type 1 (weights x²): fits x ≈ scale·(L − nmax)
    /// with L in 0..<2·nmax, trying 18 scales around −nmax/max and keeping the one
    /// with the best weighted least-squares score. Returns the scale.
    private static func fitSymmetric(
        _ n: Int, maxLevel nmax: Int32, _ x: UnsafePointer<Float>, _ levels: UnsafeMutablePointer<Int8>
    ) -> Float {
        var extreme: Float = 0
        var amax: Float = 0
        for i in 0..<n where abs(x[i]) > amax {
            amax = abs(x[i])
            extreme = x[i]
        }
        if amax < groupMaxEpsilon {
            for i in 0..<n { levels[i] = 0 }
            return 0
        }
        let maxLevel = Float(nmax)
        var iscale = -maxLevel / extreme
        var sumLX: Float = 0
        var sumL2: Float = 0
        for i in 0..<n {
            let l = max(-nmax, min(nmax - 1, GGMLQuants.nearestInt(iscale * x[i])))
            levels[i] = Int8(truncatingIfNeeded: l + nmax)
            let w = x[i] * x[i]
            let fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = -(maxLevel + 0.1 * Float(step)) / extreme
            sumLX = 0
            sumL2 = 0
            for i in 0..<n {
                let l = max(-nmax, min(nmax - 1, GGMLQuants.nearestInt(iscale * x[i])))
                let w = x[i] * x[i]
                let fl = Float(l)
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n {
                    let l = max(-nmax, min(nmax - 1, GGMLQuants.nearestInt(iscale * x[i])))
                    levels[i] = Int8(truncatingIfNeeded: l + nmax)
                }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }
}
