#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a delta file cannot be used.
public enum DeltaViolation: Error, Equatable, Sendable, CustomStringConvertible {
    case notADeltaFile
    case truncated
    case headerChecksumMismatch
    case badHeader(String)
    case blobOutOfPlace(tensor: String)
    case blobChecksumMismatch(tensor: String)
    case corruptBlob(tensor: String, reason: String)
    case wrongBase(tensor: String)
    case baseMissing(tensor: String)
    case baseShapeMismatch(tensor: String, expected: [Int], found: [Int])
    case baseDTypeMismatch(tensor: String, expected: DType, found: DType)

    public var description: String {
        switch self {
        case .notADeltaFile: return "not a Claire delta file (magic bytes missing)"
        case .truncated: return "file is truncated"
        case .headerChecksumMismatch: return "header checksum does not match (file is corrupt)"
        case .badHeader(let why): return "bad header: \(why)"
        case .blobOutOfPlace(let t): return "tensor '\(t)': stored data lies outside its place in the file"
        case .blobChecksumMismatch(let t): return "tensor '\(t)': data checksum does not match (file is corrupt)"
        case .corruptBlob(let t, let why): return "tensor '\(t)': \(why)"
        case .wrongBase(let t):
            return "tensor '\(t)': the base differs from the one this delta was extracted against (checksum mismatch)"
        case .baseMissing(let t): return "tensor '\(t)': not in the base, but the delta needs it"
        case .baseShapeMismatch(let t, let e, let f): return "tensor '\(t)': base has shape \(f), delta expects \(e)"
        case .baseDTypeMismatch(let t, let e, let f): return "tensor '\(t)': base stores \(f), delta expects \(e)"
        }
    }
}

extension SparseDelta {
    /// Streams a delta file out: blobs as tensors are encoded, the header at `commit`.
    public final class Writer: @unchecked Sendable {
        public let output: OutputPath
        private let file: FileDescriptor
        private var position = 0
        private var records: [Record] = []

        /// Starts writing to a temporary beside `path`.
        public init(path: String, overwrite: Bool) throws(CheckpointError) {
            output = try OutputPath(destination: path, isDirectory: false, overwrite: overwrite)
            do throws(FileDescriptor.Failure) { file = try FileDescriptor.create(output.temporary) } catch {
                throw .io(file: path, problem: "cannot create: \(error)")
            }
            try write(SparseDelta.magic)
        }

        /// Appends one encoded tensor; tensors appear in the header in append order.
        public func append(_ tensor: EncodedTensor) throws(CheckpointError) {
            var record = tensor.record
            record.offset = position
            try write(tensor.positions)
            try write(tensor.values)
            records.append(record)
        }

        /// Writes the header and trailer and moves the file into place.
        /// A header larger than `maximumHeaderSize` (what readers accept) is refused
        /// and nothing is moved into place.
        public func commit(method: String, density: Double, seed: UInt64, metadata: [MetadataEntry],
                           maximumHeaderSize: Int = SparseDelta.maximumHeaderSize) throws(CheckpointError) {
            let header = Header(method: method, density: density, seed: seed, metadata: metadata, tensors: records)
            let json = Array(SparseDelta.headerJSON(header).compactText.utf8)
            guard json.count <= maximumHeaderSize else {
                throw .io(file: output.destination, problem: "the header of \(records.count) tensors takes \(json.count) bytes, "
                              + "more than the \(maximumHeaderSize) a delta reader accepts")
            }
            try write(json)
            var trailer: [UInt8] = []
            withUnsafeBytes(of: UInt64(json.count).littleEndian) { trailer.append(contentsOf: $0) }
            let hash = json.withUnsafeBytes { XXHash64.hash($0) }
            withUnsafeBytes(of: hash.littleEndian) { trailer.append(contentsOf: $0) }
            try write(trailer + SparseDelta.magic)
            do throws(FileDescriptor.Failure) { try file.sync() } catch {
                throw .io(file: output.destination, problem: "cannot flush: \(error)")
            }
            try? file.close()
            try output.commit()
        }

        /// Removes the partial file.
        public func abort() { output.abort() }

        private func write(_ bytes: [UInt8]) throws(CheckpointError) {
            do throws(FileDescriptor.Failure) {
                try bytes.withUnsafeBytes { buffer in Result { () throws(FileDescriptor.Failure) in try file.write(buffer) } }.get()
            } catch {
                throw .io(file: output.destination, problem: "write failed: \(error)")
            }
            position += bytes.count
        }
    }

    /// The header as JSON (hashes as 16-digit hex strings: they exceed JSON's exact integers).
    static func headerJSON(_ header: Header) -> JSONValue {
        func hex(_ v: UInt64) -> JSONValue {
            let s = String(v, radix: 16)
            return .string(String(repeating: "0", count: 16 - s.count) + s)
        }
        let tensors = header.tensors.map { r -> JSONValue in
            .object([
                ("name", .string(r.name)), ("dtype", .string(r.dtype.rawValue)), ("shape", .array(r.shape.map { .integer($0) })),
                ("mode", .string(r.mode.rawValue)), ("kept", .integer(r.kept)), ("changed", .integer(r.changed)),
                ("base_xxh64", hex(r.baseHash)), ("offset", .integer(r.offset)), ("positions_size", .integer(r.positionsSize)),
                ("values_size", .integer(r.valuesSize)), ("blob_xxh64", hex(r.blobHash)),
            ])
        }
        return .object([
            ("format", .string("claire-delta")), ("version", .integer(1)), ("method", .string(header.method)),
            ("density", .number("\(header.density)")), ("seed", .string(String(header.seed))),
            ("metadata", .object(header.metadata.map { ($0.key, .string($0.value.stringValue ?? "")) })),
            ("tensors", .array(tensors)),
        ])
    }

    /// A validated, memory-mapped delta file.
    public final class File: Sendable {
        public let mapped: MappedFile
        public let header: Header

        /// Opens and validates `path`: magic, trailer, header checksum, and that the
        /// blobs tile the space between the magic and the header exactly.
        public init(path: String) throws(CheckpointError) {
            mapped = try MappedFile(path: path)
            do {
                header = try File.parse(mapped.bytes)
            } catch {
                throw .delta(file: path, violation: error)
            }
        }

        static func parse(_ bytes: UnsafeRawBufferPointer) throws(DeltaViolation) -> Header {
            let magic = SparseDelta.magic
            guard bytes.count >= magic.count, bytes[0..<magic.count].elementsEqual(magic) else { throw .notADeltaFile }
            guard bytes.count >= 2 * magic.count + SparseDelta.trailerSize - 8 else { throw .truncated }
            guard bytes[(bytes.count - magic.count)...].elementsEqual(magic) else { throw .truncated }
            let trailerStart = bytes.count - magic.count - 16
            let length = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: trailerStart, as: UInt64.self))
            let storedHash = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: trailerStart + 8, as: UInt64.self))
            guard length <= UInt64(SparseDelta.maximumHeaderSize), Int(length) <= trailerStart - magic.count else { throw .truncated }
            let headerStart = trailerStart - Int(length)
            let json = UnsafeRawBufferPointer(rebasing: bytes[headerStart..<trailerStart])
            guard XXHash64.hash(json) == storedHash else { throw .headerChecksumMismatch }
            let value: JSONValue
            // Shapes (arrays inside the tensor list's records, level 4) are capped like
            // safetensors ranks; the tensor list itself (level 2) is bounded by the header size.
            do {
                value = try JSONParser.parse(json, maximumArrayLength: SafetensorsReader.maximumRank, cappedFromDepth: 3)
            } catch {
                throw .badHeader(error.description)
            }
            guard value["format"]?.stringValue == "claire-delta" else { throw .badHeader("format is not claire-delta") }
            guard value["version"]?.nonNegativeInteger == 1 else { throw .badHeader("unsupported version") }
            guard case .array(let items)? = value["tensors"] else { throw .badHeader("no tensor list") }
            var metadata: [MetadataEntry] = []
            if case .object(let entries)? = value["metadata"] {
                for (k, v) in entries {
                    guard let s = v.stringValue else { throw .badHeader("metadata value for '\(k)' is not a string") }
                    metadata.append(MetadataEntry(k, .string(s)))
                }
            }
            var records: [Record] = []
            var expectedOffset = magic.count
            var names = Set<String>()
            for item in items {
                let record = try parseRecord(item)
                guard names.insert(record.name).inserted else { throw .badHeader("tensor '\(record.name)' appears twice") }
                guard record.offset == expectedOffset else { throw .blobOutOfPlace(tensor: record.name) }
                let (end, overflow) = record.offset.addingReportingOverflow(record.blobSize)
                guard !overflow, end <= headerStart else { throw .blobOutOfPlace(tensor: record.name) }
                try checkFrames(record, in: bytes)
                expectedOffset = end
                records.append(record)
            }
            guard expectedOffset == headerStart else { throw .badHeader("bytes between the last tensor and the header") }
            guard let density = value["density"]?.doubleValue, let method = value["method"]?.stringValue,
                  let seed = value["seed"]?.stringValue.flatMap({ UInt64($0) }) else {
                throw .badHeader("method, density or seed missing")
            }
            return Header(method: method, density: density, seed: seed, metadata: metadata, tensors: records)
        }

        private static func parseRecord(_ item: JSONValue) throws(DeltaViolation) -> Record {
            guard let name = item["name"]?.stringValue else { throw .badHeader("tensor without a name") }
            func int(_ key: String) throws(DeltaViolation) -> Int {
                guard let v = item[key]?.nonNegativeInteger else { throw .badHeader("tensor '\(name)': bad \(key)") }
                return v
            }
            func hash(_ key: String) throws(DeltaViolation) -> UInt64 {
                guard let s = item[key]?.stringValue, s.count == 16, let v = UInt64(s, radix: 16) else {
                    throw .badHeader("tensor '\(name)': bad \(key)")
                }
                return v
            }
            guard let dtype = item["dtype"]?.stringValue.flatMap(DType.init(rawValue:)) else {
                throw .badHeader("tensor '\(name)': unknown dtype")
            }
            guard case .array(let dims)? = item["shape"] else { throw .badHeader("tensor '\(name)': bad shape") }
            var shape: [Int] = []
            for d in dims {
                guard let n = d.nonNegativeInteger else { throw .badHeader("tensor '\(name)': bad shape") }
                shape.append(n)
            }
            guard let count = Checkpoints.elementCount(of: shape), dtype.byteCount(forElements: count) != nil else {
                throw .badHeader("tensor '\(name)': shape size overflows")
            }
            guard let mode = item["mode"]?.stringValue.flatMap(Mode.init(rawValue:)) else {
                throw .badHeader("tensor '\(name)': unknown mode")
            }
            guard dtype.isSafetensorsType else {
                throw .badHeader("tensor '\(name)': dtype \(dtype) cannot be written back to safetensors")
            }
            let record = Record(name: name, dtype: dtype, shape: shape, mode: mode, kept: try int("kept"),
                                changed: try int("changed"), baseHash: try hash("base_xxh64"), offset: try int("offset"),
                                positionsSize: try int("positions_size"), valuesSize: try int("values_size"),
                                blobHash: try hash("blob_xxh64"))
            guard record.kept <= count, record.changed <= count else { throw .badHeader("tensor '\(name)': more entries than elements") }
            guard mode == .sparse || record.kept == count else { throw .badHeader("tensor '\(name)': full mode stores every element") }
            guard mode == .full || SparseDelta.elementWidth(dtype) != nil else {
                throw .badHeader("tensor '\(name)': sparse mode needs a plain element type")
            }
            guard !record.positionsSize.addingReportingOverflow(record.valuesSize).overflow else {
                throw .blobOutOfPlace(tensor: name)
            }
            return record
        }

        /// Checks the content sizes the two zstd frames of `record` declare, before
        /// any output exists or any buffer is sized: each must be what the record needs
        /// (the positions frame: one to ten bytes per kept entry; the values frame: the
        /// stored bytes exactly) and no more than its compressed bytes can expand to.
        /// Bounds: the record's blob lies inside `file` (checked by `parse`).
        static func checkFrames(_ record: Record, in file: UnsafeRawBufferPointer) throws(DeltaViolation) {
            let blob = UnsafeRawBufferPointer(rebasing: file[record.offset..<(record.offset + record.blobSize)])
            let positionFrame = UnsafeRawBufferPointer(rebasing: blob[0..<record.positionsSize])
            let valueFrame = UnsafeRawBufferPointer(rebasing: blob[record.positionsSize...])
            func declared(_ frame: UnsafeRawBufferPointer, _ what: String) throws(DeltaViolation) -> UInt64 {
                guard let size = Zstd.contentSize(frame) else {
                    throw .corruptBlob(tensor: record.name, reason: "\(what) is not a zstd frame that records its size")
                }
                guard size <= Zstd.maximumContentSize(frameBytes: frame.count) else {
                    throw .corruptBlob(tensor: record.name,
                                       reason: "\(what) of \(frame.count) bytes claims \(size) bytes, more than it can hold")
                }
                return size
            }
            let positions = try declared(positionFrame, "position list")
            let values = try declared(valueFrame, "value block")
            let width = SparseDelta.elementWidth(record.dtype) ?? 1
            let expectedValues: Int?
            switch record.mode {
            case .full:
                guard positions == 0 else { throw .corruptBlob(tensor: record.name, reason: "a whole tensor has no position list") }
                expectedValues = record.dtype.byteCount(forElements: record.elementCount)
            case .sparse:
                let (most, overflow) = UInt64(record.kept).multipliedReportingOverflow(by: 10)
                // A varint takes one to ten bytes.
                guard !overflow, positions >= UInt64(record.kept), positions <= most else {
                    throw .corruptBlob(tensor: record.name, reason: "position list of \(positions) bytes does not fit \(record.kept) entries")
                }
                let (bytes, overflowed) = record.kept.multipliedReportingOverflow(by: width)
                expectedValues = overflowed ? nil : bytes
            }
            guard let expectedValues, values == UInt64(expectedValues) else {
                throw .corruptBlob(tensor: record.name,
                                   reason: "value block holds \(values) bytes, expected \(expectedValues.map(String.init) ?? "more than fit in memory")")
            }
        }

        /// Rebuilds the fine-tuned bytes of `record` into `destination` (its byte size)
        /// from the stored entries and, in sparse mode, the base tensor's bytes.
        public func reconstruct(_ record: Record, base: UnsafeRawBufferPointer?,
                                into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
            do {
                try File.decode(record, in: mapped.bytes, base: base, into: destination)
            } catch {
                throw .delta(file: mapped.path, violation: error)
            }
        }

        /// Rebuilds `record` from the blob inside `file` (the whole delta file, as
        /// validated by `parse`). Bounds: the record's blob lies inside `file`.
        static func decode(_ record: Record, in file: UnsafeRawBufferPointer, base: UnsafeRawBufferPointer?,
                           into destination: UnsafeMutableRawBufferPointer) throws(DeltaViolation) {
            let blob = UnsafeRawBufferPointer(rebasing: file[record.offset..<(record.offset + record.blobSize)])
            guard XXHash64.hash(blob) == record.blobHash else { throw .blobChecksumMismatch(tensor: record.name) }
            let positionFrame = UnsafeRawBufferPointer(rebasing: blob[0..<record.positionsSize])
            let valueFrame = UnsafeRawBufferPointer(rebasing: blob[record.positionsSize...])
            let count = record.elementCount
            switch record.mode {
            case .full:
                let width = SparseDelta.elementWidth(record.dtype) ?? 1
                var planes = [UInt8](repeating: 0, count: destination.count)
                if let reason = planes.withUnsafeMutableBytes({ Zstd.decompress(valueFrame, into: $0) }) {
                    throw .corruptBlob(tensor: record.name, reason: reason)
                }
                planes.withUnsafeBytes { SparseDelta.unshuffle($0, width: width, count: count, into: destination) }
            case .sparse:
                guard let base, base.count == destination.count else { throw .baseMissing(tensor: record.name) }
                guard XXHash64.hash(base) == record.baseHash else { throw .wrongBase(tensor: record.name) }
                let width = SparseDelta.elementWidth(record.dtype)!
                // `checkFrames` bounded the declared size by the entry count when the file was opened.
                let (most, overflow) = UInt64(record.kept).multipliedReportingOverflow(by: 10)
                guard let declared = Zstd.contentSize(positionFrame), !overflow, declared <= most,
                      let size = Int(exactly: declared) else {
                    throw .corruptBlob(tensor: record.name, reason: "position list larger than its entry count allows")
                }
                var gaps = [UInt8](repeating: 0, count: size)
                if let reason = gaps.withUnsafeMutableBytes({ Zstd.decompress(positionFrame, into: $0) }) {
                    throw .corruptBlob(tensor: record.name, reason: reason)
                }
                var xor = [UInt8](repeating: 0, count: record.kept * width)
                if let reason = xor.withUnsafeMutableBytes({ Zstd.decompress(valueFrame, into: $0) }) {
                    throw .corruptBlob(tensor: record.name, reason: reason)
                }
                if !base.isEmpty { destination.copyMemory(from: base) }
                let kept = record.kept
                let consumed: Int? = gaps.withUnsafeBufferPointer { gapBytes in
                    xor.withUnsafeBufferPointer { planes in
                        SparseDelta.scatterXOR(gaps: gapBytes, planes: planes, kept: kept, width: width, count: count,
                                               into: destination)
                    }
                }
                guard let cursor = consumed else {
                    throw .corruptBlob(tensor: record.name, reason: "position list ends early or points past the tensor")
                }
                guard cursor == gaps.count else { throw .corruptBlob(tensor: record.name, reason: "extra bytes in position list") }
            }
        }
    }

    /// XORs the byte planes of `kept` entries into `destination` at the positions
    /// the varint gaps give; returns the gap bytes consumed, or nil when the list
    /// ends early or a position falls outside the `count` elements.
    /// Bounds: `planes` holds kept × width bytes, `destination` count × width.
    static func scatterXOR(gaps: UnsafeBufferPointer<UInt8>, planes: UnsafeBufferPointer<UInt8>, kept: Int, width: Int,
                           count: Int, into destination: UnsafeMutableRawBufferPointer) -> Int? {
        guard let out = destination.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return kept == 0 ? 0 : nil }
        var cursor = 0
        var position = -1
        for k in 0..<kept {
            guard let value = readVarint(gaps, &cursor), value < UInt64(count - position - 1) else { return nil }
            let gap = Int(value)
            position += gap + 1
            let base = position * width
            for b in 0..<width { out[base + b] ^= planes[b * kept + k] }
        }
        return cursor
    }

    /// Reads one LEB128 varint at `cursor`; nil when the bytes end or it exceeds 64 bits.
    @inline(__always)
    static func readVarint(_ bytes: UnsafeBufferPointer<UInt8>, _ cursor: inout Int) -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while cursor < bytes.count {
            let byte = bytes[cursor]
            cursor += 1
            guard shift < 64 else { return nil }
            value |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        return nil
    }
}
