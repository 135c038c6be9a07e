import Foundation

/// Conversions between checkpoint formats: HF folder → GGUF, GGUF → HF folder,
/// and re-typing / re-sharding within safetensors. Every conversion streams
/// tensors through `WorkerQueue` and writes through an atomic output.
public enum FormatConversion {
    /// Progress: tensors done out of the total.
    public typealias Progress = @Sendable (_ done: Int, _ total: Int) -> Void

    /// What a conversion did, for the command line to report.
    public struct Report: Sendable {
        public var tensors: Int
        public var bytesWritten: Int
        public var warnings: [String]
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
        do {
            try run(jobs, from: checkpoint, toGGUF: true, workers: workers, progress: progress, output: output) {
                (name, bytes, offset) throws(CheckpointError) in try writer.write(name, piece: bytes, at: offset)
            }
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        return Report(tensors: jobs.count, bytesWritten: jobs.reduce(0) { $0 + $1.spec.byteCount }, warnings: warnings)
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
        do {
            try run(jobs, from: checkpoint, toGGUF: false, workers: workers, progress: progress, output: output) {
                (name, bytes, offset) throws(CheckpointError) in try writer.write(name, piece: bytes, at: offset)
            }
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
            try writer.commit()
        } catch {
            writer.abort()
            throw error
        }
        return Report(tensors: jobs.count, bytesWritten: jobs.reduce(0) { $0 + $1.spec.byteCount }, warnings: warnings)
    }

    // MARK: safetensors → safetensors

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
        let specs = checkpoint.tensors.map { t -> TensorSpec in
            let target = (dtype != nil && t.dtype.isFloatingPoint && t.dtype.isDecodable) ? dtype! : t.dtype
            return TensorSpec(name: t.name, dtype: target, shape: t.shape)
        }
        for (t, spec) in zip(checkpoint.tensors, specs) where spec.dtype.safetensorsRank < 0 || DType(safetensorsName: spec.dtype.rawValue) == nil {
            throw .conversion(file: input, problem: .unsupportedType("\(t.dtype) (tensor '\(t.name)') in safetensors"))
        }
        let metadata = checkpoint.metadata.compactMap { e in e.value.stringValue.map { (key: e.key, value: $0) } }
        let sink: any TensorSink
        if output.hasSuffix(".safetensors") {
            sink = try SafetensorsFileOutput(path: output, tensors: specs, metadata: metadata.isEmpty ? [("format", "pt")] : metadata,
                                        overwrite: overwrite)
        } else {
            let folderWriter = try HFFolderWriter(folder: output, tensors: specs, maxShardSize: maxShardSize,
                                                  metadata: metadata.isEmpty ? [("format", "pt")] : metadata, overwrite: overwrite)
            sink = folderWriter
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: input, isDirectory: &isDirectory), isDirectory.boolValue {
                for name in sideFiles(in: input) {
                    if name == "config.json", let dtype {
                        let config = try readJSONFile(HFFolder.sideFile("config.json", in: input, followSymlinks: followSymlinks))
                        try folderWriter.writeFile(name: name, contents: Array((withTorchDType(config, dtype).prettyText + "\n").utf8))
                    } else {
                        try folderWriter.copyFile(from: input + "/" + name, followSymlinks: followSymlinks)
                    }
                }
            }
        }
        let total = specs.count
        do {
            let scratches = ConversionScratch.perWorker(workers)
            try WorkerQueue.forEach(count: total, workers: workers, progress: { progress($0, total) }) { (worker, i) throws(CheckpointError) in
                let scratch = scratches[worker]
                let source = checkpoint.tensors[i]
                let spec = specs[i]
                let write = { (bytes: UnsafeRawBufferPointer, offset: Int) throws(CheckpointError) in
                    try sink.write(spec.name, piece: bytes, at: offset)
                }
                if spec.dtype == source.dtype {
                    try copy(source, of: checkpoint, write: write)
                } else {
                    try convert(source, of: checkpoint, to: spec, heads: nil, toGGUF: false, scratch: scratch, file: output, write: write)
                }
                checkpoint.release(source)
            }
            try sink.commit()
        } catch {
            sink.abort()
            throw error
        }
        return Report(tensors: total, bytesWritten: specs.reduce(0) { $0 + $1.byteCount }, warnings: [])
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
                if let i = members.firstIndex(where: { $0.key == "vocab_size" }) {
                    members[i].value = .number(String(vocabularySize))
                } else {
                    members.append((key: "vocab_size", value: .number(String(vocabularySize))))
                }
            } else if let i = members.firstIndex(where: { $0.key == "text_config" }), case .object(var text) = members[i].value {
                if let j = text.firstIndex(where: { $0.key == "vocab_size" }) {
                    text[j].value = .number(String(vocabularySize))
                } else {
                    text.append((key: "vocab_size", value: .number(String(vocabularySize))))
                }
                members[i].value = .object(text)
            }
            config = .object(members)
        }
        if let layerCount, case .object(var members) = config {
            if let i = members.firstIndex(where: { $0.key == "num_hidden_layers" }) {
                members[i].value = .number(String(layerCount))
            } else {
                members.append((key: "num_hidden_layers", value: .number(String(layerCount))))
            }
            config = .object(members)
        }
        try writer.writeFile(name: "config.json", contents: Array((config.prettyText + "\n").utf8))
    }

    /// `config` with `torch_dtype` set to match `dtype` (when it has the key).
    static func withTorchDType(_ config: JSONValue, _ dtype: DType) -> JSONValue {
        guard case .object(var members) = config else { return config }
        let name = dtype == .bf16 ? "bfloat16" : dtype == .f16 ? "float16" : dtype == .f64 ? "float64" : "float32"
        for i in members.indices where members[i].key == "torch_dtype" || members[i].key == "dtype" {
            members[i].value = .string(name)
        }
        return .object(members)
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

    /// Elements a tensor is converted in at a time: decoded, permuted, encoded and
    /// written a window at a time (4 MB of Float32), so a worker's memory does not grow
    /// with the tensor.
    static let windowElements = 1 << 20

    /// Streams `jobs`: each tensor window by window (`convert`), its pieces handed to
    /// `write` with their byte offsets; input pages are released as windows are done.
    static func run(_ jobs: [Job], from checkpoint: Checkpoint, toGGUF: Bool, workers: Int, progress: @escaping Progress,
                    output: String,
                    write: @escaping @Sendable (String, UnsafeRawBufferPointer, Int) throws(CheckpointError) -> Void)
        throws(CheckpointError)
    {
        let total = jobs.count
        let scratches = ConversionScratch.perWorker(workers)
        try WorkerQueue.forEach(count: total, workers: workers, progress: { progress($0, total) }) { (worker, i) throws(CheckpointError) in
            let job = jobs[i]
            try convert(job.source, of: checkpoint, to: job.spec, heads: job.heads, toGGUF: toGGUF, scratch: scratches[worker],
                        file: output) { (bytes, offset) throws(CheckpointError) in try write(job.spec.name, bytes, offset) }
            checkpoint.release(job.source)
        }
    }

    /// Converts `tensor` to `spec.dtype` a window of at most `windowElements` at a
    /// time: decodes it (rows permuted towards GGUF's layout or back when `heads` is
    /// given), encodes it and hands the bytes to `write` with their offset in the
    /// tensor's data, then releases the window's input pages. Windows start on whole
    /// blocks of both types; with a permutation they hold whole heads of rows, whose
    /// rows come from the same heads of the input (else the whole tensor is one window).
    static func convert(_ tensor: TensorEntry, of checkpoint: Checkpoint, to spec: TensorSpec, heads: Int?, toGGUF: Bool,
                        scratch: ConversionScratch, file: String, windowElements: Int = FormatConversion.windowElements,
                        write: (UnsafeRawBufferPointer, Int) throws(CheckpointError) -> Void) throws(CheckpointError) {
        let count = tensor.elementCount
        let unit = leastCommonMultiple(tensor.dtype.blockElements, spec.dtype.blockElements)
        // Rows are the first dimension: a 1-D bias is a column of rows, not one row.
        var permutation: (rows: Int, columns: Int, heads: Int)?
        if let heads, let rows = tensor.shape.first, rows > 0, count > 0 { permutation = (rows, count / rows, heads) }
        let step: Int
        if let p = permutation {
            let headElements = p.rows / p.heads * p.columns
            step = p.columns % unit == 0 && headElements > 0 ? max(1, windowElements / headElements) * headElements : count
        } else {
            step = max(unit, windowElements / unit * unit)
        }
        let mapped = checkpoint.files[tensor.fileIndex]
        var start = 0
        repeat {
            let range = start..<min(count, start + max(step, 1))
            let source = byteRange(range, of: tensor.dtype)
            let absolute = (tensor.offset + source.lowerBound)..<(tensor.offset + source.upperBound)
            mapped.populate(absolute)
            ConversionScratch.fit(&scratch.floats, range.count)
            let failure: CheckpointError? = scratch.floats.withUnsafeMutableBufferPointer { values in
                do throws(CheckpointError) {
                    guard let p = permutation else {
                        try decode(tensor, of: checkpoint, range, into: values)
                        return nil
                    }
                    if p.columns % tensor.dtype.blockElements != 0 {
                        // Rows that split blocks: the whole tensor (one window), permuted after decoding.
                        ConversionScratch.fit(&scratch.moreFloats, count)
                        try scratch.moreFloats.withUnsafeMutableBufferPointer { (whole) throws(CheckpointError) in
                            try decode(tensor, of: checkpoint, 0..<count, into: whole)
                            LlamaFamily.permuteRows(UnsafeBufferPointer(whole), into: values, rows: p.rows, columns: p.columns,
                                                    heads: p.heads, toGGUF: toGGUF)
                        }
                        return nil
                    }
                    // Whole heads: every source row lies in the window's own rows.
                    let firstRow = range.lowerBound / p.columns
                    for row in firstRow..<(range.upperBound / p.columns) {
                        let from = LlamaFamily.sourceRow(row, rows: p.rows, heads: p.heads, toGGUF: toGGUF)
                        let at = (row - firstRow) * p.columns
                        try decode(tensor, of: checkpoint, (from * p.columns)..<((from + 1) * p.columns),
                                   into: UnsafeMutableBufferPointer(rebasing: values[at..<(at + p.columns)]))
                    }
                } catch {
                    return error
                }
                return nil
            }
            if let failure { throw failure }
            try encodeAndWrite(scratch.floats, as: TensorSpec(name: spec.name, dtype: spec.dtype, shape: [range.count]),
                               scratch: scratch, file: file) { (bytes) throws(CheckpointError) in
                try write(bytes, byteRange(range, of: spec.dtype).lowerBound)
            }
            mapped.release(absolute)
            start = range.upperBound
        } while start < count
    }

    /// Writes `tensor`'s stored bytes as they are, in pieces of `windowElements`
    /// elements' worth, releasing each piece's input pages once written.
    static func copy(_ tensor: TensorEntry, of checkpoint: Checkpoint, windowElements: Int = FormatConversion.windowElements,
                     write: (UnsafeRawBufferPointer, Int) throws(CheckpointError) -> Void) throws(CheckpointError) {
        let data = checkpoint.data(of: tensor)
        let mapped = checkpoint.files[tensor.fileIndex]
        let piece = max(1, windowElements * 4)
        var offset = 0
        repeat {
            let end = min(data.count, offset + piece)
            try write(UnsafeRawBufferPointer(rebasing: data[offset..<end]), offset)
            mapped.release((tensor.offset + offset)..<(tensor.offset + end))
            offset = end
        } while offset < data.count
    }

    /// Decodes elements `range` of `tensor`, which start and end on whole blocks, into `values`.
    private static func decode(_ tensor: TensorEntry, of checkpoint: Checkpoint, _ range: Range<Int>,
                               into values: UnsafeMutableBufferPointer<Float>) throws(CheckpointError) {
        let bytes = byteRange(range, of: tensor.dtype)
        let data = checkpoint.data(of: tensor)
        precondition(range.lowerBound >= 0 && range.upperBound <= tensor.elementCount && bytes.upperBound <= data.count
                     && values.count == range.count, "elements \(range) outside tensor '\(tensor.name)'")
        do throws(CodecError) {
            try ElementCodec.decode(tensor.dtype, from: UnsafeRawBufferPointer(rebasing: data[bytes]), into: values)
        } catch {
            throw .codec(file: checkpoint.files[tensor.fileIndex].path, tensor: tensor.name, problem: error)
        }
    }

    /// The bytes of elements `range` of a tensor of `dtype`, from the block holding
    /// its first element to the end of the block holding its last.
    static func byteRange(_ range: Range<Int>, of dtype: DType) -> Range<Int> {
        let elements = dtype.blockElements, bytes = dtype.blockBytes
        return (range.lowerBound / elements * bytes)..<((range.upperBound + elements - 1) / elements * bytes)
    }

    static func leastCommonMultiple(_ a: Int, _ b: Int) -> Int {
        var (x, y) = (max(a, 1), max(b, 1))
        while y != 0 { (x, y) = (y, x % y) }
        return max(a, 1) / x * max(b, 1)
    }

    /// Encodes `values` as `spec.dtype` in `scratch.bytes` and hands the bytes to `write`.
    static func encodeAndWrite(_ values: [Float], as spec: TensorSpec, scratch: ConversionScratch, file: String,
                               write: (UnsafeRawBufferPointer) throws(CheckpointError) -> Void) throws(CheckpointError) {
        ConversionScratch.fit(&scratch.bytes, spec.byteCount)
        let encoded: Result<Void, CheckpointError> = values.withUnsafeBufferPointer { source in
            scratch.bytes.withUnsafeMutableBytes { destination in
                do throws(CodecError) {
                    try ElementCodec.encode(spec.dtype, from: source, into: destination)
                } catch {
                    return .failure(.codec(file: file, tensor: spec.name, problem: error))
                }
                return .success(())
            }
        }
        try encoded.get()
        let written: CheckpointError? = scratch.bytes.withUnsafeBytes { bytes in
            do throws(CheckpointError) { try write(bytes) } catch { return error }
            return nil
        }
        if let written { throw written }
    }
}
