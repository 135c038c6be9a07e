import Merging
import Testing

/// The plain reference: the non-zero finite magnitudes, largest first.
private func sortedMagnitudes(_ values: [Float]) -> [Float] {
    values.filter { $0.isFinite && $0 != 0 }.map(\.magnitude).sorted(by: >)
}

/// Runs both passes over `values`, split into chunks of `chunk`, for the `k` largest;
/// `mostlyZero` puts three zeros after each value, so chunks take the histogram's other path.
private func select(_ values: [Float], k: Int, chunk: Int, mostlyZero: Bool) -> (LargestMagnitudes, key: UInt32, sum: Double, atLeast: Int) {
    let values = mostlyZero ? values.flatMap { [$0, 0, 0, -0.0] } : values
    let histogram = MagnitudeHistogram()
    let keyCounts = BinKeyCounts(capacity: 2)
    values.withUnsafeBufferPointer { all in
        for start in stride(from: 0, to: all.count, by: chunk) {
            let part = UnsafeBufferPointer(rebasing: all[start..<min(all.count, start + chunk)])
            histogram.add(part.baseAddress!, part.count, zeros: part.count { $0 == 0 })
        }
        histogram.flush()
        let largest = histogram.largest(k)
        keyCounts.select([largest.bin, 0])
        for start in stride(from: 0, to: all.count, by: chunk) {
            keyCounts.add(all.baseAddress! + start, min(chunk, all.count - start))
        }
    }
    let largest = histogram.largest(k)
    let resolved = largest.resolve(keyCounts.counts(of: largest.bin))
    return (largest, resolved.key, resolved.sum, resolved.atLeast)
}

/// Values on both sides of coarse bin edges (lower bits 0, 1, 0x7ffe, 0x7fff), with
/// ties, zeros of both signs, NaN and infinities, in a shuffled order.
private func edgeValues(bins: [UInt32], copies: Int, seed: UInt64) -> [Float] {
    var values: [Float] = []
    for bin in bins {
        for low: UInt32 in [0, 1, 0x7ffe, 0x7fff] {
            for c in 0..<copies { values.append(Float(bitPattern: bin << 15 | low) * (c % 2 == 0 ? 1 : -1)) }
        }
    }
    values += [0, -0, 0, .nan, .infinity, -.infinity]
    var state = seed
    for i in values.indices.reversed() {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        values.swapAt(i, Int(state >> 33) % (i + 1))
    }
    return values
}

@Test(arguments: [1, 7, 8, 9, 64, 1000])
func theKLargestMagnitudesMatchSortingAcrossBinEdgesAndTies(chunk: Int) {
    // Bins of one exponent range, so every sum below is exact in Double.
    let values = edgeValues(bins: [0x7e00, 0x7e01, 0x7e02, 0x7e80, 0x7e81], copies: 3, seed: UInt64(chunk))
    let sorted = sortedMagnitudes(values)
    for mostlyZero in [false, true] {
        // Every k from 1 past the last non-zero magnitude: each tie group's first and last
        // member, and both sides of every bin edge.
        for k in 1...(sorted.count + 2) {
            let found = select(values, k: k, chunk: chunk, mostlyZero: mostlyZero)
            let expectedSum = sorted.prefix(k).reduce(0.0) { $0 + Double($1) }
            #expect(found.sum == expectedSum, "k \(k)")
            if k <= sorted.count {
                let threshold = sorted[k - 1]
                #expect(found.key == threshold.bitPattern, "k \(k)")
                #expect(found.atLeast == sorted.count { $0 >= threshold }, "k \(k)")
                #expect(found.0.bin == Int(threshold.bitPattern >> 15))
            } else {
                #expect(found.0.bin == nil && found.atLeast == sorted.count && found.key == 1)
            }
        }
    }
}

@Test func subnormalsAndTheLargestFiniteMagnitudeAreRankedByKey() {
    // Bin 0 (subnormals next to the zeros) and the last finite bin 0xfeff, beside NaN and ±Inf.
    let values = edgeValues(bins: [0, 1, 0xfeff], copies: 2, seed: 3)
    let sorted = sortedMagnitudes(values)
    for k in 1...sorted.count {
        let found = select(values, k: k, chunk: 9, mostlyZero: k % 2 == 0)
        #expect(found.key == sorted[k - 1].bitPattern, "k \(k)")
        #expect(found.atLeast == sorted.count { $0 >= sorted[k - 1] }, "k \(k)")
    }
}

@Test func binKeyCountsCountEveryKeyOfTheSelectedBinsOnly() {
    let values = edgeValues(bins: [0x7e00, 0x7e01, 0x7f00], copies: 5, seed: 11)
    let counts = BinKeyCounts(capacity: 3)
    counts.select([0x7e01, nil, 0x7f00, 0x7e01])
    #expect(counts.bins == [0x7e01, 0x7f00])
    values.withUnsafeBufferPointer { counts.add($0.baseAddress!, $0.count) }
    for bin in [0x7e00, 0x7e01, 0x7f00] {
        let keys = counts.counts(of: bin)
        #expect((keys == nil) == (bin == 0x7e00))
        guard let keys else { continue }
        for low in 0..<MagnitudeBins.fineCount {
            let key = UInt32(bin) << 15 | UInt32(low)
            #expect(keys[low] == values.count { $0.isFinite && $0.magnitude.bitPattern == key })
        }
    }
}

@Test func theHistogramSumsEachBinExactlyPastItsPackedCapacity() {
    // More entries than the packed words hold (2²³) in one bin, in one call and in two,
    // beside three neighbouring keys of another bin.
    let many = (1 << 23) + 5
    let others = [Float(bitPattern: 0x4040_0000), Float(bitPattern: 0x4040_0001), -Float(bitPattern: 0x4040_7fff)]
    let values = [Float](repeating: 1.5, count: many) + others
    let othersSum = others.reduce(0.0) { $0 + Double($1.magnitude) }
    for split in [values.count, 1 << 22] {
        let histogram = MagnitudeHistogram()
        values.withUnsafeBufferPointer { all in
            histogram.add(all.baseAddress!, split, zeros: 0)
            histogram.add(all.baseAddress! + split, all.count - split, zeros: 0)
        }
        histogram.flush()
        let bin = Int(Float(1.5).bitPattern >> 15), other = 0x4040_0000 >> 15
        #expect(histogram.counts[bin] == many && histogram.sum(bin) == 1.5 * Double(many))
        #expect(histogram.counts[other] == 3 && histogram.sum(other) == othersSum)
        #expect(histogram.largest(3).sumAbove == 0 && histogram.largest(4).sumAbove == othersSum)
    }
}

@Test func aHistogramCountingAllKeepsZerosAndNonFiniteMagnitudesInTheirBins() {
    // The rank searches' pass 1: every magnitude in its bin, zeros of both signs in bin 0,
    // NaN and infinities in theirs, from a few values whose bins are tracked and then
    // from more than the tracked-bins limit.
    let values = edgeValues(bins: [0, 0x7e00, 0xfeff], copies: 3, seed: 5) + [Float](repeating: 0, count: 20_000)
    let histogram = MagnitudeHistogram(countsAll: true)
    values.withUnsafeBufferPointer { all in
        histogram.add(all.baseAddress!, 30, zeros: 0)
        histogram.add(all.baseAddress! + 30, all.count - 30, zeros: 0)
    }
    histogram.flush()
    var expected = [Int: Int]()
    for v in values { expected[Int(magnitudeKey(v) >> 15), default: 0] += 1 }
    let used = (0..<MagnitudeBins.coarseCount).filter { histogram.counts[$0] != 0 }
    #expect(Set(used) == Set(expected.keys))
    for (bin, count) in expected { #expect(histogram.counts[bin] == count, "bin \(bin)") }
}
