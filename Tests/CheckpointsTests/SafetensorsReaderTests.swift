import Foundation
import Testing
@testable import Checkpoints

@Suite struct SafetensorsFixtureTests {
    @Test func decodesEveryDTypeLikeTorch() throws {
        let file = try Checkpoint.open(fixture("safetensors/dtypes.safetensors"))
        let expected = try Checkpoint.open(fixture("safetensors/dtypes_expected.safetensors"))
        #expect(file.tensors.count == expected.tensors.count)
        for tensor in file.tensors {
            let reference = try #require(expected.tensor(named: tensor.name))
            let decoded = try file.decode(tensor)
            #expect(canonicalBits(decoded) == canonicalBits(try expected.decode(reference)), "tensor \(tensor.name)")
        }
    }

    @Test func readsDTypesShapesAndMetadata() throws {
        let file = try Checkpoint.open(fixture("safetensors/dtypes.safetensors"))
        #expect(file.metadata == [MetadataEntry("format", .string("pt"))])
        #expect(file.tensor(named: "bf16")?.dtype == .bf16)
        #expect(file.tensor(named: "f8_e4m3")?.dtype == .f8e4m3)
        #expect(file.tensor(named: "f16_all")?.shape == [65536])
        let shapes = try Checkpoint.open(fixture("safetensors/shapes.safetensors"))
        #expect(shapes.metadata.isEmpty)
        #expect(shapes.tensor(named: "scalar")?.shape == [])
        #expect(try shapes.decode(shapes.tensor(named: "scalar")!) == [2.5])
        #expect(shapes.tensor(named: "empty")?.elementCount == 0)
        #expect(try shapes.decode(shapes.tensor(named: "cube")!) == (0..<24).map(Float.init))
    }

    @Test func encodesWithTorchRounding() throws {
        let file = try Checkpoint.open(fixture("safetensors/rounding.safetensors"))
        let source = try file.decode(file.tensor(named: "source")!)
        for dtype in [DType.bf16, .f16] {
            let reference = file.tensor(named: dtype == .bf16 ? "bf16" : "f16")!
            var encoded = [UInt8](repeating: 0, count: reference.byteCount)
            try source.withUnsafeBufferPointer { src in
                try encoded.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: src, into: $0) }
            }
            let stored = [UInt8](file.data(of: reference))
            var mismatches: [Int] = []
            for i in 0..<source.count where encoded[2 * i] != stored[2 * i] || encoded[2 * i + 1] != stored[2 * i + 1] {
                // Any NaN encoding is a NaN; torch's vector and scalar paths differ in which one they pick.
                if source[i].isNaN && isNaN(encoded, i, dtype) && isNaN(stored, i, dtype) { continue }
                mismatches.append(i)
            }
            #expect(mismatches.isEmpty, "\(dtype): \(mismatches.count) mismatches, first at \(mismatches.first.map { source[$0] } ?? 0)")
        }
    }

    @Test(arguments: ["dtypes.safetensors", "shapes.safetensors", "rounding.safetensors",
                      "tiny-llama/model.safetensors", "tiny-llama-sharded/model-00002-of-00003.safetensors"])
    func rewritingReproducesTheReferenceBytes(name: String) throws {
        let path = fixture("safetensors/" + name)
        let original = try Checkpoint.open(path)
        let out = temporaryFolder() + "/copy.safetensors"
        let specs = original.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let metadata = original.metadata.isEmpty ? nil : original.metadata.map { (key: $0.key, value: $0.value.stringValue!) }
        let writer = try SafetensorsFileWriter(path: out, tensors: specs, metadata: metadata)
        for t in original.tensors.reversed() { try writer.write(t.name, bytes: original.data(of: t)) }
        try writer.finish()
        #expect(FileManager.default.contents(atPath: out) == FileManager.default.contents(atPath: path))
    }
}

/// True when the 16-bit value at element `i` of `bytes` is a NaN of `dtype`.
private func isNaN(_ bytes: [UInt8], _ i: Int, _ dtype: DType) -> Bool {
    let bits = UInt16(bytes[2 * i]) | UInt16(bytes[2 * i + 1]) << 8
    return dtype == .bf16 ? Float(bitPattern: UInt32(bits) << 16).isNaN : ElementCodec.halfToFloat(bits).isNaN
}

@Suite struct SafetensorsRejectionTests {
    private func violation(_ bytes: [UInt8]) -> SafetensorsViolation? {
        let path = temporaryFile(bytes)
        do {
            _ = try Checkpoint.open(path)
            return nil
        } catch {
            guard case .safetensors(let file, let v) = error else { return nil }
            #expect(file == path)
            return v
        }
    }

    private let f32x2 = #""dtype":"F32","shape":[2],"data_offsets":[0,8]"#

    @Test func fileShorterThanTheLengthPrefix() {
        #expect(violation([1, 0, 0]) == .fileTooSmall(size: 3))
    }

    @Test func headerLengthOverTheLimit() {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(100_000_001).littleEndian) { bytes.append(contentsOf: $0) }
        #expect(violation(bytes + [UInt8](repeating: 0x20, count: 16)) == .headerTooLarge(length: 100_000_001))
    }

    @Test func headerLengthOf2To63IsRefusedWithoutAllocating() {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: (UInt64(1) << 63).littleEndian) { bytes.append(contentsOf: $0) }
        #expect(violation(bytes + Array("{}".utf8)) == .headerTooLarge(length: 1 << 63))
    }

    @Test func headerRunningPastTheEnd() {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(64).littleEndian) { bytes.append(contentsOf: $0) }
        bytes += Array("{}".utf8)
        #expect(violation(bytes) == .headerPastEnd(length: 64, fileSize: 10))
    }

    @Test func headerThatIsNotUTF8() {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: UInt64(4).littleEndian) { bytes.append(contentsOf: $0) }
        bytes += [0x7b, 0xff, 0xfe, 0x7d]
        #expect(violation(bytes) == .headerNotUTF8)
    }

    @Test func headerThatIsNotAnObject() {
        #expect(violation(safetensorsBytes(header: "[1,2]")) == .headerNotObject)
    }

    @Test func headerThatIsNotJSON() {
        guard case .invalidJSON = violation(safetensorsBytes(header: #"{"a":}"#)) else {
            Issue.record("expected invalidJSON"); return
        }
    }

    @Test func duplicateTensorNames() {
        let header = "{\"a\":{\(f32x2)},\"a\":{\(f32x2)}}"
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8))) == .duplicateKey("a"))
    }

    @Test func unknownDType() {
        let header = #"{"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8)))
                == .unknownDType(tensor: "a", dtype: "F17"))
    }

    @Test(arguments: [#"[2.0]"#, #"[-2]"#, #"[2e0]"#, #"["2"]"#, #"[99999999999999999999999]"#])
    func shapeNumbersMustBeNonNegativeIntegers(shape: String) {
        let header = "{\"a\":{\"dtype\":\"F32\",\"shape\":\(shape),\"data_offsets\":[0,8]}}"
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8)))
                == .badNumber(tensor: "a", field: "shape"))
    }

    @Test func offsetsNeedTwoNumbers() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8))) == .badOffsetArity(tensor: "a"))
    }

    @Test func missingFields() {
        let header = #"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8)))
                == .missingField(tensor: "a", field: "shape"))
    }

    @Test func metadataValuesMustBeStrings() {
        let header = "{\"__metadata__\":{\"n\":1},\"a\":{\(f32x2)}}"
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8)))
                == .metadataValueNotString(key: "n"))
    }

    @Test func beginAfterEnd() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8))) == .offsetsReversed(tensor: "a"))
    }

    @Test func gapBetweenTensors() {
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 12)))
                == .misplacedTensor(tensor: "b", expectedBegin: 4, begin: 8))
    }

    @Test func overlappingTensors() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8)))
                == .misplacedTensor(tensor: "b", expectedBegin: 8, begin: 4))
    }

    @Test func bufferNotStartingAtZero() {
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8)))
                == .misplacedTensor(tensor: "a", expectedBegin: 0, begin: 4))
    }

    @Test func byteLengthDisagreeingWithShape() {
        let header = #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8)))
                == .byteLengthMismatch(tensor: "a", expected: 12, actual: 8))
    }

    @Test func shapeProductOverflow() {
        let header = #"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8))) == .sizeOverflow(tensor: "a"))
    }

    @Test func byteCountOverflow() {
        let header = #"{"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}}"#
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8))) == .sizeOverflow(tensor: "a"))
    }

    @Test func bytesAfterTheLastTensor() {
        let header = "{\"a\":{\(f32x2)}}"
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 12)))
                == .bufferMismatch(dataEnd: 8, bufferSize: 12))
    }

    @Test func tensorDataPastTheEndOfFile() {
        let header = "{\"a\":{\(f32x2)}}"
        #expect(violation(safetensorsBytes(header: header, data: Array(repeating: 0, count: 4)))
                == .bufferMismatch(dataEnd: 8, bufferSize: 4))
    }

    @Test func emptyHeaderObjectWithNoDataIsValid() throws {
        let checkpoint = try Checkpoint.open(temporaryFile(safetensorsBytes(header: "{}")))
        #expect(checkpoint.tensors.isEmpty)
    }

    @Test func unknownTensorFieldsAreIgnoredAsTheReferenceDoes() throws {
        let header = "{\"a\":{\(f32x2),\"note\":\"x\"}}"
        let checkpoint = try Checkpoint.open(temporaryFile(safetensorsBytes(header: header, data: Array(repeating: 0, count: 8))))
        #expect(checkpoint.tensor(named: "a")?.shape == [2])
    }
}
