import Checkpoints

/// Task-vector arithmetic: δ = θ − θ₀, computed in Float32.
public enum TaskVector {
    /// Writes `tuned − base` into `delta` element by element.
    /// - Precondition: all three buffers have the same count.
    public static func subtract(
        _ tuned: UnsafeBufferPointer<Float>, _ base: UnsafeBufferPointer<Float>, into delta: UnsafeMutableBufferPointer<Float>
    ) {
        precondition(tuned.count == base.count && base.count == delta.count)
        for i in 0..<delta.count { delta[i] = tuned[i] - base[i] }
    }
}
