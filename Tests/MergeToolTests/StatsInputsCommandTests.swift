import Checkpoints
import Foundation
import Testing

/// What `stats` reads besides full checkpoints of the base's format: LoRA adapters (alone,
/// mixed with full models, plotted) and Llama GGUF fine-tunes of Hugging Face bases.
@Suite struct StatsInputsCommandTests {
    /// `stats … --json` parsed; fails the test when the command does.
    private func stats(_ arguments: [String]) throws -> [String: Any] {
        let result = try runTool(["stats"] + arguments + ["--json"])
        try #require(result.status == 0, "stats \(arguments): \(result.err)")
        return try #require(try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
    }

    /// Whether `a` and `b` agree: the same keys, lists and strings, and numbers within
    /// `relative` of each other (counts therefore exactly, at these sizes).
    private func agree(_ a: Any?, _ b: Any?, relative: Double, at path: String = "") -> [String] {
        switch (a, b) {
        case (let x as [String: Any], let y as [String: Any]):
            guard Set(x.keys) == Set(y.keys) else { return ["\(path): keys \(x.keys.sorted()) vs \(y.keys.sorted())"] }
            return x.keys.sorted().flatMap { agree(x[$0], y[$0], relative: relative, at: path + "." + $0) }
        case (let x as [Any], let y as [Any]):
            guard x.count == y.count else { return ["\(path): \(x.count) vs \(y.count) entries"] }
            return zip(x, y).enumerated().flatMap { agree($1.0, $1.1, relative: relative, at: path + "[\($0)]") }
        case (let x as String, let y as String):
            return x == y ? [] : ["\(path): '\(x)' vs '\(y)'"]
        case (let x as NSNumber, let y as NSNumber):
            let u = x.doubleValue, v = y.doubleValue
            return abs(u - v) <= relative * max(abs(u), abs(v)) ? [] : ["\(path): \(u) vs \(v)"]
        case (is NSNull, is NSNull):
            return []
        default:
            return ["\(path): \(String(describing: a)) vs \(String(describing: b))"]
        }
    }

    /// The figures of two reports that describe the same deltas, scope by scope (tensors by name).
    private func figuresAgree(_ a: [String: Any], _ b: [String: Any], relative: Double) -> [String] {
        func byName(_ report: [String: Any]) -> [[String: Any]]? {
            (report["tensors"] as? [[String: Any]])?.sorted { ($0["name"] as? String ?? "") < ($1["name"] as? String ?? "") }
        }
        return ["model", "kinds", "layers", "skipped"].flatMap { agree(a[$0], b[$0], relative: relative, at: $0) }
            + agree(byName(a), byName(b), relative: relative, at: "tensors")
    }

    private func scratchFolder() throws -> String {
        let folder = NSTemporaryDirectory() + "claire-stats-inputs-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        return folder
    }

    /// An adapter's figures are those of the model `lora merge` makes of it (and of PEFT's
    /// own merge), up to the Float32 rounding of base + δ: every tensor of the base is
    /// compared, those the adapter leaves alone with δ = 0.
    @Test(arguments: [("sft-lora", "merge/base"), ("dpo-lora", "merge/base"), ("head-lora", "merge/base"),
                      ("emb-lora", "merge/base"), ("gpt2-lora", "lora/gpt2-base")])
    func adapterFiguresAreThoseOfItsMergedModel(_ name: String, _ baseName: String) throws {
        let folder = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let adapter = fixture("lora/" + name), base = fixture(baseName), merged = folder + "/merged.safetensors"
        let merge = try runTool(["lora", "merge", adapter, "--base", base, "-o", merged])
        try #require(merge.status == 0, "\(merge.err)")
        let direct = try stats([adapter, "--base", base, "--names", "ft"])
        #expect(direct["adapters"] != nil)
        for reference in [merged, fixture("lora/merged/\(name)/model.safetensors")] {
            let through = try stats([reference, "--base", base, "--names", "ft"])
            let problems = figuresAgree(direct, through, relative: 1e-5)
            #expect(problems.isEmpty, "\(name) against \(reference): \(problems.prefix(8))")
        }
        // Untouched tensors count as unchanged entries: not every entry of the model changed.
        let model = try #require(direct["model"] as? [String: Any])
        let figures = try #require((model["deltas"] as? [[String: Any]])?.first)
        #expect((figures["zeros"] as? Int ?? 0) > 0)
        #expect((figures["zeros"] as? Int ?? 0) < (figures["elements"] as? Int ?? 0))
    }

    /// An adapter beside a full fine-tune: the pair figures are those of its merged model
    /// beside it, and `--plot` draws them.
    @Test func adapterMixedWithAFullModelAndPlotted() throws {
        let folder = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let adapter = fixture("lora/sft-lora"), base = fixture("merge/base"), merged = folder + "/merged.safetensors"
        try #require(try runTool(["lora", "merge", adapter, "--base", base, "-o", merged]).status == 0)
        let plot = folder + "/stats.svg"
        let mixed = try stats([adapter, fixture("merge/dpo"), "--base", base, "--names", "a,b", "--plot", plot])
        let reference = try stats([merged, fixture("merge/dpo"), "--base", base, "--names", "a,b"])
        let problems = figuresAgree(mixed, reference, relative: 1e-5)
        #expect(problems.isEmpty, "\(problems.prefix(8))")
        let model = try #require(mixed["model"] as? [String: Any])
        #expect((model["pairs"] as? [Any])?.count == 1)
        #expect((mixed["adapters"] as? [[String: Any]])?.map { $0["name"] as? String } == ["a"])
        let svg = try String(contentsOfFile: plot, encoding: .utf8)
        #expect(svg.contains("<svg"))
        let text = try runTool(["stats", adapter, fixture("merge/dpo"), "--base", base])
        #expect(text.status == 0, "\(text.err)")
        #expect(text.out.contains("sft-lora vs dpo: sign conflicts") && text.out.contains("eff. rank"))
    }

    /// A GGUF fine-tune (Q8_0 where rows fill blocks, F16 elsewhere, Q/K rows in GGUF's
    /// order) against the Hugging Face base gives the figures it gives against the same
    /// base converted to GGUF, with the quantization-aware delta or without; and a Hugging
    /// Face fine-tune against a GGUF base those of its own GGUF conversion.
    @Test func ggufFineTuneOfAHuggingFaceBase() throws {
        let folder = try scratchFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let base = fixture("merge/base"), sft = fixture("merge/sft")
        let tunedQ8 = folder + "/sft-q8_0.gguf", tunedF32 = folder + "/sft-f32.gguf", baseGGUF = folder + "/base-f32.gguf"
        for (input, output, type) in [(sft, tunedQ8, "q8_0"), (sft, tunedF32, "f32"), (base, baseGGUF, "f32")] {
            let converted = try runTool(["convert", input, output, "--type", type])
            try #require(converted.status == 0, "\(converted.err)")
        }
        let quantized = try Checkpoint.open(tunedQ8)
        #expect(quantized.tensors.contains { $0.dtype == .q8_0 })
        for mode in ["aware", "naive"] {
            let bridged = try stats([tunedQ8, "--base", base, "--names", "ft", "--quantized-delta", mode])
            let alike = try stats([tunedQ8, "--base", baseGGUF, "--names", "ft", "--quantized-delta", mode])
            #expect(figuresAgree(withGGUFNames(bridged), alike, relative: 1e-6).isEmpty,
                    "\(mode): \(figuresAgree(withGGUFNames(bridged), alike, relative: 1e-6).prefix(8))")
        }
        let reverse = try stats([sft, "--base", baseGGUF, "--names", "ft"])
        let alike = try stats([tunedF32, "--base", baseGGUF, "--names", "ft"])
        #expect(figuresAgree(reverse, alike, relative: 1e-6).isEmpty, "\(figuresAgree(reverse, alike, relative: 1e-6).prefix(8))")
    }

    /// A report on Hugging Face names with each tensor scope renamed to its GGUF name.
    private func withGGUFNames(_ report: [String: Any]) -> [String: Any] {
        var renamed = report
        renamed["tensors"] = (report["tensors"] as? [[String: Any]])?.map { scope in
            var scope = scope
            if let name = scope["name"] as? String { scope["name"] = LlamaFamily.ggufName(forHF: name) ?? name }
            return scope
        }
        return renamed
    }
}
