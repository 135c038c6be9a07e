import Testing
@testable import Merging

/// The element at `rank` of the ascending (|δ|, index) order, by sorting.
private func sortedBoundary(_ values: [Float], rank: Int) -> RankBoundary {
    let order = values.indices.sorted { (magnitudeKey(values[$0]), $0) < (magnitudeKey(values[$1]), $1) }
    let key = magnitudeKey(values[order[rank]])
    var ordinal = 0
    for i in 0..<order[rank] where magnitudeKey(values[i]) == key { ordinal += 1 }
    return RankBoundary(key: key, ordinal: ordinal)
}

/// Runs the sample, the candidate pass over chunks of `chunk` entries and the resolution.
private func search(_ values: [Float], rank: Int, chunk: Int = 65_536)
    -> (search: CandidateRankSearch?, found: (boundary: RankBoundary, keyCounts: [Int])?)
{
    let sample = CandidateRankSearch.sampleRanges(count: values.count).flatMap { values[$0].map(magnitudeKey) }
    guard let search = CandidateRankSearch(rank: rank, count: values.count, sample: sample) else { return (nil, nil) }
    var scratch = [UInt32](repeating: 0, count: chunk)
    var parts: [ChunkCandidates] = []
    for start in stride(from: 0, to: values.count, by: chunk) {
        let part = values[start..<min(values.count, start + chunk)]
        parts.append(part.withUnsafeBufferPointer { v in scratch.withUnsafeMutableBufferPointer { search.collect(v, scratch: $0) } })
    }
    return (search, search.resolve(parts))
}

@Test func sampleCoversLargeTensorsInBlockAlignedRunsAndSmallOnesWhole() {
    #expect(CandidateRankSearch.sampleRanges(count: 1000) == [0..<1000])
    let ranges = CandidateRankSearch.sampleRanges(count: 1_000_000)
    #expect(ranges.count == CandidateRankSearch.sampleRuns)
    for r in ranges {
        #expect(r.lowerBound % 1024 == 0)
        #expect(r.count == CandidateRankSearch.runLength)
    }
    #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound <= $1.lowerBound })
}

@Test(arguments: [0, 1, 150_000, 209_000, 299_999])
func candidateSearchFindsTheSortedElement(rank: Int) {
    // Continuous magnitudes with a run of equal ones: the estimate is rarely the key itself.
    var values = noise(300_000, seed: 5)
    for i in 100_000..<100_400 { values[i] = 0.25 }
    let (found, resolved) = search(values, rank: rank)
    #expect(found != nil)
    let expected = sortedBoundary(values, rank: rank)
    #expect(resolved?.boundary == expected)
    // Each chunk's count of the boundary key.
    let counts = stride(from: 0, to: values.count, by: 65_536).map { start in
        values[start..<min(values.count, start + 65_536)].filter { magnitudeKey($0) == expected.key }.count
    }
    #expect(resolved?.keyCounts == counts)
}

@Test func fewDistinctMagnitudesResolveAtTheEstimate() {
    // Five magnitudes, as low-precision deltas have: the boundary sits inside a huge group.
    var values = [Float](repeating: 0, count: 250_000)
    for i in values.indices {
        let magnitude = Float((i * 7919) % 5 + 1)
        values[i] = i % 3 == 0 ? -magnitude : magnitude
    }
    for rank in [1, 70_000, 137_500, 249_999] {
        let (search, resolved) = search(values, rank: rank)
        #expect(search?.estimate == resolved?.boundary.key)
        #expect(resolved?.boundary == sortedBoundary(values, rank: rank))
    }
}

@Test func aMisleadingSampleIsReportedAsAMiss() {
    // Small magnitudes exactly where the sample looks, large ones everywhere else.
    let n = 300_000
    var values = [Float](repeating: 0, count: n)
    for i in 0..<n { values[i] = 100 + Float(i % 977) }
    for r in CandidateRankSearch.sampleRanges(count: n) { for i in r { values[i] = Float(i % 13 + 1) * 0.001 } }
    let (search, resolved) = search(values, rank: n / 2)
    #expect(search != nil)
    #expect(resolved == nil)
}

@Test func selectFindsTheKthSmallestWhateverTheOrder() {
    let shapes: [[UInt32]] = [
        Array(0..<1000), Array((0..<1000).reversed()), [UInt32](repeating: 7, count: 1000),
        (0..<1000).map { UInt32(($0 * 7919) % 1000) }, (0..<1000).map { UInt32($0 % 2) },
    ]
    for shape in shapes {
        let sorted = shape.sorted()
        for k in [0, 1, 499, 500, 998, 999] {
            var copy = shape
            #expect(copy.withUnsafeMutableBufferPointer { CandidateRankSearch.select($0, k) } == sorted[k])
        }
    }
}
