/// The merge methods, by their mergekit names, and the one table that defines them:
/// each method's row names its kernel (the family that computes it) and its defaults.
/// A new method is a case here, its row in `entry`, and — for a new family — a kernel
/// in a file of its own.
@dynamicMemberLookup
public enum MergeMethod: String, Sendable, CaseIterable, CustomStringConvertible {
    case taskArithmetic = "task_arithmetic"
    case ties
    case dareTies = "dare_ties"
    case dareLinear = "dare_linear"
    case breadcrumbs
    case breadcrumbsTies = "breadcrumbs_ties"
    case della
    case dellaLinear = "della_linear"
    case linear
    case slerp
    case modelStock = "model_stock"
    case sce
    case nearswap
    case arceeFusion = "arcee_fusion"
    case ram
    case ramPlusTL = "ramplus_tl"
    case nuslerp
    case multislerp
    case karcher
    case passthrough

    /// This method's row of the table.
    public var entry: MethodEntry {
        switch self {
        case .taskArithmetic: .taskVectors(nil)
        case .ties: .taskVectors(.magnitude, consensus: .sum, normalize: true)
        case .dareTies: .taskVectors(.random, consensus: .sum, rescale: .l1)
        case .dareLinear: .taskVectors(.random, rescale: .l1)
        case .breadcrumbs: .taskVectors(.magnitudeOutliers)
        case .breadcrumbsTies: .taskVectors(.magnitudeOutliers, consensus: .sum)
        case .della: .taskVectors(.dellaMagprune, consensus: .sum, normalize: true, rescale: .l1)
        case .dellaLinear: .taskVectors(.dellaMagprune, rescale: .l1)
        case .linear: MethodEntry(kernel: LinearKernel(), parameterNames: ["weight", "normalize"], needsBase: false,
                                  defaultNormalize: true)
        case .slerp: MethodEntry(kernel: SlerpKernel(), parameterNames: ["t"])
        case .modelStock: MethodEntry(kernel: ModelStockKernel(), parameterNames: ["filter_wise"])
        case .sce: MethodEntry(kernel: SCEKernel(), parameterNames: ["select_topk", "int8_mask"])
        case .nearswap: MethodEntry(kernel: NearSwapKernel(), parameterNames: ["t"])
        case .arceeFusion: MethodEntry(kernel: ArceeFusionKernel(), parameterNames: [])
        case .ram: MethodEntry(kernel: RAMKernel(plus: false), parameterNames: ["epsilon"])
        case .ramPlusTL: MethodEntry(kernel: RAMKernel(plus: true), parameterNames: ["epsilon", "r", "alpha"])
        case .nuslerp: MethodEntry(kernel: NuSlerpKernel(), parameterNames: ["weight", "nuslerp_flatten", "nuslerp_row_wise"],
                                   needsBase: false, optionalBase: .reference)
        case .multislerp: MethodEntry(kernel: MultiSlerpKernel(), parameterNames: ["weight", "normalize_weights", "eps"],
                                      needsBase: false, optionalBase: .reference)
        case .karcher: MethodEntry(kernel: KarcherKernel(), parameterNames: ["max_iter", "tol"], needsBase: false, optionalBase: .input)
        case .passthrough: MethodEntry(kernel: PassthroughKernel(), parameterNames: ["scale"], needsBase: false)
        }
    }
}

/// One method's row: the kernel that computes it, the parameters it reads and its
/// defaults (the memberwise initializer gives each field's default).
public struct MethodEntry: Sendable {
    /// The family's kernel.
    let kernel: any MergeKernel
    /// The per-model and global parameter names the method reads.
    public let parameterNames: Set<String>
    /// True when the method needs a base model.
    public internal(set) var needsBase = true
    /// What a base given to a method that does not need one does.
    public internal(set) var optionalBase = OptionalBase.ignored
    /// The sparsifier applied to each task vector (nil: none, or not a task-vector method).
    public internal(set) var sparsifier: Sparsifier? = nil
    /// The default sign election (nil: deltas are added without one).
    public internal(set) var defaultConsensus: Consensus? = nil
    /// Whether weights are divided by their sum unless the recipe says otherwise.
    public internal(set) var defaultNormalize = false
    /// The rescale used unless the recipe says otherwise.
    public internal(set) var defaultRescale = Rescale.none
    /// True for the methods built on task vectors δᵢ = θᵢ − θ₀ and `Fusion`.
    public var fusesTaskVectors: Bool { kernel is TaskVectorKernel }

    /// A method of the task-vector family (δᵢ = θᵢ − θ₀, sparsified and fused).
    static func taskVectors(
        _ sparsifier: Sparsifier?, consensus: Consensus? = nil, normalize: Bool = false, rescale: Rescale = .none
    ) -> MethodEntry {
        var names: Set<String> = ["weight", "density", "lambda", "normalize", "rescale", "consensus", "int8_mask"]
        if sparsifier == .magnitudeOutliers { names.insert("gamma") }
        if sparsifier == .dellaMagprune { names.insert("epsilon") }
        return MethodEntry(kernel: TaskVectorKernel(sparsifier: sparsifier), parameterNames: names, sparsifier: sparsifier,
                           defaultConsensus: consensus, defaultNormalize: normalize, defaultRescale: rescale)
    }
}

/// How a method that does not need a base treats one the plan gives anyway.
public enum OptionalBase: Sendable {
    /// Not read (linear, passthrough).
    case ignored
    /// The models are taken relative to it (task vectors, the base added back), as
    /// by the methods that need one.
    case reference
    /// One more input after the listed models, unless it is listed among them.
    case input
}

extension MergeJob {
    /// A tensor's parameters, as its method's family reads them.
    public enum Parameters: Sendable {
        /// Copied or converted from the base: nothing to resolve.
        case none
        case taskVectors(TaskVectorParameters)
        case linear(weights: [Float], normalize: Bool)
        /// SLERP's interpolation factor.
        case slerp(t: Float)
        /// Model Stock per row instead of per tensor.
        case modelStock(filterWise: Bool)
        /// SCE's share of entries kept by their variance across the models.
        case sce(selectTopK: Double)
        /// NearSwap's closeness threshold.
        case nearswap(t: Float)
        /// Arcee Fusion reads no parameter.
        case arceeFusion
        /// RAM's change threshold ε, and RAM+'s r and α.
        case ram(epsilon: Float, r: Float, alpha: Float)
        /// One model's tensor times `scale`.
        case passthrough(scale: Float)
        /// NuSLERP's factor t = w₁/(w₀ + w₁), its vectors (the whole tensor unless not
        /// `flatten`: rows, or with `rowWise` vectors along the first axis) and whether
        /// the models are taken relative to the base.
        case nuslerp(t: Float, flatten: Bool, rowWise: Bool, onBase: Bool)
        /// Multi-SLERP's weights (divided by their sum when normalizing), ε and
        /// whether the models are taken relative to the base.
        case multislerp(weights: [Float], normalize: Bool, eps: Double, onBase: Bool)
        /// The Karcher mean's iteration limit and tolerance.
        case karcher(maxIterations: Int, tolerance: Double)
    }
}

/// A method family's computation: how it checks a plan, resolves its parameters for
/// one tensor and produces that tensor chunk by chunk on an executor.
protocol MergeKernel: Sendable {
    /// Checks what the family needs of a plan before any file is opened (model counts,
    /// required parameters).
    func check(_ plan: MergePlan) throws(MergeError)
    /// The family's parameters for one tensor; `value(name, model, default)` resolves
    /// a parameter for a contributing model (nil: the global value).
    func parameters(models: [ModelSpec], plan: MergePlan,
                    value: (String, ModelSpec?, Double) -> Double) -> MergeJob.Parameters
    /// Checks the values resolved for one tensor.
    func checkResolved(_ job: MergeJob, plan: MergePlan) throws(MergeError)
    /// Row length the kernel needs whole in a chunk (1: any split is fine).
    func rowLength(of job: MergeJob) -> Int
    /// Prepares a run of `executor` before its first tensor.
    func begin(on executor: MergeExecutor) throws
    /// Computes `job` into `bytes`, its encoded output: the final pass is
    /// `executor.write(job, into: bytes)`, which stores each chunk's `s.out`.
    func produce(_ job: MergeJob, on executor: MergeExecutor, into bytes: OutputWindows) throws
}

extension MergeKernel {
    func checkResolved(_ job: MergeJob, plan: MergePlan) throws(MergeError) {}
    func rowLength(of job: MergeJob) -> Int { 1 }
    func begin(on executor: MergeExecutor) throws {}
}
