import Dispatch
import Foundation

/// Runs numbered jobs on a few threads: each worker takes the next job not yet taken,
/// so a slow job does not hold the others back, and the first error stops the jobs not
/// yet started and is rethrown. Every parallel loop in Claire goes through here.
public enum WorkerQueue {
    /// Calls `body(worker, job)` for every job in `0..<count` on up to `workers` threads.
    /// `worker` (in `0..<min(workers, count)`) names the calling thread's slot, so a
    /// caller can give each thread its own scratch. `progress(done)` runs after each
    /// finished job, on the worker's thread.
    public static func forEach<E: Error>(
        count: Int, workers: Int,
        progress: @Sendable (Int) -> Void = { _ in },
        _ body: @Sendable (_ worker: Int, _ job: Int) throws(E) -> Void
    ) throws(E) {
        guard count > 0 else { return }
        let state = State<E>(count: count)
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, count))) { worker in
            while let job = state.next() {
                do throws(E) {
                    try body(worker, job)
                    progress(state.finish())
                } catch {
                    state.fail(error)
                    return
                }
            }
        }
        if let error = state.error { throw error }
    }

    /// `body(worker, job)` for every job, the results in job order whatever thread
    /// produced them.
    public static func map<Result: Sendable, E: Error>(
        count: Int, workers: Int,
        progress: @Sendable (Int) -> Void = { _ in },
        _ body: @Sendable (_ worker: Int, _ job: Int) throws(E) -> Result
    ) throws(E) -> [Result] {
        let results = Locked([Result?](repeating: nil, count: count))
        try forEach(count: count, workers: workers, progress: progress) { (worker, job) throws(E) in
            let result = try body(worker, job)
            results.withLock { $0[job] = result }
        }
        // Every job finished without an error, so every slot is filled.
        return results.withLock { $0.map { $0! } }
    }

    /// The processors this process may use.
    public static var processors: Int { ProcessInfo.processInfo.activeProcessorCount }

    private final class State<E: Error>: @unchecked Sendable {
        private let lock = NSLock()
        private let count: Int
        private var cursor = 0
        private var done = 0
        private var failure: E?

        init(count: Int) { self.count = count }

        var error: E? { lock.withLock { failure } }

        func next() -> Int? {
            lock.withLock {
                guard failure == nil, cursor < count else { return nil }
                cursor += 1
                return cursor - 1
            }
        }

        func finish() -> Int {
            lock.withLock {
                done += 1
                return done
            }
        }

        func fail(_ e: E) {
            lock.withLock { if failure == nil { failure = e } }
        }
    }
}

/// A value shared between threads, reached only under its lock.
public final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    public init(_ value: Value) { self.value = value }

    /// Runs `body` on the value with the lock held.
    public func withLock<T, E: Error>(_ body: (inout Value) throws(E) -> T) throws(E) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

/// Reusable per-worker scratch space of the format conversions: grows to the largest
/// tensor a worker meets and is reused.
public final class ConversionScratch: @unchecked Sendable {
    public var floats: [Float] = []
    public var moreFloats: [Float] = []
    public var bytes: [UInt8] = []

    public init() {}

    /// One scratch for each of `workers` threads.
    public static func perWorker(_ workers: Int) -> [ConversionScratch] {
        (0..<max(workers, 1)).map { _ in ConversionScratch() }
    }

    /// Resizes `array` to `count` without shrinking its capacity. Inlinable so callers
    /// in other modules get a specialized copy (the generic one goes element by element
    /// through metadata lookups).
    @inlinable
    public static func fit<T: Numeric>(_ array: inout [T], _ count: Int) {
        if array.count < count {
            array.append(contentsOf: repeatElement(0, count: count - array.count))
        } else if array.count > count {
            array.removeLast(array.count - count)
        }
    }
}
