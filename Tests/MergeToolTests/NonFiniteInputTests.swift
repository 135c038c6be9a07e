import Checkpoints
import Foundation
import Testing

@Suite struct NonFiniteInputTests {
    /// A folder with base, a clean fine-tune and one holding a NaN and an infinity.
    private func models(_ dtype: DType = .f32) throws -> String {
        let dir = NSTemporaryDirectory() + "claire-nan-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (name, values) in [("base", [Float](repeating: 1, count: 8)),
                               ("clean", [Float](repeating: 1.5, count: 8)),
                               ("broken", [1, .nan, 1, .infinity, 1, 1, 1, 1] as [Float])] {
            let writer = try SafetensorsFileWriter(path: dir + "/\(name).safetensors",
                                                   tensors: [TensorSpec(name: "w", dtype: dtype, shape: [2, 4])])
            var bytes = [UInt8](repeating: 0, count: dtype.byteCount(forElements: values.count)!)
            try values.withUnsafeBufferPointer { v in try bytes.withUnsafeMutableBytes { try ElementCodec.encode(dtype, from: v, into: $0) } }
            try bytes.withUnsafeBytes { try writer.write("w", bytes: $0) }
            try writer.finish()
        }
        return dir
    }

    @Test(arguments: [DType.f32, .bf16, .f16])
    func nonFiniteInputIsReportedPerTensor(dtype: DType) throws {
        let dir = try models(dtype)
        let result = try runTool(["fuse", dir + "/clean.safetensors", dir + "/broken.safetensors", "--base", dir + "/base.safetensors",
                                  "--method", "task_arithmetic", "-o", dir + "/out"])
        #expect(result.status == 0)
        #expect(result.err == "warning: input tensor 'w' in \(dir)/broken.safetensors holds NaN or infinite values (--strict makes this an error)\n")
    }

    @Test(arguments: [DType.f32, .bf16])
    func strictMakesItAnErrorAndLeavesNothing(dtype: DType) throws {
        let dir = try models(dtype)
        let result = try runTool(["fuse", dir + "/clean.safetensors", dir + "/broken.safetensors", "--base", dir + "/base.safetensors",
                                  "--method", "task_arithmetic", "--strict", "-o", dir + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(dir)/broken.safetensors: tensor 'w' holds NaN or infinite values (--strict)\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
                == ["base.safetensors", "broken.safetensors", "clean.safetensors"])
    }

    @Test(arguments: ["ties", "dare_ties", "task_arithmetic", "della", "breadcrumbs_ties", "model_stock"])
    func finiteInputsNeverGiveNaN(method: String) throws {
        let dir = try models()
        // Identical fine-tunes: zero deltas, zero divisors and zero norms everywhere.
        try FileManager.default.copyItem(atPath: dir + "/clean.safetensors", toPath: dir + "/same.safetensors")
        try FileManager.default.copyItem(atPath: dir + "/clean.safetensors", toPath: dir + "/start.safetensors")
        let result = try runTool(["fuse", dir + "/clean.safetensors", dir + "/same.safetensors", "--base", dir + "/start.safetensors",
                                  "--method", method, "-o", dir + "/out"])
        #expect(result.status == 0, "\(result.err)")
        let merged = try Checkpoint.open(dir + "/out")
        #expect(try merged.decode(merged.tensor(named: "w")!).allSatisfy(\.isFinite))
    }
}
