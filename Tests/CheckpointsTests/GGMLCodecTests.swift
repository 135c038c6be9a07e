import Foundation
import Testing
@testable import Checkpoints

/// The reference values in fixtures/gguf/quants.gguf, made by the Python `gguf` package.
private let quants = try! Checkpoint.open(fixture("gguf/quants.gguf"))

private func reference(_ name: String) -> TensorEntry { quants.tensor(named: name)! }

private func encode(_ dtype: DType, _ values: [Float]) throws -> [UInt8] {
    var out = [UInt8](repeating: 0xAA, count: dtype.byteCount(forElements: values.count)!)
    try values.withUnsafeBufferPointer { src in
        try out.withUnsafeMutableBytes { dst in try ElementCodec.encode(dtype, from: src, into: dst) }
    }
    return out
}

@Test("decoding matches gguf.quants.dequantize bit for bit",
      arguments: [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K])
func decodeMatchesReference(_ dtype: DType) throws {
    let quantized = reference("\(dtype).quantized")
    #expect(quantized.dtype == dtype)
    let decoded = try quants.decode(quantized)
    let expected = try quants.decode(reference("\(dtype).decoded"))
    #expect(bitPatterns(decoded) == bitPatterns(expected))
}

@Test("encoding matches gguf.quants.quantize bit for bit", arguments: [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1])
func encodeMatchesReference(_ dtype: DType) throws {
    let input = try quants.decode(reference("\(dtype).input"))
    let expected = Array(quants.data(of: reference("\(dtype).quantized")))
    #expect(try encode(dtype, input) == expected)
}

@Test("Q4_K and Q6_K encoding matches the transcription of ggml's reference quantizer",
      arguments: [DType.q4_K, .q6_K])
func encodeKQuantsMatchesReference(_ dtype: DType) throws {
    let input = try quants.decode(reference("\(dtype).input"))
    let expected = Array(quants.data(of: reference("\(dtype).quantized")))
    let actual = try encode(dtype, input)
    #expect(actual.count == expected.count)
    let blockBytes = dtype.blockBytes
    for b in 0..<(expected.count / blockBytes) {
        let range = (b * blockBytes)..<((b + 1) * blockBytes)
        #expect(Array(actual[range]) == Array(expected[range]), "block \(b)")
    }
}

@Test("re-encoding decoded values is stable and close to the input",
      arguments: [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K])
func roundTripError(_ dtype: DType) throws {
    var values = [Float](repeating: 0, count: 512)
    for i in values.indices { values[i] = sin(Float(i) * 0.37) * Float(1 + i % 7) }
    let decoded = try decodeBytes(dtype, try encode(dtype, values), count: values.count)
    let bits: Float = switch dtype {
    case .q8_0: 8
    case .q6_K: 6
    case .q5_0, .q5_1: 5
    default: 4
    }
    for block in stride(from: 0, to: values.count, by: dtype.blockElements) {
        let slice = values[block..<(block + dtype.blockElements)]
        let range = slice.max()! - slice.min()!
        for i in slice.indices {
            #expect(abs(decoded[i] - values[i]) <= range / (pow(2, bits) - 1) * 1.5, "element \(i)")
        }
    }
}

private func decodeBytes(_ dtype: DType, _ bytes: [UInt8], count: Int) throws -> [Float] {
    var out = [Float](repeating: 0, count: count)
    try bytes.withUnsafeBytes { src in
        try out.withUnsafeMutableBufferPointer { dst in try ElementCodec.decode(dtype, from: src, into: dst) }
    }
    return out
}

@Test("Q8_0 rounds exact halves away from zero, as C's roundf")
func q8_0RoundsHalvesAway() throws {
    // amax 127 gives d = 1, so each value is its own quant.
    var values = [Float](repeating: 0, count: 32)
    values[0] = 127
    values[1] = 0.5
    values[2] = -0.5
    values[3] = 2.5
    values[4] = -2.5
    values[5] = 0.49999997
    let bytes = try encode(.q8_0, values)
    let q = bytes[2...].map { Int8(bitPattern: $0) }
    #expect(Array(q[0..<6]) == [127, 1, -1, 3, -3, 0])
}

@Test("types without a codec are refused by name")
func unsupportedTypesAreRefused() {
    #expect(!DType.iq2_xxs.isDecodable)
    #expect(!DType.q2_K.isEncodable)
    let source = [UInt8](repeating: 0, count: DType.iq2_xxs.blockBytes)
    var out = [Float](repeating: 0, count: 256)
    #expect(throws: CodecError.notDecodable(.iq2_xxs)) {
        try source.withUnsafeBytes { src in
            try out.withUnsafeMutableBufferPointer { dst in try ElementCodec.decode(.iq2_xxs, from: src, into: dst) }
        }
    }
}

@Test("every ggml type id maps back to its type, and safetensors names exclude ggml-only types")
func ggmlTypeIDsRoundTrip() {
    for type in DType.allCases {
        if let id = type.ggmlTypeID { #expect(DType(ggmlTypeID: id) == type) }
        #expect((DType(safetensorsName: type.rawValue) != nil) == type.isSafetensorsType)
    }
    #expect(DType(ggmlTypeID: 4) == nil)
    #expect(DType(ggmlTypeID: 30) == .bf16)
    #expect(DType.q4_K.blockElements == 256 && DType.q4_K.blockBytes == 144)
}

@Test("encoders never trap on NaN, infinities or extreme magnitudes",
      arguments: [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K])
func encodersSurviveSpecialValues(_ dtype: DType) throws {
    let specials: [Float] = [.nan, .infinity, -.infinity, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                             .leastNonzeroMagnitude, 0, -0.0, 1e30, -1e-30]
    var values = [Float](repeating: 0, count: 1024)
    for i in values.indices { values[i] = i % 3 == 0 ? specials[(i / 3) % specials.count] : Float(i % 17) - 8 }
    let bytes = try encode(dtype, values)
    _ = try decodeBytes(dtype, bytes, count: values.count)
}
