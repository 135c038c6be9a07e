import Merging
import Testing
@testable import Statistics

// Each chunk kernel against a plain loop over the same values. Sizes straddle the
// 8-lane groups and the 264-entry blocks of the Float sums, so the vector part, the
// block ends and the tail are all crossed.

private let sizes = [0, 1, 7, 8, 9, 263, 264, 265, 271, 272, 529, 1000]

/// Values of many magnitudes with ties, ±0, NaN and ±Inf; `zeros` of every 8 set to 0.
private func values(_ count: Int, seed: UInt64, zeros: Int = 1) -> [Float] {
    var state = seed
    return (0..<count).map { i in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        let r = Int(state >> 40)
        if i % 8 < zeros { return i % 16 == 0 ? -0.0 : 0 }
        switch r % 97 {
        case 0: return .nan
        case 1: return r % 2 == 0 ? .infinity : -.infinity
        case 2: return Float(bitPattern: UInt32(r % 100))  // subnormal
        default: return Float(r % 2001 - 1000) * Float(sign: .plus, exponent: -(r % 30), significand: 1) / 7
        }
    }
}

/// Σ of `terms[0..<count]` (a multiple of 8) in Float over 8 lanes per block of 33 groups, then in Double.
private func blockSum(_ terms: [Float], _ count: Int) -> Double {
    var sum = 0.0, i = 0
    while i + 8 <= count {
        let end = min(count - 8, i + 256)
        var lanes = SIMD8<Float>()
        while i <= end {
            for lane in 0..<8 { lanes[lane] += terms[i + lane] }
            i += 8
        }
        sum += Double(lanes.sum())
    }
    return sum
}

@Test(arguments: sizes)
func measureMatchesAPlainCount(count: Int) {
    for zeros in [0, 1, 7] {
        let delta = values(count, seed: UInt64(count + 100 * zeros), zeros: zeros)
        let bounds: [UInt32] = [0, 0x3000_0000, 0x3a83_126f, 0x3f80_0000, 0x7f7f_ffff, 5]
        var figures = DeltaFigures(thresholdCount: bounds.count)
        let chunk = delta.withUnsafeBufferPointer { DeltaKernels.measure($0.baseAddress!, count, bounds, into: &figures) }
        let finite = delta.filter(\.isFinite)
        #expect(chunk.zeros == delta.count { $0 == 0 } && figures.zeros == chunk.zeros)
        #expect(chunk.nonFinite == count - finite.count && figures.nonFinite == chunk.nonFinite)
        #expect(figures.maxAbs == finite.map(\.magnitude).max() ?? 0)
        #expect(figures.withinThreshold == bounds.map { b in delta.count { $0.isFinite && magnitudeKey($0) <= b } })
        // Float products in the vector part, Double products in the tail.
        let vectorPart = count / 8 * 8
        let squares = delta.indices.map { delta[$0].isFinite ? ($0 < vectorPart ? delta[$0] * delta[$0] : 0) : 0 }
        var expected = blockSum(squares, vectorPart)
        for v in delta[vectorPart...] where v.isFinite { expected += Double(v) * Double(v) }
        #expect(figures.sumOfSquares == expected)
    }
}

@Test(arguments: sizes)
func compareMatchesAPlainCount(count: Int) {
    let a = values(count, seed: 1 + UInt64(count)), b = values(count, seed: 2 + UInt64(count), zeros: 3)
    var pair = PairFigures(first: 0, second: 1)
    a.withUnsafeBufferPointer { a in b.withUnsafeBufferPointer { b in DeltaKernels.compare(a.baseAddress!, b.baseAddress!, count, into: &pair) } }
    let valid = (0..<count).filter { a[$0].isFinite && b[$0].isFinite }
    let both = valid.filter { a[$0] != 0 && b[$0] != 0 }
    #expect(pair.positions == valid.count)
    #expect(pair.bothNonzero == both.count)
    #expect(pair.signAgreements == both.count { a[$0].sign == b[$0].sign })
    let vectorPart = count / 8 * 8
    func expected(_ x: [Float], _ y: [Float]) -> Double {
        let terms = (0..<vectorPart).map { valid.contains($0) ? x[$0] * y[$0] : 0 }
        return valid.filter { $0 >= vectorPart }.reduce(blockSum(terms, vectorPart)) { $0 + Double(x[$1]) * Double(y[$1]) }
    }
    #expect(pair.dot == expected(a, b))
    #expect(pair.squaresFirst == expected(a, a))
    #expect(pair.squaresSecond == expected(b, b))
}

@Test(arguments: sizes)
func baseMagnitudeAndTheBF16DeltaMatchPlainLoops(count: Int) {
    let base = values(count, seed: 5 + UInt64(count))
    let result = base.withUnsafeBufferPointer { DeltaKernels.baseMagnitude($0.baseAddress!, count) }
    let vectorPart = count / 8 * 8
    let magnitudes = (0..<vectorPart).map { base[$0].isFinite ? base[$0].magnitude : 0 }
    #expect(result.finite == base.count(where: \.isFinite))
    #expect(result.sum == base[vectorPart...].filter(\.isFinite).reduce(blockSum(magnitudes, vectorPart)) { $0 + Double($1.magnitude) })
    // BF16 values at an odd byte offset, subtracted from the base.
    let tuned = values(count, seed: 9 + UInt64(count)).map { UInt16($0.bitPattern >> 16) }
    var bytes = [UInt8](repeating: 0, count: 1 + 2 * count)
    for (i, t) in tuned.enumerated() { bytes[1 + 2 * i] = UInt8(t & 0xff); bytes[2 + 2 * i] = UInt8(t >> 8) }
    var delta = [Float](repeating: 0, count: count + 1)
    bytes.withUnsafeBytes { raw in
        base.withUnsafeBufferPointer { b in
            delta.withUnsafeMutableBufferPointer { DeltaKernels.subtract(b.baseAddress!, fromBF16: raw.baseAddress! + 1, into: $0.baseAddress!, count) }
        }
    }
    let plain = (0..<count).map { Float(bitPattern: UInt32(tuned[$0]) << 16) - base[$0] }
    #expect(zip(delta, plain).allSatisfy { $0.bitPattern == $1.bitPattern })
}

@Test(arguments: sizes)
func theSupportScreenSplitsPositionsAsAPlainLoop(count: Int) {
    let a = values(count, seed: 3 + UInt64(count)), b = values(count, seed: 4 + UInt64(count), zeros: 2)
    for (low, high) in [((1, 1), (0x3f00_0000, 0x3e00_0000)), ((0x3c00_0000, 0x3d00_0000), (0x3d00_0000, 0x3d00_8000))] as [((UInt32, UInt32), (UInt32, UInt32))] {
        var sure = 0, records: [UInt64] = []
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                DeltaKernels.screenSupports(a.baseAddress!, b.baseAddress!, count, low: low, high: high, sure: &sure, records: &records)
            }
        }
        var plainSure = 0, plainRecords: [UInt64] = []
        for i in 0..<count where a[i].isFinite && b[i].isFinite && magnitudeKey(a[i]) >= low.0 && magnitudeKey(b[i]) >= low.1 {
            let ka = magnitudeKey(a[i]), kb = magnitudeKey(b[i])
            if ka >= high.0 && kb >= high.1 { plainSure += 1 } else { plainRecords.append(UInt64(ka) << 32 | UInt64(kb)) }
        }
        #expect(sure == plainSure && records == plainRecords)
    }
}

// Also sizes straddling the blocks in which mostly zero values are gathered.
@Test(arguments: sizes + [1023, 1024, 1025, 2049])
func theHistogramCountsAsAPlainLoopWhetherMostlyZeroOrNot(count: Int) {
    for zeros in [0, 2, 7, 8] {
        let v = values(count, seed: 7 + UInt64(count), zeros: zeros)
        let histogram = MagnitudeHistogram()
        v.withUnsafeBufferPointer { histogram.add($0.baseAddress!, count, zeros: v.count { $0 == 0 }) }
        histogram.flush()
        var counts = [Int: Int](), lowSums = [Int: Int]()
        for x in v where x.isFinite && x != 0 {
            counts[Int(magnitudeKey(x) >> 15), default: 0] += 1
            lowSums[Int(magnitudeKey(x) >> 15), default: 0] += Int(magnitudeKey(x) & 0x7fff)
        }
        let used = (0..<MagnitudeBins.coarseCount).filter { histogram.counts[$0] != 0 }
        #expect(Set(used) == Set(counts.keys))
        #expect(used.allSatisfy { histogram.counts[$0] == counts[$0] && histogram.lowSums[$0] == lowSums[$0] })
    }
}
