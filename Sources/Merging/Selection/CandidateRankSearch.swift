import Checkpoints

/// Exact rank selection in one streaming pass, guided by a sample.
///
/// A small sample of the tensor — evenly spaced runs — estimates where the
/// searched rank's magnitude lies, and a key interval [low, high] wide enough to
/// hold it with high confidence (the margin grows with the spread between runs, so
/// tensors whose rows differ in scale get a wider interval). One streaming pass then
/// counts, per chunk, the entries below the interval and keeps the keys inside it,
/// in index order. When the rank falls among the kept keys, the element at that rank
/// is found exactly among them, with each chunk's count of its key; otherwise
/// `resolve` returns nil and the caller falls back to the two-pass `RankSearch`.
/// The keys kept by one pass are capped by an absolute count (`maxCandidates`), so
/// their memory does not grow with the tensor: a chunk whose keys would pass the cap
/// keeps none, and unless the estimate settles the rank the search falls back too.
/// The sample and the cap only decide the cost, never the result.
public struct CandidateRankSearch: Sendable, Hashable {
    /// Runs sampled from a large tensor, and the length of each.
    public static let sampleRuns = 128
    public static let runLength = 256
    /// Width of the interval in standard errors of the sample quantile.
    static let confidence = 5.0
    /// Share of the tensor above which collecting candidates is not worth it.
    static let maxCandidateShare = 0.25
    /// Keys one tensor's candidate pass may keep, over all its searches and chunks:
    /// 4 MB, and as much again while a rank is selected among them. A 30 % TIES trim of
    /// a fine-tune's 32000 × 1024 embedding would keep about 2 M, a 3 B model's larger
    /// tensors more; a mostly-zero delta's interval starts at 0 and would keep most of
    /// the tensor, but its rank is the estimate's key, which the counts alone settle.
    /// Past the cap a search costs one more pass, never more memory: with a cap of 4 M
    /// keys a ties merge's peak grew from 54 MB at 0.25 B parameters to 72 MB at 3 B; with
    /// this one, 53 MB on the bench trio and 57 MB on 3 B-shaped tensors, in the same time.
    public static let maxCandidates = 1 << 20

    /// The rank searched, in the ascending (|δ|, index) order.
    public let rank: Int
    /// Keys collected as candidates: low...high.
    public let low: UInt32
    public let high: UInt32
    /// The sample's guess of the key at the rank (tried first when resolving).
    public let estimate: UInt32

    /// The element ranges sampled from a tensor of `count` elements to estimate where
    /// its magnitudes lie: one run of `runLength` centred in each of `sampleRuns` equal
    /// strata, its start aligned down to a multiple of 1024 elements (whole blocks of
    /// every quantized type), or the whole tensor when it is not much larger. What a
    /// sample decides is only how much the full pass collects, never a result.
    public static func sampleRanges(count n: Int) -> [Range<Int>] {
        if n <= 4 * sampleRuns * runLength { return n > 0 ? [0..<n] : [] }
        let runs = min(n / runLength, sampleRuns)
        let stride = n / runs
        let offset = (stride - runLength) / 2
        return (0..<runs).map { let start = ($0 * stride + offset) / 1024 * 1024; return start..<(start + runLength) }
    }

    /// The search for `rank` among `count` elements, from the magnitude keys of the
    /// sample `sampleRanges(count)` (runs concatenated, in order). Nil when the
    /// interval would hold too large a share of the tensor to collect.
    public init?(rank: Int, count: Int, sample: [UInt32]) {
        let ranges = Self.sampleRanges(count: count)
        precondition(sample.count == ranges.reduce(0) { $0 + $1.count }, "sample does not match sampleRanges")
        self.rank = rank
        var keys = sample
        if ranges.count == 1 && ranges[0].count == count {
            // The whole tensor: the sample gives the key itself.
            let key = keys.withUnsafeMutableBufferPointer { Self.select($0, rank) }
            low = key
            high = key
            estimate = key
            return
        }
        let s = keys.count
        let q = Double(rank) / Double(count)
        let middle = min(s - 1, Int(q * Double(s)))
        let estimate = keys.withUnsafeMutableBufferPointer { Self.select($0, middle) }
        self.estimate = estimate
        // Spread of the share below the estimate between runs (batch means; every run
        // of a tensor sampled in runs is `runLength` long).
        let shares = stride(from: 0, to: s, by: Self.runLength).map { start in
            Double(sample[start..<(start + Self.runLength)].count { $0 < estimate }) / Double(Self.runLength)
        }
        let mean = shares.reduce(0, +) / Double(shares.count)
        let variance = shares.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(shares.count - 1, 1))
        let betweenRuns = (variance / Double(shares.count)).squareRoot()
        let binomial = (q * (1 - q) / Double(s)).squareRoot()
        let margin = Self.confidence * max(betweenRuns, binomial) + 2 / Double(s)
        let lowIndex = Int(((q - margin) * Double(s)).rounded(.down))
        let highIndex = Int(((q + margin) * Double(s)).rounded(.up))
        let share = Double(min(highIndex, s) - max(lowIndex, 0)) / Double(s)
        guard share <= Self.maxCandidateShare else { return nil }
        // The first selection left smaller keys before `middle` and larger after it.
        // (The margin keeps lowIndex below and highIndex above `middle`.)
        low = lowIndex <= 0 ? 0 : lowIndex >= middle ? estimate
            : keys.withUnsafeMutableBufferPointer { Self.select($0, lowIndex, in: 0..<middle) }
        high = highIndex >= s - 1 ? UInt32.max : highIndex <= middle ? estimate
            : keys.withUnsafeMutableBufferPointer { Self.select($0, highIndex, in: (middle + 1)..<s) }
    }

    /// One chunk's part of the pass: how many of `values` lie below the interval and
    /// below and at the estimate, with the keys inside the interval in index order if
    /// `budget` (keys the pass may still keep, shared by its chunks) has room for them.
    /// `scratch` holds at least `values.count` keys.
    public func collect(_ values: UnsafeBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<UInt32>,
                        budget: Locked<Int>) -> ChunkCandidates {
        var below = 0, belowEstimate = 0, atEstimate = 0
        // Writes at most `values.count` keys: `kept` grows by at most one per value.
        precondition(scratch.count >= values.count, "key scratch shorter than the chunk")
        var kept = 0
        let low = UInt64(self.low), span = UInt64(high &- self.low), estimate = UInt64(self.estimate)
        let out = scratch.baseAddress!
        for v in values {
            // Comparisons as borrows of 64-bit subtractions (keys are below 2³¹), so
            // the compiler has no branch to make of them; a mispredicted branch per
            // entry would cost more than the whole loop.
            let key = UInt64(magnitudeKey(v))
            below &+= Int((key &- low) &>> 63)
            belowEstimate &+= Int((key &- estimate) &>> 63)
            atEstimate &+= Int(((key ^ estimate) &- 1) &>> 63)
            // Stored always, kept by advancing.
            out[kept] = UInt32(truncatingIfNeeded: key)
            kept &+= Int(1 &- ((span &- ((key &- low) & 0xffff_ffff)) &>> 63))
        }
        let fits = budget.withLock { remaining in
            guard remaining >= kept else { return false }
            remaining -= kept
            return true
        }
        return ChunkCandidates(below: below, belowEstimate: belowEstimate, atEstimate: atEstimate,
                               keys: fits ? Array(UnsafeBufferPointer(start: out, count: kept)) : nil)
    }

    /// The element at `rank`, and each chunk's count of its key, from every chunk's
    /// part in chunk order; nil when the rank lies outside the collected interval, or
    /// a chunk's keys were left out for want of budget.
    /// Deltas of low-precision weights take few distinct values, so the sample's
    /// estimate is usually the key itself, which the chunks' counts confirm; only
    /// otherwise are the candidates gathered for a selection.
    public func resolve(_ chunks: [ChunkCandidates]) -> (boundary: RankBoundary, keyCounts: [Int])? {
        let belowEstimate = chunks.reduce(0) { $0 + $1.belowEstimate }
        let atEstimate = chunks.reduce(0) { $0 + $1.atEstimate }
        if rank >= belowEstimate && rank < belowEstimate + atEstimate {
            return (RankBoundary(key: estimate, ordinal: rank - belowEstimate), chunks.map(\.atEstimate))
        }
        let kept = chunks.compactMap(\.keys)
        guard kept.count == chunks.count else { return nil }
        let below = chunks.reduce(0) { $0 + $1.below }
        let total = kept.reduce(0) { $0 + $1.count }
        guard rank >= below, rank - below < total else { return nil }
        let target = rank - below
        var all: [UInt32] = []
        all.reserveCapacity(total)
        for keys in kept { all.append(contentsOf: keys) }
        let key = all.withUnsafeMutableBufferPointer { Self.select($0, target) }
        let smaller = all.count { $0 < key }
        return (RankBoundary(key: key, ordinal: target - smaller), kept.map { keys in keys.count { $0 == key } })
    }

    /// The `k`-th smallest of `values` (0-based), reordering them: quickselect with a
    /// median-of-three pivot, finishing with a sort if the partitions stop shrinking,
    /// so crafted inputs cannot make it quadratic.
    static func select(_ values: UnsafeMutableBufferPointer<UInt32>, _ k: Int) -> UInt32 {
        select(values, k, in: 0..<values.count)
    }

    /// The `k`-th smallest of `values` (0-based), given that it lies in `range`:
    /// every value before the range is no larger and every value after no smaller.
    static func select(_ values: UnsafeMutableBufferPointer<UInt32>, _ k: Int, in range: Range<Int>) -> UInt32 {
        precondition(range.contains(k) && range.upperBound <= values.count, "rank outside the values")
        // The scans stay inside lo...hi: after the median of three, values[lo] ≤ pivot
        // ≤ values[hi] stop them, and each swap leaves such a stopper on either side.
        var lo = range.lowerBound, hi = range.upperBound - 1
        var rounds = 0
        while lo < hi {
            rounds += 1
            if rounds > 64 {
                var rest = UnsafeMutableBufferPointer(rebasing: values[lo...hi])
                rest.sort()
                return values[k]
            }
            let mid = lo + (hi - lo) / 2
            if values[mid] < values[lo] { values.swapAt(mid, lo) }
            if values[hi] < values[lo] { values.swapAt(hi, lo) }
            if values[hi] < values[mid] { values.swapAt(hi, mid) }
            let pivot = values[mid]
            var i = lo, j = hi
            while i <= j {
                while values[i] < pivot { i += 1 }
                while values[j] > pivot { j -= 1 }
                if i <= j {
                    values.swapAt(i, j)
                    i += 1
                    j -= 1
                }
            }
            if k <= j {
                hi = j
            } else if k >= i {
                lo = i
            } else {
                return values[k]
            }
        }
        return values[k]
    }
}

/// One chunk's share of a candidate pass: counts against the interval and the
/// estimate, and the keys inside the interval in index order.
public struct ChunkCandidates: Sendable, Hashable {
    /// Entries below the interval, below the estimate and equal to it.
    public var below: Int
    public var belowEstimate: Int
    public var atEstimate: Int
    /// Nil when the pass's budget had no room left for them.
    public var keys: [UInt32]?

    public init(below: Int = 0, belowEstimate: Int = 0, atEstimate: Int = 0, keys: [UInt32]? = []) {
        self.below = below
        self.belowEstimate = belowEstimate
        self.atEstimate = atEstimate
        self.keys = keys
    }
}
