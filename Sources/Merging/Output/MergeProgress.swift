/// How far a merge has got.
public struct MergeProgress: Sendable {
    /// Tensors written so far and in total.
    public var tensorsDone: Int
    public var tensorCount: Int
    /// Elements done and in total (tensors differ in size by 1000×: this is the fair measure).
    public var elementsDone: Int
    public var elementCount: Int
}
