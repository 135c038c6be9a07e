/// Conversions between stored element types and Float32.
///
/// Every kernel works on raw buffers the caller has already bounds-checked:
/// `source` holds exactly the bytes of `destination.count` elements. Loops are
/// plain indexed loops over unsafe pointers so the optimizer can vectorize them;
/// half-precision conversions are done with bit manipulation because Swift's
/// `Float16` conversion calls a slow library routine on CPUs without F16C.
public enum ElementCodec {

    /// Decodes `destination.count` elements of `dtype` from `source`.
    /// - Precondition: `source.count == dtype.byteCount(forElements: destination.count)`.
    public static func decode(
        _ dtype: DType, from source: UnsafeRawBufferPointer, into destination: UnsafeMutableBufferPointer<Float>
    ) throws(CodecError) {
        let n = destination.count
        guard dtype.isDecodable else { throw .notDecodable(dtype) }
        guard n > 0 else { return }
        guard let expected = dtype.byteCount(forElements: n), expected == source.count else {
            throw .sizeMismatch(dtype: dtype, elements: n, bytes: source.count)
        }
        let out = destination.baseAddress!
        let raw = source.baseAddress!
        switch dtype {
        case .f32:
            out.update(from: raw.assumingMemoryBound(to: Float.self), count: n)
        case .bf16: decodeBF16(raw.assumingMemoryBound(to: UInt16.self), out, n)
        case .f16: decodeF16(raw.assumingMemoryBound(to: UInt16.self), out, n)
        case .f64: convert(raw.assumingMemoryBound(to: Double.self), out, n) { Float($0) }
        case .f8e4m3: decodeByTable(raw.assumingMemoryBound(to: UInt8.self), out, n, Float8Tables.e4m3)
        case .f8e5m2: decodeF8E5M2(raw.assumingMemoryBound(to: UInt8.self), out, n)
        case .bool: convert(raw.assumingMemoryBound(to: UInt8.self), out, n) { $0 == 0 ? 0 : 1 }
        case .u8: convert(raw.assumingMemoryBound(to: UInt8.self), out, n) { Float($0) }
        case .i8: convert(raw.assumingMemoryBound(to: Int8.self), out, n) { Float($0) }
        case .u16: convert(raw.assumingMemoryBound(to: UInt16.self), out, n) { Float($0) }
        case .i16: convert(raw.assumingMemoryBound(to: Int16.self), out, n) { Float($0) }
        case .u32: convert(raw.assumingMemoryBound(to: UInt32.self), out, n) { Float($0) }
        case .i32: convert(raw.assumingMemoryBound(to: Int32.self), out, n) { Float($0) }
        case .u64: convert(raw.assumingMemoryBound(to: UInt64.self), out, n) { Float($0) }
        case .i64: convert(raw.assumingMemoryBound(to: Int64.self), out, n) { Float($0) }
        case .q8_0: GGMLQuants.decodeQ8_0(raw, out, blocks: n / 32)
        case .q4_0: GGMLQuants.decodeQ4_0(raw, out, blocks: n / 32)
        case .q4_1: GGMLQuants.decodeQ4_1(raw, out, blocks: n / 32)
        case .q5_0: GGMLQuants.decodeQ5_0(raw, out, blocks: n / 32)
        case .q5_1: GGMLQuants.decodeQ5_1(raw, out, blocks: n / 32)
        case .q2_K: GGMLKQuants.decodeQ2_K(raw, out, blocks: n / 256)
        case .q3_K: GGMLKQuants.decodeQ3_K(raw, out, blocks: n / 256)
        case .q4_K: GGMLKQuants.decodeQ4_K(raw, out, blocks: n / 256)
        case .q5_K: GGMLKQuants.decodeQ5_K(raw, out, blocks: n / 256)
        case .q6_K: GGMLKQuants.decodeQ6_K(raw, out, blocks: n / 256)
        default:
            throw .notDecodable(dtype)
        }
    }

    /// Encodes `source` into `dtype`, rounding to nearest even.
    /// - Precondition: `destination.count == dtype.byteCount(forElements: source.count)`.
    public static func encode(
        _ dtype: DType, from source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableRawBufferPointer
    ) throws(CodecError) {
        let n = source.count
        guard dtype.isEncodable else { throw .notEncodable(dtype) }
        guard n > 0 else { return }
        guard let expected = dtype.byteCount(forElements: n), expected == destination.count else {
            throw .sizeMismatch(dtype: dtype, elements: n, bytes: destination.count)
        }
        let input = source.baseAddress!
        let raw = destination.baseAddress!
        switch dtype {
        case .f32:
            raw.assumingMemoryBound(to: Float.self).update(from: input, count: n)
        case .bf16: encodeBF16(input, raw.assumingMemoryBound(to: UInt16.self), n)
        case .f16: encodeF16(input, raw.assumingMemoryBound(to: UInt16.self), n)
        case .f64:
            let out = raw.assumingMemoryBound(to: Double.self)
            for i in 0..<n { out[i] = Double(input[i]) }
        case .q8_0: GGMLQuants.encodeQ8_0(input, raw, blocks: n / 32)
        case .q4_0: GGMLQuants.encodeQ4_0(input, raw, blocks: n / 32)
        case .q4_1: GGMLQuants.encodeQ4_1(input, raw, blocks: n / 32)
        case .q5_0: GGMLQuants.encodeQ5_0(input, raw, blocks: n / 32)
        case .q5_1: GGMLQuants.encodeQ5_1(input, raw, blocks: n / 32)
        case .q4_K: GGMLKQuants.encodeQ4_K(input, raw, blocks: n / 256)
        case .q6_K: GGMLKQuants.encodeQ6_K(input, raw, blocks: n / 256)
        default:
            throw .notEncodable(dtype)
        }
    }

    // MARK: Kernels (bounds: `n` elements readable at the source and writable at the destination)

    @inline(__always)
    static func convert<T>(_ src: UnsafePointer<T>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ f: (T) -> Float) {
        for i in 0..<n { dst[i] = f(src[i]) }
    }

    /// BF16 is the upper half of a Float32.
    static func decodeBF16(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        let out = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self)
        for i in 0..<n { out[i] = UInt32(src[i]) &<< 16 }
    }

    /// IEEE half to single: shift exponent and mantissa into place and rebias by
    /// multiplying with 2^112, which also normalizes subnormals exactly; infinities
    /// and NaNs get the all-ones exponent.
    static func decodeF16(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        let out = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self)
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

    /// F8_E5M2 is the upper byte of an IEEE half.
    static func decodeF8E5M2(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        let out = UnsafeMutableRawPointer(dst).assumingMemoryBound(to: UInt32.self)
        for i in 0..<n { out[i] = halfToFloatBits(UInt16(src[i]) &<< 8) }
    }

    static func decodeByTable(_ src: UnsafePointer<UInt8>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ table: [Float]) {
        table.withUnsafeBufferPointer { t in
            for i in 0..<n { dst[i] = t[Int(src[i])] }
        }
    }

    /// Float32 to BF16, round to nearest even; NaN stays a quiet NaN.
    static func encodeBF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, _ n: Int) {
        for i in 0..<n { dst[i] = floatToBF16(src[i]) }
    }

    @inline(__always)
    public static func floatToBF16(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if bits & 0x7fff_ffff > 0x7f80_0000 { return UInt16(truncatingIfNeeded: bits &>> 16) | 0x0040 }
        let rounding = 0x7fff &+ ((bits &>> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) &>> 16)
    }

    static func encodeF16(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<UInt16>, _ n: Int) {
        for i in 0..<n { dst[i] = floatToHalf(src[i]) }
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
}
