import Foundation
import Testing

/// A fresh folder for a sweep's files; callers remove it.
private func sweepFolder() -> String {
    let folder = NSTemporaryDirectory() + "claire-sweep-" + UUID().uuidString
    try! FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder
}

/// A TIES recipe over the merge fixtures, written into `folder`.
private func tiesRecipe(in folder: String) throws -> String {
    let path = folder + "/recipe.yml"
    try """
        merge_method: ties
        base_model: \(fixture("merge/base"))
        models:
          - model: \(fixture("merge/sft"))
            parameters: {weight: 1, density: 0.3}
          - model: \(fixture("merge/dpo"))
            parameters: {weight: 0.8, density: 0.7}
        parameters: {normalize: true}
        """.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

/// A scorer without Python: logs each model it is given to `log`, fails (exit 1) for a
/// merge with a weight of 0.5, and reports the model file's CRC and size.
private func scorer(in folder: String, log: String) throws -> String {
    let path = folder + "/score.sh"
    try """
        echo "$1" >> '\(log)'
        if grep -q 'weight: 0.5' "$1/merge-config.yml" 2>/dev/null; then echo 'no half weights' >&2; exit 1; fi
        crc=$(cksum < "$1/model.safetensors" | cut -d' ' -f1)
        size=$(wc -c < "$1/model.safetensors")
        echo "scoring $1"
        printf '{"crc": %s, "size": %s}\\n' "$crc" $size
        """.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

private func lines(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
}

@Suite struct SweepCommandTests {
    @Test func aFailingCandidateIsReportedAndAResumeSkipsWhatIsScored() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder), log = folder + "/scored.log"
        let script = try scorer(in: folder, log: log)
        let arguments = ["sweep", recipe, "--grid", "models.0.parameters.density=0.3:0.9:3",
                         "--grid", "models.1.parameters.weight=0.5,1", "--eval", "sh \(script) {model}",
                         "--objective", "crc", "--pareto", "crc,-size", "-o", folder + "/out"]
        let first = try runTool(arguments)
        #expect(first.status == 0)
        // Three candidates have weight 0.5: each fails on one line and the others are scored.
        let failures = first.err.split(separator: "\n").filter { $0.hasPrefix("warning: candidate #") }
        #expect(failures.count == 3)
        // Candidates run side by side, so the warnings come in any order.
        #expect(failures.contains("warning: candidate #0 0.density=0.3 1.weight=0.5 failed: the evaluation command exited with status 1"))
        #expect(lines(log).count == 3 + 6)
        let results = lines(folder + "/out/results.jsonl")
        #expect(results.count == 9)
        #expect(results.filter { $0.contains("\"error\":\"the evaluation command exited with status 1\"") }.count == 3)
        #expect(results.filter { $0.hasPrefix("{\"kind\":\"parent\"") && $0.contains("\"metrics\":{\"crc\":") }.count == 3)
        // The candidate column is as wide as its longest label (the parents' paths).
        let header = first.out.split(separator: "\n").first.map(String.init) ?? ""
        #expect(header.hasPrefix("rank    candidate ") && header.hasSuffix(" crc (objective, max)  size"))
        #expect(first.out.contains("6 candidates (6 scored now in"))
        #expect(first.out.contains(", 3 failed); best: #"))
        let svg = try String(contentsOfFile: folder + "/out/pareto.svg", encoding: .utf8)
        #expect(svg.components(separatedBy: "fill=\"#ff7f0e\"><title>").count - 1 == 3)
        // Merged models are removed after scoring; the recipes stay.
        let kept = try FileManager.default.contentsOfDirectory(atPath: folder + "/out/candidates").sorted()
        #expect(kept == ["0.yml", "1.yml", "2.yml", "3.yml", "4.yml", "5.yml"])

        // The re-run scores only the failed candidates again.
        let second = try runTool(arguments)
        #expect(second.status == 0)
        #expect(second.err.contains("sweep: resuming \(folder)/out: 3 of 6 candidates already scored"))
        #expect(lines(log).count == 9 + 3)
        #expect(lines(folder + "/out/results.jsonl").count == 12)
        #expect(second.out.contains("6 candidates (3 scored now in"))

        // Another recipe with the same grid: nothing is reused.
        let edited = try String(contentsOfFile: recipe, encoding: .utf8).replacingOccurrences(of: "weight: 1,", with: "weight: 0.9,")
        try edited.write(toFile: recipe, atomically: true, encoding: .utf8)
        let third = try runTool(arguments)
        #expect(third.status == 0)
        #expect(third.err.contains("sweep: 3 candidates in \(folder)/out/results.jsonl were scored with another recipe or evaluation"))
        #expect(lines(log).count == 12 + 6)
    }

    @Test func theBestRecipeRemakesTheScoredModel() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder)
        let script = try scorer(in: folder, log: folder + "/scored.log")
        let result = try runTool(["sweep", recipe, "--grid", "models.0.parameters.density=0.2:0.8:4",
                                  "--grid", "parameters.lambda=0.9,1.1", "--eval", "sh \(script)",
                                  "--objective=-crc", "--keep", "--json", "-o", folder + "/out"])
        #expect(result.status == 0)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
        let best = try #require(report["best"] as? [String: Any])
        let index = try #require(best["index"] as? Int)
        let crc = try #require((best["metrics"] as? [String: Any])?["crc"] as? Double)
        let all = try #require(report["candidates"] as? [[String: Any]])
        #expect(all.count == 8)
        let crcs = all.compactMap { ($0["metrics"] as? [String: Any])?["crc"] as? Double }
        #expect(crcs.count == 8 && crc == crcs.min() && crcs == crcs.sorted())

        let remade = folder + "/remade"
        let fuse = try runTool(["fuse", "--config", folder + "/out/best.yml", "-o", remade])
        #expect(fuse.status == 0)
        for file in ["model.safetensors", "merge-config.yml", "README.md", "config.json"] {
            let scored = FileManager.default.contents(atPath: folder + "/out/candidates/\(index)/\(file)")
            #expect(scored != nil && scored == FileManager.default.contents(atPath: remade + "/" + file), "\(file)")
        }
    }

    @Test func builtinEvaluationScoresTinyLlamaMerges() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let model = fixture("training/tiny-llama")
        try """
            merge_method: linear
            models:
              - model: \(model)
                parameters: {weight: 1}
            parameters: {normalize: false}
            """.write(toFile: folder + "/recipe.yml", atomically: true, encoding: .utf8)
        let result = try runTool(["sweep", folder + "/recipe.yml", "--grid", "models.0.parameters.weight=0.5,1",
                                  "--eval", "builtin", "--objective=-perplexity", "--jobs", "2", "--json", "-o", folder + "/out"])
        #expect(result.status == 0, "\(result.err)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.out.utf8)) as? [String: Any])
        let candidates = try #require(report["candidates"] as? [[String: Any]])
        let parents = try #require(report["parents"] as? [[String: Any]])
        #expect(candidates.count == 2 && parents.count == 1)
        let parentMetrics = try #require(parents.first?["metrics"] as? [String: Double])
        #expect(Set(parentMetrics.keys) == ["instruction_loss", "exact_match", "preference_accuracy", "polite_rate", "perplexity"])
        // Weight 1 without normalizing copies the model: the same scores as the parent.
        let copy = try #require(candidates.first { ($0["parameters"] as? [String: Double])?["models.0.parameters.weight"] == 1 })
        #expect(copy["metrics"] as? [String: Double] == parentMetrics)
        let halved = try #require(candidates.first { ($0["parameters"] as? [String: Double])?["models.0.parameters.weight"] == 0.5 })
        #expect(halved["metrics"] as? [String: Double] != parentMetrics)
    }

    @Test(arguments: [
        (["--grid", "models.0.parameters.density"], "--grid 'models.0.parameters.density': expected PATH=FROM:TO:COUNT"),
        (["--grid", "x=1:2:0"], "--grid 'x=1:2:0': COUNT '0' must be a whole number"),
        (["--grid", "x=1", "--pareto", "acc"], "--pareto: 'acc' must name two metrics, M1,M2"),
        (["--grid", "x=1", "--jobs", "0"], "--jobs must be from 1 to 256"),
        (["--grid", "x=1", "--eval", "sh s.sh", "--base", "b"], "--base is read by --eval builtin only"),
        ([], "give at least one --grid axis"),
    ])
    func refusesBadArguments(extra: [String], message: String) throws {
        let result = try runTool(["sweep", "r.yml", "--eval", "builtin", "--objective", "acc", "-o", "out"] + extra)
        #expect(result.status == 64)
        #expect(result.err.contains(message), "\(result.err)")
    }

    @Test func randomDrawsAreSeededAndResumable() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder), log = folder + "/scored.log"
        let script = try scorer(in: folder, log: log)
        let arguments = ["sweep", recipe, "--grid", "models.0.parameters.density=0.1:0.9:2",
                         "--grid", "models.1.parameters.weight=0.7,0.8,1", "--random", "4", "--seed", "5",
                         "--eval", "sh \(script) {model}", "--objective", "crc", "--json", "-o", folder + "/out"]
        let first = try runTool(arguments)
        #expect(first.status == 0)
        let report = try #require(try JSONSerialization.jsonObject(with: Data(first.out.utf8)) as? [String: Any])
        let drawn = try #require(report["candidates"] as? [[String: Any]])
        #expect(drawn.count == 4)
        for candidate in drawn {
            let density = try #require((candidate["parameters"] as? [String: Any])?["models.0.parameters.density"] as? Double)
            #expect(density >= 0.1 && density <= 0.9)
        }
        #expect(lines(log).count == 3 + 4)
        let again = try runTool(arguments)
        #expect(again.status == 0)
        #expect(again.err.contains("4 of 4 candidates already scored"))
        #expect(lines(log).count == 3 + 4)
        #expect(again.out == first.out)
    }

    @Test func outputThatIsNotMetricsFailsEveryCandidate() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder)
        let result = try runTool(["sweep", recipe, "--grid", "models.1.parameters.weight=1,2", "--eval", "echo hello; : {model}",
                                  "--objective", "acc", "-o", folder + "/out"])
        #expect(result.status == 1)
        let lines = result.err.split(separator: "\n").map(String.init)
        #expect(lines.filter { $0.hasSuffix(" failed: the evaluation printed 'hello', not a JSON object of metrics") }.count == 2 + 3)
        #expect(lines.last == "error: \(folder)/out: no candidate has the metric 'acc' (2 of 2 failed; see \(folder)/out/results.jsonl)")
        #expect(!FileManager.default.fileExists(atPath: folder + "/out/best.yml"))
    }

    @Test func anOutputThatIsAFileIsRefused() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder)
        _ = FileManager.default.createFile(atPath: folder + "/out", contents: Data("x".utf8))
        let result = try runTool(["sweep", recipe, "--grid", "models.1.parameters.weight=1,2", "--eval", "true",
                                  "--objective", "acc", "-o", folder + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(folder)/out: exists and is not a folder; choose another output\n")
    }

    @Test func anOutputInsideAnInputIsRefused() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder)
        let inside = fixture("merge/sft") + "/sweep"
        let result = try runTool(["sweep", recipe, "--grid", "models.1.parameters.weight=1,2", "--eval", "true",
                                  "--objective", "acc", "-o", inside])
        #expect(result.status == 1)
        #expect(result.err == "error: \(inside): lies inside the input \(fixture("merge/sft")); choose another output\n")
        #expect(!FileManager.default.fileExists(atPath: inside))
    }

    @Test func aBuiltinBaseThatIsNoTrainingModelStopsBeforeAnythingIsWritten() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder)
        let result = try runTool(["sweep", recipe, "--grid", "models.1.parameters.weight=1,2", "--eval", "builtin",
                                  "--objective", "acc", "-o", folder + "/out"])
        #expect(result.status == 1)
        #expect(result.err.hasPrefix("error: \(fixture("merge/base"))"), "\(result.err)")
        #expect(!FileManager.default.fileExists(atPath: folder + "/out"))
    }

    @Test func aPathMissingFromTheRecipeIsAnError() throws {
        let folder = sweepFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let recipe = try tiesRecipe(in: folder)
        let result = try runTool(["sweep", recipe, "--grid", "models.2.parameters.weight=1,2", "--eval", "builtin",
                                  "--objective", "acc", "-o", folder + "/out"])
        #expect(result.status == 1)
        #expect(result.err == "error: \(recipe): path 'models.2.parameters.weight': 'models.2' does not exist "
            + "(the list has 2 entries, indices 0 to 1)\n")
        #expect(!FileManager.default.fileExists(atPath: folder + "/out"))
    }
}
