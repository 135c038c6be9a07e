import Testing
@testable import Merging

/// Plan checks of sce, nearswap, arcee_fusion, ram and ramplus_tl.
@Suite struct PlanCheckSCENearSwapFusionRAMTests {
    @Test func twoModelMethodsNeedExactlyOneModelBesidesTheBase() {
        let two = [ModelSpec(path: "x"), ModelSpec(path: "y")]
        #expect(throws: MergeError.badPlan("nearswap needs exactly two models, one of them the base")) {
            try MergePlan(method: .nearswap, base: "b", models: two, parameters: ["t": .number(0.01)]).check()
        }
        #expect(throws: MergeError.badPlan("arcee_fusion needs exactly two models, one of them the base")) {
            try MergePlan(method: .arceeFusion, base: "b", models: two).check()
        }
        // The base listed among the models, as mergekit recipes do, is not one of them.
        #expect(throws: Never.self) {
            try MergePlan(method: .arceeFusion, base: "b", models: [ModelSpec(path: "b"), ModelSpec(path: "x")]).check()
        }
    }

    @Test func nearswapNeedsT() {
        #expect(throws: MergeError.badPlan("nearswap needs the closeness threshold t")) {
            try MergePlan(method: .nearswap, base: "b", models: [ModelSpec(path: "x")]).check()
        }
    }

    @Test func everyNewMethodNeedsABase() {
        for method in [MergeMethod.sce, .nearswap, .arceeFusion, .ram, .ramPlusTL] {
            #expect(throws: MergeError.badPlan("\(method) needs a base model (--base or base_model)")) {
                try MergePlan(method: method, base: nil, models: [ModelSpec(path: "x")], parameters: ["t": .number(0.1)]).check()
            }
        }
    }

    @Test func parameterRangesAndNames() {
        let models = [ModelSpec(path: "x"), ModelSpec(path: "y")]
        #expect(throws: MergeError.badParameter(name: "select_topk", problem: "1.5 lies outside [0, 1]")) {
            try MergePlan(method: .sce, base: "b", models: models, parameters: ["select_topk": .number(1.5)]).check()
        }
        #expect(throws: MergeError.badParameter(name: "r", problem: "-2000000 lies outside [-1000000, 1000000]")) {
            try MergePlan(method: .ramPlusTL, base: "b", models: models, parameters: ["r": .number(-2e6)]).check()
        }
        #expect(throws: MergeError.badParameter(name: "selct_topk", problem: "sce has no such parameter")) {
            try MergePlan(method: .sce, base: "b", models: models, parameters: ["selct_topk": .number(0.5)]).check()
        }
        // A parameter another method reads is ignored (sce takes no weights).
        let weighted = MergePlan(method: .sce, base: "b", models: [ModelSpec(path: "x", parameters: ["weight": .number(2)])])
        #expect(throws: Never.self) { try weighted.check() }
        #expect(weighted.unusedParameters == ["weight"])
    }
}
