import Foundation

/// The step every conversion shares: tensors streamed into a sink a window at a time.
extension FormatConversion {
    /// Elements a tensor is converted in at a time: decoded, permuted, encoded and
    /// written a window at a time (4 MB of Float32), so a worker's memory does not grow
    /// with the tensor.
    static let windowElements = 1 << 20

    /// Streams `jobs` into `sink`: each tensor window by window (`convert`), or with
    /// `copyingSameType` its stored bytes when the type does not change (`copy`); input
    /// pages are released as windows are done.
    static func run(_ jobs: [Job], from checkpoint: Checkpoint, into sink: any TensorSink, toGGUF: Bool,
                    copyingSameType: Bool = false, workers: Int, progress: @escaping Progress, output: String)
        throws(CheckpointError)
    {
        let total = jobs.count
        let scratches = ConversionScratch.perWorker(workers)
        try WorkerQueue.forEach(count: total, workers: workers, progress: { progress($0, total) }) { (worker, i) throws(CheckpointError) in
            let job = jobs[i]
            let write = { (bytes: UnsafeRawBufferPointer, offset: Int) throws(CheckpointError) in
                try sink.write(job.spec.name, piece: bytes, at: offset)
            }
            if copyingSameType && job.spec.dtype == job.source.dtype {
                try copy(job.source, of: checkpoint, write: write)
            } else {
                try convert(job.source, of: checkpoint, to: job.spec, heads: job.heads, toGGUF: toGGUF, scratch: scratches[worker],
                            file: output, write: write)
            }
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
            let source = tensor.dtype.byteRange(of: range)
            let absolute = (tensor.offset + source.lowerBound)..<(tensor.offset + source.upperBound)
            mapped.populate(absolute)
            ConversionScratch.fit(&scratch.floats, range.count)
            try scratch.floats.withUnsafeMutableBufferPointer { (values) throws(CheckpointError) in
                guard let p = permutation else { return try decode(tensor, of: checkpoint, range, into: values) }
                if p.columns % tensor.dtype.blockElements != 0 {
                    // Rows that split blocks: the whole tensor (one window), permuted after decoding.
                    ConversionScratch.fit(&scratch.moreFloats, count)
                    try scratch.moreFloats.withUnsafeMutableBufferPointer { (whole) throws(CheckpointError) in
                        try decode(tensor, of: checkpoint, 0..<count, into: whole)
                        LlamaFamily.permuteRows(UnsafeBufferPointer(whole), into: values, rows: p.rows, columns: p.columns,
                                                heads: p.heads, toGGUF: toGGUF)
                    }
                    return
                }
                // Whole heads: every source row lies in the window's own rows.
                let firstRow = range.lowerBound / p.columns
                for row in firstRow..<(range.upperBound / p.columns) {
                    let from = LlamaFamily.sourceRow(row, rows: p.rows, heads: p.heads, toGGUF: toGGUF)
                    let at = (row - firstRow) * p.columns
                    try decode(tensor, of: checkpoint, (from * p.columns)..<((from + 1) * p.columns),
                               into: UnsafeMutableBufferPointer(rebasing: values[at..<(at + p.columns)]))
                }
            }
            try encodeAndWrite(scratch.floats, as: TensorSpec(name: spec.name, dtype: spec.dtype, shape: [range.count]),
                               scratch: scratch, file: file) { (bytes) throws(CheckpointError) in
                try write(bytes, spec.dtype.byteRange(of: range).lowerBound)
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
        let bytes = tensor.dtype.byteRange(of: range)
        let data = checkpoint.data(of: tensor)
        precondition(range.lowerBound >= 0 && range.upperBound <= tensor.elementCount && bytes.upperBound <= data.count
                     && values.count == range.count, "elements \(range) outside tensor '\(tensor.name)'")
        do throws(CodecError) {
            try ElementCodec.decode(tensor.dtype, from: UnsafeRawBufferPointer(rebasing: data[bytes]), into: values)
        } catch {
            throw .codec(file: checkpoint.files[tensor.fileIndex].path, tensor: tensor.name, problem: error)
        }
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
        try scratch.bytes.withUnsafeMutableBufferPointer { (bytes) throws(CheckpointError) in
            let destination = UnsafeMutableRawBufferPointer(bytes)
            do throws(CodecError) {
                try values.withUnsafeBufferPointer { (source) throws(CodecError) in
                    try ElementCodec.encode(spec.dtype, from: source, into: destination)
                }
            } catch {
                throw .codec(file: file, tensor: spec.name, problem: error)
            }
            try write(UnsafeRawBufferPointer(destination))
        }
    }
}
