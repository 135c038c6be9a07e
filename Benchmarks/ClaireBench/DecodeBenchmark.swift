import Checkpoints
import Foundation

/// Opening (header validation) and decoding every tensor to Float32 on one core.
enum DecodeBenchmark {
    static func run(_ arguments: [String]) throws {
        guard let path = arguments.first else { throw BenchmarkError.usage("decode MODEL [--repeat N]") }
        let repeats = option("--repeat", in: arguments) ?? 3
        for round in 1...repeats {
            let openStart = Date()
            let checkpoint = try Checkpoint.open(path)
            let openSeconds = Date().timeIntervalSince(openStart)
            var buffer = [Float](repeating: 0, count: checkpoint.tensors.map(\.elementCount).max() ?? 0)
            var checksum: Float = 0
            let start = Date()
            for tensor in checkpoint.tensors where tensor.dtype.isDecodable {
                try buffer.withUnsafeMutableBufferPointer { all in
                    let slice = UnsafeMutableBufferPointer(rebasing: all[0..<tensor.elementCount])
                    try checkpoint.decode(tensor, into: slice)
                    checksum += slice.first ?? 0
                }
            }
            let seconds = Date().timeIntervalSince(start)
            let bytes = Double(checkpoint.tensorBytes)
            print(String(format: "round %d: open %.1f ms; decoded %d tensors, %.1f MB in %.3f s = %.2f GB/s of input (%.0f M elements/s) [checksum %g]",
                         round, openSeconds * 1000, checkpoint.tensors.count, bytes / 1e6, seconds, bytes / seconds / 1e9,
                         Double(checkpoint.parameterCount) / seconds / 1e6, checksum))
        }
    }
}

enum BenchmarkError: Error, CustomStringConvertible {
    case usage(String)
    var description: String {
        switch self { case .usage(let text): return "usage: claire-bench \(text)" }
    }
}

/// The integer after `name` in `arguments`, if present.
func option(_ name: String, in arguments: [String]) -> Int? {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.count else { return nil }
    return Int(arguments[i + 1])
}
