import Checkpoints
import Foundation
import Testing
@testable import Merging

/// fixtures/tokenizers, made by fixtures/tokenizers/make_fixtures.py: a base with 30
/// tokens, and sft and dpo with two added instruct tokens (32 rows).
private let tokenizerFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures/tokenizers").path

private func recipeText(_ recipe: String) throws -> String {
    try String(contentsOfFile: tokenizerFixtures + "/recipes/\(recipe).yml", encoding: .utf8)
        .replacingOccurrences(of: "FIXTURE", with: tokenizerFixtures)
}

private func fixturePlan(_ recipe: String) throws -> MergePlan {
    try MergeRecipe.parse(try recipeText(recipe), file: "\(recipe).yml")
}

private func json(_ path: String) throws -> JSONValue {
    try readJSONFile(path, rejectDuplicateKeys: false)
}

/// The chat template a tokenizer folder carries: tokenizer_config.json's, else chat_template.jinja.
private func chatTemplate(in folder: String) throws -> String? {
    if let template = try json(folder + "/tokenizer_config.json")["chat_template"]?.stringValue { return template }
    guard FileManager.default.fileExists(atPath: folder + "/chat_template.jinja") else { return nil }
    return try String(contentsOfFile: folder + "/chat_template.jinja", encoding: .utf8)
}

/// A tokenizer.json's vocabulary: token → id over the model's and the added tokens,
/// and the added tokens as (id, content, special).
private func vocabulary(_ folder: String) throws -> (ids: [String: Int], added: [String]) {
    let tokenizer = try #require(try TokenizerFile.read(folder: folder, followSymlinks: false))
    let added = tokenizer.added.map { "\($0.id) \($0.content) special=\($0.entry["special"].map { "\($0)" } ?? "?")" }
    return (tokenizer.ids, added)
}

/// Writes the merge of a fixture recipe into a fresh folder, returning the folder.
private func writeFixtureMerge(_ recipe: String, into parent: String) throws -> String {
    let prepared = try PreparedMerge.prepare(try fixturePlan(recipe))
    let out = parent + "/" + recipe
    try MergedModelWriter.write(prepared, to: out, options: .init(workers: 2))
    return out
}

/// Every recipe of the fixture set: the same tensors, shapes, vocab_size, vocabulary and
/// added tokens as mergekit 0.1.5 wrote, ≥ 99.9 % of elements within one Float32 step
/// (the merge itself is Float32 arithmetic in another order; the mapped rows are copies
/// or means computed as mergekit computes them), and the same chat template except where
/// the recipe names one (Claire writes its own text of the named formats).
@Test(arguments: ["source_base", "source_model", "union", "tokens_forced", "chat_template_name", "chat_template_auto", "slices_union"])
func tokenizerRecipesAgreeWithMergekit(recipe: String) throws {
    let parent = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: parent) }
    let out = try writeFixtureMerge(recipe, into: parent)
    let reference = tokenizerFixtures + "/mergekit/" + recipe

    let mine = try Checkpoint.open(out + "/model.safetensors")
    let theirs = try Checkpoint.open(reference + "/model.safetensors")
    #expect(Set(mine.tensors.map(\.name)) == Set(theirs.tensors.map(\.name)))
    var total = 0, identical = 0, close = 0
    for entry in theirs.tensors {
        let own = try #require(mine.tensor(named: entry.name))
        #expect(own.shape == entry.shape, "\(entry.name)")
        #expect(own.dtype == entry.dtype, "\(entry.name)")
        let counts = stepAgreement(Array(mine.data(of: own)), Array(theirs.data(of: entry)), width: 4)
        total += counts.total
        identical += counts.identical
        close += counts.close
    }
    print("\(recipe): \(identical) of \(total) elements identical to mergekit's, \(close) within one step")
    #expect(total > 0)
    #expect(Double(close) >= 0.999 * Double(total))

    #expect(try json(out + "/config.json")["vocab_size"] == json(reference + "/config.json")["vocab_size"])
    let (myIDs, myAdded) = try vocabulary(out)
    let (theirIDs, theirAdded) = try vocabulary(reference)
    #expect(myIDs == theirIDs)
    #expect(myAdded == theirAdded)
    let myTemplate = try chatTemplate(in: out), theirTemplate = try chatTemplate(in: reference)
    if recipe == "chat_template_name" {
        #expect(myTemplate == ChatTemplate.named["llama3"])
        #expect(theirTemplate?.contains("<|start_header_id|>") == true)
    } else {
        #expect(myTemplate?.trimmingCharacters(in: .whitespacesAndNewlines) == theirTemplate?.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}

/// The rows mergekit gives a model for a token it lacks: the output of `source_model`
/// (sft's tokenizer) has for the base the mean of sft's and dpo's rows, so the merged
/// row of <|im_start|> is base_mean + 0.6 (sft − mean) + 0.4 (dpo − mean).
@Test func aTokenTheBaseLacksTakesTheMeanOfTheModelsHoldingIt() throws {
    let prepared = try PreparedMerge.prepare(try fixturePlan("source_model"))
    let sink = MemorySink()
    try MergeExecutor(prepared, threads: 1).run(into: sink)
    let merged = sink.values("model.embed_tokens.weight")
    #expect(merged.count == 32 * 8)
    let sft = try Checkpoint.open(tokenizerFixtures + "/sft/model.safetensors")
    let dpo = try Checkpoint.open(tokenizerFixtures + "/dpo/model.safetensors")
    func row(_ c: Checkpoint, _ r: Int) throws -> [Float] {
        try VocabularyAlignment.readRow(c, try #require(c.tensor(named: "model.embed_tokens.weight")), r, width: 8)
    }
    let a = try row(sft, 30), b = try row(dpo, 30)
    for i in 0..<8 {
        let mean = (a[i] + b[i]) / 2
        let expected = mean + (0.6 * (a[i] - mean) + 0.4 * (b[i] - mean))
        #expect(abs(merged[30 * 8 + i] - expected) <= 4 * expected.ulp)
    }
}

@Test func mismatchedVocabulariesAreRefusedAsMergekitRefusesThem() throws {
    // mergekit refuses the recipe too (its message is kept beside the fixtures).
    let message = try String(contentsOfFile: tokenizerFixtures + "/mergekit/refused_no_tokenizer_source/error.txt", encoding: .utf8)
    #expect(message.contains("size mismatch") || message.contains("mismatch"))
    let plan = try fixturePlan("refused_no_tokenizer_source")
    do {
        _ = try PreparedMerge.prepare(plan)
        Issue.record("a merge of 32-row and 30-row embeddings without tokenizer_source was accepted")
    } catch {
        let text = error.description
        #expect(!text.contains("\n"))
        #expect(text.contains("'model.embed_tokens.weight' has 32 rows in \(tokenizerFixtures)/sft but 30 in the base"))
        #expect(text.contains("set tokenizer_source"))
    }
}

@Test func aTokenizerSourceWithoutATokenizerIsAnError() throws {
    let text = try recipeText("source_model").replacingOccurrences(of: "tokenizer_source: \(tokenizerFixtures)/sft",
                                                                     with: "tokenizer_source: \(tokenizerFixtures)/recipes")
    let plan = try MergeRecipe.parse(text, file: "r.yml")
    #expect(throws: MergeError.checkpoint(.io(file: tokenizerFixtures + "/recipes/tokenizer.json",
                                              problem: "missing; it is the recipe's tokenizer_source"))) {
        try PreparedMerge.prepare(plan)
    }
}

@Test func unionNeedsEveryModelsTokenizer() throws {
    let folder = temporaryFolder()
    defer { try? FileManager.default.removeItem(atPath: folder) }
    // dpo's weights and config, without its tokenizer files.
    try FileManager.default.createDirectory(atPath: folder + "/dpo", withIntermediateDirectories: true)
    for name in ["model.safetensors", "config.json"] {
        try FileManager.default.copyItem(atPath: tokenizerFixtures + "/dpo/" + name, toPath: folder + "/dpo/" + name)
    }
    let text = try recipeText("union").replacingOccurrences(of: "\(tokenizerFixtures)/dpo", with: "\(folder)/dpo")
    let plan = try MergeRecipe.parse(text, file: "r.yml")
    #expect(throws: MergeError.checkpoint(.io(file: folder + "/dpo/tokenizer.json",
                                              problem: "missing; tokenizer_source union needs every model's tokenizer"))) {
        try PreparedMerge.prepare(plan)
    }
}

@Test func aListedTokenNoModelHasNeedsASource() throws {
    // `source:` left empty: no source.
    let text = try recipeText("tokens_forced").replacingOccurrences(of: "\n        kind: zero", with: "")
    #expect(!text.contains("zero"))
    let plan = try MergeRecipe.parse(text, file: "r.yml")
    #expect(throws: MergeError.badPlan("tokenizer token '<|tool|>' is in no model's tokenizer; give it a source (a model's token or {kind: zero})")) {
        try PreparedMerge.prepare(plan)
    }
}

@Test func aTokenSourceOutsideTheRecipeIsAnError() throws {
    let text = try recipeText("tokens_forced").replacingOccurrences(of: "source: \(tokenizerFixtures)/dpo",
                                                                     with: "source: \(tokenizerFixtures)/elsewhere")
    let plan = try MergeRecipe.parse(text, file: "r.yml")
    #expect(throws: MergeError.badPlan("tokenizer token '<|im_start|>' takes its row from \(tokenizerFixtures)/elsewhere, which is not a model of the recipe")) {
        try PreparedMerge.prepare(plan)
    }
}

@Test func theTokenizerSectionReadsAsMergekitReadsIt() throws {
    let plan = try fixturePlan("tokens_forced")
    let expected = TokenizerRecipe(source: .union, tokens: [
        ("<|im_start|>", .init(source: .model(tokenizerFixtures + "/dpo"), force: true)),
        ("<|im_end|>", .init(source: .modelToken(model: tokenizerFixtures + "/sft", token: "</s>", id: nil))),
        ("<|tool|>", .init(source: .zero)),
    ], padToMultipleOf: 12)
    #expect(plan.tokenizer == expected)
    // Written back and read again, the section is the same.
    #expect(try MergeRecipe.parse(MergeRecipe.yaml(for: plan), file: "back.yml").tokenizer == expected)
    // A section without source is a union, as in mergekit.
    let bare = try MergeRecipe.parse("merge_method: linear\nmodels: [{model: a}]\ntokenizer: {pad_to_multiple_of: 64}\n", file: "r.yml")
    #expect(bare.tokenizer == TokenizerRecipe(source: .union, padToMultipleOf: 64))
    #expect(try MergeRecipe.parse("merge_method: linear\nmodels: [{model: a}]\ntokenizer_source: union\n", file: "r.yml").tokenizer
        == TokenizerRecipe(source: .union))
}

@Test(arguments: [
    ("tokenizer_source: base\ntokenizer: {source: base}", "give either 'tokenizer_source' or 'tokenizer', not both"),
    ("tokenizer: {pad_to_multiple_of: 0}", "'pad_to_multiple_of' must be a positive integer (at most 1048576) (line 3)"),
    ("tokenizer: {tokens: {x: {source: {kind: model_token, model: a, token: y, token_id: 3}}}}",
     "token 'x': give exactly one of 'token' and 'token_id' (line 3)"),
    ("tokenizer: {tokens: {x: {source: {kind: mean}}}}", "token 'x': 'kind' must be zero or model_token (line 3)"),
    ("tokenizer: {tokens: {x: {force: maybe}}}", "token 'x': 'force' must be true or false (line 3)"),
    ("tokenizer: {vocab: base}", "unknown key 'vocab' in 'tokenizer' (expected source, tokens, pad_to_multiple_of) (line 3)"),
])
func badTokenizerSectionsAreOneLineErrors(section: String, problem: String) throws {
    let text = "merge_method: linear\nmodels: [{model: a}]\n" + section + "\n"
    #expect(throws: MergeError.recipe(file: "r.yml", problem: problem)) { try MergeRecipe.parse(text, file: "r.yml") }
}

@Test(arguments: ["alpaca", "chatml", "exaone", "llama3", "mistral"])
func mergekitsChatTemplateNamesAreKnown(name: String) throws {
    let template = try #require(ChatTemplate.template(for: name))
    #expect(template != name && template.contains("{%"))
    let markers = ["alpaca": "### Instruction:", "chatml": "<|im_start|>", "exaone": "[|endofturn|]",
                   "llama3": "<|eot_id|>", "mistral": "[INST]"]
    #expect(template.contains(markers[name]!))
}

@Test func roundingFilledRowsFollowsTheInputType() {
    // 1 + 2⁻⁹ lies halfway between two BF16 values; it rounds to even (1).
    var values: [Float] = [1 + 1.0 / 512, 3]
    VocabularyAlignment.round(&values, to: .bf16)
    #expect(values == [1, 3])
    var kept: [Float] = [1 + 1.0 / 512]
    VocabularyAlignment.round(&kept, to: .f32)
    #expect(kept == [1 + 1.0 / 512])
}

/// A tokenizer_source outside the recipe's models is taken as mergekit takes it: its
/// tokens are mapped like any others (here the base lacks <|im_start|>; dpo, the only
/// model holding it, gives the base its row, so the merged row is dpo's).
@Test func aTokenizerSourceOutsideTheModelsGivesTheOutputItsVocabulary() throws {
    let text = """
        merge_method: task_arithmetic
        base_model: \(tokenizerFixtures)/base
        models:
          - model: \(tokenizerFixtures)/dpo
            parameters: {weight: 0.4}
        tokenizer_source: \(tokenizerFixtures)/sft
        """
    let prepared = try PreparedMerge.prepare(try MergeRecipe.parse(text, file: "r.yml"))
    #expect(prepared.outputTokenizer?.rowCount == 32)
    let sink = MemorySink()
    try MergeExecutor(prepared, threads: 1).run(into: sink)
    let dpo = try Checkpoint.open(tokenizerFixtures + "/dpo/model.safetensors")
    let expected = try VocabularyAlignment.readRow(dpo, try #require(dpo.tensor(named: "lm_head.weight")), 30, width: 8)
    #expect(Array(sink.values("lm_head.weight")[(30 * 8)..<(31 * 8)]) == expected)
}
