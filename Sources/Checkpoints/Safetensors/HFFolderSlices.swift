import Foundation

/// Where side files (config, tokenizer, model card) go: a model folder being
/// written (`HFFolderWriter`) or the last step of a sliced write (`HFFolderSlices.Finisher`).
public protocol SideFileSink: AnyObject {
    /// Adds a file `name` with the given contents.
    func writeFile(name: String, contents: [UInt8]) throws(CheckpointError)
    /// Copies the side file `source` into the output, under `name` or its own name.
    func copyFile(from source: String, as name: String?, followSymlinks: Bool) throws(CheckpointError)
}

extension HFFolderWriter: SideFileSink {}

/// One model folder written by several processes: the shards planned by
/// `HFFolderWriter` (same names, same contents) are dealt out to `count` slices,
/// each written by its own process into the same folder, then one last step
/// (`Finisher`) checks every slice and adds the index and side files.
///
/// The deal depends only on the tensor plan and the shard limit, so every process
/// computes the same one: shards are taken largest first (ties by position) and each
/// goes to the slice holding the fewest bytes so far (ties to the lowest index).
/// A slice writes each shard through a temporary renamed into place, then, last
/// and atomically, its manifest `.slice-I-of-N` naming its shards, their sizes and
/// the plan's fingerprint (a hash of the recipe and options and of every shard's name and header). Running a
/// slice again rewrites the same files.
public enum HFFolderSlices {
    /// The shard files of the plan: name, tensors in file order, header bytes and file size.
    public struct Shard: Sendable {
        public let name: String
        public let tensors: [TensorSpec]
        public let header: [UInt8]
        public let size: Int
    }

    /// The shards `HFFolderWriter` writes for `tensors` (checked as it checks them).
    public static func shards(_ tensors: [TensorSpec], maxShardSize: Int, path: String) throws(CheckpointError) -> [Shard] {
        try SafetensorsFileWriter.check(tensors, metadata: metadata, path: path)
        let groups = HFFolderWriter.groups(tensors, maxShardSize: maxShardSize)
        return groups.enumerated().map { i, group in
            let ordered = SafetensorsFileWriter.fileOrder(group)
            let header = SafetensorsFileWriter.header(for: ordered, metadata: metadata)
            let name = groups.count == 1 ? HFFolder.singleFileName : HFFolderWriter.shardName(i + 1, of: groups.count)
            return Shard(name: name, tensors: ordered, header: header, size: ordered.reduce(header.count) { $0 + $1.byteCount })
        }
    }

    /// The indices of the shards slice `index` of `count` writes.
    public static func assignment(_ shards: [Shard], slice index: Int, of count: Int) -> [Int] {
        var load = [Int](repeating: 0, count: count)
        var mine: [Int] = []
        let order = shards.indices.sorted { shards[$0].size != shards[$1].size ? shards[$0].size > shards[$1].size : $0 < $1 }
        for i in order {
            let target = load.indices.min { load[$0] != load[$1] ? load[$0] < load[$1] : $0 < $1 }!
            load[target] += shards[i].size
            if target == index { mine.append(i) }
        }
        return mine.sorted()
    }

    /// A 64-bit FNV-1a hash of `identity` (what else decides the contents, e.g. the
    /// recipe) and every shard's name and header, in hex.
    public static func fingerprint(_ shards: [Shard], identity: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array(identity.utf8) + [0] { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        for shard in shards {
            for byte in Array(shard.name.utf8) + [0] + shard.header {
                hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
            }
        }
        let hex = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// The manifest file name of slice `index` of `count`.
    public static func manifestName(_ index: Int, of count: Int) -> String { ".slice-\(index)-of-\(count)" }

    static let metadata: [(key: String, value: String)]? = [("format", "pt")]

    /// The manifest text: a format line, the plan's fingerprint, the slice, then one line per shard.
    static func manifest(fingerprint: String, slice index: Int, of count: Int, shards: [Shard]) -> String {
        var lines = ["claire-slice 1", "plan \(fingerprint)", "slice \(index) of \(count)"]
        for shard in shards { lines.append("shard \(shard.name) \(shard.size)") }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Creates `folder` unless it exists (another slice may create it at the same time).
    static func makeFolder(_ folder: String) throws(CheckpointError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw .io(file: folder, problem: "is not a folder") }
            return
        }
        let bytes = Array(folder.utf8)
        let cut = bytes.dropLast().lastIndex(of: UInt8(ascii: "/"))
        let parent = cut.map { $0 == 0 ? "/" : String(decoding: bytes[..<$0], as: UTF8.self) } ?? "."
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw .io(file: folder, problem: "parent folder \(parent) does not exist")
        }
        guard mkdir(folder, 0o755) == 0 || errno == EEXIST else {
            throw .io(file: folder, problem: "cannot create: \(String(cString: strerror(errno)))")
        }
    }

    /// Writes the shards of one slice into the folder; `commit()` renames each into
    /// place and then writes the slice's manifest.
    public final class SliceWriter: TensorSink, @unchecked Sendable {
        public let folder: String
        /// The tensors of this slice's shards: the only ones it is handed.
        public let tensorNames: Set<String>
        private let outputs: [OutputPath]
        private let writers: [SafetensorsFileWriter]
        private let shardOf: [String: Int]
        private let manifestText: String
        private let manifestName: String

        /// `identity` is hashed into the manifest's fingerprint with the shard layout:
        /// whatever else decides the shards' contents (the recipe, the options).
        public init(folder: String, tensors: [TensorSpec], maxShardSize: Int, slice index: Int, of count: Int,
                    identity: String) throws(CheckpointError) {
            precondition(count > 0 && (0..<count).contains(index), "slice out of range")
            let all = try HFFolderSlices.shards(tensors, maxShardSize: maxShardSize, path: folder)
            let mine = HFFolderSlices.assignment(all, slice: index, of: count).map { all[$0] }
            try HFFolderSlices.makeFolder(folder)
            self.folder = folder
            var outputs: [OutputPath] = []
            var writers: [SafetensorsFileWriter] = []
            var shardOf: [String: Int] = [:]
            do {
                for (i, shard) in mine.enumerated() {
                    let output = try OutputPath(destination: folder + "/" + shard.name, isDirectory: false, overwrite: true)
                    outputs.append(output)
                    writers.append(try SafetensorsFileWriter(path: output.temporary, tensors: shard.tensors,
                                                             metadata: HFFolderSlices.metadata, displayPath: output.destination))
                    for t in shard.tensors { shardOf[t.name] = i }
                }
            } catch {
                for output in outputs { output.abort() }
                throw error
            }
            self.outputs = outputs
            self.writers = writers
            self.shardOf = shardOf
            tensorNames = Set(shardOf.keys)
            manifestName = HFFolderSlices.manifestName(index, of: count)
            manifestText = HFFolderSlices.manifest(fingerprint: HFFolderSlices.fingerprint(all, identity: identity), slice: index, of: count, shards: mine)
        }

        public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
            guard let shard = shardOf[name] else { throw .io(file: folder, problem: "tensor '\(name)' is not in this slice") }
            try writers[shard].write(name, bytes: bytes)
        }

        public func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
            guard let shard = shardOf[name] else { throw .io(file: folder, problem: "tensor '\(name)' is not in this slice") }
            try writers[shard].write(name, piece: bytes, at: offset)
        }

        /// Finishes and places every shard, then writes the manifest.
        public func commit() throws(CheckpointError) {
            do throws(CheckpointError) {
                for writer in writers { try writer.finish() }
                for output in outputs { try output.commit() }
                let manifest = try OutputPath(destination: folder + "/" + manifestName, isDirectory: false, overwrite: true)
                do throws(CheckpointError) {
                    try NewFile.store(Array(manifestText.utf8), to: manifest.temporary, display: manifest.destination)
                    try manifest.commit()
                } catch {
                    manifest.abort()
                    throw error
                }
            } catch {
                abort()
                throw error
            }
        }

        public func abort() { for output in outputs { output.abort() } }
    }

    /// The last step: checks that every slice left its manifest, for this plan, and
    /// that every shard has its planned size; side files are staged and, at
    /// `commit()`, moved into the folder with the index last; the manifests are then removed.
    public final class Finisher: SideFileSink {
        public let folder: String
        private let staging: OutputPath
        private let shards: [Shard]
        private let manifests: [String]
        private var staged: [String] = []

        /// `identity` must be the one every slice was given.
        public init(folder: String, tensors: [TensorSpec], maxShardSize: Int, identity: String) throws(CheckpointError) {
            let shards = try HFFolderSlices.shards(tensors, maxShardSize: maxShardSize, path: folder)
            let fingerprint = HFFolderSlices.fingerprint(shards, identity: identity)
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
                .filter { $0.hasPrefix(".slice-") && !$0.contains(".partial-") }.sorted()
            var count: Int?
            var seen: [Int: String] = [:]
            var covered: [String: Int] = [:]
            for name in names {
                let path = folder + "/" + name
                guard let text = try? String(contentsOfFile: path, encoding: .utf8),
                      let manifest = Manifest(text), manifestName(manifest.index, of: manifest.count) == name else {
                    throw .io(file: path, problem: "is not a slice manifest")
                }
                guard manifest.fingerprint == fingerprint else {
                    throw .io(file: path, problem: "was written for a different merge (inputs or options differ); run slice \(manifest.index) of \(manifest.count) again")
                }
                if let count, count != manifest.count {
                    throw .io(file: path, problem: "is a slice of \(manifest.count), another manifest a slice of \(count): remove the stale one")
                }
                count = manifest.count
                seen[manifest.index] = path
                for (shard, size) in manifest.shards { covered[shard] = size }
            }
            guard let count else { throw .io(file: folder, problem: "no slice has finished (no .slice-I-of-N manifest)") }
            if let missing = (0..<count).first(where: { seen[$0] == nil }) {
                throw .io(file: folder, problem: "slice \(missing) of \(count) has not finished (no \(manifestName(missing, of: count)))")
            }
            var owner = [Int](repeating: 0, count: shards.count)
            for slice in 0..<count { for i in assignment(shards, slice: slice, of: count) { owner[i] = slice } }
            for (i, shard) in shards.enumerated() {
                let slice = owner[i]
                guard covered[shard.name] == shard.size else {
                    throw .io(file: folder + "/" + shard.name, problem: "is not in slice \(slice) of \(count)'s manifest with its planned size; run that slice again")
                }
                var info = stat()
                guard stat(folder + "/" + shard.name, &info) == 0, Int(info.st_size) == shard.size else {
                    throw .io(file: folder + "/" + shard.name, problem: "is missing or not \(shard.size) bytes; run slice \(slice) of \(count) again")
                }
            }
            self.folder = folder
            self.shards = shards
            manifests = (0..<count).map { folder + "/" + HFFolderSlices.manifestName($0, of: count) }
            staging = try OutputPath(destination: folder + "/.finish", isDirectory: true, overwrite: true)
        }

        public func writeFile(name: String, contents: [UInt8]) throws(CheckpointError) {
            guard HFFolder.isPlainFileName(name) else { throw .io(file: name, problem: "not a plain file name") }
            try NewFile.store(contents, to: staging.temporaryPath(for: name), display: folder + "/" + name)
            staged.append(name)
        }

        public func copyFile(from source: String, as name: String? = nil, followSymlinks: Bool = false) throws(CheckpointError) {
            let target = try HFFolder.sideFileTarget(copying: source, as: name, followSymlinks: followSymlinks)
            try NewFile.copy(from: source, to: staging.temporaryPath(for: target), display: folder + "/" + target)
            staged.append(target)
        }

        /// Moves the staged side files into the folder, writes the index (when there
        /// is more than one shard) last, and removes the manifests.
        public func commit() throws(CheckpointError) {
            do throws(CheckpointError) {
                if shards.count > 1 {
                    try writeFile(name: HFFolder.indexFileName, contents: Array(HFFolderWriter.indexJSON(shards.map { ($0.name, $0.tensors) }).utf8))
                }
                for name in staged { try? FileDescriptor.open(staging.temporaryPath(for: name), O_RDONLY).sync() }
                for name in staged where rename(staging.temporaryPath(for: name), folder + "/" + name) != 0 {
                    throw CheckpointError.io(file: folder + "/" + name, problem: "cannot move into place: \(String(cString: strerror(errno)))")
                }
                for manifest in manifests { unlink(manifest) }
                try? FileDescriptor.open(folder, O_RDONLY | O_DIRECTORY).sync()
            } catch {
                staging.abort()
                throw error
            }
            staging.abort()
        }

        public func abort() { staging.abort() }
    }

    /// A parsed manifest.
    struct Manifest {
        var fingerprint = ""
        var index = 0
        var count = 0
        var shards: [(String, Int)] = []

        init?(_ text: String) {
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            guard lines.count >= 4, lines[0] == "claire-slice 1", lines.last == "" else { return nil }
            let plan = lines[1].split(separator: " ")
            let slice = lines[2].split(separator: " ")
            guard plan.count == 2, plan[0] == "plan", slice.count == 4, slice[0] == "slice", slice[2] == "of",
                  let index = Int(slice[1]), let count = Int(slice[3]), count > 0, (0..<count).contains(index) else { return nil }
            fingerprint = String(plan[1])
            self.index = index
            self.count = count
            for line in lines[3..<(lines.count - 1)] {
                let parts = line.split(separator: " ")
                guard parts.count == 3, parts[0] == "shard", let size = Int(parts[2]) else { return nil }
                shards.append((String(parts[1]), size))
            }
        }
    }
}
