import Checkpoints

/// Where merged tensors go: the executor hands each finished tensor's bytes over once,
/// in the plan's order.
public protocol TensorSink: AnyObject {
    /// Stores the bytes of tensor `name` (exactly its planned size).
    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError)
}

extension HFFolderWriter: TensorSink {}

/// How far a merge has got.
public struct MergeProgress: Sendable {
    /// Tensors written so far and in total.
    public var tensorsDone: Int
    public var tensorCount: Int
    /// Elements done and in total (tensors differ in size by 1000×: this is the fair measure).
    public var elementsDone: Int
    public var elementCount: Int
}
