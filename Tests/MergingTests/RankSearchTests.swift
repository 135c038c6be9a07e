import Testing
@testable import Merging

/// Every rank's element found by `RankSearch`, counted in two halves by two searchers
/// and combined, matches the (|δ|, index) sort — with zeros, subnormals, ties, an
/// infinity and NaNs among the values, which pass 2 must count like any other key.
@Test func rankSearchMatchesSortingWithZerosTiesAndNonFiniteValues() {
    var values: [Float] = []
    for i in 0..<3000 {
        switch i % 7 {
        case 0, 1: values.append(0)
        case 2: values.append(-0.25)
        case 3: values.append(Float(bitPattern: UInt32(i)))  // subnormal
        case 4: values.append(Float(i % 50) * 0.001 - 0.02)
        default: values.append(Float(i) * 1e-4)
        }
    }
    values[11] = .infinity
    values[12] = -.nan
    values[13] = .nan
    let order = values.indices.sorted { (magnitudeKey(values[$0]), $0) < (magnitudeKey(values[$1]), $1) }
    let ranks = [0, 1, 900, 1200, 1500, 2999, 2998, 2997, 1717]
    let halves = [Array(values[..<1234]), Array(values[1234...])]
    var search = RankSearch(ranks: ranks)
    var other = RankSearch(ranks: ranks)
    halves[0].withUnsafeBufferPointer { search.countCoarse($0) }
    halves[1].withUnsafeBufferPointer { other.countCoarse($0) }
    search.absorb(other)
    search.finishCoarse()
    var fine = search.fineCounter()
    halves[1].withUnsafeBufferPointer { search.countFine($0) }
    halves[0].withUnsafeBufferPointer { fine.countFine($0) }
    search.absorb(fine)
    for (rank, found) in zip(ranks, search.boundaries()) {
        let key = magnitudeKey(values[order[rank]])
        let ordinal = (0..<order[rank]).filter { magnitudeKey(values[$0]) == key }.count
        #expect(found == RankBoundary(key: key, ordinal: ordinal), "rank \(rank)")
    }
}

/// `RankSearch` against sorting on sizes on both sides of its internal boundaries: the
/// eight-entry groups of pass 2, the histogram's tracked-bins limit (2¹⁴ pending
/// entries), chunk edges of three workers' counters, and values at coarse bin edges
/// with ties, zeros of both signs and non-finite magnitudes.
@Test(arguments: [1, 2, 7, 8, 9, 17, 1000, 16_383, 16_384, 16_385, 40_001])
func rankSearchMatchesSortingOnEverySize(count: Int) {
    var values: [Float] = []
    var state: UInt64 = UInt64(count)
    for i in 0..<count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        let r = Int(state >> 33)
        let bin = UInt32([0, 1, 0x7e00, 0x7e01, 0xfeff][r % 5]), low = UInt32([0, 1, 0x7ffe, 0x7fff][(r / 5) % 4])
        switch r % 11 {
        case 0: values.append(i % 2 == 0 ? 0 : -0.0)
        case 1: values.append([Float.nan, .infinity, -.infinity][r % 3])
        default: values.append(Float(bitPattern: bin << 15 | low) * (r % 2 == 0 ? 1 : -1))
        }
    }
    let order = values.indices.sorted { (magnitudeKey(values[$0]), $0) < (magnitudeKey(values[$1]), $1) }
    let ranks = Array(Set([0, count / 3, count / 2, count - 2, count - 1].filter { $0 >= 0 })).sorted()
    // Three counters, each given every third chunk of `chunk` entries.
    for chunk in [count, 8, 4097] {
        var searches = (0..<3).map { _ in RankSearch(ranks: ranks) }
        func feed(_ count: (inout RankSearch, UnsafeBufferPointer<Float>) -> Void) {
            values.withUnsafeBufferPointer { all in
                for (c, start) in stride(from: 0, to: all.count, by: chunk).enumerated() {
                    count(&searches[c % 3], UnsafeBufferPointer(rebasing: all[start..<min(all.count, start + chunk)]))
                }
            }
        }
        feed { $0.countCoarse($1) }
        var search = RankSearch(ranks: ranks)
        for s in searches { search.absorb(s) }
        search.finishCoarse()
        searches = (0..<3).map { _ in search.fineCounter() }
        feed { $0.countFine($1) }
        var fine = searches[0]
        for s in searches.dropFirst() { fine.absorb(s) }
        for (rank, found) in zip(ranks, fine.boundaries()) {
            let key = magnitudeKey(values[order[rank]])
            let ordinal = (0..<order[rank]).filter { magnitudeKey(values[$0]) == key }.count
            #expect(found == RankBoundary(key: key, ordinal: ordinal), "count \(count) chunk \(chunk) rank \(rank)")
        }
    }
}
