#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One adapted module: the base tensor it changes and the factors of its δ = scale·B·A.
public struct LoRAModule: Sendable, Hashable {
    /// The module's name in the base model (`model.layers.0.self_attn.q_proj`).
    public let module: String
    /// The base tensor δ is added to.
    public let baseName: String
    /// `lora_A` (r × in) and `lora_B` (out × r), in the adapter's weights file.
    public let a: TensorEntry
    public let b: TensorEntry
    public let rank: Int
    /// α/r or α/√r, rounded to Float32 as PEFT's product is scaled.
    public let scale: Float
    /// True when the base stores the weight [in, out] (fan_in_fan_out, embeddings): δ = (scale·B·A)ᵀ.
    public let transposed: Bool
    /// δ's shape, the base tensor's: [out, in], or [in, out] when transposed.
    public let shape: [Int]
    /// Set when the base is a GGUF file storing the rows of this Q or K projection as
    /// interleaved pairs over this many heads: B's rows are read in that order, so δ is too.
    public let rowHeads: Int?

    /// Input and output features: A's columns and B's rows.
    public var inFeatures: Int { a.shape[1] }
    public var outFeatures: Int { b.shape[0] }
    /// Entries in one row of δ.
    public var columns: Int { shape[1] }
}

/// A PEFT LoRA adapter folder (`adapter_config.json` + `adapter_model.safetensors`),
/// opened against the base model it adapts, with every rule checked against the base's
/// tensors: each factor pair maps to a 2-D base tensor, A is r × in and B out × r with
/// the rank the config gives the module, and each whole tensor (modules_to_save)
/// replaces a base tensor of its shape. Opening decodes nothing; δ is computed on
/// demand, a range of rows at a time, from each module's factors decoded to Float32 the
/// first time they are asked for and kept (at most the adapter file's values, as Float32).
public final class LoRAAdapter: Sendable {
    /// The folder the adapter was opened from.
    public let path: String
    public let config: LoRAConfig
    /// The mapped `adapter_model.safetensors`.
    public let weights: Checkpoint
    /// Adapted modules in the order of their base tensors.
    public let modules: [LoRAModule]
    /// Whole tensors by the base name they replace: modules_to_save, and adapted layers'
    /// own weights saved beside their factors (δ is added to those).
    public let saved: [String: TensorEntry]
    private let moduleIndex: [String: Int]
    /// Factors decoded so far, by module index (a merge reads each module's many times).
    private let decoded = Locked<[Int: (a: [Float], b: [Float])]>([:])
    /// Row buffers of `delta` not in use: a call takes one and puts it back, so each of
    /// the merge's workers reuses a buffer instead of allocating one per chunk.
    private let workspaces = Locked<[[Float]]>([])

    public static let configName = "adapter_config.json"
    public static let weightsName = "adapter_model.safetensors"

    /// True when `path` is a folder holding `adapter_config.json`.
    public static func isAdapter(_ path: String) -> Bool {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { return false }
        return stat(folder(path) + "/" + configName, &info) == 0
    }

    private static func folder(_ path: String) -> String {
        path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
    }

    /// The module adapting base tensor `name`, if any.
    public func module(adapting name: String) -> LoRAModule? { moduleIndex[name].map { modules[$0] } }

    /// Opens the adapter at `path` for `base`. Files that are links leaving the folder
    /// are refused unless `followSymlinks`.
    public static func open(_ path: String, base: Checkpoint, followSymlinks: Bool = false) throws(CheckpointError) -> LoRAAdapter {
        let folder = folder(path)
        let configPath = try HFFolder.sideFile(configName, in: folder, followSymlinks: followSymlinks)
        let config: LoRAConfig
        let text = try InputFile.readAll(configPath, cap: LoRAConfig.maximumSize, what: "an adapter config")
        do {
            config = try LoRAConfig.parse(text)
        } catch {
            throw .adapter(file: configPath, problem: error.description)
        }
        let weightsPath = try HFFolder.sideFile(weightsName, in: folder, followSymlinks: followSymlinks)
        guard HFFolder.fileExists(weightsPath) else {
            throw .adapter(file: folder, problem: "no \(weightsName) (adapters saved as .bin are not read)")
        }
        let weights = try Checkpoint.open(weightsPath)
        func fail(_ problem: String) -> CheckpointError { .adapter(file: weightsPath, problem: problem) }

        // A GGUF base names its tensors as llama.cpp does, and for Llama and Mistral stores
        // the rows of Q and K as interleaved pairs per head: adapter names are mapped
        // through the family's table, and lora_B's rows permuted as the weight's are.
        var layout: (architecture: LlamaFamily.Architecture, heads: Int, kvHeads: Int)?
        if base.format == .gguf {
            guard let found = LlamaFamily.ggufAttention(base.metadata) else {
                throw .adapter(file: folder, problem: "\(base.path) is a GGUF file of no architecture whose tensor names Claire maps "
                               + "(llama, qwen2, with head counts); convert it to a model folder first (merge-tool convert)")
            }
            layout = found
        }
        /// The base's name for the Hugging Face tensor `name` (nil: a GGUF base has none).
        func baseTensorName(_ name: String) -> String? { layout == nil ? name : LlamaFamily.ggufName(forHF: name) }
        /// Heads over which a GGUF base permutes the rows of Hugging Face tensor `name`.
        func permutedHeads(_ name: String) -> Int? {
            layout.flatMap { LlamaFamily.permutedHeads(ofHF: name, architecture: $0.architecture, headCount: $0.heads, kvHeads: $0.kvHeads) }
        }
        func missing(_ what: String, _ name: String) -> CheckpointError {
            let mapped = baseTensorName(name).map { $0 == name ? "" : " ('\($0)' in GGUF)" } ?? " (no GGUF tensor of the Llama family)"
            return fail("\(what) '\(name)'\(mapped), which \(base.path) does not have")
        }

        var factors: [String: (a: TensorEntry?, b: TensorEntry?, embedding: Bool)] = [:]
        var saved: [String: TensorEntry] = [:]
        var layerBiases: [(tensor: String, module: String)] = []
        var plainBiases: [(tensor: String, module: String)] = []
        for t in weights.tensors {
            let role: PEFTNames.Role
            do { role = try PEFTNames.role(of: t.name) } catch { throw fail(error.description) }
            switch role {
            case .factor(let module, let factor, let embedding):
                var entry = factors[module] ?? (nil, nil, embedding)
                guard entry.embedding == embedding else { throw fail("module '\(module)' mixes embedding and linear factors") }
                if factor == .a { entry.a = t } else { entry.b = t }
                factors[module] = entry
            case .whole(let hfName):
                let inModuleToSave = config.modulesToSave.contains(where: { PEFTNames.tensor(hfName, isIn: $0) })
                if t.name.hasSuffix(PEFTNames.baseLayerBias) {
                    layerBiases.append((t.name, String(hfName.dropLast(".bias".count))))
                } else if hfName.hasSuffix(".bias") && config.bias == .all && !inModuleToSave {
                    plainBiases.append((t.name, String(hfName.dropLast(".bias".count))))
                } else {
                    guard t.name.hasSuffix(PEFTNames.baseLayerWeight) || inModuleToSave else {
                        throw fail("tensor '\(t.name)' is neither a LoRA factor nor part of a module in modules_to_save"
                                   + (hfName.hasSuffix(".bias") ? " (nor a bias of an adapter with bias \"all\")" : ""))
                    }
                }
                guard let baseName = baseTensorName(hfName), let b = base.tensor(named: baseName) else {
                    throw missing("tensor '\(t.name)' stands for", hfName)
                }
                guard t.shape == b.shape else {
                    throw fail("tensor '\(t.name)' has shape \(t.shape) but '\(baseName)' in the base has \(b.shape)")
                }
                guard t.dtype.isFloatingPoint, t.dtype.isDecodable, b.dtype.isFloatingPoint else {
                    throw fail("tensor '\(t.name)' is \(t.dtype), '\(baseName)' in the base \(b.dtype); only floating-point tensors are merged")
                }
                if permutedHeads(hfName) != nil {
                    throw fail("tensor '\(t.name)' replaces '\(baseName)', whose rows \(base.path) stores in GGUF's interleaved order; "
                               + "whole Q/K tensors are not applied to such a GGUF base: convert it to a model folder first")
                }
                saved[baseName] = t
            }
        }
        // PEFT loads a stored bias where the model has that parameter: an adapted layer's
        // as `<module>.base_layer.bias`, any other module's under its own name.
        for (tensor, module) in layerBiases where factors[module] == nil {
            throw fail("tensor '\(tensor)' is the bias of '\(module)', which the adapter does not adapt (PEFT would not load it)")
        }
        for (tensor, module) in plainBiases where factors[module] != nil {
            throw fail("tensor '\(tensor)' is the bias of adapted module '\(module)', which PEFT loads only as '\(module)\(PEFTNames.baseLayerBias)'")
        }
        var modules: [LoRAModule] = []
        for (module, entry) in factors {
            guard let a = entry.a else { throw fail("module '\(module)' has lora_B but no lora_A") }
            guard let b = entry.b else { throw fail("module '\(module)' has lora_A but no lora_B") }
            if let targets = config.targetModules, !targets.contains(where: { PEFTNames.module(module, matches: $0) }) {
                throw fail("module '\(module)' is not among target_modules \(targets)")
            }
            for t in [a, b] {
                guard t.shape.count == 2 else { throw fail("tensor '\(t.name)' has shape \(t.shape); LoRA factors are 2-D") }
                guard t.dtype.isFloatingPoint, t.dtype.isDecodable, !t.dtype.isQuantized else {
                    throw fail("tensor '\(t.name)' is \(t.dtype); LoRA factors are F32, F16 or BF16")
                }
            }
            let rank = a.shape[0]
            guard b.shape[1] == rank else {
                throw fail("module '\(module)': lora_A is \(a.shape[0])×\(a.shape[1]) (r × in) but lora_B is \(b.shape[0])×\(b.shape[1]) (out × r): ranks \(rank) and \(b.shape[1]) differ")
            }
            guard rank == config.rank(of: module) else {
                throw fail("module '\(module)' has rank \(rank) but adapter_config.json gives it r = \(config.rank(of: module))")
            }
            let hfName = PEFTNames.baseName(ofModule: module)
            guard let baseName = baseTensorName(hfName), let target = base.tensor(named: baseName) else {
                throw missing("module '\(module)' adapts", hfName)
            }
            let transposed = entry.embedding || config.fanInFanOut
            let shape = transposed ? [a.shape[1], b.shape[0]] : [b.shape[0], a.shape[1]]
            guard target.shape == shape else {
                let product = transposed ? "(B·A)ᵀ" : "B·A"
                throw fail("module '\(module)': \(product) is \(shape[0])×\(shape[1]) (lora_A \(a.shape[0])×\(a.shape[1]), lora_B \(b.shape[0])×\(b.shape[1])) but '\(baseName)' in the base has shape \(target.shape)")
            }
            guard target.dtype.isFloatingPoint, target.dtype.isDecodable else {
                throw fail("module '\(module)' adapts '\(baseName)', which is \(target.dtype) in the base")
            }
            if let whole = saved[baseName], !whole.name.hasSuffix(PEFTNames.baseLayerWeight) {
                throw fail("'\(baseName)' is both adapted and saved whole")
            }
            let scale = Float(config.scale(of: module))
            guard scale.isFinite else { throw fail("module '\(module)': the scale α/r does not fit a Float32") }
            // δ's rows are B's: permuting B's rows as the GGUF base's are gives δ in its order.
            let rowHeads = permutedHeads(hfName)
            if let heads = rowHeads {
                guard !transposed else {
                    throw fail("module '\(module)' is transposed (fan_in_fan_out) but '\(baseName)' has GGUF's permuted rows")
                }
                guard LlamaFamily.splitsIntoPairs(b.shape[0], heads: heads) else {
                    throw fail("module '\(module)': \(b.shape[0]) rows do not split into \(heads) heads of pairs as '\(baseName)' in \(base.path) needs")
                }
            }
            modules.append(LoRAModule(module: module, baseName: baseName, a: a, b: b, rank: rank, scale: scale,
                                      transposed: transposed, shape: shape, rowHeads: rowHeads))
        }
        if modules.isEmpty && saved.isEmpty { throw fail("holds no LoRA factors and no saved modules") }
        var order: [String: Int] = [:]
        for (i, t) in base.tensors.enumerated() { order[t.name] = i }
        modules.sort { order[$0.baseName]! < order[$1.baseName]! }
        return LoRAAdapter(path: path, config: config, weights: weights, modules: modules, saved: saved)
    }

    private init(path: String, config: LoRAConfig, weights: Checkpoint, modules: [LoRAModule], saved: [String: TensorEntry]) {
        self.path = path
        self.config = config
        self.weights = weights
        self.modules = modules
        self.saved = saved
        var index: [String: Int] = [:]
        for (i, m) in modules.enumerated() { index[m.baseName] = i }
        self.moduleIndex = index
    }

    /// The factors of `module` decoded to Float32: A (r × in) and B (out × r), B's rows
    /// in the base's order (`rowHeads`). Their sizes are those of tensors in the mapped file.
    public func factors(of module: LoRAModule) throws(CheckpointError) -> (a: [Float], b: [Float]) {
        guard let index = moduleIndex[module.baseName], modules[index] == module else { return try decodeFactors(module) }
        if let cached = decoded.withLock({ $0[index] }) { return cached }
        let factors = try decodeFactors(module)
        decoded.withLock { $0[index] = factors }
        return factors
    }

    private func decodeFactors(_ module: LoRAModule) throws(CheckpointError) -> (a: [Float], b: [Float]) {
        let a = try weights.decode(module.a), b = try weights.decode(module.b)
        guard let heads = module.rowHeads else { return (a, b) }
        // `open` checked that B's rows split into `heads` heads of pairs.
        var permuted = [Float](repeating: 0, count: b.count)
        b.withUnsafeBufferPointer { source in
            permuted.withUnsafeMutableBufferPointer { destination in
                LlamaFamily.permuteRows(source, into: destination, rows: module.outFeatures, columns: module.rank, heads: heads, toGGUF: true)
            }
        }
        return (a, permuted)
    }

    /// Elements `range` of `module`'s δ (row-major, in the base tensor's shape) into the
    /// start of `output`, or added to what it holds when `adding`. Only the rows the range
    /// touches are computed: whole rows straight into `output`, others into a row buffer
    /// from `workspaces`.
    /// - Precondition: `range` lies within δ and fits in `output`.
    public func delta(_ module: LoRAModule, elements range: Range<Int>, into output: UnsafeMutableBufferPointer<Float>,
                      adding: Bool = false) throws(CheckpointError)
    {
        let columns = module.columns, count = module.shape[0] * columns
        precondition(range.lowerBound >= 0 && range.upperBound <= count && range.count <= output.count,
                     "elements \(range) outside δ of '\(module.baseName)' or its buffer")
        guard !range.isEmpty else { return }
        let (a, b) = try factors(of: module)
        let firstRow = range.lowerBound / columns, endRow = (range.upperBound + columns - 1) / columns
        func product(into c: UnsafeMutableBufferPointer<Float>) {
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in LoRAProduct.rows(firstRow..<endRow, of: module.geometry, a: a, b: b, into: c) }
            }
        }
        let skip = range.lowerBound - firstRow * columns
        if !adding && skip == 0 && range.count == (endRow - firstRow) * columns {
            return product(into: UnsafeMutableBufferPointer(rebasing: output[0..<range.count]))
        }
        var rows = workspaces.withLock { $0.popLast() } ?? []
        defer { workspaces.withLock { $0.append(rows) } }
        ConversionScratch.fit(&rows, (endRow - firstRow) * columns)
        rows.withUnsafeMutableBufferPointer { product(into: $0) }
        if adding {
            for i in 0..<range.count { output[i] += rows[skip + i] }
        } else {
            for i in 0..<range.count { output[i] = rows[skip + i] }
        }
    }
}

extension LoRAModule {
    /// The product's dimensions for `LoRAProduct`.
    public var geometry: LoRAProduct.Geometry {
        LoRAProduct.Geometry(rank: rank, inFeatures: inFeatures, outFeatures: outFeatures, scale: scale, transposed: transposed)
    }
}
