import Foundation

/// A file whose layout is fixed before any tensor data exists: a header, then one
/// byte slot per tensor. Both writers (safetensors and GGUF) put their data through
/// it: each slot is written once with `pwrite`, from any thread, in any order.
final class PlannedFile: @unchecked Sendable {
    /// The path used in messages (the destination, not the temporary).
    let displayPath: String
    /// Slot names in plan order, for the completeness check.
    private let order: [String]
    private let slots: [String: (offset: Int, count: Int)]
    private var fd: Int32
    /// Slots written so far.
    private let written = Locked(Set<String>())

    /// Creates `path` (which must not exist), sizes it to `size` bytes (so gaps
    /// read as zeros without being written) and writes `header` at offset 0.
    init(creating path: String, displayPath: String, header: [UInt8],
         slots plan: [(name: String, offset: Int, count: Int)], size: Int) throws(CheckpointError) {
        self.displayPath = displayPath
        order = plan.map(\.name)
        var slots: [String: (offset: Int, count: Int)] = [:]
        for slot in plan { slots[slot.name] = (slot.offset, slot.count) }
        self.slots = slots
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io(file: displayPath, problem: "cannot create: \(String(cString: strerror(errno)))") }
        guard ftruncate(fd, off_t(size)) == 0 else {
            throw .io(file: displayPath, problem: "cannot size the output: \(String(cString: strerror(errno)))")
        }
        let result = header.withUnsafeBytes { buffer in Result { () throws(CheckpointError) in try writeFully(buffer, at: 0) } }
        try result.get()
        written.withLock { for slot in plan where slot.count == 0 { $0.insert(slot.name) } }
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// Writes the bytes of slot `name`; thread-safe, any order, once per slot.
    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard let slot = slots[name] else { throw .io(file: displayPath, problem: "tensor '\(name)' is not in the plan") }
        guard bytes.count == slot.count else {
            throw .io(file: displayPath, problem: "tensor '\(name)': \(bytes.count) bytes given, \(slot.count) planned")
        }
        let fresh = written.withLock { $0.insert(name).inserted }
        guard fresh || slot.count == 0 else { throw .io(file: displayPath, problem: "tensor '\(name)' written twice") }
        try writeFully(bytes, at: slot.offset)
    }

    /// Checks every slot was written, flushes the file to disk and closes it.
    func finish() throws(CheckpointError) {
        let missing = written.withLock { written in order.first { !written.contains($0) } }
        if let missing { throw .io(file: displayPath, problem: "tensor '\(missing)' was never written") }
        guard fsync(fd) == 0 else { throw .io(file: displayPath, problem: "cannot flush: \(String(cString: strerror(errno)))") }
        let closed = close(fd)
        fd = -1
        guard closed == 0 else { throw .io(file: displayPath, problem: "cannot close: \(String(cString: strerror(errno)))") }
    }

    /// Closes the file without checking it (the caller removes it).
    func discard() {
        if fd >= 0 { close(fd) }
        fd = -1
    }

    /// Writes all of `buffer` at `offset`; reads only `buffer.count` bytes of it (pwrite
    /// never reports more than it was asked to write, so `done` stays within the buffer).
    private func writeFully(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        var done = 0
        while done < buffer.count {
            let n = pwrite(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(file: displayPath, problem: "write failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
}
