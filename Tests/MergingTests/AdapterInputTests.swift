import Checkpoints
import Foundation
import Testing
@testable import Merging

// LoRA adapters where a fine-tune is: opened against their base, merged as base + δ.

private func fixtureFile(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fixtures").appendingPathComponent(name).path
}

private let base = fixtureFile("merge/base")

/// Runs `plan` and returns the output tensors decoded from `dtype`.
private func run(_ plan: MergePlan) throws -> (MemorySink, PreparedMerge) {
    let prepared = try PreparedMerge.prepare(plan)
    let sink = MemorySink()
    try MergeExecutor(prepared, threads: 2).run(into: sink)
    return (sink, prepared)
}

@Test func taskArithmeticOfOneAdapterIsPEFTsMergedModel() throws {
    // Float32 base: base + δ rounded once, as PEFT's merge_and_unload(), but taken back
    // through a task vector ((base + δ) − base) + base, which may move it by a step.
    for name in ["sft-lora", "dpo-lora", "head-lora", "emb-lora"] {
        for spelling in [fixtureFile("lora/" + name), base + "+" + fixtureFile("lora/" + name)] {
            let plan = MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: spelling, parameters: ["weight": .number(1)])])
            let (sink, prepared) = try run(plan)
            let merged = try Checkpoint.open(fixtureFile("lora/merged/\(name)/model.safetensors"))
            var identical = 0, total = 0
            for job in prepared.jobs {
                let expected = try merged.decode(try #require(merged.tensor(named: job.name)))
                let actual = sink.values(job.name)
                for i in expected.indices {
                    #expect(abs(actual[i] - expected[i]) <= 4 * expected[i].ulp + 1e-8, "\(name) \(job.name)[\(i)]")
                    identical += actual[i] == expected[i] ? 1 : 0
                    total += 1
                }
            }
            #expect(Double(identical) >= 0.75 * Double(total), "\(name): \(identical) of \(total)")
        }
    }
}

@Test func tensorsAnAdapterLeavesAloneAreTheBases() throws {
    let plan = MergePlan(method: .ties, base: base, models: [ModelSpec(path: fixtureFile("lora/dpo-lora"), parameters: ["weight": .number(1)]),
                                                             ModelSpec(path: fixtureFile("lora/head-lora"), parameters: ["weight": .number(1)])])
    let (sink, prepared) = try run(plan)
    let b = try Checkpoint.open(base)
    var changed: [String] = []
    for job in prepared.jobs where sink.values(job.name) != (try b.decode(b.tensor(named: job.name)!)) { changed.append(job.name) }
    // dpo-lora and head-lora adapt q_proj and v_proj; head-lora saves lm_head whole.
    #expect(Set(changed) == Set((0..<3).flatMap { ["model.layers.\($0).self_attn.q_proj.weight", "model.layers.\($0).self_attn.v_proj.weight"] }
                                 + ["lm_head.weight"]))
    #expect(prepared.warnings.allSatisfy { !$0.contains("not in the base") })
}

@Test func adaptersOutsideWhatTheyFitAreRefused() throws {
    let adapter = fixtureFile("lora/sft-lora")
    #expect(throws: MergeError.badPlan("\(adapter) is a LoRA adapter, which needs a base model (--base, or base+adapter)")) {
        try PreparedMerge.prepare(MergePlan(method: .linear, base: nil, models: [ModelSpec(path: adapter)]))
    }
    #expect(throws: MergeError.badPlan("\(adapter) is a LoRA adapter; slices take full models")) {
        var plan = MergePlan(method: .passthrough, base: base, models: [])
        plan.slices = [OutputSlice(sources: [SliceSource(path: adapter, layerRange: 0..<1)])]
        return try PreparedMerge.prepare(plan)
    }
    // The GPT-2 adapter does not fit the Llama base: the first module it names is reported.
    do {
        _ = try PreparedMerge.prepare(MergePlan(method: .taskArithmetic, base: base, models: [ModelSpec(path: fixtureFile("lora/gpt2-lora"))]))
        Issue.record("the GPT-2 adapter was accepted")
    } catch {
        #expect(error.description.hasPrefix(fixtureFile("lora/gpt2-lora") + "/adapter_model.safetensors: module 'transformer.h."))
    }
}

@Test func baseAndAdapterNamesSplitWhereAnAdapterFollows() throws {
    let a = fixtureFile("lora/sft-lora")
    #expect(AdapterInputs.split(base + "+" + a)! == (base, a))
    #expect(AdapterInputs.split(base) == nil)
    #expect(AdapterInputs.split(base + "+" + base) == nil)
    #expect(AdapterInputs.paths(base + "+" + a) == [base, a])
    #expect(try ModelLocator(cacheFolder: "/nonexistent").locate(base + "+" + a) == base + "+" + a)
    // Each part is looked up on its own: a hub ID before the '+' is searched in the cache.
    #expect(throws: ModelLocator.Failure.self) { try ModelLocator(cacheFolder: "/nonexistent").locate("org/name+" + a) }
}

/// An infinite factor makes δ non-finite: reported against the adapter's lora_B (and
/// carried through), or with strict, an error naming the adapter file.
@Test func nonFiniteAdapterValuesAreReportedAgainstTheAdapter() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    writeCheckpoint(folder + "/base.safetensors", [TestTensor(name: "w.weight", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])])
    let adapter = folder + "/adapter"
    try FileManager.default.createDirectory(atPath: adapter, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: adapter + "/adapter_config.json", contents: Data(#"{"r": 1, "lora_alpha": 1}"#.utf8))
    writeCheckpoint(adapter + "/adapter_model.safetensors", [
        TestTensor(name: "base_model.model.w.lora_A.weight", shape: [1, 3], values: [1, .infinity, 0]),
        TestTensor(name: "base_model.model.w.lora_B.weight", shape: [2, 1], values: [1, 1]),
    ])
    let plan = MergePlan(method: .taskArithmetic, base: folder + "/base.safetensors", models: [ModelSpec(path: adapter)])
    let executor = MergeExecutor(try PreparedMerge.prepare(plan), threads: 1)
    executor.strict = true
    #expect(throws: MergeError.nonFiniteInput(file: adapter + "/adapter_model.safetensors", tensor: "base_model.model.w.lora_B.weight")) {
        try executor.run(into: MemorySink())
    }
    let lenient = MergeExecutor(try PreparedMerge.prepare(plan), threads: 1)
    try lenient.run(into: MemorySink())
    #expect(lenient.nonFiniteInputs == ["'base_model.model.w.lora_B.weight' in \(adapter)/adapter_model.safetensors"])
}

/// An adapted layer's own saved weight (`base_layer.weight`) replaces the base's, and δ is
/// added to it.
@Test func aSavedBaseLayerIsWhatDeltaIsAddedTo() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    writeCheckpoint(folder + "/base.safetensors", [TestTensor(name: "w.weight", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])])
    let adapter = folder + "/adapter"
    try FileManager.default.createDirectory(atPath: adapter, withIntermediateDirectories: true)
    FileManager.default.createFile(atPath: adapter + "/adapter_config.json", contents: Data(#"{"r": 1, "lora_alpha": 2}"#.utf8))
    writeCheckpoint(adapter + "/adapter_model.safetensors", [
        TestTensor(name: "base_model.model.w.base_layer.weight", shape: [2, 3], values: [10, 20, 30, 40, 50, 60]),
        TestTensor(name: "base_model.model.w.lora_A.weight", shape: [1, 3], values: [1, 0, 0.5]),
        TestTensor(name: "base_model.model.w.lora_B.weight", shape: [2, 1], values: [1, 0.25]),
    ])
    let plan = MergePlan(method: .taskArithmetic, base: folder + "/base.safetensors", models: [ModelSpec(path: adapter)])
    let (sink, _) = try run(plan)
    // δ = 2·B·A = [[2, 0, 1], [0.5, 0, 0.25]].
    #expect(sink.values("w.weight") == [12, 20, 31, 40.5, 50, 60.25])
}
