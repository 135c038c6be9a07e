#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The container format a checkpoint was read from.
public enum CheckpointFormat: String, Sendable {
    case safetensors
    case gguf
}

/// A named tensor inside a checkpoint: where its bytes are and what they mean.
/// Shapes are row-major (outermost dimension first) whatever the format.
public struct TensorEntry: Sendable, Hashable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let elementCount: Int
    public let byteCount: Int
    /// Index into `Checkpoint.files`.
    public let fileIndex: Int
    /// Absolute offset of the first byte within that file.
    public let offset: Int

    public init(name: String, dtype: DType, shape: [Int], elementCount: Int, byteCount: Int, fileIndex: Int, offset: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.elementCount = elementCount
        self.byteCount = byteCount
        self.fileIndex = fileIndex
        self.offset = offset
    }

    /// The byte range within its file.
    public var byteRange: Range<Int> { offset..<(offset + byteCount) }
}

/// A validated, memory-mapped checkpoint: an ordered set of named tensors.
///
/// Opening validates every structural rule of the format before any tensor byte
/// is trusted; afterwards every `TensorEntry` lies inside its mapped file, so
/// `data(of:)` hands out views without copying.
public final class Checkpoint: Sendable {
    /// The path the checkpoint was opened from (file or folder).
    public let path: String
    public let format: CheckpointFormat
    /// The mapped files, in the order tensors refer to them.
    public let files: [MappedFile]
    /// Tensors in storage order.
    public let tensors: [TensorEntry]
    /// Format metadata: safetensors `__metadata__` (strings) or GGUF key/values.
    public let metadata: [MetadataEntry]
    private let indexByName: [String: Int]

    /// Builds a checkpoint from already-validated parts; names must be unique.
    public init(path: String, format: CheckpointFormat, files: [MappedFile], tensors: [TensorEntry], metadata: [MetadataEntry]) {
        self.path = path
        self.format = format
        self.files = files
        self.tensors = tensors
        self.metadata = metadata
        var index: [String: Int] = [:]
        index.reserveCapacity(tensors.count)
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        self.indexByName = index
    }

    /// Opens a `.safetensors` file, a `.gguf` file or a Hugging Face model folder.
    /// Shards of a folder that are links to files outside it are refused unless
    /// `followSymlinks` (the command line's `--follow-symlinks`), so a downloaded
    /// folder cannot make Claire read files elsewhere on the machine.
    public static func open(_ path: String, followSymlinks: Bool = false) throws(CheckpointError) -> Checkpoint {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw .io(file: path, problem: String(cString: strerror(errno)))
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            return try HFFolder.open(path, followSymlinks: followSymlinks)
        }
        let file = try MappedFile(path: path)
        if file.size >= 4, file.bytes(0..<4).elementsEqual("GGUF".utf8) {
            return try GGUFReader.open(file)
        }
        if path.hasSuffix(".gguf") {
            throw .io(file: path, problem: "file has a .gguf name but does not start with the GGUF magic")
        }
        let parsed = try SafetensorsReader.read(file)
        return Checkpoint(path: path, format: .safetensors, files: [file], tensors: parsed.tensors,
                          metadata: parsed.metadata)
    }

    /// The tensor called `name`, if present.
    public func tensor(named name: String) -> TensorEntry? {
        indexByName[name].map { tensors[$0] }
    }

    /// The stored bytes of `tensor` (a view into the map, no copy).
    public func data(of tensor: TensorEntry) -> UnsafeRawBufferPointer {
        files[tensor.fileIndex].bytes(tensor.byteRange)
    }

    /// Decodes `tensor` into `destination`, which must hold `elementCount` floats.
    public func decode(_ tensor: TensorEntry, into destination: UnsafeMutableBufferPointer<Float>) throws(CheckpointError) {
        files[tensor.fileIndex].populate(tensor.byteRange)
        do {
            try ElementCodec.decode(tensor.dtype, from: data(of: tensor), into: destination)
        } catch {
            throw .codec(file: files[tensor.fileIndex].path, tensor: tensor.name, problem: error)
        }
    }

    /// Decodes `tensor` into a new array.
    public func decode(_ tensor: TensorEntry) throws(CheckpointError) -> [Float] {
        var values = [Float](repeating: 0, count: tensor.elementCount)
        try values.withUnsafeMutableBufferPointer { (buffer) throws(CheckpointError) in
            try decode(tensor, into: buffer)
        }
        return values
    }

    /// Hands the pages of `tensor` back to the kernel after a streaming pass used them,
    /// with the blocks it shares with its neighbours (`MappedFile.releaseBlocks`).
    public func release(_ tensor: TensorEntry) {
        files[tensor.fileIndex].releaseBlocks(around: tensor.byteRange)
    }

    /// Total number of elements over all tensors.
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.elementCount } }

    /// Total tensor bytes over all tensors.
    public var tensorBytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }
}
