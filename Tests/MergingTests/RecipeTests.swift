import Testing
@testable import Merging

@Test func recipeReadsModelsParametersFiltersAndGradients() throws {
    let plan = try MergeRecipe.parse("""
        merge_method: dare_ties
        base_model: base
        models:
          - model: a
            parameters:
              weight: 0.7
              density: [0.2, 0.6]
          - model: b
            parameters:
              density:
                - filter: self_attn
                  value: 0.5
                - filter: "*"
                  value: [1, 0]
        parameters:
          normalize: true
          lambda: 1.5
          rescale: false
          consensus: count
        out_dtype: float16
        seed: 9
        """, file: "r.yml")
    #expect(plan.method == .dareTies)
    #expect(plan.base == "base")
    #expect(plan.models.map(\.path) == ["a", "b"])
    #expect(plan.models[0].parameters["weight"] == .number(0.7))
    #expect(plan.models[0].parameters["density"] == .gradient([0.2, 0.6]))
    #expect(plan.models[1].parameters["density"]?.value(forTensor: "layers.3.self_attn.q", at: 0.5) == 0.5)
    #expect(plan.models[1].parameters["density"]?.value(forTensor: "layers.3.mlp.up", at: 0.25) == 0.75)
    #expect(plan.parameters["normalize"] == .number(1))
    #expect(plan.parameters["lambda"] == .number(1.5))
    #expect(plan.rescale == Rescale.none)
    #expect(plan.consensus == .count)
    #expect(plan.outputDType == .f16)
    #expect(plan.seed == 9)
}

@Test func gradientInterpolatesAcrossLayers() {
    let gradient = ParameterValue.gradient([0, 1, 0.5])
    #expect(gradient.value(forTensor: "x", at: 0) == 0)
    #expect(gradient.value(forTensor: "x", at: 0.25) == 0.5)
    #expect(gradient.value(forTensor: "x", at: 0.75) == 0.75)
    #expect(gradient.value(forTensor: "x", at: 1) == 0.5)
    // Layer 2 of 5 sits at t = 0.5; tensors outside the layers at t = 0; one layer at t = 1.
    #expect(LayerPosition.fraction(of: "model.layers.2.mlp.up_proj.weight", layerCount: 5) == 0.5)
    #expect(LayerPosition.fraction(of: "model.embed_tokens.weight", layerCount: 5) == 0)
    #expect(LayerPosition.fraction(of: "blk.0.attn_q.weight", layerCount: 1) == 1)
}

@Test func filterWithoutMatchFallsBackToTheGlobalValue() {
    let value = ParameterValue.filtered([FilteredParameter(filter: "mlp", value: .number(2))])
    #expect(value.value(forTensor: "self_attn.q", at: 0) == nil)
}

@Test func recipeRejectsUnknownKeysWithASuggestion() {
    #expect(throws: MergeError.recipe(file: "r.yml", problem: "unknown key 'base_modle' (did you mean 'base_model'?) (line 2)")) {
        try MergeRecipe.parse("merge_method: ties\nbase_modle: x\nmodels:\n  - model: a\n", file: "r.yml")
    }
}

@Test func recipeRejectsUnknownModelKeys() {
    #expect(throws: MergeError.self) {
        try MergeRecipe.parse("merge_method: ties\nbase_model: x\nmodels:\n  - model: a\n    weight: 1\n", file: "r.yml")
    }
}

@Test func recipeRejectsAnEmptySliceList() {
    #expect(throws: MergeError.recipe(file: "r.yml", problem: "'slices' must be a list of {sources, parameters} (line 2)")) {
        try MergeRecipe.parse("merge_method: ties\nslices: []\n", file: "r.yml")
    }
}

@Test func recipeRejectsAMisspeltMethod() {
    #expect(throws: MergeError.unknownMethod(name: "breadcrumb", suggestion: "breadcrumbs")) {
        try MergeRecipe.parse("merge_method: breadcrumb\nbase_model: x\nmodels:\n  - model: a\n", file: "r.yml")
    }
}

@Test func recipeRejectsNonNumericParameters() {
    #expect(throws: MergeError.self) {
        try MergeRecipe.parse("merge_method: ties\nbase_model: x\nmodels:\n  - model: a\n    parameters: {density: high}\n", file: "r.yml")
    }
}

@Test func writtenRecipeReadsBackToTheSamePlan() throws {
    let plan = MergePlan(
        method: .breadcrumbsTies, base: "base",
        models: [ModelSpec(path: "a", parameters: ["weight": .number(1), "density": .gradient([0.3, 0.9])]),
                 ModelSpec(path: "b", parameters: ["weight": .filtered([FilteredParameter(filter: "mlp", value: .number(0.5)),
                                                                        FilteredParameter(filter: nil, value: .number(1))])])],
        parameters: ["normalize": .number(0), "gamma": .number(0.02)],
        rescale: .inverse, consensus: .count, outputDType: .bf16)
    let text = MergeRecipe.yaml(for: plan)
    #expect(text.contains("normalize: false"))
    #expect(try MergeRecipe.parse(text, file: "merge-config.yml") == plan)
}

@Test func writtenRecipeUsesMergekitSpellingsAndNamesWhatMergekitIgnores() throws {
    let plan = MergePlan(
        method: .dareTies, base: "base",
        models: [ModelSpec(path: "a", parameters: ["weight": .number(1), "density": .number(0.4)])],
        rescale: .l1, consensus: .count, trim: .global, seed: 9, outputDType: .f16)
    let text = MergeRecipe.yaml(for: plan)
    // mergekit's rescale is a boolean; `l1` fails its validation.
    #expect(text.contains("  rescale: true\n"))
    #expect(!text.contains("rescale: l1"))
    let comments = text.split(separator: "\n").filter { $0.hasPrefix("#") }
    #expect(comments.count == 4 && comments[0] == "# For mergekit:")
    #expect(comments.contains { $0.contains("consensus: count is ignored by mergekit") })
    #expect(comments.contains { $0.contains("trim: global is ignored by mergekit") })
    #expect(comments.contains { $0.contains("seed is ignored by mergekit") })
    #expect(try MergeRecipe.parse(text, file: "merge-config.yml") == plan)

    let plain = MergePlan(method: .ties, base: "base", models: [ModelSpec(path: "a", parameters: ["weight": .number(1)])],
                          rescale: Rescale.none)
    let plainText = MergeRecipe.yaml(for: plain)
    #expect(plainText.contains("rescale: false"))
    #expect(!plainText.contains("#"))
    // Without an output type the recipe leaves the compute type to the inputs, as
    // mergekit reads it (`fuse` always writes the output type it used).
    var plainRead = plain
    plainRead.computeType = nil
    #expect(try MergeRecipe.parse(plainText, file: "merge-config.yml") == plainRead)
}

@Test func writtenLinearRecipeListsItsBaseWithWeightZero() throws {
    let plan = MergePlan(method: .linear, base: "base",
                         models: [ModelSpec(path: "a", parameters: ["weight": .number(0.6)]),
                                  ModelSpec(path: "b", parameters: ["weight": .number(0.4)])])
    let text = MergeRecipe.yaml(for: plan)
    #expect(text.hasPrefix("# For mergekit:\n#   the base is listed with weight 0"))
    let read = try MergeRecipe.parse(text, file: "merge-config.yml")
    #expect(read.base == "base")
    #expect(read.models == plan.models + [ModelSpec(path: "base", parameters: ["weight": .number(0)])])
    // A base already among the models is written as it is.
    let listed = MergePlan(method: .linear, base: "a", models: plan.models)
    var listedRead = listed
    listedRead.computeType = nil
    #expect(try MergeRecipe.parse(MergeRecipe.yaml(for: listed), file: "merge-config.yml") == listedRead)
}

@Test func chatTemplateIsANameOrATemplate() throws {
    let head = "merge_method: ties\nbase_model: x\nmodels:\n  - model: a\n"
    let named = try MergeRecipe.parse(head + "chat_template: chatml\n", file: "r.yml")
    #expect(named.chatTemplate == ChatTemplate.template(for: "chatml"))
    #expect(named.chatTemplate?.contains("<|im_start|>") == true)
    let literal = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    let given = try MergeRecipe.parse(head + "chat_template: \"\(literal)\"\n", file: "r.yml")
    #expect(given.chatTemplate == literal)
    #expect(try MergeRecipe.parse(MergeRecipe.yaml(for: given), file: "merge-config.yml") == given)
    #expect(throws: MergeError.recipe(file: "r.yml", problem: "'chat_template' must be alpaca, auto, chatml, exaone, llama3, mistral or a Jinja template (line 5)")) {
        try MergeRecipe.parse(head + "chat_template: vicuna\n", file: "r.yml")
    }
}

@Test func modulesDefaultIsTheRecipesModelsWithItsParametersOverTheGlobalOnes() throws {
    let plan = try MergeRecipe.parse("""
        merge_method: slerp
        base_model: b
        modules:
          default:
            models:
              - model: b
              - model: a
                parameters: {weight: 2}
            parameters:
              t:
                - filter: mlp
                  value: 0.2
              density: 0.4
        parameters:
          t: 0.9
          density: 0.8
        """, file: "r.yml")
    #expect(plan.models.map(\.path) == ["b", "a"])
    #expect(plan.models[1].parameters["weight"] == .number(2))
    // The module's filter list falls through to the global value where nothing matches.
    #expect(plan.parameters["t"]?.value(forTensor: "model.layers.0.mlp.up_proj.weight", at: 0) == 0.2)
    #expect(plan.parameters["t"]?.value(forTensor: "model.layers.0.self_attn.q_proj.weight", at: 0) == 0.9)
    // A plain module value replaces the global one.
    #expect(plan.parameters["density"] == .number(0.4))
    let slices = try MergeRecipe.parse("""
        merge_method: passthrough
        modules:
          default:
            slices:
              - sources: [{model: a, layer_range: [0, 2]}]
        """, file: "r.yml")
    #expect(slices.slices?.first?.sources.first?.layerRange == 0..<2)
}

@Test func badModulesAreOneLineErrors() {
    func problem(_ recipe: String) -> String? {
        do {
            _ = try MergeRecipe.parse("merge_method: linear\n" + recipe, file: "r.yml")
            return nil
        } catch {
            return error.description
        }
    }
    #expect(problem("modules:\n  vision:\n    models: [{model: a}]\n")?.contains("unknown module 'vision'") == true)
    #expect(problem("models: [{model: a}]\nmodules:\n  default:\n    models: [{model: a}]\n")?
        .contains("give one of 'models', 'slices' or 'modules'") == true)
    #expect(problem("modules:\n  default:\n    parameters: {weight: 1}\n")?.contains("needs either 'models' or 'slices'") == true)
    #expect(problem("modules:\n  default:\n    models: [{model: a}]\n    layers: 3\n")?.contains("unknown key 'layers' in module") == true)
    #expect(problem("modules: [a]\n")?.contains("'modules' must be a mapping") == true)
}
