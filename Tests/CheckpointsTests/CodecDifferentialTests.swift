import Foundation
import Testing
@testable import Checkpoints

// The codec kernels against plain per-element references, on buffer lengths that
// straddle every width the optimizer may vectorize or unroll by (0…70, then
// around 128, 256 and 1024), and the block kernels on odd numbers of blocks.
// Every output buffer sits between guard regions that must come back untouched.

/// Lengths straddling vector widths and unroll factors.
private let lengths: [Int] = Array(0...70) + [127, 128, 129, 255, 256, 257, 1023, 1024, 1025]

/// Guard elements on each side of an output buffer.
private let guardCount = 19

/// A deterministic byte stream (SplitMix64).
private struct Bytes {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
}

/// Decodes through `ElementCodec` into the middle of a guarded array; checks the guards.
private func guardedDecode(_ dtype: DType, _ bytes: [UInt8], count: Int) throws -> [Float] {
    let sentinel = Float(bitPattern: 0x7fa5_a5a5)
    var out = [Float](repeating: sentinel, count: count + 2 * guardCount)
    try bytes.withUnsafeBytes { src in
        try out.withUnsafeMutableBufferPointer { all in
            try ElementCodec.decode(dtype, from: src,
                                    into: UnsafeMutableBufferPointer(rebasing: all[guardCount..<(guardCount + count)]))
        }
    }
    let outside = out[..<guardCount] + out[(guardCount + count)...]
    #expect(outside.allSatisfy { $0.bitPattern == sentinel.bitPattern }, "\(dtype) × \(count) wrote outside its buffer")
    return Array(out[guardCount..<(guardCount + count)])
}

/// Encodes through `ElementCodec` into the middle of a guarded byte array; checks the guards.
private func guardedEncode(_ dtype: DType, _ values: [Float]) throws -> [UInt8] {
    let size = dtype.byteCount(forElements: values.count)!
    var out = [UInt8](repeating: 0xA5, count: size + 2 * guardCount)
    try values.withUnsafeBufferPointer { src in
        try out.withUnsafeMutableBytes { all in
            try ElementCodec.encode(dtype, from: src,
                                    into: UnsafeMutableRawBufferPointer(rebasing: all[guardCount..<(guardCount + size)]))
        }
    }
    let outside = out[..<guardCount] + out[(guardCount + size)...]
    #expect(outside.allSatisfy { $0 == 0xA5 }, "\(dtype) × \(values.count) wrote outside its buffer")
    return Array(out[guardCount..<(guardCount + size)])
}

/// Little-endian unsigned integer from `width` bytes at `offset`.
private func littleEndian(_ bytes: [UInt8], _ offset: Int, _ width: Int) -> UInt64 {
    var value: UInt64 = 0
    for i in 0..<width { value |= UInt64(bytes[offset + i]) << (8 * UInt64(i)) }
    return value
}

/// F8_E4M3 ("fn"): bias 7, no infinities, S.1111.111 is NaN; subnormals m · 2^-9.
private func e4m3(_ code: UInt8) -> Float {
    let sign: Float = code & 0x80 != 0 ? -1 : 1
    let exponent = Int(code >> 3) & 0xf, mantissa = Float(code & 7)
    if exponent == 0xf && code & 7 == 7 { return .nan }
    if exponent == 0 { return sign * mantissa * 0x1p-9 }
    return sign * (8 + mantissa) * Float(sign: .plus, exponent: exponent - 10, significand: 1)
}

/// Element `i` of `bytes` as stored type `dtype`, computed the obvious way.
private func plainElement(_ dtype: DType, _ bytes: [UInt8], _ i: Int) -> Float {
    switch dtype {
    case .f32: return Float(bitPattern: UInt32(littleEndian(bytes, 4 * i, 4)))
    case .f64: return Float(Double(bitPattern: littleEndian(bytes, 8 * i, 8)))
    case .bf16: return Float(bitPattern: UInt32(littleEndian(bytes, 2 * i, 2)) << 16)
    case .f16: return Float(Float16(bitPattern: UInt16(littleEndian(bytes, 2 * i, 2))))
    case .f8e5m2: return Float(Float16(bitPattern: UInt16(bytes[i]) << 8))
    case .f8e4m3: return e4m3(bytes[i])
    case .bool: return bytes[i] == 0 ? 0 : 1
    case .u8: return Float(bytes[i])
    case .i8: return Float(Int8(bitPattern: bytes[i]))
    case .u16: return Float(UInt16(littleEndian(bytes, 2 * i, 2)))
    case .i16: return Float(Int16(bitPattern: UInt16(littleEndian(bytes, 2 * i, 2))))
    case .u32: return Float(UInt32(littleEndian(bytes, 4 * i, 4)))
    case .i32: return Float(Int32(bitPattern: UInt32(littleEndian(bytes, 4 * i, 4))))
    case .u64: return Float(littleEndian(bytes, 8 * i, 8))
    case .i64: return Float(Int64(bitPattern: littleEndian(bytes, 8 * i, 8)))
    default: fatalError("no plain reference for \(dtype)")
    }
}

@Test("element decoders match a per-element reference at every length around the vector widths",
      arguments: [DType.f32, .f64, .bf16, .f16, .f8e5m2, .f8e4m3, .bool, .u8, .i8, .u16, .i16, .u32, .i32, .u64, .i64])
func elementDecodersMatchPlainReference(_ dtype: DType) throws {
    var random = Bytes(state: dtype.rawValue.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) })
    for count in lengths {
        let bytes = random.bytes(dtype.byteCount(forElements: count)!)
        let decoded = try guardedDecode(dtype, bytes, count: count)
        let expected = (0..<count).map { plainElement(dtype, bytes, $0) }
        #expect(canonicalBits(decoded) == canonicalBits(expected), "\(dtype) × \(count)")
    }
}

/// Float32 values that exercise rounding: random bit patterns over every exponent,
/// exact halfway cases of both half formats, subnormals, overflow, infinities, NaN.
private func encoderInputs(_ count: Int, _ random: inout Bytes) -> [Float] {
    let specials: [Float] = [0, -0.0, .infinity, -.infinity, .nan, 65504, 65520, 65519.996, 1e-8, 5.9604645e-8,
                             2.9802322e-8, 1.00390625, 1.01171875, -3.0517578e-5, .leastNonzeroMagnitude,
                             .greatestFiniteMagnitude]
    return (0..<count).map { i in
        let r = random.next()
        switch r % 4 {
        case 0: return specials[Int(r >> 8) % specials.count]
        case 1: return Float(bitPattern: UInt32(truncatingIfNeeded: r >> 16))  // any pattern
        case 2: return Float(bitPattern: UInt32(truncatingIfNeeded: r >> 16) & 0xffff_8000 | 0x8000)  // BF16 ties
        default: return Float(bitPattern: UInt32(truncatingIfNeeded: r >> 16) & 0xbfff_f000 | 0x1000)  // F16 ties
        }
    }
}

/// BF16 of `x` by the remainder rule: keep the top 16 bits and round the dropped 16
/// up when they exceed half, or equal half with an odd kept part; NaN stays NaN.
private func plainBF16(_ x: Float) -> UInt16 {
    if x.isNaN { return 0x7fc0 }
    let bits = x.bitPattern
    let kept = bits >> 16, dropped = bits & 0xffff
    let up = dropped > 0x8000 || (dropped == 0x8000 && kept & 1 == 1)
    return UInt16(kept + (up ? 1 : 0))
}

@Test("element encoders match a per-element reference at every length around the vector widths",
      arguments: [DType.f32, .f64, .bf16, .f16])
func elementEncodersMatchPlainReference(_ dtype: DType) throws {
    var random = Bytes(state: 0xC0DEC + UInt64(dtype.blockBytes))
    for count in lengths {
        let values = encoderInputs(count, &random)
        let bytes = try guardedEncode(dtype, values)
        for (i, x) in values.enumerated() {
            switch dtype {
            case .f32:
                #expect(UInt32(littleEndian(bytes, 4 * i, 4)) == x.bitPattern)
            case .f64:
                let stored = Double(bitPattern: littleEndian(bytes, 8 * i, 8))
                #expect(x.isNaN ? stored.isNaN : stored == Double(x), "f64 element \(i) of \(count)")
            case .bf16:
                let stored = UInt16(littleEndian(bytes, 2 * i, 2))
                let expected = plainBF16(x)
                #expect(x.isNaN ? stored & 0x7fc0 == 0x7fc0 : stored == expected, "bf16 element \(i) of \(count): \(x)")
            default:
                let stored = Float16(bitPattern: UInt16(littleEndian(bytes, 2 * i, 2)))
                let expected = Float16(x)
                #expect(x.isNaN ? stored.isNaN : stored.bitPattern == expected.bitPattern,
                        "f16 element \(i) of \(count): \(x)")
            }
        }
    }
}

/// Block counts straddling one block and a few: 0, 1, 2, 3, 7, 9.
private let blockCounts = [0, 1, 2, 3, 7, 9]

/// Random quant blocks whose half-precision scales are finite (exponent bits masked).
private func quantBlocks(_ dtype: DType, blocks: Int, _ random: inout Bytes) -> [UInt8] {
    var bytes = random.bytes(blocks * dtype.blockBytes)
    for i in bytes.indices where i % 2 == 1 { bytes[i] &= 0x3b }  // the high byte of every aligned half
    return bytes
}

@Test("block decoders on a run of blocks equal the blocks decoded one at a time",
      arguments: [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K])
func blockDecodersAgreeAcrossBlockBoundaries(_ dtype: DType) throws {
    var random = Bytes(state: 0xB10C + UInt64(dtype.blockBytes))
    for blocks in blockCounts {
        let bytes = quantBlocks(dtype, blocks: blocks, &random)
        let whole = try guardedDecode(dtype, bytes, count: blocks * dtype.blockElements)
        var oneByOne: [Float] = []
        for b in 0..<blocks {
            let block = Array(bytes[(b * dtype.blockBytes)..<((b + 1) * dtype.blockBytes)])
            oneByOne += try guardedDecode(dtype, block, count: dtype.blockElements)
        }
        #expect(canonicalBits(whole) == canonicalBits(oneByOne), "\(dtype) × \(blocks) blocks")
        #expect(whole.allSatisfy { $0.isFinite })
    }
}

@Test("Q8_0 and Q4_0 decoding on odd block counts match the per-element formula")
func simpleBlockDecodersMatchFormula() throws {
    var random = Bytes(state: 0x5EED)
    for blocks in [1, 3, 7] {
        let q8 = quantBlocks(.q8_0, blocks: blocks, &random)
        let q8Decoded = try guardedDecode(.q8_0, q8, count: blocks * 32)
        let q4 = quantBlocks(.q4_0, blocks: blocks, &random)
        let q4Decoded = try guardedDecode(.q4_0, q4, count: blocks * 32)
        for i in 0..<(blocks * 32) {
            let b = i / 32, j = i % 32
            let d8 = Float(Float16(bitPattern: UInt16(littleEndian(q8, b * 34, 2))))
            #expect(q8Decoded[i] == Float(Int8(bitPattern: q8[b * 34 + 2 + j])) * d8, "Q8_0 element \(i)")
            let d4 = Float(Float16(bitPattern: UInt16(littleEndian(q4, b * 18, 2))))
            let byte = q4[b * 18 + 2 + j % 16]
            let nibble = j < 16 ? byte & 0xf : byte >> 4
            #expect(q4Decoded[i] == d4 * Float(Int32(nibble) - 8), "Q4_0 element \(i)")
        }
    }
}

@Test("block encoders on a run of blocks equal the blocks encoded one at a time",
      arguments: [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K])
func blockEncodersAgreeAcrossBlockBoundaries(_ dtype: DType) throws {
    for blocks in blockCounts {
        let values = (0..<(blocks * dtype.blockElements)).map { i in sin(Float(i) * 0.61) * Float(1 + i % 13) }
        let whole = try guardedEncode(dtype, values)
        var oneByOne: [UInt8] = []
        for b in 0..<blocks {
            oneByOne += try guardedEncode(dtype, Array(values[(b * dtype.blockElements)..<((b + 1) * dtype.blockElements)]))
        }
        #expect(whole == oneByOne, "\(dtype) × \(blocks) blocks")
    }
}

@Test("block and element kernels refuse buffers of the wrong size by trapping")
func kernelsTrapOnWrongSizes() async {
    await #expect(processExitsWith: .failure) {
        var out = [Float](repeating: 0, count: 64)
        let bytes = [UInt8](repeating: 0, count: 34)  // one Q8_0 block for two blocks of output
        bytes.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { GGMLQuants.decodeQ8_0(src, $0) } }
    }
    await #expect(processExitsWith: .failure) {
        let values = [Float](repeating: 1, count: 256)
        var bytes = [UInt8](repeating: 0, count: 143)  // a byte short of one Q4_K block
        values.withUnsafeBufferPointer { src in bytes.withUnsafeMutableBytes { GGMLKQuants.encodeQ4_K(src, $0) } }
    }
    await #expect(processExitsWith: .failure) {
        var out = [Float](repeating: 0, count: 9)
        let bytes = [UInt8](repeating: 0, count: 16)  // eight halves for nine floats
        bytes.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { ElementCodec.decodeBF16(src, $0) } }
    }
}
