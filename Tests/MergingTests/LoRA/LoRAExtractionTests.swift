import Checkpoints
import Foundation
import Testing
@testable import Merging

/// A small Llama-shaped pair: `base` and `tuned` = base + a rank-`rank` product on
/// each linear module, with the norm and the embedding also changed.
struct LoRAPair {
    static let linear: [(name: String, m: Int, n: Int)] = [
        ("model.layers.0.self_attn.q_proj", 32, 32), ("model.layers.0.self_attn.k_proj", 16, 32),
        ("model.layers.0.mlp.down_proj", 32, 48), ("model.layers.0.mlp.up_proj", 48, 32),
    ]
    let folder: String
    let base: String
    let tuned: String
    /// δ of each linear module, row-major.
    var deltas: [String: [Float]] = [:]

    init(rank: Int, seed: UInt64 = 5, deltaFor: ((String, Int, Int) -> [Float])? = nil) {
        folder = temporaryFolder()
        base = folder + "/base.safetensors"
        tuned = folder + "/tuned.safetensors"
        var baseTensors: [TestTensor] = [], tunedTensors: [TestTensor] = []
        for (i, module) in Self.linear.enumerated() {
            let w = noise(module.m * module.n, seed: seed + UInt64(i))
            let d = deltaFor?(module.name, module.m, module.n) ?? lowRank(m: module.m, n: module.n, rank: rank, seed: seed + 100 + UInt64(i))
            deltas[module.name] = d
            baseTensors.append(TestTensor(name: module.name + ".weight", shape: [module.m, module.n], values: w))
            tunedTensors.append(TestTensor(name: module.name + ".weight", shape: [module.m, module.n], values: zip(w, d).map { $0 + $1 }))
        }
        let embed = noise(64 * 32, seed: seed + 50), norm = [Float](repeating: 1, count: 32)
        baseTensors += [TestTensor(name: "model.embed_tokens.weight", shape: [64, 32], values: embed),
                        TestTensor(name: "model.layers.0.input_layernorm.weight", shape: [32], values: norm)]
        tunedTensors += [TestTensor(name: "model.embed_tokens.weight", shape: [64, 32], values: embed.map { $0 + 0.25 }),
                         TestTensor(name: "model.layers.0.input_layernorm.weight", shape: [32], values: norm.map { $0 * 1.5 })]
        writeCheckpoint(base, baseTensors)
        writeCheckpoint(tuned, tunedTensors)
    }
}

/// The adapter's B·A of `module` (row-major out × in), and the adapter's tensors by key.
func adapterProduct(_ adapter: Checkpoint, module: String) throws -> [Float] {
    let a = try #require(adapter.tensor(named: "base_model.model.\(module).lora_A.weight"))
    let b = try #require(adapter.tensor(named: "base_model.model.\(module).lora_B.weight"))
    let av = try adapter.decode(a), bv = try adapter.decode(b)
    let (m, k, n) = (b.shape[0], b.shape[1], a.shape[1])
    #expect(a.shape[0] == k)
    var out = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
        for j in 0..<n {
            var sum: Float = 0
            for r in 0..<k { sum += bv[i * k + r] * av[r * n + j] }
            out[i * n + j] = sum
        }
    }
    return out
}

func adapterConfig(_ folder: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/adapter_config.json"))
    return try #require(JSONSerialization.jsonObject(with: data) as? [String: Any])
}

/// Path of a file under the package's fixtures/ folder.
private func loraFixture(_ relative: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("fixtures/lora").appendingPathComponent(relative).path
}

@Suite struct LoRAExtractionTests {
    @Test(arguments: [TruncatedSVD.Algorithm.exact, .randomized])
    func recoversAProductOfKnownRank(algorithm: TruncatedSVD.Algorithm) throws {
        let pair = LoRAPair(rank: 3)
        defer { try? FileManager.default.removeItem(atPath: pair.folder) }
        var options = LoRAExtraction.Options(rank: 3)
        options.algorithm = algorithm
        let out = pair.folder + "/adapter"
        let summary = try LoRAExtraction.extract(tuned: pair.tuned, base: pair.base, output: out, options: options)
        #expect(summary.modules.count == LoRAPair.linear.count)
        #expect(summary.modules.allSatisfy { $0.rank == 3 && $0.relativeError < 1e-5 && $0.randomized == (algorithm == .randomized) })
        let adapter = try Checkpoint.open(out + "/" + LoRAAdapterWriter.weightsFileName)
        for module in LoRAPair.linear {
            let d = pair.deltas[module.name]!
            #expect(maxDifference(try adapterProduct(adapter, module: module.name), d) <= 1e-5 * maxAbs(d))
        }
        // Embedding and norm stored whole, as the fine-tune holds them.
        let tuned = try Checkpoint.open(pair.tuned)
        for name in ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"] {
            let saved = try #require(adapter.tensor(named: "base_model.model." + name))
            #expect(try adapter.decode(saved) == tuned.decode(tuned.tensor(named: name)!))
        }
        let config = try adapterConfig(out)
        #expect(config["peft_type"] as? String == "LORA" && config["task_type"] as? String == "CAUSAL_LM")
        #expect(config["r"] as? Int == 3 && config["lora_alpha"] as? Int == 3)
        #expect(Set(config["target_modules"] as? [String] ?? []) == ["q_proj", "k_proj", "down_proj", "up_proj"])
        #expect(Set(config["modules_to_save"] as? [String] ?? []) == ["embed_tokens", "input_layernorm"])
        #expect(config["base_model_name_or_path"] as? String == pair.base)
    }

    @Test func factorsShareTheSquareRootOfTheSingularValues() throws {
        let pair = LoRAPair(rank: 2)
        defer { try? FileManager.default.removeItem(atPath: pair.folder) }
        let out = pair.folder + "/adapter"
        _ = try LoRAExtraction.extract(tuned: pair.tuned, base: pair.base, output: out, options: .init(rank: 2))
        let adapter = try Checkpoint.open(out + "/" + LoRAAdapterWriter.weightsFileName)
        let module = LoRAPair.linear[0]
        let a = try adapter.decode(adapter.tensor(named: "base_model.model.\(module.name).lora_A.weight")!)
        let b = try adapter.decode(adapter.tensor(named: "base_model.model.\(module.name).lora_B.weight")!)
        // Row r of A and column r of B both have norm √s_r.
        for r in 0..<2 {
            let rowA = (0..<module.n).reduce(Float(0)) { $0 + a[r * module.n + $1] * a[r * module.n + $1] }
            let colB = (0..<module.m).reduce(Float(0)) { $0 + b[$1 * 2 + r] * b[$1 * 2 + r] }
            #expect(abs(rowA - colB) <= 1e-4 * rowA)
        }
    }

    @Test func energyPicksTheSmallestRankPerModule() throws {
        // δ diagonal with singular values 4, 3, 2, 1 (shares .533, .833, .967, 1) on every
        // module but k_proj, whose δ has the single value 5.
        let pair = LoRAPair(rank: 0) { name, m, n in
            var d = [Float](repeating: 0, count: m * n)
            let values: [Float] = name.hasSuffix("k_proj") ? [5] : [4, 3, 2, 1]
            for (i, v) in values.enumerated() { d[i * n + i] = v }
            return d
        }
        defer { try? FileManager.default.removeItem(atPath: pair.folder) }
        var options = LoRAExtraction.Options(rank: nil, energy: 0.9)
        let out = pair.folder + "/adapter"
        var summary = try LoRAExtraction.extract(tuned: pair.tuned, base: pair.base, output: out, options: options)
        for m in summary.modules { #expect(m.rank == (m.name.hasSuffix("k_proj") ? 1 : 3), "\(m.name)") }
        let config = try adapterConfig(out)
        #expect(config["r"] as? Int == 3)
        #expect(config["rank_pattern"] as? [String: Int] == ["model.layers.0.self_attn.k_proj": 1])
        #expect(config["alpha_pattern"] as? [String: Int] == ["model.layers.0.self_attn.k_proj": 1])
        // --rank caps the chosen rank.
        options.rank = 2
        options.overwrite = true
        summary = try LoRAExtraction.extract(tuned: pair.tuned, base: pair.base, output: out, options: options)
        #expect(summary.modules.map(\.rank).max() == 2)
    }

    @Test func embeddingsAndNormsCanBeLeftOut() throws {
        let pair = LoRAPair(rank: 2)
        defer { try? FileManager.default.removeItem(atPath: pair.folder) }
        var options = LoRAExtraction.Options(rank: 2)
        options.embeddings = .skip
        options.norms = .skip
        options.targets = ["q_proj"]
        let out = pair.folder + "/adapter"
        let summary = try LoRAExtraction.extract(tuned: pair.tuned, base: pair.base, output: out, options: options)
        #expect(summary.modules.map(\.name) == ["model.layers.0.self_attn.q_proj"])
        #expect(summary.saved.isEmpty)
        #expect(Set(summary.leftOut) == ["model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                         "model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight",
                                         "model.layers.0.mlp.up_proj.weight"])
        let adapter = try Checkpoint.open(out + "/" + LoRAAdapterWriter.weightsFileName)
        #expect(adapter.tensors.count == 2)
        #expect(try adapterConfig(out)["modules_to_save"] is NSNull)
    }

    /// The fine-tune PEFT merged from a rank-4 adapter (α = 8): the extracted product
    /// equals PEFT's scale·B·A for every module.
    @Test func peftFixtureProductIsRecovered() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var options = LoRAExtraction.Options(rank: 4)
        options.algorithm = .exact
        let out = folder + "/adapter"
        let summary = try LoRAExtraction.extract(tuned: loraFixture("extract/tuned"), base: loraFixture("extract/base"),
                                                 output: out, options: options)
        #expect(summary.modules.count == 14)
        let ours = try Checkpoint.open(out + "/" + LoRAAdapterWriter.weightsFileName)
        let peft = try Checkpoint.open(loraFixture("extract/peft-adapter/adapter_model.safetensors"))
        let peftConfig = try adapterConfig(loraFixture("extract/peft-adapter"))
        let scale = Float(try #require(peftConfig["lora_alpha"] as? Int)) / Float(try #require(peftConfig["r"] as? Int))
        for m in summary.modules {
            let expected = try adapterProduct(peft, module: m.name).map { $0 * scale }
            #expect(maxDifference(try adapterProduct(ours, module: m.name), expected) <= 2e-5 * maxAbs(expected), "\(m.name)")
            #expect(m.relativeError < 1e-5)
        }
    }

    @Test func sameSeedGivesTheSameBytes() throws {
        let pair = LoRAPair(rank: 3)
        defer { try? FileManager.default.removeItem(atPath: pair.folder) }
        var options = LoRAExtraction.Options(rank: 2)
        options.algorithm = .randomized
        var files: [Data] = []
        for (i, workers) in [1, 3].enumerated() {
            options.workers = workers
            let out = pair.folder + "/adapter\(i)"
            _ = try LoRAExtraction.extract(tuned: pair.tuned, base: pair.base, output: out, options: options)
            files.append(try Data(contentsOf: URL(fileURLWithPath: out + "/" + LoRAAdapterWriter.weightsFileName)))
        }
        #expect(files[0] == files[1])
    }

    @Test func problemsAreFoundBeforeAnythingIsWritten() throws {
        let pair = LoRAPair(rank: 2)
        defer { try? FileManager.default.removeItem(atPath: pair.folder) }
        let out = pair.folder + "/adapter"
        func failure(_ tuned: String, _ base: String, _ options: LoRAExtraction.Options) -> String? {
            do {
                _ = try LoRAExtraction.extract(tuned: tuned, base: base, output: out, options: options)
                return nil
            } catch {
                return "\(error)"
            }
        }
        // Rank ≤ 0, rank beyond min(out, in) (k_proj is 16 × 32).
        #expect(failure(pair.tuned, pair.base, .init(rank: 0))?.contains("must be at least 1") == true)
        #expect(failure(pair.tuned, pair.base, .init(rank: 17))?.contains("17 exceeds min(out, in) = 16 of 'model.layers.0.self_attn.k_proj'") == true)
        // A base whose q_proj has another shape, and one without up_proj.
        let other = pair.folder + "/other.safetensors"
        let source = try Checkpoint.open(pair.base)
        writeCheckpoint(other, try source.tensors.filter { !$0.name.contains("up_proj") }.map { t in
            t.name.contains("q_proj") ? TestTensor(name: t.name, shape: [16, 64], values: try source.decode(t))
                                      : TestTensor(name: t.name, shape: t.shape, values: try source.decode(t))
        })
        let message = try #require(failure(pair.tuned, other, .init(rank: 2)))
        #expect(message.contains("tensor 'model.layers.0.self_attn.q_proj.weight' has shape [32, 32] in the fine-tune but [16, 64] in the base"))
        #expect(message.contains("tensor 'model.layers.0.mlp.up_proj.weight' is missing from the base"))
        #expect(!message.contains("\n"))
        // The fine-tune lacking a weight the base has.
        #expect(failure(other, pair.base, .init(rank: 2))?.contains("of the base is missing from the fine-tune") == true)
        // A NaN in the fine-tune: no SVD exists, said in one line naming the tensor.
        let broken = pair.folder + "/nan.safetensors"
        let tunedSource = try Checkpoint.open(pair.tuned)
        writeCheckpoint(broken, try tunedSource.tensors.map { t in
            var values = try tunedSource.decode(t)
            if t.name.contains("q_proj") { values[5] = .nan }
            return TestTensor(name: t.name, shape: t.shape, values: values)
        })
        #expect(failure(broken, pair.base, .init(rank: 2)) ==
                "\(broken): tensor 'model.layers.0.self_attn.q_proj.weight': fine-tune minus base holds NaN or infinite values, which have no SVD")
        var options = LoRAExtraction.Options(rank: 2)
        options.targets = ["qproj"]
        #expect(failure(pair.tuned, pair.base, options)?.contains("no 2-D weight") == true)
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(try FileManager.default.contentsOfDirectory(atPath: pair.folder).allSatisfy { !$0.contains("partial") })
    }
}
