import Foundation
import Testing

@Suite struct InspectGGUFTests {
    @Test func showsGGMLTypesAndBitsPerWeight() throws {
        let result = try runTool(["inspect", fixture("gguf/quants.gguf")])
        #expect(result.status == 0)
        #expect(result.err.isEmpty)
        #expect(result.out.contains("format      gguf, 1 file"))
        #expect(result.out.contains("  dtype      tensors     parameters        bytes  bits/weight"))
        #expect(result.out.contains("  Q6_K             1          2.0 k       1.7 kB         6.56"))
        #expect(result.out.contains("general.quantization_version  2"))
    }

    @Test func jsonReportCarriesTypedMetadata() throws {
        let result = try runTool(["inspect", "--json", fixture("gguf/metadata.gguf")])
        #expect(result.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any]
        let metadata = json?["metadata"] as? [String: Any]
        #expect(metadata?["general.alignment"] as? Int == 64)
        #expect(metadata?["test.string"] as? String == "héllo\nwörld")
        let long = metadata?["test.array.long"] as? [String: Any]
        #expect(long?["count"] as? Int == 100)
        #expect(long?["element_type"] as? String == "i32")
    }

    @Test func badFileIsOneLineAndExitStatus1() throws {
        // A GGUF header claiming 2^62 key/values in a 24-byte file.
        var bytes = Array("GGUF".utf8) + [3, 0, 0, 0] + [UInt8](repeating: 0, count: 8)
        bytes += [0, 0, 0, 0, 0, 0, 0, 0x40]
        let path = scratchFile(bytes, name: "claims.gguf")
        let result = try runTool(["inspect", path])
        #expect(result.status == 1)
        #expect(result.out.isEmpty)
        #expect(result.err == "error: \(path): key/value count 4611686018427387904 is more than the remaining 0 bytes can hold\n")
    }
}
