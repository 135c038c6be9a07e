import Dispatch
import Foundation

/// Runs per-tensor work on several threads with bounded memory.
///
/// Workers take the next job in order from a shared counter, so at most
/// `workers` tensors are in flight; each worker keeps its own scratch buffers,
/// which grow to the largest tensor it meets and are reused. The first error
/// stops the remaining work and is rethrown.
public enum TensorPipeline {
    /// Reusable per-worker scratch space.
    public final class Scratch: @unchecked Sendable {
        public var floats: [Float] = []
        public var moreFloats: [Float] = []
        public var bytes: [UInt8] = []

        /// Resizes `array` to `count` without shrinking its capacity. Inlinable so
        /// callers in other modules get a specialized copy (the generic one goes
        /// element by element through metadata lookups).
        @inlinable
        public static func fit<T: Numeric>(_ array: inout [T], _ count: Int) {
            if array.count < count {
                array.append(contentsOf: repeatElement(0, count: count - array.count))
            } else if array.count > count {
                array.removeLast(array.count - count)
            }
        }
    }

    /// Calls `body(job, scratch)` for every job index in `0..<count` on up to
    /// `workers` threads; `progress(done)` after each job (from the worker thread).
    public static func run<E: Error>(
        count: Int, workers: Int = ProcessInfo.processInfo.activeProcessorCount,
        progress: @Sendable (Int) -> Void = { _ in },
        _ body: @Sendable (Int, Scratch) throws(E) -> Void
    ) throws(E) {
        let state = State<E>()
        let threads = max(1, min(workers, count))
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            let scratch = Scratch()
            while let job = state.next(limit: count) {
                do throws(E) {
                    try body(job, scratch)
                    progress(state.finish())
                } catch {
                    state.fail(error)
                    return
                }
            }
        }
        if let error = state.error { throw error }
    }

    private final class State<E: Error>: @unchecked Sendable {
        private let lock = NSLock()
        private var cursor = 0
        private var done = 0
        private(set) var error: E?

        func next(limit: Int) -> Int? {
            lock.lock()
            defer { lock.unlock() }
            guard error == nil, cursor < limit else { return nil }
            cursor += 1
            return cursor - 1
        }

        func finish() -> Int {
            lock.lock()
            defer { lock.unlock() }
            done += 1
            return done
        }

        func fail(_ e: E) {
            lock.lock()
            if error == nil { error = e }
            lock.unlock()
        }
    }
}
