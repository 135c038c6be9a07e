import Foundation

/// The plan of one output tensor: what will be written, before any data exists.
public struct TensorSpec: Sendable, Hashable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Number of elements (1 for a scalar).
    public var elementCount: Int { Checkpoints.elementCount(of: shape) ?? 0 }
    /// Stored size in bytes.
    public var byteCount: Int { dtype.byteCount(forElements: elementCount) ?? 0 }
}

/// Writes one safetensors file whose header is computed from the plan up front.
///
/// The layout is exactly what the reference writer (`safetensors.save_file`)
/// produces for the same tensors: tensors ordered by dtype rank (descending)
/// then by name, a compact JSON header padded with spaces to a multiple of 8.
/// Because every tensor's offset is known in advance, `write` may be called
/// from several threads in any order (each call is one `pwrite`).
public final class SafetensorsFileWriter: @unchecked Sendable {
    public let path: String
    /// Tensors in file order.
    public let tensors: [TensorSpec]
    private let file: PlannedFile

    /// The file order the reference writer uses: dtype rank descending, then name (bytewise).
    public static func fileOrder(_ tensors: [TensorSpec]) -> [TensorSpec] {
        tensors.sorted { a, b in
            if a.dtype.safetensorsRank != b.dtype.safetensorsRank { return a.dtype.safetensorsRank > b.dtype.safetensorsRank }
            return a.name.utf8.lexicographicallyPrecedes(b.name.utf8)
        }
    }

    /// The header bytes (length prefix included) for `tensors` in file order.
    public static func header(for ordered: [TensorSpec], metadata: [(key: String, value: String)]?) -> [UInt8] {
        var members: [(key: String, value: JSONValue)] = []
        if let metadata {
            members.append(("__metadata__", .object(metadata.map { ($0.key, JSONValue.string($0.value)) })))
        }
        var offset = 0
        for t in ordered {
            let end = offset + t.byteCount
            members.append((t.name, .object([
                ("dtype", .string(t.dtype.safetensorsName)),
                ("shape", .array(t.shape.map { .integer($0) })),
                ("data_offsets", .array([.integer(offset), .integer(end)])),
            ])))
            offset = end
        }
        var json = Array(JSONValue.object(members).compactText.utf8)
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(contentsOf: json)
        return bytes
    }

    /// Checks that `tensors` make a file the reference reader (and Claire's) reads
    /// back: safetensors dtypes only, no tensor named `__metadata__` (the header's
    /// metadata key), names unique, sizes that fit, and a header within the readers'
    /// limit. Nothing is created; `path` names the output in messages.
    public static func check(_ tensors: [TensorSpec], metadata: [(key: String, value: String)]?, path: String) throws(CheckpointError) {
        _ = try plan(tensors, metadata: metadata, path: path)
    }

    /// The file order, header and total size of a checked plan.
    private static func plan(_ tensors: [TensorSpec], metadata: [(key: String, value: String)]?, path: String)
        throws(CheckpointError) -> (ordered: [TensorSpec], header: [UInt8], size: Int)
    {
        var seen = Set<String>()
        var total = 0
        var nameBytes = 0
        func tooLarge(_ bytes: Int) -> CheckpointError {
            .io(file: path, problem: "the header of \(tensors.count) tensors takes \(bytes) bytes or more, "
                    + "more than the \(SafetensorsReader.maximumHeaderLength) safetensors readers accept")
        }
        for t in tensors {
            // The names alone bound the header from below: refused before any JSON is built.
            nameBytes += t.name.utf8.count
            guard UInt64(nameBytes) <= SafetensorsReader.maximumHeaderLength else { throw tooLarge(nameBytes) }
            guard t.name != "__metadata__" else {
                throw .io(file: path, problem: "a tensor cannot be named '__metadata__' in safetensors (the header's metadata key)")
            }
            guard seen.insert(t.name).inserted else { throw .io(file: path, problem: "tensor '\(t.name)' planned twice") }
            guard t.dtype.isSafetensorsType else {
                throw .io(file: path, problem: "tensor '\(t.name)': safetensors has no dtype \(t.dtype)")
            }
            guard let count = Checkpoints.elementCount(of: t.shape), let bytes = t.dtype.byteCount(forElements: count),
                  case (let sum, false) = total.addingReportingOverflow(bytes) else {
                throw .io(file: path, problem: "tensor '\(t.name)': shape \(t.shape) does not fit dtype \(t.dtype)")
            }
            total = sum
        }
        let ordered = fileOrder(tensors)
        let header = header(for: ordered, metadata: metadata)
        guard UInt64(header.count - 8) <= SafetensorsReader.maximumHeaderLength else { throw tooLarge(header.count - 8) }
        guard case (let size, false) = total.addingReportingOverflow(header.count) else {
            throw .io(file: path, problem: "the tensors do not fit in one file")
        }
        return (ordered, header, size)
    }

    /// Creates `path` (which must not exist) and writes its header. Messages name
    /// `displayPath` (default `path`): the destination, when `path` is its temporary.
    public init(path: String, tensors: [TensorSpec], metadata: [(key: String, value: String)]? = [("format", "pt")],
                displayPath: String? = nil) throws(CheckpointError) {
        self.path = path
        let displayPath = displayPath ?? path
        let (ordered, header, size) = try Self.plan(tensors, metadata: metadata, path: displayPath)
        self.tensors = ordered
        var slots: [(name: String, offset: Int, count: Int)] = []
        var offset = header.count
        for t in ordered {
            slots.append((t.name, offset, t.byteCount))
            offset += t.byteCount
        }
        file = try PlannedFile(creating: path, displayPath: displayPath, header: header, slots: slots, size: size)
    }

    /// Writes the bytes of tensor `name`; thread-safe, any order, once per tensor.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        try file.write(name, bytes: bytes)
    }

    /// Writes the next piece of tensor `name`, at byte `offset` of its data (see `TensorSink`).
    public func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        try file.write(name, piece: bytes, at: offset)
    }

    /// Checks every tensor was written, flushes and closes the file.
    public func finish() throws(CheckpointError) {
        try file.finish()
    }
}

/// One `.safetensors` file written through a temporary beside `path`, which
/// `commit()` renames into place.
public final class SafetensorsFileOutput: TensorSink, @unchecked Sendable {
    public let output: OutputPath
    private let file: SafetensorsFileWriter

    /// Plans the file; fails when `path` exists and `overwrite` is false.
    public init(path: String, tensors: [TensorSpec], metadata: [(key: String, value: String)]? = [("format", "pt")],
                overwrite: Bool = false) throws(CheckpointError) {
        output = try OutputPath(destination: path, isDirectory: false, overwrite: overwrite)
        do {
            file = try SafetensorsFileWriter(path: output.temporary, tensors: tensors, metadata: metadata, displayPath: output.destination)
        } catch {
            output.abort()
            throw error
        }
    }

    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        try file.write(name, bytes: bytes)
    }

    public func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        try file.write(name, piece: bytes, at: offset)
    }

    /// Checks every tensor was written, flushes the file and renames it into place.
    public func commit() throws(CheckpointError) {
        try file.finish()
        try output.commit()
    }

    public func abort() { output.abort() }
}

/// Writes a checkpoint as a Hugging Face model folder: `model.safetensors`, or
/// shards `model-0000i-of-0000N.safetensors` with `model.safetensors.index.json`,
/// plus any side files (config, tokenizer). Everything goes into a temporary
/// folder that `commit()` renames into place.
public final class HFFolderWriter: TensorSink, @unchecked Sendable {
    /// The default shard limit, as `transformers` uses.
    public static let defaultMaxShardSize = 5_000_000_000

    public let output: OutputPath
    /// Shard file names in order.
    public let shardNames: [String]
    /// Tensors in the order they lie on disk (shard by shard): the best order to produce them in.
    public let writeOrder: [TensorSpec]
    private let shards: [SafetensorsFileWriter]
    private let shardOf: [String: Int]

    /// Plans the shards: tensors are taken in the given order and a new shard is
    /// started when the next tensor would push the current one past `maxShardSize`.
    public init(folder: String, tensors: [TensorSpec], maxShardSize: Int = HFFolderWriter.defaultMaxShardSize,
                metadata: [(key: String, value: String)]? = [("format", "pt")], overwrite: Bool = false) throws(CheckpointError) {
        // The whole plan is checked before the output folder exists.
        try SafetensorsFileWriter.check(tensors, metadata: metadata, path: folder)
        let groups = HFFolderWriter.groups(tensors, maxShardSize: maxShardSize)
        let names = groups.count == 1
            ? [HFFolder.singleFileName]
            : (1...groups.count).map { HFFolderWriter.shardName($0, of: groups.count) }
        output = try OutputPath(destination: folder, isDirectory: true, overwrite: overwrite)
        var writers: [SafetensorsFileWriter] = []
        var shardOf: [String: Int] = [:]
        do {
            for (i, group) in groups.enumerated() {
                writers.append(try SafetensorsFileWriter(path: output.temporaryPath(for: names[i]), tensors: group, metadata: metadata,
                                                         displayPath: output.destination + "/" + names[i]))
                for t in group { shardOf[t.name] = i }
            }
        } catch {
            output.abort()
            throw error
        }
        shards = writers
        shardNames = names
        self.shardOf = shardOf
        writeOrder = writers.flatMap(\.tensors)
    }

    /// The tensors of each shard: taken in the given order, a new shard started when
    /// the next tensor would push the current one past `maxShardSize`.
    static func groups(_ tensors: [TensorSpec], maxShardSize: Int) -> [[TensorSpec]] {
        var groups: [[TensorSpec]] = [[]]
        var size = 0
        for t in tensors {
            if !groups[groups.count - 1].isEmpty && t.byteCount > maxShardSize - size {
                groups.append([])
                size = 0
            }
            groups[groups.count - 1].append(t)
            size += t.byteCount
        }
        return groups
    }

    /// `model-00002-of-00005.safetensors`.
    public static func shardName(_ index: Int, of count: Int) -> String {
        func five(_ n: Int) -> String { let s = String(n); return String(repeating: "0", count: max(0, 5 - s.count)) + s }
        return "model-\(five(index))-of-\(five(count)).safetensors"
    }

    /// Writes the bytes of tensor `name`; thread-safe, any order.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard let shard = shardOf[name] else { throw .io(file: output.destination, problem: "tensor '\(name)' is not in the plan") }
        try shards[shard].write(name, bytes: bytes)
    }

    /// Writes the next piece of tensor `name` (see `TensorSink`); thread-safe.
    public func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        guard let shard = shardOf[name] else { throw .io(file: output.destination, problem: "tensor '\(name)' is not in the plan") }
        try shards[shard].write(name, piece: bytes, at: offset)
    }

    /// Adds a side file (e.g. a model card) with the given contents.
    public func writeFile(name: String, contents: [UInt8]) throws(CheckpointError) {
        guard HFFolder.isPlainFileName(name) else { throw .io(file: name, problem: "not a plain file name") }
        try NewFile.store(contents, to: output.temporaryPath(for: name), display: output.destination + "/" + name)
    }

    /// Copies a side file (config, tokenizer) into the output, under `name` or its own name.
    /// A link leaving the folder that holds `source` is refused unless
    /// `followSymlinks`, as for shards; the contents stream through a fixed buffer.
    public func copyFile(from source: String, as name: String? = nil, followSymlinks: Bool = false) throws(CheckpointError) {
        let target = try HFFolder.sideFileTarget(copying: source, as: name, followSymlinks: followSymlinks)
        // Copy the contents, not a link: side files in a hub cache are links to blobs
        // that a relative link in the output would no longer reach.
        try NewFile.copy(from: source, to: output.temporaryPath(for: target), display: output.destination + "/" + target)
    }

    /// Finishes every shard, writes the index when sharded, and moves the folder into place.
    public func commit() throws(CheckpointError) {
        do {
            for shard in shards { try shard.finish() }
            if shards.count > 1 { try writeFile(name: HFFolder.indexFileName, contents: Array(indexJSON().utf8)) }
            try output.commit()
        } catch {
            output.abort()
            throw error
        }
    }

    /// Removes everything written so far.
    public func abort() { output.abort() }

    /// The index as `transformers` writes it: sorted keys, two-space indent, trailing newline.
    func indexJSON() -> String {
        HFFolderWriter.indexJSON(zip(shardNames, shards.map(\.tensors)).map { ($0, $1) })
    }

    /// The index of shards named as given holding the given tensors.
    static func indexJSON(_ shards: [(name: String, tensors: [TensorSpec])]) -> String {
        let total = shards.reduce(0) { $0 + $1.tensors.reduce(0) { $0 + $1.byteCount } }
        let map = shards.flatMap { shard in shard.tensors.map { (name: $0.name, shard: shard.name) } }
            .sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
            .map { (key: $0.name, value: JSONValue.string($0.shard)) }
        let index = JSONValue.object([
            ("metadata", .object([("total_size", .integer(total))])),
            ("weight_map", .object(map)),
        ])
        return index.prettyText + "\n"
    }
}

/// Parses a size such as `5GB`, `500MB`, `2GiB` or `1000000` (bytes).
public func parseByteSize(_ text: String) -> Int? {
    let units: [(String, Int)] = [("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
                                   ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
                                   ("K", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("B", 1)]
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    for (suffix, scale) in units where trimmed.uppercased().hasSuffix(suffix.uppercased()) {
        guard let value = Double(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)), value > 0 else { return nil }
        let bytes = value * Double(scale)
        return bytes < Double(Int.max) ? Int(bytes) : nil
    }
    guard let bytes = Int(trimmed), bytes > 0 else { return nil }
    return bytes
}
