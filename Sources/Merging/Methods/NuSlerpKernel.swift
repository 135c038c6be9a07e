import Foundation

/// NuSLERP: SLERP between two models with t = w₁/(w₀ + w₁) (½ when |w₀ + w₁| < 1e-6),
/// on the models themselves or, given a base, on their task vectors δᵢ = θᵢ − θ₀ with
/// the base added back. The vectors paired up are the whole tensor (`nuslerp_flatten`,
/// the default), else each row (the last axis) or, with `nuslerp_row_wise`, each
/// vector along the first axis (a column of a matrix).
struct NuSlerpKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {
        let models = plan.contributingModels
        guard models.count == 2 else {
            let besides = plan.usesBaseAsReference ? " besides the base" : ""
            throw .badPlan("nuslerp needs exactly two models\(besides), not \(models.count)")
        }
        for model in models where model.parameters["weight"] == nil && plan.parameters["weight"] == nil {
            throw .badPlan("nuslerp needs a weight for each model (\(model.path) has none)")
        }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        let w0 = value("weight", models.first, 1), w1 = value("weight", models.dropFirst().first, 1)
        let total = w0 + w1
        return .nuslerp(t: Float(abs(total) < 1e-6 ? 0.5 : w1 / total), flatten: value("nuslerp_flatten", nil, 1) != 0,
                        rowWise: value("nuslerp_row_wise", nil, 0) != 0, onBase: plan.usesBaseAsReference)
    }

    /// The vectors of a tensor that are interpolated one by one.
    enum Vectors: Equatable {
        /// The whole tensor (also a 1-D tensor's row or column).
        case tensor
        /// Consecutive rows of `length` entries.
        case rows(length: Int)
        /// `count` vectors along the first axis: entry e belongs to vector e mod count.
        case columns(count: Int)
    }

    static func vectors(of job: MergeJob) -> Vectors {
        guard case .nuslerp(_, let flatten, let rowWise, _) = job.parameters, !flatten, job.shape.count >= 2,
              job.shape[0] > 0, job.elementCount > 0 else { return .tensor }
        return rowWise ? .columns(count: job.elementCount / job.shape[0]) : .rows(length: max(job.shape[job.shape.count - 1], 1))
    }

    func rowLength(of job: MergeJob) -> Int {
        if case .rows(let length) = Self.vectors(of: job) { return length }
        return 1
    }

    /// The pair (ca, cb) with SLERP(a, b; t) = ca·a + cb·b, from ‖a‖², ‖b‖² and a·b:
    /// cos θ = a·b / (max(‖a‖, 1e-7)·max(‖b‖, 1e-7)) clamped to [−1, 1]; colinear
    /// vectors (1 − cos²θ ≤ 1e-16) are interpolated linearly, (1 − t, t).
    static func coefficients(t: Float, _ sums: (aa: Double, bb: Double, ab: Double)) -> (Float, Float) {
        let norms = max(sums.aa.squareRoot(), 1e-7) * max(sums.bb.squareRoot(), 1e-7)
        let cosine = Float(min(max(sums.ab / norms, -1), 1))
        if 1 - cosine * cosine <= 1e-16 { return (1 - t, t) }
        let theta = acos(cosine)
        let s = sin(theta)
        return (sin((1 - t) * theta) / s, sin(t * theta) / s)
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .nuslerp(let t, _, _, let onBase) = job.parameters else { preconditionFailure("not a nuslerp job") }
        let chunks = executor.chunks, decoder = executor.decoder
        // Entries `range` of the two vectors: the task vectors (the base in s.base) or the models.
        func load(_ s: WorkerScratch, _ range: Range<Int>) throws -> [UnsafeBufferPointer<Float>] {
            if onBase { return try executor.deltas(job, range, s).map(UnsafeBufferPointer.init) }
            for m in 0..<2 { try decoder.decode(job.inputs[m], range, into: s.inputs[m], staging: s.staging) }
            return (0..<2).map { UnsafeBufferPointer(s.input($0, range.count)) }
        }
        // The final pass: `blend` writes each chunk's interpolation of the vectors a and b
        // (entries `range`) into `out`; the base is added back.
        func write(_ blend: (_ a: UnsafeBufferPointer<Float>, _ b: UnsafeBufferPointer<Float>, _ range: Range<Int>,
                             _ out: UnsafeMutableBufferPointer<Float>) -> Void) throws {
            try executor.write(job, into: bytes) { s, _, range in
                let x = try load(s, range)
                blend(x[0], x[1], range, s.output(range.count))
                if onBase { for i in 0..<range.count { s.out[i] += s.base[i] } }
            }
        }
        switch Self.vectors(of: job) {
        case .tensor:
            // Norms and dot product summed chunk by chunk, added in chunk order.
            let g = try GramMatrix.sum(job, count: 2, on: executor, load)
            let (ca, cb) = Self.coefficients(t: t, (g[0, 0], g[1, 1], g[0, 1]))
            try write { a, b, _, out in Interpolation.blend(a, b, ca, cb, into: out) }
        case .rows(let length):
            // Chunks hold whole rows: each row's sums and blend within one chunk.
            try write { a, b, range, out in
                for start in stride(from: 0, to: range.count, by: length) {
                    let span = start..<min(range.count, start + length)
                    let x = UnsafeBufferPointer(rebasing: a[span]), y = UnsafeBufferPointer(rebasing: b[span])
                    let (ca, cb) = Self.coefficients(t: t, Interpolation.slerpSums(x, y))
                    Interpolation.blend(x, y, ca, cb, into: UnsafeMutableBufferPointer(rebasing: out[span]))
                }
            }
        case .columns(let count):
            // Each column's sums run over the rows in row order, whatever the thread
            // count: each task sums one block of columns over every row. Block widths
            // are multiples of 256 (or whole rows), so quantized rows are read in whole
            // blocks.
            let rows = job.elementCount / count
            let width = min(count, 1024, chunks.chunkSize(for: job))
            let sums = ChunkResults(count: count, initial: (aa: 0.0, bb: 0.0, ab: 0.0))
            try chunks.forEach(count: (count + width - 1) / width) { s, k in
                let columns = (k * width)..<min(count, (k + 1) * width)
                var aa = [Double](repeating: 0, count: columns.count), bb = aa, ab = aa
                for r in 0..<rows {
                    let x = try load(s, (r * count + columns.lowerBound)..<(r * count + columns.upperBound))
                    for j in 0..<columns.count {
                        let a = Double(x[0][j]), b = Double(x[1][j])
                        aa[j] += a * a
                        bb[j] += b * b
                        ab[j] += a * b
                    }
                }
                for (j, column) in columns.enumerated() { sums[column] = (aa[j], bb[j], ab[j]) }
            }
            var ca = [Float](repeating: 0, count: count), cb = ca
            for j in 0..<count { (ca[j], cb[j]) = Self.coefficients(t: t, sums[j]) }
            try write { a, b, range, out in
                var j = range.lowerBound % count
                for i in 0..<range.count {
                    out[i] = ca[j] * a[i] + cb[j] * b[i]
                    j = j + 1 == count ? 0 : j + 1
                }
            }
        }
    }
}
