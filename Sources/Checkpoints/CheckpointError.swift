/// Everything that can be wrong with a checkpoint on disk.
///
/// Each case names the file and what is wrong with it; `description` is the text
/// after `error: ` in the command-line message.
public enum CheckpointError: Error, Equatable, CustomStringConvertible {
    /// The file could not be opened, mapped or written.
    case io(file: String, problem: String)
    /// A safetensors file breaks a format rule.
    case safetensors(file: String, violation: SafetensorsViolation)
    /// A GGUF file breaks a format rule.
    case gguf(file: String, violation: GGUFViolation)
    /// A Hugging Face model folder is inconsistent.
    case folder(file: String, problem: FolderProblem)
    /// A tensor cannot be decoded or encoded.
    case codec(file: String, tensor: String, problem: CodecError)
    /// A sparse delta file is corrupt or does not fit its base.
    case delta(file: String, violation: DeltaViolation)
    /// A model cannot be converted between formats.
    case conversion(file: String, problem: ConversionProblem)
    /// The path is not a checkpoint Claire recognizes.
    case unknownFormat(file: String)
    /// A LoRA adapter breaks a rule of PEFT's format or does not fit its base.
    case adapter(file: String, problem: String)

    /// The file the problem is in.
    public var file: String {
        switch self {
        case .io(let f, _), .safetensors(let f, _), .gguf(let f, _), .folder(let f, _), .codec(let f, _, _),
             .unknownFormat(let f), .delta(let f, _), .conversion(let f, _), .adapter(let f, _):
            return f
        }
    }

    /// The same problem reported against `file`: a write into an output's temporary
    /// is named as a write of the output the user gave.
    public func reported(in file: String) -> CheckpointError {
        switch self {
        case .io(_, let p): return .io(file: file, problem: p)
        case .safetensors(_, let v): return .safetensors(file: file, violation: v)
        case .gguf(_, let v): return .gguf(file: file, violation: v)
        case .folder(_, let p): return .folder(file: file, problem: p)
        case .codec(_, let t, let p): return .codec(file: file, tensor: t, problem: p)
        case .delta(_, let v): return .delta(file: file, violation: v)
        case .conversion(_, let p): return .conversion(file: file, problem: p)
        case .unknownFormat: return .unknownFormat(file: file)
        case .adapter(_, let p): return .adapter(file: file, problem: p)
        }
    }

    public var description: String {
        switch self {
        case .io(let f, let p): return "\(f): \(p)"
        case .safetensors(let f, let v): return "\(f): \(v)"
        case .gguf(let f, let v): return "\(f): \(v)"
        case .folder(let f, let p): return "\(f): \(p)"
        case .codec(let f, let t, let p): return "\(f): tensor '\(t)': \(p)"
        case .delta(let f, let v): return "\(f): \(v)"
        case .conversion(let f, let p): return "\(f): \(p)"
        case .adapter(let f, let p): return "\(f): \(p)"
        case .unknownFormat(let f):
            return "\(f): not a checkpoint (expected a .safetensors file, a .gguf file or a model folder)"
        }
    }
}

/// A broken rule of the safetensors format, as the reference implementation enforces it.
public enum SafetensorsViolation: Error, Equatable, Sendable, CustomStringConvertible {
    case fileTooSmall(size: Int)
    case headerTooLarge(length: UInt64)
    case headerPastEnd(length: UInt64, fileSize: Int)
    case headerNotUTF8
    case headerNotObject
    case invalidJSON(String)
    case duplicateKey(String)
    case entryNotObject(tensor: String)
    case missingField(tensor: String, field: String)
    case unknownDType(tensor: String, dtype: String)
    case badNumber(tensor: String, field: String)
    case badOffsetArity(tensor: String)
    case metadataNotObject
    case metadataValueNotString(key: String)
    case offsetsReversed(tensor: String)
    case sizeOverflow(tensor: String)
    case byteLengthMismatch(tensor: String, expected: Int, actual: Int)
    case misplacedTensor(tensor: String, expectedBegin: Int, begin: Int)
    case bufferMismatch(dataEnd: Int, bufferSize: Int)
    case tooManyDimensions(limit: Int)

    public var description: String {
        switch self {
        case .fileTooSmall(let s): return "file is \(s) bytes, too small for a safetensors header"
        case .headerTooLarge(let n): return "header length \(n) exceeds the 100000000-byte limit"
        case .headerPastEnd(let n, let s): return "header length \(n) runs past the end of the \(s)-byte file"
        case .headerNotUTF8: return "header is not valid UTF-8"
        case .headerNotObject: return "header is not a JSON object"
        case .invalidJSON(let why): return "header is not valid JSON: \(why)"
        case .duplicateKey(let k): return "header repeats the key '\(k)'"
        case .entryNotObject(let t): return "tensor '\(t)': entry is not an object"
        case .missingField(let t, let f): return "tensor '\(t)': missing '\(f)'"
        case .unknownDType(let t, let d): return "tensor '\(t)': unknown dtype '\(d)'"
        case .badNumber(let t, let f): return "tensor '\(t)': '\(f)' must hold non-negative integers"
        case .badOffsetArity(let t): return "tensor '\(t)': data_offsets must be [begin, end]"
        case .metadataNotObject: return "__metadata__ is not an object"
        case .metadataValueNotString(let k): return "__metadata__ value for '\(k)' is not a string"
        case .offsetsReversed(let t): return "tensor '\(t)': data_offsets begin after end"
        case .sizeOverflow(let t): return "tensor '\(t)': shape size overflows"
        case .byteLengthMismatch(let t, let e, let a):
            return "tensor '\(t)': shape and dtype need \(e) bytes but data_offsets span \(a)"
        case .misplacedTensor(let t, let e, let b):
            return "tensor '\(t)': data starts at \(b), expected \(e) (tensors must tile the buffer without gaps or overlaps)"
        case .bufferMismatch(let end, let size):
            return "tensor data ends at byte \(end) of a \(size)-byte buffer (bytes after the last tensor or missing data)"
        case .tooManyDimensions(let limit): return "header holds an array of more than \(limit) elements (a tensor has at most \(limit) dimensions)"
        }
    }
}

/// An inconsistency in a Hugging Face model folder.
public enum FolderProblem: Error, Equatable, Sendable, CustomStringConvertible {
    case noWeights
    /// No safetensors weights, but GGUF files (a GGUF model is opened by its file's path).
    case onlyGGUF([String])
    case badIndex(String)
    case shardEscapesFolder(shard: String)
    case missingShard(shard: String)
    case tensorNotInShard(tensor: String, shard: String)
    case tensorNotInIndex(tensor: String, shard: String)
    case duplicateTensor(tensor: String)
    case symlinkOutside(shard: String)

    public var description: String {
        switch self {
        case .noWeights: return "no model.safetensors or model.safetensors.index.json in folder"
        case .onlyGGUF(let names):
            let listed = names.prefix(3).map { "'\($0)'" }.joined(separator: ", ") + (names.count > 3 ? ", …" : "")
            return "no model.safetensors or model.safetensors.index.json in folder; it holds \(listed): give the .gguf file's own path"
        case .badIndex(let why): return "bad index: \(why)"
        case .shardEscapesFolder(let s): return "index names shard '\(s)' outside the model folder"
        case .missingShard(let s): return "index names shard '\(s)', which does not exist"
        case .tensorNotInShard(let t, let s): return "index places tensor '\(t)' in '\(s)', which does not contain it"
        case .tensorNotInIndex(let t, let s): return "shard '\(s)' holds tensor '\(t)', which the index does not list there"
        case .duplicateTensor(let t): return "tensor '\(t)' appears more than once"
        case .symlinkOutside(let s):
            return "shard '\(s)' is a link to a file outside the model folder (--follow-symlinks allows it)"
        }
    }
}
