#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory map of a whole file.
///
/// Checkpoints are never read into memory: tensors are views into the map, and
/// pages a streaming pass has finished with are handed back to the kernel with
/// `release(_:)` (`madvise(MADV_DONTNEED)`), so a pass over a model larger than
/// RAM keeps a small resident set. The file is opened `O_RDONLY`; nothing here
/// can modify it.
public final class MappedFile: @unchecked Sendable {
    /// The path as given by the caller (used in messages).
    public let path: String
    /// Size of the file in bytes when it was mapped.
    public let size: Int
    private let base: UnsafeRawPointer?

    /// Maps `path` (`open(2)` + `fstat(2)` + `mmap(2)`); the descriptor is closed at once.
    public init(path: String) throws(CheckpointError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(file: path, problem: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .io(file: path, problem: String(cString: strerror(errno))) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw .io(file: path, problem: "not a regular file") }
        size = Int(info.st_size)
        if size == 0 {
            base = nil
            return
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
            throw .io(file: path, problem: "cannot map file: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(mapped)
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }

    /// The whole file.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// A view of `range`, which the caller has checked lies inside the file.
    public func bytes(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        precondition(range.lowerBound >= 0 && range.upperBound <= size, "range outside mapped file")
        guard let base, !range.isEmpty else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: base + range.lowerBound, count: range.count)
    }

    /// Tells the kernel the pages wholly inside `range` are no longer needed,
    /// so they leave the resident set; a later read maps them in again.
    public func release(_ range: Range<Int>) {
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (range.lowerBound + page - 1) / page * page
        let end = min(range.upperBound, size) / page * page
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }

    /// Maps the pages of `range` into the page table in one call
    /// (`MADV_POPULATE_READ`, Linux 5.14+), which costs far less than taking one
    /// page fault per 4 KiB while decoding. Silently does nothing where unsupported.
    public func populate(_ range: Range<Int>) {
        #if os(Linux)
        guard let base, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), range.upperBound - start, 22 /* MADV_POPULATE_READ */)
        #endif
    }
}
