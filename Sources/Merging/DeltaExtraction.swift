import Checkpoints
import Foundation

/// Extracts a fine-tuned checkpoint's difference from its base into a `.delta`
/// file, and rebuilds the fine-tuned checkpoint from a delta and the base.
public enum DeltaExtraction {
    /// How the stored entries are chosen when density < 1.
    public enum Selection: String, Sendable, CaseIterable {
        /// The entries of largest |fine-tuned − base| (TIES trim).
        case magnitude
        /// Each changed entry with probability `density` (DARE), from the seeded generator.
        case random
    }

    /// What an extraction stored.
    public struct Summary: Sendable {
        public var tensors: Int
        public var elements: Int
        public var changed: Int
        public var kept: Int
        /// Bytes of the compressed blobs.
        public var bytes: Int
        /// Stored bytes of the fine-tuned checkpoint's tensors.
        public var tunedBytes: Int
    }

    /// Tensors encoded in parallel before they are appended in order.
    static let batchSize = 8

    /// Writes the delta of `tuned` against `base` to `output`. Shards of input folders
    /// that are links leaving them are refused unless `followSymlinks`. A LoRA adapter
    /// folder as `tuned` stands for the model `lora merge` writes, each tensor made as it
    /// is encoded.
    public static func extract(tuned tunedPath: String, base basePath: String, output: String, density: Double,
                               selection: Selection, seed: UInt64, overwrite: Bool, followSymlinks: Bool = false,
                               workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                               progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) throws -> Summary {
        guard density > 0 && density <= 1 else { throw MergeError.badParameter(name: "density", problem: "must be in (0, 1], got \(density)") }
        let base = try Checkpoint.open(basePath, followSymlinks: followSymlinks)
        let adapter = LoRAAdapter.isAdapter(tunedPath) ? try LoRAAdapter.open(tunedPath, base: base, followSymlinks: followSymlinks) : nil
        // An adapter's fine-tune has the base's tensors.
        let tuned = try adapter.map { _ in base } ?? Checkpoint.open(tunedPath, followSymlinks: followSymlinks)
        // `apply` writes safetensors: a type it cannot write is refused before any output exists.
        if let t = tuned.tensors.first(where: { !$0.dtype.isSafetensorsType }) {
            throw CheckpointError.conversion(file: tunedPath, problem: .unsupportedType(
                "\(t.dtype) (tensor '\(t.name)') in safetensors, which a delta is applied into; convert to a float type first"))
        }
        let writer = try SparseDelta.Writer(path: output, overwrite: overwrite)
        let tensors = tuned.tensors
        var summary = Summary(tensors: tensors.count, elements: 0, changed: 0, kept: 0, bytes: 0, tunedBytes: tuned.tensorBytes)
        do {
            var start = 0
            while start < tensors.count {
                let batch = Array(tensors[start..<min(start + batchSize, tensors.count)])
                let scratches = ConversionScratch.perWorker(workers)
                let before = start
                let results = try WorkerQueue.map(count: batch.count, workers: workers,
                                                  progress: { progress(before + $0, tensors.count) }) { (worker, i) throws(CheckpointError) in
                    let t = batch[i], scratch = scratches[worker]
                    defer { tuned.release(t) }
                    if let adapter, try LoRAMerging.merged(t, base: base, adapter: adapter, into: scratch) {
                        // The merged bytes stay in `scratch.bytes`, which `encode` does not use.
                        return try scratch.bytes.withUnsafeBufferPointer { (b) throws(CheckpointError) in
                            try encode(t, bytes: UnsafeRawBufferPointer(b), file: adapter.weights.path, base: base, density: density,
                                       selection: selection, seed: seed, scratch: scratch)
                        }
                    }
                    return try encode(t, bytes: tuned.data(of: t), file: tuned.path, base: base, density: density,
                                      selection: selection, seed: seed, scratch: scratch)
                }
                for encoded in results {
                    try writer.append(encoded)
                    summary.elements += encoded.record.elementCount
                    summary.changed += encoded.record.changed
                    summary.kept += encoded.record.kept
                    summary.bytes += encoded.record.blobSize
                }
                start += batch.count
            }
            let metadata = tuned.format == .safetensors ? tuned.metadata : []
            try writer.commit(method: selection.rawValue, density: density, seed: seed, metadata: metadata)
        } catch {
            writer.abort()
            throw error
        }
        return summary
    }

    /// Encodes one tensor: sparse against a base tensor of the same dtype and shape, whole otherwise.
    /// `tunedBytes` are the fine-tuned tensor's stored bytes (from `file`).
    static func encode(_ t: TensorEntry, bytes tunedBytes: UnsafeRawBufferPointer, file: String, base: Checkpoint, density: Double,
                       selection: Selection, seed: UInt64, scratch: ConversionScratch) throws(CheckpointError) -> SparseDelta.EncodedTensor {
        guard let b = base.tensor(named: t.name), b.dtype == t.dtype, b.shape == t.shape, t.dtype.blockElements == 1 else {
            return SparseDelta.encode(name: t.name, dtype: t.dtype, shape: t.shape, tuned: tunedBytes, base: nil,
                                      changed: t.elementCount, positions: [])
        }
        let baseBytes = base.data(of: b)
        let width = t.dtype.blockBytes
        let n = t.elementCount
        // memoryEqual reads `width` bytes at i·width for i < n from both.
        precondition(tunedBytes.count >= n * width && baseBytes.count >= n * width, "tensor '\(t.name)' shorter than its shape")
        var changed = 0
        for i in 0..<n where !memoryEqual(tunedBytes, baseBytes, at: i * width, width) { changed += 1 }
        // Integer and opaque tensors are kept whole: thinning them has no meaning.
        let thinned = density < 1 && changed > 0 && t.dtype.isDecodable && t.dtype.isFloatingPoint
        guard thinned else {
            return SparseDelta.encode(name: t.name, dtype: t.dtype, shape: t.shape, tuned: tunedBytes, base: baseBytes,
                                      changed: changed, keptCount: changed) { !memoryEqual(tunedBytes, baseBytes, at: $0 * width, width) }
        }
        // δ in scratch.floats (zero where the stored bits agree), then thinned in place.
        ConversionScratch.fit(&scratch.floats, n)
        ConversionScratch.fit(&scratch.moreFloats, n)
        do throws(CodecError) {
            try scratch.floats.withUnsafeMutableBufferPointer { (v) throws(CodecError) in
                try ElementCodec.decode(t.dtype, from: tunedBytes, into: v)
            }
        } catch {
            throw .codec(file: file, tensor: t.name, problem: error)
        }
        try scratch.moreFloats.withUnsafeMutableBufferPointer { (v) throws(CheckpointError) in try base.decode(b, into: v) }
        for i in 0..<n {
            scratch.floats[i] = memoryEqual(tunedBytes, baseBytes, at: i * width, width) ? 0 : scratch.floats[i] - scratch.moreFloats[i]
        }
        let sparsifier: Sparsifier = selection == .magnitude ? .magnitude : .random
        sparsifier.sparsify(&scratch.floats, density: density, rescale: .none,
                            stream: CounterRandom(seed: seed, tensor: t.name, model: 0))
        var kept = 0
        for i in 0..<n where scratch.floats[i] != 0 { kept += 1 }
        let delta = scratch.floats
        return SparseDelta.encode(name: t.name, dtype: t.dtype, shape: t.shape, tuned: tunedBytes, base: baseBytes,
                                  changed: changed, keptCount: kept) { delta[$0] != 0 }
    }

    @inline(__always)
    static func memoryEqual(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, at offset: Int, _ width: Int) -> Bool {
        switch width {
        case 2: return a.loadUnaligned(fromByteOffset: offset, as: UInt16.self) == b.loadUnaligned(fromByteOffset: offset, as: UInt16.self)
        case 4: return a.loadUnaligned(fromByteOffset: offset, as: UInt32.self) == b.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
        case 8: return a.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == b.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        default:
            for k in 0..<width where a[offset + k] != b[offset + k] { return false }
            return true
        }
    }

    /// Rebuilds the fine-tuned checkpoint from `deltaPath` and `basePath` into
    /// `output` (a folder, or one file when it ends in `.safetensors`); config and
    /// tokenizer files are copied from the base folder. Files of the base folder that
    /// are links leaving it are refused unless `followSymlinks`.
    public static func apply(delta deltaPath: String, base basePath: String, output: String, overwrite: Bool,
                             followSymlinks: Bool = false,
                             maxShardSize: Int = HFFolderWriter.defaultMaxShardSize,
                             workers: Int = ProcessInfo.processInfo.activeProcessorCount,
                             progress: @escaping @Sendable (Int, Int) -> Void = { _, _ in }) throws -> Int {
        let delta = try SparseDelta.File(path: deltaPath)
        let base = try Checkpoint.open(basePath, followSymlinks: followSymlinks)
        let records = delta.header.tensors
        // Every problem with the base is found before anything is written.
        for r in records where r.mode == .sparse {
            guard let b = base.tensor(named: r.name) else {
                throw CheckpointError.delta(file: deltaPath, violation: .baseMissing(tensor: r.name))
            }
            guard b.shape == r.shape else {
                throw CheckpointError.delta(file: deltaPath, violation: .baseShapeMismatch(tensor: r.name, expected: r.shape, found: b.shape))
            }
            guard b.dtype == r.dtype else {
                throw CheckpointError.delta(file: deltaPath, violation: .baseDTypeMismatch(tensor: r.name, expected: r.dtype, found: b.dtype))
            }
        }
        let specs = records.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let metadata = delta.header.metadata.compactMap { e in e.value.stringValue.map { (key: e.key, value: $0) } }
        let (writer, folder) = try FormatConversion.safetensorsOutput(output, tensors: specs, metadata: metadata.isEmpty ? nil : metadata,
                                                                      maxShardSize: maxShardSize, overwrite: overwrite)
        let scratches = ConversionScratch.perWorker(workers)
        try writer.committing { () throws(CheckpointError) in
            try WorkerQueue.forEach(count: records.count, workers: workers, progress: { progress($0, records.count) }) { (worker, i) throws(CheckpointError) in
                let scratch = scratches[worker]
                let r = records[i]
                ConversionScratch.fit(&scratch.bytes, r.dtype.byteCount(forElements: r.elementCount) ?? 0)
                let baseTensor = r.mode == .sparse ? base.tensor(named: r.name) : nil
                try scratch.bytes.withUnsafeMutableBufferPointer { (out) throws(CheckpointError) in
                    let bytes = UnsafeMutableRawBufferPointer(out)
                    try delta.reconstruct(r, base: baseTensor.map { base.data(of: $0) }, into: bytes)
                    try writer.write(r.name, bytes: UnsafeRawBufferPointer(bytes))
                }
                if let baseTensor { base.release(baseTensor) }
            }
            if let folder { try FormatConversion.copySideFiles(from: basePath, into: folder, followSymlinks: followSymlinks) }
        }
        return records.count
    }
}
