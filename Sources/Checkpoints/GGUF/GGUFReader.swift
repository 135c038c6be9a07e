/// Parses and validates a GGUF file (versions 2 and 3, little-endian).
///
/// Layout: "GGUF", u32 version, u64 tensor count, u64 key/value count; the
/// key/values (string key, u32 value type, value); the tensor infos (string name,
/// u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset); padding
/// to `general.alignment`; the data section. Strings are u64 length + UTF-8 bytes.
///
/// Past parsers were exploited through counts, lengths and products taken on
/// trust, so every one is checked against the bytes that remain before anything
/// is allocated or read, and all arithmetic is overflow-checked: after `parse`
/// returns, every tensor lies inside the file, aligned, without overlaps.
public enum GGUFReader {
    /// The alignment of the data section and of every tensor when the file does not set one.
    public static let defaultAlignment = 32
    /// ggml's GGML_MAX_DIMS.
    public static let maximumDimensions = 4
    /// Most metadata array elements a file may hold in all. Each element becomes a
    /// `MetadataValue` of 24 bytes however small its encoding (a u8 is one byte), so
    /// this caps what a file can make Claire allocate; real vocabularies hold well
    /// under a million entries.
    public static let maximumArrayElements = 1 << 23

    /// The validated contents of a GGUF file.
    public struct Header: Sendable {
        /// 2 or 3 (they differ only from version 1, which Claire does not read).
        public var version: UInt32
        /// Every key/value, typed, in file order.
        public var metadata: [MetadataEntry]
        /// Tensors in tensor-info order, shapes row-major (ne reversed).
        public var tensors: [TensorEntry]
        /// `general.alignment`, or 32 when absent.
        public var alignment: Int
        /// Offset of the data section within the file.
        public var dataStart: Int
    }

    /// Opens a mapped GGUF file as a checkpoint.
    public static func open(_ file: MappedFile) throws(CheckpointError) -> Checkpoint {
        let header = try read(file)
        return Checkpoint(path: file.path, format: .gguf, files: [file], tensors: header.tensors,
                          metadata: header.metadata)
    }

    /// Validates `file` as a GGUF file.
    public static func read(_ file: MappedFile, fileIndex: Int = 0) throws(CheckpointError) -> Header {
        do {
            return try parse(file.bytes, fileIndex: fileIndex)
        } catch {
            throw .gguf(file: file.path, violation: error)
        }
    }

    /// Validates a whole GGUF file held in `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer, fileIndex: Int = 0) throws(GGUFViolation) -> Header {
        var cursor = Cursor(bytes: bytes, arrayBudget: maximumArrayElements)
        guard bytes.count >= 4, bytes.prefix(4).elementsEqual("GGUF".utf8) else { throw .badMagic }
        cursor.position = 4
        let version = try cursor.u32("version")
        guard version == 2 || version == 3 else {
            throw .unsupportedVersion(version, bigEndian: version.byteSwapped == 2 || version.byteSwapped == 3)
        }
        let tensorCount = try cursor.u64("tensor count")
        let kvCount = try cursor.u64("key/value count")
        // Smallest encodings: a key/value is an empty key (8) + type (4) + a 1-byte value;
        // a tensor info is an empty name (8) + n_dims (4) + type (4) + offset (8).
        try cursor.requireRoom(for: kvCount, of: 13, "key/value count")

        var metadata: [MetadataEntry] = []
        metadata.reserveCapacity(Int(kvCount))
        var keys = Set<String>()
        var alignment = defaultAlignment
        for _ in 0..<kvCount {
            let key = try cursor.string("metadata key")
            guard keys.insert(key).inserted else { throw .duplicateKey(key) }
            let rawType = try cursor.u32("value type of '\(key)'")
            guard let type = MetadataValueType(rawValue: rawType) else { throw .unknownValueType(key: key, type: rawType) }
            let value = try cursor.value(of: type, key: key)
            if key == "general.alignment" {
                guard case .uint32(let a) = value else { throw .alignmentNotU32(type: type) }
                guard a != 0, a & (a - 1) == 0 else { throw .badAlignment(a) }
                alignment = Int(a)
            }
            metadata.append(MetadataEntry(key, value))
        }

        try cursor.requireRoom(for: tensorCount, of: 24, "tensor count")
        var infos: [(name: String, dtype: DType, shape: [Int], elements: Int, bytes: Int, offset: UInt64)] = []
        infos.reserveCapacity(Int(tensorCount))
        var names = Set<String>()
        for _ in 0..<tensorCount {
            let name = try cursor.string("tensor name")
            guard names.insert(name).inserted else { throw .duplicateTensor(name) }
            let nDims = try cursor.u32("dimension count of '\(name)'")
            guard nDims <= maximumDimensions else { throw .tooManyDimensions(tensor: name, count: nDims) }
            var ne: [Int] = []
            ne.reserveCapacity(Int(nDims))
            for _ in 0..<nDims {
                let dim = try cursor.u64("shape of '\(name)'")
                guard let d = Int(exactly: dim) else { throw .shapeOverflow(tensor: name) }
                ne.append(d)
            }
            let rawType = try cursor.u32("type of '\(name)'")
            guard let dtype = DType(ggmlTypeID: rawType) else { throw .unknownTensorType(tensor: name, type: rawType) }
            let offset = try cursor.u64("offset of '\(name)'")
            guard let elements = elementCount(of: ne) else { throw .shapeOverflow(tensor: name) }
            if let ne0 = ne.first, ne0 % dtype.blockElements != 0 {
                throw .rowNotWholeBlocks(tensor: name, ne0: ne0, type: dtype)
            }
            guard let size = dtype.byteCount(forElements: elements) else { throw .shapeOverflow(tensor: name) }
            guard offset % UInt64(alignment) == 0 else {
                throw .misalignedOffset(tensor: name, offset: offset, alignment: alignment)
            }
            infos.append((name, dtype, Array(ne.reversed()), elements, size, offset))
        }

        let (padded, overflow) = cursor.position.addingReportingOverflow(alignment - 1)
        let dataStart = overflow ? Int.max : padded / alignment * alignment
        let dataSize = max(0, bytes.count - dataStart)
        if !infos.isEmpty && dataStart > bytes.count { throw .truncated(what: "data section", offset: bytes.count) }

        // Sorted by offset, each tensor must end inside the data section and before the next begins.
        let order = infos.indices.sorted { (infos[$0].offset, $0) < (infos[$1].offset, $1) }
        var previous: (end: Int, name: String)?
        for i in order {
            let t = infos[i]
            guard t.offset <= UInt64(dataSize), t.bytes <= dataSize - Int(t.offset) else {
                throw .tensorOutOfRange(tensor: t.name, offset: t.offset, bytes: t.bytes, dataSize: dataSize)
            }
            if let p = previous, p.end > Int(t.offset) { throw .overlappingTensors(tensor: t.name, other: p.name) }
            if t.bytes > 0 { previous = (Int(t.offset) + t.bytes, t.name) }
        }

        var tensors: [TensorEntry] = []
        tensors.reserveCapacity(infos.count)
        for t in infos {
            tensors.append(TensorEntry(name: t.name, dtype: t.dtype, shape: t.shape, elementCount: t.elements,
                                       byteCount: t.bytes, fileIndex: fileIndex, offset: dataStart + Int(t.offset)))
        }
        return Header(version: version, metadata: metadata, tensors: tensors, alignment: alignment, dataStart: dataStart)
    }

    /// A bounds-checked little-endian reader over the mapped bytes.
    struct Cursor {
        let bytes: UnsafeRawBufferPointer
        var position = 0
        /// Array elements still allowed (see `maximumArrayElements`).
        var arrayBudget: Int

        var remaining: Int { bytes.count - position }

        /// Fails unless `count` items of at least `size` bytes each could still fit.
        func requireRoom(for count: UInt64, of size: Int, _ what: String) throws(GGUFViolation) {
            let (needed, overflow) = count.multipliedReportingOverflow(by: UInt64(size))
            guard !overflow, needed <= UInt64(remaining) else {
                throw .countBeyondFile(what: what, count: count, remaining: remaining)
            }
        }

        mutating func take(_ n: Int, _ what: String) throws(GGUFViolation) -> UnsafeRawBufferPointer {
            guard n <= remaining else { throw .truncated(what: what, offset: position) }
            let view = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + n)])
            position += n
            return view
        }

        mutating func load<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws(GGUFViolation) -> T {
            T(littleEndian: try take(MemoryLayout<T>.size, what).loadUnaligned(as: T.self))
        }

        mutating func u32(_ what: String) throws(GGUFViolation) -> UInt32 { try load(UInt32.self, what) }
        mutating func u64(_ what: String) throws(GGUFViolation) -> UInt64 { try load(UInt64.self, what) }

        mutating func string(_ what: String) throws(GGUFViolation) -> String {
            let length = try u64(what)
            guard length <= UInt64(remaining) else { throw .stringBeyondFile(what: what, length: length, remaining: remaining) }
            let raw = try take(Int(length), what)
            guard let text = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(what: what) }
            return text
        }

        mutating func value(of type: MetadataValueType, key: String) throws(GGUFViolation) -> MetadataValue {
            switch type {
            case .uint8: return .uint8(try load(UInt8.self, key))
            case .int8: return .int8(try load(Int8.self, key))
            case .uint16: return .uint16(try load(UInt16.self, key))
            case .int16: return .int16(try load(Int16.self, key))
            case .uint32: return .uint32(try load(UInt32.self, key))
            case .int32: return .int32(try load(Int32.self, key))
            case .float32: return .float32(Float(bitPattern: try load(UInt32.self, key)))
            case .uint64: return .uint64(try load(UInt64.self, key))
            case .int64: return .int64(try load(Int64.self, key))
            case .float64: return .float64(Double(bitPattern: try load(UInt64.self, key)))
            case .bool:
                let b = try load(UInt8.self, key)
                guard b <= 1 else { throw .badBool(key: key, value: b) }
                return .bool(b == 1)
            case .string: return .string(try string("value of '\(key)'"))
            case .array:
                let rawType = try u32("array type of '\(key)'")
                guard let elementType = MetadataValueType(rawValue: rawType) else {
                    throw .unknownValueType(key: key, type: rawType)
                }
                guard elementType != .array else { throw .nestedArray(key: key) }
                let count = try u64("array length of '\(key)'")
                try requireRoom(for: count, of: elementType.minimumEncodedSize, "array length of '\(key)'")
                guard count <= UInt64(arrayBudget) else {
                    throw .tooManyArrayElements(key: key, limit: GGUFReader.maximumArrayElements)
                }
                arrayBudget -= Int(count)
                var values: [MetadataValue] = []
                values.reserveCapacity(Int(count))
                for _ in 0..<count { values.append(try value(of: elementType, key: key)) }
                return .array(MetadataArray(elementType: elementType, values: values))
            }
        }
    }
}

extension MetadataValueType {
    /// Fewest bytes one value of this type occupies in a GGUF file (a string: its length field).
    var minimumEncodedSize: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64, .string: return 8
        case .array: return 12
        }
    }
}

/// A broken rule of the GGUF format; `description` says what and where, in one line.
public enum GGUFViolation: Error, Equatable, Sendable, CustomStringConvertible {
    case badMagic
    case unsupportedVersion(UInt32, bigEndian: Bool)
    case truncated(what: String, offset: Int)
    case countBeyondFile(what: String, count: UInt64, remaining: Int)
    case stringBeyondFile(what: String, length: UInt64, remaining: Int)
    case invalidUTF8(what: String)
    case duplicateKey(String)
    case unknownValueType(key: String, type: UInt32)
    case nestedArray(key: String)
    case badBool(key: String, value: UInt8)
    case tooManyArrayElements(key: String, limit: Int)
    case alignmentNotU32(type: MetadataValueType)
    case badAlignment(UInt32)
    case duplicateTensor(String)
    case tooManyDimensions(tensor: String, count: UInt32)
    case unknownTensorType(tensor: String, type: UInt32)
    case shapeOverflow(tensor: String)
    case rowNotWholeBlocks(tensor: String, ne0: Int, type: DType)
    case misalignedOffset(tensor: String, offset: UInt64, alignment: Int)
    case tensorOutOfRange(tensor: String, offset: UInt64, bytes: Int, dataSize: Int)
    case overlappingTensors(tensor: String, other: String)

    public var description: String {
        switch self {
        case .badMagic: return "not a GGUF file (no GGUF magic)"
        case .unsupportedVersion(let v, let big):
            return big ? "big-endian GGUF files are not supported" : "GGUF version \(v) is not supported (only 2 and 3)"
        case .truncated(let what, let at): return "file ends at byte \(at) while reading the \(what)"
        case .countBeyondFile(let what, let n, let r): return "\(what) \(n) is more than the remaining \(r) bytes can hold"
        case .stringBeyondFile(let what, let n, let r):
            return "\(what): string length \(n) runs past the end of the file (\(r) bytes remain)"
        case .invalidUTF8(let what): return "\(what) is not valid UTF-8"
        case .duplicateKey(let k): return "metadata key '\(k)' appears more than once"
        case .unknownValueType(let k, let t): return "metadata '\(k)': unknown value type \(t)"
        case .nestedArray(let k): return "metadata '\(k)': arrays of arrays are not allowed"
        case .badBool(let k, let v): return "metadata '\(k)': boolean byte is \(v), not 0 or 1"
        case .tooManyArrayElements(let k, let limit):
            return "metadata '\(k)': arrays hold more than \(limit) elements in all"
        case .alignmentNotU32(let t): return "general.alignment must be a u32, not \(t)"
        case .badAlignment(let a): return "general.alignment \(a) is not a non-zero power of two"
        case .duplicateTensor(let t): return "tensor '\(t)' appears more than once"
        case .tooManyDimensions(let t, let n): return "tensor '\(t)': \(n) dimensions (at most 4)"
        case .unknownTensorType(let t, let type): return "tensor '\(t)': unknown ggml type \(type)"
        case .shapeOverflow(let t): return "tensor '\(t)': shape size overflows"
        case .rowNotWholeBlocks(let t, let ne0, let type):
            return "tensor '\(t)': row length \(ne0) is not a multiple of the \(type) block size \(type.blockElements)"
        case .misalignedOffset(let t, let o, let a): return "tensor '\(t)': offset \(o) is not a multiple of the alignment \(a)"
        case .tensorOutOfRange(let t, let o, let n, let size):
            return "tensor '\(t)': \(n) bytes at offset \(o) run past the end of the \(size)-byte data section"
        case .overlappingTensors(let t, let other): return "tensor '\(t)' overlaps tensor '\(other)'"
        }
    }
}
