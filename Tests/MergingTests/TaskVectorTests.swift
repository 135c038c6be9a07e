import Testing
@testable import Merging

@Test func subtractGivesElementwiseDifference() {
    let tuned: [Float] = [1, 2, 3.5]
    let base: [Float] = [0.5, 2, 4]
    var delta = [Float](repeating: .nan, count: 3)
    tuned.withUnsafeBufferPointer { t in
        base.withUnsafeBufferPointer { b in
            delta.withUnsafeMutableBufferPointer { TaskVector.subtract(t, b, into: $0) }
        }
    }
    #expect(delta == [0.5, 0, -0.5])
}
