/// Model Stock: the base and the models' average blended by a factor from the angles
/// between the task vectors, per tensor (statistics summed chunk by chunk, in chunk
/// order) or, `filter_wise`, per row.
struct ModelStockKernel: MergeKernel {
    func check(_ plan: MergePlan) throws(MergeError) {
        if plan.contributingModels.count < 2 { throw .badPlan("model_stock needs at least two models besides the base") }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .modelStock(filterWise: value("filter_wise", nil, 0) != 0)
    }

    func rowLength(of job: MergeJob) -> Int {
        if case .modelStock(filterWise: true) = job.parameters { return job.rowLength }
        return 1
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .modelStock(let filterWise) = job.parameters else { preconditionFailure("not a model_stock job") }
        let decoder = executor.decoder
        let n = job.inputs.count
        func decodeAll(_ s: WorkerScratch, _ range: Range<Int>) throws -> (UnsafeBufferPointer<Float>, [UnsafeBufferPointer<Float>]) {
            try decoder.decodeBase(job, range, s)
            return (s.baseEntries(range.count), try decoder.decodeModels(job, range, s))
        }
        // Per row, chunks hold whole rows; per tensor, one factor from every chunk's statistics.
        var tensorFactor: Float?
        if !filterWise {
            let stats = try executor.sum(job, from: ModelStockStatistics(models: n), adding: { $0.absorb($1) }) { s, _, range in
                let (base, models) = try decodeAll(s, range)
                var stats = ModelStockStatistics(models: n)
                stats.accumulate(base: base, models: models, in: job.computeType)
                return stats
            }
            tensorFactor = stats.interpolationFactor(in: job.computeType)
        }
        let row = filterWise ? job.rowLength : Int.max
        try executor.write(job, into: bytes) { s, _, range in
            let (base, models) = try decodeAll(s, range)
            var start = 0
            while start < range.count {
                let span = start..<(range.count - start <= row ? range.count : start + row)
                let b = UnsafeBufferPointer(rebasing: base[span])
                let x = models.map { UnsafeBufferPointer(rebasing: $0[span]) }
                var t = tensorFactor ?? 0
                if tensorFactor == nil {
                    var stats = ModelStockStatistics(models: n)
                    stats.accumulate(base: b, models: x, in: job.computeType)
                    t = stats.interpolationFactor(in: job.computeType)
                }
                let out = UnsafeMutableBufferPointer(rebasing: s.out[span])
                switch job.computeType {
                case .bf16: ModelStockStatistics.blend(BFloat16Arithmetic.self, base: b, models: x, t: t, into: out)
                case .f16: ModelStockStatistics.blend(Float16Arithmetic.self, base: b, models: x, t: t, into: out)
                case .f32, .f64: ModelStockStatistics.blend(base: b, models: x, t: t, into: out)
                }
                start = span.upperBound
            }
        }
    }
}
