import Checkpoints

/// The floating-point type a merge's arithmetic rounds to: a recipe's `dtype` (mergekit
/// loads every tensor in it and rounds each torch operation's result to it), or the
/// inputs' type when the recipe has none. Claire computes in Float32 and, for the
/// narrower types, rounds where torch would (`Arithmetic`); the command-line path and
/// `--compute f32` keep Float32 throughout.
public enum ComputeType: String, Sendable, CaseIterable, CustomStringConvertible {
    case f32, bf16, f16
    /// mergekit's float64. Claire computes it in Float32 without rounding (BF16, F16
    /// and F32 inputs are exact in both): each operation then rounds to Float32, so an
    /// F64 output lies within a few Float32 steps of mergekit's (3.8 of the larger of
    /// the result and the base's value on fixtures/dtype) and a narrower output is
    /// mergekit's but where the exact result lies that close to a rounding midpoint.
    case f64

    /// The type of a recipe's `dtype` name (`bfloat16`, `float16`, `float32`, `float64`).
    public init?(recipeName name: String) {
        switch name.lowercased() {
        case "float32", "fp32", "f32": self = .f32
        case "float16", "fp16", "f16", "half": self = .f16
        case "bfloat16", "bf16": self = .bf16
        case "float64", "fp64", "f64", "double": self = .f64
        default: return nil
        }
    }

    /// torch's type promotion of a tensor's inputs (what mergekit computes in without
    /// `dtype`): one type for all stays it; BF16 with F16 or anything with F32 is F32;
    /// F64 wins. Types torch cannot load (block-quantized GGUF) count as F32.
    public static func promoted(_ dtypes: [DType]) -> ComputeType {
        var result: ComputeType?
        for dtype in dtypes {
            let type: ComputeType = switch dtype {
            case .bf16: .bf16
            case .f16: .f16
            case .f64: .f64
            default: .f32
            }
            guard let current = result, current != type else { result = type; continue }
            result = current == .f64 || type == .f64 ? .f64 : .f32
        }
        return result ?? .f32
    }

    /// The output element type named like this type.
    public var dtype: DType {
        switch self {
        case .f32: .f32
        case .bf16: .bf16
        case .f16: .f16
        case .f64: .f64
        }
    }

    public var description: String { rawValue }

    /// True when results are rounded to a type narrower than Float32.
    var rounds: Bool { self == .bf16 || self == .f16 }

    /// Rounds every value of `values` to this type (to nearest even; overflow to
    /// infinity, NaN stays NaN); Float32 and Float64 leave them unchanged.
    public func round(_ values: UnsafeMutableBufferPointer<Float>) {
        switch self {
        case .bf16: BFloat16Arithmetic.round(values)
        case .f16: Float16Arithmetic.round(values)
        case .f32, .f64: return
        }
    }

    /// One value rounded to this type.
    public func round(_ x: Float) -> Float {
        switch self {
        case .bf16: BFloat16Arithmetic.round(x)
        case .f16: Float16Arithmetic.round(x)
        case .f32, .f64: x
        }
    }
}

/// The rounding of one compute type, applied to each operation's Float32 result.
///
/// torch computes a BF16 or F16 elementwise operation in Float32 and rounds the result
/// to the narrow type. Rounding a correctly rounded Float32 +, −, ×, ÷ again to BF16
/// (8 significant bits) or F16 (11) gives the correctly rounded narrow result (24 ≥
/// 2·11 + 2), so `round(a ⊕ b)` in Float32 is torch's result bit for bit. Kernels are
/// generic over this protocol: with `Float32Arithmetic` every `round` is the identity
/// and the loop is the plain Float32 one.
protocol Arithmetic {
    static func round(_ x: Float) -> Float
    /// False for Float32, whose `round` changes nothing.
    static var rounds: Bool { get }
}

extension Arithmetic {
    static var rounds: Bool { true }

    /// Rounds each value of `values` in place.
    static func round(_ values: UnsafeMutableBufferPointer<Float>) {
        for i in values.indices { values[i] = round(values[i]) }
    }
}

/// Float32 throughout: nothing is rounded.
enum Float32Arithmetic: Arithmetic {
    @inline(__always) static func round(_ x: Float) -> Float { x }
    static var rounds: Bool { false }
}

/// Each result rounded to BF16 (the upper half of a Float32).
enum BFloat16Arithmetic: Arithmetic {
    @inline(__always) static func round(_ x: Float) -> Float {
        let bits = x.bitPattern
        // NaN: keep it a quiet NaN (adding the rounding bias could carry it into infinity).
        if bits & 0x7fff_ffff > 0x7f80_0000 { return Float(bitPattern: (bits | 0x0040_0000) & 0xffff_0000) }
        let rounding = 0x7fff &+ ((bits &>> 16) & 1)
        return Float(bitPattern: (bits &+ rounding) & 0xffff_0000)
    }

    /// Eight lanes at a time, then one by one. Bounds: every load and store is at an
    /// index below `values.count` (`i + 8 <= count` for the lanes).
    static func round(_ values: UnsafeMutableBufferPointer<Float>) {
        guard let base = values.baseAddress else { return }
        let count = values.count
        let raw = UnsafeMutableRawPointer(base)
        var i = 0
        while i + 8 <= count {
            let bits = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self)
            let magnitude = bits & 0x7fff_ffff
            let rounded = (bits &+ (0x7fff &+ ((bits &>> 16) & 1))) & 0xffff_0000
            let quietNaN = (bits | 0x0040_0000) & 0xffff_0000
            let result = rounded.replacing(with: quietNaN, where: magnitude .> 0x7f80_0000)
            raw.storeBytes(of: result, toByteOffset: i * 4, as: SIMD8<UInt32>.self)
            i += 8
        }
        while i < count {
            base[i] = round(base[i])
            i += 1
        }
    }
}

/// Each result rounded to IEEE half (subnormals kept, overflow to infinity).
enum Float16Arithmetic: Arithmetic {
    @inline(__always) static func round(_ x: Float) -> Float {
        ElementCodec.halfToFloat(ElementCodec.floatToHalf(x))
    }
}
