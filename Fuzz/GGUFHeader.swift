// libFuzzer entry point for the GGUF parser: header, metadata and tensor infos (see scripts/fuzz.sh).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUFHeader(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    if let header = try? GGUFReader.parse(bytes) {
        // Every accepted tensor must lie inside the input, aligned, and decode without trapping.
        for tensor in header.tensors {
            precondition(tensor.offset >= header.dataStart && tensor.offset + tensor.byteCount <= size)
            precondition((tensor.offset - header.dataStart) % header.alignment == 0)
            guard tensor.dtype.isDecodable, tensor.elementCount <= 1 << 16 else { continue }
            var out = [Float](repeating: 0, count: tensor.elementCount)
            let slice = UnsafeRawBufferPointer(rebasing: bytes[tensor.offset..<(tensor.offset + tensor.byteCount)])
            out.withUnsafeMutableBufferPointer { try? ElementCodec.decode(tensor.dtype, from: slice, into: $0) }
        }
    }
    return 0
}
