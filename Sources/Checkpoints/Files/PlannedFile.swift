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
    private let file: FileDescriptor
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
        do throws(FileDescriptor.Failure) { file = try FileDescriptor.create(path) } catch {
            throw .io(file: displayPath, problem: "cannot create: \(error)")
        }
        do throws(FileDescriptor.Failure) { try file.truncate(to: size) } catch {
            throw .io(file: displayPath, problem: "cannot size the output: \(error)")
        }
        let result = header.withUnsafeBytes { buffer in Result { () throws(CheckpointError) in try writeFully(buffer, at: 0) } }
        try result.get()
        written.withLock { for slot in plan where slot.count == 0 { $0.insert(slot.name) } }
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
        do throws(FileDescriptor.Failure) { try file.sync() } catch {
            throw .io(file: displayPath, problem: "cannot flush: \(error)")
        }
        do throws(FileDescriptor.Failure) { try file.close() } catch {
            throw .io(file: displayPath, problem: "cannot close: \(error)")
        }
    }

    /// Closes the file without checking it (the caller removes it).
    func discard() {
        try? file.close()
    }

    /// Writes all of `buffer` at `offset` (`FileDescriptor.write(_:at:)` reads only `buffer.count` bytes of it).
    private func writeFully(_ buffer: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        do throws(FileDescriptor.Failure) { try file.write(buffer, at: offset) } catch {
            throw .io(file: displayPath, problem: "write failed: \(error)")
        }
    }
}
