#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A read-only memory map of a whole file, and its descriptor.
///
/// Checkpoints are never read into memory whole: tensors are views into the map,
/// and pages a pass has finished with are handed back to the kernel with
/// `release(_:)` (`madvise(MADV_DONTNEED)`), so a pass over a model larger than
/// RAM keeps a small resident set. A streaming pass may instead copy the bytes it
/// needs into a buffer of its own with `read(_:into:)`, which maps nothing. The file
/// is opened `O_RDONLY`; nothing here can modify it.
public final class MappedFile: @unchecked Sendable {
    /// The path as given by the caller (used in messages).
    public let path: String
    /// Size of the file in bytes when it was mapped.
    public let size: Int
    private let base: UnsafeRawPointer?
    /// The descriptor `read(_:into:)` reads through (nil for an empty file).
    private let descriptor: FileDescriptor?
    /// This map's entry in the table the SIGBUS handler consults.
    private let region: Int?

    /// Maps `path` (`InputFile.open` + `mmap(2)`), keeping the descriptor open for `read`.
    /// Refuses anything but a regular file, without blocking on a FIFO.
    public init(path: String) throws(CheckpointError) {
        self.path = path
        let (file, size) = try InputFile.open(path)
        self.size = size
        if size == 0 {
            base = nil
            descriptor = nil
            region = nil
            return
        }
        descriptor = file
        let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, file.rawValue, 0)
        guard let mapped = mapping, mapped != MAP_FAILED else {
            throw .io(file: path, problem: "cannot map file: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(mapped)
        region = MappedRegions.add(start: UInt(bitPattern: mapped), count: size, path: path)
    }

    deinit {
        if let region { MappedRegions.remove(region) }
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

    /// Copies the bytes `range`, which the caller has checked lie inside the file, into
    /// `buffer` (`pread(2)`), which must hold `range.count` bytes. Nothing is mapped, so
    /// a reader that streams a large file this way keeps none of it resident. A file that
    /// has shrunk since it was mapped is reported as such.
    public func read(_ range: Range<Int>, into buffer: UnsafeMutableRawPointer) throws(CheckpointError) {
        precondition(range.lowerBound >= 0 && range.upperBound <= size, "range outside mapped file")
        guard let descriptor else { return }
        var done = 0
        while done < range.count {
            let n: Int
            do {
                n = try descriptor.read(into: UnsafeMutableRawBufferPointer(start: buffer + done, count: range.count - done),
                                        at: range.lowerBound + done)
            } catch {
                throw .io(file: path, problem: "cannot read: \(error)")
            }
            if n == 0 { throw .io(file: path, problem: "changed size while being read") }
            done += n
        }
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

    /// Hands back the pages of the 2 MiB-aligned blocks `range` touches, for a reader done
    /// with a whole tensor. The page cache may hold a file in folios of up to 2 MiB and map
    /// a whole folio when one of its pages is read, so reading a tensor also maps the pages
    /// its neighbours share a folio with, which releasing exactly each tensor's own bytes
    /// never reaches: on the bench trio such leftovers held 30 MB of every shard mapped by
    /// the end of `stats`. A page another reader still uses is mapped again on its next
    /// access (a minor fault), so a wider release costs a little time, never a result.
    public func releaseBlocks(around range: Range<Int>) {
        let block = 2 << 20
        release((range.lowerBound / block * block)..<((range.upperBound + block - 1) / block * block))
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

/// The address ranges of every live `MappedFile`, so a fault inside one can be
/// reported as the file it belongs to.
///
/// A file truncated by another process while it is mapped makes any read of the
/// lost pages raise SIGBUS. `installFaultHandler()` turns that into the usual
/// `error: <file>: changed size while being read` and exit status 1, after
/// removing pending outputs, instead of a crash. A fault outside every mapped
/// input is left to the default action.
///
/// The table is a fixed array of slots written under a lock and read without one
/// by the handler (which may not take locks): a slot is published by writing its
/// path and end before its start, and withdrawn by clearing its start first.
enum MappedRegions {
    static let capacity = 4096
    nonisolated(unsafe) private static let starts = UnsafeMutablePointer<UInt>.allocate(capacity: capacity)
    nonisolated(unsafe) private static let ends = UnsafeMutablePointer<UInt>.allocate(capacity: capacity)
    nonisolated(unsafe) private static let paths = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
    private static let lock = NSLock()
    nonisolated(unsafe) private static var initialized = false

    /// Records `count` bytes at `start` as belonging to `path`; returns the slot, or
    /// nil when every slot is taken (the map then works, unreported on a fault).
    static func add(start: UInt, count: Int, path: String) -> Int? {
        lock.lock()
        defer { lock.unlock() }
        if !initialized {
            starts.initialize(repeating: 0, count: capacity)
            ends.initialize(repeating: 0, count: capacity)
            paths.initialize(repeating: nil, count: capacity)
            initialized = true
        }
        for slot in 0..<capacity where starts[slot] == 0 && paths[slot] == nil {
            paths[slot] = strdup(path)
            ends[slot] = start &+ UInt(count)
            starts[slot] = start
            return slot
        }
        return nil
    }

    /// Withdraws a slot returned by `add`.
    static func remove(_ slot: Int) {
        lock.lock()
        defer { lock.unlock() }
        starts[slot] = 0
        ends[slot] = 0
        free(paths[slot])
        paths[slot] = nil
    }

    /// The path of the map holding `address`; called from the signal handler, so it
    /// takes no lock and allocates nothing.
    static func path(containing address: UInt) -> UnsafeMutablePointer<CChar>? {
        guard initialized else { return nil }
        for slot in 0..<capacity {
            let start = starts[slot]
            if start != 0 && address >= start && address < ends[slot] { return paths[slot] }
        }
        return nil
    }

    /// Installs the SIGBUS handler described above (once per process).
    static func installFaultHandler() {
        var action = sigaction()
        #if os(Linux)
        action.__sigaction_handler.sa_sigaction = mappedInputFault
        #else
        action.__sigaction_u.__sa_sigaction = mappedInputFault
        #endif
        action.sa_flags = SA_SIGINFO
        sigemptyset(&action.sa_mask)
        sigaction(SIGBUS, &action, nil)
    }
}

/// The SIGBUS handler: reports a fault inside a mapped input and exits with status 1;
/// any other fault gets the default action when the faulting access is retried.
private func mappedInputFault(_ number: Int32, _ info: UnsafeMutablePointer<siginfo_t>?, _ context: UnsafeMutableRawPointer?) {
    #if os(Linux)
    let address = UInt(bitPattern: info?.pointee._sifields._sigfault.si_addr)
    #else
    let address = UInt(bitPattern: info?.pointee.si_addr)
    #endif
    guard let path = MappedRegions.path(containing: address) else {
        signal(SIGBUS, SIG_DFL)
        return
    }
    func put(_ text: StaticString) { _ = write(STDERR_FILENO, text.utf8Start, text.utf8CodeUnitCount) }
    put("error: ")
    _ = write(STDERR_FILENO, path, strlen(path))
    put(": changed size while being read\n")
    // Not async-signal-safe in general, but the faulting thread is reading an input
    // (no lock of its own held) and every other thread keeps running, so it completes.
    PendingOutputs.shared.removeAll()
    _exit(1)
}
