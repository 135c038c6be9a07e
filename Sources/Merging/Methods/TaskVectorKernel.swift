/// The parameters of the task-vector family for one tensor.
public struct TaskVectorParameters: Sendable {
    /// Per contributing model.
    public let weights: [Float]
    public let densities: [Double]
    public let gammas: [Double]
    public let epsilons: [Double]
    /// Final scale of the fused delta.
    public let lambda: Float
    public let normalize: Bool
}

/// The task-vector family: each δᵢ = θᵢ − θ₀ thinned by the method's sparsifier,
/// weighed, rescaled, and fused with or without a sign election (`TaskVectorPasses`).
struct TaskVectorKernel: MergeKernel {
    let sparsifier: Sparsifier?

    func check(_ plan: MergePlan) throws(MergeError) {
        if plan.contributingModels.isEmpty { throw .badPlan("\(plan.method) needs at least one model besides the base") }
    }

    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters {
        .taskVectors(TaskVectorParameters(
            weights: models.map { Float(value("weight", $0, 1)) },
            densities: models.map { value("density", $0, 1) },
            gammas: models.map { value("gamma", $0, 0.01) },
            epsilons: models.map { value("epsilon", $0, 0.15) },
            lambda: Float(value("lambda", nil, 1)),
            normalize: value("normalize", nil, plan.method.defaultNormalize ? 1 : 0) != 0))
    }

    func checkResolved(_ job: MergeJob, plan: MergePlan) throws(MergeError) {
        guard case .taskVectors(let p) = job.parameters else { return }
        for (m, model) in plan.contributingModels.enumerated() {
            try plan.checkResolved(density: p.densities[m], epsilon: p.epsilons[m], model: model.path, tensor: job.name)
        }
    }

    /// DELLA ranks entries within rows, so its chunks hold whole rows.
    func rowLength(of job: MergeJob) -> Int { sparsifier == .dellaMagprune ? job.rowLength : 1 }

    /// Resets what the passes carry from tensor to tensor and, for `--trim global`,
    /// finds each model's window over all merged tensors before the first.
    func begin(on executor: MergeExecutor) throws {
        let merge = executor.merge
        let jobs = merge.jobs.filter { $0.kind == .merge }
        var densities = [Double](repeating: 1, count: merge.plan.contributingModels.count)
        if merge.plan.trim == .global, case .taskVectors(let p) = jobs.first?.parameters { densities = p.densities }
        executor.taskVectors.begin(
            globalWindows: try executor.windowSearch.globalWindows(jobs, densities: densities))
    }

    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws {
        guard case .taskVectors(let p) = job.parameters else { preconditionFailure("not a task-vector job") }
        try TaskVectorPasses(job: job, parameters: p, sparsifier: sparsifier, executor: executor).run(into: bytes)
    }
}

extension MergePlan {
    /// The checks that depend on the value a parameter takes for one tensor.
    func checkResolved(density d: Double, epsilon: Double, model: String, tensor: String) throws(MergeError) {
        guard let sparsifier = method.sparsifier else { return }
        if d < 0 { throw .badParameter(name: "density", problem: "\(formatNumber(d)) is negative (model \(model))") }
        if d >= 1 { return }
        if sparsifier == .dellaMagprune {
            guard epsilon >= 0, d - epsilon > 0, d + epsilon < 1 else {
                throw .badParameter(
                    name: "epsilon",
                    problem: "density ± epsilon must lie strictly inside (0, 1), got density \(formatNumber(d)) and epsilon \(formatNumber(epsilon)) for '\(tensor)' (model \(model))")
            }
        } else if d == 0, effectiveRescale == .inverse {
            throw .badParameter(name: "density", problem: "0 with --rescale inverse divides by zero (model \(model))")
        }
        // Inverse rescaling divides each kept entry by its keep probability.
        let smallestKeep = sparsifier == .dellaMagprune ? d - epsilon : d
        if effectiveRescale == .inverse, smallestKeep < ParameterRange.minimumInverseKeep {
            let what = sparsifier == .dellaMagprune ? "density − epsilon" : "density"
            throw .badParameter(
                name: "density",
                problem: "\(what) is \(formatNumber(smallestKeep)) for '\(tensor)' (model \(model)); --rescale inverse divides by it, so it must be at least \(formatNumber(ParameterRange.minimumInverseKeep))")
        }
    }
}
