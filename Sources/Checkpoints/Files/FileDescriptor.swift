#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open file descriptor that closes itself when it goes away (or at `close()`,
/// which reports the error a deferred write can surface there). The files of
/// `Checkpoints` — inputs read whole or mapped, planned outputs, side files,
/// delta files — are opened, read, written, synced and closed through here; each
/// call retries on EINTR and names the C function beneath it.
///
/// A class rather than a struct so one descriptor is closed exactly once however
/// it is passed around. Reads and `pwrite`s may come from several threads;
/// `close()` is called once the caller's writers are done.
final class FileDescriptor: @unchecked Sendable {
    /// The raw descriptor, for calls that take one (such as `mmap(2)`).
    let rawValue: Int32
    private var isOpen = true

    private init(rawValue: Int32) { self.rawValue = rawValue }

    deinit {
        if isOpen { _ = systemClose(rawValue) }
    }

    /// A failed call's `errno`.
    struct Failure: Error, CustomStringConvertible {
        let code: Int32
        init(_ code: Int32 = errno) { self.code = code }
        var description: String { String(cString: strerror(code)) }
    }

    /// `open(2)`; `O_CLOEXEC` is always added.
    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o644) throws(Failure) -> FileDescriptor {
        while true {
            let fd = systemOpen(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return FileDescriptor(rawValue: fd) }
            if errno != EINTR { throw Failure() }
        }
    }

    /// Creates `path`, which must not exist, for writing (`O_WRONLY | O_CREAT | O_EXCL`).
    static func create(_ path: String) throws(Failure) -> FileDescriptor {
        try open(path, O_WRONLY | O_CREAT | O_EXCL)
    }

    /// `fstat(2)`.
    func status() throws(Failure) -> stat {
        var info = stat()
        guard fstat(rawValue, &info) == 0 else { throw Failure() }
        return info
    }

    /// `read(2)` into `buffer`: the bytes read, 0 at the end of the file.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(Failure) -> Int {
        while true {
            let n = systemRead(rawValue, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            if errno != EINTR && errno != EAGAIN { throw Failure() }
        }
    }

    /// `pread(2)` into `buffer` from `offset`: the bytes read, 0 at the end of the file.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(Failure) -> Int {
        while true {
            let n = pread(rawValue, buffer.baseAddress, buffer.count, off_t(offset))
            if n >= 0 { return n }
            if errno != EINTR && errno != EAGAIN { throw Failure() }
        }
    }

    /// `write(2)` of all of `buffer` at the current position; reads only
    /// `buffer.count` bytes of it (write never reports more than it was asked for).
    func write(_ buffer: UnsafeRawBufferPointer) throws(Failure) {
        var done = 0
        while done < buffer.count {
            let n = systemWrite(rawValue, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure()
            }
            done += n
        }
    }

    /// `pwrite(2)` of all of `buffer` at `offset`, within `buffer.count` as `write`.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(Failure) {
        var done = 0
        while done < buffer.count {
            let n = pwrite(rawValue, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw Failure()
            }
            done += n
        }
    }

    /// `ftruncate(2)`: the file becomes `size` bytes, new bytes reading as zeros.
    func truncate(to size: Int) throws(Failure) {
        while ftruncate(rawValue, off_t(size)) != 0 {
            if errno != EINTR { throw Failure() }
        }
    }

    /// `fsync(2)`.
    func sync() throws(Failure) {
        while fsync(rawValue) != 0 {
            if errno != EINTR { throw Failure() }
        }
    }

    /// `close(2)`, once; later calls and the deinit do nothing.
    func close() throws(Failure) {
        guard isOpen else { return }
        isOpen = false
        guard systemClose(rawValue) == 0 else { throw Failure() }
    }
}

// The C calls under the methods of the same names, which shadow them inside the class.
private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { open(path, flags, mode) }
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int { read(fd, buffer, count) }
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int { write(fd, buffer, count) }
private func systemClose(_ fd: Int32) -> Int32 { close(fd) }
