import Foundation
import Testing

/// `fuse --config` on fixtures/slices recipes: the folder mergekit 0.1.5 writes, tensor
/// bytes and the stacked layer count in config.json.
@Test(arguments: ["frankenmerge", "passthrough_scale"])
func fuseWritesTheStackedModelMergekitWrites(recipe: String) throws {
    let folder = fixture("slices")
    let text = try String(contentsOfFile: folder + "/recipes/\(recipe).yml", encoding: .utf8)
        .replacingOccurrences(of: "FIXTURE", with: folder)
    let work = NSTemporaryDirectory() + "claire-slices-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: work) }
    try text.write(toFile: work + "/recipe.yml", atomically: true, encoding: .utf8)
    let result = try runTool(["fuse", "--config", work + "/recipe.yml", "-o", work + "/out"])
    #expect(result.status == 0, "\(result.err)")
    // The whole file: header (names, shapes, offsets) and data, as mergekit wrote it.
    let ours = try Data(contentsOf: URL(fileURLWithPath: work + "/out/model.safetensors"))
    let theirs = try Data(contentsOf: URL(fileURLWithPath: folder + "/mergekit/\(recipe)/model.safetensors"))
    let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: work + "/out/config.json"))) as? [String: Any]
    #expect(config?["num_hidden_layers"] as? Int == 6)
    #expect(config?["hidden_size"] as? Int == 8)
    // Tensor order differs (mergekit sorts by name), so compare tensors through the header.
    #expect(try tensorTable(ours) == tensorTable(theirs))
}

/// Each tensor's dtype, shape and bytes, by name.
private func tensorTable(_ file: Data) throws -> [String: String] {
    let length = file.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    let header = try #require(JSONSerialization.jsonObject(with: file.subdata(in: 8..<(8 + length))) as? [String: Any])
    var table: [String: String] = [:]
    for (name, value) in header where name != "__metadata__" {
        let info = try #require(value as? [String: Any])
        let offsets = try #require(info["data_offsets"] as? [Int])
        let bytes = file.subdata(in: (8 + length + offsets[0])..<(8 + length + offsets[1]))
        table[name] = "\(info["dtype"] ?? "") \(info["shape"] ?? "") \(bytes.base64EncodedString())"
    }
    return table
}
