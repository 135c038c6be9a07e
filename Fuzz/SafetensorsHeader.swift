// libFuzzer entry point for the safetensors header parser (see scripts/fuzz.sh).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensorsHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let header = try? SafetensorsReader.parse(bytes) {
        // Every accepted tensor must lie inside the input and decode without trapping.
        for tensor in header.tensors {
            precondition(tensor.offset >= 0 && tensor.offset + tensor.byteCount <= size)
            guard tensor.dtype.isDecodable, tensor.elementCount <= 1 << 16 else { continue }
            var out = [Float](repeating: 0, count: tensor.elementCount)
            let slice = UnsafeRawBufferPointer(rebasing: bytes[tensor.offset..<(tensor.offset + tensor.byteCount)])
            out.withUnsafeMutableBufferPointer { try? ElementCodec.decode(tensor.dtype, from: slice, into: $0) }
        }
    }
    return 0
}
