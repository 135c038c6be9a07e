/// Writes a PEFT LoRA adapter folder: `adapter_model.safetensors` with, per module,
/// `base_model.model.<module>.lora_A.weight` (`rank × in`) and `…lora_B.weight`
/// (`out × rank`), the tensors of `modules_to_save` whole under
/// `base_model.model.<tensor>`, decomposed modules' trained biases whole under
/// `base_model.model.<module>.base_layer.bias` (`bias: "lora_only"`), and `adapter_config.json` (peft_type LORA,
/// task_type CAUSAL_LM, `lora_alpha` equal to `r` so the scale α/r is 1, and
/// `rank_pattern`/`alpha_pattern` for modules whose rank differs from `r`).
///
/// The folder is staged like every output (`OutputPath`): it appears under its
/// destination only at `commit()`, and `abort()` (or an interrupt) leaves nothing.
public final class LoRAAdapterWriter: TensorSink, @unchecked Sendable {
    /// The weights file PEFT reads.
    public static let weightsFileName = "adapter_model.safetensors"
    /// The configuration file PEFT reads.
    public static let configFileName = "adapter_config.json"

    /// One decomposed linear module: its name in the base (without `.weight`), its
    /// weight's shape `[out, in]` and the adapter's rank for it.
    public struct Module: Sendable, Hashable {
        public var name: String
        public var outFeatures: Int
        public var inFeatures: Int
        public var rank: Int
        public init(name: String, outFeatures: Int, inFeatures: Int, rank: Int) {
            self.name = name
            self.outFeatures = outFeatures
            self.inFeatures = inFeatures
            self.rank = rank
        }
    }

    /// What `adapter_config.json` says besides the ranks.
    public struct Config: Sendable {
        /// `base_model_name_or_path`.
        public var baseModel: String
        /// `target_modules`: the distinct last components of the decomposed modules' names.
        public var targetModules: [String]
        /// `modules_to_save`: the last components of the modules stored whole.
        public var modulesToSave: [String]
        /// `bias`: "lora_only" when the adapter stores decomposed modules' biases, else "none".
        public var bias: LoRAConfig.Bias
        public init(baseModel: String, targetModules: [String], modulesToSave: [String], bias: LoRAConfig.Bias = .none) {
            self.baseModel = baseModel
            self.targetModules = targetModules
            self.modulesToSave = modulesToSave
            self.bias = bias
        }
    }

    public let output: OutputPath
    private let file: SafetensorsFileWriter
    private let modules: [String: Module]
    private let saved: Set<String>
    private let biases: Set<String>
    private let configText: String

    /// Plans the weights file for `modules` (factors in `dtype`), the whole tensors
    /// `saved` (names as in the base) and the whole biases `biases` of decomposed modules
    /// (named `<module>.bias` as in the base; stored as PEFT's `<module>.base_layer.bias`).
    /// Fails before anything exists when the plan is inconsistent (no module, a rank
    /// outside 1…min(out, in), a bias of no planned module), or as `OutputPath` does.
    public init(folder: String, modules: [Module], saved: [TensorSpec], biases: [TensorSpec] = [], dtype: DType, config: Config,
                overwrite: Bool) throws(CheckpointError) {
        var byName: [String: Module] = [:]
        var specs: [TensorSpec] = []
        for module in modules {
            guard module.rank >= 1, module.rank <= min(module.outFeatures, module.inFeatures) else {
                throw .io(file: folder, problem: "module '\(module.name)': rank \(module.rank) outside 1…\(min(module.outFeatures, module.inFeatures))")
            }
            guard byName.updateValue(module, forKey: module.name) == nil else {
                throw .io(file: folder, problem: "module '\(module.name)' planned twice")
            }
            let keys = PEFTNames.factorNames(module.name)
            specs.append(TensorSpec(name: keys.a, dtype: dtype, shape: [module.rank, module.inFeatures]))
            specs.append(TensorSpec(name: keys.b, dtype: dtype, shape: [module.outFeatures, module.rank]))
        }
        guard !modules.isEmpty || !saved.isEmpty else { throw .io(file: folder, problem: "the adapter would hold no tensors") }
        for t in saved { specs.append(TensorSpec(name: PEFTNames.savedName(t.name), dtype: t.dtype, shape: t.shape)) }
        for t in biases {
            guard t.name.hasSuffix(".bias"), byName[String(t.name.dropLast(".bias".count))] != nil else {
                throw .io(file: folder, problem: "bias '\(t.name)' is not the bias of a planned module")
            }
            specs.append(TensorSpec(name: PEFTNames.biasName(ofModule: String(t.name.dropLast(".bias".count))), dtype: t.dtype, shape: t.shape))
        }
        self.modules = byName
        self.saved = Set(saved.map(\.name))
        self.biases = Set(biases.map(\.name))
        configText = Self.configJSON(config, modules: modules).prettyText + "\n"
        try SafetensorsFileWriter.check(specs, metadata: [("format", "pt")], path: folder + "/" + Self.weightsFileName)
        output = try OutputPath(destination: folder, isDirectory: true, overwrite: overwrite)
        do {
            file = try SafetensorsFileWriter(path: output.temporaryPath(for: Self.weightsFileName), tensors: specs,
                                             displayPath: output.destination + "/" + Self.weightsFileName)
        } catch {
            output.abort()
            throw error
        }
    }

    /// Stores module `name`'s factors, each encoded in the planned dtype: `a` is
    /// lora_A (`rank × in`), `b` lora_B (`out × rank`).
    public func writeFactors(module name: String, a: UnsafeRawBufferPointer, b: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard modules[name] != nil else { throw .io(file: output.destination, problem: "module '\(name)' is not in the plan") }
        let keys = PEFTNames.factorNames(name)
        try file.write(keys.a, bytes: a)
        try file.write(keys.b, bytes: b)
    }

    /// Stores the whole tensor `name` (its name in the base) of a module to save.
    public func writeSaved(tensor name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard saved.contains(name) else { throw .io(file: output.destination, problem: "tensor '\(name)' is not in the plan") }
        try file.write(PEFTNames.savedName(name), bytes: bytes)
    }

    /// Stores the whole bias `name` (`<module>.bias`, its name in the base) of a decomposed module.
    public func writeBias(tensor name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        guard biases.contains(name) else { throw .io(file: output.destination, problem: "bias '\(name)' is not in the plan") }
        try file.write(PEFTNames.biasName(ofModule: String(name.dropLast(".bias".count))), bytes: bytes)
    }

    /// Stores a tensor by its key in the adapter file.
    public func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) {
        try file.write(name, bytes: bytes)
    }

    /// Stores the next piece of a tensor by its key in the adapter file (see `TensorSink`).
    public func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        try file.write(name, piece: bytes, at: offset)
    }

    /// Checks every planned tensor was written, adds the configuration and moves the folder into place.
    public func commit() throws(CheckpointError) {
        do {
            try file.finish()
            try NewFile.store(Array(configText.utf8), to: output.temporaryPath(for: Self.configFileName),
                              display: output.destination + "/" + Self.configFileName)
            try output.commit()
        } catch {
            output.abort()
            throw error
        }
    }

    public func abort() { output.abort() }

    /// The configuration PEFT reads: `r` is the largest rank, modules of another rank
    /// are listed in `rank_pattern` with the same value in `alpha_pattern` (scale 1).
    static func configJSON(_ config: Config, modules: [Module]) -> JSONValue {
        let r = modules.map(\.rank).max() ?? 1
        let others = modules.filter { $0.rank != r }
            .map { (key: $0.name, value: JSONValue.number(String($0.rank))) }
        return .object([
            ("base_model_name_or_path", .string(config.baseModel)),
            ("peft_type", .string("LORA")),
            ("task_type", .string("CAUSAL_LM")),
            ("r", .number(String(r))),
            ("lora_alpha", .number(String(r))),
            ("rank_pattern", .object(others)),
            ("alpha_pattern", .object(others)),
            ("target_modules", .array(config.targetModules.map(JSONValue.string))),
            ("modules_to_save", config.modulesToSave.isEmpty ? .null : .array(config.modulesToSave.map(JSONValue.string))),
            ("use_rslora", .bool(false)),
            ("lora_dropout", .number("0.0")),
            ("fan_in_fan_out", .bool(false)),
            ("bias", .string(config.bias.rawValue)),
            ("inference_mode", .bool(true)),
        ])
    }
}
