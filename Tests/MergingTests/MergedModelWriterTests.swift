import Checkpoints
import Foundation
import Testing
@testable import Merging

/// `MergedModelWriter` on the merge fixtures: what a folder and a GGUF output hold,
/// and that a failure part-way leaves nothing behind.
@Suite struct MergedModelWriterTests {
    private static func fixture(_ relative: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("fixtures").appendingPathComponent(relative).path
    }

    private static func plan(base: String = fixture("merge/base")) -> MergePlan {
        MergePlan(method: .ties, base: base, models: [
            ModelSpec(path: fixture("merge/sft"), parameters: ["weight": .number(1), "density": .number(0.5)]),
            ModelSpec(path: fixture("merge/dpo"), parameters: ["weight": .number(1)]),
        ])
    }

    private static func listing(_ folder: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    }

    /// A copy of the base fixture whose tokenizer.json is a link leaving the folder,
    /// which side-file copying refuses after the tensors are written.
    private static func baseWithEscapingTokenizer(in folder: String) throws -> String {
        let base = folder + "/base"
        try FileManager.default.copyItem(atPath: fixture("merge/base"), toPath: base)
        let outside = folder + "/outside.json"
        try "{}".write(toFile: outside, atomically: true, encoding: .utf8)
        try FileManager.default.createSymbolicLink(atPath: base + "/tokenizer.json", withDestinationPath: outside)
        return base
    }

    @Test func writesAFolderWithTheEngineTensorsSideFilesCardAndRecipe() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let plan = Self.plan()
        let recipe = MergeRecipe.yaml(for: plan)
        var progressCalls = 0
        try MergedModelWriter.write(try PreparedMerge.prepare(plan), to: folder + "/out",
                                    options: .init(workers: 2, recipe: recipe), progress: { _ in progressCalls += 1 })
        #expect(Self.listing(folder) == ["out"])
        #expect(Self.listing(folder + "/out") == ["README.md", "config.json", "merge-config.yml", "model.safetensors"])
        #expect(FileManager.default.contents(atPath: folder + "/out/merge-config.yml") == Data(recipe.utf8))
        #expect(FileManager.default.contents(atPath: folder + "/out/config.json")
                == FileManager.default.contents(atPath: Self.fixture("merge/base/config.json")))
        let card = try String(contentsOfFile: folder + "/out/README.md", encoding: .utf8)
        #expect(card == ModelCard.text(for: plan, recipe: recipe))
        // The tensors are the engine's, byte for byte.
        let expected = try runMerge(plan)
        let written = try Checkpoint.open(folder + "/out")
        #expect(Set(written.tensors.map(\.name)) == Set(expected.tensors.keys))
        for t in written.tensors { #expect(Array(written.data(of: t)) == expected.tensors[t.name]) }
        #expect(progressCalls == written.tensors.count)
    }

    @Test func withoutARecipeWritesNoCardAndReplacesWhenAsked() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        try "old".write(toFile: out + "/stale.txt", atomically: true, encoding: .utf8)
        #expect(throws: CheckpointError.self) {
            try MergedModelWriter.write(try PreparedMerge.prepare(Self.plan()), to: out, options: .init(workers: 2))
        }
        #expect(Self.listing(out) == ["stale.txt"])
        try MergedModelWriter.write(try PreparedMerge.prepare(Self.plan()), to: out, options: .init(overwrite: true, workers: 2))
        #expect(Self.listing(out) == ["config.json", "model.safetensors"])
        #expect(Self.listing(folder) == ["out"])
    }

    @Test func writesOneGGUFFileConvertedFromTheMergedFolder() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let out = folder + "/merged.gguf"
        var warnings: [String] = []
        try MergedModelWriter.write(try PreparedMerge.prepare(Self.plan()), to: out,
                                    options: .init(format: .gguf(type: .f32), workers: 2, recipe: "merge_method: ties\n"),
                                    warn: { warnings.append($0) })
        #expect(Self.listing(folder) == ["merged.gguf"])
        // The staged folder is never named: the warning names the base.
        #expect(warnings == ["\(Self.fixture("merge/base")): no tokenizer.json; the GGUF file has no tokenizer keys"])
        let gguf = try Checkpoint.open(out)
        #expect(gguf.format == .gguf)
        let expected = try runMerge(Self.plan())
        #expect(gguf.tensors.count == expected.tensors.count)
        // F32 in and out: the embedding (rows in the same order in both formats) keeps its bytes.
        let embedding = try #require(gguf.tensor(named: "token_embd.weight"))
        #expect(Array(gguf.data(of: embedding)) == expected.tensors["model.embed_tokens.weight"])
    }

    @Test func ggufOutputNeedsABaseFolderWithConfigBeforeMerging() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let base = folder + "/base"
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: Self.fixture("merge/base/model.safetensors"), toPath: base + "/model.safetensors")
        let out = folder + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        let error = #expect(throws: CheckpointError.self) {
            try MergedModelWriter.write(try PreparedMerge.prepare(Self.plan(base: base)), to: out + "/m.gguf",
                                        options: .init(format: .gguf(type: .f16), workers: 2))
        }
        guard case .conversion(let file, .missingConfigFile) = error else {
            Issue.record("expected a missing config.json, got \(String(describing: error))")
            return
        }
        #expect(file == base)
        #expect(Self.listing(out).isEmpty)
    }

    @Test(arguments: [MergedModelWriter.Options.Format.folder, .gguf(type: .q8_0)])
    func aFailureAfterTheTensorsLeavesNothingBehind(format: MergedModelWriter.Options.Format) throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let base = try Self.baseWithEscapingTokenizer(in: folder)
        let out = folder + "/out"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: false)
        var progressCalls = 0
        #expect(throws: CheckpointError.self) {
            try MergedModelWriter.write(try PreparedMerge.prepare(Self.plan(base: base)), to: out + "/merged",
                                        options: .init(format: format, workers: 2, recipe: "merge_method: ties\n"),
                                        progress: { _ in progressCalls += 1 })
        }
        // The merge ran to the end before the side file was refused.
        #expect(progressCalls > 0)
        #expect(Self.listing(out).isEmpty)
    }
}
