import Testing
@testable import Merging

/// The plan checks of nuslerp, multislerp and karcher, and what a base does for each.
@Suite struct SphericalMethodPlanCheckTests {
    private func weighted(_ paths: [String]) -> [ModelSpec] {
        paths.map { ModelSpec(path: $0, parameters: ["weight": .number(1)]) }
    }

    @Test func nuslerpNeedsExactlyTwoModelsBesidesAGivenBase() throws {
        let three = MergePlan(method: .nuslerp, base: "b", models: weighted(["x", "y", "z"]))
        #expect(throws: MergeError.badPlan("nuslerp needs exactly two models besides the base, not 3")) { try three.check() }
        let one = MergePlan(method: .nuslerp, base: nil, models: weighted(["x"]))
        #expect(throws: MergeError.badPlan("nuslerp needs exactly two models, not 1")) { try one.check() }
        // The base listed among the models, as mergekit recipes do, is not one of the two.
        try MergePlan(method: .nuslerp, base: "b", models: weighted(["b", "x", "y"])).check()
        try MergePlan(method: .nuslerp, base: nil, models: weighted(["x", "y"])).check()
    }

    @Test func nuslerpAndMultislerpNeedAWeightPerModel() throws {
        for method in [MergeMethod.nuslerp, .multislerp] {
            let plan = MergePlan(method: method, base: nil, models: [ModelSpec(path: "x", parameters: ["weight": .number(1)]),
                                                                     ModelSpec(path: "y")])
            #expect(throws: MergeError.badPlan("\(method) needs a weight for each model (y has none)")) { try plan.check() }
            try MergePlan(method: method, base: nil, models: [ModelSpec(path: "x"), ModelSpec(path: "y")],
                          parameters: ["weight": .number(0.5)]).check()
        }
    }

    @Test func anOptionalBaseIsTheReferenceOfNuslerpAndMultislerp() {
        for method in [MergeMethod.nuslerp, .multislerp] {
            let given = MergePlan(method: method, base: "b", models: weighted(["b", "x", "y"]))
            #expect(given.usesBaseAsReference)
            #expect(given.contributingModels.map(\.path) == ["x", "y"])
            let none = MergePlan(method: method, base: nil, models: weighted(["x", "y"]))
            #expect(!none.usesBaseAsReference)
            #expect(none.contributingModels.map(\.path) == ["x", "y"])
        }
    }

    @Test func aBaseIsOneMoreInputOfKarcherAndIgnoredByLinear() {
        let karcher = MergePlan(method: .karcher, base: "b", models: [ModelSpec(path: "x"), ModelSpec(path: "y")])
        #expect(!karcher.usesBaseAsReference)
        #expect(karcher.contributingModels.map(\.path) == ["x", "y", "b"])
        let listed = MergePlan(method: .karcher, base: "b", models: [ModelSpec(path: "b"), ModelSpec(path: "x")])
        #expect(listed.contributingModels.map(\.path) == ["b", "x"])
        let linear = MergePlan(method: .linear, base: "b", models: [ModelSpec(path: "x"), ModelSpec(path: "y")])
        #expect(linear.contributingModels.map(\.path) == ["x", "y"])
    }

    @Test func karcherIterationsAreAWholeNumberWithinRange() throws {
        let models = [ModelSpec(path: "x"), ModelSpec(path: "y")]
        #expect(throws: MergeError.badParameter(name: "max_iter", problem: "2.5 is not a whole number")) {
            try MergePlan(method: .karcher, base: nil, models: models, parameters: ["max_iter": .number(2.5)]).check()
        }
        #expect(throws: MergeError.badParameter(name: "max_iter", problem: "1.5 is not a whole number")) {
            try MergePlan(method: .karcher, base: nil, models: models, parameters: ["max_iter": .gradient([1, 1.5])]).check()
        }
        #expect(throws: MergeError.badParameter(name: "max_iter", problem: "10001 lies outside [0, 10000]")) {
            try MergePlan(method: .karcher, base: nil, models: models, parameters: ["max_iter": .number(10_001)]).check()
        }
        #expect(throws: MergeError.badParameter(name: "tol", problem: "-1 lies outside [0, 1]")) {
            try MergePlan(method: .karcher, base: nil, models: models, parameters: ["tol": .number(-1)]).check()
        }
        try MergePlan(method: .karcher, base: nil, models: models, parameters: ["max_iter": .number(0), "tol": .number(0)]).check()
    }

    @Test func multislerpEpsIsWithinRange() {
        #expect(throws: MergeError.badParameter(name: "eps", problem: "2 lies outside [0, 1]")) {
            try MergePlan(method: .multislerp, base: nil, models: weighted(["x", "y"]), parameters: ["eps": .number(2)]).check()
        }
    }
}
