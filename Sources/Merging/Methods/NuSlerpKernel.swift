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
        func load(_ s: WorkerScratch, _ range: Range<Int>) throws -> (UnsafeBufferPointer<Float>, UnsafeBufferPointer<Float>) {
            if onBase {
                try decoder.decodeBase(job, range, s)
                try decoder.decodeDelta(job, 0, range, s)
                try decoder.decodeDelta(job, 1, range, s)
            } else {
                try decoder.decode(job.inputs[0], range, into: s.inputs[0])
                try decoder.decode(job.inputs[1], range, into: s.inputs[1])
            }
            return (UnsafeBufferPointer(rebasing: s.inputs[0][0..<range.count]),
                    UnsafeBufferPointer(rebasing: s.inputs[1][0..<range.count]))
        }
        // Adds the base back to the first `count` outputs.
        func addBase(_ s: WorkerScratch, _ count: Int) {
            guard onBase else { return }
            for i in 0..<count { s.out[i] += s.base[i] }
        }
        switch Self.vectors(of: job) {
        case .tensor:
            // Norms and dot product summed chunk by chunk, added in chunk order.
            let count = chunks.chunkCount(job)
            let partial = ChunkResults(count: count, initial: (aa: 0.0, bb: 0.0, ab: 0.0))
            try chunks.forEachChunk(job) { s, c, range in
                let (a, b) = try load(s, range)
                partial[c] = Interpolation.slerpSums(a, b)
            }
            var sums = (aa: 0.0, bb: 0.0, ab: 0.0)
            for c in 0..<count {
                sums.aa += partial[c].aa
                sums.bb += partial[c].bb
                sums.ab += partial[c].ab
            }
            let (ca, cb) = Self.coefficients(t: t, sums)
            try chunks.forEachChunk(job, writing: bytes) { s, _, range in
                let (a, b) = try load(s, range)
                Interpolation.blend(a, b, ca, cb, into: UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]))
                addBase(s, range.count)
                try decoder.store(job, range, s, into: bytes)
            }
        case .rows(let length):
            // Chunks hold whole rows: each row's sums and blend within one chunk.
            try chunks.forEachChunk(job, writing: bytes) { s, _, range in
                let (a, b) = try load(s, range)
                var start = 0
                while start < range.count {
                    let span = start..<min(range.count, start + length)
                    let (ca, cb) = Self.coefficients(
                        t: t, Interpolation.slerpSums(UnsafeBufferPointer(rebasing: a[span]), UnsafeBufferPointer(rebasing: b[span])))
                    Interpolation.blend(UnsafeBufferPointer(rebasing: a[span]), UnsafeBufferPointer(rebasing: b[span]), ca, cb,
                                        into: UnsafeMutableBufferPointer(rebasing: s.out[span]))
                    start = span.upperBound
                }
                addBase(s, range.count)
                try decoder.store(job, range, s, into: bytes)
            }
        case .columns(let count):
            // Each task sums a block of columns over every row, in row order, so no sum
            // depends on the thread count. Block widths are multiples of 256 (or whole
            // rows), so quantized rows are read in whole blocks.
            let rows = job.elementCount / count
            let width = min(count, 1024, chunks.chunkSize(for: job))
            let sums = ChunkResults(count: count, initial: (aa: 0.0, bb: 0.0, ab: 0.0))
            try chunks.forEach(count: (count + width - 1) / width) { s, k in
                let first = k * width, end = min(count, first + width)
                var aa = [Double](repeating: 0, count: end - first), bb = aa, ab = aa
                for r in 0..<rows {
                    let (a, b) = try load(s, (r * count + first)..<(r * count + end))
                    for j in 0..<a.count {
                        let x = Double(a[j]), y = Double(b[j])
                        aa[j] += x * x
                        bb[j] += y * y
                        ab[j] += x * y
                    }
                }
                for j in 0..<(end - first) { sums[first + j] = (aa[j], bb[j], ab[j]) }
            }
            var ca = [Float](repeating: 0, count: count), cb = ca
            for j in 0..<count { (ca[j], cb[j]) = Self.coefficients(t: t, sums[j]) }
            try chunks.forEachChunk(job, writing: bytes) { s, _, range in
                let (a, b) = try load(s, range)
                var j = range.lowerBound % count
                for i in 0..<range.count {
                    s.out[i] = ca[j] * a[i] + cb[j] * b[i]
                    j = j + 1 == count ? 0 : j + 1
                }
                addBase(s, range.count)
                try decoder.store(job, range, s, into: bytes)
            }
        }
    }
}
