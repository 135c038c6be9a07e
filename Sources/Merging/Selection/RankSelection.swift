/// Exact rank selection on magnitudes without sorting.
///
/// Magnitude sparsifiers keep the entries whose rank, in the ascending order of
/// (|δ|, index), falls in a window [lo, hi). Ranks are found by a two-level radix
/// selection on |δ|'s bit pattern (for non-negative floats the bit pattern orders
/// like the value): a first pass counts the upper 16 bits, a second pass counts the
/// lower 15 bits of the entries in the one coarse bin that holds the rank. Both
/// passes stream over the data in chunks, so a tensor — or a whole model, for the
/// TIES paper's global trim — never has to be held in memory or sorted.

/// |x| as an order-preserving integer (the float's bits without the sign).
@inline(__always)
public func magnitudeKey(_ x: Float) -> UInt32 { x.bitPattern & 0x7fff_ffff }

/// The element at one rank of the (|δ|, index) order: its magnitude key, and how
/// many elements with the same key precede it in index order.
public struct RankBoundary: Sendable, Hashable {
    /// Magnitude key of the element at the rank.
    public var key: UInt32
    /// Elements with the same key before it, in index order.
    public var ordinal: Int

    /// The element with `key`, preceded by `ordinal` equal keys.
    public init(key: UInt32, ordinal: Int) {
        self.key = key
        self.ordinal = ordinal
    }
}

/// Where a chunk sits among the entries equal to a window's boundary keys: how many
/// precede it, and (when known) how many it holds.
public struct ChunkTies: Sendable, Hashable {
    /// Entries equal to the lower boundary key before the chunk, and in it (nil: unknown).
    public var lowerBefore = 0
    public var lowerInChunk: Int?
    /// Entries equal to the upper boundary key before the chunk, and in it (nil: unknown).
    public var upperBefore = 0
    public var upperInChunk: Int?

    /// A chunk position among the boundary ties.
    public init(lowerBefore: Int = 0, lowerInChunk: Int? = nil, upperBefore: Int = 0, upperInChunk: Int? = nil) {
        self.lowerBefore = lowerBefore
        self.lowerInChunk = lowerInChunk
        self.upperBefore = upperBefore
        self.upperInChunk = upperInChunk
    }
}

/// The entries kept by a magnitude sparsifier: ranks [lower, upper) of the
/// (|δ|, index) order, each end given by the element sitting at that rank
/// (nil: the window is open on that side).
public struct MagnitudeWindow: Sendable, Hashable {
    /// Element at the first kept rank; nil keeps from rank 0.
    public var lower: RankBoundary?
    /// Element at the first rank past the window; nil keeps to the end.
    public var upper: RankBoundary?
    /// True when no rank is kept.
    public var isEmpty: Bool

    /// A window between two boundaries.
    public init(lower: RankBoundary?, upper: RankBoundary?, isEmpty: Bool = false) {
        self.lower = lower
        self.upper = upper
        self.isEmpty = isEmpty
    }

    /// True when applying the window needs each entry's ordinal among equal
    /// magnitudes (a boundary splits a group of equal magnitudes).
    public var needsOrdinals: Bool {
        (lower?.ordinal ?? 0) > 0 || (upper?.ordinal ?? 0) > 0
    }

    /// Keys whose count before a chunk the window needs (to place ordinals).
    var tieKeys: (lower: UInt32?, upper: UInt32?) {
        ((lower?.ordinal ?? 0) > 0 ? lower?.key : nil, (upper?.ordinal ?? 0) > 0 ? upper?.key : nil)
    }

    /// Zeroes the entries of `values` outside the window. `ties` places the chunk among
    /// the entries equal to the boundary keys (needed only when `needsOrdinals`).
    public func apply(to values: UnsafeMutableBufferPointer<Float>, ties: ChunkTies = ChunkTies()) {
        if isEmpty {
            values.update(repeating: 0)
            return
        }
        let lowKey = lower?.key ?? 0
        let highKey = upper?.key ?? UInt32.max
        let lowOrdinal = lower?.ordinal ?? 0
        let highOrdinal = upper?.ordinal ?? 0
        // Whether this chunk's entries equal to a boundary key all come at or past the
        // boundary's ordinal among them, all before it, or on both sides (nil) — the
        // split happens in at most one chunk per boundary.
        func pastOrdinal(_ ordinal: Int, before: Int, inChunk: Int?) -> Bool? {
            if before >= ordinal { return true }
            if let inChunk, before + inChunk <= ordinal { return false }
            return nil
        }
        // Ties of the lower key are kept from its ordinal on, of the upper key before it.
        let keepLowTies = lowOrdinal > 0 ? pastOrdinal(lowOrdinal, before: ties.lowerBefore, inChunk: ties.lowerInChunk) : true
        let keepHighTies = highOrdinal > 0 ? pastOrdinal(highOrdinal, before: ties.upperBefore, inChunk: ties.upperInChunk).map(!) : false
        if let keepLow = keepLowTies, let keepHigh = keepHighTies {
            Self.keep(values, lowKey: lowKey, keepLow: keepLow, highKey: upper == nil ? nil : highKey, keepHigh: keepHigh)
            return
        }
        // The split chunk: settle boundary entries in index order (dropped ones become
        // 0, which the select below treats like a kept 0), then select the rest.
        let tieLow: UInt32 = keepLowTies == nil ? lowKey : UInt32.max
        let tieHigh: UInt32 = keepHighTies == nil ? highKey : UInt32.max
        var lowSeen = ties.lowerBefore
        var highSeen = ties.upperBefore
        for i in 0..<values.count {
            let key = magnitudeKey(values[i])
            guard key == tieLow || key == tieHigh else { continue }
            var keep = true
            if key == tieLow {
                keep = lowSeen >= lowOrdinal
                lowSeen += 1
            }
            if key == tieHigh {
                keep = keep && highSeen < highOrdinal
                highSeen += 1
            }
            if !keep { values[i] = 0 }
        }
        Self.keep(values, lowKey: lowKey, keepLow: keepLowTies ?? true, highKey: upper == nil ? nil : highKey,
                  keepHigh: keepHighTies ?? true)
    }

    /// Zeroes the entries whose key is below `lowKey` (or equal, unless `keepLow`) or
    /// above `highKey` (or equal, unless `keepHigh`; nil: no upper end) — one
    /// vectorizable select on a single unsigned comparison.
    static func keep(
        _ values: UnsafeMutableBufferPointer<Float>, lowKey: UInt32, keepLow: Bool, highKey: UInt32?, keepHigh: Bool
    ) {
        // Magnitude keys never exceed 0x7fff_ffff, so lowKey + 1 cannot wrap.
        let first = keepLow ? lowKey : lowKey + 1
        var last = UInt32.max
        if let highKey {
            if !keepHigh && highKey == 0 {
                values.update(repeating: 0)
                return
            }
            last = keepHigh ? highKey : highKey - 1
        }
        if first > last {
            values.update(repeating: 0)
            return
        }
        let span = last &- first
        for i in 0..<values.count {
            values[i] = magnitudeKey(values[i]) &- first <= span ? values[i] : 0
        }
    }

    /// The window of ranks [lo, hi) over `count` elements, given the elements found
    /// at rank `lo` and rank `hi` (nil when the rank is 0 or `count`).
    static func ranks(_ lo: Int, _ hi: Int, count: Int, at find: (Int) -> RankBoundary) -> MagnitudeWindow {
        if hi <= lo || count == 0 { return MagnitudeWindow(lower: nil, upper: nil, isEmpty: true) }
        return MagnitudeWindow(lower: lo > 0 ? find(lo) : nil, upper: hi < count ? find(hi) : nil)
    }
}

/// Finds the elements at chosen ranks of the (|δ|, index) order in two streaming passes.
///
/// Usage: feed every chunk to `countCoarse`, call `finishCoarse()`, feed every chunk
/// (in any order) to `countFine`, then read `boundaries()`. Pass 1 is a
/// `MagnitudeHistogram` of every key (zeros and non-finite magnitudes included, as
/// ranks count them), walked up from the bottom to each rank's bin; pass 2 is
/// `BinKeyCounts` on those bins. Counts are integers, so the result does not depend on
/// chunk order or on how chunks were split among threads; partial counters from
/// several threads are combined with `absorb`.
public struct RankSearch: Sendable {
    /// The ranks searched, ascending order not required.
    public let ranks: [Int]
    /// Pass-1 counts (nil once pass 1 is finished).
    private var coarse: MagnitudeHistogram?
    /// Per searched rank: its coarse bin and its rank within that bin.
    public private(set) var targets: [(bin: Int, rankInBin: Int)] = []
    /// Pass-2 counts of the targets' bins (nil during pass 1).
    private var fine: BinKeyCounts?

    /// A search for the elements at `ranks` (0-based, ascending order of (|δ|, index)).
    public init(ranks: [Int]) {
        self.ranks = ranks
        coarse = MagnitudeHistogram(countsAll: true)
    }

    /// Pass 1: counts the coarse bins of `values`.
    public mutating func countCoarse(_ values: UnsafeBufferPointer<Float>) {
        guard let coarse else { preconditionFailure("coarse counts of a pass-2 counter") }
        if let base = values.baseAddress { coarse.add(base, values.count, zeros: 0) }
    }

    /// Adds another searcher's counts (same ranks, same pass) to this one.
    public mutating func absorb(_ other: RankSearch) {
        if let fine, let otherFine = other.fine {
            fine.add(otherFine)
        } else if let coarse, let otherCoarse = other.coarse {
            otherCoarse.flush()
            coarse.add(otherCoarse)
        }
    }

    /// Ends pass 1: locates each rank's coarse bin.
    public mutating func finishCoarse() {
        guard let coarse else { preconditionFailure("pass 1 finished twice") }
        coarse.flush()
        targets = ranks.map { Self.locate($0, in: coarse.counts, count: MagnitudeBins.coarseCount) }
        self.coarse = nil
        fine = newFine()
    }

    /// Key counts of the targets' bins, all magnitudes counted, starting from zero.
    private func newFine() -> BinKeyCounts {
        let counts = BinKeyCounts(capacity: max(targets.count, 1), countsAll: true)
        counts.select(targets.map(\.bin))
        return counts
    }

    /// A fresh pass-2 counter sharing this searcher's coarse result (for another thread).
    public func fineCounter() -> RankSearch {
        var copy = self
        copy.fine = newFine()
        return copy
    }

    /// Pass 2: counts the lower 15 key bits of the entries in each target's coarse bin.
    public mutating func countFine(_ values: UnsafeBufferPointer<Float>) {
        guard let fine else { preconditionFailure("pass 1 not finished") }
        if let base = values.baseAddress { fine.add(base, values.count) }
    }

    /// The element at each searched rank, in the order of `ranks`.
    public func boundaries() -> [RankBoundary] {
        targets.map { target in
            let (low, ordinal) = Self.locate(target.rankInBin, in: fine!.counts(of: target.bin)!, count: MagnitudeBins.fineCount)
            return RankBoundary(key: UInt32(target.bin) &<< 15 | UInt32(low), ordinal: ordinal)
        }
    }

    /// The first of `count` buckets, counted up from the bottom, that holds `rank`
    /// (the last if none does), and the rank within it.
    static func locate(_ rank: Int, in counts: UnsafePointer<Int>, count: Int) -> (Int, Int) {
        var before = 0
        var bucket = 0
        while bucket < count - 1 && before + counts[bucket] <= rank {
            before += counts[bucket]
            bucket += 1
        }
        return (bucket, rank - before)
    }

    /// Counts, in `values`, the entries whose key equals `key`.
    public static func countEqual(_ values: UnsafeBufferPointer<Float>, key: UInt32) -> Int {
        var n = 0
        for i in 0..<values.count where magnitudeKey(values[i]) == key { n += 1 }
        return n
    }
}
