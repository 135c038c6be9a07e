import ArgumentParser
import Checkpoints
import Merging

// The value sets of options that take one of a fixed set of names. Each is the one
// list of its values: the parser checks them, `--help` shows them, and a wrong value
// is a usage error (exit 64) naming the valid ones.

extension MergeMethod: ExpressibleByArgument {}
extension Rescale: ExpressibleByArgument {}
extension Consensus: ExpressibleByArgument {}
extension QuantizedDelta: ExpressibleByArgument {}
extension TrimScope: ExpressibleByArgument {}

/// The floating-point type a safetensors output is written in (`fuse --dtype`,
/// `convert --dtype`). Also accepted: the recipe spellings of `MergeRecipe.outputDType(named:)`
/// (float32, fp16, half, bfloat16, …), in any case.
enum FloatOutputType: String, CaseIterable, ExpressibleByArgument {
    case bf16, f16, f32

    init?(argument: String) {
        guard let dtype = MergeRecipe.outputDType(named: argument) else { return nil }
        self.init(rawValue: dtype.rawValue.lowercased())
    }

    /// The element type of the same name (`DType`'s raw values are upper case).
    var dtype: DType { DType(rawValue: rawValue.uppercased())! }
}

/// How `fuse` computes a recipe's merge (`--compute`).
enum ComputeMode: String, CaseIterable, ExpressibleByArgument {
    /// In the recipe's dtype, each operation rounded to it (mergekit's arithmetic).
    case recipe
    /// In Float32 throughout.
    case f32
}

/// The tensor type a GGUF output is written in (`convert --type`, `fuse --type`):
/// the ggml types `ElementCodec` encodes, by their ggml names in any case.
enum GGUFOutputType: String, CaseIterable, ExpressibleByArgument, CustomStringConvertible {
    case f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k

    init?(argument: String) { self.init(rawValue: argument.lowercased()) }

    var description: String { rawValue }

    /// The element type of the same name (ggml names are `DType`'s raw values, upper case).
    var dtype: DType { DType(rawValue: rawValue.uppercased())! }
}

/// What `fuse` writes: a model folder or one GGUF file.
enum OutputFormat: String, CaseIterable, ExpressibleByArgument {
    case safetensors, gguf
}

/// Parsers for value sets of six or more names, whose parser message would list the
/// names one per line: these keep the message to one line.
enum OptionValue {
    /// A wrong value of an option with a fixed set of values.
    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    /// `text` as a value of `T`, or an error naming the valid values.
    @Sendable static func parse<T: ExpressibleByArgument & CaseIterable>(_ text: String) throws -> T {
        guard let value = T(argument: text) else {
            throw Invalid(description: "choose one of \(T.allValueStrings.joined(separator: ", "))")
        }
        return value
    }

    /// The option's help with its valid values and default, as the parser shows them
    /// for options it parses itself.
    static func help<T: ExpressibleByArgument & CaseIterable>(_ abstract: String, default value: T) -> ArgumentHelp {
        ArgumentHelp("\(abstract) (values: \(T.allValueStrings.joined(separator: ", ")); default: \(value.defaultValueDescription))")
    }
}
