import Checkpoints
import Foundation
import Testing

// Adapters with trained biases (fixtures/lora/make_bias_fixtures.py, a tiny Qwen2) and
// adapters applied to GGUF bases, on the command line.

private func scratch() -> String {
    let folder = NSTemporaryDirectory() + "claire-lora-bias-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder
}

/// Every tensor of `ours` against `expected` (same names): untouched tensors, and biases
/// when `exactBiases`, bit for bit; the rest within the products' summation-order slack
/// (docs/lora.md), which also covers a merge's (s − b) + b for a bias s. Taking a stored
/// bias as a difference, or leaving it out, misses by about 0.1.
private func expectAgreement(_ ours: Checkpoint, _ expected: Checkpoint, base: Checkpoint, _ label: String,
                             exactBiases: Bool = true) throws {
    #expect(Set(ours.tensors.map(\.name)) == Set(expected.tensors.map(\.name)), "\(label)")
    for t in ours.tensors {
        let want = try expected.decode(try #require(expected.tensor(named: t.name)))
        let got = try ours.decode(t)
        let original = try base.decode(try #require(base.tensor(named: t.name)))
        if exactBiases && t.name.hasSuffix(".bias") || want == original {
            #expect(got == want, "\(label) \(t.name)")
            continue
        }
        // An entry near zero after cancellation differs by a few steps of the terms summed,
        // bounded here by a millionth of the tensor's largest entry.
        let slack = 1e-6 * (want.map(abs).max() ?? 0)
        for i in want.indices where abs(got[i] - want[i]) > 4 * want[i].ulp + slack {
            Issue.record("\(label) \(t.name)[\(i)]: \(got[i]) vs \(want[i])")
            break
        }
    }
}

private let qwen2 = fixture("lora/qwen2")

@Suite struct LoraBiasCommandTests {
    /// PEFT's adapters with stored biases merge as merge_and_unload() does: the stored bias
    /// replaces the base's (it is the trained value, not a difference).
    @Test(arguments: [("bias-lora", "lora/qwen2/tuned/model.safetensors"),
                      ("all-bias-lora", "lora/merged/qwen2-all-bias-lora/model.safetensors")])
    func loraMergeTakesStoredBiasesWhole(adapter: String, merged: String) throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let result = try runTool(["lora", "merge", qwen2 + "/" + adapter, "--base", qwen2 + "/base", "-o", folder + "/out"])
        #expect(result.status == 0, "\(result.err)")
        let base = try Checkpoint.open(qwen2 + "/base")
        let expected = try Checkpoint.open(fixture(merged))
        // The fixture's biases moved: taking them as differences, or leaving them, would fail.
        let moved = try base.tensors.filter { $0.name.hasSuffix(".bias") }
            .filter { try base.decode($0) != expected.decode(expected.tensor(named: $0.name)!) }
        #expect(moved.count == 6)
        try expectAgreement(try Checkpoint.open(folder + "/out"), expected, base: base, adapter)
    }

    /// `fuse` of the adapter alone is the merged model too (task arithmetic, weight 1).
    @Test func fuseTakesStoredBiasesWhole() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let result = try runTool(["fuse", qwen2 + "/bias-lora", "--base", qwen2 + "/base", "--method", "task_arithmetic",
                                  "--dtype", "f32", "-o", folder + "/out"])
        #expect(result.status == 0, "\(result.err)")
        try expectAgreement(try Checkpoint.open(folder + "/out"), try Checkpoint.open(qwen2 + "/tuned"),
                            base: try Checkpoint.open(qwen2 + "/base"), "fuse", exactBiases: false)
    }

    /// `lora extract` stores the changed biases of decomposed modules as PEFT's trained
    /// biases; `lora merge` of that adapter gives the fine-tune's biases exactly.
    @Test func extractStoresChangedBiasesAndTheyComeBack() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let tuned = qwen2 + "/tuned", base = qwen2 + "/base"
        var result = try runTool(["lora", "extract", tuned, "--base", base, "--rank", "4", "--dtype", "f32", "--json", "-o", folder + "/adapter"])
        #expect(result.status == 0, "\(result.err)")
        #expect(!result.err.contains("warning"), "\(result.err)")
        let adapter = try Checkpoint.open(folder + "/adapter/adapter_model.safetensors")
        let tunedModel = try Checkpoint.open(tuned)
        let biases = adapter.tensors.filter { $0.name.hasSuffix(".base_layer.bias") }
        #expect(biases.count == 6)
        for t in biases {
            let name = String(t.name.dropFirst("base_model.model.".count).dropLast(".base_layer.bias".count)) + ".bias"
            #expect(Array(adapter.data(of: t)) == Array(tunedModel.data(of: tunedModel.tensor(named: name)!)), "\(name)")
        }
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: folder + "/adapter/adapter_config.json"))) as? [String: Any])
        #expect(config["bias"] as? String == "lora_only")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
        #expect((json["saved"] as? [String])?.filter { $0.hasSuffix("_proj.bias") }.count == 6)

        result = try runTool(["lora", "merge", folder + "/adapter", "--base", base, "-o", folder + "/merged"])
        #expect(result.status == 0, "\(result.err)")
        let merged = try Checkpoint.open(folder + "/merged")
        for t in merged.tensors where t.name.hasSuffix(".bias") {
            #expect(Array(merged.data(of: t)) == Array(tunedModel.data(of: tunedModel.tensor(named: t.name)!)), "\(t.name)")
        }

        // --biases skip leaves them out, named in the warning, with bias "none".
        result = try runTool(["lora", "extract", tuned, "--base", base, "--rank", "4", "--biases", "skip", "-o", folder + "/skipped"])
        #expect(result.status == 0, "\(result.err)")
        #expect(result.err.contains("warning: 6 tensors differ from the base but are not in the adapter: 'model.layers.0.self_attn."),
                "\(result.err)")
        let skipped = try Checkpoint.open(folder + "/skipped/adapter_model.safetensors")
        #expect(!skipped.tensors.contains { $0.name.hasSuffix(".bias") })
        let text = try String(contentsOfFile: folder + "/skipped/adapter_config.json", encoding: .utf8)
        #expect(text.contains(#""bias": "none""#))
    }
}

@Suite struct LoraGGUFBaseCommandTests {
    /// An adapter on a GGUF Llama (Q/K rows permuted) and on a GGUF Qwen2 with biases:
    /// `lora merge` to GGUF gives what converting the merge on the folder base gives, and
    /// `fuse` reads the adapter on the GGUF base as well.
    @Test(arguments: [("lora/sft-lora", "merge/base"), ("lora/qwen2/bias-lora", "lora/qwen2/base")])
    func anAdapterOnAGGUFBaseIsTheConvertedMerge(adapter: String, base: String) throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        func run(_ arguments: [String]) throws {
            let result = try runTool(arguments)
            #expect(result.status == 0, "\(arguments): \(result.err)")
        }
        try run(["convert", fixture(base), folder + "/base.gguf", "--type", "f32"])
        try run(["lora", "merge", fixture(adapter), "--base", folder + "/base.gguf", "-o", folder + "/merged.gguf"])
        try run(["lora", "merge", fixture(adapter), "--base", fixture(base), "-o", folder + "/merged"])
        try run(["convert", folder + "/merged", folder + "/expected.gguf", "--type", "f32"])
        let ggufBase = try Checkpoint.open(folder + "/base.gguf")
        let ours = try Checkpoint.open(folder + "/merged.gguf")
        let expected = try Checkpoint.open(folder + "/expected.gguf")
        #expect(ours.format == .gguf && ours.tensors.map(\.name) == ggufBase.tensors.map(\.name))
        #expect(ours.metadata == ggufBase.metadata)
        try expectAgreement(ours, expected, base: ggufBase, adapter)

        try run(["fuse", fixture(adapter), "--base", folder + "/base.gguf", "--method", "task_arithmetic", "--dtype", "f32",
                 "-o", folder + "/fused"])
        try expectAgreement(try Checkpoint.open(folder + "/fused"), expected, base: ggufBase, adapter + " (fuse)", exactBiases: false)
    }

    /// `GGUF+adapter` onto a folder base, or `folder+adapter` onto a GGUF base: the
    /// adapter's model would be looked up under the other format's names and found in
    /// none, so it is refused rather than merged as nothing.
    @Test func anAdapterOnAModelOfTheOtherFormatThanTheMergeBaseIsRefused() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let gguf = folder + "/base.gguf", hf = fixture("merge/base"), adapter = fixture("lora/sft-lora")
        #expect(try runTool(["convert", hf, gguf, "--type", "f32"]).status == 0)
        for (model, base, text) in [(gguf + "+" + adapter, hf, "an adapter applied to a GGUF model merges only onto a base of the same format, not \(hf)"),
                                    (hf + "+" + adapter, gguf, "an adapter applied to a Hugging Face model merges only onto a base of the same format, not \(gguf)")] {
            let result = try runTool(["fuse", model, "--base", base, "-o", folder + "/out"])
            #expect(result.status == 1)
            #expect(result.err == "error: \(model): \(text)\n", "\(result.err)")
            #expect(!FileManager.default.fileExists(atPath: folder + "/out"))
        }
    }

    /// `stats` of an adapter on a GGUF base: each module under its GGUF tensor, with the
    /// spectrum it has on the folder base (permuting B's rows leaves B·A's singular values).
    @Test func statsOfAnAdapterOnAGGUFBase() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(try runTool(["convert", fixture("merge/base"), folder + "/base.gguf", "--type", "f32"]).status == 0)
        func modules(_ base: String) throws -> [[String: Any]] {
            let result = try runTool(["stats", fixture("lora/sft-lora"), "--base", base, "--json"])
            #expect(result.status == 0, "\(result.err)")
            let json = try #require(try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
            let adapters = try #require(json["adapters"] as? [[String: Any]])
            return try #require(adapters.first?["modules"] as? [[String: Any]])
        }
        let onGGUF = try modules(folder + "/base.gguf"), onFolder = try modules(fixture("merge/base"))
        #expect(onGGUF.count == 21 && onFolder.count == 21)
        let byModule = Dictionary(uniqueKeysWithValues: onFolder.map { ($0["module"] as! String, $0) })
        for m in onGGUF {
            let name = m["module"] as! String
            let other = try #require(byModule[name])
            #expect(m["tensor"] as? String == LlamaFamily.ggufName(forHF: name + ".weight"))
            let s = m["singular_values"] as! [Double], t = other["singular_values"] as! [Double]
            #expect(s.count == t.count && zip(s, t).allSatisfy { abs($0 - $1) <= 1e-9 * max(1, abs($1)) }, "\(name)")
        }
    }

    /// On a block-quantized GGUF base `fuse` writes the merged tensors as BF16; `lora merge`,
    /// which keeps the base's types, refuses and says so.
    @Test func aQuantizedGGUFBaseMergesThroughFuse() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(try runTool(["convert", qwen2 + "/base", folder + "/base.gguf", "--type", "q8_0"]).status == 0)
        var result = try runTool(["fuse", qwen2 + "/bias-lora", "--base", folder + "/base.gguf", "--method", "task_arithmetic",
                                  "-o", folder + "/fused"])
        #expect(result.status == 0, "\(result.err)")
        let fused = try Checkpoint.open(folder + "/fused"), base = try Checkpoint.open(folder + "/base.gguf")
        let tuned = try Checkpoint.open(qwen2 + "/tuned")
        let q = try #require(fused.tensor(named: "blk.0.attn_q.weight"))
        #expect(q.dtype == .bf16)
        // The adapter's δ is there: the fused Q is nearer the fine-tune's than the base's is.
        let want = try tuned.decode(tuned.tensor(named: "model.layers.0.self_attn.q_proj.weight")!)
        let got = try fused.decode(q), was = try base.decode(base.tensor(named: "blk.0.attn_q.weight")!)
        func distance(_ x: [Float]) -> Float { zip(x, want).map { abs($0 - $1) }.max() ?? 0 }
        #expect(distance(got) < distance(was) / 4, "\(distance(got)) vs \(distance(was))")
        result = try runTool(["lora", "merge", qwen2 + "/bias-lora", "--base", folder + "/base.gguf", "-o", folder + "/m.gguf"])
        #expect(result.status == 1)
        #expect(result.err.hasSuffix("is Q8_0 in the base, which cannot be written merged; fuse the adapter alone (--method task_arithmetic) to write its merge as BF16\n"),
                "\(result.err)")
        #expect(!FileManager.default.fileExists(atPath: folder + "/m.gguf"))
    }

    @Test func aGGUFBaseNeedsAGGUFOutputAndAFolderBaseAFolder() throws {
        let folder = scratch()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        #expect(try runTool(["convert", fixture("merge/base"), folder + "/base.gguf", "--type", "f32"]).status == 0)
        var result = try runTool(["lora", "merge", fixture("lora/sft-lora"), "--base", folder + "/base.gguf", "-o", folder + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(folder)/out: the base is a GGUF file, so the merged model is one too: name the output *.gguf\n")
        result = try runTool(["lora", "merge", fixture("lora/sft-lora"), "--base", fixture("merge/base"), "-o", folder + "/out.gguf"])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: \(folder)/out.gguf: a GGUF file is written only from a GGUF base"))
        #expect(!FileManager.default.fileExists(atPath: folder + "/out") && !FileManager.default.fileExists(atPath: folder + "/out.gguf"))
    }
}
