/// A fixed-size block of Float32 storage owned by one object.
///
/// Activations, gradients and optimizer moments live in these buffers so the
/// kernels can hand OpenBLAS raw pointers without copying; the buffer never
/// grows, so a pointer taken from it stays valid for the buffer's lifetime.
final class FloatBuffer: @unchecked Sendable {
    let count: Int
    let pointer: UnsafeMutablePointer<Float>

    init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    init(_ values: [Float]) {
        count = values.count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
        values.withUnsafeBufferPointer { source in
            // `count` is `values.count`, so the copy stays inside both.
            if let base = source.baseAddress { pointer.update(from: base, count: count) }
        }
    }

    deinit { pointer.deallocate() }

    /// The element at `index` (bounds-checked).
    subscript(index: Int) -> Float {
        get { precondition(index >= 0 && index < count); return pointer[index] }
        set { precondition(index >= 0 && index < count); pointer[index] = newValue }
    }

    /// Sets every element to zero.
    func zero() { pointer.update(repeating: 0, count: count) }

    /// Copies all elements from `other`, which must have the same count.
    func copy(from other: FloatBuffer) {
        precondition(other.count == count)
        pointer.update(from: other.pointer, count: count)
    }

    /// A new buffer holding the same values.
    func clone() -> FloatBuffer {
        let copy = FloatBuffer(count: count)
        copy.copy(from: self)
        return copy
    }

    /// The values as an array.
    var array: [Float] { Array(elements) }

    /// All elements, as a buffer the kernels take.
    var elements: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: pointer, count: count) }

    /// Elements `offset ..< offset + length`; traps (in release builds too) unless that
    /// range lies inside this buffer, so no view handed to a kernel reaches past it.
    func elements(at offset: Int, count length: Int) -> UnsafeMutableBufferPointer<Float> {
        precondition(offset >= 0 && length >= 0 && offset <= count && length <= count - offset,
                     "elements \(offset) ..< \(offset) + \(length) of a buffer of \(count)")
        return UnsafeMutableBufferPointer(start: pointer + offset, count: length)
    }

    /// Elements from `offset` to the end: the operand of a strided product, whose
    /// kernel checks the extent it reads against this view's count.
    func elements(from offset: Int) -> UnsafeMutableBufferPointer<Float> {
        elements(at: offset, count: count - offset)
    }
}
