/// Magnitude bins over the bit pattern of |δ| as a Float32.
///
/// For non-negative floats the bit pattern orders like the value, so the top
/// 16 bits of the 31-bit magnitude (8 exponent + 8 mantissa bits) split the
/// positive floats into 65,536 coarse bins, each 1/256 of an octave wide, and
/// the low 15 bits name one exact value inside a coarse bin. Counting coarse
/// bins finds the bin that holds the k-th largest value; counting the 32,768
/// fine patterns of that one bin then gives the k-th largest value exactly.
enum MagnitudeBins {
    static let shift: UInt32 = 15
    static let coarseCount = 1 << 16
    static let fineCount = 1 << 15
    static let fineMask: UInt32 = 0x7fff
    /// Magnitudes at or above this pattern are infinite or NaN.
    static let nonFinite: UInt32 = 0x7f80_0000

    /// Σ|δ| of `count` entries of coarse bin `bin` whose fine patterns add up to
    /// `fineSum`. Inside one bin the exponent is fixed, so each value is
    /// 2^(e−150)·(2²³ + mantissa) (2⁻¹⁴⁹·mantissa for subnormals) and the sum is
    /// linear in the mantissas.
    static func sum(bin: Int, count: Int, fineSum: Int) -> Double {
        let exponent = bin >> 8
        let leading = (bin & 0xff) << 15 + (exponent == 0 ? 0 : 1 << 23)
        let significands = Double(count) * Double(leading) + Double(fineSum)
        return significands * Double(sign: .plus, exponent: max(exponent, 1) - 150, significand: 1)
    }

    /// The value whose magnitude pattern is (`bin`, `fine`).
    @inline(__always)
    static func value(bin: Int, fine: Int) -> Float {
        Float(bitPattern: UInt32(truncatingIfNeeded: bin) &<< shift | UInt32(truncatingIfNeeded: fine))
    }
}

/// The coarse histogram of the full pass, one UInt64 per bin: the count in
/// bits 40–62 and the Σ of fine patterns in the low 40, so an entry costs one
/// add; the top bit marks the bins whose exact patterns are collected, so the
/// same load tells. A bin holds at most 2²³ entries, so the histogram is emptied
/// into the interleaved Int histogram at least every `capacity` entries. Eight
/// spare slots after the bins take the zero and non-finite entries, one per
/// lane position, so repeated updates of one slot stay apart.
enum PackedBins {
    static let one: UInt64 = 1 << 40
    static let collect: UInt64 = 1 << 63
    static let spare = MagnitudeBins.coarseCount
    static let slots = MagnitudeBins.coarseCount + 8
    static let capacity = 1 << 23

    /// Adds bins 0…`highest` of `packed` into `bins` (count at 2·bin, fine sum
    /// at 2·bin + 1) and clears their counts (not their marks) and the spare slots.
    static func empty(_ packed: UnsafeMutablePointer<UInt64>, upTo highest: Int, into bins: UnsafeMutablePointer<Int>) {
        if highest >= 0 {
            for bin in 0...highest where packed[bin] & ~collect != 0 {
                bins[2 * bin] += Int(packed[bin] &>> 40 & (collect &>> 40 - 1))
                bins[2 * bin + 1] += Int(packed[bin] & (one - 1))
                packed[bin] &= collect
            }
        }
        (packed + spare).update(repeating: 0, count: slots - spare)
    }

    /// Marks (or unmarks) `bins` as collected.
    static func mark(_ packed: UnsafeMutablePointer<UInt64>, _ bins: ClosedRange<Int>, _ on: Bool) {
        for bin in bins { packed[bin] = on ? packed[bin] | collect : packed[bin] & ~collect }
    }
}

/// What the measure of one delta found in one chunk.
struct ChunkMeasure {
    var zeros = 0
    var nonFinite = 0
    var sumOfSquares = 0.0
}

/// Running sums for one delta within one tensor during the full pass.
struct DeltaMoments {
    var nonFinite = 0
    var zeros = 0
    var sumOfSquares = 0.0
    var maxBits: UInt32 = 0
    /// Lowest and highest non-empty coarse bin, found once the tensor is done.
    var lowBin = 0
    var highBin = -1

    /// Finds the non-empty range of a coarse histogram (the top is the largest magnitude's bin).
    mutating func findBinRange(_ bins: UnsafePointer<Int>) {
        highBin = maxBits > 0 ? Int(maxBits &>> MagnitudeBins.shift) : -1
        lowBin = 0
        while lowBin <= highBin && bins[2 * lowBin] == 0 { lowBin += 1 }
    }
}

/// The chunk kernels of a statistics pass. Every pointer argument holds at
/// least `count` elements (the caller's chunk buffers); histogram pointers hold
/// `MagnitudeBins.coarseCount` or `fineCount` entries as named.
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

    /// Whether any lane of a mask is set: `any(_:)` reduces lane by lane over
    /// SSE2, an OR of the mask's four 64-bit words takes a few instructions.
    @inline(__always)
    static func anyLane(_ mask: Bits) -> Bool {
        let words = unsafeBitCast(mask, to: SIMD4<UInt64>.self)
        return words[0] | words[1] | words[2] | words[3] != 0
    }

    @inline(__always)
    static func keep(_ v: Lanes, _ mask: Bits) -> Lanes {
        unsafeBitCast(unsafeBitCast(v, to: Bits.self) & mask, to: Lanes.self)
    }

    /// δ = tuned − base in place over `tuned`, then zeros, non-finite entries,
    /// Σδ² and the largest magnitude pattern, added to `moments` and returned
    /// for the chunk. Vector kernel; the tail runs one lane at a time.
    @discardableResult
    static func subtractAndMeasure(
        _ tuned: UnsafeMutablePointer<Float>, _ base: UnsafePointer<Float>, _ count: Int, into moments: inout DeltaMoments
    ) -> ChunkMeasure {
        // Magnitude patterns are non-negative as Int32: signed lane compares order them.
        let limit = Signed(repeating: Int32(bitPattern: MagnitudeBins.nonFinite))
        var zeros = Bits(), nonFinite = Bits(), high = Signed()
        var squares = 0.0
        var i = 0
        while i + 8 <= count {
            let end = min(count - 8, i + block)
            var partial = Lanes()
            while i <= end {
                let v = load(tuned, i) - load(base, i)
                UnsafeMutableRawPointer(tuned + i).storeBytes(of: v, as: Lanes.self)
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
            let d = tuned[i] - base[i]
            tuned[i] = d
            let bits = d.bitPattern & 0x7fff_ffff
            if bits == 0 { zeroCount += 1 } else if bits >= MagnitudeBins.nonFinite { nonFiniteCount += 1 } else {
                squares += Double(d) * Double(d)
                highBits = max(highBits, bits)
            }
            i += 1
        }
        moments.zeros += zeroCount
        moments.nonFinite += nonFiniteCount
        moments.sumOfSquares += squares
        moments.maxBits = max(moments.maxBits, highBits)
        return ChunkMeasure(zeros: zeroCount, nonFinite: nonFiniteCount, sumOfSquares: squares)
    }

    /// Adds every non-zero finite |δ| to the packed coarse histogram and copies
    /// the patterns that fall in marked bins to `collected`; returns how many
    /// were copied. Branch-free: zero and non-finite entries go to spare slots.
    static func histogram(
        _ delta: UnsafePointer<Float>, _ count: Int, packed: UnsafeMutablePointer<UInt64>, collected: UnsafeMutablePointer<UInt32>
    ) -> Int {
        var n = 0
        for i in 0..<count {
            let key = delta[i].bitPattern & 0x7fff_ffff
            // Zero wraps around, so one test sends zeros and non-finite entries aside.
            let slot = key &- 1 < MagnitudeBins.nonFinite &- 1 ? Int(key &>> MagnitudeBins.shift) : PackedBins.spare + (i & 7)
            let entry = packed[slot] &+ (UInt64(key & MagnitudeBins.fineMask) | PackedBins.one)
            packed[slot] = entry
            collected[n] = key
            n &+= Int(entry &>> 63)
        }
        return n
    }

    /// `histogram` for a chunk of mostly zero entries: vector compares mark
    /// the non-zero finite ones 64 at a time in a bit mask, and only those are
    /// visited (the loop over a mask's bits mispredicts once per 64 entries,
    /// where testing each entry would mispredict at every non-zero one).
    /// Leaves the masks in `masks` (one word per 64 entries, rounded up).
    static func sparseHistogram(
        _ delta: UnsafePointer<Float>, _ count: Int, packed: UnsafeMutablePointer<UInt64>, collected: UnsafeMutablePointer<UInt32>,
        masks: UnsafeMutablePointer<UInt64>
    ) -> Int {
        let limit = Signed(repeating: Int32(bitPattern: MagnitudeBins.nonFinite))
        let weights = Bits(1, 2, 4, 8, 16, 32, 64, 128)
        var n = 0
        @inline(__always) func add(_ key: UInt32) {
            let slot = Int(key &>> MagnitudeBins.shift)
            let entry = packed[slot] &+ (UInt64(key & MagnitudeBins.fineMask) | PackedBins.one)
            packed[slot] = entry
            collected[n] = key
            n &+= Int(entry &>> 63)
        }
        var start = 0
        while start + 64 <= count {
            var word: UInt64 = 0
            for group in 0..<8 {
                let bits = unsafeBitCast(magnitudeBits(load(delta, start + 8 * group)), to: Signed.self)
                let counted = ones(bits .> Signed()) & ones(bits .< limit)
                word |= UInt64((counted & weights).wrappedSum()) &<< (8 * group)
            }
            masks[start / 64] = word
            while word != 0 {
                add(delta[start + word.trailingZeroBitCount].bitPattern & 0x7fff_ffff)
                word &= word &- 1
            }
            start += 64
        }
        var tail: UInt64 = 0
        for i in start..<count {
            let key = delta[i].bitPattern & 0x7fff_ffff
            if key &- 1 < MagnitudeBins.nonFinite &- 1 {
                add(key)
                tail |= 1 &<< (i - start)
            }
        }
        if start < count { masks[start / 64] = tail }
        return n
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

    /// Pair figures on the positions where both deltas are finite. When
    /// neither delta has a non-finite entry in the chunk, their measures give
    /// the positions and Σa², Σb² (summed in the same order, so the same
    /// values) and only the rest is computed.
    static func comparePair(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int, into pair: inout PairFigures,
                            measures: (ChunkMeasure, ChunkMeasure)) {
        if measures.0.nonFinite == 0 && measures.1.nonFinite == 0 {
            compare(a, b, count, into: &pair, allFinite: true)
            pair.positions += count
            pair.squaresFirst += measures.0.sumOfSquares
            pair.squaresSecond += measures.1.sumOfSquares
        } else {
            compare(a, b, count, into: &pair, allFinite: false)
        }
    }

    @inline(__always)
    private static func compare(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int, into pair: inout PairFigures,
                                allFinite: Bool) {
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
                var nonzero = ~ones(bu .== Bits()) & ~ones(bv .== Bits())
                if allFinite {
                    partialDot += u * v
                } else {
                    let valid = ones(bu .< limit) & ones(bv .< limit)
                    let x = keep(u, valid), y = keep(v, valid)
                    positions &-= valid
                    partialDot += x * y
                    partialA += x * x
                    partialB += y * y
                    nonzero &= valid
                }
                both &-= nonzero
                let sameSign = ones((unsafeBitCast(u, to: Bits.self) ^ unsafeBitCast(v, to: Bits.self)) .< sign)
                agree &-= nonzero & sameSign
                i += 8
            }
            dot += Double(partialDot.sum())
            if !allFinite {
                squaresA += Double(partialA.sum())
                squaresB += Double(partialB.sum())
            }
        }
        var positionCount = Int(positions.wrappedSum()), bothCount = Int(both.wrappedSum())
        var agreeCount = Int(agree.wrappedSum())
        while i < count {
            let u = a[i], v = b[i]
            i += 1
            guard u.isFinite, v.isFinite else { continue }
            dot += Double(u) * Double(v)
            if !allFinite {
                positionCount += 1
                squaresA += Double(u) * Double(u)
                squaresB += Double(v) * Double(v)
            }
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

    /// The support screen of a pair: positions where both deltas are surely in
    /// their top-k supports are counted; positions where both may be, and not
    /// both surely, are recorded with both patterns for when the exact
    /// thresholds are known. Zero and non-finite entries are in no support.
    static func screenSupports(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int, screen: SupportScreen, into candidates: PairCandidates
    ) {
        // Magnitude patterns are non-negative as Int32, so signed lane compares order them;
        // "in" is a pattern above `low…` and finite, "clear" one above `high…` as well.
        let limit = Signed(repeating: Int32(bitPattern: MagnitudeBins.nonFinite))
        let lowA = Signed(repeating: screen.lowKeyA), highA = Signed(repeating: screen.highKeyA)
        let lowB = Signed(repeating: screen.lowKeyB), highB = Signed(repeating: screen.highKeyB)
        let magnitude = Signed(repeating: 0x7fff_ffff)
        var bothClear = Bits()
        var records: [UInt64] = []
        var i = 0
        while i + 8 <= count {
            let ka = UnsafeRawPointer(a + i).loadUnaligned(as: Signed.self) & magnitude
            let kb = UnsafeRawPointer(b + i).loadUnaligned(as: Signed.self) & magnitude
            let both = ones(ka .> lowA) & ones(ka .< limit) & ones(kb .> lowB) & ones(kb .< limit)
            let clear = both & ones(ka .> highA) & ones(kb .> highB)
            bothClear &-= clear
            let record = both & ~clear
            if anyLane(record) {
                for lane in 0..<8 where record[lane] != 0 {
                    records.append(UInt64(UInt32(ka[lane])) &<< 32 | UInt64(UInt32(kb[lane])))
                }
            }
            i += 8
        }
        var clearCount = Int(bothClear.wrappedSum())
        while i < count {
            screenEntry(a[i], b[i], screen: screen, limit: limit[0], clear: &clearCount, records: &records)
            i += 1
        }
        candidates.bothClear += clearCount
        candidates.records += records
    }

    /// `screenSupports` on the positions marked in `masks` (as `sparseHistogram`
    /// leaves them), which must include every position where both deltas are
    /// non-zero and finite: a zero entry is in no support.
    static func screenSupports(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int, screen: SupportScreen, into candidates: PairCandidates,
        masks: UnsafePointer<UInt64>
    ) {
        let limit = Int32(bitPattern: MagnitudeBins.nonFinite)
        var clear = 0
        var records: [UInt64] = []
        for w in 0..<((count + 63) / 64) {
            var word = masks[w]
            while word != 0 {
                let i = 64 * w + word.trailingZeroBitCount
                word &= word &- 1
                screenEntry(a[i], b[i], screen: screen, limit: limit, clear: &clear, records: &records)
            }
        }
        candidates.bothClear += clear
        candidates.records += records
    }

    /// One pair of entries through the support screen: counted as clearly in both
    /// supports, recorded for the exact check, or left out (below a support or not finite).
    @inline(__always)
    static func screenEntry(_ a: Float, _ b: Float, screen: SupportScreen, limit: Int32, clear: inout Int, records: inout [UInt64]) {
        let ka = Int32(bitPattern: a.bitPattern & 0x7fff_ffff), kb = Int32(bitPattern: b.bitPattern & 0x7fff_ffff)
        guard ka > screen.lowKeyA, kb > screen.lowKeyB, ka < limit, kb < limit else { return }
        if ka > screen.highKeyA && kb > screen.highKeyB {
            clear += 1
        } else {
            records.append(UInt64(UInt32(ka)) &<< 32 | UInt64(UInt32(kb)))
        }
    }

    /// TIES election with sum consensus and unit weights: the elected sign is
    /// that of Σδ (a zero sum elects +); a non-zero entry of the other sign is
    /// dropped. Positions where any delta is non-finite are skipped.
    static func elect(_ deltas: UnsafePointer<UnsafeMutablePointer<Float>>, deltaCount: Int, _ count: Int) -> (entries: Int, dropped: Int) {
        let limit = Bits(repeating: MagnitudeBins.nonFinite), sign = Bits(repeating: 0x8000_0000)
        var entries = Bits(), dropped = Bits()
        var i = 0
        while i + 8 <= count {
            var sum = Lanes()
            var finite = ~Bits()
            for d in 0..<deltaCount {
                let v = load(deltas[d], i)
                finite &= ones(magnitudeBits(v) .< limit)
                sum += v
            }
            // Sign bit of the sum, set only when the sum is below zero (−0 elects +).
            let negative = ones(sum .< Lanes()) & sign
            for d in 0..<deltaCount {
                let v = load(deltas[d], i)
                let bits = unsafeBitCast(v, to: Bits.self)
                let nonzero = finite & ~ones((bits & Bits(repeating: 0x7fff_ffff)) .== Bits())
                entries &-= nonzero
                dropped &-= nonzero & ~ones(((bits & sign) ^ negative) .== Bits())
            }
            i += 8
        }
        var entryCount = Int(entries.wrappedSum()), droppedCount = Int(dropped.wrappedSum())
        while i < count {
            var sum: Float = 0
            var finite = true
            for d in 0..<deltaCount {
                finite = finite && deltas[d][i].isFinite
                sum += deltas[d][i]
            }
            if finite {
                for d in 0..<deltaCount where deltas[d][i] != 0 {
                    entryCount += 1
                    if (deltas[d][i] < 0) != (sum < 0) { droppedCount += 1 }
                }
            }
            i += 1
        }
        return (entryCount, droppedCount)
    }
}

/// Per delta of a pair, the support screen in magnitude patterns: entries
/// above `highKey` are surely in the top-k support, entries above `lowKey`
/// may be, others (zero included) are not.
struct SupportScreen {
    let lowKeyA: Int32, highKeyA: Int32, lowKeyB: Int32, highKeyB: Int32

    init(_ a: CandidateRange, _ b: CandidateRange) {
        // From bin l means above pattern (l << 15) − 1 (and above 0: non-zero);
        // above bin h means above pattern ((h + 1) << 15) − 1 (−1 when h is −1).
        func keys(_ range: CandidateRange) -> (Int32, Int32) {
            let low = range.collected?.lowerBound ?? 0
            return (Int32(max((low << MagnitudeBins.shift) - 1, 0)), Int32(((range.high + 1) << MagnitudeBins.shift) - 1))
        }
        (lowKeyA, highKeyA) = keys(a)
        (lowKeyB, highKeyB) = keys(b)
    }
}

/// What the support screen of one pair found within one tensor.
final class PairCandidates {
    /// Positions where both deltas are surely in their supports.
    var bothClear = 0
    /// Positions to decide later: pattern of the first delta (high half) and of the second.
    var records: [UInt64] = []

    /// Positions in both supports, given each delta's exact threshold pattern
    /// (the support keeps every non-zero pattern at or above it).
    func intersection(thresholdA: UInt32, thresholdB: UInt32) -> Int {
        var count = bothClear
        for record in records where UInt32(record &>> 32) >= thresholdA && UInt32(truncatingIfNeeded: record) >= thresholdB {
            count += 1
        }
        return count
    }

    func reset() {
        bothClear = 0
        records.removeAll(keepingCapacity: true)
    }
}
