/// The element type of a stored tensor.
///
/// One closed set for every format Claire reads: the safetensors dtypes and
/// ggml's block-quantized types (GGUF). Each type is
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
    // ggml-only types follow; they never appear in a safetensors file, so their
    // place after the safetensors types does not affect that writer's order.
    case q4_0 = "Q4_0"
    case q4_1 = "Q4_1"
    case q5_0 = "Q5_0"
    case q5_1 = "Q5_1"
    case q8_0 = "Q8_0"
    case q8_1 = "Q8_1"
    case q2_K = "Q2_K"
    case q3_K = "Q3_K"
    case q4_K = "Q4_K"
    case q5_K = "Q5_K"
    case q6_K = "Q6_K"
    case q8_K = "Q8_K"
    case iq2_xxs = "IQ2_XXS"
    case iq2_xs = "IQ2_XS"
    case iq3_xxs = "IQ3_XXS"
    case iq1_s = "IQ1_S"
    case iq4_nl = "IQ4_NL"
    case iq3_s = "IQ3_S"
    case iq2_s = "IQ2_S"
    case iq4_xs = "IQ4_XS"
    case iq1_m = "IQ1_M"
    case tq1_0 = "TQ1_0"
    case tq2_0 = "TQ2_0"
    case mxfp4 = "MXFP4"
    case nvfp4 = "NVFP4"
    case q1_0 = "Q1_0"

    /// The name safetensors headers use (`"BF16"`, `"F8_E4M3"`, …).
    public var safetensorsName: String { rawValue }

    public var description: String { rawValue }

    /// Looks a type up by its safetensors header name; ggml-only names are not safetensors dtypes.
    public init?(safetensorsName: String) {
        guard let type = DType(rawValue: safetensorsName), type.isSafetensorsType else { return nil }
        self = type
    }

    /// True for the dtypes a safetensors header may name.
    public var isSafetensorsType: Bool {
        switch self {
        case .bool, .f4, .f6e2m3, .f6e3m2, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0, .i16, .u16, .f16, .bf16,
             .i32, .u32, .f32, .c64, .f64, .i64, .u64:
            return true
        default:
            return false
        }
    }

    /// Elements per storage block (1 for plain types).
    public var blockElements: Int { layout.elements }

    /// Bytes per storage block.
    public var blockBytes: Int { layout.bytes }

    /// (elements, bytes) of one storage block: the single table of sizes.
    private var layout: (elements: Int, bytes: Int) {
        switch self {
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3, .f8e8m0: return (1, 1)
        case .f4: return (2, 1)
        case .f6e2m3, .f6e3m2: return (4, 3)
        case .i16, .u16, .f16, .bf16: return (1, 2)
        case .i32, .u32, .f32: return (1, 4)
        case .c64, .f64, .i64, .u64: return (1, 8)
        case .q4_0: return (32, 18)
        case .q4_1: return (32, 20)
        case .q5_0: return (32, 22)
        case .q5_1: return (32, 24)
        case .q8_0: return (32, 34)
        case .q8_1: return (32, 36)
        case .q2_K: return (256, 84)
        case .q3_K: return (256, 110)
        case .q4_K: return (256, 144)
        case .q5_K: return (256, 176)
        case .q6_K: return (256, 210)
        case .q8_K: return (256, 292)
        case .iq2_xxs: return (256, 66)
        case .iq2_xs: return (256, 74)
        case .iq3_xxs: return (256, 98)
        case .iq1_s: return (256, 50)
        case .iq4_nl: return (32, 18)
        case .iq3_s: return (256, 110)
        case .iq2_s: return (256, 82)
        case .iq4_xs: return (256, 136)
        case .iq1_m: return (256, 56)
        case .tq1_0: return (256, 54)
        case .tq2_0: return (256, 66)
        case .mxfp4: return (32, 17)
        case .nvfp4: return (64, 36)
        case .q1_0: return (128, 18)
        }
    }

    /// The ggml type id GGUF tensor infos store, or nil for dtypes ggml has no id for.
    public var ggmlTypeID: UInt32? {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q5_0: return 6
        case .q5_1: return 7
        case .q8_0: return 8
        case .q8_1: return 9
        case .q2_K: return 10
        case .q3_K: return 11
        case .q4_K: return 12
        case .q5_K: return 13
        case .q6_K: return 14
        case .q8_K: return 15
        case .iq2_xxs: return 16
        case .iq2_xs: return 17
        case .iq3_xxs: return 18
        case .iq1_s: return 19
        case .iq4_nl: return 20
        case .iq3_s: return 21
        case .iq2_s: return 22
        case .iq4_xs: return 23
        case .i8: return 24
        case .i16: return 25
        case .i32: return 26
        case .i64: return 27
        case .f64: return 28
        case .iq1_m: return 29
        case .bf16: return 30
        case .tq1_0: return 34
        case .tq2_0: return 35
        case .mxfp4: return 39
        case .nvfp4: return 40
        case .q1_0: return 41
        default: return nil
        }
    }

    /// Looks a type up by its ggml type id.
    public init?(ggmlTypeID: UInt32) {
        guard let type = DType.byGGMLTypeID[ggmlTypeID] else { return nil }
        self = type
    }

    private static let byGGMLTypeID: [UInt32: DType] = {
        var table: [UInt32: DType] = [:]
        for type in DType.allCases {
            if let id = type.ggmlTypeID { table[id] = type }
        }
        return table
    }()

    /// True for ggml's block-quantized types (scales stored beside the quants).
    public var isQuantized: Bool { ggmlTypeID != nil && blockElements > 1 }

    /// Rank in safetensors' dtype order (the writer sorts by it, descending).
    /// ggml-only types rank after every safetensors type; they are never written there.
    public var safetensorsRank: Int { DType.allCases.firstIndex(of: self)! }

    /// torch's name of this type (`torch_dtype` in config.json, `dtype` in a recipe), for
    /// the four types torch computes in; nil for the others.
    public var torchName: String? {
        switch self {
        case .bf16: return "bfloat16"
        case .f16: return "float16"
        case .f32: return "float32"
        case .f64: return "float64"
        default: return nil
        }
    }

    /// True for the tensors a merge combines: real floating-point types and
    /// ggml's quantized weights (decoded to Float32 first). Everything else
    /// (integers, booleans, complex, opaque) is copied through.
    public var isFloatingPoint: Bool {
        switch self {
        case .f8e5m2, .f8e4m3, .f16, .bf16, .f32, .f64: return true
        default: return isQuantized
        }
    }

    /// True when `ElementCodec` can decode this type to Float32.
    public var isDecodable: Bool {
        switch self {
        case .f4, .f6e2m3, .f6e3m2, .f8e8m0, .c64: return false
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return true
        default: return !isQuantized
        }
    }

    /// True when `ElementCodec` can encode Float32 into this type.
    public var isEncodable: Bool {
        switch self {
        case .f32, .f16, .bf16, .f64: return true
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q6_K: return true
        default: return false
        }
    }

    /// Storage bits per element, scales included (Q4_K: 4.5).
    public var bitsPerWeight: Double { Double(blockBytes * 8) / Double(blockElements) }

    /// Bytes needed for `elementCount` elements, or nil when the count is not a
    /// whole number of blocks or the product overflows.
    public func byteCount(forElements elementCount: Int) -> Int? {
        guard elementCount >= 0, elementCount % blockElements == 0 else { return nil }
        let (bytes, overflow) = (elementCount / blockElements).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }

    /// The bytes holding elements `range` of a tensor of this type, from the block
    /// holding its first element to the end of the block holding its last. Chunks,
    /// windows and rows start and end on whole blocks, so quantized tensors slice exactly.
    public func byteRange(of range: Range<Int>) -> Range<Int> {
        (range.lowerBound / blockElements * blockBytes)..<((range.upperBound + blockElements - 1) / blockElements * blockBytes)
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
