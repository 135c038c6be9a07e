import Checkpoints
import Merging

/// A fine-tuned input of a statistics run.
public enum StatisticsInput: Sendable {
    /// A full checkpoint: a safetensors file, a GGUF file or a model folder. A GGUF
    /// file of the Llama family against a Hugging Face base (or the reverse) is read
    /// through `FormatBridge`: names translated, Q/K rows in the base's order.
    case checkpoint(Checkpoint)
    /// A LoRA adapter opened against the run's base: δ = scale·B·A where it adapts a
    /// tensor, the saved tensor − base for modules it saves whole, 0 elsewhere.
    case adapter(LoRAAdapter)

    /// The file or folder the input was opened from.
    public var path: String {
        switch self {
        case .checkpoint(let checkpoint): return checkpoint.path
        case .adapter(let adapter): return adapter.path
        }
    }

    /// The checkpoint whose files hold the tensors read: an adapter's weights file.
    var checkpoint: Checkpoint {
        switch self {
        case .checkpoint(let checkpoint): return checkpoint
        case .adapter(let adapter): return adapter.weights
        }
    }
}

/// Where one fine-tuned input's δ for one compared tensor comes from.
enum DeltaSource {
    /// A stored tensor minus the base's; `rowOrder` is set when it stores its rows in
    /// another order than the base (a Q or K projection in the other format's layout).
    case tensor(TensorEntry, rowOrder: RowOrder?)
    /// An adapter's tensor minus the base's: `saved` (a tensor of the adapter's weights
    /// file standing for the base's) or else the base's own values, plus `module`'s
    /// scale·B·A. With neither, δ = 0.
    case adapter(LoRAAdapter, module: LoRAModule?, saved: TensorEntry?)

    /// The tensor read from the input's checkpoint, if any.
    var stored: TensorEntry? {
        switch self {
        case .tensor(let entry, _): return entry
        case .adapter(_, _, let saved): return saved
        }
    }
}

extension DeltaStatistics {
    /// `compute` for full checkpoints.
    public static func compute(
        base: Checkpoint, tuned: [Checkpoint], names: [String], options: DeltaStatisticsOptions = DeltaStatisticsOptions()
    ) throws(DeltaStatisticsError) -> DeltaStatisticsReport {
        try compute(base: base, tuned: tuned.map { StatisticsInput.checkpoint($0) }, names: names, options: options)
    }
}

extension StatisticsRun {
    /// Decodes one tensor chunk by chunk into the scratch, δ in place of each fine-tuned
    /// chunk, and calls `body` with the chunk length. Pages are mapped ahead a slice
    /// at a time and handed back behind, and at the end with the blocks the tensor
    /// shares with its neighbours.
    func stream(_ tensor: PlannedTensor, _ scratch: StatisticsScratch, _ body: (Int) -> Void) throws(CheckpointError) {
        // Chunks end on whole blocks of every input's type (block sizes 1, 32 and 256
        // each divide the next, so the largest is a multiple of all).
        let block = ([tensor.base.dtype] + tensor.tuned.compactMap { $0.stored?.dtype }).map(\.blockElements).max() ?? 1
        let step = options.chunkElements / block * block
        precondition(step > 0, "a chunk of \(options.chunkElements) elements holds no whole block of \(block)")
        let n = tensor.base.elementCount
        for start in stride(from: 0, to: n, by: 64 * step) {
            let end = min(n, start + 64 * step)
            let mapped = try pages(tensor, start..<end)
            for (file, range) in mapped { file.populate(range) }
            for chunk in stride(from: start, to: end, by: step) {
                let elements = chunk..<min(end, chunk + step)
                try decode(0, tensor.base, elements, into: scratch.base)
                for (d, source) in tensor.tuned.enumerated() {
                    try formDelta(d, source, of: tensor, elements, scratch)
                }
                body(elements.count)
            }
            for (file, range) in mapped { file.release(range) }
        }
        for (file, range) in try pages(tensor, 0..<n) { file.releaseBlocks(around: range) }
    }

    /// δ of fine-tuned input `d` over `elements` into `scratch.deltas[d]`, the base's
    /// values being in `scratch.base`.
    private func formDelta(_ d: Int, _ source: DeltaSource, of tensor: PlannedTensor, _ elements: Range<Int>,
                           _ scratch: StatisticsScratch) throws(CheckpointError) {
        let delta = scratch.deltas[d], count = elements.count, input = 1 + d
        switch source {
        case .tensor(let tuned, let order):
            let requantized = options.quantizedDelta.applies(tuned: tuned.dtype, base: tensor.base.dtype)
            if let order {
                // Row by row from where the input stores each row; a row holds whole blocks.
                // Each piece [start, end) lies in `elements`, so it lands inside the chunk's
                // `count` floats of `delta`, and its source rows lie in the tensor (`sourceRow`
                // permutes rows of the same head).
                var start = elements.lowerBound
                while start < elements.upperBound {
                    let row = start / order.columns, end = min(elements.upperBound, (row + 1) * order.columns)
                    let shift = (order.sourceRow(row) - row) * order.columns
                    try decode(input, tuned, (start + shift)..<(end + shift), into: delta + (start - elements.lowerBound))
                    start = end
                }
            } else {
                let source = inputs[input].files[tuned.fileIndex].bytes(try bytes(input, tuned, elements))
                if tuned.dtype == .bf16 && !requantized, source.count == 2 * count, let address = source.baseAddress {
                    DeltaKernels.subtract(scratch.base, fromBF16: address, into: delta, count)
                    return
                }
                try decode(input, tuned, elements, into: delta)
            }
            if requantized {
                // `elements` starts and ends on whole blocks of every input (see `step`); the
                // base's blocks in its own row order are the input's (rows hold whole blocks).
                QuantizedDelta.subtractRequantized(UnsafeBufferPointer(start: scratch.base, count: count),
                                                   from: UnsafeMutableBufferPointer(start: delta, count: count), as: tuned.dtype)
            } else {
                DeltaKernels.subtract(scratch.base, from: delta, count)
            }
        case .adapter(let adapter, let module, let saved):
            let output = UnsafeMutableBufferPointer(start: delta, count: count)
            if let saved {
                // The merged model's tensor is the saved one (plus the product when the
                // layer is adapted too), taken in Float32 and compared with the base.
                try decode(input, saved, elements, into: delta)
                if let module { try adapter.delta(module, elements: elements, into: output, adding: true) }
                DeltaKernels.subtract(scratch.base, from: delta, count)
            } else if let module {
                try adapter.delta(module, elements: elements, into: output)
            } else {
                output.update(repeating: 0)
            }
        }
    }

    /// The file ranges elements `elements` of `tensor` read: the base's, and each
    /// input's tensor — widened to whole heads when its rows are read in another order,
    /// which moves rows only within a head.
    private func pages(_ tensor: PlannedTensor, _ elements: Range<Int>) throws(CheckpointError) -> [(MappedFile, Range<Int>)] {
        var pages = [(inputs[0].files[tensor.base.fileIndex], try bytes(0, tensor.base, elements))]
        for (d, source) in tensor.tuned.enumerated() {
            guard let entry = source.stored else { continue }
            var range = elements
            if case .tensor(_, let order?) = source {
                let group = order.rows / order.heads
                let first = elements.lowerBound / order.columns / group * group
                let end = min(order.rows, ((elements.upperBound - 1) / order.columns / group + 1) * group)
                range = (first * order.columns)..<(end * order.columns)
            }
            pages.append((inputs[1 + d].files[entry.fileIndex], try bytes(1 + d, entry, range)))
        }
        return pages
    }

    /// The bytes of elements `elements` of `entry` in its file.
    private func bytes(_ input: Int, _ entry: TensorEntry, _ elements: Range<Int>) throws(CheckpointError) -> Range<Int> {
        // A chunk of a block-quantized type that does not end on a block boundary has no byte range.
        guard let from = entry.dtype.byteCount(forElements: elements.lowerBound),
              let to = entry.dtype.byteCount(forElements: elements.upperBound), to <= entry.byteCount else {
            throw .codec(file: inputs[input].files[entry.fileIndex].path, tensor: entry.name,
                         problem: .sizeMismatch(dtype: entry.dtype, elements: elements.count, bytes: 0))
        }
        return (entry.offset + from)..<(entry.offset + to)
    }

    private func decode(_ input: Int, _ entry: TensorEntry, _ elements: Range<Int>, into destination: UnsafeMutablePointer<Float>) throws(CheckpointError) {
        let file = inputs[input].files[entry.fileIndex], source = file.bytes(try bytes(input, entry, elements))
        do {
            try ElementCodec.decode(entry.dtype, from: source, into: UnsafeMutableBufferPointer(start: destination, count: elements.count))
        } catch {
            throw .codec(file: file.path, tensor: entry.name, problem: error)
        }
    }
}
