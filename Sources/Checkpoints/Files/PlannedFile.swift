import Foundation

/// A file whose layout is fixed before any tensor data exists: a header, then one
/// byte slot per tensor. Both writers (safetensors and GGUF) put their data through
/// it: each slot is written once with `pwrite`, whole or in consecutive pieces,
/// from any thread, in any order.
final class PlannedFile: @unchecked Sendable {
    /// The path used in messages (the destination, not the temporary).
    let displayPath: String
    /// Slot names in plan order, for the completeness check.
    private let order: [String]
    private let slots: [String: (offset: Int, count: Int)]
    private let file: FileDescriptor
    /// Bytes of each slot written so far (pieces arrive in order).
    private let written = Locked([String: Int]())

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
    }

    /// Writes the bytes of slot `name`; thread-safe, any order, once per slot.
    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard let slot = slots[name] else { throw .io(file: displayPath, problem: "tensor '\(name)' is not in the plan") }
        guard bytes.count == slot.count else {
            throw .io(file: displayPath, problem: "tensor '\(name)': \(bytes.count) bytes given, \(slot.count) planned")
        }
        try write(name, piece: bytes, at: 0)
    }

    /// Writes `bytes` at byte `offset` of slot `name`: the next of the consecutive
    /// pieces a slot may be written in (the first at 0, each where the last ended).
    /// Thread-safe; pieces of different slots may interleave.
    func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        guard let slot = slots[name] else { throw .io(file: displayPath, problem: "tensor '\(name)' is not in the plan") }
        guard offset >= 0, offset <= slot.count, bytes.count <= slot.count - offset else {
            throw .io(file: displayPath, problem: "tensor '\(name)': bytes \(offset)..<\(offset + bytes.count) given, \(slot.count) planned")
        }
        // The piece is claimed before it is written, so no two writers take the same bytes.
        let before = written.withLock { written -> Int in
            let done = written[name] ?? 0
            if done == offset { written[name] = offset + bytes.count }
            return done
        }
        guard before == offset else {
            if before == slot.count { throw .io(file: displayPath, problem: "tensor '\(name)' written twice") }
            throw .io(file: displayPath, problem: "tensor '\(name)': bytes from \(offset) given where \(before) were written")
        }
        if bytes.count > 0 { try writeFully(bytes, at: slot.offset + offset) }
    }

    /// Checks every slot was written, flushes the file to disk and closes it.
    func finish() throws(CheckpointError) {
        let done = written.withLock { $0 }
        let missing = order.lazy.map { (name: $0, done: done[$0] ?? 0, planned: self.slots[$0]?.count ?? 0) }
            .first { $0.done < $0.planned }
        if let missing {
            throw .io(file: displayPath, problem: missing.done == 0 ? "tensor '\(missing.name)' was never written"
                : "tensor '\(missing.name)' was written only in part (\(missing.done) of \(missing.planned) bytes)")
        }
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
