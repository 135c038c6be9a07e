import CZstd

/// One-shot zstd compression through libzstd.
public enum Zstd {
    /// Compresses `source` into a new zstd frame (content size recorded in the frame).
    public static func compress(_ source: UnsafeRawBufferPointer, level: Int32 = 3) -> [UInt8] {
        let bound = ZSTD_compressBound(source.count)
        var out = [UInt8](repeating: 0, count: bound)
        let written = out.withUnsafeMutableBytes { dst in
            ZSTD_compress(dst.baseAddress, bound, source.baseAddress, source.count, level)
        }
        precondition(ZSTD_isError(written) == 0, "zstd compression cannot fail with a bound-sized buffer")
        out.removeLast(bound - written)
        return out
    }

    /// The content size a frame declares, or nil when unknown or not a frame.
    public static func contentSize(_ frame: UnsafeRawBufferPointer) -> UInt64? {
        let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        return declared == ZSTD_CONTENTSIZE_ERROR || declared == ZSTD_CONTENTSIZE_UNKNOWN ? nil : declared
    }

    /// The most content a frame of `frameBytes` bytes can hold. Every block of a
    /// frame starts with a 3-byte header and holds at most 128 KiB (the format's
    /// block size limit, RFC 8878 §3.1.1.2.3), so a declared size beyond this is a lie
    /// and must not size an allocation.
    public static func maximumContentSize(frameBytes: Int) -> UInt64 {
        let (most, overflow) = UInt64(max(0, frameBytes) / 3 + 1).multipliedReportingOverflow(by: 128 << 10)
        return overflow ? .max : most
    }

    /// Decompresses one frame into `destination`, which must be exactly the
    /// frame's recorded content size; returns a reason on failure.
    public static func decompress(_ frame: UnsafeRawBufferPointer, into destination: UnsafeMutableRawBufferPointer) -> String? {
        let declared = ZSTD_getFrameContentSize(frame.baseAddress, frame.count)
        if declared == ZSTD_CONTENTSIZE_ERROR { return "not a zstd frame" }
        if declared == ZSTD_CONTENTSIZE_UNKNOWN || declared != UInt64(destination.count) {
            return "compressed block holds \(declared) bytes, expected \(destination.count)"
        }
        let written = ZSTD_decompress(destination.baseAddress, destination.count, frame.baseAddress, frame.count)
        if ZSTD_isError(written) != 0 { return "corrupt compressed data: \(String(cString: ZSTD_getErrorName(written)))" }
        if written != destination.count { return "compressed block is short: \(written) of \(destination.count) bytes" }
        return nil
    }
}
