import COpenBLAS

/// Truncated singular value decompositions of a row-major `m × n` Float matrix,
/// through OpenBLAS: exact (LAPACK `sgesdd`) or randomized (a range finder with
/// power iterations, `cblas_sgemm` and Householder QR, then `sgesdd` of a small matrix).
///
/// Layout: a row-major `m × n` buffer is the column-major `n × m` matrix Aᵀ, which is
/// how LAPACK is handed it (no copy into another layout). Results are row-major:
/// `u` is `m × rank`, `vt` is `rank × n`, `s` descending.
///
/// The randomized path is deterministic: its test matrix comes from `CounterRandom`,
/// and every call runs single-threaded inside OpenBLAS when `LoRAExtraction` sets it
/// so, so the same inputs give the same bits on any machine with the same library.
public enum TruncatedSVD {
    /// Which decomposition to run.
    public enum Algorithm: String, Sendable, CaseIterable {
        /// Randomized where the rank is small against the matrix, exact otherwise.
        case auto
        /// The full thin SVD (`sgesdd`), truncated.
        case exact
        /// The randomized range finder; exact for matrices of rank ≤ the sketch size.
        case randomized
    }

    /// A truncated decomposition A ≈ U·diag(s)·Vᵀ.
    public struct Factors: Sendable {
        public var m: Int
        public var n: Int
        public var rank: Int
        /// `m × rank`, row-major, orthonormal columns.
        public var u: [Float]
        /// The kept singular values, descending.
        public var s: [Float]
        /// `rank × n`, row-major, orthonormal rows.
        public var vt: [Float]
        /// Every singular value computed (all min(m, n) for the exact path; the sketch's for the randomized one).
        public var spectrum: [Float]
    }

    /// A LAPACK routine reported failure (`info` ≠ 0).
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var routine: String
        public var info: Int32
        public var description: String {
            if routine == "svd" { return "the matrix is too large for LAPACK's 32-bit sizes (more than 2³¹ − 1 elements)" }
            return info > 0 ? "\(routine) did not converge (info \(info))" : "\(routine) rejected argument \(-info)"
        }
    }

    /// Extra sketch columns beyond the rank for the randomized path.
    public static let oversampling = 10
    /// Power iterations of the randomized path (each sharpens a slowly decaying spectrum).
    public static let powerIterations = 2

    /// True when `auto` picks the randomized path for rank `rank` of an `m × n` matrix:
    /// when its sketch is at most a quarter of the smaller side.
    public static func prefersRandomized(m: Int, n: Int, rank: Int) -> Bool {
        (rank + oversampling) * 4 <= min(m, n)
    }

    /// Largest side LAPACK's 32-bit interface takes, and the largest element count the
    /// work buffers may reach, so every size handed to it fits in `Int32`.
    static func checkSize(m: Int, n: Int) throws(Failure) {
        guard m > 0, n > 0, m <= Int(Int32.max), n <= Int(Int32.max),
              case (let mn, false) = m.multipliedReportingOverflow(by: n), mn <= Int(Int32.max) else {
            throw Failure(routine: "svd", info: -1)
        }
    }

    /// The exact thin SVD of the row-major `m × n` matrix `a`, truncated to `rank`
    /// (≤ min(m, n)); `rank` nil keeps `chooseRank(spectrum)` triples, the spectrum being all of them.
    public static func exact(_ a: [Float], m: Int, n: Int, rank: Int?,
                             chooseRank: ([Float]) -> Int = { $0.count }) throws(Failure) -> Factors {
        try checkSize(m: m, n: n)
        precondition(a.count == m * n, "matrix holds \(a.count) values, not \(m)×\(n)")
        let full = try thinSVD(columnMajor: a, rows: n, columns: m)
        // Of Aᵀ = U'·S·V'ᵀ: A's U is V' (the `vt` buffer read row-major, m × mn), A's Vᵀ is U'ᵀ (the `u` buffer, mn × n).
        let mn = min(m, n)
        let k = min(mn, max(0, rank ?? chooseRank(full.s)))
        var u = [Float](repeating: 0, count: m * k)
        for row in 0..<m {
            for c in 0..<k { u[row * k + c] = full.vt[row * mn + c] }
        }
        return Factors(m: m, n: n, rank: k, u: u, s: Array(full.s.prefix(k)), vt: Array(full.u.prefix(k * n)), spectrum: full.s)
    }

    /// A rank-`rank` decomposition by the randomized range finder: Y = A·Ω for an
    /// `n × (rank + oversampling)` test matrix Ω, `powerIterations` rounds of
    /// Q ← qr(Aᵀ·Q), Q ← qr(A·Q), then the exact SVD of the small Qᵀ·A.
    public static func randomized(_ a: [Float], m: Int, n: Int, rank: Int, random: CounterRandom) throws(Failure) -> Factors {
        try checkSize(m: m, n: n)
        precondition(a.count == m * n, "matrix holds \(a.count) values, not \(m)×\(n)")
        let mn = min(m, n)
        precondition(rank >= 1 && rank <= mn, "rank \(rank) outside 1…\(mn)")
        let l = min(mn, rank + oversampling)
        var at = a  // column-major n × m: Aᵀ
        // Ω, column-major n × l, entries uniform in (−½, ½).
        var omega = [Float](repeating: 0, count: n * l)
        for i in 0..<omega.count { omega[i] = random.uniform(i) - 0.5 + 0x1p-17 }
        var q = [Float](repeating: 0, count: m * l)   // column-major m × l
        var z = [Float](repeating: 0, count: n * l)   // column-major n × l
        // q = A·Ω = (Aᵀ)ᵀ·Ω
        gemm(transA: true, m: m, n: l, k: n, a: &at, lda: n, b: &omega, ldb: n, c: &q, ldc: m)
        try orthonormalize(&q, rows: m, columns: l)
        for _ in 0..<powerIterations {
            gemm(transA: false, m: n, n: l, k: m, a: &at, lda: n, b: &q, ldb: m, c: &z, ldc: n)   // z = Aᵀ·q
            try orthonormalize(&z, rows: n, columns: l)
            gemm(transA: true, m: m, n: l, k: n, a: &at, lda: n, b: &z, ldb: n, c: &q, ldc: m)    // q = A·z
            try orthonormalize(&q, rows: m, columns: l)
        }
        // Bᵀ = Aᵀ·Q (n × l); Bᵀ = U_b·S·V_bᵀ gives A ≈ Q·B = (Q·V_b)·S·U_bᵀ.
        gemm(transA: false, m: n, n: l, k: m, a: &at, lda: n, b: &q, ldb: m, c: &z, ldc: n)
        let small = try thinSVD(columnMajor: z, rows: n, columns: l)
        // A's Vᵀ: U_bᵀ, i.e. the `u` buffer (column-major n × l) read row-major, first `rank` rows.
        let vt = Array(small.u.prefix(rank * n))
        // A's U = Q·V_b = Q·(small.vt)ᵀ, row-major m × rank: U[r][c] = Σ_j Q[r, j]·vt[c, j].
        var ucm = [Float](repeating: 0, count: m * l)  // column-major m × l
        var smallVT = small.vt
        gemm(transA: false, transB: true, m: m, n: l, k: l, a: &q, lda: m, b: &smallVT, ldb: l, c: &ucm, ldc: m)
        var u = [Float](repeating: 0, count: m * rank)
        for row in 0..<m {
            for c in 0..<rank { u[row * rank + c] = ucm[c * m + row] }
        }
        return Factors(m: m, n: n, rank: rank, u: u, s: Array(small.s.prefix(rank)), vt: vt, spectrum: small.s)
    }

    /// The thin SVD of the column-major `rows × columns` matrix `a` by `sgesdd`:
    /// `u` column-major rows × k, `s` (k = min), `vt` column-major k × columns.
    /// Bounds: every array handed to LAPACK is allocated here at the extent `sgesdd`
    /// documents for jobz = 'S' with these leading dimensions (a: lda·columns, u: ldu·k,
    /// vt: ldvt·columns, iwork: 8k, work: the size the query returned), so it writes only inside them.
    static func thinSVD(columnMajor a: [Float], rows: Int, columns: Int) throws(Failure) -> (u: [Float], s: [Float], vt: [Float]) {
        let k = min(rows, columns)
        var work = a
        var s = [Float](repeating: 0, count: k)
        var u = [Float](repeating: 0, count: rows * k)
        var vt = [Float](repeating: 0, count: k * columns)
        var iwork = [Int32](repeating: 0, count: 8 * k)
        var jobz = CChar(UInt8(ascii: "S"))
        var m32 = Int32(rows), n32 = Int32(columns), lda = Int32(max(1, rows)), ldu = Int32(max(1, rows)), ldvt = Int32(max(1, k))
        var info: Int32 = 0
        var query: Float = 0
        var lwork: Int32 = -1
        sgesdd_(&jobz, &m32, &n32, &work, &lda, &s, &u, &ldu, &vt, &ldvt, &query, &lwork, &iwork, &info)
        guard info == 0 else { throw Failure(routine: "sgesdd", info: info) }
        // The size query answers in a Float; rounded up so a value just below an integer is not cut short.
        let size = Int(query.rounded(.up)) + 1
        guard size <= Int(Int32.max) else { throw Failure(routine: "sgesdd", info: -12) }
        var buffer = [Float](repeating: 0, count: size)
        lwork = Int32(size)
        sgesdd_(&jobz, &m32, &n32, &work, &lda, &s, &u, &ldu, &vt, &ldvt, &buffer, &lwork, &iwork, &info)
        guard info == 0 else { throw Failure(routine: "sgesdd", info: info) }
        return (u, s, vt)
    }

    /// Replaces the column-major `rows × columns` matrix (rows ≥ columns) by the Q of its QR factorization.
    /// Bounds: `a` holds rows·columns values (lda = rows), `tau` columns, `work` at least the
    /// size each query returned: the extents `sgeqrf` and `sorgqr` document.
    static func orthonormalize(_ a: inout [Float], rows: Int, columns: Int) throws(Failure) {
        precondition(rows >= columns && a.count >= rows * columns, "QR of a \(rows)×\(columns) matrix in \(a.count) values")
        var m32 = Int32(rows), n32 = Int32(columns), lda = Int32(rows)
        var tau = [Float](repeating: 0, count: columns)
        var info: Int32 = 0
        var query: Float = 0
        var lwork: Int32 = -1
        sgeqrf_(&m32, &n32, &a, &lda, &tau, &query, &lwork, &info)
        guard info == 0 else { throw Failure(routine: "sgeqrf", info: info) }
        var size = Int(query.rounded(.up)) + 1
        var buffer = [Float](repeating: 0, count: size)
        lwork = Int32(size)
        sgeqrf_(&m32, &n32, &a, &lda, &tau, &buffer, &lwork, &info)
        guard info == 0 else { throw Failure(routine: "sgeqrf", info: info) }
        lwork = -1
        sorgqr_(&m32, &n32, &n32, &a, &lda, &tau, &query, &lwork, &info)
        guard info == 0 else { throw Failure(routine: "sorgqr", info: info) }
        size = Int(query.rounded(.up)) + 1
        if size > buffer.count { buffer = [Float](repeating: 0, count: size) }
        lwork = Int32(buffer.count)
        sorgqr_(&m32, &n32, &n32, &a, &lda, &tau, &buffer, &lwork, &info)
        guard info == 0 else { throw Failure(routine: "sorgqr", info: info) }
    }

    /// C = op(A)·op(B), column-major. Arrays are passed whole (`inout`), each sized by
    /// its caller for the shapes given, which the preconditions restate so OpenBLAS
    /// reads and writes only inside them.
    static func gemm(transA: Bool, transB: Bool = false, m: Int, n: Int, k: Int, a: inout [Float], lda: Int,
                     b: inout [Float], ldb: Int, c: inout [Float], ldc: Int) {
        precondition(a.count >= (transA ? m : k) * lda && b.count >= (transB ? k : n) * ldb && c.count >= n * ldc,
                     "product operands too small")
        cblas_sgemm(CblasColMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, &a, Int32(lda), &b, Int32(ldb), 0, &c, Int32(ldc))
    }

    /// The smallest rank k ≥ 1 whose leading singular values hold at least `share` of
    /// the energy Σ s², all of `spectrum` (descending) counting; 1 for a zero matrix.
    public static func rank(forEnergy share: Double, spectrum: [Float]) -> Int {
        let total = spectrum.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard total > 0 else { return 1 }
        var sum = 0.0
        for (i, value) in spectrum.enumerated() {
            sum += Double(value) * Double(value)
            if sum >= share * total { return i + 1 }
        }
        return spectrum.count
    }
}
