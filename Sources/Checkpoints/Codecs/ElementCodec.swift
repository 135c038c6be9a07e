/// Conversions between stored element types and Float32.
///
/// `decode` and `encode` refuse mismatched sizes with a `CodecError`; every kernel
/// behind them checks again, once at entry, that `source` holds exactly the bytes of
/// `destination.count` elements (or the reverse), and traps otherwise. Loops are
/// plain indexed loops over unsafe pointers so the optimizer can vectorize them;
/// half-precision conversions are done with bit manipulation because Swift's
/// `Float16` conversion calls a slow library routine on CPUs without F16C.
public enum ElementCodec {

    /// Decodes `destination.count` elements of `dtype` from `source`; throws
    /// `.sizeMismatch` unless `source.count == dtype.byteCount(forElements: destination.count)`.
    public static func decode(
        _ dtype: DType, from source: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>
    ) throws(CodecError) {
        let n = destination.count
        guard dtype.isDecodable else { throw .notDecodable(dtype) }
        guard n > 0 else { return }
        guard let expected = dtype.byteCount(forElements: n), expected == source.count else {
            throw .sizeMismatch(dtype: dtype, elements: n, bytes: source.count)
        }
        switch dtype {
        case .f32: copyBytes(source, UnsafeMutableRawBufferPointer(destination))
        case .bf16: decodeBF16(source, destination)
        case .f16: decodeF16(source, destination)
        case .f64: convert(source, Double.self, destination) { Float($0) }
        case .f8e4m3: decodeF8E4M3(source, destination)
        case .f8e5m2: decodeF8E5M2(source, destination)
        case .bool: convert(source, UInt8.self, destination) { $0 == 0 ? 0 : 1 }
        case .u8: convert(source, UInt8.self, destination) { Float($0) }
        case .i8: convert(source, Int8.self, destination) { Float($0) }
        case .u16: convert(source, UInt16.self, destination) { Float($0) }
        case .i16: convert(source, Int16.self, destination) { Float($0) }
        case .u32: convert(source, UInt32.self, destination) { Float($0) }
        case .i32: convert(source, Int32.self, destination) { Float($0) }
        case .u64: convert(source, UInt64.self, destination) { Float($0) }
        case .i64: convert(source, Int64.self, destination) { Float($0) }
        case .q8_0: GGMLQuants.decodeQ8_0(source, destination)
        case .q4_0: GGMLQuants.decodeQ4_0(source, destination)
        case .q4_1: GGMLQuants.decodeQ4_1(source, destination)
        case .q5_0: GGMLQuants.decodeQ5_0(source, destination)
        case .q5_1: GGMLQuants.decodeQ5_1(source, destination)
        case .q2_K: GGMLKQuants.decodeQ2_K(source, destination)
        case .q3_K: GGMLKQuants.decodeQ3_K(source, destination)
        case .q4_K: GGMLKQuants.decodeQ4_K(source, destination)
        case .q5_K: GGMLKQuants.decodeQ5_K(source, destination)
        case .q6_K: GGMLKQuants.decodeQ6_K(source, destination)
        default:
            throw .notDecodable(dtype)
        }
    }

    /// Encodes `source` into `dtype`, rounding to nearest even; throws `.sizeMismatch`
    /// unless `destination.count == dtype.byteCount(forElements: source.count)`.
    public static func encode(
        _ dtype: DType, from source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        let n = source.count
        guard dtype.isEncodable else { throw .notEncodable(dtype) }
        guard n > 0 else { return }
        guard let expected = dtype.byteCount(forElements: n), expected == destination.count else {
            throw .sizeMismatch(dtype: dtype, elements: n, bytes: destination.count)
        }
        switch dtype {
        case .f32: copyBytes(UnsafeRawBufferPointer(source), destination)
        case .bf16: encodeBF16(source, destination)
        case .f16: encodeF16(source, destination)
        case .f64: encodeF64(source, destination)
        case .q8_0: GGMLQuants.encodeQ8_0(source, destination)
        case .q4_0: GGMLQuants.encodeQ4_0(source, destination)
        case .q4_1: GGMLQuants.encodeQ4_1(source, destination)
        case .q5_0: GGMLQuants.encodeQ5_0(source, destination)
        case .q5_1: GGMLQuants.encodeQ5_1(source, destination)
        case .q4_K: GGMLKQuants.encodeQ4_K(source, destination)
        case .q6_K: GGMLKQuants.encodeQ6_K(source, destination)
        default:
            throw .notEncodable(dtype)
        }
    }

    // MARK: Kernels
    //
    // Each kernel states its bound and checks it once at entry with `precondition`,
    // which stays in release builds: a caller passing buffers of the wrong sizes
    // stops there instead of reading or writing past a buffer. Inside, the loops
    // index raw pointers over exactly `destination.count` (or `source.count`)
    // elements, which the entry check has shown both buffers hold.

    /// Bound: `source` holds exactly the bytes of `destination`.
    static func copyBytes(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableRawBufferPointer) {
        precondition(source.count == destination.count, "copy of \(source.count) bytes into \(destination.count)")
        guard let from = source.baseAddress, let to = destination.baseAddress else { return }
        to.copyMemory(from: from, byteCount: source.count)
    }

    /// Bound: `source` holds exactly `destination.count` values of `T`.
    @inline(__always)
    static func convert<T>(
        _ source: UnsafeRawBufferPointer, _ type: T.Type, _ destination: UnsafeMutableBufferPointer<Float>,
        _ f: (T) -> Float
    ) {
        let n = destination.count
        precondition(source.count == n * MemoryLayout<T>.stride, "\(source.count) bytes for \(n) elements")
        guard n > 0 else { return }
        let src = source.baseAddress!.assumingMemoryBound(to: T.self), dst = destination.baseAddress!
        for i in 0..<n { dst[i] = f(src[i]) }
    }

    /// Bound: `source` holds exactly `destination.count` 16-bit values; returns
    /// the typed source, the destination as bit patterns and the element count.
    @inline(__always)
    private static func halves(
        _ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>
    ) -> (UnsafePointer<UInt16>, UnsafeMutablePointer<UInt32>, Int)? {
        let n = destination.count
        precondition(source.count == n * 2, "\(source.count) bytes for \(n) 16-bit elements")
        guard n > 0 else { return nil }
        return (source.baseAddress!.assumingMemoryBound(to: UInt16.self),
                UnsafeMutableRawPointer(destination.baseAddress!).assumingMemoryBound(to: UInt32.self), n)
    }

    /// BF16 is the upper half of a Float32. Bound: `source` holds `destination.count` × 2 bytes.
    static func decodeBF16(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, out, n) = halves(source, destination) else { return }
        for i in 0..<n { out[i] = UInt32(src[i]) &<< 16 }
    }

    /// IEEE half to single: shift exponent and mantissa into place and rebias by
    /// multiplying with 2^112, which also normalizes subnormals exactly; infinities
    /// and NaNs get the all-ones exponent. Bound: `source` holds `destination.count` × 2 bytes.
    static func decodeF16(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, out, n) = halves(source, destination) else { return }
        for i in 0..<n { out[i] = halfToFloatBits(src[i]) }
    }

    @inline(__always)
    public static func halfToFloatBits(_ h: UInt16) -> UInt32 {
        let bits = UInt32(h)
        let sign = (bits & 0x8000) &<< 16
        let magnitude = bits & 0x7fff
        let scaled = (Float(bitPattern: magnitude &<< 13) * Float(bitPattern: 0x7780_0000)).bitPattern
        let special = (magnitude &<< 13) | 0x7f80_0000
        return sign | (magnitude >= 0x7c00 ? special : scaled)
    }

    /// Half-precision value of `h` as a Float.
    @inline(__always)
    public static func halfToFloat(_ h: UInt16) -> Float { Float(bitPattern: halfToFloatBits(h)) }

    /// Bound: `source` holds exactly `destination.count` bytes; returns the source, the
    /// destination as bit patterns and the element count.
    @inline(__always)
    private static func bytes(
        _ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>
    ) -> (UnsafePointer<UInt8>, UnsafeMutablePointer<UInt32>, Int)? {
        let n = destination.count
        precondition(source.count == n, "\(source.count) bytes for \(n) 8-bit elements")
        guard n > 0 else { return nil }
        return (source.baseAddress!.assumingMemoryBound(to: UInt8.self),
                UnsafeMutableRawPointer(destination.baseAddress!).assumingMemoryBound(to: UInt32.self), n)
    }

    /// F8_E5M2 is the upper byte of an IEEE half. Bound: `source` holds `destination.count` bytes.
    static func decodeF8E5M2(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, out, n) = bytes(source, destination) else { return }
        for i in 0..<n { out[i] = halfToFloatBits(UInt16(src[i]) &<< 8) }
    }

    /// F8_E4M3 through its 256-entry table (a byte indexes it, so the table read is in range).
    /// Bound: `source` holds `destination.count` bytes.
    static func decodeF8E4M3(_ source: UnsafeRawBufferPointer, _ destination: UnsafeMutableBufferPointer<Float>) {
        guard let (src, out, n) = bytes(source, destination) else { return }
        Float8Tables.e4m3Bits.withUnsafeBufferPointer { table in
            precondition(table.count == 256)
            let t = table.baseAddress!
            for i in 0..<n { out[i] = t[Int(src[i])] }
        }
    }

    /// Bound: `destination` holds exactly `source.count` values of `T`;
    /// returns the source, the typed destination and the element count.
    @inline(__always)
    private static func encodeTarget<T>(
        _ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer, _ type: T.Type
    ) -> (UnsafePointer<Float>, UnsafeMutablePointer<T>, Int)? {
        let n = source.count
        precondition(destination.count == n * MemoryLayout<T>.stride, "\(destination.count) bytes for \(n) elements")
        guard n > 0 else { return nil }
        return (source.baseAddress!, destination.baseAddress!.assumingMemoryBound(to: T.self), n)
    }

    /// Float32 to BF16, round to nearest even; NaN stays a quiet NaN.
    /// Bound: `destination` holds `source.count` × 2 bytes.
    static func encodeBF16(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, n) = encodeTarget(source, destination, UInt16.self) else { return }
        for i in 0..<n { dst[i] = floatToBF16(src[i]) }
    }

    @inline(__always)
    public static func floatToBF16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if bits & 0x7fff_ffff > 0x7f80_0000 { return UInt16(truncatingIfNeeded: bits &>> 16) | 0x0040 }
        let rounding = 0x7fff &+ ((bits &>> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) &>> 16)
    }

    /// Float32 to IEEE half. Bound: `destination` holds `source.count` × 2 bytes.
    static func encodeF16(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, n) = encodeTarget(source, destination, UInt16.self) else { return }
        for i in 0..<n { dst[i] = floatToHalf(src[i]) }
    }

    /// Float32 to Float64 (exact). Bound: `destination` holds `source.count` × 8 bytes.
    static func encodeF64(_ source: UnsafeBufferPointer<Float>, _ destination: UnsafeMutableRawBufferPointer) {
        guard let (src, dst, n) = encodeTarget(source, destination, Double.self) else { return }
        for i in 0..<n { dst[i] = Double(src[i]) }
    }

    /// Float32 to IEEE half, round to nearest even, overflow to infinity,
    /// gradual underflow to subnormals; NaN stays a quiet NaN.
    @inline(__always)
    public static func floatToHalf(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits &>> 16) & 0x8000)
        let magnitude = bits & 0x7fff_ffff
        if magnitude > 0x7f80_0000 { return sign | 0x7e00 | UInt16(truncatingIfNeeded: (magnitude &>> 13) & 0x3ff) }
        if magnitude >= 0x4780_0000 {  // ≥ 65536 (after rounding, anything ≥ 65520 is inf; handled below)
            return sign | 0x7c00
        }
        if magnitude < 0x3880_0000 {  // below the smallest normal half: subnormal or zero
            // Adding 0.5 (as a float) aligns the mantissa so the FPU rounds to nearest even
            // at the half-subnormal quantum 2^-24.
            let rounded = (Float(bitPattern: magnitude) + 0.5).bitPattern &- 0x3f00_0000
            return sign | UInt16(truncatingIfNeeded: rounded)
        }
        let mantissaOdd = (magnitude &>> 13) & 1
        let rebased = magnitude &- 0x3800_0000 &+ 0xfff &+ mantissaOdd  // exponent 127→15, round half even
        return sign | UInt16(truncatingIfNeeded: min(rebased &>> 13, 0x7c00))
    }
}

/// Why a codec call could not run.
public enum CodecError: Error, Equatable, CustomStringConvertible {
    case notDecodable(DType)
    case notEncodable(DType)
    case sizeMismatch(dtype: DType, elements: Int, bytes: Int)

    public var description: String {
        switch self {
        case .notDecodable(let t): return "element type \(t) cannot be decoded to numbers"
        case .notEncodable(let t): return "element type \(t) cannot be written from numbers"
        case .sizeMismatch(let t, let n, let b): return "\(n) elements of \(t) do not fit \(b) bytes"
        }
    }
}

/// Lookup tables for the 8-bit float formats that are not a slice of a wider IEEE type.
enum Float8Tables {
    /// F8_E4M3 ("fn" variant, as PyTorch's float8_e4m3fn): bias 7, no infinities,
    /// S.1111.111 is NaN, so the largest finite value is 448.
    static let e4m3: [Float] = (0..<256).map { code -> Float in
        let sign: Float = code & 0x80 != 0 ? -1 : 1
        let exponent = (code >> 3) & 0xf
        let mantissa = code & 0x7
        if exponent == 0xf && mantissa == 0x7 { return .nan }
        if exponent == 0 { return sign * Float(mantissa) / 8 * Float(sign: .plus, exponent: -6, significand: 1) }
        return sign * (1 + Float(mantissa) / 8) * Float(sign: .plus, exponent: exponent - 7, significand: 1)
    }
    /// `e4m3` as bit patterns, for the decoder that writes bit patterns.
    static let e4m3Bits: [UInt32] = e4m3.map(\.bitPattern)
}
