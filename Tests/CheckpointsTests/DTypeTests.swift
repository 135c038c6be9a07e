import Testing
@testable import Checkpoints

@Test(arguments: DType.allCases)
func byteCountsFollowTheBlockLayout(dtype: DType) {
    for count in [0, 1, 2, 3, 4, 5, 8, 10, 12] {
        let bytes = dtype.byteCount(forElements: count)
        if count % dtype.blockElements == 0 {
            #expect(bytes == count / dtype.blockElements * dtype.blockBytes)
        } else {
            #expect(bytes == nil)
        }
    }
    #expect(dtype.byteCount(forElements: Int.max - 7) == nil || dtype.blockBytes <= dtype.blockElements)
    // ggml-only types (Q4_K, …) are not safetensors dtypes.
    #expect((DType(safetensorsName: dtype.safetensorsName) == dtype) == dtype.isSafetensorsType)
}

@Test func elementCountsCheckOverflowAndSigns() {
    #expect(elementCount(of: []) == 1)
    #expect(elementCount(of: [0, Int.max]) == 0)
    #expect(elementCount(of: [3, 4]) == 12)
    #expect(elementCount(of: [Int.max, 2]) == nil)
    #expect(elementCount(of: [-1, 2]) == nil)
}

@Test func halfConversionRoundTripsEveryFiniteHalf() {
    for bits in UInt16(0)...UInt16.max {
        let value = ElementCodec.halfToFloat(bits)
        if value.isNaN {
            #expect(ElementCodec.halfToFloat(ElementCodec.floatToHalf(value)).isNaN)
        } else {
            #expect(ElementCodec.floatToHalf(value) == bits)
        }
    }
}

@Test func bf16RoundsHalfwayCasesToEven() {
    // 1 + 2^-8 lies halfway between two BF16 values; the even one is 1.0.
    #expect(ElementCodec.floatToBF16(1.00390625) == 0x3f80)
    // 1 + 3·2^-8 is halfway too; the even neighbour is 1 + 2^-6.
    #expect(ElementCodec.floatToBF16(1.01171875) == 0x3f82)
    #expect(ElementCodec.floatToBF16(.infinity) == 0x7f80)
    #expect(Float(bitPattern: UInt32(ElementCodec.floatToBF16(.nan)) << 16).isNaN)
}

@Test func decodeRefusesMismatchedSizesAndOpaqueTypes() {
    var out = [Float](repeating: 0, count: 2)
    let bytes: [UInt8] = [0, 0, 0]
    bytes.withUnsafeBytes { raw in
        out.withUnsafeMutableBufferPointer { buffer in
            #expect(throws: CodecError.sizeMismatch(dtype: .f16, elements: 2, bytes: 3)) {
                try ElementCodec.decode(.f16, from: raw, into: buffer)
            }
            #expect(throws: CodecError.notDecodable(.c64)) {
                try ElementCodec.decode(.c64, from: UnsafeRawBufferPointer(rebasing: raw[0..<0]), into: UnsafeMutableBufferPointer(rebasing: buffer[0..<0]))
            }
        }
    }
}
