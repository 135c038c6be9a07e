/// Where a checkpoint's tensors are written: a safetensors file
/// (`SafetensorsFileOutput`), a model folder (`HFFolderWriter`) or a GGUF file
/// (`GGUFWriter`). The layout is planned before any data exists, so each planned
/// tensor's bytes are handed over once, from any thread, in any order. The output
/// is written to a temporary (`OutputPath`) and appears under its destination only
/// at `commit()`; `abort()` leaves nothing. Messages name the destination, never
/// the temporary. The merge engine, the format conversions and delta application
/// all write through this protocol.
public protocol TensorSink: AnyObject, Sendable {
    /// Stores the bytes of tensor `name` (exactly its planned size).
    func write(_ name: String, bytes: UnsafeRawBufferPointer) throws(CheckpointError)
    /// Checks every planned tensor was written and moves the output into place.
    func commit() throws(CheckpointError)
    /// Removes everything written so far; does nothing after `commit()`.
    func abort()
}
