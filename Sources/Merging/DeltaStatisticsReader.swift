import Checkpoints
import Foundation

/// Reads tensor elements with `pread(2)` into a caller's buffer and decodes
/// them to Float32. Statistics passes read each input once, in order, so
/// copying from the page cache costs less than mapping the pages (a fault
/// every few pages, then `madvise` to hand them back, which flushes every
/// core's TLB), and nothing of the inputs stays resident.
final class CheckpointReader: @unchecked Sendable {
    /// [checkpoint][file] descriptors; checkpoint 0 is the base.
    private let descriptors: [[Int32]]
    private let checkpoints: [Checkpoint]

    init(_ checkpoints: [Checkpoint]) throws(CheckpointError) {
        self.checkpoints = checkpoints
        var descriptors: [[Int32]] = []
        for checkpoint in checkpoints {
            var files: [Int32] = []
            for file in checkpoint.files {
                do {
                    files.append(try InputFile.open(file.path).fd)
                } catch {
                    for list in descriptors + [files] { for fd in list { close(fd) } }
                    throw error
                }
            }
            descriptors.append(files)
        }
        self.descriptors = descriptors
    }

    deinit {
        for list in descriptors { for fd in list { close(fd) } }
    }

    /// Decodes elements [start, start + count) of `entry` of checkpoint
    /// `index` into `destination`, reading through `raw` (at least 8·count bytes).
    func read(_ index: Int, _ entry: TensorEntry, start: Int, count: Int, raw: UnsafeMutableRawPointer,
              into destination: UnsafeMutablePointer<Float>) throws(CheckpointError) {
        let width = entry.dtype.blockBytes  // floating-point types store one element per block
        let path = checkpoints[index].files[entry.fileIndex].path
        let bytes = count * width
        var done = 0
        while done < bytes {
            let got = pread(descriptors[index][entry.fileIndex], raw + done, bytes - done, off_t(entry.offset + start * width + done))
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { throw .io(file: path, problem: got < 0 ? String(cString: strerror(errno)) : "file is shorter than its header says") }
            done += got
        }
        do {
            try ElementCodec.decode(entry.dtype, from: UnsafeRawBufferPointer(start: raw, count: bytes),
                                    into: UnsafeMutableBufferPointer(start: destination, count: count))
        } catch {
            throw .codec(file: path, tensor: entry.name, problem: error)
        }
    }
}
