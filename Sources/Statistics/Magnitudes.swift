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

/// Counts and Σ of fine (low 15 bit) patterns of |δ| per coarse bin; with the
/// count, the fine sum gives the exact Σ|δ| of the bin.
final class CoarseHistogram {
    let counts = UnsafeMutablePointer<Int>.allocate(capacity: MagnitudeBins.coarseCount)
    let fineSums = UnsafeMutablePointer<Int>.allocate(capacity: MagnitudeBins.coarseCount)
    /// Entries added since the last `flush`, one word per bin so an entry costs
    /// one add: the count in bits 40–63, the Σ of fine patterns in the low 40
    /// (room for 2²³ entries). Eight spare words past the bins take the zero and
    /// non-finite entries, one per lane position, so updates of one word stay apart.
    let packed = UnsafeMutablePointer<UInt64>.allocate(capacity: MagnitudeBins.coarseCount + 8)
    var pending = 0
    static let one: UInt64 = 1 << 40
    static let capacity = 1 << 23

    init() {
        packed.initialize(repeating: 0, count: MagnitudeBins.coarseCount + 8)
        counts.initialize(repeating: 0, count: MagnitudeBins.coarseCount)
        fineSums.initialize(repeating: 0, count: MagnitudeBins.coarseCount)
    }

    deinit {
        counts.deallocate()
        fineSums.deallocate()
        packed.deallocate()
    }

    /// Moves the packed words into `counts` and `fineSums`.
    func flush() {
        for bin in 0..<MagnitudeBins.coarseCount where packed[bin] != 0 {
            counts[bin] += Int(packed[bin] &>> 40)
            fineSums[bin] += Int(packed[bin] & (Self.one - 1))
            packed[bin] = 0
        }
        (packed + MagnitudeBins.coarseCount).update(repeating: 0, count: 8)
        pending = 0
    }

    /// Empties the bins of `range` (all of them by default), where every count is.
    func clear(_ range: ClosedRange<Int>? = 0...(MagnitudeBins.coarseCount - 1)) {
        guard let range else { return }
        (counts + range.lowerBound).update(repeating: 0, count: range.count)
        (fineSums + range.lowerBound).update(repeating: 0, count: range.count)
    }

    func add(_ other: CoarseHistogram) {
        for bin in 0..<MagnitudeBins.coarseCount where other.counts[bin] != 0 {
            counts[bin] += other.counts[bin]
            fineSums[bin] += other.fineSums[bin]
        }
    }

    /// Exact Σ|δ| of the entries of `bin`.
    func sum(_ bin: Int) -> Double { MagnitudeBins.sum(bin: bin, count: counts[bin], fineSum: fineSums[bin]) }

    /// Non-empty bins from the lowest to the highest (empty when all are empty).
    var occupied: ClosedRange<Int>? {
        guard let high = (0..<MagnitudeBins.coarseCount).last(where: { counts[$0] != 0 }) else { return nil }
        return (0...high).first(where: { counts[$0] != 0 })!...high
    }

    /// The boundary of the top `k`, given the `occupied` bins.
    func boundary(k: Int, in range: ClosedRange<Int>?) -> TopBoundary {
        return TopBoundary(k: k, low: range?.lowerBound ?? 0, high: range?.upperBound ?? -1, counts: { self.counts[$0] }, sums: sum)
    }
}

/// Where the k-th largest magnitude lies, from a coarse histogram.
struct TopBoundary {
    /// Coarse bin holding the k-th largest value; −1 when k reaches past every
    /// non-zero entry (the top k then holds all of them).
    let bin: Int
    /// Entries still to take from `bin`.
    let need: Int
    /// Entries and Σ|δ| in bins above `bin`.
    let aboveCount: Int
    let aboveSum: Double

    /// Scans coarse bins from the top until `k` entries are reached.
    init(k: Int, low: Int, high: Int, counts: (Int) -> Int, sums: (Int) -> Double) {
        var above = 0, aboveSum = 0.0
        var bin = high
        while bin >= low {
            let c = counts(bin)
            if above + c >= k { break }
            above += c
            aboveSum += sums(bin)
            bin -= 1
        }
        if bin < low {
            self.bin = -1
            need = 0
        } else {
            self.bin = bin
            need = k - above
        }
        aboveCount = above
        self.aboveSum = aboveSum
    }

    /// With the fine counts of `bin`: the fine pattern of the k-th largest value,
    /// the exact mass of the top k, and the support size when every entry equal
    /// to the k-th largest value is kept.
    func resolve(_ fine: UnsafePointer<Int>?) -> (pattern: Int, mass: Double, support: Int) {
        guard bin >= 0, let fine else { return (0, aboveSum, aboveCount) }
        var remaining = need, mass = aboveSum, support = aboveCount
        var pattern = MagnitudeBins.fineCount - 1
        while pattern >= 0 {
            let c = fine[pattern]
            if c > 0 {
                let take = min(c, remaining)
                mass += Double(take) * Double(MagnitudeBins.value(bin: bin, fine: pattern))
                remaining -= take
                support += c
                if remaining == 0 { break }
            }
            pattern -= 1
        }
        return (max(pattern, 0), mass, support)
    }
}

extension DeltaKernels {
    /// Adds every non-zero finite |δ| to `histogram`'s packed words. A `sparse`
    /// chunk (mostly zero) is screened 8 entries at a time; a dense one is
    /// counted branch-free, zero and non-finite entries going to the spare words.
    static func countCoarse(_ delta: UnsafePointer<Float>, _ count: Int, sparse: Bool, into histogram: CoarseHistogram) {
        if histogram.pending + count > CoarseHistogram.capacity { histogram.flush() }
        histogram.pending += count
        let packed = histogram.packed, one = CoarseHistogram.one
        var i = 0
        if sparse {
            let limit = Signed(repeating: Int32(bitPattern: MagnitudeBins.nonFinite))
            while i + 8 <= count {
                let keys = unsafeBitCast(magnitudeBits(load(delta, i)), to: Signed.self)
                let counted = ones(keys .> Signed()) & ones(keys .< limit)
                forEachLane(counted) { lane in
                    packed[Int(keys[lane] &>> Int32(MagnitudeBins.shift))] &+= UInt64(UInt32(keys[lane]) & MagnitudeBins.fineMask) | one
                }
                i += 8
            }
        }
        for i in i..<count {
            let key = delta[i].bitPattern & 0x7fff_ffff
            // Zero wraps around, so one test sends zeros and non-finite entries aside.
            let slot = key &- 1 < MagnitudeBins.nonFinite &- 1 ? Int(key &>> MagnitudeBins.shift) : MagnitudeBins.coarseCount + (i & 7)
            packed[slot] &+= UInt64(key & MagnitudeBins.fineMask) | one
        }
    }

    /// Counts the fine patterns of the non-zero entries whose coarse bin is one
    /// of `bins`, bin `bins[s]` in `fine[s]` (each `MagnitudeBins.fineCount` long);
    /// `slots` maps each of `bins` to 1 + its index (`MagnitudeBins.coarseCount` entries).
    static func countFine(_ delta: UnsafePointer<Float>, _ count: Int, bins: UnsafeBufferPointer<Signed>, slots: UnsafePointer<UInt8>,
                          fine: UnsafePointer<UnsafeMutablePointer<Int>>) {
        @inline(__always) func add(_ key: UInt32) {
            if key != 0, key < MagnitudeBins.nonFinite, case let slot = Int(slots[Int(key &>> MagnitudeBins.shift)]), slot != 0 {
                fine[slot - 1][Int(key & MagnitudeBins.fineMask)] += 1
            }
        }
        // The bins are top-k boundaries, so most entries lie below them all or between the
        // lowest and the others: a group costs two compares unless it reaches the bins.
        let sorted = bins.map { $0[0] }.sorted()
        let lowest = Signed(repeating: sorted.first ?? -1)
        let others = Signed(repeating: sorted.count > 1 ? sorted[1] : Int32.max)
        var i = 0
        while i + 8 <= count {
            let keys = unsafeBitCast(magnitudeBits(load(delta, i)), to: Signed.self)
            let coarse = keys &>> Signed(repeating: Int32(MagnitudeBins.shift))
            if anyLane(ones(coarse .== lowest) | ones(coarse .>= others)) {
                var hit = Bits()
                for bin in bins { hit |= ones(coarse .== bin) }
                forEachLane(hit & ~ones(keys .== Signed())) { add(UInt32(keys[$0])) }
            }
            i += 8
        }
        for i in i..<count { add(delta[i].bitPattern & 0x7fff_ffff) }
    }
}
