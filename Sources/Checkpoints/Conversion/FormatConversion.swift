import Foundation

/// Conversions between checkpoint formats: HF folder → GGUF and GGUF → HF folder
/// (here), re-typing / re-sharding within safetensors (`Retyping.swift`). Every
/// conversion streams tensors window by window through `WorkerQueue`
/// (`WindowedConversion.swift`) and writes through an atomic output.
public enum FormatConversion {
    /// Progress: tensors done out of the total.
    public typealias Progress = @Sendable (_ done: Int, _ total: Int) -> Void

    /// What a conversion did, for the command line to report.
    public struct Report: Sendable {
        public var tensors: Int
        public var bytesWritten: Int
        public var warnings: [String]

        /// The report of converting `jobs`.
        init(_ jobs: [Job], warnings: [String]) {
            tensors = jobs.count
            bytesWritten = jobs.reduce(0) { $0 + $1.spec.byteCount }
            self.warnings = warnings
        }
    }

    /// One tensor to convert: where it comes from, what it becomes, and the head
    /// count of its Q/K row permutation (nil: rows stay in place).
    struct Job: Sendable {
        let source: TensorEntry
        let spec: TensorSpec
        let heads: Int?
    }

    // MARK: HF folder → GGUF

    /// The GGUF type a tensor gets when `type` is asked for, following llama.cpp's
    /// converter: 1-D tensors and norms stay F32; a tensor whose rows do not fill
    /// whole quantization blocks falls back to F16.
    public static func ggufType(for name: String, shape: [Int], requested type: DType) -> DType {
        if shape.count <= 1 || name.hasSuffix("_norm.weight") { return .f32 }
        if let inner = shape.last, inner % type.blockElements != 0 { return .f16 }
        return type
    }

    /// Converts the Llama-family HF folder `folder` to the GGUF file `output`; files
    /// of the folder that are links leaving it are refused unless `followSymlinks`.
    public static func hfToGGUF(folder: String, output: String, type: DType, overwrite: Bool = false, followSymlinks: Bool = false,
                                workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                                progress: @escaping Progress = { _, _ in }) throws(CheckpointError) -> Report {
        guard type.isEncodable else { throw .conversion(file: output, problem: .unsupportedType(type.rawValue)) }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw .conversion(file: folder, problem: .needsModelFolder)
        }
        let checkpoint = try HFFolder.open(folder, followSymlinks: followSymlinks)
        let configPath = folder + "/config.json"
        guard HFFolder.fileExists(configPath) else {
            throw .conversion(file: folder, problem: .missingConfigFile)
        }
        let hp = try LlamaConfig.read(configAt: HFFolder.sideFile("config.json", in: folder, followSymlinks: followSymlinks))

        var jobs: [Job] = []
        for t in checkpoint.tensors where !LlamaFamily.isDerived(hfName: t.name) {
            guard let name = LlamaFamily.ggufName(forHF: t.name) else {
                throw .conversion(file: checkpoint.files[t.fileIndex].path, problem: .unexpectedTensor(t.name))
            }
            try checkAgainstHyperparameters(hfName: t.name, shape: t.shape, hp, file: checkpoint.files[t.fileIndex].path,
                                            sizesFrom: configPath)
            guard t.dtype.isDecodable else {
                throw .conversion(file: checkpoint.files[t.fileIndex].path, problem: .unsupportedType(t.dtype.rawValue))
            }
            let heads = try permutationHeads(hfName: t.name, shape: t.shape, hp, file: checkpoint.files[t.fileIndex].path)
            jobs.append(Job(source: t, spec: TensorSpec(name: name, dtype: ggufType(for: name, shape: t.shape, requested: type), shape: t.shape),
                            heads: heads))
        }
        // After the tensors are checked: the vocabulary is allocated at config.json's size.
        var warnings: [String] = []
        let tokenizer = try GGUFTokenizer.read(folder: folder, vocabSize: hp.vocabularySize, followSymlinks: followSymlinks)
        if tokenizer == nil { warnings.append("\(folder): no tokenizer.json; the GGUF file has no tokenizer keys") }

        let folderName = URL(fileURLWithPath: folder).standardizedFileURL.lastPathComponent
        var metadata = [
            MetadataEntry("general.architecture", .string(hp.architecture.ggufName)),
            MetadataEntry("general.type", .string("model")),
            MetadataEntry("general.name", .string(folderName)),
        ]
        metadata += hp.ggufMetadata()
        // Placed where llama.cpp places them; the writer fills in the file type.
        let fileTypeIndex = metadata.firstIndex { $0.key.hasSuffix(".vocab_size") } ?? metadata.count
        metadata.insert(MetadataEntry("general.file_type", .uint32(0)), at: fileTypeIndex)
        metadata.append(MetadataEntry("general.quantization_version", .uint32(2)))
        if let tokenizer { metadata += tokenizer.ggufMetadata() }

        let writer = try GGUFWriter(path: output, tensors: jobs.map(\.spec), metadata: metadata,
                                    fileType: GGUFWriter.llamaFileType(type), overwrite: overwrite)
        try writer.committing { () throws(CheckpointError) in
            try run(jobs, from: checkpoint, into: writer, toGGUF: true, workers: workers, progress: progress, output: output)
        }
        return Report(jobs, warnings: warnings)
    }

    // MARK: GGUF → HF folder

    /// Converts the Llama-family GGUF file `input` into the HF folder `output`,
    /// dequantizing every tensor to `dtype`. `followSymlinks` is `Checkpoint.open`'s.
    public static func ggufToHF(input: String, output: String, dtype: DType = .bf16,
                                maxShardSize: Int = HFFolderWriter.defaultMaxShardSize, overwrite: Bool = false,
                                followSymlinks: Bool = false,
                                workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                                progress: @escaping Progress = { _, _ in }) throws(CheckpointError) -> Report {
        let checkpoint = try Checkpoint.open(input, followSymlinks: followSymlinks)
        guard checkpoint.format == .gguf else {
            throw .conversion(file: input, problem: .unsupportedSetting("input: expected a GGUF file"))
        }
        let hp: LlamaConfig
        let tokenizer: GGUFTokenizer?
        do {
            tokenizer = try GGUFTokenizer(gguf: checkpoint.metadata)
            hp = try LlamaConfig(gguf: checkpoint.metadata, tokenCount: tokenizer?.tokens.count,
                                          hasOutputTensor: checkpoint.tensor(named: "output.weight") != nil)
        } catch {
            throw .conversion(file: input, problem: error)
        }
        if let tokenizer, tokenizer.tokens.count != hp.vocabularySize {
            throw .conversion(file: input, problem: .unsupportedSetting(
                "vocabulary of \(hp.vocabularySize) tokens with a token list of \(tokenizer.tokens.count)"))
        }
        var warnings: [String] = []
        if tokenizer == nil { warnings.append("\(input): no tokenizer in the GGUF metadata; the folder has no tokenizer files") }

        var jobs: [Job] = []
        for t in checkpoint.tensors {
            guard let name = LlamaFamily.hfName(forGGUF: t.name) else {
                throw .conversion(file: input, problem: .unexpectedTensor(t.name))
            }
            guard t.dtype.isDecodable else { throw .conversion(file: input, problem: .unsupportedType(t.dtype.rawValue)) }
            try checkAgainstHyperparameters(hfName: name, shape: t.shape, hp, file: input, sizesFrom: input)
            let heads = try permutationHeads(hfName: name, shape: t.shape, hp, file: input)
            jobs.append(Job(source: t, spec: TensorSpec(name: name, dtype: dtype, shape: t.shape), heads: heads))
        }

        let writer = try HFFolderWriter(folder: output, tensors: jobs.map(\.spec), maxShardSize: maxShardSize, overwrite: overwrite)
        try writer.committing { () throws(CheckpointError) in
            try run(jobs, from: checkpoint, into: writer, toGGUF: false, workers: workers, progress: progress, output: output)
            try writer.writeFile(name: "config.json", contents: Array((hp.configJSON(dtype: dtype).prettyText + "\n").utf8))
            var generation: [(key: String, value: JSONValue)] = []
            if let bos = hp.bosTokenID { generation.append(("bos_token_id", .integer(bos))) }
            if let eos = hp.eosTokenID { generation.append(("eos_token_id", .integer(eos))) }
            try writer.writeFile(name: "generation_config.json", contents: Array((JSONValue.object(generation).prettyText + "\n").utf8))
            if let tokenizer {
                try writer.writeFile(name: "tokenizer.json", contents: Array(tokenizer.tokenizerJSON().compactText.utf8))
                try writer.writeFile(name: "tokenizer_config.json",
                                     contents: Array((tokenizer.tokenizerConfigJSON(contextLength: hp.statedMaxPositions).prettyText + "\n").utf8))
            }
        }
        return Report(jobs, warnings: warnings)
    }

    // MARK: Shared steps

    /// Checks a tensor against the hyperparameters it is converted with: its layer
    /// number below the layer count, and the embedding and output rows equal to the
    /// vocabulary (which is allocated and written at that size). `sizesFrom` names
    /// the file the hyperparameters came from.
    static func checkAgainstHyperparameters(hfName: String, shape: [Int], _ hp: LlamaConfig, file: String,
                                            sizesFrom: String) throws(CheckpointError) {
        if let layer = LlamaFamily.layer(ofHF: hfName), layer >= hp.layerCount {
            throw .conversion(file: file, problem: .tensorShape(
                tensor: hfName, problem: "layer \(layer) is past the \(hp.layerCount) layers \(sizesFrom) declares"))
        }
        if hfName == "model.embed_tokens.weight" || hfName == "lm_head.weight", shape.first != hp.vocabularySize {
            throw .conversion(file: file, problem: .tensorShape(
                tensor: hfName, problem: "shape \(shape) does not have the \(hp.vocabularySize) rows of the vocabulary \(sizesFrom) declares"))
        }
    }

    /// The head count for permuting an HF Q or K tensor's rows, or nil when the
    /// tensor is not one or the architecture keeps HF's order.
    static func permutationHeads(hfName: String, shape: [Int], _ hp: LlamaConfig, file: String) throws(CheckpointError) -> Int? {
        guard let heads = LlamaFamily.permutedHeads(ofHF: hfName, architecture: hp.architecture, headCount: hp.headCount,
                                                    kvHeads: hp.keyValueHeadCount) else { return nil }
        guard let rows = shape.first, LlamaFamily.splitsIntoPairs(rows, heads: heads) else {
            throw .conversion(file: file, problem: .tensorShape(tensor: hfName, problem: "\(shape.first ?? 0) rows do not split into \(heads) heads of pairs"))
        }
        return heads
    }
}

extension TensorSink {
    /// Runs `body`, then commits; on any error aborts, so nothing is left behind.
    public func committing(_ body: () throws(CheckpointError) -> Void) throws(CheckpointError) {
        do {
            try body()
            try commit()
        } catch {
            abort()
            throw error
        }
    }
}
