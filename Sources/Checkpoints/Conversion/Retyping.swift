import Foundation

/// Re-typing and re-sharding within safetensors, and the side files (config.json and
/// the rest) a converted or merged folder takes from its source.
extension FormatConversion {
    /// Rewrites a safetensors checkpoint with floating-point tensors in `dtype`
    /// (other tensors copied as they are) and shards of at most `maxShardSize`.
    /// `output` is a folder, or a single file when it ends in `.safetensors`. Files of
    /// an input folder that are links leaving it are refused unless `followSymlinks`.
    public static func retype(input: String, output: String, dtype: DType?,
                              maxShardSize: Int = HFFolderWriter.defaultMaxShardSize, overwrite: Bool = false,
                              followSymlinks: Bool = false,
                              workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                              progress: @escaping Progress = { _, _ in }) throws(CheckpointError) -> Report {
        let checkpoint = try Checkpoint.open(input, followSymlinks: followSymlinks)
        if let dtype, !dtype.isEncodable || dtype.blockElements != 1 {
            throw .conversion(file: output, problem: .unsupportedType(dtype.rawValue))
        }
        let jobs = checkpoint.tensors.map { t -> Job in
            let target = (dtype != nil && t.dtype.isFloatingPoint && t.dtype.isDecodable) ? dtype! : t.dtype
            return Job(source: t, spec: TensorSpec(name: t.name, dtype: target, shape: t.shape), heads: nil)
        }
        for job in jobs where job.spec.dtype.safetensorsRank < 0 || DType(safetensorsName: job.spec.dtype.rawValue) == nil {
            throw .conversion(file: input, problem: .unsupportedType("\(job.source.dtype) (tensor '\(job.source.name)') in safetensors"))
        }
        let stated = checkpoint.metadata.compactMap { e in e.value.stringValue.map { (key: e.key, value: $0) } }
        let (sink, folder) = try safetensorsOutput(output, tensors: jobs.map(\.spec), metadata: stated.isEmpty ? [("format", "pt")] : stated,
                                                   maxShardSize: maxShardSize, overwrite: overwrite)
        try sink.committing { () throws(CheckpointError) in
            if let folder { try copySideFiles(from: input, into: folder, dtype: dtype, followSymlinks: followSymlinks) }
            try run(jobs, from: checkpoint, into: sink, toGGUF: false, copyingSameType: true, workers: workers,
                    progress: progress, output: output)
        }
        return Report(jobs, warnings: [])
    }

    /// The writer of a safetensors checkpoint at `output`: one file when the name ends in
    /// `.safetensors`, else a model folder, which is also returned for its side files.
    public static func safetensorsOutput(_ output: String, tensors: [TensorSpec], metadata: [(key: String, value: String)]?,
                                         maxShardSize: Int, overwrite: Bool) throws(CheckpointError) -> (any TensorSink, HFFolderWriter?) {
        if output.hasSuffix(".safetensors") {
            return (try SafetensorsFileOutput(path: output, tensors: tensors, metadata: metadata, overwrite: overwrite), nil)
        }
        let folder = try HFFolderWriter(folder: output, tensors: tensors, maxShardSize: maxShardSize, metadata: metadata,
                                        overwrite: overwrite)
        return (folder, folder)
    }

    /// Copies the side files of `folder` (`sideFiles(in:)`) into `writer`, config.json
    /// naming `dtype` when one is given (`copyConfig`); nothing when `folder` is a file.
    public static func copySideFiles(from folder: String, into writer: some SideFileSink, dtype: DType? = nil,
                                     followSymlinks: Bool) throws(CheckpointError) {
        guard isDirectory(folder) else { return }
        for name in sideFiles(in: folder) {
            if name == "config.json" {
                try copyConfig(from: folder, to: writer, dtype: dtype, followSymlinks: followSymlinks)
            } else {
                try writer.copyFile(from: folder + "/" + name, as: nil, followSymlinks: followSymlinks)
            }
        }
    }

    /// Files of a model folder other than weights and the index, copied to a converted folder.
    public static func sideFiles(in folder: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.filter { name in
            !name.hasPrefix(".") && !name.hasSuffix(".safetensors") && name != HFFolder.indexFileName
                && !name.hasSuffix(".bin") && !name.hasSuffix(".gguf") && !name.hasSuffix(".pt")
                && HFFolder.fileExists(folder + "/" + name) && !isDirectory(folder + "/" + name)
        }.sorted()
    }

    private static func isDirectory(_ path: String) -> Bool {
        var flag: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &flag) && flag.boolValue
    }

    /// Writes `folder`'s config.json into `writer`: with `torch_dtype` (and `dtype`) naming
    /// `dtype` when given, so a loader's `dtype="auto"` picks the type the tensors have;
    /// otherwise copied unchanged.
    /// `layerCount`, when given, replaces `num_hidden_layers` (an output stacked from slices).
    public static func copyConfig(from folder: String, to writer: some SideFileSink, dtype: DType?, layerCount: Int? = nil,
                                  vocabularySize: Int? = nil, followSymlinks: Bool = false) throws(CheckpointError) {
        guard dtype != nil || layerCount != nil || vocabularySize != nil else {
            return try writer.copyFile(from: folder + "/config.json", as: nil, followSymlinks: followSymlinks)
        }
        var config = try readJSONFile(HFFolder.sideFile("config.json", in: folder, followSymlinks: followSymlinks))
        if let dtype { config = withTorchDType(config, dtype) }
        if let vocabularySize, case .object(var members) = config {
            // A multimodal config keeps the vocabulary in its text part.
            if members.contains(where: { $0.key == "vocab_size" }) || !members.contains(where: { $0.key == "text_config" }) {
                set("vocab_size", to: vocabularySize, in: &members)
            } else if let i = members.firstIndex(where: { $0.key == "text_config" }), case .object(var text) = members[i].value {
                set("vocab_size", to: vocabularySize, in: &text)
                members[i].value = .object(text)
            }
            config = .object(members)
        }
        if let layerCount, case .object(var members) = config {
            set("num_hidden_layers", to: layerCount, in: &members)
            config = .object(members)
        }
        try writer.writeFile(name: "config.json", contents: Array((config.prettyText + "\n").utf8))
    }

    /// Sets `key` of a JSON object's `members` to `value`, appending it when absent.
    private static func set(_ key: String, to value: Int, in members: inout [(key: String, value: JSONValue)]) {
        if let i = members.firstIndex(where: { $0.key == key }) {
            members[i].value = .number(String(value))
        } else {
            members.append((key: key, value: .number(String(value))))
        }
    }

    /// `config` with `torch_dtype` set to match `dtype` (when it has the key).
    static func withTorchDType(_ config: JSONValue, _ dtype: DType) -> JSONValue {
        guard case .object(var members) = config else { return config }
        let name = dtype.torchName ?? "float32"
        for i in members.indices where members[i].key == "torch_dtype" || members[i].key == "dtype" {
            members[i].value = .string(name)
        }
        return .object(members)
    }

}
