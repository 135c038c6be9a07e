import Checkpoints
import Merging

/// How an engine's output compares with `ReferenceMerge`'s.
public struct ReferenceComparison: Sendable {
    public var elements = 0
    /// Entries whose slack is 0, which must match byte for byte.
    public var exactElements = 0
    /// Entries off by more than they may be, and the first one described.
    public var mismatches = 0
    public var firstMismatch: String?
    /// Largest difference seen where a slack applies, as a share of what is allowed.
    public var worstShareOfBound: Float = 0

    public init() {}

    /// Compares `actual`, the engine's bytes of tensor `name` in `dtype`, with
    /// `expected`: the same bytes where the slack is 0; elsewhere values at most the
    /// slack plus one step of `dtype` apart (an infinite slack is not compared).
    public mutating func add(_ expected: ReferenceMerge.Result, actual: [UInt8], dtype: DType, name: String) {
        let expectedBytes = ReferenceInputs.bytes(expected.values, dtype)
        let width = dtype.blockBytes
        guard actual.count == expectedBytes.count else {
            mismatches += 1
            if firstMismatch == nil { firstMismatch = "'\(name)': \(actual.count) bytes, expected \(expectedBytes.count)" }
            return
        }
        let values = ReferenceInputs.values(actual, dtype)
        let rounded = ReferenceInputs.values(expectedBytes, dtype)
        for i in 0..<values.count {
            elements += 1
            let slack = expected.slack[i]
            var same = true
            for b in (i * width)..<((i + 1) * width) where actual[b] != expectedBytes[b] { same = false }
            if slack == 0 {
                exactElements += 1
                if same { continue }
            } else if same || slack == .infinity {
                continue
            } else {
                let bound = slack + ReferenceInputs.step(max(abs(values[i]), abs(rounded[i])), dtype)
                let difference = abs(values[i] - rounded[i])
                worstShareOfBound = max(worstShareOfBound, difference / bound)
                if difference <= bound { continue }
            }
            mismatches += 1
            if firstMismatch == nil {
                firstMismatch = "'\(name)'[\(i)]: engine \(values[i]), reference \(expected.values[i]) (slack \(slack))"
            }
        }
    }
}

/// Inputs for differential runs and the conversions around them.
public enum ReferenceInputs {
    /// The gap between neighbouring values of `dtype` around `x`.
    public static func step(_ x: Float, _ dtype: DType) -> Float {
        let m = abs(x)
        switch dtype {
        case .bf16: return max(m.ulp * 65536, Float.leastNonzeroMagnitude * 65536)
        case .f16: return max(Float(Float16(min(m, 65504)).ulp), Float(Float16.leastNonzeroMagnitude))
        default: return m.ulp
        }
    }

    /// `values` stored as `dtype` (round to nearest even).
    public static func bytes(_ values: [Float], _ dtype: DType) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: values.count)!)
        values.withUnsafeBufferPointer { v in bytes.withUnsafeMutableBytes { try! ElementCodec.encode(dtype, from: v, into: $0) } }
        return bytes
    }

    /// The values of `bytes` of `dtype`.
    public static func values(_ bytes: [UInt8], _ dtype: DType) -> [Float] {
        var out = [Float](repeating: 0, count: bytes.count / dtype.blockBytes * dtype.blockElements)
        bytes.withUnsafeBytes { b in out.withUnsafeMutableBufferPointer { try! ElementCodec.decode(dtype, from: b, into: $0) } }
        return out
    }

    /// `values` as they read back after being stored as `dtype`.
    public static func roundTrip(_ values: [Float], _ dtype: DType) -> [Float] {
        self.values(bytes(values, dtype), dtype)
    }

    /// A base tensor in [−0.5, 0.5) and `models` fine-tuned versions of it, in `dtype`:
    /// deltas on a grid of 1/128 (many equal magnitudes and exact zeros, so rank
    /// windows split runs of ties), alternating in sign between models.
    public static func trio(count n: Int, models: Int, dtype: DType, seed: UInt64) -> (base: [Float], models: [[Float]]) {
        let stream = CounterRandom(seed: seed, tensor: "base", model: 0)
        var base = [Float](repeating: 0, count: n)
        for i in 0..<n { base[i] = stream.uniform(i) - 0.5 }
        base = roundTrip(base, dtype)
        var tuned: [[Float]] = []
        for m in 0..<models {
            let steps = CounterRandom(seed: seed, tensor: "delta", model: m + 1)
            var x = base
            for i in 0..<n {
                let grid = ((steps.uniform(i) - 0.5) * 24).rounded()  // −12…12
                x[i] = base[i] + grid * 0.0078125 * (m % 2 == 1 ? -1 : 1)
            }
            tuned.append(roundTrip(x, dtype))
        }
        return (base, tuned)
    }

    /// The magnitude keys of `tuned − base`.
    public static func deltaKeys(_ tuned: [Float], _ base: [Float]) -> [UInt32] {
        var keys = [UInt32](repeating: 0, count: base.count)
        for i in 0..<base.count { keys[i] = ReferenceMerge.key(tuned[i] - base[i]) }
        return keys
    }
}
