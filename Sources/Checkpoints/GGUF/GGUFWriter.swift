import Foundation

/// Writes one GGUF file (version 3, little-endian) whose layout is computed
/// from the plan up front.
///
/// The layout is what the reference writer (`gguf.GGUFWriter`) produces for the
/// same metadata and tensors: header, key/values in the given order, tensor infos
/// in plan order, zero padding to the alignment, then each tensor's bytes padded
/// to the alignment. Because every offset is known before any data exists,
/// `write` may be called from several threads in any order (one `pwrite` each),
/// so tensors stream to disk as they are produced. The file is written under a
/// temporary name in the destination folder and renamed into place by `finish()`.
public final class GGUFWriter: TensorSink, @unchecked Sendable {
    /// The GGUF version written.
    public static let version: UInt32 = 3

    /// The destination and the temporary file written meanwhile.
    public let output: OutputPath
    /// Tensors in file order (the plan's order).
    public let tensors: [TensorSpec]
    /// The key/values as written, `general.file_type` and `general.quantization_version` included.
    public let metadata: [MetadataEntry]
    /// Alignment of the data section and of every tensor.
    public let alignment: Int
    private let file: PlannedFile

    /// Plans the file, creates its temporary and writes everything but the tensor data.
    ///
    /// `metadata` is written in order, with `general.file_type` set from the tensor
    /// types and `general.quantization_version` set to 2 when a tensor is
    /// quantized (each replaced in place when present, appended otherwise).
    /// `general.alignment`, when present, must be a u32 power of two.
    /// `fileType` overrides the guessed `general.file_type` when the caller knows
    /// the type it asked for (a converter told "q8_0" records 7 even when small
    /// tensors fell back to F16, as llama.cpp's converter does).
    public init(path: String, tensors: [TensorSpec], metadata: [MetadataEntry], fileType: UInt32? = nil,
                overwrite: Bool = false) throws(CheckpointError)
    {
        var seen = Set<String>()
        for t in tensors {
            guard seen.insert(t.name).inserted else { throw .io(file: path, problem: "tensor '\(t.name)' planned twice") }
            try Self.validate(t, path: path)
        }
        var keys = Set<String>()
        var arrayElements = 0
        for entry in metadata {
            guard keys.insert(entry.key).inserted else { throw .io(file: path, problem: "metadata key '\(entry.key)' given twice") }
            if case .array(let a) = entry.value {
                if a.elementType == .array || a.values.contains(where: { $0.type != a.elementType }) {
                    throw .io(file: path, problem: "metadata '\(entry.key)': array elements must all be \(a.elementType), not arrays")
                }
                // What the reader accepts, so every file written reads back.
                arrayElements += a.values.count
                guard arrayElements <= GGUFReader.maximumArrayElements else {
                    throw .io(file: path, problem: "metadata arrays hold more than \(GGUFReader.maximumArrayElements) elements in all "
                                  + "(at '\(entry.key)'), more than GGUF readers here accept")
                }
            }
        }
        var alignment = GGUFReader.defaultAlignment
        if let entry = metadata.first(where: { $0.key == "general.alignment" }) {
            guard case .uint32(let a) = entry.value, a != 0, a & (a - 1) == 0 else {
                throw .io(file: path, problem: "general.alignment must be a u32 power of two")
            }
            alignment = Int(a)
        }
        self.alignment = alignment
        // Sizes come from the files being converted: the padded total must fit before
        // any offset is computed from it.
        var dataSize = 0
        for t in tensors {
            let (padded, overflow) = t.byteCount.addingReportingOverflow(Self.padding(t.byteCount, alignment))
            guard !overflow, case (let sum, false) = dataSize.addingReportingOverflow(padded) else {
                throw .io(file: path, problem: "tensor '\(t.name)': the tensors do not fit in one file")
            }
            dataSize = sum
        }
        self.tensors = tensors
        var complete = metadata
        Self.set("general.file_type", .uint32(fileType ?? Self.fileType(of: tensors)), in: &complete)
        if tensors.contains(where: { $0.dtype.isQuantized }) {
            Self.set("general.quantization_version", .uint32(2), in: &complete)
        }
        self.metadata = complete

        var header = Self.encodeHeader(metadata: complete, tensors: tensors, alignment: alignment)
        header.append(contentsOf: repeatElement(0, count: Self.padding(header.count, alignment)))
        guard !header.count.addingReportingOverflow(dataSize).overflow else {
            throw .io(file: path, problem: "the tensors do not fit in one file")
        }
        var slots: [(name: String, offset: Int, count: Int)] = []
        var offset = header.count
        for t in tensors {
            slots.append((t.name, offset, t.byteCount))
            offset += t.byteCount + Self.padding(t.byteCount, alignment)
        }
        output = try OutputPath(destination: path, isDirectory: false, overwrite: overwrite)
        // Sizing the file first makes every padding byte a zero without writing it.
        file = try PlannedFile(creating: output.temporary, displayPath: path, header: header, slots: slots, size: offset)
    }

    /// Writes the stored bytes of tensor `name`; thread-safe, any order, once per tensor.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        try file.write(name, bytes: bytes)
    }

    /// Writes the next piece of tensor `name`'s stored bytes (see `TensorSink`).
    public func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        try file.write(name, piece: bytes, at: offset)
    }

    /// Checks every tensor was written, then flushes the file and renames it into place.
    public func commit() throws(CheckpointError) {
        try file.finish()
        try output.commit()
    }

    /// Removes the temporary file.
    public func abort() {
        file.discard()
        output.abort()
    }

    // MARK: Layout

    /// Zero bytes that follow `count` bytes to reach a multiple of `alignment`.
    static func padding(_ count: Int, _ alignment: Int) -> Int { (alignment - count % alignment) % alignment }

    private static func validate(_ t: TensorSpec, path: String) throws(CheckpointError) {
        guard t.dtype.ggmlTypeID != nil else {
            throw .io(file: path, problem: "tensor '\(t.name)': GGUF has no type for \(t.dtype)")
        }
        guard t.shape.count <= GGUFReader.maximumDimensions else {
            throw .io(file: path, problem: "tensor '\(t.name)': \(t.shape.count) dimensions (GGUF allows at most 4)")
        }
        guard let count = elementCount(of: t.shape), t.dtype.byteCount(forElements: count) != nil,
              (t.shape.last ?? 1) % t.dtype.blockElements == 0
        else {
            throw .io(file: path, problem: "tensor '\(t.name)': rows of shape \(t.shape) are not whole \(t.dtype) blocks")
        }
    }

    private static func set(_ key: String, _ value: MetadataValue, in metadata: inout [MetadataEntry]) {
        if let i = metadata.firstIndex(where: { $0.key == key }) {
            metadata[i].value = value
        } else {
            metadata.append(MetadataEntry(key, value))
        }
    }

    /// llama_ftype of a set of tensors, as llama.cpp guesses it: the ggml type
    /// held by the most matrices (tensors of two or more dimensions, F32 and
    /// integer types aside; first one on ties), 0 (all F32) when there is none.
    /// K-quant types map to their "M" mixes, as llama.cpp's guess does.
    public static func fileType(of tensors: [TensorSpec]) -> UInt32 {
        var counts: [DType: Int] = [:]
        var order: [DType] = []
        for t in tensors where t.shape.count >= 2 {
            guard llamaFileType(t.dtype) != nil, t.dtype != .f32 else { continue }
            if counts[t.dtype] == nil { order.append(t.dtype) }
            counts[t.dtype, default: 0] += 1
        }
        var best: DType?
        for type in order where best == nil || counts[type]! > counts[best!]! { best = type }
        return best.flatMap(llamaFileType) ?? 0
    }

    /// The llama_ftype number of a file mostly made of `type`, when llama.cpp has one.
    public static func llamaFileType(_ type: DType) -> UInt32? {
        switch type {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .q5_0: return 8
        case .q5_1: return 9
        case .q2_K: return 10
        case .q3_K: return 12
        case .q4_K: return 15
        case .q5_K: return 17
        case .q6_K: return 18
        case .iq2_xxs: return 19
        case .iq2_xs: return 20
        case .iq3_xxs: return 23
        case .iq1_s: return 24
        case .iq4_nl: return 25
        case .iq3_s: return 26
        case .iq2_s: return 28
        case .iq4_xs: return 30
        case .iq1_m: return 31
        case .bf16: return 32
        case .tq1_0: return 36
        case .tq2_0: return 37
        case .mxfp4: return 38
        case .nvfp4: return 39
        case .q1_0: return 40
        default: return nil
        }
    }

    /// Header, key/values and tensor infos (offsets relative to the data section).
    static func encodeHeader(metadata: [MetadataEntry], tensors: [TensorSpec], alignment: Int) -> [UInt8] {
        var out = Encoder()
        out.bytes.append(contentsOf: "GGUF".utf8)
        out.integer(version)
        out.integer(UInt64(tensors.count))
        out.integer(UInt64(metadata.count))
        for entry in metadata {
            out.string(entry.key)
            out.integer(entry.value.type.rawValue)
            out.value(entry.value)
        }
        var offset = 0
        for t in tensors {
            out.string(t.name)
            out.integer(UInt32(t.shape.count))
            for dim in t.shape.reversed() { out.integer(UInt64(dim)) }
            out.integer(t.dtype.ggmlTypeID!)
            out.integer(UInt64(offset))
            offset += t.byteCount + padding(t.byteCount, alignment)
        }
        return out.bytes
    }

    private struct Encoder {
        var bytes: [UInt8] = []

        mutating func integer<T: FixedWidthInteger>(_ v: T) {
            withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
        }

        mutating func string(_ s: String) {
            integer(UInt64(s.utf8.count))
            bytes.append(contentsOf: s.utf8)
        }

        mutating func value(_ v: MetadataValue) {
            switch v {
            case .uint8(let x): integer(x)
            case .int8(let x): integer(x)
            case .uint16(let x): integer(x)
            case .int16(let x): integer(x)
            case .uint32(let x): integer(x)
            case .int32(let x): integer(x)
            case .float32(let x): integer(x.bitPattern)
            case .bool(let x): integer(UInt8(x ? 1 : 0))
            case .string(let s): string(s)
            case .uint64(let x): integer(x)
            case .int64(let x): integer(x)
            case .float64(let x): integer(x.bitPattern)
            case .array(let a):
                integer(a.elementType.rawValue)
                integer(UInt64(a.values.count))
                for element in a.values { value(element) }
            }
        }
    }
}
