// Throughput of the ggml block codecs on one core: decode and encode a 16 M-element
// tensor several times and report the best pass, in elements per second.
//
//   swift run -c release --package-path Benchmarks GGUFBench [elements] [passes]
import Checkpoints
import Foundation

let arguments = CommandLine.arguments
let elements = arguments.count > 1 ? Int(arguments[1])! : 1 << 24
let passes = arguments.count > 2 ? Int(arguments[2])! : 5

var values = [Float](repeating: 0, count: elements)
var state: UInt64 = 0x9E37_79B9_7F4A_7C15
for i in values.indices {
    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
    values[i] = (Float(state >> 40) / Float(1 << 24) - 0.5) * 0.1
}
var decoded = [Float](repeating: 0, count: elements)

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
}

func rate(_ best: Double) -> String {
    String(format: "%7.0f M elements/s", Double(elements) / best / 1e6)
}

print("elements \(elements), best of \(passes) passes, one thread")
for dtype in [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .f16, .bf16] {
    var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: elements)!)
    var encodeBest = Double.infinity
    if dtype.isEncodable {
        for _ in 0..<passes {
            let t = try seconds {
                try values.withUnsafeBufferPointer { src in
                    try bytes.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: src, into: $0) }
                }
            }
            encodeBest = min(encodeBest, t)
        }
    } else {
        // Decode-only types: random quant bytes with the half-precision scales kept finite.
        for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) & 0x3b }
    }
    var decodeBest = Double.infinity
    for _ in 0..<passes {
        let t = try seconds {
            try bytes.withUnsafeBytes { src in
                try decoded.withUnsafeMutableBufferPointer { try ElementCodec.decode(dtype, from: src, into: $0) }
            }
        }
        decodeBest = min(decodeBest, t)
    }
    let encodeText = dtype.isEncodable ? rate(encodeBest) : "      (decode only)"
    print("\(dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0))  decode \(rate(decodeBest))   encode \(encodeText)")
}
