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
