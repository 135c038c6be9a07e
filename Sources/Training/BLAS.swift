import COpenBLAS

/// Matrix products through OpenBLAS `cblas_sgemm`, row-major throughout.
///
/// The names say which operand is transposed, in the shapes the model uses:
/// a weight `W` is stored `[out, in]` as in Hugging Face checkpoints.
enum BLAS {
    /// Sets how many threads OpenBLAS may use for one product.
    static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// How many threads OpenBLAS currently uses for one product.
    static var threads: Int { Int(openblas_get_num_threads()) }

    /// `C[m×n] = alpha·A[m×k]·B[k×n] + beta·C` with leading dimensions given.
    @inline(__always)
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// `y[rows×out] = x[rows×in] · Wᵀ` for a weight `W[out×in]`.
    static func linear(_ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, weight: UnsafePointer<Float>,
                       outFeatures: Int, into y: UnsafeMutablePointer<Float>) {
        gemm(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures,
             b: weight, ldb: inFeatures, beta: 0, c: y, ldc: outFeatures)
    }

    /// Backward of `linear`: `dW += dyᵀ·x`, and `dx = dy·W` (or `+=` when `accumulate`).
    static func linearBackward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, rows: Int, inFeatures: Int,
                               outFeatures: Int, weight: UnsafePointer<Float>, weightGradient: UnsafeMutablePointer<Float>,
                               inputGradient: UnsafeMutablePointer<Float>?, accumulate: Bool) {
        gemm(transA: true, transB: false, m: outFeatures, n: inFeatures, k: rows, a: dy, lda: outFeatures,
             b: x, ldb: inFeatures, beta: 1, c: weightGradient, ldc: inFeatures)
        if let dx = inputGradient {
            gemm(transA: false, transB: false, m: rows, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures,
                 b: weight, ldb: inFeatures, beta: accumulate ? 1 : 0, c: dx, ldc: inFeatures)
        }
    }
}
