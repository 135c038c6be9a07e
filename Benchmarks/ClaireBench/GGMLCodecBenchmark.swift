import Checkpoints
import Foundation

/// Throughput of the ggml block codecs on one core: decodes and encodes a synthetic
/// tensor several times per type and reports the best pass, in elements per second.
enum GGMLCodecBenchmark {
    static func run(_ arguments: [String]) throws {
        let elements = option("--elements", in: arguments) ?? 1 << 24
        let passes = option("--repeat", in: arguments) ?? 5
        guard elements > 0, elements % 256 == 0, passes > 0 else {
            throw BenchmarkError.usage("ggml [--elements N (a multiple of 256)] [--repeat N]")
        }
        var values = [Float](repeating: 0, count: elements)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in values.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            values[i] = (Float(state >> 40) / Float(1 << 24) - 0.5) * 0.1
        }
        var decoded = [Float](repeating: 0, count: elements)
        print("\(elements) elements, best of \(passes) passes, one thread")
        for dtype in [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .f16, .bf16] {
            var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: elements)!)
            var encodeBest = Double.infinity
            if dtype.isEncodable {
                for _ in 0..<passes {
                    encodeBest = min(encodeBest, try seconds {
                        try values.withUnsafeBufferPointer { src in
                            try bytes.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: src, into: $0) }
                        }
                    })
                }
            } else {
                // Decode-only types: arbitrary quant bytes, masked so every half-precision scale is finite.
                for i in bytes.indices { bytes[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) & 0x3b }
            }
            var decodeBest = Double.infinity
            for _ in 0..<passes {
                decodeBest = min(decodeBest, try seconds {
                    try bytes.withUnsafeBytes { src in
                        try decoded.withUnsafeMutableBufferPointer { try ElementCodec.decode(dtype, from: src, into: $0) }
                    }
                })
            }
            let name = dtype.rawValue.padding(toLength: 5, withPad: " ", startingAt: 0)
            let encodeText = dtype.isEncodable ? rate(elements, encodeBest) : "      (decode only)"
            print("\(name)  decode \(rate(elements, decodeBest))   encode \(encodeText)")
        }
    }

    private static func seconds(_ body: () throws -> Void) rethrows -> Double {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    }

    private static func rate(_ elements: Int, _ seconds: Double) -> String {
        String(format: "%7.0f M elements/s", Double(elements) / seconds / 1e6)
    }
}
