/// XXH64, the 64-bit xxHash, used for the checksums in sparse delta files.
///
/// A streaming hasher: `update` may be called with pieces of any size; the
/// digest equals the one-shot hash of the concatenated input.
public struct XXHash64: Sendable {
    static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    private var lanes: (UInt64, UInt64, UInt64, UInt64)
    private let seed: UInt64
    private var totalLength: UInt64 = 0
    /// Bytes not yet forming a whole 32-byte stripe.
    private var pending: [UInt8] = []

    public init(seed: UInt64 = 0) {
        self.seed = seed
        lanes = (seed &+ Self.prime1 &+ Self.prime2, seed &+ Self.prime2, seed, seed &- Self.prime1)
        pending.reserveCapacity(32)
    }

    /// The hash of `bytes` in one call.
    public static func hash(_ bytes: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        var hasher = XXHash64(seed: seed)
        hasher.update(bytes)
        return hasher.digest()
    }

    @inline(__always)
    static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* prime2, 31) &* prime1
    }

    @inline(__always)
    static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 { (x &<< r) | (x &>> (64 &- r)) }

    @inline(__always)
    static func mergeRound(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* prime1 &+ prime4
    }

    /// Feeds more input.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        totalLength &+= UInt64(bytes.count)
        // Every slice below is in range: take ≤ bytes.count and start + whole ≤ bytes.count.
        var start = 0
        if !pending.isEmpty {
            let take = min(32 - pending.count, bytes.count)
            pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<take]))
            start = take
            guard pending.count == 32 else { return }
            pending.withUnsafeBytes { consumeStripes($0) }
            pending.removeAll(keepingCapacity: true)
        }
        let whole = (bytes.count - start) / 32 * 32
        if whole > 0 { consumeStripes(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + whole)])) }
        pending.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[(start + whole)...]))
    }

    /// Processes whole 32-byte stripes (bounds: `stripes.count` is a multiple of 32).
    private mutating func consumeStripes(_ stripes: UnsafeRawBufferPointer) {
        var (v1, v2, v3, v4) = lanes
        var offset = 0
        while offset < stripes.count {
            v1 = Self.round(v1, UInt64(littleEndian: stripes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
            v2 = Self.round(v2, UInt64(littleEndian: stripes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
            v3 = Self.round(v3, UInt64(littleEndian: stripes.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)))
            v4 = Self.round(v4, UInt64(littleEndian: stripes.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)))
            offset += 32
        }
        lanes = (v1, v2, v3, v4)
    }

    /// The hash of everything fed so far.
    public func digest() -> UInt64 {
        var h: UInt64
        if totalLength >= 32 {
            let (v1, v2, v3, v4) = lanes
            h = Self.rotl(v1, 1) &+ Self.rotl(v2, 7) &+ Self.rotl(v3, 12) &+ Self.rotl(v4, 18)
            h = Self.mergeRound(h, v1)
            h = Self.mergeRound(h, v2)
            h = Self.mergeRound(h, v3)
            h = Self.mergeRound(h, v4)
        } else {
            h = seed &+ Self.prime5
        }
        h &+= totalLength
        pending.withUnsafeBytes { tail in
            var i = 0
            while i + 8 <= tail.count {
                h ^= Self.round(0, UInt64(littleEndian: tail.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
                h = Self.rotl(h, 27) &* Self.prime1 &+ Self.prime4
                i += 8
            }
            if i + 4 <= tail.count {
                h ^= UInt64(UInt32(littleEndian: tail.loadUnaligned(fromByteOffset: i, as: UInt32.self))) &* Self.prime1
                h = Self.rotl(h, 23) &* Self.prime2 &+ Self.prime3
                i += 4
            }
            while i < tail.count {
                h ^= UInt64(tail[i]) &* Self.prime5
                h = Self.rotl(h, 11) &* Self.prime1
                i += 1
            }
        }
        h ^= h &>> 33
        h &*= Self.prime2
        h ^= h &>> 29
        h &*= Self.prime3
        h ^= h &>> 32
        return h
    }
}
