import Checkpoints

/// Reads chunks of input tensors into a worker's Float32 buffers (in the output's
/// row order, noting NaN and infinite values) and encodes merged chunks into the
/// output type, refusing values the type cannot hold.
final class TensorDecoder: @unchecked Sendable {
    let checkpoints: [Checkpoint]
    /// When true, the first NaN or infinite input value stops the merge with an error.
    var strict = false
    /// How deltas of quantized fine-tunes of unquantized bases are taken.
    var quantizedDelta = QuantizedDelta.aware
    /// Input tensors found holding NaN or infinite values.
    let nonFinite = NonFiniteInputs()

    init(_ checkpoints: [Checkpoint]) { self.checkpoints = checkpoints }

    /// Decodes elements `range` of `tensor` into the start of `buffer`, its stored bytes
    /// read into `staging` first (`read`).
    /// - Precondition: `range` lies within the tensor and fits in `buffer`.
    func decode(_ tensor: TensorEntry, in checkpoint: Int, _ range: Range<Int>,
                into buffer: UnsafeMutableBufferPointer<Float>, staging: UnsafeMutableRawBufferPointer) throws
    {
        precondition(range.count <= buffer.count, "\(range.count) elements do not fit a buffer of \(buffer.count)")
        let bytes = try read(tensor, in: checkpoint, range, into: staging)
        let values = UnsafeMutableBufferPointer(rebasing: buffer[0..<range.count])
        do {
            try ElementCodec.decode(tensor.dtype, from: bytes, into: values)
        } catch {
            throw MergeError.checkpoint(.codec(file: checkpoints[checkpoint].files[tensor.fileIndex].path, tensor: tensor.name,
                                               problem: error))
        }
        if !TensorDecoder.allFinite(UnsafeBufferPointer(values)) { try noteNonFinite(tensor, in: checkpoint) }
    }

    /// Copies the stored bytes of elements `range` of `tensor` into the start of `staging`
    /// and returns them. A pass reads its inputs this way rather than through the map,
    /// so no input pages count in the merge's resident set: at 3 B parameters, from a
    /// cold page cache, task_arithmetic's peak fell from 102 to 49 MB in the same time
    /// (the CPU time moves from the decode loops' first reads into the kernel's copies).
    /// - Precondition: `range` lies within the tensor and its bytes fit in `staging`.
    func read(_ tensor: TensorEntry, in checkpoint: Int, _ range: Range<Int>,
              into staging: UnsafeMutableRawBufferPointer) throws -> UnsafeRawBufferPointer {
        let bytes = tensor.dtype.byteRange(of: range)
        precondition(range.lowerBound >= 0 && range.upperBound <= tensor.elementCount && bytes.upperBound <= tensor.byteCount,
                     "elements \(range) outside tensor '\(tensor.name)'")
        precondition(bytes.count <= staging.count, "\(bytes.count) bytes do not fit a staging buffer of \(staging.count)")
        guard let start = staging.baseAddress, !bytes.isEmpty else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        do {
            try checkpoints[checkpoint].files[tensor.fileIndex].read((tensor.offset + bytes.lowerBound)..<(tensor.offset + bytes.upperBound),
                                                                      into: start)
        } catch {
            throw MergeError.checkpoint(error)
        }
        return UnsafeRawBufferPointer(start: start, count: bytes.count)
    }

    /// Decodes elements `range` of a model's tensor, in the output's row order, into
    /// the start of `buffer`; rows stored in another order are read row by row. A LoRA
    /// adapter's model is its base's tensor plus the adapter's δ, added in Float32.
    func decode(_ input: MergeInput, _ range: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>,
                staging: UnsafeMutableRawBufferPointer) throws {
        if let rows = input.rows {
            try decode(input.tensor, in: input.checkpoint, mappedBy: rows, range, into: buffer, staging: staging)
            return
        }
        guard let order = input.rowOrder else {
            try decode(input.tensor, in: input.checkpoint, range, into: buffer, staging: staging)
            if let lora = input.lora { try addDelta(lora, range, into: buffer) }
            return
        }
        precondition(range.lowerBound >= 0 && range.count <= buffer.count, "\(range.count) elements do not fit a buffer of \(buffer.count)")
        var start = range.lowerBound
        while start < range.upperBound {
            let row = start / order.columns
            let end = min(range.upperBound, (row + 1) * order.columns)
            let shift = (order.sourceRow(row) - row) * order.columns
            try decode(input.tensor, in: input.checkpoint, (start + shift)..<(end + shift),
                       into: UnsafeMutableBufferPointer(rebasing: buffer[(start - range.lowerBound)...]), staging: staging)
            start = end
        }
    }

    /// The base's elements `range` in `s.base`, in the job's compute type (as mergekit
    /// loads every tensor in it).
    func decodeBase(_ job: MergeJob, _ range: Range<Int>, _ s: WorkerScratch) throws {
        if let rows = job.baseRows {
            try decode(job.template, in: job.templateCheckpoint, mappedBy: rows, range, into: s.base, staging: s.staging)
        } else {
            try decode(job.template, in: job.templateCheckpoint, range, into: s.base, staging: s.staging)
        }
        job.computeType.round(UnsafeMutableBufferPointer(rebasing: s.base[0..<range.count]))
    }

    /// Decodes elements `range` of a tensor's rows as `rows` orders them (the output
    /// tokenizer's): runs of consecutive stored rows in one read, rows the model lacks
    /// from `rows.filled`.
    /// - Precondition: `range` lies within `rows.source.count` rows and fits in `buffer`;
    ///   every non-negative entry of `rows.source` is a row of `tensor` (checked when the
    ///   merge was prepared).
    func decode(_ tensor: TensorEntry, in checkpoint: Int, mappedBy rows: VocabularyRows, _ range: Range<Int>,
                into buffer: UnsafeMutableBufferPointer<Float>, staging: UnsafeMutableRawBufferPointer) throws
    {
        let width = rows.rowLength
        precondition(width > 0 && range.lowerBound >= 0 && range.upperBound <= rows.source.count * width
                     && range.count <= buffer.count, "elements \(range) outside the mapped rows of '\(tensor.name)'")
        var start = range.lowerBound
        while start < range.upperBound {
            let row = start / width, column = start - row * width
            let source = Int(rows.source[row])
            let at = start - range.lowerBound
            guard source >= 0 else {
                let end = min(range.upperBound, (row + 1) * width)
                let values = rows.filled[-1 - source]
                for i in 0..<(end - start) { buffer[at + i] = values[column + i] }
                start = end
                continue
            }
            // Extend over following rows stored right after this one.
            var last = row
            while (last + 1) * width < range.upperBound, Int(rows.source[last + 1]) == source + (last + 1 - row) { last += 1 }
            let end = min(range.upperBound, (last + 1) * width)
            let first = source * width + column
            try decode(tensor, in: checkpoint, first..<(first + end - start),
                       into: UnsafeMutableBufferPointer(rebasing: buffer[at...]), staging: staging)
            start = end
        }
    }

    /// Model `m`'s elements `range` in the start of `buffer`, in the job's compute type.
    func decodeModel(_ job: MergeJob, _ m: Int, _ range: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>,
                     staging: UnsafeMutableRawBufferPointer) throws {
        try decode(job.inputs[m], range, into: buffer, staging: staging)
        job.computeType.round(UnsafeMutableBufferPointer(rebasing: buffer[0..<range.count]))
    }

    /// Each model's elements `range` in `s.inputs`, in the job's compute type.
    func decodeModels(_ job: MergeJob, _ range: Range<Int>, _ s: WorkerScratch) throws -> [UnsafeBufferPointer<Float>] {
        var models: [UnsafeBufferPointer<Float>] = []
        for m in job.inputs.indices {
            try decodeModel(job, m, range, into: s.inputs[m], staging: s.staging)
            models.append(UnsafeBufferPointer(rebasing: s.inputs[m][0..<range.count]))
        }
        return models
    }

    /// Decodes model `m` and subtracts the base already in `s.base`: δ in `s.inputs[m]`,
    /// rounded to the job's compute type (torch's `tensor - base` in that type).
    func decodeDelta(_ job: MergeJob, _ m: Int, _ range: Range<Int>, _ s: WorkerScratch) throws {
        let input = job.inputs[m]
        let compute = job.computeType
        defer { compute.round(UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<min(range.count, s.inputs[m].count)])) }
        // An adapter's model is its base plus δ in Float32 (see `decode`), whose difference
        // from the merge's base is taken below like any fine-tune's.
        if input.tensor.dtype == .bf16, input.rowOrder == nil, input.lora == nil, input.rows == nil, job.baseRows == nil,
           compute != .f16 {
            // (A BF16 value is already a value of every compute type but F16.)
            // The common case in one pass: BF16 is the upper half of a Float32.
            let d = s.inputs[m], b = s.base
            // The loop below reads elements `range` of the tensor and the first
            // `range.count` entries of both buffers.
            precondition(range.lowerBound >= 0 && range.upperBound <= input.tensor.elementCount
                         && range.count <= d.count && range.count <= b.count, "elements \(range) out of bounds")
            let source = try readBF16(input.tensor, in: input.checkpoint, range, into: s.staging)
            // The largest exponent field seen, as a vectorizable maximum: all ones
            // marks a NaN or an infinity.
            var exponent: Int16 = 0
            for i in 0..<range.count {
                let x = source[i]
                d[i] = Float(bitPattern: UInt32(x) &<< 16) - b[i]
                exponent = max(exponent, Int16(bitPattern: x & 0x7f80))
            }
            if exponent == 0x7f80 { try noteNonFinite(input.tensor, in: input.checkpoint) }
            return
        }
        try decodeModel(job, m, range, into: s.inputs[m], staging: s.staging)
        let delta = UnsafeMutableBufferPointer(rebasing: s.inputs[m][0..<range.count])
        if quantizedDelta.applies(tuned: input.tensor.dtype, base: job.template.dtype) {
            // Chunks start and end on whole blocks (see `byteRange`); rows read in
            // another order are whole blocks too, so the base's blocks in output
            // order are the fine-tune's.
            QuantizedDelta.subtractRequantized(UnsafeBufferPointer(rebasing: s.base[0..<range.count]), from: delta,
                                               as: input.tensor.dtype)
            return
        }
        TaskVector.subtract(UnsafeBufferPointer(delta), UnsafeBufferPointer(rebasing: s.base[0..<range.count]), into: delta)
    }

    /// Adds elements `range` of an adapter's δ to the start of `buffer`.
    private func addDelta(_ lora: LoRAInput, _ range: Range<Int>, into buffer: UnsafeMutableBufferPointer<Float>) throws {
        do {
            try lora.adapter.delta(lora.module, elements: range, into: buffer, adding: true)
        } catch {
            throw MergeError.checkpoint(error)
        }
        if !TensorDecoder.allFinite(UnsafeBufferPointer(rebasing: buffer[0..<range.count])) {
            try noteNonFinite(lora.module.b, in: lora.checkpoint)
        }
    }

    /// Elements `range` of a BF16 tensor, copied into `staging` (`read`): the
    /// returned pointer holds exactly `range.count` values.
    func readBF16(_ tensor: TensorEntry, in checkpoint: Int, _ range: Range<Int>,
                  into staging: UnsafeMutableRawBufferPointer) throws -> UnsafePointer<UInt16> {
        precondition(tensor.dtype == .bf16 && !range.isEmpty, "tensor '\(tensor.name)' is not BF16")
        return try read(tensor, in: checkpoint, range, into: staging).baseAddress!.assumingMemoryBound(to: UInt16.self)
    }

    /// Records that `tensor` of checkpoint `checkpoint` holds NaN or infinite values
    /// (with `strict`, stops the merge).
    private func noteNonFinite(_ tensor: TensorEntry, in checkpoint: Int) throws {
        let file = checkpoints[checkpoint]
        if strict { throw MergeError.nonFiniteInput(file: file.path, tensor: tensor.name) }
        nonFinite.record(tensor.name, checkpoint: checkpoint, path: file.path)
    }

    /// True when no value is NaN or infinite (the exponent field is never all ones).
    static func allFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
        var special: UInt32 = 0
        for v in values { special |= (v.bitPattern & 0x7f80_0000) == 0x7f80_0000 ? 1 : 0 }
        return special == 0
    }

    /// Encodes `s.out` into the bytes of `range` in the open window of `output`.
    func store(_ job: MergeJob, _ range: Range<Int>, _ s: WorkerScratch, into output: OutputWindows) throws {
        precondition(output.job?.name == job.name, "'\(job.name)' is not the tensor in hand")
        try store(job, range, s, encodingInto: output.bytes(for: range))
    }

    /// Encodes `s.out` into `bytes`, exactly the output bytes of `range`.
    private func store(_ job: MergeJob, _ range: Range<Int>, _ s: WorkerScratch,
                       encodingInto bytes: UnsafeMutableRawBufferPointer) throws {
        precondition(range.lowerBound >= 0 && range.count <= s.out.count
                     && job.outputDType.byteRange(of: range).count == bytes.count,
                     "elements \(range) outside the output of '\(job.name)'")
        // Every method's result is a tensor of the compute type before the output cast.
        job.computeType.round(UnsafeMutableBufferPointer(rebasing: s.out[0..<range.count]))
        let values = UnsafeBufferPointer(rebasing: s.out[0..<range.count])
        switch OutputRange.scan(values, as: job.outputDType) {
        case .fits: break
        case .tooLarge: throw MergeError.outputOutOfRange(tensor: job.name, dtype: job.outputDType)
        case .nonFinite:
            // NaN or infinite inputs (allowed without --strict, and reported) carry through;
            // from finite inputs it is the arithmetic that overflowed.
            let sources = [(job.template, job.templateCheckpoint)] + job.inputs.map { ($0.tensor, $0.checkpoint) }
                + job.inputs.compactMap { $0.lora.map { ($0.module.b, $0.checkpoint) } }
            guard sources.contains(where: { nonFinite.contains($0.0.name, checkpoint: $0.1) }) else {
                throw MergeError.outputOutOfRange(tensor: job.name, dtype: job.outputDType)
            }
        }
        do {
            try ElementCodec.encode(job.outputDType, from: values, into: bytes)
        } catch {
            throw MergeError.checkpoint(.codec(file: "output", tensor: job.name, problem: error))
        }
    }
}

/// Input tensors holding NaN or infinite values, gathered from workers.
final class NonFiniteInputs: Sendable {
    private struct Source: Hashable {
        let checkpoint: Int
        let tensor: String
    }
    /// Each source with its message form, `'tensor' in path`.
    private let found = Locked<[Source: String]>([:])

    func record(_ tensor: String, checkpoint: Int, path: String) {
        found.withLock { $0[Source(checkpoint: checkpoint, tensor: tensor)] = "'\(tensor)' in \(path)" }
    }

    /// Whether tensor `tensor` of checkpoint `checkpoint` was recorded.
    func contains(_ tensor: String, checkpoint: Int) -> Bool {
        found.withLock { $0[Source(checkpoint: checkpoint, tensor: tensor)] != nil }
    }

    /// The recorded tensors as `'tensor' in path`, sorted.
    var names: [String] { found.withLock { $0.values.sorted() } }
}
