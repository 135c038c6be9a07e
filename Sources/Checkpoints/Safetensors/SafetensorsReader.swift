/// Parses and validates a safetensors file's header.
///
/// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON object, then
/// the data buffer. Every rule the reference implementation enforces is checked
/// here, with overflow-checked arithmetic, before any tensor byte is trusted:
/// after `read` returns, each tensor's bytes lie inside the file and the tensors
/// tile the data buffer exactly.
public enum SafetensorsReader {
    /// The reference implementation's cap on header length.
    public static let maximumHeaderLength: UInt64 = 100_000_000
    /// The most dimensions a tensor may have (numpy's limit, so every reader that
    /// loads through numpy or torch can hold it). Arrays in a header are capped at
    /// this length while it is parsed: a header of one shape with millions of
    /// entries is refused at once instead of costing gigabytes.
    public static let maximumRank = 64

    /// The validated contents of one file's header.
    public struct Header: Sendable {
        /// Tensors in storage (offset) order.
        public var tensors: [TensorEntry]
        /// `__metadata__`, in header order.
        public var metadata: [MetadataEntry]
        /// Offset of the data buffer within the file (8 + N).
        public var dataStart: Int
    }

    /// Validates `file` as a safetensors file; tensor entries point into it
    /// with `fileIndex` set to `fileIndex`.
    public static func read(_ file: MappedFile, fileIndex: Int = 0) throws(CheckpointError) -> Header {
        do {
            return try parse(file.bytes, fileIndex: fileIndex)
        } catch {
            throw .safetensors(file: file.path, violation: error)
        }
    }

    /// Validates a whole safetensors file held in `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer, fileIndex: Int = 0) throws(SafetensorsViolation) -> Header {
        guard bytes.count >= 8 else { throw .fileTooSmall(size: bytes.count) }
        let headerLength = bytes.loadUnaligned(as: UInt64.self).littleEndian
        guard headerLength <= maximumHeaderLength else { throw .headerTooLarge(length: headerLength) }
        let headerEnd = 8 + Int(headerLength)
        guard headerEnd <= bytes.count else { throw .headerPastEnd(length: headerLength, fileSize: bytes.count) }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<headerEnd])
        guard validateUTF8(headerBytes) else { throw .headerNotUTF8 }
        guard headerBytes.first == UInt8(ascii: "{") else { throw .headerNotObject }
        let json: JSONValue
        do {
            json = try JSONParser.parse(headerBytes, maximumArrayLength: maximumRank)
        } catch {
            if case .duplicateKey(let key) = error { throw .duplicateKey(key) }
            if case .arrayTooLong = error { throw .tooManyDimensions(limit: maximumRank) }
            throw .invalidJSON(error.description)
        }
        guard case .object(let members) = json else { throw .headerNotObject }

        var metadata: [MetadataEntry] = []
        var pending: [(name: String, dtype: DType, shape: [Int], begin: Int, end: Int)] = []
        pending.reserveCapacity(members.count)
        for (name, value) in members {
            if name == "__metadata__" {
                guard case .object(let entries) = value else { throw .metadataNotObject }
                for (key, v) in entries {
                    guard case .string(let s) = v else { throw .metadataValueNotString(key: key) }
                    metadata.append(MetadataEntry(key, .string(s)))
                }
                continue
            }
            pending.append(try parseEntry(name: name, value))
        }

        // Sorted by offset, tensors must tile the buffer exactly from 0.
        pending.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        let bufferSize = bytes.count - headerEnd
        var expectedBegin = 0
        var tensors: [TensorEntry] = []
        tensors.reserveCapacity(pending.count)
        for entry in pending {
            guard let count = elementCount(of: entry.shape) else { throw .sizeOverflow(tensor: entry.name) }
            guard let needed = entry.dtype.byteCount(forElements: count) else { throw .sizeOverflow(tensor: entry.name) }
            guard entry.begin == expectedBegin else {
                throw .misplacedTensor(tensor: entry.name, expectedBegin: expectedBegin, begin: entry.begin)
            }
            guard entry.end - entry.begin == needed else {
                throw .byteLengthMismatch(tensor: entry.name, expected: needed, actual: entry.end - entry.begin)
            }
            guard entry.end <= bufferSize else { throw .bufferMismatch(dataEnd: entry.end, bufferSize: bufferSize) }
            tensors.append(TensorEntry(name: entry.name, dtype: entry.dtype, shape: entry.shape, elementCount: count,
                                       byteCount: needed, fileIndex: fileIndex, offset: headerEnd + entry.begin))
            expectedBegin = entry.end
        }
        guard expectedBegin == bufferSize else { throw .bufferMismatch(dataEnd: expectedBegin, bufferSize: bufferSize) }
        return Header(tensors: tensors, metadata: metadata, dataStart: headerEnd)
    }

    private static func parseEntry(name: String, _ value: JSONValue) throws(SafetensorsViolation)
        -> (name: String, dtype: DType, shape: [Int], begin: Int, end: Int)
    {
        guard case .object(let fields) = value else { throw .entryNotObject(tensor: name) }
        var dtype: DType?
        var shape: [Int]?
        var offsets: [Int]?
        for (field, v) in fields {
            switch field {
            case "dtype":
                guard case .string(let s) = v else { throw .unknownDType(tensor: name, dtype: "\(v)") }
                guard let t = DType(safetensorsName: s) else { throw .unknownDType(tensor: name, dtype: s) }
                dtype = t
            case "shape":
                shape = try integers(v, tensor: name, field: field)
            case "data_offsets":
                let pair = try integers(v, tensor: name, field: field)
                guard pair.count == 2 else { throw .badOffsetArity(tensor: name) }
                offsets = pair
            default:
                continue  // the reference reader ignores fields it does not know
            }
        }
        guard let dtype else { throw .missingField(tensor: name, field: "dtype") }
        guard let shape else { throw .missingField(tensor: name, field: "shape") }
        guard let offsets else { throw .missingField(tensor: name, field: "data_offsets") }
        guard offsets[0] <= offsets[1] else { throw .offsetsReversed(tensor: name) }
        return (name, dtype, shape, offsets[0], offsets[1])
    }

    private static func integers(_ value: JSONValue, tensor: String, field: String) throws(SafetensorsViolation) -> [Int] {
        guard case .array(let items) = value else { throw .badNumber(tensor: tensor, field: field) }
        var result: [Int] = []
        result.reserveCapacity(items.count)
        for item in items {
            guard let n = item.nonNegativeInteger else { throw .badNumber(tensor: tensor, field: field) }
            result.append(n)
        }
        return result
    }

    /// True when `bytes` is well-formed UTF-8.
    static func validateUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}
