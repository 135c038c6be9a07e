// libFuzzer entry point for the .delta file reader (see scripts/fuzz.sh).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDeltaFile(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: data, count: size)
    guard let header = try? SparseDelta.File.parse(bytes) else { return 0 }
    // Rebuild every small tensor against an all-zero base whose checksum is forced to match.
    for record in header.tensors where record.elementCount <= 1 << 16 {
        guard let size = record.dtype.byteCount(forElements: record.elementCount) else { continue }
        let base = [UInt8](repeating: 0, count: size)
        var out = [UInt8](repeating: 0, count: size)
        var patched = record
        patched.baseHash = base.withUnsafeBytes { XXHash64.hash($0) }
        base.withUnsafeBytes { b in
            out.withUnsafeMutableBytes { o in _ = try? SparseDelta.File.decode(patched, in: bytes, base: b, into: o) }
        }
    }
    return 0
}
