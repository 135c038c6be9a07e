import Checkpoints
import Dispatch

/// The output of a merge, produced a window at a time: a window is a run of whole
/// chunks of one tensor, at most `ChunkScheduler.windowElements` long, encoded into
/// one of two window buffers and handed to a writer thread as one piece of the
/// tensor (`TensorSink.write(_:piece:at:)`) while the next window is computed into
/// the other. Memory for output is thus two windows, whatever the tensor's size.
///
/// Windows are opened and closed by `ChunkScheduler.forEachChunk(_:writing:_:)` on
/// the thread running the merge, in order; workers encode into the open window
/// through `TensorDecoder.store(_:_:_:into:)`. A write error is kept and thrown
/// when the next window or tensor starts.
final class OutputWindows: @unchecked Sendable {
    /// Bytes each window buffer holds.
    let capacity: Int
    /// Bytes per piece of a copied tensor.
    let copyPiece: Int
    private let buffers: [UnsafeMutableRawBufferPointer]
    /// Signalled when the write from the matching buffer has finished.
    private let free = [DispatchSemaphore(value: 1), DispatchSemaphore(value: 1)]
    private let writer = DispatchQueue(label: "claire.merge.writer")
    private let failure = Locked<(any Error)?>(nil)
    private var sink: UncheckedSendable<any TensorSink>?
    /// The buffer the next window goes into.
    private var slot = 0

    /// The tensor in hand and how many of its elements were handed to the writer.
    private(set) var job: MergeJob?
    private var produced = 0
    /// The open window: its elements and the tensor bytes they take (nil when closed).
    private var window: (elements: Range<Int>, bytes: Range<Int>)?

    /// Two buffers of `capacity` bytes (at least 1); copied tensors go in pieces of `copyPiece` bytes.
    init(capacity: Int, copyPiece: Int) {
        self.capacity = max(capacity, 1)
        self.copyPiece = max(copyPiece, 1)
        buffers = [.allocate(byteCount: self.capacity, alignment: 64), .allocate(byteCount: self.capacity, alignment: 64)]
    }

    deinit { for buffer in buffers { buffer.deallocate() } }

    /// Starts a run that writes into `sink`.
    func start(into sink: any TensorSink) {
        self.sink = UncheckedSendable(sink)
        failure.withLock { $0 = nil }
        job = nil
    }

    /// Throws the first write error so far.
    func check() throws {
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Starts tensor `job`, whose windows follow.
    func begin(_ job: MergeJob) throws {
        try check()
        precondition(window == nil, "a window of '\(self.job?.name ?? "")' is still open")
        self.job = job
        produced = 0
    }

    /// Checks the tensor in hand was handed over whole.
    func end() {
        guard let job else { preconditionFailure("no tensor in hand") }
        precondition(window == nil && produced == job.elementCount,
                     "'\(job.name)': \(produced) of \(job.elementCount) elements written")
        if job.outputByteCount == 0 { submit(job.name, UnsafeRawBufferPointer(start: nil, count: 0), at: 0, slot: nil) }
        self.job = nil
    }

    /// Opens the window of `elements` (the next ones of the tensor in hand) in the
    /// free buffer, waiting for its last write to finish.
    func open(_ elements: Range<Int>) throws {
        guard let job else { preconditionFailure("no tensor in hand") }
        precondition(window == nil && elements.lowerBound == produced && elements.upperBound <= job.elementCount,
                     "window \(elements) of '\(job.name)' out of order")
        try check()
        let bytes = job.outputDType.byteRange(of: elements)
        precondition(bytes.count <= capacity && bytes.upperBound <= job.outputByteCount,
                     "window \(elements) of '\(job.name)' exceeds the window buffers")
        free[slot].wait()
        window = (elements, bytes)
    }

    /// The bytes of the open window that hold elements `range`, which lie inside it.
    func bytes(for range: Range<Int>) -> UnsafeMutableRawBufferPointer {
        guard let window, let job else { preconditionFailure("no window open") }
        precondition(range.lowerBound >= window.elements.lowerBound && range.upperBound <= window.elements.upperBound,
                     "elements \(range) outside the window \(window.elements) of '\(job.name)'")
        let bytes = job.outputDType.byteRange(of: range)
        let start = bytes.lowerBound - window.bytes.lowerBound
        return UnsafeMutableRawBufferPointer(rebasing: buffers[slot][start..<(start + bytes.count)])
    }

    /// Hands the open window to the writer and moves to the other buffer.
    func close() {
        guard let window, let job else { preconditionFailure("no window open") }
        submit(job.name, UnsafeRawBufferPointer(rebasing: buffers[slot][0..<window.bytes.count]), at: window.bytes.lowerBound,
               slot: slot)
        produced = window.elements.upperBound
        self.window = nil
        slot = 1 - slot
    }

    /// Gives up the open window, if any (its computation failed); nothing is written.
    func abandon() {
        guard window != nil else { return }
        window = nil
        free[slot].signal()
    }

    /// Writes a tensor whose bytes already exist (a copied input) in pieces of at
    /// most `copyPiece` bytes, each followed by `release` of its byte range, then `done`.
    func copy(_ name: String, _ bytes: UnsafeRawBufferPointer, release: @escaping @Sendable (Range<Int>) -> Void,
              done: @escaping @Sendable () -> Void) {
        let target = sink, failure = self.failure, capacity = copyPiece
        let source = UncheckedSendable(bytes)
        writer.async {
            defer { done() }
            guard let target, failure.withLock({ $0 == nil }) else { return }
            var offset = 0
            repeat {
                let end = min(source.value.count, offset + capacity)
                do {
                    try target.value.write(name, piece: UnsafeRawBufferPointer(rebasing: source.value[offset..<end]), at: offset)
                } catch {
                    failure.withLock { if $0 == nil { $0 = error } }
                    return
                }
                release(offset..<end)
                offset = end
            } while offset < source.value.count
        }
    }

    /// Waits for every write handed out so far.
    func drain() { writer.sync {} }

    private func submit(_ name: String, _ bytes: UnsafeRawBufferPointer, at offset: Int, slot: Int?) {
        let target = sink, failure = self.failure
        let piece = UncheckedSendable(bytes)
        let free = slot.map { self.free[$0] }
        writer.async {
            defer { free?.signal() }
            // After a failed write the output is abandoned: later pieces are dropped.
            guard let target, failure.withLock({ $0 == nil }) else { return }
            do {
                try target.value.write(name, piece: piece.value, at: offset)
            } catch {
                failure.withLock { if $0 == nil { $0 = error } }
            }
        }
    }
}
