import Testing
@testable import Checkpoints

/// Reference digests from the Python `xxhash` package (xxh64, seeds 0 and 42).
private let vectors: [(bytes: [UInt8], seed0: UInt64, seed42: UInt64)] = [
    ([], 0xef46db3751d8e999, 0x98b1582b0977e704),
    (Array("a".utf8), 0xd24ec4f1a98c6e5b, 0x88e4fe59adf7b0cc),
    (Array("abc".utf8), 0x44bc2cf5ad770999, 0x13c1d910702770e6),
    (Array("abcdabcdabcd".utf8), 0x3eb6fe1d3b68ee3a, 0xd45e2c951befe26c),
    ((0..<31).map { UInt8($0) }, 0xc346d2b59b4d8ee1, 0x8340e23e22f83759),
    ((0..<32).map { UInt8($0) }, 0xcbf59c5116ff32b4, 0x8809e1ca0be25072),
    ((0..<33).map { UInt8($0) }, 0x0c535d1acafb8ead, 0x1c682d8884811fdb),
    ((0..<1000).map { UInt8($0 * 7 % 256) }, 0x25275608a9cfc168, 0x6d70f8faa18af724),
]

@Test func digestsMatchTheReference() {
    for v in vectors {
        v.bytes.withUnsafeBytes { raw in
            #expect(XXHash64.hash(raw) == v.seed0, "length \(v.bytes.count)")
            #expect(XXHash64.hash(raw, seed: 42) == v.seed42, "length \(v.bytes.count), seed 42")
        }
    }
}

@Test(arguments: [1, 3, 8, 31, 32, 33, 100])
func streamingInPiecesGivesTheOneShotDigest(pieceSize: Int) {
    let bytes = vectors.last!.bytes
    var hasher = XXHash64()
    var start = 0
    while start < bytes.count {
        let end = min(start + pieceSize, bytes.count)
        bytes[start..<end].withUnsafeBytes { hasher.update($0) }
        start = end
    }
    #expect(hasher.digest() == vectors.last!.seed0)
}
