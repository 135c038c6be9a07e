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
/// The sample only decides the cost, never the result.
public struct CandidateRankSearch: Sendable, Hashable {
    /// Runs sampled from a large tensor, and the length of each.
    public static let sampleRuns = 128
    public static let runLength = 256
    /// Width of the interval in standard errors of the sample quantile.
    static let confidence = 5.0
    /// Share of the tensor above which collecting candidates is not worth it.
    static let maxCandidateShare = 0.25

    /// The rank searched, in the ascending (|δ|, index) order.
    public let rank: Int
    /// Keys collected as candidates: low...high.
    public let low: UInt32
    public let high: UInt32
    /// The sample's guess of the key at the rank (tried first when resolving).
    public let estimate: UInt32

    /// The element ranges sampled from a tensor of `count` elements: `sampleRuns`
    /// runs of `runLength` starting on multiples of 1024 elements (whole blocks of
    /// every quantized type), or the whole tensor when it is not much larger.
    public static func sampleRanges(count: Int) -> [Range<Int>] {
        if count <= 4 * sampleRuns * runLength { return count > 0 ? [0..<count] : [] }
        return (0..<sampleRuns).map { i in
            let start = (count / sampleRuns * i) / 1024 * 1024
            return start..<min(count, start + runLength)
        }
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
        let estimate = keys.withUnsafeMutableBufferPointer { Self.select($0, min(s - 1, Int(q * Double(s)))) }
        self.estimate = estimate
        // Spread of the share below the estimate between runs (batch means).
        var shares: [Double] = []
        var offset = 0
        for range in ranges {
            var below = 0
            for i in offset..<(offset + range.count) where sample[i] < estimate { below += 1 }
            shares.append(Double(below) / Double(range.count))
            offset += range.count
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
        low = lowIndex <= 0 ? 0 : keys.withUnsafeMutableBufferPointer { Self.select($0, lowIndex) }
        high = highIndex >= s - 1 ? UInt32.max : keys.withUnsafeMutableBufferPointer { Self.select($0, highIndex) }
    }

    /// One chunk's part of the pass: how many of `values` lie below the interval, with
    /// the keys inside it in index order. `scratch` holds at least `values.count` keys.
    public func collect(_ values: UnsafeBufferPointer<Float>, scratch: UnsafeMutableBufferPointer<UInt32>) -> ChunkCandidates {
        var below = 0
        var kept = 0
        let low = self.low, span = high &- low
        let out = scratch.baseAddress!
        for v in values {
            let key = magnitudeKey(v)
            below &+= key < low ? 1 : 0
            // Stored always, kept by advancing: one unsigned compare, no branch.
            out[kept] = key
            kept &+= key &- low <= span ? 1 : 0
        }
        return ChunkCandidates(below: below, keys: Array(UnsafeBufferPointer(start: out, count: kept)))
    }

    /// The element at `rank`, and each chunk's count of its key, from every chunk's
    /// part in chunk order; nil when the rank lies outside the collected interval.
    /// Deltas of low-precision weights take few distinct values, so the sample's
    /// estimate is usually the key itself: one counting pass confirms it, and only
    /// otherwise are the candidates gathered for a selection.
    public func resolve(_ chunks: [ChunkCandidates]) -> (boundary: RankBoundary, keyCounts: [Int])? {
        let below = chunks.reduce(0) { $0 + $1.below }
        let total = chunks.reduce(0) { $0 + $1.keys.count }
        guard rank >= below, rank - below < total else { return nil }
        let target = rank - below
        var (smaller, keyCounts) = Self.count(chunks, key: estimate)
        var key = estimate
        if target < smaller || target >= smaller + keyCounts.reduce(0, +) {
            var all: [UInt32] = []
            all.reserveCapacity(total)
            for chunk in chunks { all.append(contentsOf: chunk.keys) }
            key = all.withUnsafeMutableBufferPointer { Self.select($0, target) }
            (smaller, keyCounts) = Self.count(chunks, key: key)
        }
        return (RankBoundary(key: key, ordinal: target - smaller), keyCounts)
    }

    /// The candidates below `key`, and each chunk's count of `key`.
    static func count(_ chunks: [ChunkCandidates], key: UInt32) -> (smaller: Int, perChunk: [Int]) {
        var smaller = 0
        var perChunk: [Int] = []
        perChunk.reserveCapacity(chunks.count)
        for chunk in chunks {
            var equal = 0
            chunk.keys.withUnsafeBufferPointer { keys in
                for k in keys {
                    smaller &+= k < key ? 1 : 0
                    equal &+= k == key ? 1 : 0
                }
            }
            perChunk.append(equal)
        }
        return (smaller, perChunk)
    }

    /// The `k`-th smallest of `values` (0-based), reordering them: quickselect with a
    /// median-of-three pivot, finishing with a sort if the partitions stop shrinking,
    /// so crafted inputs cannot make it quadratic.
    static func select(_ values: UnsafeMutableBufferPointer<UInt32>, _ k: Int) -> UInt32 {
        precondition(k >= 0 && k < values.count, "rank outside the values")
        var lo = 0, hi = values.count - 1
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

/// One chunk's share of a candidate pass: entries below the interval, and the keys
/// inside it in index order.
public struct ChunkCandidates: Sendable, Hashable {
    public var below: Int
    public var keys: [UInt32]

    public init(below: Int = 0, keys: [UInt32] = []) {
        self.below = below
        self.keys = keys
    }
}
