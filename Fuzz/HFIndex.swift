// libFuzzer entry point for the Hugging Face shard index reader (see scripts/fuzz.sh).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHFIndex(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    if let entries = try? HFFolder.parseIndex(UnsafeRawBufferPointer(start: data, count: size)) {
        for entry in entries { precondition(HFFolder.isPlainFileName(entry.shard)) }
    }
    return 0
}
