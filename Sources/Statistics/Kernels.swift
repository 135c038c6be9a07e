import Merging

/// Zeros, non-finite entries, Σδ² over the finite ones and the largest finite magnitude
/// key of one delta, in one chunk or summed over a tensor.
struct DeltaMoments {
    var zeros = 0
    var nonFinite = 0
    var sumOfSquares = 0.0
    var maxKey: UInt32 = 0

    mutating func add(_ chunk: DeltaMoments) {
        zeros += chunk.zeros
        nonFinite += chunk.nonFinite
        sumOfSquares += chunk.sumOfSquares
        maxKey = max(maxKey, chunk.maxKey)
    }
}

/// The chunk kernels of a statistics pass. Every pointer argument holds at least
/// `count` elements (the caller's chunk buffers). Vector loads read 8 lanes at `i`
/// only while `i + 8 <= count`; tails go one entry at a time.
enum DeltaKernels {
    /// Lanes of the vector kernels; partial sums are kept in Float for one block
    /// of `block` elements, then added into Double, which bounds the rounding error.
    typealias Lanes = SIMD8<Float>
    typealias Bits = SIMD8<UInt32>
    /// Coarse bins compared as signed lanes (bins are below 2¹⁶, bounds may be −1).
    typealias Signed = SIMD8<Int32>
    static let block = 256

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ i: Int) -> Lanes {
        UnsafeRawPointer(p + i).loadUnaligned(as: Lanes.self)
    }

    @inline(__always)
    static func magnitudeBits(_ v: Lanes) -> Bits {
        unsafeBitCast(v, to: Bits.self) & Bits(repeating: 0x7fff_ffff)
    }

    /// A comparison result as lanes of all ones (true) or zeros. The generic
    /// `replacing(with:where:)` and `pointwiseMin` compile to lane-by-lane loops,
    /// so the kernels select with these masks and bitwise operations instead.
    @inline(__always)
    static func ones(_ mask: SIMDMask<SIMD8<Int32>>) -> Bits { unsafeBitCast(mask, to: Bits.self) }

    @inline(__always)
    static func keep(_ v: Lanes, _ mask: Bits) -> Lanes {
        unsafeBitCast(unsafeBitCast(v, to: Bits.self) & mask, to: Lanes.self)
    }

    /// δ = tuned − base in place over `tuned`.
    static func subtract(_ base: UnsafePointer<Float>, from tuned: UnsafeMutablePointer<Float>, _ count: Int) {
        for i in 0..<count { tuned[i] -= base[i] }
    }

    /// The moments of one chunk of a delta.
    static func measure(_ delta: UnsafePointer<Float>, _ count: Int) -> DeltaMoments {
        // Magnitude patterns are non-negative as Int32: signed lane compares order them.
        let limit = Signed(repeating: Int32(bitPattern: MagnitudeBins.nonFinite))
        var zeros = Bits(), nonFinite = Bits(), high = Signed()
        var squares = 0.0
        var i = 0
        while i + 8 <= count {
            let end = min(count - 8, i + block)
            var partial = Lanes()
            while i <= end {
                let v = load(delta, i)
                let bits = unsafeBitCast(magnitudeBits(v), to: Signed.self)
                let finite = ones(bits .< limit)
                zeros &-= ones(bits .== Signed())
                nonFinite &+= ~finite & Bits(repeating: 1)
                partial += keep(v * v, finite)
                let candidate = bits & unsafeBitCast(finite, to: Signed.self)
                high ^= (high ^ candidate) & unsafeBitCast(ones(candidate .> high), to: Signed.self)
                i += 8
            }
            squares += Double(partial.sum())
        }
        var highBits: UInt32 = 0
        for lane in 0..<8 { highBits = max(highBits, UInt32(high[lane])) }
        var zeroCount = Int(zeros.wrappedSum()), nonFiniteCount = Int(nonFinite.wrappedSum())
        while i < count {
            let d = delta[i]
            let bits = d.bitPattern & 0x7fff_ffff
            if bits == 0 { zeroCount += 1 } else if bits >= MagnitudeBins.nonFinite { nonFiniteCount += 1 } else {
                squares += Double(d) * Double(d)
                highBits = max(highBits, bits)
            }
            i += 1
        }
        return DeltaMoments(zeros: zeroCount, nonFinite: nonFiniteCount, sumOfSquares: squares, maxKey: highBits)
    }

    /// Σ|θ₀| and the number of finite entries.
    static func baseMagnitude(_ base: UnsafePointer<Float>, _ count: Int) -> (sum: Double, finite: Int) {
        let limit = Signed(repeating: Int32(bitPattern: MagnitudeBins.nonFinite))
        var finite = Bits()
        var sum = 0.0
        var i = 0
        while i + 8 <= count {
            let end = min(count - 8, i + block)
            var partial = Lanes()
            while i <= end {
                let bits = magnitudeBits(load(base, i))
                let ok = ones(unsafeBitCast(bits, to: Signed.self) .< limit)
                finite &-= ok
                partial += unsafeBitCast(bits & ok, to: Lanes.self)
                i += 8
            }
            sum += Double(partial.sum())
        }
        var finiteCount = Int(finite.wrappedSum())
        while i < count {
            let bits = base[i].bitPattern & 0x7fff_ffff
            if bits < MagnitudeBins.nonFinite {
                sum += Double(Float(bitPattern: bits))
                finiteCount += 1
            }
            i += 1
        }
        return (sum, finiteCount)
    }

    /// Pair figures on the positions where both deltas are finite.
    static func compare(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int, into pair: inout PairFigures) {
        let limit = Bits(repeating: MagnitudeBins.nonFinite), sign = Bits(repeating: 0x8000_0000)
        var positions = Bits(), both = Bits(), agree = Bits()
        var dot = 0.0, squaresA = 0.0, squaresB = 0.0
        var i = 0
        while i + 8 <= count {
            let end = min(count - 8, i + block)
            var partialDot = Lanes(), partialA = Lanes(), partialB = Lanes()
            while i <= end {
                let u = load(a, i), v = load(b, i)
                let bu = magnitudeBits(u), bv = magnitudeBits(v)
                let valid = ones(bu .< limit) & ones(bv .< limit)
                let x = keep(u, valid), y = keep(v, valid)
                positions &-= valid
                partialDot += x * y
                partialA += x * x
                partialB += y * y
                let nonzero = valid & ~ones(bu .== Bits()) & ~ones(bv .== Bits())
                both &-= nonzero
                agree &-= nonzero & ones((unsafeBitCast(u, to: Bits.self) ^ unsafeBitCast(v, to: Bits.self)) .< sign)
                i += 8
            }
            dot += Double(partialDot.sum())
            squaresA += Double(partialA.sum())
            squaresB += Double(partialB.sum())
        }
        var positionCount = Int(positions.wrappedSum()), bothCount = Int(both.wrappedSum()), agreeCount = Int(agree.wrappedSum())
        for (u, v) in zip(UnsafeBufferPointer(start: a + i, count: count - i), UnsafeBufferPointer(start: b + i, count: count - i))
        where u.isFinite && v.isFinite {
            dot += Double(u) * Double(v)
            positionCount += 1
            squaresA += Double(u) * Double(u)
            squaresB += Double(v) * Double(v)
            if u != 0 && v != 0 {
                bothCount += 1
                if (u.bitPattern ^ v.bitPattern) & 0x8000_0000 == 0 { agreeCount += 1 }
            }
        }
        pair.positions += positionCount
        pair.dot += dot
        pair.squaresFirst += squaresA
        pair.squaresSecond += squaresB
        pair.bothNonzero += bothCount
        pair.signAgreements += agreeCount
    }

    /// TIES election with sum consensus and unit weights: the elected sign is
    /// that of Σδ (a zero sum elects +); a non-zero entry of the other sign is
    /// dropped. Positions where any delta is non-finite are skipped.
    static func elect(_ deltas: UnsafePointer<UnsafeMutablePointer<Float>>, deltaCount: Int, _ count: Int) -> (entries: Int, dropped: Int) {
        var entries = 0, dropped = 0
        for i in 0..<count {
            var sum: Float = 0, finite = true
            for d in 0..<deltaCount {
                finite = finite && deltas[d][i].isFinite
                sum += deltas[d][i]
            }
            guard finite else { continue }
            for d in 0..<deltaCount where deltas[d][i] != 0 {
                entries += 1
                if (deltas[d][i] < 0) != (sum < 0) { dropped += 1 }
            }
        }
        return (entries, dropped)
    }

    /// For each of `bits`, the entries with magnitude pattern at most it (zeros
    /// included, non-finite entries never: each bound is below
    /// `MagnitudeBins.nonFinite`), added to `within`. Up to four bounds share one read.
    static func countAtMost(_ delta: UnsafePointer<Float>, _ count: Int, _ bits: [UInt32], into within: inout [Int]) {
        for first in stride(from: 0, to: bits.count, by: 4) {
            let bound = { (j: Int) in Signed(repeating: first + j < bits.count ? Int32(bitPattern: bits[first + j]) : -1) }
            let b0 = bound(0), b1 = bound(1), b2 = bound(2), b3 = bound(3)
            var c0 = Bits(), c1 = Bits(), c2 = Bits(), c3 = Bits()
            var i = 0
            while i + 8 <= count {
                let keys = unsafeBitCast(magnitudeBits(load(delta, i)), to: Signed.self)
                c0 &-= ones(keys .<= b0)
                c1 &-= ones(keys .<= b1)
                c2 &-= ones(keys .<= b2)
                c3 &-= ones(keys .<= b3)
                i += 8
            }
            let counts = [c0, c1, c2, c3]
            for j in 0..<min(4, bits.count - first) {
                var total = Int(counts[j].wrappedSum())
                for k in i..<count where delta[k].bitPattern & 0x7fff_ffff <= bits[first + j] { total += 1 }
                within[first + j] += total
            }
        }
    }

    /// The support screen of a pair in the second pass. Per delta, entries with
    /// magnitude pattern at or above `low` may be in its top-k support and those
    /// at or above `high` surely are (zeros never: `low` ≥ 1). Positions where
    /// both are surely in are counted in `sure`; positions where both may be,
    /// but not both surely, are kept in `records` (pattern of the first delta in
    /// the high half) and decided once the exact thresholds are known.
    static func screenSupports(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int,
                               low: (UInt32, UInt32), high: (UInt32, UInt32), sure: inout Int, records: inout [UInt64]) {
        // Magnitude patterns are non-negative as Int32, so signed lane compares order them.
        let limit = Signed(repeating: Int32(bitPattern: MagnitudeBins.nonFinite)), magnitude = Signed(repeating: 0x7fff_ffff)
        let lowA = Signed(repeating: Int32(bitPattern: low.0)), lowB = Signed(repeating: Int32(bitPattern: low.1))
        let highA = Signed(repeating: Int32(bitPattern: high.0)), highB = Signed(repeating: Int32(bitPattern: high.1))
        var sureCount = Bits()
        var kept: [UInt64] = []
        var i = 0
        while i + 8 <= count {
            let ka = UnsafeRawPointer(a + i).loadUnaligned(as: Signed.self) & magnitude
            let kb = UnsafeRawPointer(b + i).loadUnaligned(as: Signed.self) & magnitude
            let both = ones(ka .>= lowA) & ones(ka .< limit) & ones(kb .>= lowB) & ones(kb .< limit)
            let surely = both & ones(ka .>= highA) & ones(kb .>= highB)
            sureCount &-= surely
            let maybe = both & ~surely
            if unsafeBitCast(maybe, to: SIMD4<UInt64>.self) != SIMD4() {
                for lane in 0..<8 where maybe[lane] != 0 { kept.append(UInt64(UInt32(ka[lane])) &<< 32 | UInt64(UInt32(kb[lane]))) }
            }
            i += 8
        }
        var total = Int(sureCount.wrappedSum())
        while i < count {
            let ka = a[i].bitPattern & 0x7fff_ffff, kb = b[i].bitPattern & 0x7fff_ffff
            if ka >= low.0, kb >= low.1, ka < MagnitudeBins.nonFinite, kb < MagnitudeBins.nonFinite {
                if ka >= high.0 && kb >= high.1 { total += 1 } else { kept.append(UInt64(ka) &<< 32 | UInt64(kb)) }
            }
            i += 1
        }
        sure += total
        records += kept
    }
}
