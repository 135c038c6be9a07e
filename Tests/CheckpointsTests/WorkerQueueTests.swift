import Testing
@testable import Checkpoints

@Suite struct WorkerQueueTests {
    @Test(arguments: [1, 2, 7])
    func mapReturnsResultsInJobOrder(workers: Int) throws {
        let squares = try WorkerQueue.map(count: 1000, workers: workers) { (_, job) throws(CheckpointError) in job * job }
        #expect(squares == (0..<1000).map { $0 * $0 })
    }

    @Test func everyJobRunsOnceOnAWorkerSlotInRange() {
        let seen = Locked([Int](repeating: 0, count: 500))
        let slots = Locked(Set<Int>())
        WorkerQueue.forEach(count: 500, workers: 3) { worker, job in
            seen.withLock { $0[job] += 1 }
            slots.withLock { _ = $0.insert(worker) }
        }
        #expect(seen.withLock { $0 } == [Int](repeating: 1, count: 500))
        #expect(slots.withLock { $0.allSatisfy { (0..<3).contains($0) } })
    }

    @Test func theFirstErrorStopsJobsNotYetStartedAndIsRethrown() {
        let started = Locked(0)
        #expect(throws: CheckpointError.self) {
            try WorkerQueue.forEach(count: 10_000, workers: 2) { (_, job) throws(CheckpointError) in
                started.withLock { $0 += 1 }
                if job == 3 { throw .io(file: "x", problem: "job 3") }
            }
        }
        #expect(started.withLock { $0 } < 10_000)
    }

    @Test func progressCountsFinishedJobs() {
        let last = Locked(0)
        WorkerQueue.forEach(count: 40, workers: 2, progress: { done in last.withLock { $0 = max($0, done) } }) { _, _ in }
        #expect(last.withLock { $0 } == 40)
    }

    @Test func noJobsRunsNothing() {
        let ran = Locked(false)
        WorkerQueue.forEach(count: 0, workers: 4) { _, _ in ran.withLock { $0 = true } }
        #expect(!ran.withLock { $0 })
    }
}
