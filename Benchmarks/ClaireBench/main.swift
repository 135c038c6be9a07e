// claire-bench: throughput figures for Claire's kernels on real checkpoints.
//
//   swift run -c release claire-bench decode MODEL [--repeat N]
//   swift run -c release claire-bench ggml [--elements N] [--repeat N]
//
// Prints figures; asserts nothing. See bench/README.md for the workloads.
import Checkpoints
import Foundation

let arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first else {
    print("usage: claire-bench decode MODEL [--repeat N] | ggml [--elements N] [--repeat N]")
    exit(64)
}
let benchmarks: [String: ([String]) throws -> Void] = [
    "decode": DecodeBenchmark.run,
    "ggml": GGMLCodecBenchmark.run,
]
guard let benchmark = benchmarks[command] else {
    print("unknown benchmark '\(command)'; known: \(benchmarks.keys.sorted().joined(separator: ", "))")
    exit(64)
}
do {
    try benchmark(Array(arguments.dropFirst()))
} catch {
    print("error: \(error)")
    exit(1)
}
