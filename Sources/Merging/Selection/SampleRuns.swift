/// The element ranges read from one tensor to estimate where its magnitudes lie
/// before a full pass: one run centred in each of `runs` equal strata, its start
/// aligned down to a multiple of `alignment` elements, or the whole tensor when it
/// has at most `wholeTensorLimit` elements. The trim search of `fuse` samples
/// tensors this way; what a sample decides is only how much the full pass
/// collects, never a result.
struct SampleRuns: Sendable {
    let elements: Int
    let starts: [Int]
    let length: Int

    init(elements n: Int, runs: Int, runLength: Int, wholeTensorLimit: Int, alignment: Int = 1) {
        elements = n
        if n <= max(wholeTensorLimit, runLength) {
            starts = n > 0 ? [0] : []
            length = n
            return
        }
        let count = min(n / runLength, runs)
        let stride = n / count
        let offset = (stride - runLength) / 2
        starts = (0..<count).map { ($0 * stride + offset) / alignment * alignment }
        length = runLength
    }

    /// The runs as element ranges, in tensor order.
    var ranges: [Range<Int>] { starts.map { $0..<($0 + length) } }
    var sampled: Int { starts.count * length }
    /// Entries of the tensor each sampled entry stands for.
    var weight: Double { sampled > 0 ? Double(elements) / Double(sampled) : 0 }
    /// Finite-population correction of the variance: 0 when the whole tensor is read.
    var correction: Double { sampled > 0 ? 1 - Double(sampled) / Double(elements) : 0 }
}
