import ArgumentParser
import Checkpoints
import Foundation
import Merging
import Testing
@testable import MergeTool

/// Options with a fixed set of values: `--help` lists them, a wrong value is a usage
/// error on one line, and the spellings accepted before stay accepted.
@Suite struct OptionValueTests {
    @Test(arguments: [
        (["fuse"], "--method", "task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, della, della_linear, linear, slerp, model_stock, sce, nearswap, arcee_fusion, ram, ramplus_tl, nuslerp, multislerp, karcher, passthrough"),
        (["fuse"], "--rescale", "none, l1, inverse"),
        (["fuse"], "--consensus", "sum, count"),
        (["fuse"], "--trim", "tensor, global"),
        (["fuse"], "--dtype", "bf16, f16, f32"),
        (["fuse"], "--format", "safetensors, gguf"),
        (["fuse"], "--type", "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k"),
        (["convert"], "--type", "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k"),
        (["convert"], "--dtype", "bf16, f16, f32"),
        (["lora", "extract"], "--svd", "auto, exact, randomized"),
        (["lora", "extract"], "--embeddings", "save, skip"),
        (["lora", "extract"], "--norms", "save, skip"),
        (["lora", "extract"], "--dtype", "bf16, f16, f32"),
    ])
    func helpListsTheValues(command: [String], option: String, values: String) throws {
        let result = try runTool(command + ["--help"])
        #expect(result.status == 0)
        // Help wraps long lines: compare with runs of white space made single spaces.
        let help = result.out.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        // The option's entry in the OPTIONS section, and the first value list after it.
        let options = try #require(help.range(of: "OPTIONS:")).upperBound
        let entry = try #require(help.range(of: option + " <", range: options..<help.endIndex)).upperBound
        let list = try #require(help.range(of: "(values: ", range: entry..<help.endIndex)).upperBound
        #expect(help[list...].hasPrefix(values + ")") || help[list...].hasPrefix(values + ";"), "\(help[entry...].prefix(300))")
    }

    @Test(arguments: [
        (["fuse", "a", "--base", "b", "-o", "c", "--rescale"], "l2"),
        (["fuse", "a", "--base", "b", "-o", "c", "--consensus"], "vote"),
        (["fuse", "a", "--base", "b", "-o", "c", "--trim"], "model"),
        (["fuse", "a", "--base", "b", "-o", "c", "--dtype"], "f64"),
        (["fuse", "a", "--base", "b", "-o", "c", "--format"], "GGUF"),
        (["fuse", "a", "--base", "b", "-o", "c", "--type"], "q3_k"),
        (["fuse", "a", "--base", "b", "-o", "c", "--method"], "TIES"),
        (["convert", "a", "b", "--dtype"], "i8"),
        (["convert", "a", "b.gguf", "--type"], "f64"),
        (["lora", "extract", "a", "--base", "b", "-o", "c", "--rank", "4", "--svd"], "lanczos"),
        (["lora", "extract", "a", "--base", "b", "-o", "c", "--rank", "4", "--embeddings"], "lora"),
    ])
    func wrongValueIsAUsageErrorOnOneLine(arguments: [String], value: String) throws {
        let result = try runTool(arguments + [value])
        #expect(result.status == 64)
        let lines = result.err.split(separator: "\n")
        #expect(lines.first?.hasPrefix("Error: The value '\(value)' is invalid for '\(arguments.last!) <") == true, "\(result.err)")
        // The next line is the option's help or the usage, not a continuation of the message.
        #expect(lines.count > 1 && (lines[1].hasPrefix("Help:") || lines[1].hasPrefix("Usage:")), "\(result.err)")
    }

    @Test func typesAreReadInAnyCaseAndDTypesUnderTheirRecipeNames() throws {
        #expect(try MergeTool.Convert.parse(["a", "b.gguf", "--type", "Q8_0"]).type.dtype == .q8_0)
        #expect(try MergeTool.Convert.parse(["a", "b.gguf", "--type", "q4_K"]).type.dtype == .q4_K)
        #expect(try MergeTool.Convert.parse(["a", "b", "--dtype", "BF16"]).dtype?.dtype == .bf16)
        #expect(try MergeTool.Fuse.parse(["a", "--base", "b", "-o", "c", "--dtype", "float16"]).dtype?.dtype == .f16)
        #expect(try MergeTool.Fuse.parse(["a", "--base", "b", "-o", "c", "--dtype", "half"]).dtype?.dtype == .f16)
        #expect(try MergeTool.Fuse.parse(["a", "--base", "b", "-o", "c", "--dtype", "FP32"]).dtype?.dtype == .f32)
        let fuse = try MergeTool.Fuse.parse(["a", "--base", "b", "-o", "c"])
        #expect(fuse.format == .safetensors && fuse.type == .f16)
        // Method, trim and seed are left unset so that a recipe can refuse them; the plan takes the defaults.
        #expect(fuse.method == nil && fuse.trim == nil && fuse.seed == nil)
        let (plan, _) = try fuse.makePlan()
        #expect(plan.method == .ties && plan.trim == .tensor && plan.seed == 0)
        #expect(fuse.rescale == nil && fuse.consensus == nil && fuse.dtype == nil)
    }

    @Test func everyOutputTypeIsAnEncodableTypeOfTheSameName() {
        for type in GGUFOutputType.allCases {
            #expect(type.dtype.isEncodable, "\(type)")
            #expect(type.dtype.rawValue.lowercased() == type.rawValue)
        }
        for type in FloatOutputType.allCases {
            #expect(type.dtype.isFloatingPoint && type.dtype.isEncodable && type.dtype.blockElements == 1, "\(type)")
            #expect(FloatOutputType(argument: type.dtype.rawValue) == type)
        }
    }
}
