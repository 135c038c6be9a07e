/// The element type of a stored tensor.
///
/// One closed set for every format Claire reads: the safetensors dtypes and
/// (once GGUF support registers them) ggml's block-quantized types. Each type is
/// described by a block layout — `blockElements` elements stored in `blockBytes`
/// bytes — so plain types are blocks of one element and sub-byte or quantized
/// types fit the same arithmetic. This table is the single source of truth for
/// names and sizes; readers, writers and tests all use it.
public enum DType: String, CaseIterable, Sendable, Hashable, CustomStringConvertible {
    // Declaration order is safetensors' own dtype order: its writer sorts tensors
    // by this rank (descending), then by name, so the order here is load-bearing.
    case bool = "BOOL"
    case f4 = "F4"
    case f6e2m3 = "F6_E2M3"
    case f6e3m2 = "F6_E3M2"
    case u8 = "U8"
    case i8 = "I8"
    case f8e5m2 = "F8_E5M2"
    case f8e4m3 = "F8_E4M3"
    case f8e8m0 = "F8_E8M0"
    case i16 = "I16"
    case u16 = "U16"
    case f16 = "F16"
    case bf16 = "BF16"
    case i32 = "I32"
    case u32 = "U32"
    case f32 = "F32"
    case c64 = "C64"
    case f64 = "F64"
    case i64 = "I64"
    case u64 = "U64"

    /// The name safetensors headers use (`"BF16"`, `"F8_E4M3"`, …).
    public var safetensorsName: String { rawValue }

    public var description: String { rawValue }

    /// Looks a type up by its safetensors header name.
    public init?(safetensorsName: String) {
        self.init(rawValue: safetensorsName)
    }

    /// Elements per storage block (1 for plain types).
    public var blockElements: Int {
        switch self {
        case .f4: return 2
        case .f6e2m3, .f6e3m2: return 4
        default: return 1
        }
    }

    /// Bytes per storage block.
    public var blockBytes: Int {
        switch self {
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .f4: return 1
        case .f6e2m3, .f6e3m2: return 3
        case .i16, .u16, .f16, .bf16: return 2
        case .i32, .u32, .f32: return 4
        case .c64, .f64, .i64, .u64: return 8
        }
    }

    /// Rank in safetensors' dtype order (the writer sorts by it, descending).
    public var safetensorsRank: Int { DType.allCases.firstIndex(of: self)! }

    /// True for real floating-point types: the tensors a merge combines.
    /// Everything else (integers, booleans, complex, opaque) is copied through.
    public var isFloatingPoint: Bool {
        switch self {
        case .f8e5m2, .f8e4m3, .f16, .bf16, .f32, .f64: return true
        default: return false
        }
    }

    /// True when `ElementCodec` can decode this type to Float32.
    public var isDecodable: Bool {
        switch self {
        case .f4, .f6e2m3, .f6e3m2, .f8e8m0, .c64: return false
        default: return true
        }
    }

    /// True when `ElementCodec` can encode Float32 into this type.
    public var isEncodable: Bool {
        switch self {
        case .f32, .f16, .bf16, .f64: return true
        default: return false
        }
    }

    /// Bytes needed for `elementCount` elements, or nil when the count is not a
    /// whole number of blocks or the product overflows.
    public func byteCount(forElements elementCount: Int) -> Int? {
        guard elementCount >= 0, elementCount % blockElements == 0 else { return nil }
        let (bytes, overflow) = (elementCount / blockElements).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }
}

/// Number of elements of a shape, or nil when a dimension is negative or the
/// product overflows. The empty shape (a scalar) has one element.
public func elementCount(of shape: [Int]) -> Int? {
    var count = 1
    for dim in shape {
        guard dim >= 0 else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: dim)
        if overflow { return nil }
        count = product
    }
    return count
}
