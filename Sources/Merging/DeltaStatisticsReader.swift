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
                let fd = open(file.path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else {
                    let problem = String(cString: strerror(errno))
                    for list in descriptors + [files] { for fd in list { close(fd) } }
                    throw .io(file: file.path, problem: problem)
                }
                files.append(fd)
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
        // `raw` holds 8·count bytes: only types storing each element alone in at most 8 bytes fit.
        guard entry.dtype.blockElements == 1, width <= 8, count >= 0, start >= 0, start + count <= entry.elementCount else {
            throw .codec(file: path, tensor: entry.name, problem: .notDecodable(entry.dtype))
        }
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
