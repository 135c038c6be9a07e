import Checkpoints
import Foundation

/// Writing a LoRA adapter merged into its base: the full model PEFT's
/// `merge_and_unload()` gives.
///
/// Per adapted tensor, as PEFT computes it: δ = scale·B·A in Float32, rounded to the
/// factors' type when they are F16 or BF16 (PEFT casts the product back to it), then
/// base + δ rounded once to the base's type. Tensors of `modules_to_save` are the saved
/// ones in the base's type; every other tensor is the base's bytes. One tensor is held
/// (as Float32, base and δ) per worker at a time.
public enum LoRAMerging {
    /// Writes `adapter` merged into `base` at `output` (a folder, or one file when it ends
    /// in `.safetensors`; a GGUF base gives a `.gguf` file with its metadata); config and
    /// tokenizer files are copied from the base folder.
    /// Returns the number of tensors adapted and replaced.
    public static func apply(adapter adapterPath: String, base basePath: String, output: String, overwrite: Bool,
                             followSymlinks: Bool = false, maxShardSize: Int = HFFolderWriter.defaultMaxShardSize,
                             workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                             progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) throws(CheckpointError) -> (adapted: Int, saved: Int) {
        let base = try Checkpoint.open(basePath, followSymlinks: followSymlinks)
        let adapter = try LoRAAdapter.open(adapterPath, base: base, followSymlinks: followSymlinks)
        // Every target must be a type the output can hold, checked before anything is written.
        for name in adapter.modules.map(\.baseName) + adapter.saved.keys.sorted() {
            let t = base.tensor(named: name)!
            guard t.dtype.isEncodable, !t.dtype.isQuantized else {
                let hint = t.dtype.isQuantized ? "; fuse the adapter alone (--method task_arithmetic) to write its merge as BF16" : ""
                throw .adapter(file: adapter.weights.path, problem: "'\(name)' is \(t.dtype) in the base, which cannot be written merged\(hint)")
            }
        }
        let tensors = base.tensors
        let (writer, folder) = try openWriter(at: output, for: base, maxShardSize: maxShardSize, overwrite: overwrite)
        // δ is an OpenBLAS product inside each worker: one BLAS thread each.
        let blasThreads = LoRAProduct.useOneThread()
        defer { LoRAProduct.restoreThreads(blasThreads) }
        let scratches = ConversionScratch.perWorker(workers)
        try writer.committing { () throws(CheckpointError) in
            try WorkerQueue.forEach(count: tensors.count, workers: workers, progress: { progress($0, tensors.count) }) { (worker, i) throws(CheckpointError) in
                let t = tensors[i], scratch = scratches[worker]
                if try merged(t, base: base, adapter: adapter, into: scratch) {
                    try scratch.bytes.withUnsafeBufferPointer { (bytes) throws(CheckpointError) in
                        try writer.write(t.name, bytes: UnsafeRawBufferPointer(bytes))
                    }
                } else {
                    try writer.write(t.name, bytes: base.data(of: t))
                }
                base.release(t)
            }
            if let folder { try FormatConversion.copySideFiles(from: basePath, into: folder, followSymlinks: followSymlinks) }
        }
        return (adapter.modules.count, adapter.saved.count)
    }

    /// The writer of the merged model, with the base's tensor list: a GGUF file of the
    /// base's metadata for a GGUF base (its names are llama.cpp's, which a model folder
    /// would not load under), else a safetensors file or model folder (also returned).
    private static func openWriter(at output: String, for base: Checkpoint, maxShardSize: Int,
                               overwrite: Bool) throws(CheckpointError) -> (any TensorSink, HFFolderWriter?) {
        let specs = base.tensors.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        guard base.format == .gguf || output.hasSuffix(".gguf") else {
            return try FormatConversion.safetensorsOutput(output, tensors: specs, metadata: [("format", "pt")],
                                                          maxShardSize: maxShardSize, overwrite: overwrite)
        }
        guard base.format == .gguf, output.hasSuffix(".gguf") else {
            throw .io(file: output, problem: base.format == .gguf
                ? "the base is a GGUF file, so the merged model is one too: name the output *.gguf"
                : "a GGUF file is written only from a GGUF base; write a folder and convert it (merge-tool convert)")
        }
        let fileType = base.metadata.first { $0.key == "general.file_type" }?.value.intValue.flatMap(UInt32.init(exactly:))
        return (try GGUFWriter(path: output, tensors: specs, metadata: base.metadata, fileType: fileType, overwrite: overwrite), nil)
    }

    /// The fine-tuned tensor `t` an adapter stands for, encoded in `t`'s type into
    /// `scratch.bytes` (exactly its byte count): false when the adapter leaves `t` alone
    /// (the fine-tune's bytes are the base's). Uses `scratch.floats` and `moreFloats`.
    public static func merged(_ t: TensorEntry, base: Checkpoint, adapter: LoRAAdapter, into scratch: ConversionScratch) throws(CheckpointError) -> Bool {
        if let module = adapter.module(adapting: t.name) {
            try add(module, to: t, of: base, adapter: adapter, scratch: scratch)
        } else if let saved = adapter.saved[t.name] {
            try convert(saved, of: adapter.weights, to: t, scratch: scratch)
        } else {
            return false
        }
        return true
    }

    /// Base tensor `t` plus `module`'s δ, in `t`'s type, into `scratch.bytes`.
    private static func add(_ module: LoRAModule, to t: TensorEntry, of base: Checkpoint, adapter: LoRAAdapter,
                            scratch: ConversionScratch) throws(CheckpointError)
    {
        let n = t.elementCount
        ConversionScratch.fit(&scratch.floats, n)
        ConversionScratch.fit(&scratch.moreFloats, n)
        // The layer's own weight when the adapter saved it, else the base's.
        let (source, entry) = adapter.saved[t.name].map { (adapter.weights, $0) } ?? (base, t)
        try scratch.floats.withUnsafeMutableBufferPointer { (b) throws(CheckpointError) in try source.decode(entry, into: b) }
        try scratch.moreFloats.withUnsafeMutableBufferPointer { (d) throws(CheckpointError) in
            try adapter.delta(module, elements: 0..<n, into: d)
            // PEFT casts a product of F16 or BF16 factors back to their type before adding.
            if module.b.dtype == .f16 || module.b.dtype == .bf16 { try roundTrip(d, module.b.dtype, adapter.weights.path, t.name) }
        }
        for i in 0..<n { scratch.floats[i] += scratch.moreFloats[i] }
        try encode(t, scratch: scratch)
    }

    /// A saved whole tensor in the base tensor `t`'s type.
    private static func convert(_ saved: TensorEntry, of weights: Checkpoint, to t: TensorEntry,
                                scratch: ConversionScratch) throws(CheckpointError)
    {
        ConversionScratch.fit(&scratch.floats, saved.elementCount)
        try scratch.floats.withUnsafeMutableBufferPointer { (v) throws(CheckpointError) in try weights.decode(saved, into: v) }
        try encode(t, scratch: scratch)
    }

    /// Encodes the first `t.elementCount` floats of `scratch.floats` as `t`'s type into `scratch.bytes`.
    private static func encode(_ t: TensorEntry, scratch: ConversionScratch) throws(CheckpointError) {
        guard let size = t.dtype.byteCount(forElements: t.elementCount) else {
            throw .codec(file: "output", tensor: t.name, problem: .notEncodable(t.dtype))
        }
        ConversionScratch.fit(&scratch.bytes, size)
        let n = t.elementCount
        try scratch.floats.withUnsafeBufferPointer { (v) throws(CheckpointError) in
            try scratch.bytes.withUnsafeMutableBufferPointer { (out) throws(CheckpointError) in
                do throws(CodecError) {
                    try ElementCodec.encode(t.dtype, from: UnsafeBufferPointer(rebasing: v[0..<n]), into: UnsafeMutableRawBufferPointer(out))
                } catch {
                    throw .codec(file: "output", tensor: t.name, problem: error)
                }
            }
        }
    }

    /// Rounds `values` to `dtype` in place.
    private static func roundTrip(_ values: UnsafeMutableBufferPointer<Float>, _ dtype: DType, _ file: String, _ name: String) throws(CheckpointError) {
        var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: values.count) ?? 0)
        do throws(CodecError) {
            try bytes.withUnsafeMutableBufferPointer { (b) throws(CodecError) in
                try ElementCodec.encode(dtype, from: UnsafeBufferPointer(values), into: UnsafeMutableRawBufferPointer(b))
                try ElementCodec.decode(dtype, from: UnsafeRawBufferPointer(UnsafeMutableRawBufferPointer(b)), into: values)
            }
        } catch {
            throw .codec(file: file, tensor: name, problem: error)
        }
    }
}
