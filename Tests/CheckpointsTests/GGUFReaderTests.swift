import Foundation
import Testing
@testable import Checkpoints

/// Builds GGUF bytes field by field, so each test can break exactly one rule.
struct GGUFBytes {
    var bytes: [UInt8] = []

    init(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
        bytes.append(contentsOf: "GGUF".utf8)
        u32(version)
        u64(tensors)
        u64(kvs)
    }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func string(_ s: String) {
        u64(UInt64(s.utf8.count))
        bytes.append(contentsOf: s.utf8)
    }

    /// A key/value of a 4-byte type (u32 = 4) holding `value`.
    mutating func kvU32(_ key: String, _ value: UInt32, type: UInt32 = 4) {
        string(key)
        u32(type)
        u32(value)
    }

    mutating func tensor(_ name: String, ne: [UInt64], type: UInt32 = 0, offset: UInt64) {
        string(name)
        u32(UInt32(ne.count))
        for d in ne { u64(d) }
        u32(type)
        u64(offset)
    }

    /// Zero bytes up to the next multiple of `alignment`.
    mutating func pad(_ alignment: Int = 32) {
        bytes.append(contentsOf: repeatElement(0, count: (alignment - bytes.count % alignment) % alignment))
    }

    mutating func data(_ count: Int) { bytes.append(contentsOf: (0..<count).map { UInt8(truncatingIfNeeded: $0) }) }
}

private func violation(_ file: GGUFBytes) -> GGUFViolation? {
    file.bytes.withUnsafeBytes { raw -> GGUFViolation? in
        do throws(GGUFViolation) {
            _ = try GGUFReader.parse(raw)
            return nil
        } catch {
            return error
        }
    }
}

/// A valid file: one key/value, two F32 tensors, the last ending exactly at the end of the file.
private func validFile() -> GGUFBytes {
    var f = GGUFBytes(tensors: 2, kvs: 2)
    f.string("general.architecture")
    f.u32(8)
    f.string("llama")
    f.kvU32("test.count", 7)
    f.tensor("a", ne: [4, 2], offset: 0)
    f.tensor("b", ne: [3], offset: 32)
    f.pad()
    f.data(32 + 12)
    return f
}

@Test("a crafted valid file parses, with shapes reversed to row-major")
func craftedValidFileParses() throws {
    let header = try validFile().bytes.withUnsafeBytes { try GGUFReader.parse($0) }
    #expect(header.tensors.map(\.name) == ["a", "b"])
    #expect(header.tensors[0].shape == [2, 4])
    #expect(header.tensors[1].offset == header.dataStart + 32)
    #expect(header.metadata == [MetadataEntry("general.architecture", .string("llama")), MetadataEntry("test.count", .uint32(7))])
}

@Test("every truncation of a valid file is refused without a crash")
func everyTruncationIsRefused() {
    let full = validFile()
    for length in 0..<full.bytes.count {
        var cut = full
        cut.bytes.removeLast(full.bytes.count - length)
        #expect(violation(cut) != nil, "length \(length)")
    }
}

@Test("wrong magic") func wrongMagic() {
    var f = validFile()
    f.bytes[0] = UInt8(ascii: "J")
    #expect(violation(f) == .badMagic)
}

@Test("unsupported version") func unsupportedVersion() {
    #expect(violation(GGUFBytes(version: 1, tensors: 0, kvs: 0)) == .unsupportedVersion(1, bigEndian: false))
    #expect(violation(GGUFBytes(version: 4, tensors: 0, kvs: 0)) == .unsupportedVersion(4, bigEndian: false))
}

@Test("big-endian files are named as such") func bigEndianVersion() {
    #expect(violation(GGUFBytes(version: UInt32(3).byteSwapped, tensors: 0, kvs: 0))
            == .unsupportedVersion(UInt32(3).byteSwapped, bigEndian: true))
}

@Test("version 2 is read") func version2IsRead() {
    #expect(violation(GGUFBytes(version: 2, tensors: 0, kvs: 0)) == nil)
}

@Test("a key/value count beyond the file is refused before allocating") func hugeKVCount() {
    let f = GGUFBytes(tensors: 0, kvs: 1 << 62)
    #expect(violation(f) == .countBeyondFile(what: "key/value count", count: 1 << 62, remaining: 0))
}

@Test("a tensor count beyond the file is refused before allocating") func hugeTensorCount() {
    var f = GGUFBytes(tensors: 1 << 62, kvs: 0)
    f.data(100)
    #expect(violation(f) == .countBeyondFile(what: "tensor count", count: 1 << 62, remaining: 100))
}

@Test("a string length beyond the file is refused before allocating") func hugeStringLength() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.u64(1 << 63)
    f.data(20)
    #expect(violation(f) == .stringBeyondFile(what: "metadata key", length: 1 << 63, remaining: 20))
}

@Test("an array count beyond the file is refused before allocating") func hugeArrayCount() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.string("a")
    f.u32(9)
    f.u32(8)  // array of strings
    f.u64(1 << 62)
    f.data(16)
    #expect(violation(f) == .countBeyondFile(what: "array length of 'a'", count: 1 << 62, remaining: 16))
}

@Test("nested arrays") func nestedArrays() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.string("a")
    f.u32(9)
    f.u32(9)
    f.u64(1)
    f.data(16)
    #expect(violation(f) == .nestedArray(key: "a"))
}

@Test("unknown value type") func unknownValueType() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.string("a")
    f.u32(13)
    f.data(8)
    #expect(violation(f) == .unknownValueType(key: "a", type: 13))
}

@Test("unknown array element type") func unknownArrayElementType() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.string("a")
    f.u32(9)
    f.u32(77)
    f.u64(0)
    #expect(violation(f) == .unknownValueType(key: "a", type: 77))
}

@Test("a boolean byte other than 0 or 1") func badBool() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.string("flag")
    f.u32(7)
    f.u8(2)
    #expect(violation(f) == .badBool(key: "flag", value: 2))
}

@Test("a key that is not UTF-8") func keyNotUTF8() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.u64(2)
    f.bytes.append(contentsOf: [0xC3, 0x28])
    f.u32(0)
    f.u8(1)
    #expect(violation(f) == .invalidUTF8(what: "metadata key"))
}

@Test("duplicate metadata keys") func duplicateKeys() {
    var f = GGUFBytes(tensors: 0, kvs: 2)
    f.kvU32("k", 1)
    f.kvU32("k", 2)
    #expect(violation(f) == .duplicateKey("k"))
}

@Test("alignment 0") func alignmentZero() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.kvU32("general.alignment", 0)
    #expect(violation(f) == .badAlignment(0))
}

@Test("alignment not a power of two") func alignmentNotPowerOfTwo() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.kvU32("general.alignment", 48)
    #expect(violation(f) == .badAlignment(48))
}

@Test("alignment of a type other than u32") func alignmentWrongType() {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.kvU32("general.alignment", 32, type: 5)  // i32
    #expect(violation(f) == .alignmentNotU32(type: .int32))
}

@Test("unknown tensor type, including the removed ids 4 and 5") func unknownTensorType() {
    for id: UInt32 in [4, 5, 99] {
        var f = GGUFBytes(tensors: 1, kvs: 0)
        f.tensor("w", ne: [32], type: id, offset: 0)
        f.pad()
        f.data(256)
        #expect(violation(f) == .unknownTensorType(tensor: "w", type: id))
    }
}

@Test("more than four dimensions") func tooManyDimensions() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [1, 1, 1, 1, 1], offset: 0)
    f.pad()
    f.data(32)
    #expect(violation(f) == .tooManyDimensions(tensor: "w", count: 5))
}

@Test("a shape whose element count overflows") func overflowingShape() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [1 << 32, 1 << 32, 1 << 32], offset: 0)
    f.pad()
    #expect(violation(f) == .shapeOverflow(tensor: "w"))
}

@Test("a dimension beyond Int") func dimensionBeyondInt() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [1 << 63], offset: 0)
    f.pad()
    #expect(violation(f) == .shapeOverflow(tensor: "w"))
}

@Test("a byte size that overflows although the element count does not") func byteSizeOverflow() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [1 << 62], type: 0, offset: 0)  // 2^62 F32 = 2^64 bytes
    f.pad()
    #expect(violation(f) == .shapeOverflow(tensor: "w"))
}

@Test("a row length that is not a whole number of blocks") func rowNotWholeBlocks() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [33, 2], type: 8, offset: 0)
    f.pad()
    f.data(200)
    #expect(violation(f) == .rowNotWholeBlocks(tensor: "w", ne0: 33, type: .q8_0))
}

@Test("a misaligned offset") func misalignedOffset() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [2], offset: 4)
    f.pad()
    f.data(64)
    #expect(violation(f) == .misalignedOffset(tensor: "w", offset: 4, alignment: 32))
}

@Test("an offset past the data section") func offsetOutOfRange() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [8], offset: 32)
    f.pad()
    f.data(40)
    #expect(violation(f) == .tensorOutOfRange(tensor: "w", offset: 32, bytes: 32, dataSize: 40))
}

@Test("an offset near 2^64 does not wrap around") func offsetWrapsAround() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("w", ne: [8], offset: UInt64.max - 31)
    f.pad()
    f.data(64)
    #expect(violation(f) == .tensorOutOfRange(tensor: "w", offset: UInt64.max - 31, bytes: 32, dataSize: 64))
}

@Test("overlapping tensors") func overlappingTensors() {
    var f = GGUFBytes(tensors: 2, kvs: 0)
    f.tensor("a", ne: [16], offset: 0)
    f.tensor("b", ne: [8], offset: 32)
    f.pad()
    f.data(96)
    #expect(violation(f) == .overlappingTensors(tensor: "b", other: "a"))
}

@Test("duplicate tensor names") func duplicateTensorNames() {
    var f = GGUFBytes(tensors: 2, kvs: 0)
    f.tensor("a", ne: [8], offset: 0)
    f.tensor("a", ne: [8], offset: 32)
    f.pad()
    f.data(64)
    #expect(violation(f) == .duplicateTensor("a"))
}

@Test("a data section that starts past the end of the file") func dataSectionMissing() {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("a", ne: [0], offset: 0)
    #expect(violation(f) == .truncated(what: "data section", offset: f.bytes.count))
}

@Test("errors name the file on one line")
func errorNamesFile() throws {
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.kvU32("general.alignment", 0)
    let path = temporaryFile(f.bytes, name: "bad.gguf")
    #expect(throws: CheckpointError.gguf(file: path, violation: .badAlignment(0))) { try Checkpoint.open(path) }
    #expect(CheckpointError.gguf(file: path, violation: .badAlignment(0)).description
            == "\(path): general.alignment 0 is not a non-zero power of two")
}

@Test("metadata of every type is read as written by gguf")
func metadataFixture() throws {
    let c = try Checkpoint.open(fixture("gguf/metadata.gguf"))
    #expect(c.format == .gguf)
    func value(_ key: String) -> MetadataValue? { c.metadata.first { $0.key == key }?.value }
    #expect(value("general.architecture") == .string("llama"))
    #expect(value("general.alignment") == .uint32(64))
    #expect(value("test.u8") == .uint8(200))
    #expect(value("test.i8") == .int8(-100))
    #expect(value("test.u16") == .uint16(60000))
    #expect(value("test.i16") == .int16(-30000))
    #expect(value("test.u32") == .uint32(4_000_000_000))
    #expect(value("test.i32") == .int32(-2_000_000_000))
    #expect(value("test.f32") == .float32(0.1))
    #expect(value("test.bool") == .bool(true))
    #expect(value("test.string") == .string("héllo\nwörld"))
    #expect(value("test.u64") == .uint64(18_000_000_000_000_000_000))
    #expect(value("test.i64") == .int64(-9_000_000_000_000_000_000))
    #expect(value("test.f64") == .float64(-2.5e-300))
    #expect(value("test.array.string") == .array(MetadataArray(elementType: .string, values: [.string("a"), .string(""), .string("ünï")])))
    #expect(value("test.array.bool") == .array(MetadataArray(elementType: .bool, values: [.bool(true), .bool(false), .bool(true)])))
    #expect(value("test.array.i64") == .array(MetadataArray(elementType: .int64, values: [.int64(.min)])))
    if case .array(let long) = value("test.array.long") {
        #expect(long.elementType == .int32 && long.values.count == 100 && long.values[99] == .int32(99))
    } else {
        Issue.record("test.array.long is not an array")
    }
    for t in c.tensors { #expect((t.offset - c.tensors[0].offset) % 64 == 0, "\(t.name)") }
    #expect(c.tensor(named: "plain.f16")?.shape == [2, 3, 4])
    #expect(c.tensor(named: "plain.bf16")?.shape == [2, 2, 2, 3])
    #expect(c.tensor(named: "plain.bf16")?.dtype == .bf16)
    #expect(c.tensor(named: "plain.i64")?.dtype == .i64)
}

@Test("a tensor of a type without a decoder opens, and decoding it names the type and the tensor")
func undecodableTypeIsNamed() throws {
    var f = GGUFBytes(tensors: 1, kvs: 0)
    f.tensor("blk.0.ffn_up.weight", ne: [256], type: 16, offset: 0)  // IQ2_XXS
    f.pad()
    f.data(DType.iq2_xxs.blockBytes)
    let path = temporaryFile(f.bytes, name: "iq.gguf")
    let c = try Checkpoint.open(path)
    let t = try #require(c.tensor(named: "blk.0.ffn_up.weight"))
    #expect(t.dtype == .iq2_xxs)
    let error = CheckpointError.codec(file: path, tensor: t.name, problem: .notDecodable(.iq2_xxs))
    #expect(throws: error) { try c.decode(t) }
    #expect(error.description == "\(path): tensor 'blk.0.ffn_up.weight': element type IQ2_XXS cannot be decoded to numbers")
}

@Test("metadata arrays holding more elements than the reader keeps are refused before decoding them")
func tooManyArrayElements() {
    let count = GGUFReader.maximumArrayElements + 1
    var f = GGUFBytes(tensors: 0, kvs: 1)
    f.string("tokenizer.ggml.token_type")
    f.u32(9)
    f.u32(0)  // u8 elements: the bytes are present, but would become 24 times as much memory
    f.u64(UInt64(count))
    f.bytes += [UInt8](repeating: 0, count: count)
    #expect(violation(f) == .tooManyArrayElements(key: "tokenizer.ggml.token_type", limit: GGUFReader.maximumArrayElements))
}
