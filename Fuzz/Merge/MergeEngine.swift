// libFuzzer entry point for the merge engine (see scripts/fuzz.sh, target `merge`):
// the input picks a method, its parameters, a tensor shape, the input type, the
// thread count and the executor's chunk and window sizes; the executor's output is
// compared with `ReferenceMerge` and any difference beyond the documented bound stops
// the run. Built as a SwiftPM executable with `-D CLAIRE_FUZZ` and the fuzzer
// sanitizer; built normally, it replays the inputs named on the command line.

import Checkpoints
import Foundation
import MergeReference
@_spi(Testing) import Merging

/// Reads parameters from the fuzz input, zeros past its end.
struct InputReader {
    var bytes: UnsafeRawBufferPointer
    var offset = 0

    mutating func byte() -> Int {
        defer { offset += 1 }
        return offset < bytes.count ? Int(bytes[offset]) : 0
    }

    mutating func pick<T>(_ choices: [T]) -> T { choices[byte() % choices.count] }

    /// A number 0..<limit from two bytes.
    mutating func number(_ limit: Int) -> Int { (byte() << 8 | byte()) % max(limit, 1) }
}

/// A fresh temporary folder for one input's checkpoints (the caller removes it).
func makeFolder() -> String {
    let path = NSTemporaryDirectory() + "claire-fuzz-merge-\(getpid())"
    try? FileManager.default.removeItem(atPath: path)
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func writeTensor(_ path: String, name: String, shape: [Int], values: [Float], dtype: DType) throws {
    let writer = try SafetensorsFileWriter(path: path, tensors: [TensorSpec(name: name, dtype: dtype, shape: shape)])
    let bytes = ReferenceInputs.bytes(values, dtype)
    try bytes.withUnsafeBytes { try writer.write(name, bytes: $0) }
    try writer.finish()
}

/// Collects merged tensors in memory (the executor writes from one thread at a time).
final class MemorySink: TensorSink, @unchecked Sendable {
    var tensors: [String: [UInt8]] = [:]
    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError) { tensors[name] = Array(bytes) }
    func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError) {
        precondition(offset == (tensors[name]?.count ?? 0), "pieces out of order")
        tensors[name, default: []].append(contentsOf: bytes)
    }
    func commit() throws(CheckpointError) {}
    func abort() {}
}

/// Runs one fuzz input; traps when the engine and the reference disagree.
func runOne(_ input: UnsafeRawBufferPointer) {
    var r = InputReader(bytes: input)
    let method = r.pick(MergeMethod.allCases)
    let dtype = r.pick([DType.f32, .bf16, .f16])
    let threads = 1 + r.byte() % 2
    let chunk = 256 * (1 + r.byte() % 4)
    let span = 256 * (1 + r.byte() % 8)
    // Output windows of 256 to 1,280 entries (a byte once read for another size picks them,
    // so saved inputs keep their meaning).
    let window = 256 * (1 + (chunk / 256 + span / 256) % 5)
    // Around chunk boundaries and multiples of 256 most of the time, anywhere up to 3000 otherwise.
    var count: Int
    switch r.byte() % 4 {
    case 0: count = 1 + r.number(3000)
    case 1: count = max(1, chunk * (1 + r.byte() % 3) + r.byte() % 5 - 2)
    case 2: count = max(1, span * (1 + r.byte() % 2) + r.byte() % 5 - 2)
    default: count = 1 + r.byte() % 8
    }
    var shape = [count]
    if r.byte() % 2 == 1 {
        let columns = 1 + r.number(400)
        let rows = max(1, count / columns)
        shape = [rows, columns]
        count = rows * columns
    }
    var models = 1 + r.byte() % 3
    if method == .modelStock { models = max(models, 2) }
    if method == .slerp || method == .passthrough { models = 1 }
    if method == .nuslerp { models = 2 }
    let name = "model.layers.0.mlp.up_proj.weight"
    let (base, tuned) = ReferenceInputs.trio(count: count, models: models, dtype: dtype, seed: UInt64(r.byte() << 8 | r.byte()))

    var p = ReferenceMerge.Parameters(method: method, models: models)
    var specs: [ModelSpec] = []
    var global: [String: ParameterValue] = [:]
    let fuzzFolder = makeFolder()
    defer { try? FileManager.default.removeItem(atPath: fuzzFolder) }
    let basePath = fuzzFolder + "/base.safetensors"
    var paths: [String] = []
    do {
        try writeTensor(basePath, name: name, shape: shape, values: base, dtype: dtype)
        for m in 0..<models {
            paths.append(fuzzFolder + "/model\(m).safetensors")
            try writeTensor(paths[m], name: name, shape: shape, values: tuned[m], dtype: dtype)
        }
    } catch {
        fatalError("cannot write the fuzz checkpoints: \(error)")
    }
    switch method {
    case .slerp:
        let t = Float(r.byte()) / 255
        specs = [ModelSpec(path: basePath), ModelSpec(path: paths[0])]
        global["t"] = .number(Double(t))
        p.t = Float(Double(t))
    case .passthrough:
        let scale = Double(r.byte()) / 64
        specs = [ModelSpec(path: paths[0], parameters: ["scale": .number(scale)])]
        p.scale = Float(scale)
    case .modelStock:
        specs = paths.map { ModelSpec(path: $0) }
        p.filterWise = r.byte() % 2 == 1
        if p.filterWise { global["filter_wise"] = .number(1) }
    default:
        for m in 0..<models {
            let weight = Double(1 + r.byte() % 8) / 4
            var parameters: [String: ParameterValue] = ["weight": .number(weight)]
            p.weights[m] = Float(weight)
            if let sparsifier = method.sparsifier {
                var density = r.pick([0, 0.01, 0.1, 0.3, 0.5, 0.9, 1, Double(r.byte()) / 255])
                if sparsifier == .dellaMagprune {
                    density = min(max(density, 0.02), 0.98)
                    let epsilon = min(density, 1 - density) / 2
                    parameters["epsilon"] = .number(epsilon)
                    p.epsilons[m] = epsilon
                }
                parameters["density"] = .number(density)
                p.densities[m] = density
                if sparsifier == .magnitudeOutliers {
                    let gamma = Double(r.byte() % 16) / 100
                    parameters["gamma"] = .number(gamma)
                    p.gammas[m] = gamma
                }
            }
            specs.append(ModelSpec(path: paths[m], parameters: parameters))
        }
        if method != .linear {
            let lambda = Double(1 + r.byte() % 8) / 4
            global["lambda"] = .number(lambda)
            p.lambda = Float(lambda)
        }
        if r.byte() % 3 == 0 {
            p.normalize.toggle()
            global["normalize"] = .number(p.normalize ? 1 : 0)
        }
    }
    let rescale: Rescale? = r.pick([nil, Rescale.none, .l1, .inverse])
    let consensus: Consensus? = r.pick([nil, Consensus.sum, .count])
    let seed = UInt64(r.byte())
    let plan = MergePlan(method: method, base: method == .linear ? nil : basePath, models: specs, parameters: global,
                         rescale: rescale, consensus: consensus, seed: seed)
    p.rescale = plan.effectiveRescale
    p.consensus = plan.effectiveConsensus
    p.seed = seed

    // A plan the engine refuses (density 0 with inverse rescale) is not a finding.
    guard let prepared = try? PreparedMerge.prepare(plan) else { return }
    let sink = MemorySink()
    do {
        try MergeExecutor(prepared, threads: threads, chunkElements: chunk, windowElements: window)
            .run(into: sink)
    } catch let MergeError.badParameter(name, _) where method == .multislerp && name == "weight" {
        // Three opposite task vectors whose weights balance out: refused, as documented.
        return
    } catch {
        fatalError("\(method) \(shape) \(dtype): the executor failed: \(error)")
    }
    let expected = ReferenceMerge.merge(name: name, shape: shape, base: method == .linear ? nil : base, models: tuned,
                                        parameters: p)
    var comparison = ReferenceComparison()
    comparison.add(expected, actual: sink.tensors[name] ?? [], dtype: dtype, name: name)
    if comparison.mismatches > 0 {
        fatalError("\(method) \(shape) \(dtype) threads \(threads) chunk \(chunk) window \(window) rescale \(p.rescale) consensus \(String(describing: p.consensus)): \(comparison.mismatches) of \(comparison.elements) entries differ, first \(comparison.firstMismatch ?? "")")
    }
}

#if CLAIRE_FUZZ
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMergeEngine(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    runOne(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver, for executables that bring their own entry point.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32
) -> Int32

/// The entry point SwiftPM links a Linux executable to (in place of libFuzzer's `main`).
@_cdecl("MergeFuzz_main")
public func mergeFuzzMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments) { data, size in fuzzMergeEngine(data, size) }
}
#else
@main
enum ReplayMergeInputs {
    /// Replays the fuzz inputs named on the command line.
    static func main() throws {
        for path in CommandLine.arguments.dropFirst() {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            data.withUnsafeBytes { runOne($0) }
            print("\(path): same as the reference")
        }
    }
}
#endif
