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

    /// Floats a row-major `rows × columns` matrix with leading dimension `ld` spans
    /// (the last row ends after `columns` elements). Traps on a negative size or a
    /// leading dimension shorter than a row, as OpenBLAS would refuse.
    static func extent(rows: Int, columns: Int, leadingDimension ld: Int) -> Int {
        precondition(rows >= 0 && columns >= 0 && ld >= max(1, columns), "bad matrix \(rows)×\(columns), ld \(ld)")
        return rows == 0 || columns == 0 ? 0 : (rows - 1) * ld + columns
    }

    /// `C[m×n] = alpha·op(A)[m×k]·op(B)[k×n] + beta·C` with leading dimensions given
    /// (`op` transposes when asked; `A` is stored `k×m` when transposed, `B` `n×k`).
    /// Bounds: each operand view holds the `extent` of its stored matrix, checked here
    /// once per call, so OpenBLAS reads and writes only inside the views.
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                     a: UnsafeMutableBufferPointer<Float>, lda: Int, b: UnsafeMutableBufferPointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutableBufferPointer<Float>, ldc: Int) {
        let aExtent = transA ? extent(rows: k, columns: m, leadingDimension: lda)
                             : extent(rows: m, columns: k, leadingDimension: lda)
        let bExtent = transB ? extent(rows: n, columns: k, leadingDimension: ldb)
                             : extent(rows: k, columns: n, leadingDimension: ldb)
        let cExtent = extent(rows: m, columns: n, leadingDimension: ldc)
        precondition(a.count >= aExtent && b.count >= bExtent && c.count >= cExtent,
                     "product operands too small: \(a.count)/\(aExtent), \(b.count)/\(bExtent), \(c.count)/\(cExtent)")
        guard m > 0 && n > 0 else { return }
        // With k = 0 OpenBLAS still scales C by beta; its base must then exist, the others are unread.
        let dummy = c.baseAddress!
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a.baseAddress ?? dummy, Int32(lda), b.baseAddress ?? dummy,
                    Int32(ldb), beta, dummy, Int32(ldc))
    }

    /// `y[rows×out] = x[rows×in] · Wᵀ` for a weight `W[out×in]`. Bounds as `gemm`.
    static func linear(_ x: UnsafeMutableBufferPointer<Float>, rows: Int, inFeatures: Int,
                       weight: UnsafeMutableBufferPointer<Float>, outFeatures: Int,
                       into y: UnsafeMutableBufferPointer<Float>) {
        gemm(transA: false, transB: true, m: rows, n: outFeatures, k: inFeatures, a: x, lda: inFeatures,
             b: weight, ldb: inFeatures, beta: 0, c: y, ldc: outFeatures)
    }

    /// Backward of `linear`: `dW += dyᵀ·x`, and `dx = dy·W` (or `+=` when `accumulate`). Bounds as `gemm`.
    static func linearBackward(dy: UnsafeMutableBufferPointer<Float>, x: UnsafeMutableBufferPointer<Float>, rows: Int,
                               inFeatures: Int, outFeatures: Int, weight: UnsafeMutableBufferPointer<Float>,
                               weightGradient: UnsafeMutableBufferPointer<Float>,
                               inputGradient: UnsafeMutableBufferPointer<Float>?, accumulate: Bool) {
        gemm(transA: true, transB: false, m: outFeatures, n: inFeatures, k: rows, a: dy, lda: outFeatures,
             b: x, ldb: inFeatures, beta: 1, c: weightGradient, ldc: inFeatures)
        if let dx = inputGradient {
            gemm(transA: false, transB: false, m: rows, n: inFeatures, k: outFeatures, a: dy, lda: outFeatures,
                 b: weight, ldb: inFeatures, beta: accumulate ? 1 : 0, c: dx, ldc: inFeatures)
        }
    }
}
