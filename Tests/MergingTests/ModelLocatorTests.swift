import Checkpoints
import Foundation
import Testing
@testable import Merging

/// Recipes name models by hub ID; the IDs resolve through a Hugging Face cache laid
/// out as the hub library lays it out: blobs, snapshots of links to them, and refs.
@Suite struct ModelLocatorTests {
    static let commit = "0123456789abcdef0123456789abcdef01234567"
    static let other = "fedcba9876543210fedcba9876543210fedcba98"

    /// Adds `models--org--<name>` to `cache`: one blob per file of the model written by
    /// `tensors`, a snapshot `commit` linking to them, and `refs/<ref>` for each ref.
    private func cacheModel(_ cache: String, _ name: String, _ tensors: [TestTensor], commit: String = commit,
                            refs: [String: String] = ["main": commit]) throws {
        let repo = cache + "/models--org--" + name
        let snapshot = repo + "/snapshots/" + commit
        let fm = FileManager.default
        try fm.createDirectory(atPath: repo + "/blobs", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: snapshot, withIntermediateDirectories: true)
        let blob = name + "-" + commit + "-weights"
        writeCheckpoint(repo + "/blobs/" + blob, tensors)
        try fm.createSymbolicLink(atPath: snapshot + "/model.safetensors", withDestinationPath: "../../blobs/" + blob)
        try "{\"torch_dtype\": \"float32\"}".write(toFile: repo + "/blobs/" + blob + "-config", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: snapshot + "/config.json", withDestinationPath: "../../blobs/" + blob + "-config")
        for (ref, target) in refs {
            let path = repo + "/refs/" + ref
            try fm.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try (target + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        }
    }

    private func layer(_ value: Float) -> [TestTensor] {
        [TestTensor(name: "model.layers.0.mlp.up_proj.weight", shape: [2, 2], values: [value, value, value, value])]
    }

    private func recipe(_ text: String, in folder: String) throws -> String {
        let path = folder + "/recipe.yml"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func hubIDsResolveToCachedSnapshotsAndMerge() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cache = folder + "/hub"
        try cacheModel(cache, "base", layer(1))
        try cacheModel(cache, "sft", layer(3), commit: Self.other, refs: [:])
        try cacheModel(cache, "dpo", layer(5), refs: ["main": Self.other, "v1": Self.commit])
        let path = try recipe("""
            merge_method: task_arithmetic
            base_model: org/base
            models:
              - model: org/sft@\(Self.other)
                parameters: {weight: 1}
              - model: org/dpo@v1
                parameters: {weight: 1}
            """, in: folder)
        let (plan, _) = try MergeRecipe.load(path, locator: ModelLocator(cacheFolder: cache))
        #expect(plan.base == cache + "/models--org--base/snapshots/" + Self.commit)
        #expect(plan.models.map(\.path) == [cache + "/models--org--sft/snapshots/" + Self.other,
                                            cache + "/models--org--dpo/snapshots/" + Self.commit])
        // The snapshot's links into the repository's blobs are read without --follow-symlinks.
        let sink = try runMerge(plan)
        #expect(sink.values("model.layers.0.mlp.up_proj.weight") == [7, 7, 7, 7])
    }

    @Test func hubIDsInSlicesResolveAndStack() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cache = folder + "/hub"
        try cacheModel(cache, "base", layer(1))
        try cacheModel(cache, "sft", layer(3))
        let path = try recipe("""
            merge_method: passthrough
            slices:
              - sources: [{model: org/base, layer_range: [0, 1]}]
              - sources: [{model: org/sft, layer_range: [0, 1]}]
            """, in: folder)
        let (plan, _) = try MergeRecipe.load(path, locator: ModelLocator(cacheFolder: cache))
        #expect(plan.slices?.map { $0.sources[0].path } == [cache + "/models--org--base/snapshots/" + Self.commit,
                                                           cache + "/models--org--sft/snapshots/" + Self.commit])
        let sink = try runMerge(plan)
        #expect(sink.values("model.layers.0.mlp.up_proj.weight") == [1, 1, 1, 1])
        #expect(sink.values("model.layers.1.mlp.up_proj.weight") == [3, 3, 3, 3])
    }

    @Test func anIDNotInTheCacheSaysWhereItLooked() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cache = folder + "/hub"
        try cacheModel(cache, "base", layer(1))
        let path = try recipe("merge_method: task_arithmetic\nbase_model: org/base\nmodels:\n  - model: org/missing\n", in: folder)
        #expect(throws: MergeError.recipe(file: path, problem: "model 'org/missing' is neither a local path nor in the Hugging Face cache (looked for \(cache)/models--org--missing/refs/main)")) {
            _ = try MergeRecipe.load(path, locator: ModelLocator(cacheFolder: cache))
        }
        let revision = try recipe("merge_method: task_arithmetic\nbase_model: org/base@\(Self.other)\nmodels:\n  - model: org/base\n", in: folder)
        #expect(throws: MergeError.recipe(file: revision, problem: "model 'org/base@\(Self.other)' is neither a local path nor in the Hugging Face cache (looked for \(cache)/models--org--base/snapshots/\(Self.other))")) {
            _ = try MergeRecipe.load(revision, locator: ModelLocator(cacheFolder: cache))
        }
    }

    @Test func anExistingLocalPathWins() throws {
        let local = "claire-locator-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: local) }
        try FileManager.default.createDirectory(atPath: local + "/model", withIntermediateDirectories: true)
        let cache = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let locator = ModelLocator(cacheFolder: cache)
        #expect(try locator.locate(local + "/model") == local + "/model")
        #expect(throws: ModelLocator.Failure.self) { try locator.locate(local + "/other") }
        // Names that are no hub ID are left for opening to report.
        #expect(try locator.locate("nothing-here") == "nothing-here")
        #expect(try locator.locate("a/b/c") == "a/b/c")
        #expect(try locator.locate("../x") == "../x")
        #expect(ModelLocator.hubID("org/name@refs/pr/1")! == ("org/name", "refs/pr/1"))
        #expect(ModelLocator.hubID("org/name@../../x") == nil)
    }

    @Test func cacheFolderFollowsTheHubLibrarysEnvironment() {
        #expect(ModelLocator.cacheFolder(environment: ["HF_HUB_CACHE": "/a", "HF_HOME": "/b"]) == "/a")
        #expect(ModelLocator.cacheFolder(environment: ["HF_HOME": "/b", "HOME": "/h"]) == "/b/hub")
        #expect(ModelLocator.cacheFolder(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/x/huggingface/hub")
        #expect(ModelLocator.cacheFolder(environment: ["HOME": "/h"]) == "/h/.cache/huggingface/hub")
    }

    @Test func snapshotLinksLeavingTheBlobsAreStillRefused() throws {
        let folder = temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cache = folder + "/hub"
        try cacheModel(cache, "base", layer(1))
        let snapshot = cache + "/models--org--base/snapshots/" + Self.commit
        #expect(HFFolder.staysInside(snapshot + "/model.safetensors", folder: snapshot))
        // A link to a file beside the cache is outside.
        writeCheckpoint(folder + "/elsewhere.safetensors", layer(2))
        try FileManager.default.removeItem(atPath: snapshot + "/model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: snapshot + "/model.safetensors", withDestinationPath: "../../../../elsewhere.safetensors")
        #expect(throws: CheckpointError.self) { _ = try Checkpoint.open(snapshot) }
        // So is a blob reached through a blobs folder that is itself a link.
        let repo = cache + "/models--org--base"
        try FileManager.default.moveItem(atPath: repo + "/blobs", toPath: folder + "/real-blobs")
        try FileManager.default.createSymbolicLink(atPath: repo + "/blobs", withDestinationPath: folder + "/real-blobs")
        try FileManager.default.removeItem(atPath: snapshot + "/model.safetensors")
        try FileManager.default.createSymbolicLink(atPath: snapshot + "/model.safetensors",
                                                   withDestinationPath: "../../blobs/base-\(Self.commit)-weights")
        #expect(throws: CheckpointError.self) { _ = try Checkpoint.open(snapshot) }
        #expect(try Checkpoint.open(snapshot, followSymlinks: true).tensors.count == 1)
    }
}
