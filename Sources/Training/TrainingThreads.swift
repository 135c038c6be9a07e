import COpenBLAS

/// Thread control for the BLAS library the training module multiplies with.
public enum TrainingThreads {
    /// Sets how many threads OpenBLAS may use for one product.
    public static func setBLASThreads(_ count: Int) {
        openblas_set_num_threads(Int32(count))
    }
}
