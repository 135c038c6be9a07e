/// The `.delta` file: a fine-tuned checkpoint stored as the entries where it
/// differs from its base, zstd-compressed. Format in docs/delta-format.md.
///
/// Layout (little-endian):
///
///     "CLDELTA1"                                   8-byte magic
///     blobs, one per tensor in header order        positions frame, then values frame
///     header JSON (UTF-8)                          N bytes
///     u64 N, u64 XXH64(header JSON)                trailer
///     "CLDELTA1"                                   8-byte magic again
///
/// The header comes last so the writer can stream blobs out as tensors are encoded.
public enum SparseDelta {
    public static let magic = Array("CLDELTA1".utf8)
    static let trailerSize = 8 + 8 + 8
    /// The largest header a reader accepts (and a writer writes).
    public static let maximumHeaderSize = 256 << 20

    /// How a tensor is stored.
    public enum Mode: String, Sendable {
        /// Kept positions (gaps as LEB128 varints) and, per kept position, the
        /// XOR of the fine-tuned and base bit patterns (byte planes shuffled).
        case sparse
        /// The whole fine-tuned tensor (byte planes shuffled): no usable base tensor.
        case full
    }

    /// One tensor's entry in the header.
    public struct Record: Sendable, Equatable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var mode: Mode
        /// Entries stored (sparse mode); element count in full mode.
        public var kept: Int
        /// Entries where the fine-tuned tensor differs from its base.
        public var changed: Int
        /// XXH64 of the base tensor's bytes (sparse mode), checked before applying.
        public var baseHash: UInt64
        /// Where the blob starts, counted from the start of the file.
        public var offset: Int
        public var positionsSize: Int
        public var valuesSize: Int
        /// XXH64 of the blob (positions frame then values frame).
        public var blobHash: UInt64

        public var elementCount: Int { Checkpoints.elementCount(of: shape) ?? 0 }
        public var blobSize: Int { positionsSize + valuesSize }
    }

    /// Everything in a delta file besides the blobs.
    public struct Header: Sendable, Equatable {
        /// How the kept entries were chosen (`magnitude`, `random`).
        public var method: String
        public var density: Double
        public var seed: UInt64
        /// The fine-tuned checkpoint's safetensors metadata.
        public var metadata: [MetadataEntry]
        public var tensors: [Record]

        public init(method: String, density: Double, seed: UInt64, metadata: [MetadataEntry], tensors: [Record]) {
            self.method = method
            self.density = density
            self.seed = seed
            self.metadata = metadata
            self.tensors = tensors
        }
    }

    /// A tensor encoded and compressed, ready to be appended.
    public struct EncodedTensor: Sendable {
        public var record: Record
        public var positions: [UInt8]
        public var values: [UInt8]
    }

    /// Plain element width for XOR and shuffling, or nil for block-quantized types.
    static func elementWidth(_ dtype: DType) -> Int? {
        dtype.blockElements == 1 ? dtype.blockBytes : nil
    }

    /// Encodes a tensor against its base, keeping `positions` (ascending, each a
    /// changed entry). With `base == nil` (or a block type) the tensor is stored whole.
    public static func encode(name: String, dtype: DType, shape: [Int], tuned: UnsafeRawBufferPointer,
                              base: UnsafeRawBufferPointer?, changed: Int, positions: [Int]) -> EncodedTensor {
        var next = 0
        return encode(name: name, dtype: dtype, shape: shape, tuned: tuned, base: base, changed: changed,
                      keptCount: positions.count) { i in
            guard next < positions.count, positions[next] == i else { return false }
            next += 1
            return true
        }
    }

    /// Encodes a tensor against its base, keeping the `keptCount` entries for
    /// which `keep(index)` is true; `keep` is called once per index, in order.
    public static func encode(name: String, dtype: DType, shape: [Int], tuned: UnsafeRawBufferPointer,
                              base: UnsafeRawBufferPointer?, changed: Int, keptCount: Int,
                              keep: (Int) -> Bool) -> EncodedTensor {
        let count = Checkpoints.elementCount(of: shape) ?? 0
        guard let base, let width = elementWidth(dtype) else {
            let values = shuffled(tuned, width: elementWidth(dtype) ?? 1, count: count).withUnsafeBytes { Zstd.compress($0) }
            let empty = Zstd.compress(UnsafeRawBufferPointer(start: nil, count: 0))
            return finish(Record(name: name, dtype: dtype, shape: shape, mode: .full, kept: count, changed: changed,
                                 baseHash: 0, offset: 0, positionsSize: 0, valuesSize: 0, blobHash: 0), empty, values)
        }
        var gaps: [UInt8] = []
        gaps.reserveCapacity(keptCount)
        var xor = [UInt8](repeating: 0, count: keptCount * width)
        var previous = -1
        var k = 0
        xor.withUnsafeMutableBytes { out in
            for p in 0..<count where keep(p) {
                precondition(k < keptCount, "more entries kept than announced")
                appendVarint(UInt64(p - previous - 1), to: &gaps)
                previous = p
                for b in 0..<width {
                    // Byte plane b of entry k, so equal high bytes sit together for zstd.
                    out[b * keptCount + k] = tuned[p * width + b] ^ base[p * width + b]
                }
                k += 1
            }
        }
        precondition(k == keptCount, "fewer entries kept than announced")
        let positionFrame = gaps.withUnsafeBytes { Zstd.compress($0) }
        let valueFrame = xor.withUnsafeBytes { Zstd.compress($0) }
        let hash = XXHash64.hash(base)
        return finish(Record(name: name, dtype: dtype, shape: shape, mode: .sparse, kept: keptCount, changed: changed,
                             baseHash: hash, offset: 0, positionsSize: 0, valuesSize: 0, blobHash: 0), positionFrame, valueFrame)
    }

    private static func finish(_ record: Record, _ positions: [UInt8], _ values: [UInt8]) -> EncodedTensor {
        var r = record
        r.positionsSize = positions.count
        r.valuesSize = values.count
        var hasher = XXHash64()
        positions.withUnsafeBytes { hasher.update($0) }
        values.withUnsafeBytes { hasher.update($0) }
        r.blobHash = hasher.digest()
        return EncodedTensor(record: r, positions: positions, values: values)
    }

    /// `count` elements of `width` bytes, regrouped so byte k of every element is contiguous.
    static func shuffled(_ bytes: UnsafeRawBufferPointer, width: Int, count: Int) -> [UInt8] {
        guard width > 1 else { return [UInt8](bytes) }
        var out = [UInt8](repeating: 0, count: bytes.count)
        out.withUnsafeMutableBytes { dst in
            for i in 0..<count {
                for b in 0..<width { dst[b * count + i] = bytes[i * width + b] }
            }
        }
        return out
    }

    /// The inverse of `shuffled`, writing into `destination`.
    static func unshuffle(_ planes: UnsafeRawBufferPointer, width: Int, count: Int, into destination: UnsafeMutableRawBufferPointer) {
        guard width > 1 else {
            if !planes.isEmpty { destination.copyMemory(from: planes) }
            return
        }
        for i in 0..<count {
            for b in 0..<width { destination[i * width + b] = planes[b * count + i] }
        }
    }

    static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }
}
