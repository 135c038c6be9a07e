import COpenBLAS
import Testing
@testable import Training

@Test func blasThreadCountIsApplied() {
    TrainingThreads.setBLASThreads(1)
    #expect(openblas_get_num_threads() == 1)
}
