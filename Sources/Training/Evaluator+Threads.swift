extension Evaluator {
    /// Runs `body` with OpenBLAS limited to `threads` per matrix product, then restores
    /// the previous count. The count is process-wide: callers that evaluate several
    /// models on their own threads set it to 1 around the whole batch, so the threads
    /// they start are all the threads there are.
    public static func withBLASThreads<T, E: Error>(_ threads: Int, _ body: () throws(E) -> T) throws(E) -> T {
        let previous = BLAS.threads
        BLAS.setThreads(threads)
        defer { BLAS.setThreads(previous) }
        return try body()
    }
}
