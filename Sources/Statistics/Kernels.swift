import Merging

/// The chunk kernels of the two passes. Every pointer argument holds at least `count`
/// elements (the caller's chunk buffers). Vector loads read 8 lanes at `i` only while
/// `i + 8 <= count`; tails go one entry at a time. Float sums are kept in 8 lanes over
/// blocks of 33 groups (264 entries), then added into Double, which bounds the rounding
/// error; each kernel's plain reference in Tests/StatisticsTests sums the same way.
enum DeltaKernels {
    typealias Lanes = SIMD8<Float>
    /// Magnitude keys (below 2³¹) and counters, as signed lanes so comparisons order them.
    typealias Keys = SIMD8<Int32>
    static let block = 256
    static let limit = Keys(repeating: Int32(bitPattern: MagnitudeBins.nonFinite))

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>, _ i: Int) -> Lanes {
        UnsafeRawPointer(p + i).loadUnaligned(as: Lanes.self)
    }

    @inline(__always)
    static func keys(_ v: Lanes) -> Keys { unsafeBitCast(v, to: Keys.self) & Keys(repeating: 0x7fff_ffff) }

    /// A comparison as lanes of all ones (true) or zeros. The generic `replacing(with:where:)`
    /// and `pointwiseMax` compile to lane-by-lane loops, so the kernels select with these
    /// masks and bitwise operations instead; subtracting a mask counts its true lanes.
    @inline(__always)
    static func ones(_ mask: SIMDMask<Keys>) -> Keys { unsafeBitCast(mask, to: Keys.self) }

    @inline(__always)
    static func keep(_ v: Lanes, _ mask: Keys) -> Lanes { unsafeBitCast(unsafeBitCast(v, to: Keys.self) & mask, to: Lanes.self) }

    /// δ = tuned − base in place over `tuned`.
    static func subtract(_ base: UnsafePointer<Float>, from tuned: UnsafeMutablePointer<Float>, _ count: Int) {
        for i in 0..<count { tuned[i] -= base[i] }
    }

    /// δ = tuned − base with `tuned` read from `count` BF16 values (2 × `count` bytes, any alignment).
    static func subtract(_ base: UnsafePointer<Float>, fromBF16 tuned: UnsafeRawPointer, into delta: UnsafeMutablePointer<Float>, _ count: Int) {
        for i in 0..<count {
            delta[i] = Float(bitPattern: UInt32(tuned.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) &<< 16) - base[i]
        }
    }

    /// Σ|θ₀| and the number of finite entries.
    static func baseMagnitude(_ base: UnsafePointer<Float>, _ count: Int) -> (sum: Double, finite: Int) {
        var finite = Keys(), sum = 0.0, i = 0
        while i + 8 <= count {
            let end = min(count - 8, i + block)
            var partial = Lanes()
            while i <= end {
                let k = keys(load(base, i)), ok = ones(k .< limit)
                finite &-= ok
                partial += unsafeBitCast(k & ok, to: Lanes.self)
                i += 8
            }
            sum += Double(partial.sum())
        }
        var finiteCount = Int(finite.wrappedSum())
        for value in UnsafeBufferPointer(start: base + i, count: count - i) where value.isFinite {
            sum += Double(value.magnitude)
            finiteCount += 1
        }
        return (sum, finiteCount)
    }

    /// Adds one chunk of a delta to its zeros, non-finite entries, Σδ² and max |δ| over the
    /// finite entries, and for each of `bounds` (magnitude keys below `MagnitudeBins.nonFinite`)
    /// the entries at most it. The first four bounds share the others' read; any further
    /// ones are counted one at a time. Returns the chunk's zeros and non-finite entries.
    static func measure(_ delta: UnsafePointer<Float>, _ count: Int, _ bounds: [UInt32],
                        into figures: inout DeltaFigures) -> (zeros: Int, nonFinite: Int) {
        let bound = { (j: Int) in Keys(repeating: j < bounds.count ? Int32(bitPattern: bounds[j]) : -1) }
        let b0 = bound(0), b1 = bound(1), b2 = bound(2), b3 = bound(3)
        var c0 = Keys(), c1 = Keys(), c2 = Keys(), c3 = Keys(), zeros = Keys(), finite = Keys(), high = Keys()
        var squares = 0.0, i = 0
        while i + 8 <= count {
            let end = min(count - 8, i + block)
            var partial = Lanes()
            while i <= end {
                let v = load(delta, i), k = keys(v), ok = ones(k .< limit)
                zeros &-= ones(k .== Keys())
                finite &-= ok
                partial += keep(v * v, ok)
                let candidate = k & ok
                high ^= (high ^ candidate) & ones(candidate .> high)
                c0 &-= ones(k .<= b0)
                c1 &-= ones(k .<= b1)
                c2 &-= ones(k .<= b2)
                c3 &-= ones(k .<= b3)
                i += 8
            }
            squares += Double(partial.sum())
        }
        var zeroCount = Int(zeros.wrappedSum()), nonFinite = i - Int(finite.wrappedSum()), maxKey = UInt32(high.max())
        for (j, c) in [c0, c1, c2, c3].prefix(bounds.count).enumerated() { figures.withinThreshold[j] += Int(c.wrappedSum()) }
        for j in bounds.indices.dropFirst(4) { figures.withinThreshold[j] += (0..<i).count { magnitudeKey(delta[$0]) <= bounds[j] } }
        for value in UnsafeBufferPointer(start: delta + i, count: count - i) {
            let key = magnitudeKey(value)
            if key == 0 { zeroCount += 1 } else if key >= MagnitudeBins.nonFinite { nonFinite += 1 } else {
                squares += Double(value) * Double(value)
                maxKey = max(maxKey, key)
            }
            for j in bounds.indices where key <= bounds[j] { figures.withinThreshold[j] += 1 }
        }
        figures.zeros += zeroCount
        figures.nonFinite += nonFinite
        figures.sumOfSquares += squares
        figures.maxAbs = max(figures.maxAbs, Float(bitPattern: maxKey))
        return (zeroCount, nonFinite)
    }

    /// Pair figures on the positions where both deltas are finite.
    static func compare(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int, into pair: inout PairFigures) {
        var positions = Keys(), both = Keys(), agree = Keys()
        var dot = 0.0, squaresA = 0.0, squaresB = 0.0, i = 0
        while i + 8 <= count {
            let end = min(count - 8, i + block)
            var partialDot = Lanes(), partialA = Lanes(), partialB = Lanes()
            while i <= end {
                let u = load(a, i), v = load(b, i), ku = keys(u), kv = keys(v)
                let valid = ones(ku .< limit) & ones(kv .< limit)
                let x = keep(u, valid), y = keep(v, valid)
                positions &-= valid
                partialDot += x * y
                partialA += x * x
                partialB += y * y
                let nonzero = valid & ~ones(ku .== Keys()) & ~ones(kv .== Keys())
                both &-= nonzero
                agree &-= nonzero & ones((unsafeBitCast(u, to: Keys.self) ^ unsafeBitCast(v, to: Keys.self)) .>= Keys())
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
                if u.sign == v.sign { agreeCount += 1 }
            }
        }
        pair.positions += positionCount
        pair.dot += dot
        pair.squaresFirst += squaresA
        pair.squaresSecond += squaresB
        pair.bothNonzero += bothCount
        pair.signAgreements += agreeCount
    }

    /// TIES election with sum consensus and unit weights: the elected sign is that of Σδ
    /// (a zero sum elects +); a non-zero entry of the other sign is dropped. Positions
    /// where any delta is non-finite are skipped.
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

    /// The support screen of a pair in pass 2. Per delta, finite entries with magnitude key
    /// at or above `low` may be in its top-k support and those at or above `high` surely
    /// are (zeros never: `low` ≥ 1). Positions where both surely are add to `sure`;
    /// positions where both may be, but not both surely, are kept in `records` (key of
    /// the first delta in the high half) and decided once the exact thresholds are known.
    /// A group of eight positions is looked at entry by entry only when both reach `low`
    /// somewhere in it.
    static func screenSupports(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int,
                               low: (UInt32, UInt32), high: (UInt32, UInt32), sure: inout Int, records: inout [UInt64]) {
        let lowA = Keys(repeating: Int32(low.0)), lowB = Keys(repeating: Int32(low.1))
        func screen(_ i: Int) {
            let ka = magnitudeKey(a[i]), kb = magnitudeKey(b[i])
            guard ka >= low.0, kb >= low.1, ka < MagnitudeBins.nonFinite, kb < MagnitudeBins.nonFinite else { return }
            if ka >= high.0 && kb >= high.1 { sure += 1 } else { records.append(UInt64(ka) &<< 32 | UInt64(kb)) }
        }
        var i = 0
        while i + 8 <= count {
            forEachLane((keys(load(a, i)) .>= lowA) .& (keys(load(b, i)) .>= lowB)) { screen(i + $0) }
            i += 8
        }
        for i in i..<count { screen(i) }
    }
}
