import Checkpoints
import COpenBLAS
import Foundation

/// Extracts a LoRA adapter from a fine-tuned checkpoint and its base: for each
/// targeted 2-D linear weight, δ = fine-tuned − base (Float32) is decomposed by a
/// truncated SVD δ ≈ U_r·S_r·V_rᵀ and stored as lora_B = U_r·√S_r, lora_A = √S_r·V_rᵀ,
/// with scale α/r = 1 (`LoRAAdapterWriter`).
///
/// √S goes on both sides, as mergekit's extractor does by default: both factors then
/// have the same magnitudes, so rounding them to bf16/f16 costs each the same relative
/// precision, and adapters from the two tools compare factor by factor.
///
/// Embeddings (`embed_tokens`, `lm_head`, …) and norms are stored whole as
/// `modules_to_save`, or left out, by option; so are the biases of decomposed modules
/// that differ from the base's (Qwen2's q/k/v_proj), stored as PEFT's trained biases
/// (`<module>.base_layer.bias` with `bias: "lora_only"`), which PEFT loads in place of
/// the base's. Every problem with the inputs is found
/// before the first decomposition; the adapter's tensors are held in memory (their
/// size is the adapter's) and written at the end, so nothing appears on error.
public enum LoRAExtraction {
    /// What to do with a kind of module LoRA does not decompose.
    public enum WholeModules: String, Sendable, CaseIterable {
        /// Stored whole, listed in `modules_to_save`.
        case save
        /// Left out of the adapter (the base's values are used).
        case skip
    }

    /// Module names (the last component before `.weight`) treated as embeddings.
    public static let embeddingNames: Set<String> = ["embed_tokens", "lm_head", "wte", "wpe", "embed_in", "embed_out", "word_embeddings"]

    public struct Options: Sendable {
        /// The rank of every module; with `energy`, the largest rank allowed (nil: no limit).
        public var rank: Int?
        /// Each module's rank is the smallest whose singular values hold this share of ‖δ‖² (0, 1].
        public var energy: Double?
        /// The linear modules to decompose by last name component (`q_proj`, …); nil: every 2-D weight that is not an embedding.
        public var targets: [String]?
        public var embeddings: WholeModules = .save
        public var norms: WholeModules = .save
        /// Biases of decomposed modules that differ from the base's.
        public var biases: WholeModules = .save
        public var algorithm: TruncatedSVD.Algorithm = .auto
        public var seed: UInt64 = 0
        /// The factors' type; nil: each weight's own type when it is F32, F16 or BF16, else F32.
        public var dtype: DType?
        public var baseName: String?
        public var overwrite = false
        public var followSymlinks = false
        public var workers = ProcessInfo.processInfo.activeProcessorCount

        public init(rank: Int?, energy: Double? = nil) {
            self.rank = rank
            self.energy = energy
        }
    }

    /// One decomposed module.
    public struct ModuleReport: Sendable, Equatable {
        public var name: String
        public var outFeatures: Int
        public var inFeatures: Int
        public var rank: Int
        /// ‖δ − B·A‖_F / ‖δ‖_F with the factors as stored (0 when δ = 0).
        public var relativeError: Double
        /// True when the randomized path computed it.
        public var randomized: Bool
    }

    /// What an extraction wrote.
    public struct Summary: Sendable {
        public var modules: [ModuleReport]
        /// Tensors stored whole (changed biases of decomposed modules included).
        public var saved: [String]
        /// Tensors that differ from the base but are not in the adapter.
        public var leftOut: [String]
    }

    /// A tensor's module (its name without `.weight`) and that module's last name component.
    static func module(of name: String) -> (module: String, kind: String)? {
        guard name.hasSuffix(".weight") else { return nil }
        let module = String(name.dropLast(".weight".count))
        let kind = module.split(separator: ".").last.map(String.init) ?? module
        return (module, kind)
    }

    /// The module kind of a saved tensor (`…input_layernorm.weight` → `input_layernorm`), any suffix.
    static func kind(ofTensor name: String) -> String? {
        let parts = name.split(separator: ".")
        return parts.count >= 2 ? String(parts[parts.count - 2]) : nil
    }

    private struct Job: Sendable {
        var module: String
        var tuned: TensorEntry
        var base: TensorEntry
        var dtype: DType
    }

    private struct Result: Sendable {
        var report: ModuleReport
        var a: [UInt8]
        var b: [UInt8]
    }

    /// Writes the adapter of `tuned` against `base` to the folder `output`.
    public static func extract(tuned tunedPath: String, base basePath: String, output: String, options: Options,
                               progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) throws -> Summary {
        if let rank = options.rank, rank <= 0 {
            throw MergeError.badParameter(name: "rank", problem: "must be at least 1, got \(rank)")
        }
        if let energy = options.energy, !(energy > 0 && energy <= 1) {
            throw MergeError.badParameter(name: "energy", problem: "must be in (0, 1], got \(energy)")
        }
        guard options.rank != nil || options.energy != nil else {
            throw MergeError.badParameter(name: "rank", problem: "give a rank or an energy share")
        }
        if options.energy != nil && options.algorithm == .randomized {
            throw MergeError.badParameter(name: "energy", problem: "needs every singular value, so the exact SVD; drop --svd randomized")
        }
        if let dtype = options.dtype, ![.f32, .f16, .bf16].contains(dtype) {
            throw MergeError.badParameter(name: "dtype", problem: "the factors are written as F32, F16 or BF16, not \(dtype)")
        }
        let tuned = try Checkpoint.open(tunedPath, followSymlinks: options.followSymlinks)
        let base = try Checkpoint.open(basePath, followSymlinks: options.followSymlinks)
        // PEFT names modules as transformers does; GGUF tensors are named and laid out otherwise.
        for (checkpoint, path) in [(tuned, tunedPath), (base, basePath)] where checkpoint.format == .gguf {
            throw MergeError.badPlan("\(path): a LoRA adapter names Hugging Face modules; convert the GGUF file to a model folder first (merge-tool convert)")
        }

        // Plan: which tensors are decomposed, saved whole, or left out.
        var jobs: [Job] = []
        var savedKinds: [String] = []
        var problems: [String] = []
        var wanted = options.targets.map(Set.init)
        let targetSet = wanted
        for t in tuned.tensors {
            guard let (module, kind) = module(of: t.name) else { continue }
            if embeddingNames.contains(kind) {
                if options.embeddings == .save && !savedKinds.contains(kind) { savedKinds.append(kind) }
                continue
            }
            if t.shape.count == 1 && kind.lowercased().contains("norm") {
                if options.norms == .save && !savedKinds.contains(kind) { savedKinds.append(kind) }
                continue
            }
            guard t.shape.count == 2, targetSet?.contains(kind) ?? true else { continue }
            wanted?.remove(kind)
            guard let b = base.tensor(named: t.name) else {
                problems.append("tensor '\(t.name)' is missing from the base")
                continue
            }
            guard b.shape == t.shape else {
                problems.append("tensor '\(t.name)' has shape \(t.shape) in the fine-tune but \(b.shape) in the base")
                continue
            }
            guard t.dtype.isFloatingPoint && t.dtype.isDecodable && b.dtype.isFloatingPoint && b.dtype.isDecodable else {
                problems.append("tensor '\(t.name)' is \(t.dtype) (base \(b.dtype)), not a floating-point weight")
                continue
            }
            jobs.append(Job(module: module, tuned: t, base: b,
                            dtype: options.dtype ?? ([.f32, .f16, .bf16].contains(t.dtype) ? t.dtype : .f32)))
        }
        // A linear weight of the base the fine-tune lacks cannot be decomposed either.
        let tunedNames = Set(tuned.tensors.map(\.name))
        for b in base.tensors where !tunedNames.contains(b.name) && b.shape.count == 2 {
            guard let (_, kind) = module(of: b.name), !embeddingNames.contains(kind), targetSet?.contains(kind) ?? true else { continue }
            problems.append("tensor '\(b.name)' of the base is missing from the fine-tune")
        }
        guard problems.isEmpty else { throw MergeError.incompatibleInputs(base: basePath, problems: problems) }
        if let wanted, let missing = wanted.sorted().first {
            throw MergeError.badParameter(name: "target-modules", problem: "no 2-D weight of \(tunedPath) belongs to a module named '\(missing)'")
        }
        let savedTensors = tuned.tensors.filter { t in kind(ofTensor: t.name).map(savedKinds.contains) ?? false }
        // A decomposed module's bias that the fine-tune changed; PEFT replaces the base
        // layer's bias with it. One the base lacks, or of another shape or type, cannot be
        // loaded in its place and is left out (named in the warning).
        var biases: [TensorEntry] = []
        if options.biases == .save {
            for job in jobs {
                guard let t = tuned.tensor(named: job.module + ".bias"), let b = base.tensor(named: t.name),
                      b.shape == t.shape, b.dtype == t.dtype, t.dtype.isFloatingPoint
                else { continue }
                if !tuned.data(of: t).elementsEqual(base.data(of: b)) { biases.append(t) }
            }
        }
        if let t = (savedTensors + biases).first(where: { !$0.dtype.isSafetensorsType }) {
            throw CheckpointError.conversion(file: tunedPath, problem: .unsupportedType(
                "\(t.dtype) (tensor '\(t.name)') in a safetensors adapter; convert to a float type first"))
        }
        guard !jobs.isEmpty || !savedTensors.isEmpty else {
            throw MergeError.badPlan("\(tunedPath): no linear weight to decompose and nothing to save")
        }
        if options.energy == nil, let rank = options.rank {
            for job in jobs where rank > min(job.tuned.shape[0], job.tuned.shape[1]) {
                throw MergeError.badParameter(name: "rank", problem: "\(rank) exceeds min(out, in) = \(min(job.tuned.shape[0], job.tuned.shape[1])) of '\(job.module)' (\(job.tuned.shape[0])×\(job.tuned.shape[1]))")
            }
        }

        let dtype = jobs.first?.dtype ?? .f32
        guard Set(jobs.map(\.dtype)).count <= 1 else {
            throw MergeError.badPlan("\(tunedPath): the weights have several types; choose the factors' type with --dtype")
        }

        // Decompose, one module per worker; OpenBLAS runs single-threaded inside each
        // so results do not depend on its thread count.
        let previousThreads = LoRAProduct.useOneThread()
        defer { LoRAProduct.restoreThreads(previousThreads) }
        let planned = jobs
        let results = try WorkerQueue.map(count: planned.count, workers: options.workers,
                                          progress: { progress($0, planned.count) }) { (_, i) throws(MergeError) -> Result in
            let job = planned[i]
            defer {
                tuned.release(job.tuned)
                base.release(job.base)
            }
            return try decompose(job, tuned: tuned, base: base, tunedPath: tunedPath, options: options)
        }

        // Write.
        let modules = results.map { LoRAAdapterWriter.Module(name: $0.report.name, outFeatures: $0.report.outFeatures,
                                                             inFeatures: $0.report.inFeatures, rank: $0.report.rank) }
        var targetKinds: [String] = []
        for job in jobs {
            let kind = module(of: job.tuned.name)!.kind
            if !targetKinds.contains(kind) { targetKinds.append(kind) }
        }
        let config = LoRAAdapterWriter.Config(baseModel: options.baseName ?? basePath, targetModules: targetKinds, modulesToSave: savedKinds,
                                              bias: biases.isEmpty ? .none : .loraOnly)
        let writer = try LoRAAdapterWriter(folder: output, modules: modules,
                                           saved: savedTensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) },
                                           biases: biases.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) },
                                           dtype: dtype, config: config, overwrite: options.overwrite)
        do {
            for r in results {
                try r.a.withUnsafeBytes { a in
                    try r.b.withUnsafeBytes { b in try writer.writeFactors(module: r.report.name, a: a, b: b) }
                }
            }
            for t in savedTensors {
                try writer.writeSaved(tensor: t.name, bytes: tuned.data(of: t))
            }
            for t in biases {
                try writer.writeBias(tensor: t.name, bytes: tuned.data(of: t))
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        let savedNames = Set((savedTensors + biases).map(\.name))
        let decomposed = Set(jobs.map(\.tuned.name))
        var leftOut: [String] = []
        for t in tuned.tensors where !savedNames.contains(t.name) && !decomposed.contains(t.name) {
            guard let b = base.tensor(named: t.name), b.dtype == t.dtype, b.shape == t.shape else { leftOut.append(t.name); continue }
            if !tuned.data(of: t).elementsEqual(base.data(of: b)) { leftOut.append(t.name) }
        }
        return Summary(modules: results.map(\.report), saved: (savedTensors + biases).map(\.name), leftOut: leftOut)
    }

    /// δ of one module, its truncated SVD, the factors encoded in the output type and
    /// the error of the product of the stored factors.
    private static func decompose(_ job: Job, tuned: Checkpoint, base: Checkpoint, tunedPath: String,
                                  options: Options) throws(MergeError) -> Result {
        let m = job.tuned.shape[0], n = job.tuned.shape[1]
        var delta: [Float]
        do {
            delta = try tuned.decode(job.tuned)
            let b = try base.decode(job.base)
            for i in 0..<delta.count { delta[i] -= b[i] }
        } catch {
            throw .checkpoint(error)
        }
        var norm2 = 0.0
        for x in delta { norm2 += Double(x) * Double(x) }
        guard norm2.isFinite else {
            throw .badPlan("\(tunedPath): tensor '\(job.tuned.name)': fine-tune minus base holds NaN or infinite values, which have no SVD")
        }
        let mn = min(m, n)
        let cap = min(options.rank ?? mn, mn)
        let randomized: Bool
        switch options.algorithm {
        case .exact: randomized = false
        case .randomized: randomized = true
        case .auto: randomized = options.energy == nil && TruncatedSVD.prefersRandomized(m: m, n: n, rank: cap)
        }
        let factors: TruncatedSVD.Factors
        do {
            if randomized {
                factors = try TruncatedSVD.randomized(delta, m: m, n: n, rank: cap,
                                                      random: CounterRandom(seed: options.seed, tensor: job.tuned.name, model: 0))
            } else if let energy = options.energy {
                factors = try TruncatedSVD.exact(delta, m: m, n: n, rank: nil) {
                    min(cap, TruncatedSVD.rank(forEnergy: energy, spectrum: $0))
                }
            } else {
                factors = try TruncatedSVD.exact(delta, m: m, n: n, rank: cap)
            }
        } catch {
            throw .badPlan("\(tunedPath): tensor '\(job.tuned.name)': \(error)")
        }
        let k = factors.rank
        // lora_B = U·√S (m × k), lora_A = √S·Vᵀ (k × n).
        var bValues = [Float](repeating: 0, count: m * k)
        var aValues = [Float](repeating: 0, count: k * n)
        for c in 0..<k {
            let root = factors.s[c].squareRoot()
            for row in 0..<m { bValues[row * k + c] = factors.u[row * k + c] * root }
            for col in 0..<n { aValues[c * n + col] = factors.vt[c * n + col] * root }
        }
        let aBytes: [UInt8], bBytes: [UInt8]
        do {
            (aBytes, aValues) = try encodeRounded(aValues, job.dtype)
            (bBytes, bValues) = try encodeRounded(bValues, job.dtype)
        } catch {
            throw .checkpoint(.codec(file: tunedPath, tensor: job.tuned.name, problem: error))
        }
        // δ − B·A with the stored factors, row-major: C = −B·A + δ. Bounds: B holds m·k
        // values (ld k), A k·n (ld n), δ m·n (ld n), exactly the extents of these shapes.
        precondition(bValues.count == m * k && aValues.count == k * n && delta.count == m * n, "factor sizes")
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), -1,
                    &bValues, Int32(max(1, k)), &aValues, Int32(n), 1, &delta, Int32(n))
        var residual2 = 0.0
        for x in delta { residual2 += Double(x) * Double(x) }
        let error = norm2 > 0 ? (residual2 / norm2).squareRoot() : 0
        return Result(report: ModuleReport(name: job.module, outFeatures: m, inFeatures: n, rank: k,
                                           relativeError: error, randomized: randomized),
                      a: aBytes, b: bBytes)
    }

    /// `values` encoded in `dtype`, and the values the encoding holds.
    private static func encodeRounded(_ values: [Float], _ dtype: DType) throws(CodecError) -> ([UInt8], [Float]) {
        var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: values.count) ?? 0)
        var rounded = [Float](repeating: 0, count: values.count)
        try bytes.withUnsafeMutableBufferPointer { (out) throws(CodecError) in
            let raw = UnsafeMutableRawBufferPointer(out)
            try values.withUnsafeBufferPointer { (v) throws(CodecError) in try ElementCodec.encode(dtype, from: v, into: raw) }
            try rounded.withUnsafeMutableBufferPointer { (r) throws(CodecError) in
                try ElementCodec.decode(dtype, from: UnsafeRawBufferPointer(raw), into: r)
            }
        }
        return (bytes, rounded)
    }
}
