import Testing
import Checkpoints
@testable import Merging

private let stream = CounterRandom(seed: 0, tensor: "t", model: 0)

private func sparsified(_ sparsifier: Sparsifier, _ values: [Float], density: Double, gamma: Double = 0.01,
                        epsilon: Double = 0.15, rescale: Rescale = .none, rowLength: Int? = nil) -> [Float] {
    var v = values
    sparsifier.sparsify(&v, density: density, gamma: gamma, epsilon: epsilon, rescale: rescale, stream: stream,
                        rowLength: rowLength)
    return v
}

@Test func magnitudeKeepsTheLargestEntries() {
    #expect(sparsified(.magnitude, [0.1, -0.5, 0.3, 0.2, -0.4], density: 0.4) == [0, -0.5, 0, 0, -0.4])
}

@Test func magnitudeKeepsAtLeastOneEntry() {
    #expect(sparsified(.magnitude, [0.1, -0.5, 0.3, 0.2], density: 0.1) == [0, -0.5, 0, 0])
}

@Test func magnitudeBreaksTiesAtTheThresholdByIndex() {
    // Ascending (|δ|, index): 0.1@3, 0.2@0, 0.2@1, 0.2@2; the top two ranks are indices 1 and 2.
    #expect(sparsified(.magnitude, [0.2, -0.2, 0.2, 0.1], density: 0.5) == [0, -0.2, 0.2, 0])
}

@Test func magnitudeTiesSplitAcrossChunksMatchTheWholeTensor() {
    let values: [Float] = [0.2, 0.1, -0.2, 0.2, 0.3, 0.2, -0.2, 0.1]
    var whole = values
    Sparsifier.magnitude.sparsify(&whole, density: 0.5, rescale: .none, stream: stream)
    // Same window applied in two chunks with the tie counts carried over.
    let mask = Sparsifier.magnitude.prepare(values: values, density: 0.5, gamma: 0, epsilon: 0, stream: stream)
    guard case .window(let window, _) = mask else { Issue.record("expected a window"); return }
    #expect(window.needsOrdinals)
    var first = Array(values[0..<4])
    var second = Array(values[4..<8])
    let key = window.lower!.key
    let tiesBefore = first.withUnsafeBufferPointer { RankSearch.countEqual($0, key: key) }
    let tiesAfter = second.withUnsafeBufferPointer { RankSearch.countEqual($0, key: key) }
    first.withUnsafeMutableBufferPointer { window.apply(to: $0, ties: ChunkTies(lowerInChunk: tiesBefore)) }
    second.withUnsafeMutableBufferPointer { window.apply(to: $0, ties: ChunkTies(lowerBefore: tiesBefore, lowerInChunk: tiesAfter)) }
    #expect(first + second == whole)
    #expect(whole == [0, 0, 0, 0.2, 0.3, 0.2, -0.2, 0])
}

@Test func magnitudeOfZeroDeltasStaysZero() {
    #expect(sparsified(.magnitude, [0, 0, 0, 0], density: 0.5, rescale: .l1) == [0, 0, 0, 0])
}

@Test func densityOneLeavesDeltaUntouchedAndZeroClearsIt() {
    let values: [Float] = [0.1, -0.5, 0.3]
    for s in Sparsifier.allCases {
        #expect(sparsified(s, values, density: 1, rescale: .l1) == values)
        #expect(sparsified(s, values, density: 0) == [0, 0, 0])
    }
}

@Test func l1RescaleRestoresTheNorm() {
    // Keeps −3 and 2 (L1 5 of 6.5): scale 1.3.
    let result = sparsified(.magnitude, [1, -3, 2, 0.5], density: 0.5, rescale: .l1)
    #expect(result == [0, -3 * Float(6.5 / 5), 2 * Float(6.5 / 5), 0])
}

@Test func outliersDropTheSmallestAndTheTop() {
    let values: [Float] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    #expect(sparsified(.magnitudeOutliers, values, density: 0.5, gamma: 0.1) == [0, 0, 0, 0, 5, 6, 7, 8, 9, 0])
}

@Test func outliersKeepMoreWhenDensityAndGammaExceedOne() {
    let values: [Float] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    #expect(sparsified(.magnitudeOutliers, values, density: 0.95, gamma: 0.1) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0])
}

@Test func randomKeepsAboutTheDensityAndRescalesByInverse() {
    let values = [Float](repeating: 1, count: 20_000)
    let result = sparsified(.random, values, density: 0.3, rescale: .inverse)
    var kept = 0
    for v in result where v != 0 {
        kept += 1
        #expect(v == 1 / Float(0.3))
    }
    #expect(abs(Double(kept) / 20_000 - 0.3) < 0.02)
}

@Test func randomMaskIsTheSameChunkedOrWhole() {
    let values: [Float] = (0..<1000).map { Float($0 + 1) }
    let whole = sparsified(.random, values, density: 0.5)
    var chunked = values
    let mask = TensorMask.random(density: 0.5, stream: stream)
    var scratch = [UInt64](repeating: 0, count: 1)
    chunked.withUnsafeMutableBufferPointer { v in
        scratch.withUnsafeMutableBufferPointer { s in
            // Odd chunk lengths: chunks start on both halves of a hashed pair.
            for start in stride(from: 0, to: 1000, by: 127) {
                let part = UnsafeMutableBufferPointer(rebasing: v[start..<min(start + 127, 1000)])
                mask.apply(to: part, start: start, rowLength: 1, inverse: false, rowScratch: s)
            }
        }
    }
    #expect(chunked == whole)
}

@Test func recordedMaskGivesTheL1NormsAndProductsOfKeepRandomly() {
    let values: [Float] = (0..<999).map { Float($0 % 17) - 8 }
    let random = CounterRandom(seed: 5, tensor: "t", model: 1)
    var masked = values
    masked.withUnsafeMutableBufferPointer { random.keepRandomly($0, start: 3, density: 0.4, scale: 1) }
    var keep = [UInt8](repeating: 7, count: values.count)
    keep.withUnsafeMutableBufferPointer { random.drawMask(start: 3, count: values.count, density: 0.4, into: $0.baseAddress!) }
    let sums = values.withUnsafeBufferPointer { v in keep.withUnsafeBufferPointer { L1Norm.of(v, keptBy: $0.baseAddress!) } }
    #expect(sums.before == Sparsifier.l1(values))
    #expect(sums.after == Sparsifier.l1(masked))
    // The recorded mask replays the same products.
    var replayed = values
    replayed.withUnsafeMutableBufferPointer { v in keep.withUnsafeBufferPointer { CounterRandom.applyRecorded(v, keep: $0.baseAddress!) } }
    #expect(replayed.map(\.bitPattern) == masked.map(\.bitPattern))
    #expect(keep.allSatisfy { $0 <= 1 })
}

@Test(arguments: [0, 5, (1 << 33) - 13], [Float(0.3), 0.5, 0.999, 1, 0])
func drawnMaskTakesTheDecisionsOfKeepRandomly(start: Int, density: Float) {
    // Odd and even starts, a crossing of the counters' 2³² block, and the density edges.
    let random = CounterRandom(seed: 9, tensor: "w", model: 2)
    for count in [0, 1, 2, 7, 8, 9, 1001] {
        var values = [Float](repeating: 1, count: count)
        values.withUnsafeMutableBufferPointer { random.keepRandomly($0, start: start, density: density, scale: 1) }
        var keep = [UInt8](repeating: 9, count: count + 1)
        keep.withUnsafeMutableBufferPointer { random.drawMask(start: start, count: count, density: density, into: $0.baseAddress!) }
        #expect(keep.prefix(count).map(Float.init) == values)
        #expect(keep[count] == 9)
    }
}

@Test func seedAndNameChangeTheRandomStream() {
    let a = CounterRandom(seed: 1, tensor: "w", model: 0)
    #expect(a == CounterRandom(seed: 1, tensor: "w", model: 0))
    #expect(a.bits(5) != CounterRandom(seed: 2, tensor: "w", model: 0).bits(5))
    #expect(a.bits(5) != CounterRandom(seed: 1, tensor: "v", model: 0).bits(5))
    #expect(a.bits(5) != CounterRandom(seed: 1, tensor: "w", model: 1).bits(5))
}

@Test func dellaKeepProbabilityFollowsTheRowRank() {
    // One row [3, −1, 2]: ranks 2, 0, 1 → p = 0.6, 0.4, 0.5 for d = 0.5, ε = 0.1.
    let values: [Float] = [3, -1, 2]
    let result = sparsified(.dellaMagprune, values, density: 0.5, epsilon: 0.1, rescale: .inverse)
    let p: [Float] = [0.5 - 0.1 + 0.2, 0.4, 0.5 - 0.1 + 0.1]
    for i in 0..<3 {
        let expected: Float = stream.uniform(i) < p[i] ? values[i] / p[i] : 0
        #expect(result[i] == expected)
    }
}

@Test func dellaRanksEachRowSeparately() {
    // Two rows of two: in each row the larger entry gets p = d + ε = 0.99.
    var kept = [0, 0]
    for seed in 0..<200 {
        var v: [Float] = [1, 5, 7, 2]
        Sparsifier.dellaMagprune.sparsify(&v, density: 0.5, epsilon: 0.49, rescale: .none,
                                          stream: CounterRandom(seed: UInt64(seed), tensor: "t", model: 0), rowLength: 2)
        if v[1] != 0 { kept[0] += 1 }
        if v[2] != 0 { kept[1] += 1 }
    }
    #expect(kept[0] > 190 && kept[1] > 190)
}

@Test func chunkL1NormsAgreeWithDoubleSums() {
    // Odd length: full eight-lane steps, a short run and a scalar tail.
    let values = noise(1029, seed: 21, scale: 3)
    var keep = [UInt8](repeating: 0, count: values.count)
    for i in keep.indices where i % 3 != 0 { keep[i] = 1 }
    var before = 0.0, after = 0.0
    for i in values.indices {
        before += Double(abs(values[i]))
        if keep[i] == 1 { after += Double(abs(values[i])) }
    }
    let plain = values.withUnsafeBufferPointer { L1Norm.of($0) }
    let masked = values.withUnsafeBufferPointer { v in keep.withUnsafeBufferPointer { L1Norm.of(v, keptBy: $0.baseAddress!) } }
    #expect(abs(plain - before) <= 1e-5 * before)
    #expect(masked.before == plain)
    #expect(abs(masked.after - after) <= 1e-5 * after)
}

@Test func bf16DifferenceNormsEqualThoseOfTheDecodedDelta() {
    // Same sums bit for bit as measuring δ decoded to Float32, full runs and tail alike.
    let n = 1029
    let x = noise(n, seed: 31).map(ElementCodec.floatToBF16), base = noise(n, seed: 32).map(ElementCodec.floatToBF16)
    var keep = [UInt8](repeating: 0, count: n)
    for i in keep.indices where i % 5 != 1 { keep[i] = 1 }
    let delta = (0..<n).map { Float(bitPattern: UInt32(x[$0]) << 16) - Float(bitPattern: UInt32(base[$0]) << 16) }
    let decoded = delta.withUnsafeBufferPointer { v in keep.withUnsafeBufferPointer { L1Norm.of(v, keptBy: $0.baseAddress!) } }
    let direct = x.withUnsafeBufferPointer { xs in
        base.withUnsafeBufferPointer { bs in
            keep.withUnsafeBufferPointer { L1Norm.ofDifference(bf16: xs.baseAddress!, minus: bs.baseAddress!, count: n, keptBy: $0.baseAddress!) }
        }
    }
    #expect(direct.before == decoded.before)
    #expect(direct.after == decoded.after)
    #expect(direct.after < direct.before)
}
