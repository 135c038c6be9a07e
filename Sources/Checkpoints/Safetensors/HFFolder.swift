#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A Hugging Face model folder: `model.safetensors`, or shards named by
/// `model.safetensors.index.json`, opened as one checkpoint.
public enum HFFolder {
    /// Name of the single-file weights.
    public static let singleFileName = "model.safetensors"
    /// Name of the shard index.
    public static let indexFileName = "model.safetensors.index.json"
    /// The cap on an index file's size; real indexes are a few hundred kilobytes.
    static let maximumIndexSize = 64 << 20

    /// Opens the folder at `path`. Shards that are links to files outside the
    /// folder are refused unless `followSymlinks` is set.
    public static func open(_ path: String, followSymlinks: Bool = false) throws(CheckpointError) -> Checkpoint {
        let folder = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
        var info = stat()
        guard stat(folder, &info) == 0 else { throw .io(file: path, problem: String(cString: strerror(errno))) }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw .io(file: path, problem: "not a model folder") }
        let indexPath = folder + "/" + indexFileName
        if fileExists(indexPath) {
            return try openSharded(folder: folder, indexPath: indexPath, followSymlinks: followSymlinks)
        }
        let single = folder + "/" + singleFileName
        if fileExists(single) {
            let file = try openShard(single, name: singleFileName, folder: folder, followSymlinks: followSymlinks)
            let header = try SafetensorsReader.read(file)
            return Checkpoint(path: path, format: .safetensors, files: [file], tensors: header.tensors,
                              metadata: header.metadata)
        }
        let gguf = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".gguf") }.sorted()
        throw .folder(file: path, problem: gguf.isEmpty ? .noWeights : .onlyGGUF(gguf))
    }

    /// Reads the index's `weight_map`: tensor name → shard file name, in index order.
    public static func readIndex(_ indexPath: String) throws(CheckpointError) -> [(tensor: String, shard: String)] {
        let file = try MappedFile(path: indexPath)
        guard file.size <= maximumIndexSize else {
            throw .folder(file: indexPath, problem: .badIndex(
                "index is \(file.size) bytes, more than the \(InputFile.describeSize(maximumIndexSize)) an index may have"))
        }
        do {
            return try parseIndex(file.bytes)
        } catch {
            throw .folder(file: indexPath, problem: error)
        }
    }

    /// Parses index JSON text; every shard name must stay inside the folder.
    public static func parseIndex(_ bytes: UnsafeRawBufferPointer) throws(FolderProblem) -> [(tensor: String, shard: String)] {
        guard SafetensorsReader.validateUTF8(bytes) else { throw .badIndex("not valid UTF-8") }
        let json: JSONValue
        do {
            json = try JSONParser.parse(bytes)
        } catch {
            throw .badIndex(error.description)
        }
        guard case .object(let map)? = json["weight_map"] else { throw .badIndex("no weight_map object") }
        var entries: [(tensor: String, shard: String)] = []
        entries.reserveCapacity(map.count)
        for (tensor, value) in map {
            guard case .string(let shard) = value else {
                throw .badIndex("weight_map value for '\(tensor)' is not a file name")
            }
            guard isPlainFileName(shard) else { throw .shardEscapesFolder(shard: shard) }
            entries.append((tensor, shard))
        }
        return entries
    }

    /// True for a name that stays inside its folder: no separators, not `.` or `..`, not empty
    /// (checked on the name's bytes, see `FilePaths`).
    public static func isPlainFileName(_ name: String) -> Bool {
        FilePaths.isPlainFileName(name)
    }

    private static func openSharded(folder: String, indexPath: String, followSymlinks: Bool) throws(CheckpointError) -> Checkpoint {
        let entries = try readIndex(indexPath)
        // Hashed, not searched: an index may name tens of thousands of entries.
        var shardSet = Set<String>()
        var expected: [String: String] = [:]  // tensor → shard
        for (tensor, shard) in entries {
            if expected[tensor] == nil { shardSet.insert(shard) }
            expected[tensor] = shard
        }
        let shardOrder = shardSet.sorted()
        var files: [MappedFile] = []
        var tensors: [TensorEntry] = []
        var metadata: [MetadataEntry] = []
        var seen = Set<String>()
        for (i, shard) in shardOrder.enumerated() {
            let shardPath = folder + "/" + shard
            guard fileExists(shardPath) else { throw .folder(file: indexPath, problem: .missingShard(shard: shard)) }
            let file = try openShard(shardPath, name: shard, folder: folder, followSymlinks: followSymlinks)
            let header = try SafetensorsReader.read(file, fileIndex: i)
            if i == 0 { metadata = header.metadata }
            for t in header.tensors {
                guard expected[t.name] == shard else {
                    throw .folder(file: indexPath, problem: .tensorNotInIndex(tensor: t.name, shard: shard))
                }
                guard seen.insert(t.name).inserted else {
                    throw .folder(file: indexPath, problem: .duplicateTensor(tensor: t.name))
                }
                tensors.append(t)
            }
            files.append(file)
        }
        for (tensor, shard) in entries where !seen.contains(tensor) {
            throw .folder(file: indexPath, problem: .tensorNotInShard(tensor: tensor, shard: shard))
        }
        return Checkpoint(path: folder, format: .safetensors, files: files, tensors: tensors, metadata: metadata)
    }

    private static func openShard(_ shardPath: String, name: String, folder: String, followSymlinks: Bool) throws(CheckpointError) -> MappedFile {
        if !followSymlinks && !staysInside(shardPath, folder: folder) {
            throw .folder(file: shardPath, problem: .symlinkOutside(shard: name))
        }
        return try MappedFile(path: shardPath)
    }

    /// The name side file `source` takes in an output (`name`, or its own name), after
    /// checking that name and `source` as a side file of its folder (see `sideFile`).
    static func sideFileTarget(copying source: String, as name: String?, followSymlinks: Bool) throws(CheckpointError) -> String {
        let bytes = Array(source.utf8)
        let cut = bytes.lastIndex(of: UInt8(ascii: "/"))
        let sourceName = String(decoding: bytes[(cut.map { $0 + 1 } ?? 0)...], as: UTF8.self)
        let target = name ?? sourceName
        guard isPlainFileName(target) else { throw .io(file: target, problem: "not a plain file name") }
        let folder = cut.map { $0 == 0 ? "/" : String(decoding: bytes[..<$0], as: UTF8.self) } ?? "."
        _ = try sideFile(sourceName, in: folder, followSymlinks: followSymlinks)
        return target
    }

    /// The path of the side file `name` (config, tokenizer, …) of `folder`, checked
    /// against the link rule of shards: a link leaving the folder is refused unless
    /// `followSymlinks`.
    public static func sideFile(_ name: String, in folder: String, followSymlinks: Bool = false) throws(CheckpointError) -> String {
        let path = folder + "/" + name
        guard followSymlinks || staysInside(path, folder: folder) else {
            throw .io(file: path, problem: "is a link to a file outside the model folder (--follow-symlinks allows it)")
        }
        return path
    }

    /// The link rule for every file taken from a model folder (shards and side files):
    /// false when `path` is a link whose target lies outside `folder`, compared as
    /// resolved bytes. A file that is not a link always stays inside. A snapshot of a
    /// Hugging Face hub cache (`models--org--name/snapshots/<commit>/`) holds links to
    /// its repository's `blobs/` folder; those count as inside (the blobs folder itself
    /// must not be a link, since the target is compared with its path as resolved).
    public static func staysInside(_ path: String, folder: String) -> Bool {
        var info = stat()
        guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK else { return true }
        guard let real = FilePaths.resolved(path), let root = FilePaths.resolved(folder) else { return false }
        if real != root && FilePaths.lies(real, within: root) { return true }
        guard let blobs = hubBlobsFolder(ofSnapshot: root) else { return false }
        return real != blobs && FilePaths.lies(real, within: blobs)
    }

    /// `…/models--org--name/blobs` for a resolved `…/models--org--name/snapshots/<commit>`.
    static func hubBlobsFolder(ofSnapshot root: [UInt8]) -> [UInt8]? {
        let parts = root.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard parts.count >= 4, parts[parts.count - 2].elementsEqual("snapshots".utf8),
              parts[parts.count - 3].starts(with: "models--".utf8), !parts[parts.count - 1].isEmpty
        else { return nil }
        return Array(parts.dropLast(2).joined(separator: [UInt8(ascii: "/")])) + Array("/blobs".utf8)
    }

    static func fileExists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// The canonical absolute path (`realpath(3)`), or nil.
    public static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
