import COpenBLAS

/// Rows of a LoRA product δ = scale·B·A (or its transpose), through OpenBLAS's
/// `cblas_sgemm`, and the same in a plain loop the tests compare it with.
///
/// A is stored r × in and B out × r, row-major. δ is out × in; transposed, in × out.
public enum LoRAProduct {
    /// The dimensions of one product.
    public struct Geometry: Sendable, Hashable {
        public var rank: Int
        public var inFeatures: Int
        public var outFeatures: Int
        public var scale: Float
        public var transposed: Bool

        public init(rank: Int, inFeatures: Int, outFeatures: Int, scale: Float, transposed: Bool) {
            self.rank = rank
            self.inFeatures = inFeatures
            self.outFeatures = outFeatures
            self.scale = scale
            self.transposed = transposed
        }

        /// δ's rows and columns.
        public var rows: Int { transposed ? inFeatures : outFeatures }
        public var columns: Int { transposed ? outFeatures : inFeatures }
    }

    /// Rows `rows` of δ into `c` (`rows.count × columns`, row-major).
    ///
    /// Bounds: the preconditions check that A holds r·in floats, B out·r, C the rows asked
    /// for and the rows lie in δ; OpenBLAS then reads A and B and writes C only inside
    /// those extents (leading dimensions are the stored row lengths). Dimensions past
    /// Int32 go to the plain loop.
    public static func rows(_ rows: Range<Int>, of g: Geometry, a: UnsafeBufferPointer<Float>,
                            b: UnsafeBufferPointer<Float>, into c: UnsafeMutableBufferPointer<Float>)
    {
        check(rows, g, a, b, c)
        guard !rows.isEmpty, g.columns > 0 else { return }
        guard g.rank > 0 else {
            for i in 0..<(rows.count * g.columns) { c[i] = 0 }
            return
        }
        guard let m = Int32(exactly: rows.count), let k = Int32(exactly: g.rank), let inF = Int32(exactly: g.inFeatures),
              let outF = Int32(exactly: g.outFeatures)
        else {
            referenceRows(rows, of: g, a: a, b: b, into: c)
            return
        }
        if g.transposed {
            // C[i, o] = scale·Σₖ A[k, i]·B[o, k]: op(A) = columns `rows` of A transposed, op(B) = Bᵀ.
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, m, outF, k, g.scale,
                        a.baseAddress! + rows.lowerBound, inF, b.baseAddress!, k, 0, c.baseAddress!, outF)
        } else {
            // C[o, i] = scale·Σₖ B[o, k]·A[k, i]: rows `rows` of B times A.
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, inF, k, g.scale,
                        b.baseAddress! + rows.lowerBound * g.rank, k, a.baseAddress!, inF, 0, c.baseAddress!, inF)
        }
    }

    /// Sets OpenBLAS to one thread and returns the count to restore (`restoreThreads`).
    /// Products of adapter inputs run inside a merge's own workers, one per core: OpenBLAS's
    /// threads on top of them oversubscribe the cores and spin (docs/lora.md, Speed: 4–6 s
    /// of system time in a bench merge against about 1 s with one thread).
    public static func useOneThread() -> Int32 {
        let previous = openblas_get_num_threads()
        openblas_set_num_threads(1)
        return previous
    }

    /// Restores the OpenBLAS thread count `useOneThread` returned.
    public static func restoreThreads(_ count: Int32) { openblas_set_num_threads(count) }

    /// `rows` computed one entry at a time: the sum over k in order, then times the scale.
    public static func referenceRows(_ rows: Range<Int>, of g: Geometry, a: UnsafeBufferPointer<Float>,
                                     b: UnsafeBufferPointer<Float>, into c: UnsafeMutableBufferPointer<Float>)
    {
        check(rows, g, a, b, c)
        for (i, row) in rows.enumerated() {
            for column in 0..<g.columns {
                let (o, x) = g.transposed ? (column, row) : (row, column)
                var sum: Float = 0
                for k in 0..<g.rank { sum += b[o * g.rank + k] * a[k * g.inFeatures + x] }
                c[i * g.columns + column] = sum * g.scale
            }
        }
    }

    private static func check(_ rows: Range<Int>, _ g: Geometry, _ a: UnsafeBufferPointer<Float>,
                              _ b: UnsafeBufferPointer<Float>, _ c: UnsafeMutableBufferPointer<Float>)
    {
        precondition(g.rank >= 0 && g.inFeatures >= 0 && g.outFeatures >= 0, "negative LoRA dimensions")
        precondition(a.count >= g.rank * g.inFeatures && b.count >= g.outFeatures * g.rank
                     && rows.lowerBound >= 0 && rows.upperBound <= g.rows && c.count >= rows.count * g.columns,
                     "LoRA operands too small for rows \(rows) of \(g)")
        precondition(g.rank == 0 || g.inFeatures == 0 || g.outFeatures == 0
                     || (a.baseAddress != nil && b.baseAddress != nil && c.baseAddress != nil), "LoRA operands missing")
    }
}
