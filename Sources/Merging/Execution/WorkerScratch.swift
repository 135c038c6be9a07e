/// One worker thread's reusable Float32 buffers: allocated once per merge, so the hot
/// loops never allocate.
final class WorkerScratch: @unchecked Sendable {
    /// Entries each of `base`, `inputs`, `out`, `divisors`, `keys` and `keep` holds.
    let capacity: Int
    let base: UnsafeMutableBufferPointer<Float>
    let inputs: [UnsafeMutableBufferPointer<Float>]
    let out: UnsafeMutableBufferPointer<Float>
    /// Per-entry divisors of the consensus fusion.
    let divisors: UnsafeMutableBufferPointer<Float>
    let rows: UnsafeMutableBufferPointer<UInt64>
    /// Magnitude keys kept by `CandidateRankSearch.collect`.
    let keys: UnsafeMutableBufferPointer<UInt32>
    /// A chunk's random keep mask (`CounterRandom.drawMask`), one byte per entry.
    let keep: UnsafeMutablePointer<UInt8>
    /// Stored bytes of input chunks, copied here to be decoded (`TensorDecoder.read`):
    /// `stagingBytesPerEntry` bytes per entry, room for a chunk of any stored type
    /// (F64, 8 bytes, is the widest) or for two BF16 chunks side by side.
    let staging: UnsafeMutableRawBufferPointer
    static let stagingBytesPerEntry = 8
    /// Per-model rank searchers of the current pass (worker-local counts).
    var searches: [RankSearch] = []

    init(capacity: Int, models: Int, rowCapacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
        out = .allocate(capacity: capacity)
        divisors = .allocate(capacity: capacity)
        var inputs: [UnsafeMutableBufferPointer<Float>] = []
        for _ in 0..<max(models, 1) { inputs.append(.allocate(capacity: capacity)) }
        self.inputs = inputs
        rows = .allocate(capacity: max(rowCapacity, 1))
        keys = .allocate(capacity: capacity)
        keep = .allocate(capacity: capacity)
        staging = .allocate(byteCount: capacity * WorkerScratch.stagingBytesPerEntry, alignment: 16)
    }

    deinit {
        base.deallocate()
        out.deallocate()
        divisors.deallocate()
        for b in inputs { b.deallocate() }
        rows.deallocate()
        keys.deallocate()
        keep.deallocate()
        staging.deallocate()
    }
}
