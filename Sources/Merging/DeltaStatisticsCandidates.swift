/// Counts of magnitude patterns (31-bit |δ| bit patterns, never 0): an
/// open-addressing hash table with linear probing. Fine-tuning deltas of
/// low-precision weights take few distinct values, so the table stays small
/// even when many entries are collected.
final class PatternCounts {
    private var keys: UnsafeMutablePointer<UInt32>
    private var counts: UnsafeMutablePointer<Int>
    private var capacity: Int
    private var shift: UInt32
    /// Distinct patterns held.
    private(set) var count = 0

    init(capacity: Int = 1024) {
        var size = 16, bits: UInt32 = 4
        while size < capacity {
            size *= 2
            bits += 1
        }
        self.capacity = size
        shift = 32 - bits
        keys = .allocate(capacity: size)
        keys.initialize(repeating: 0, count: size)
        counts = .allocate(capacity: size)
        counts.initialize(repeating: 0, count: size)
    }

    deinit {
        keys.deallocate()
        counts.deallocate()
    }

    func add(_ key: UInt32, _ n: Int = 1) {
        var slot = Int((key &* 0x9e37_79b1) &>> shift)
        while true {
            let k = keys[slot]
            if k == key {
                counts[slot] += n
                return
            }
            if k == 0 {
                keys[slot] = key
                counts[slot] = n
                count += 1
                if count * 2 > capacity { grow() }
                return
            }
            slot = (slot + 1) & (capacity - 1)
        }
    }

    /// Counts each of `keys[0..<n]` once. The table's fields are read once,
    /// not per pattern, so the loop costs a hash and a probe per pattern.
    func add(_ list: UnsafePointer<UInt32>, count n: Int) {
        var i = 0
        while i < n {
            let keys = self.keys, counts = self.counts, mask = capacity - 1, shift = self.shift
            var added = 0
            // Stop before the table could pass half full, then grow and go on.
            let room = capacity / 2 - count
            while i < n && added < room {
                let key = list[i]
                var slot = Int((key &* 0x9e37_79b1) &>> shift)
                while keys[slot] != key && keys[slot] != 0 { slot = (slot + 1) & mask }
                if keys[slot] == key {
                    counts[slot] += 1
                } else {
                    keys[slot] = key
                    counts[slot] = 1
                    added += 1
                }
                i += 1
            }
            count += added
            if count * 2 >= capacity { grow() }
        }
    }

    /// Adds every pattern of `other` whose coarse bin is in `bins`.
    func add(_ other: PatternCounts, bins: ClosedRange<Int>) {
        other.forEach { key, n in
            if bins.contains(Int(key &>> MagnitudeBins.shift)) { add(key, n) }
        }
    }

    func forEach(_ body: (UInt32, Int) -> Void) {
        for slot in 0..<capacity where keys[slot] != 0 { body(keys[slot], counts[slot]) }
    }

    /// Patterns of coarse bin `bin` counted into the fine histogram `fine`
    /// (indexed by the low 15 bits), with `sign` 1 to add and −1 to take them out again.
    func spread(bin: Int, into fine: UnsafeMutablePointer<Int>, sign: Int = 1) {
        forEach { key, n in
            if Int(key &>> MagnitudeBins.shift) == bin { fine[Int(key & MagnitudeBins.fineMask)] += sign * n }
        }
    }

    /// Entries with a pattern in coarse bin `bin` at or below `key`.
    func count(bin: Int, atMost key: UInt32) -> Int {
        var total = 0
        forEach { k, n in
            if Int(k &>> MagnitudeBins.shift) == bin && k <= key { total += n }
        }
        return total
    }

    func removeAll() {
        guard count > 0 else { return }
        keys.update(repeating: 0, count: capacity)
        count = 0
    }

    private func grow() {
        let oldKeys = keys, oldCounts = counts, oldCapacity = capacity
        capacity *= 2
        shift -= 1
        keys = .allocate(capacity: capacity)
        keys.initialize(repeating: 0, count: capacity)
        counts = .allocate(capacity: capacity)
        counts.initialize(repeating: 0, count: capacity)
        count = 0
        for slot in 0..<oldCapacity where oldKeys[slot] != 0 { add(oldKeys[slot], oldCounts[slot]) }
        oldKeys.deallocate()
        oldCounts.deallocate()
    }
}

/// The exact values a scope collects around its top-1 % boundary: the
/// patterns of its tensors that fell into its candidate range.
final class ScopeCandidates {
    let range: CandidateRange
    let patterns = PatternCounts()

    init(range: CandidateRange) {
        self.range = range
    }
}
