import Checkpoints
import Foundation
import Testing
@_spi(Testing) @testable import Merging

/// The element at `rank` of the ascending (|δ|, index) order, by sorting.
private func sortedBoundary(_ values: [Float], rank: Int) -> RankBoundary {
    let order = values.indices.sorted { (magnitudeKey(values[$0]), $0) < (magnitudeKey(values[$1]), $1) }
    let key = magnitudeKey(values[order[rank]])
    var ordinal = 0
    for i in 0..<order[rank] where magnitudeKey(values[i]) == key { ordinal += 1 }
    return RankBoundary(key: key, ordinal: ordinal)
}

/// Runs the sample, the candidate pass over chunks of `chunk` entries keeping at most
/// `cap` keys, and the resolution.
private func search(_ values: [Float], rank: Int, chunk: Int = 65_536, cap: Int = CandidateRankSearch.maxCandidates)
    -> (search: CandidateRankSearch?, parts: [ChunkCandidates], found: (boundary: RankBoundary, keyCounts: [Int])?)
{
    let sample = CandidateRankSearch.sampleRanges(count: values.count).flatMap { values[$0].map(magnitudeKey) }
    guard let search = CandidateRankSearch(rank: rank, count: values.count, sample: sample) else { return (nil, [], nil) }
    var scratch = [UInt32](repeating: 0, count: chunk)
    var parts: [ChunkCandidates] = []
    let budget = Locked(cap)
    for start in stride(from: 0, to: values.count, by: chunk) {
        let part = values[start..<min(values.count, start + chunk)]
        parts.append(part.withUnsafeBufferPointer { v in
            scratch.withUnsafeMutableBufferPointer { search.collect(v, scratch: $0, budget: budget) }
        })
    }
    return (search, parts, search.resolve(parts))
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
    let (found, _, resolved) = search(values, rank: rank)
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
        let (search, _, resolved) = search(values, rank: rank)
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
    let (search, _, resolved) = search(values, rank: n / 2)
    #expect(search != nil)
    #expect(resolved == nil)
}

@Test(arguments: [150_000, 209_000])
func aPassPastItsCapResolvesOnlyWhatItKeptWhole(rank: Int) {
    // Around the cap: with room for every candidate the rank is found among them;
    // one key short, the last chunk keeps none and the search reports a miss (the
    // magnitudes are continuous, so the estimate alone does not settle the rank).
    let values = noise(300_000, seed: 9)
    let (_, parts, uncapped) = search(values, rank: rank)
    let needed = parts.reduce(0) { $0 + $1.keys!.count }
    #expect(uncapped?.boundary == sortedBoundary(values, rank: rank))
    for cap in [needed + 1, needed] {
        let (_, capped, found) = search(values, rank: rank, cap: cap)
        #expect(capped == parts)
        #expect(found?.boundary == uncapped?.boundary && found?.keyCounts == uncapped?.keyCounts)
    }
    for cap in [needed - 1, 0] {
        let (_, capped, found) = search(values, rank: rank, cap: cap)
        #expect(capped.contains { $0.keys == nil })
        #expect(capped.map(\.below) == parts.map(\.below) && capped.map(\.atEstimate) == parts.map(\.atEstimate))
        #expect(found == nil)
    }
}

@Test func aCappedPassStillResolvesAtTheEstimate() {
    // Few distinct magnitudes: the chunks' counts settle the rank with no key kept.
    let values = (0..<250_000).map { Float(($0 * 7919) % 5 + 1) }
    let (search, parts, found) = search(values, rank: 137_500, cap: 0)
    #expect(parts.allSatisfy { $0.keys == nil || $0.keys!.isEmpty })
    #expect(search?.estimate == found?.boundary.key)
    #expect(found?.boundary == sortedBoundary(values, rank: 137_500))
}

/// The windows and boundary-key counts `MagnitudeWindowSearch` finds in the first tensor
/// of a TIES merge of `models` over a zero base, keeping at most `cap` candidates.
private func searchedWindows(_ models: [[Float]], rows: Int, density: Double, cap: Int) throws -> [FoundWindow] {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let shape = [rows, models[0].count / rows]
    writeCheckpoint(folder + "/base.safetensors", [TestTensor(name: "w", shape: shape, values: [Float](repeating: 0, count: models[0].count))])
    var specs: [ModelSpec] = []
    for (m, values) in models.enumerated() {
        writeCheckpoint(folder + "/m\(m).safetensors", [TestTensor(name: "w", shape: shape, values: values)])
        specs.append(ModelSpec(path: folder + "/m\(m).safetensors", parameters: ["density": .number(density)]))
    }
    let prepared = try PreparedMerge.prepare(MergePlan(method: .ties, base: folder + "/base.safetensors", models: specs))
    let executor = MergeExecutor(prepared, threads: 2, chunkElements: 4096)
    var search = executor.windowSearch
    search.maxCandidates = cap
    let densities = [Double](repeating: density, count: models.count)
    return try search.windows(prepared.jobs[0], models: Array(models.indices), sparsifier: .magnitude,
                              densities: densities, gammas: densities.map { _ in 0 })
}

@Test func windowsPastTheCandidateCapMatchTheUncappedSearchAndSorting() throws {
    // Two models whose candidate passes together need more than a small cap: the
    // windows found through the fallback are the ones found without the cap.
    let rows = 300, n = 300 * 1000
    let models = [noise(n, seed: 21), noise(n, seed: 22).map { $0 * $0 }]
    let uncapped = try searchedWindows(models, rows: rows, density: 0.3, cap: CandidateRankSearch.maxCandidates)
    #expect(uncapped.allSatisfy { $0.keyCounts != nil })
    for cap in [0, 1000, 5000] {
        let capped = try searchedWindows(models, rows: rows, density: 0.3, cap: cap)
        #expect(capped.map(\.window) == uncapped.map(\.window), "cap \(cap)")
    }
    for (m, values) in models.enumerated() {
        let lower = n - Int((0.3 * Double(n)).rounded(.down))
        #expect(uncapped[m].window == MagnitudeWindow(lower: sortedBoundary(values, rank: lower), upper: nil))
    }
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
