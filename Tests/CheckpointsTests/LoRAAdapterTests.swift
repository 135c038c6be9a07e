import Foundation
import Testing
@testable import Checkpoints

// PEFT adapters read against their base: the fixtures PEFT wrote (fixtures/lora), the
// OpenBLAS product against the plain loop, and each rule broken by a crafted adapter.

/// Writes Float32 tensors as a safetensors file through the project's writer.
private func writeF32(_ path: String, _ tensors: [(String, [Int], [Float])]) {
    let writer = try! SafetensorsFileWriter(path: path, tensors: tensors.map { TensorSpec(name: $0.0, dtype: .f32, shape: $0.1) })
    for (name, _, values) in tensors {
        values.withUnsafeBytes { try! writer.write(name, bytes: $0) }
    }
    try! writer.finish()
}

/// Deterministic values in about [-1, 1].
private func values(_ count: Int, seed: Int) -> [Float] {
    (0..<count).map { i in Float((i &* 7919 &+ seed &* 104_729) % 2001) / 1000 - 1 }
}

/// A base with a 6×5 weight `m.q.weight`, a 4×6 `m.e.weight` and a 5-entry norm.
private func craftedBase(_ folder: String) -> Checkpoint {
    let path = folder + "/base.safetensors"
    writeF32(path, [("m.q.weight", [6, 5], values(30, seed: 1)), ("m.e.weight", [4, 6], values(24, seed: 2)),
                    ("m.norm.weight", [5], values(5, seed: 3))])
    return try! Checkpoint.open(path)
}

/// An adapter folder with `config` and tensors (names given without PEFT's prefix unless they start with '!').
private func craftedAdapter(_ folder: String, config: String, _ tensors: [(String, [Int])]) -> String {
    let path = folder + "/adapter"
    try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: path + "/adapter_config.json", contents: Data(config.utf8))
    writeF32(path + "/adapter_model.safetensors", tensors.enumerated().map { i, t in
        (t.0.hasPrefix("!") ? String(t.0.dropFirst()) : PEFTNames.prefix + t.0, t.1, values(t.1.reduce(1, *), seed: 10 + i))
    })
    return path
}

private let goodConfig = #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]}"#

/// The message opening `adapter` against `base` fails with.
private func failure(_ config: String, _ tensors: [(String, [Int])]) -> String {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = craftedBase(folder)
    let path = craftedAdapter(folder, config: config, tensors)
    do {
        _ = try LoRAAdapter.open(path, base: base)
        return "opened"
    } catch {
        guard case .adapter = error else { return "other error: \(error)" }
        return error.description.replacingOccurrences(of: folder, with: "F")
    }
}

@Test func aWellFormedCraftedAdapterOpens() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = craftedBase(folder)
    let path = craftedAdapter(folder, config: goodConfig, [("m.q.lora_A.weight", [2, 5]), ("m.q.lora_B.weight", [6, 2])])
    let adapter = try LoRAAdapter.open(path, base: base)
    #expect(adapter.modules.map(\.baseName) == ["m.q.weight"])
    #expect(adapter.modules[0].scale == 2)
    #expect(LoRAAdapter.isAdapter(path) && !LoRAAdapter.isAdapter(folder))
}

@Test func brokenAdaptersAreRefusedWithOneLine() {
    let a = ("m.q.lora_A.weight", [2, 5]), b = ("m.q.lora_B.weight", [6, 2])
    let cases: [(String, [(String, [Int])], String)] = [
        (goodConfig, [("m.q.lora_A.weight", [3, 5]), b], "ranks 3 and 2 differ"),
        (#"{"r": 4, "target_modules": ["q"]}"#, [a, b], "has rank 2 but adapter_config.json gives it r = 4"),
        (goodConfig, [("m.q.lora_A.weight", [2, 6]), b], "but 'm.q.weight' in the base has shape [6, 5]"),
        (goodConfig, [("m.q.lora_A.weight", [2, 5]), ("m.q.lora_B.weight", [5, 2])], "B·A is 5×5"),
        (goodConfig, [a], "has lora_A but no lora_B"),
        (goodConfig, [b], "has lora_B but no lora_A"),
        (#"{"r": 2, "target_modules": ["k"]}"#, [a, b], "module 'm.q' is not among target_modules"),
        (#"{"r": 2}"#, [("x.q.lora_A.weight", [2, 5]), ("x.q.lora_B.weight", [6, 2])], "adapts 'x.q.weight', which"),
        (goodConfig, [("!m.q.lora_A.weight", [2, 5]), b], "does not start with 'base_model.model.'"),
        (goodConfig, [a, b, ("m.norm.weight", [5])], "neither a LoRA factor nor part of a module in modules_to_save"),
        (#"{"r": 2, "modules_to_save": ["norm"]}"#, [a, b, ("m.norm.weight", [6])], "has shape [6] but 'm.norm.weight'"),
        (goodConfig, [a, b, ("m.q.lora_magnitude_vector", [6])], "a DoRA magnitude"),
        (goodConfig, [a, b, ("m.q.lora_B.bias", [6])], "a LoRA bias"),
        (goodConfig, [("m.q.lora_A.weight", [2, 5, 1]), b], "LoRA factors are 2-D"),
        (#"{"lora_alpha": 4}"#, [a, b], "no 'r'"),
        (#"{"r": 0}"#, [a, b], "'r' is not a positive integer"),
        (#"{"r": 2.5}"#, [a, b], "'r' is not a positive integer"),
        (#"{"r": 2, "use_dora": true}"#, [a, b], "use_dora is set"),
        (#"{"r": 2, "peft_type": "IA3"}"#, [a, b], "peft_type is 'IA3'"),
        (#"{"r": 2, "rank_pattern": {"m.*": 2}}"#, [a, b], "is a regular expression"),
        (#"{"r": 2, "lora_alpha": 1e39}"#, [a, b], "does not fit a Float32"),
        (#"{"r": 2,"#, [a, b], "not valid JSON"),
        (goodConfig, [], "holds no LoRA factors"),
    ]
    for (config, tensors, expected) in cases {
        let message = failure(config, tensors)
        #expect(message.contains(expected), "\(expected): \(message)")
        #expect(message.hasPrefix("F/adapter/adapter_"), "\(message)")
        #expect(!message.contains("\n"))
    }
    // The case that is fine, for contrast.
    #expect(failure(#"{"r": 2, "modules_to_save": ["norm"]}"#, [a, b, ("m.norm.weight", [5])]) == "opened")
    #expect(failure(#"{"r": 4, "rank_pattern": {"q": 2}}"#, [a, b]) == "opened")
}

@Test func aMissingWeightsFileIsNamed() {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = craftedBase(folder)
    let path = craftedAdapter(folder, config: goodConfig, [("m.q.lora_A.weight", [2, 5]), ("m.q.lora_B.weight", [6, 2])])
    try! FileManager.default.removeItem(atPath: path + "/adapter_model.safetensors")
    #expect(throws: CheckpointError.adapter(file: path, problem: "no adapter_model.safetensors (adapters saved as .bin are not read)")) {
        try LoRAAdapter.open(path, base: base)
    }
}

@Test func embeddingAndFanInFanOutFactorsAreTransposed() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let base = craftedBase(folder)
    // m.e.weight is 4×6: an embedding of 4 rows (A is r × 4, B is 6 × r).
    let path = craftedAdapter(folder, config: #"{"r": 3, "lora_alpha": 3}"#,
                              [("m.e.lora_embedding_A", [3, 4]), ("m.e.lora_embedding_B", [6, 3])])
    let adapter = try LoRAAdapter.open(path, base: base)
    let module = try #require(adapter.module(adapting: "m.e.weight"))
    #expect(module.transposed && module.shape == [4, 6])
    let (a, b) = try adapter.factors(of: module)
    var delta = [Float](repeating: 0, count: 24)
    try delta.withUnsafeMutableBufferPointer { try adapter.delta(module, elements: 0..<24, into: $0) }
    for i in 0..<4 {
        for o in 0..<6 {
            let expected = (0..<3).reduce(Float(0)) { $0 + b[o * 3 + $1] * a[$1 * 4 + i] }
            #expect(abs(delta[i * 6 + o] - expected) <= 1e-5 * max(1, abs(expected)))
        }
    }
}

/// Geometries around OpenBLAS's blocking and the row ranges a merge asks for.
@Test func theOpenBLASProductMatchesThePlainLoop() {
    let geometries = [LoRAProduct.Geometry(rank: 1, inFeatures: 1, outFeatures: 1, scale: 0.5, transposed: false),
                      LoRAProduct.Geometry(rank: 4, inFeatures: 17, outFeatures: 33, scale: 2, transposed: false),
                      LoRAProduct.Geometry(rank: 4, inFeatures: 17, outFeatures: 33, scale: 2, transposed: true),
                      LoRAProduct.Geometry(rank: 16, inFeatures: 300, outFeatures: 257, scale: 0.125, transposed: false),
                      LoRAProduct.Geometry(rank: 65, inFeatures: 96, outFeatures: 130, scale: 1.5, transposed: true),
                      LoRAProduct.Geometry(rank: 0, inFeatures: 8, outFeatures: 8, scale: 1, transposed: false)]
    for g in geometries {
        let a = values(g.rank * g.inFeatures, seed: 5), b = values(g.outFeatures * g.rank, seed: 6)
        for rows in [0..<g.rows, 0..<1, (g.rows / 2)..<g.rows, (g.rows - 1)..<g.rows] where !rows.isEmpty {
            var fast = [Float](repeating: .nan, count: rows.count * g.columns), slow = fast
            a.withUnsafeBufferPointer { a in
                b.withUnsafeBufferPointer { b in
                    fast.withUnsafeMutableBufferPointer { LoRAProduct.rows(rows, of: g, a: a, b: b, into: $0) }
                    slow.withUnsafeMutableBufferPointer { LoRAProduct.referenceRows(rows, of: g, a: a, b: b, into: $0) }
                }
            }
            // Sums of r products in another order (and fused): within r ulps of Σ|products|.
            var worst: Float = 0
            for i in fast.indices {
                let row = rows.lowerBound + i / g.columns, column = i % g.columns
                let (o, x) = g.transposed ? (column, row) : (row, column)
                let magnitude = (0..<g.rank).reduce(Float(0)) { $0 + abs(b[o * g.rank + $1] * a[$1 * g.inFeatures + x]) } * abs(g.scale)
                worst = max(worst, abs(fast[i] - slow[i]) - Float(g.rank + 1) * magnitude.ulp)
            }
            #expect(worst <= 0, "\(g) rows \(rows)")
            #expect(!fast.contains { $0.isNaN })
        }
    }
}

@Test func deltaOfAnElementRangeIsThatSliceOfTheWhole() throws {
    let base = try Checkpoint.open(fixture("merge/base"))
    for name in ["sft-lora", "gpt2-lora"] {
        let b = name == "gpt2-lora" ? try Checkpoint.open(fixture("lora/gpt2-base")) : base
        let adapter = try LoRAAdapter.open(fixture("lora/" + name), base: b)
        for module in adapter.modules.prefix(3) {
            let count = module.shape[0] * module.shape[1]
            var whole = [Float](repeating: 0, count: count)
            try whole.withUnsafeMutableBufferPointer { try adapter.delta(module, elements: 0..<count, into: $0) }
            let cuts = [0, 1, module.columns - 1, module.columns + 3, count / 2, count - 1].filter { $0 < count }
            for lower in cuts {
                for upper in [lower + 1, min(count, lower + module.columns + 2), count] where upper <= count {
                    var part = [Float](repeating: 7, count: upper - lower)
                    try part.withUnsafeMutableBufferPointer { try adapter.delta(module, elements: lower..<upper, into: $0) }
                    #expect(bitPatterns(part) == bitPatterns(Array(whole[lower..<upper])), "\(module.module) \(lower)..<\(upper)")
                    var added = [Float](repeating: 1, count: upper - lower)
                    try added.withUnsafeMutableBufferPointer { try adapter.delta(module, elements: lower..<upper, into: $0, adding: true) }
                    #expect(bitPatterns(added) == bitPatterns(whole[lower..<upper].map { 1 + $0 }))
                }
            }
        }
    }
}

@Test func peftFixturesGiveTheirConfiguredScales() throws {
    let base = try Checkpoint.open(fixture("merge/base"))
    let sft = try LoRAAdapter.open(fixture("lora/sft-lora"), base: base)
    #expect(sft.modules.count == 21 && sft.modules.allSatisfy { $0.scale == 2 && $0.rank == 4 && !$0.transposed })
    let dpo = try LoRAAdapter.open(fixture("lora/dpo-lora"), base: base)
    // rsLoRA: α/√r; rank_pattern gives one v_proj r = 2, alpha_pattern one q_proj α = 4.
    #expect(dpo.module(adapting: "model.layers.0.self_attn.q_proj.weight")?.scale == 8)
    #expect(dpo.module(adapting: "model.layers.1.self_attn.v_proj.weight")?.rank == 2)
    #expect(dpo.module(adapting: "model.layers.1.self_attn.v_proj.weight")?.scale == Float(16 / 2.0.squareRoot()))
    #expect(dpo.module(adapting: "model.layers.2.self_attn.q_proj.weight")?.scale == 2)
    let head = try LoRAAdapter.open(fixture("lora/head-lora"), base: base)
    #expect(Array(head.saved.keys) == ["lm_head.weight"])
    // PEFT saves an adapted embedding's own weight beside its factors.
    let emb = try LoRAAdapter.open(fixture("lora/emb-lora"), base: base)
    #expect(emb.module(adapting: "model.embed_tokens.weight")?.transposed == true)
    #expect(emb.saved["model.embed_tokens.weight"]?.name == "base_model.model.model.embed_tokens.base_layer.weight")
    let gpt2 = try LoRAAdapter.open(fixture("lora/gpt2-lora"), base: try Checkpoint.open(fixture("lora/gpt2-base")))
    #expect(gpt2.modules.count == 4 && gpt2.modules.allSatisfy(\.transposed))
}

/// δ of every module of PEFT's adapters against merge_and_unload() − base. The fixtures are
/// Float32: PEFT's value is base + δ rounded once, with δ's r products summed by torch in its
/// own order, so the two agree within one step of the merged value and of base + δ, plus
/// r + 1 steps of the products' magnitude Σₖ|Bₒₖ·Aₖᵢ|·scale.
@Test func deltasMatchPEFTsMergedModels() throws {
    var identical = 0, total = 0
    for name in ["sft-lora", "dpo-lora", "head-lora", "emb-lora", "gpt2-lora"] {
        let base = try Checkpoint.open(fixture(name == "gpt2-lora" ? "lora/gpt2-base" : "merge/base"))
        let merged = try Checkpoint.open(fixture("lora/merged/\(name)/model.safetensors"))
        let adapter = try LoRAAdapter.open(fixture("lora/" + name), base: base)
        for module in adapter.modules {
            let b = try base.decode(base.tensor(named: module.baseName)!)
            let m = try merged.decode(merged.tensor(named: module.baseName)!)
            var d = [Float](repeating: 0, count: b.count)
            try d.withUnsafeMutableBufferPointer { try adapter.delta(module, elements: 0..<b.count, into: $0) }
            let (fa, fb) = try adapter.factors(of: module)
            for i in b.indices {
                let (row, column) = (i / module.columns, i % module.columns)
                let (o, x) = module.transposed ? (column, row) : (row, column)
                let magnitude = (0..<module.rank).reduce(Float(0)) { $0 + abs(fb[o * module.rank + $1] * fa[$1 * module.inFeatures + x]) }
                    * module.scale
                let slack = m[i].ulp + (b[i] + d[i]).ulp + Float(module.rank + 1) * magnitude.ulp
                #expect(abs(b[i] + d[i] - m[i]) <= slack, "\(name) \(module.baseName)[\(i)]")
                identical += (b[i] + d[i]) == m[i] ? 1 : 0
                total += 1
            }
        }
    }
    // Most entries are bit-identical (measured with OpenBLAS 0.3 against torch's CPU product:
    // 10576 of 12800, 82.6 %; the rest differ by the products' summation order).
    #expect(Double(identical) >= 0.75 * Double(total), "\(identical) of \(total) identical")
}

/// Singular values from the r × r problems against torch.linalg.svdvals of the dense
/// product in Float64 (fixtures/lora/spectra), for every module of two PEFT adapters.
@Test func spectraMatchTorchsSingularValues() throws {
    let base = try Checkpoint.open(fixture("merge/base"))
    for name in ["sft-lora", "dpo-lora"] {
        let adapter = try LoRAAdapter.open(fixture("lora/" + name), base: base)
        let text = try String(contentsOfFile: fixture("lora/spectra/\(name).json"), encoding: .utf8)
        let expected = try JSONParser.parse(text)
        for module in adapter.modules {
            guard case .array(let values)? = expected[module.module] else { Issue.record("no spectrum for \(module.module)"); continue }
            let torch = values.compactMap(\.doubleValue)
            let ours = try LoRASpectrum.summary(of: module, in: adapter).singularValues
            #expect(ours.count == torch.count && torch.count == module.rank)
            for (x, y) in zip(ours, torch) {
                // Factors are Float32; the products are summed in Float64 on both sides.
                #expect(abs(x - y) <= 1e-6 * torch[0], "\(name) \(module.module): \(ours) vs \(torch)")
            }
        }
    }
}

@Test func spectrumSummariesOfKnownProducts() {
    // Rank 1: scale·b·aᵀ has one singular value scale·‖a‖·‖b‖.
    let a: [Float] = [3, 4, 0, 0, 0, 0]  // r = 2 rows of in = 3: (3, 4, 0), (0, 0, 0)
    let b: [Float] = [1, 0, 2, 0]          // out = 2 rows of r = 2: (1, 0), (2, 0)
    let g = LoRAProduct.Geometry(rank: 2, inFeatures: 3, outFeatures: 2, scale: 0.5, transposed: false)
    let one = LoRASpectrum.Summary(rank: 2, singularValues: LoRASpectrum.singularValues(a: a, b: b, of: g))
    #expect(abs(one.singularValues[0] - 0.5 * 5 * 5.0.squareRoot()) < 1e-12 && abs(one.singularValues[1]) < 1e-9)
    #expect(abs(one.effectiveRank - 1) < 1e-6 && one.rank(holding: 0.99) == 1)
    // Orthogonal directions of equal strength: a flat spectrum, effective rank r.
    let identityA: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1], identityB: [Float] = [2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0]
    let flat = LoRASpectrum.Summary(rank: 3, singularValues: LoRASpectrum.singularValues(
        a: identityA, b: identityB, of: LoRAProduct.Geometry(rank: 3, inFeatures: 3, outFeatures: 4, scale: 1, transposed: true)))
    #expect(flat.singularValues.allSatisfy { abs($0 - 2) < 1e-12 })
    #expect(abs(flat.effectiveRank - 3) < 1e-9 && flat.rank(holding: 0.9) == 3 && abs(flat.energy[0] - 1.0 / 3) < 1e-12)
    #expect(abs(flat.frobenius - 12.0.squareRoot()) < 1e-12)
    // δ = 0.
    let zero = LoRASpectrum.Summary(rank: 2, singularValues: LoRASpectrum.singularValues(a: a, b: [0, 0, 0, 0], of: g))
    #expect(zero.singularValues == [0, 0] && zero.effectiveRank == 0 && zero.rank(holding: 0.9) == 0)
}

/// A rank far beyond a module's dimensions (the factors of an empty base tensor hold no
/// values whatever r says) would ask for an r × r work space the file does not justify.
@Test func aSpectrumOfARankBeyondTheModuleIsRefused() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    let basePath = folder + "/base.safetensors"
    writeF32(basePath, [("m.q.weight", [0, 0], [])])
    let base = try Checkpoint.open(basePath)
    let path = craftedAdapter(folder, config: #"{"r": 100000000}"#, [("m.q.lora_A.weight", [100_000_000, 0]), ("m.q.lora_B.weight", [0, 100_000_000])])
    let adapter = try LoRAAdapter.open(path, base: base)
    #expect(throws: CheckpointError.adapter(file: path + "/adapter_model.safetensors", problem: "module 'm.q' has rank 100000000, more than its 0 inputs and 0 outputs together; its spectrum is not computed")) {
        try LoRASpectrum.summary(of: adapter.modules[0], in: adapter)
    }
}
