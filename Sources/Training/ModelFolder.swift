import Checkpoints

/// Reads and writes Claire-trained models as Hugging Face folders:
/// `config.json` (LlamaForCausalLM), `model.safetensors` (Float32 or BF16, HF tensor
/// names), the byte tokenizer's files and `generation_config.json`.
public enum ModelFolder {
    /// Writes `model` to the folder `path` atomically (nothing appears unless all of it was written),
    /// its weights stored as `storage`.
    public static func save(_ model: LlamaModel, to path: String, overwrite: Bool = false,
                            storage: WeightStorage = .f32) throws(TrainingError) {
        try ModelFolderWriter(path: path, config: model.config, overwrite: overwrite, storage: storage).write(model)
    }

    /// Loads a model from a folder written by `save` (or any Llama folder with the
    /// byte tokenizer's vocabulary and no unsupported options). Files of the folder
    /// that are links leaving it are refused unless `followSymlinks`.
    public static func load(_ path: String, followSymlinks: Bool = false) throws(TrainingError) -> LlamaModel {
        let folder = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
        let configPath: String
        do { configPath = try HFFolder.sideFile("config.json", in: folder, followSymlinks: followSymlinks) } catch { throw .checkpoint(error) }
        let config = try LlamaConfig.load(configPath)
        let checkpoint: Checkpoint
        do { checkpoint = try Checkpoint.open(folder, followSymlinks: followSymlinks) } catch { throw .checkpoint(error) }
        let layout = ParameterLayout(config: config)
        // Every tensor is checked against the config before the weights are allocated.
        var entries: [TensorEntry] = []
        for slot in layout.slots {
            guard let entry = checkpoint.tensor(named: slot.name) else {
                throw .config(file: folder, problem: "tensor '\(slot.name)' is missing")
            }
            guard entry.shape == slot.shape else {
                throw .config(file: folder, problem: "tensor '\(slot.name)' has shape \(entry.shape), config.json implies \(slot.shape)")
            }
            entries.append(entry)
        }
        let buffer = FloatBuffer(count: layout.count)
        for (slot, entry) in zip(layout.slots, entries) {
            do {
                try checkpoint.decode(entry, into: buffer.elements(at: slot.offset, count: slot.count))
            } catch {
                throw .checkpoint(error)
            }
        }
        return LlamaModel(config: config, buffer: buffer)
    }
}

/// The element type a model folder stores its weights in. BF16 is what released
/// checkpoints use: a weight update below half a BF16 step of the weight is lost on saving.
public enum WeightStorage: String, CaseIterable, Sendable {
    case bf16
    case f32

    /// The safetensors element type.
    public var dtype: DType { self == .bf16 ? .bf16 : .f32 }
}

/// A model folder being written: created before training starts, so a bad output
/// path fails at once instead of after the run, and committed by `write`.
public final class ModelFolderWriter {
    private let writer: HFFolderWriter
    private let config: LlamaConfig
    private let storage: WeightStorage

    /// Prepares the temporary folder for a model of `config` at `path`, weights stored as `storage`.
    public init(path: String, config: LlamaConfig, overwrite: Bool, storage: WeightStorage = .f32) throws(TrainingError) {
        var specs: [TensorSpec] = []
        for slot in ParameterLayout(config: config).slots {
            specs.append(TensorSpec(name: slot.name, dtype: storage.dtype, shape: slot.shape))
        }
        do { writer = try HFFolderWriter(folder: path, tensors: specs, overwrite: overwrite) } catch { throw .checkpoint(error) }
        self.config = config
        self.storage = storage
    }

    /// Writes the weights and side files of `model` and moves the folder into place.
    public func write(_ model: LlamaModel) throws(TrainingError) {
        precondition(model.config == config, "the model does not match the prepared folder")
        do throws(CheckpointError) {
            for slot in model.layout.slots {
                let values = model.parameters.elements(at: slot.offset, count: slot.count)
                switch storage {
                case .f32: try writer.write(slot.name, bytes: UnsafeRawBufferPointer(values))
                case .bf16:
                    var rounded: [UInt16] = []
                    rounded.reserveCapacity(values.count)
                    for x in values { rounded.append(ElementCodec.floatToBF16(x).littleEndian) }
                    var failure: CheckpointError?
                    rounded.withUnsafeBytes { bytes in
                        do throws(CheckpointError) { try writer.write(slot.name, bytes: bytes) } catch { failure = error }
                    }
                    if let failure { throw failure }
                }
            }
            func put(_ name: String, _ json: JSONValue) throws(CheckpointError) {
                try writer.writeFile(name: name, contents: Array((json.prettyText + "\n").utf8))
            }
            try put("config.json", config.configJSON)
            try put("generation_config.json", ByteTokenizer.generationConfigJSON)
            try put("tokenizer.json", ByteTokenizer.tokenizerJSON)
            try put("tokenizer_config.json", ByteTokenizer.tokenizerConfigJSON(maxLength: config.maxPositions))
            try writer.commit()
        } catch {
            writer.abort()
            throw .checkpoint(error)
        }
    }
}
