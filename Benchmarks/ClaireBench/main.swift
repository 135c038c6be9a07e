// claire-bench: throughput figures for Claire's kernels on real checkpoints.
//
//   swift run -c release claire-bench decode MODEL [--repeat N]
//
// Prints figures; asserts nothing. See bench/README.md for the workloads.
import Checkpoints
import Foundation

let arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first else {
    print("usage: claire-bench decode MODEL [--repeat N]")
    exit(64)
}
let benchmarks: [String: ([String]) throws -> Void] = [
    "decode": DecodeBenchmark.run,
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
