/// Exact selection on magnitudes in two streaming passes: the one engine behind the
/// statistics' k largest magnitudes and their sums, and the merge's rank searches.
///
/// The upper 16 bits of a `magnitudeKey` put a magnitude in one of 65,536 coarse bins,
/// each 1/256 of an octave; the lower 15 bits name one value inside its bin. Pass 1
/// counts each key in its bin together with the sum of its lower bits
/// (`MagnitudeHistogram`); inside a bin the exponent is fixed, so Σ|x| of a bin is
/// linear in the mantissas and exact. Walking the bins finds the bin holding a sought
/// element with the exact count (and mass) on one side of it: down from the top for
/// the k-th largest non-zero finite magnitude (`LargestMagnitudes`), up from the
/// bottom for a rank of the (|δ|, index) order, which counts zeros and non-finite
/// magnitudes too (`RankSearch`). Pass 2 counts the exact keys of those few bins
/// (`BinKeyCounts`), which settles the element. Counts are integers, so nothing
/// depends on how the values were split into chunks or threads.
public enum MagnitudeBins {
    public static let coarseCount = 1 << 16
    public static let fineCount = 1 << 15
    /// Keys at or above this are infinite or NaN.
    public static let nonFinite: UInt32 = 0x7f80_0000

    /// Σ|x| of `count` entries of `bin` whose lower key bits add up to `lowSum`: each
    /// value is 2^(e−150)·(2²³ + mantissa), or 2⁻¹⁴⁹·mantissa for subnormals.
    public static func sum(bin: Int, count: Int, lowSum: Int) -> Double {
        let exponent = bin >> 8
        let leading = (bin & 0xff) << 15 + (exponent == 0 ? 0 : 1 << 23)
        let significands = Double(count) * Double(leading) + Double(lowSum)
        return significands * Double(sign: .plus, exponent: max(exponent, 1) - 150, significand: 1)
    }

    /// The magnitude whose key has upper bits `bin` and lower bits `low`.
    public static func value(bin: Int, low: Int) -> Float {
        Float(bitPattern: UInt32(truncatingIfNeeded: bin) &<< 15 | UInt32(truncatingIfNeeded: low))
    }
}

/// Counts and Σ of the lower key bits, per coarse bin, of the non-zero finite magnitudes
/// added to it (of every magnitude, zeros in bin 0, when it `countsAll`, as ranks count
/// them; Σ means nothing in a non-finite bin). `add` costs one memory add per entry: it counts into packed words (count
/// in bits 40–63, lower-bit sum in bits 0–39, room for 2²³ entries) moved into the
/// totals by `flush`, which a reader must call after the last `add`. Deltas of
/// low-precision weights repeat a few magnitudes, so neighbouring entries often share a
/// bin: entry i counts in word i mod 4 of its bin's four, which keeps such adds from
/// waiting on each other.
public final class MagnitudeHistogram: @unchecked Sendable {
    /// Keys gathered from mostly zero values at a time (see `add`).
    static let gatherBlock = 1024
    public let counts = UnsafeMutablePointer<Int>.allocate(capacity: MagnitudeBins.coarseCount)
    public let lowSums = UnsafeMutablePointer<Int>.allocate(capacity: MagnitudeBins.coarseCount)
    /// Whether zero and non-finite magnitudes are counted too.
    public let countsAll: Bool
    /// Four packed words per bin for every key, non-finite ones included (their bins,
    /// from `nonFinite >> 15` up, are moved into the totals only if it `countsAll`);
    /// nil for a histogram that only sums others.
    private let packed: UnsafeMutablePointer<UInt64>?
    /// The non-zero keys of a block of mostly zero values (`gatherBlock` of them).
    private let gathered: UnsafeMutablePointer<UInt32>?
    private var pending = 0
    /// The bins that may be non-zero in the totals, and in the packed words. While few
    /// entries are pending their bins are tracked, so a small tensor's histogram is
    /// flushed, walked and cleared over its own bins, not all 2¹⁶.
    public private(set) var bins = 0..<0
    private var packedBins = 0..<0

    public init(counting: Bool = true, countsAll: Bool = false) {
        self.countsAll = countsAll
        counts.initialize(repeating: 0, count: MagnitudeBins.coarseCount)
        lowSums.initialize(repeating: 0, count: MagnitudeBins.coarseCount)
        packed = counting ? .allocate(capacity: 4 * MagnitudeBins.coarseCount) : nil
        packed?.initialize(repeating: 0, count: 4 * MagnitudeBins.coarseCount)
        gathered = counting ? .allocate(capacity: Self.gatherBlock) : nil
    }

    deinit {
        counts.deallocate()
        lowSums.deallocate()
        packed?.deallocate()
        gathered?.deallocate()
    }

    /// Counts the non-zero finite magnitudes of `values[0..<count]`, of which `zeros` are
    /// zero (0 when the histogram `countsAll`: its zeros go to bin 0). Mostly non-zero values go one add per entry without a branch: a zero adds
    /// to bin 0 and is taken back at the end. Of mostly zero ones, the non-zero keys of
    /// each block of `gatherBlock` values are first gathered without a branch (whether an
    /// entry is zero is as good as random, so a branch on it would often be mispredicted),
    /// then added. A key (below 2³¹) and i mod 4 index the 4 × 2¹⁶ packed words.
    public func add(_ values: UnsafePointer<Float>, _ count: Int, zeros: Int) {
        guard let packed, let gathered else { preconditionFailure("a histogram made with counting: false") }
        precondition(zeros >= 0 && zeros <= count && !(countsAll && zeros > 0), "\(zeros) zeros among \(count) values")
        if pending + count > 1 << 23 { flush() }
        guard count <= 1 << 23 else {
            let half = count / 2, zerosInFirst = zeros == 0 ? 0 : (0..<half).count { values[$0] == 0 }
            add(values, half, zeros: zerosInFirst)
            return add(values + half, count - half, zeros: zeros - zerosInFirst)
        }
        pending += count
        if pending <= 1 << 14 {
            var lowest = packedBins.isEmpty ? Int.max : packedBins.lowerBound, highest = packedBins.upperBound - 1
            for i in 0..<count {
                let bin = Int(magnitudeKey(values[i]) &>> 15)
                lowest = min(lowest, bin)
                highest = max(highest, bin)
            }
            if lowest <= highest { packedBins = lowest..<(highest + 1) }
        } else {
            packedBins = 0..<MagnitudeBins.coarseCount
        }
        @inline(__always) func tally(_ i: Int, _ key: UInt32) {
            packed[Int(key &>> 15) << 2 | i & 3] &+= UInt64(key & 0x7fff) | 1 << 40
        }
        guard 4 * zeros >= 3 * count else {
            for i in 0..<count { tally(i, magnitudeKey(values[i])) }
            // Wrapping: a bin's four words are summed in `flush`.
            packed[0] &-= UInt64(zeros) << 40
            return
        }
        for start in stride(from: 0, to: count, by: Self.gatherBlock) {
            // `found` stays below the block's length, so `gathered` holds every write. A
            // key is below 2³¹, so 0 − key has its top bit set exactly when the key is not 0.
            let block = values + start, length = min(Self.gatherBlock, count - start)
            var found = 0
            for i in 0..<length {
                let key = magnitudeKey(block[i])
                gathered[found] = key
                found &+= Int((0 &- key) &>> 31)
            }
            for j in 0..<found { tally(j, gathered[j]) }
        }
    }

    /// Moves the packed counts into `counts` and `lowSums`. The four words of a bin add
    /// up (wrapping) to its count and lower-bit sum, which fit their fields.
    public func flush() {
        guard let packed, pending > 0 else { return }
        let counted = countsAll ? MagnitudeBins.coarseCount : Int(MagnitudeBins.nonFinite >> 15)
        for bin in packedBins.clamped(to: 0..<counted)
        where packed[4 * bin] | packed[4 * bin + 1] | packed[4 * bin + 2] | packed[4 * bin + 3] != 0 {
            let word = packed[4 * bin] &+ packed[4 * bin + 1] &+ packed[4 * bin + 2] &+ packed[4 * bin + 3]
            counts[bin] += Int(word &>> 40)
            lowSums[bin] += Int(word & (1 << 40 - 1))
            bins = bins.isEmpty ? bin..<(bin + 1) : min(bins.lowerBound, bin)..<max(bins.upperBound, bin + 1)
        }
        (packed + 4 * packedBins.lowerBound).update(repeating: 0, count: 4 * packedBins.count)
        packedBins = 0..<0
        pending = 0
    }

    /// Adds the totals of `other` (flushed) to this one's.
    public func add(_ other: MagnitudeHistogram) {
        for bin in other.bins where other.counts[bin] != 0 {
            counts[bin] += other.counts[bin]
            lowSums[bin] += other.lowSums[bin]
        }
        if !other.bins.isEmpty {
            bins = bins.isEmpty ? other.bins : min(bins.lowerBound, other.bins.lowerBound)..<max(bins.upperBound, other.bins.upperBound)
        }
    }

    /// Empties the totals (the packed words are empty after `flush`).
    public func clear() {
        (counts + bins.lowerBound).update(repeating: 0, count: bins.count)
        (lowSums + bins.lowerBound).update(repeating: 0, count: bins.count)
        bins = 0..<0
    }

    /// Exact Σ|x| of the entries of `bin`.
    public func sum(_ bin: Int) -> Double { MagnitudeBins.sum(bin: bin, count: counts[bin], lowSum: lowSums[bin]) }

    /// The largest `k` magnitudes counted.
    public func largest(_ k: Int) -> LargestMagnitudes { LargestMagnitudes(k: k, in: self) }
}

/// Where the k largest magnitudes of a histogram end: the coarse bin holding the k-th
/// largest, and the count and Σ of the magnitudes in the bins above it.
public struct LargestMagnitudes: Sendable {
    /// The bin holding the k-th largest; nil when k reaches past every non-zero magnitude.
    public let bin: Int?
    /// Magnitudes still to take from `bin`.
    public let remaining: Int
    public let countAbove: Int
    public let sumAbove: Double

    /// Walks the bins of `histogram` down from the top until `k` magnitudes are reached.
    public init(k: Int, in histogram: MagnitudeHistogram) {
        var count = 0, sum = 0.0, bin = histogram.bins.upperBound - 1
        while bin >= histogram.bins.lowerBound && count + histogram.counts[bin] < k {
            if histogram.counts[bin] != 0 {
                count += histogram.counts[bin]
                sum += histogram.sum(bin)
            }
            bin -= 1
        }
        self.bin = bin >= histogram.bins.lowerBound ? bin : nil
        remaining = self.bin != nil ? k - count : 0
        countAbove = count
        sumAbove = sum
    }

    /// Given how many magnitudes of `bin` have each lower key (`keyCounts`, pass 2): the
    /// key of the k-th largest (1 when k reaches past every non-zero magnitude), the
    /// exact Σ of the k largest, and how many magnitudes are at least the k-th largest.
    public func resolve(_ keyCounts: UnsafePointer<Int>?) -> (key: UInt32, sum: Double, atLeast: Int) {
        guard let bin, let keyCounts else { return (1, sumAbove, countAbove) }
        var remaining = remaining, sum = sumAbove, atLeast = countAbove, low = MagnitudeBins.fineCount
        while remaining > 0 && low > 0 {
            low -= 1
            let take = min(keyCounts[low], remaining)
            sum += Double(take) * Double(MagnitudeBins.value(bin: bin, low: low))
            atLeast += keyCounts[low]
            remaining -= take
        }
        return (UInt32(bin) << 15 | UInt32(low), sum, atLeast)
    }
}

/// Pass 2: counts the exact keys of a few coarse bins (those holding a sought rank)
/// among the non-zero finite magnitudes of a stream, or among all of them.
public final class BinKeyCounts: @unchecked Sendable {
    public private(set) var bins: [Int] = []
    private let capacity: Int
    /// Whether zero and non-finite magnitudes are counted too.
    private let countsAll: Bool
    private let counts: UnsafeMutablePointer<Int>
    /// For each coarse bin, 0 or 1 + its index in `bins`.
    private let slots = UnsafeMutablePointer<UInt8>.allocate(capacity: MagnitudeBins.coarseCount)

    /// Room for up to `capacity` (at most 255) bins at once; `countsAll` counts zero and
    /// non-finite magnitudes as well.
    public init(capacity: Int, countsAll: Bool = false) {
        precondition(capacity > 0 && capacity < 256, "between 1 and 255 bins")
        self.capacity = capacity
        self.countsAll = countsAll
        counts = .allocate(capacity: capacity * MagnitudeBins.fineCount)
        slots.initialize(repeating: 0, count: MagnitudeBins.coarseCount)
    }

    deinit {
        counts.deallocate()
        slots.deallocate()
    }

    /// Starts counting `bins` (duplicates and nil are ignored) from zero.
    public func select(_ wanted: [Int?]) {
        for bin in bins { slots[bin] = 0 }
        bins = []
        for case let bin? in wanted where slots[bin] == 0 {
            precondition(bins.count < capacity, "more bins than room for")
            bins.append(bin)
            slots[bin] = UInt8(bins.count)
            (counts + (bins.count - 1) * MagnitudeBins.fineCount).update(repeating: 0, count: MagnitudeBins.fineCount)
        }
    }

    /// The key counts of `bin` (indexed by lower key bits), nil for a bin not selected.
    public func counts(of bin: Int?) -> UnsafePointer<Int>? {
        guard let bin, slots[bin] != 0 else { return nil }
        return UnsafePointer(counts + (Int(slots[bin]) - 1) * MagnitudeBins.fineCount)
    }

    /// Adds the counts of `other`, which selected the same bins.
    public func add(_ other: BinKeyCounts) {
        precondition(other.bins == bins, "key counts of different bins")
        for i in 0..<bins.count * MagnitudeBins.fineCount { counts[i] += other.counts[i] }
    }

    /// Counts the magnitudes of `values[0..<count]` that fall in the selected bins,
    /// eight at a time (vector loads only while `i + 8 <= count`): a group is compared
    /// with each bin, and only the rare group holding one is counted entry by entry.
    public func add(_ values: UnsafePointer<Float>, _ count: Int) {
        typealias Keys = SIMD8<UInt32>
        let wanted = bins.map { Keys(repeating: UInt32($0)) }
        guard !wanted.isEmpty else { return }
        @inline(__always) func tally(_ key: UInt32) {
            guard countsAll || (key != 0 && key < MagnitudeBins.nonFinite), case let slot = Int(slots[Int(key &>> 15)]), slot != 0 else { return }
            counts[(slot - 1) * MagnitudeBins.fineCount + Int(key & 0x7fff)] += 1
        }
        var i = 0
        while i + 8 <= count {
            let keys = UnsafeRawPointer(values + i).loadUnaligned(as: Keys.self) & Keys(repeating: 0x7fff_ffff)
            let coarse = keys &>> 15
            var hit = SIMDMask<Keys.MaskStorage>()
            for bin in wanted { hit .|= coarse .== bin }
            forEachLane(hit) { tally(keys[$0]) }
            i += 8
        }
        for i in i..<count { tally(magnitudeKey(values[i])) }
    }
}

/// Calls `body` with each set lane of `mask`, lowest first. The lanes are gathered into
/// the bits of one byte, so a group with no lane set costs one test (`any(_:)` would
/// go lane by lane) and a loop over the set bits mispredicts once, not at each lane.
@inlinable @inline(__always)
public func forEachLane(_ mask: SIMDMask<SIMD8<Int32>>, _ body: (Int) -> Void) {
    var lanes = (unsafeBitCast(mask, to: SIMD8<UInt32>.self) & SIMD8(1, 2, 4, 8, 16, 32, 64, 128)).wrappedSum()
    while lanes != 0 {
        body(lanes.trailingZeroBitCount)
        lanes &= lanes &- 1
    }
}
