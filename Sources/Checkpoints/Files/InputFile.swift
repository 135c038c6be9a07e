#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one way Claire opens a file it reads.
///
/// `open(2)` on a FIFO blocks until a writer appears, and a device or folder where a
/// file is expected makes no sense to read: the file is opened with `O_NONBLOCK`
/// (which makes opening a FIFO return at once), checked with `fstat(2)` to be a
/// regular file, and only then used. For a regular file `O_NONBLOCK` changes nothing.
public enum InputFile {
    /// The cap on a JSON side file parsed whole (config.json, tokenizer.json, …).
    public static let maximumJSONSize = 256 << 20
    /// The cap on a merge recipe.
    public static let maximumRecipeSize = 1 << 20

    /// Opens `path` read-only (the descriptor closes itself); returns it and the
    /// file's size in bytes.
    static func open(_ path: String) throws(CheckpointError) -> (file: FileDescriptor, size: Int) {
        let file: FileDescriptor
        let info: stat
        do throws(FileDescriptor.Failure) {
            file = try FileDescriptor.open(path, O_RDONLY | O_NONBLOCK)
            info = try file.status()
        } catch {
            throw .io(file: path, problem: error.description)
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw .io(file: path, problem: "not a regular file (\(kind(info.st_mode)))")
        }
        guard let size = Int(exactly: info.st_size), size >= 0 else {
            throw .io(file: path, problem: "file size \(info.st_size) is not valid")
        }
        return (file, size)
    }

    /// Reads the whole of `path`, which must hold at most `cap` bytes;
    /// `what` names the kind of file in the message, e.g. "a recipe".
    public static func readAll(_ path: String, cap: Int, what: String) throws(CheckpointError) -> [UInt8] {
        let (file, size) = try open(path)
        guard size <= cap else {
            throw .io(file: path, problem: "is \(size) bytes, more than the \(describeSize(cap)) \(what) may have")
        }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n: Int
            do throws(FileDescriptor.Failure) {
                n = try bytes.withUnsafeMutableBytes { buffer in
                    Result { () throws(FileDescriptor.Failure) in try file.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...])) }
                }.get()
            } catch {
                throw .io(file: path, problem: "read failed: \(error)")
            }
            if n == 0 { throw .io(file: path, problem: "changed size while being read") }
            done += n
        }
        return bytes
    }

    /// `256 MiB`, `1 MiB`, `64 KiB` or a byte count.
    public static func describeSize(_ bytes: Int) -> String {
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) bytes"
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFDIR: return "a folder"
        case S_IFIFO: return "a FIFO"
        case S_IFCHR: return "a character device"
        case S_IFBLK: return "a block device"
        case S_IFSOCK: return "a socket"
        default: return "not a plain file"
        }
    }
}

/// Whole files written into an output's temporary folder (side files, cards, recipes).
enum NewFile {
    /// The buffer a copy streams through: the copy's memory does not grow with the file.
    static let copyBufferSize = 1 << 20

    /// Creates `path` (which must not exist) holding `contents`; `display` names the
    /// output in messages.
    static func store(_ contents: [UInt8], to path: String, display: String) throws(CheckpointError) {
        let file = try create(path, display: display)
        do throws(FileDescriptor.Failure) {
            try contents.withUnsafeBytes { buffer in Result { () throws(FileDescriptor.Failure) in try file.write(buffer) } }.get()
        } catch {
            throw .io(file: display, problem: "write failed: \(error)")
        }
    }

    /// Copies the regular file `source` to the new file `path` through a fixed buffer.
    static func copy(from source: String, to path: String, display: String) throws(CheckpointError) {
        let (input, _) = try InputFile.open(source)
        let file = try create(path, display: display)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: copyBufferSize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n: Int
            do throws(FileDescriptor.Failure) { n = try input.read(into: buffer) } catch {
                throw .io(file: source, problem: "read failed: \(error)")
            }
            if n == 0 { return }
            do throws(FileDescriptor.Failure) { try file.write(UnsafeRawBufferPointer(rebasing: buffer[0..<n])) } catch {
                throw .io(file: display, problem: "write failed: \(error)")
            }
        }
    }

    private static func create(_ path: String, display: String) throws(CheckpointError) -> FileDescriptor {
        do throws(FileDescriptor.Failure) { return try FileDescriptor.create(path) } catch {
            throw .io(file: display, problem: "cannot create: \(error)")
        }
    }
}
