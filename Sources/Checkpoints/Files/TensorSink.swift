/// Where a checkpoint's tensors are written: a safetensors file
/// (`SafetensorsFileOutput`), a model folder (`HFFolderWriter`) or a GGUF file
/// (`GGUFWriter`). The layout is planned before any data exists, so each planned
/// tensor's bytes are handed over once, from any thread, in any order — whole, or
/// in consecutive pieces from one thread, so a large tensor never has to be held
/// in memory at once. The output
/// is written to a temporary (`OutputPath`) and appears under its destination only
/// at `commit()`; `abort()` leaves nothing. Messages name the destination, never
/// the temporary. The merge engine, the format conversions and delta application
/// all write through this protocol.
public protocol TensorSink: AnyObject, Sendable {
    /// Stores the bytes of tensor `name` (exactly its planned size).
    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError)
    /// Stores `bytes` at byte `offset` of tensor `name`: the next piece of a tensor
    /// handed over in consecutive pieces, the first at offset 0, each starting where
    /// the one before ended. The tensor is complete once its planned size is written.
    func write(_ name: String, piece bytes: UnsafeRawBufferPointer, at offset: Int) throws(CheckpointError)
    /// Checks every planned tensor was written and moves the output into place.
    func commit() throws(CheckpointError)
    /// Removes everything written so far; does nothing after `commit()`.
    func abort()
}
