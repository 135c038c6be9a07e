import Checkpoints
import Foundation

/// The section `stats` adds for LoRA adapters: per module, the spectrum of δ = scale·B·A
/// from the r × r problems of `LoRASpectrum` (no fine-tuned model is formed).
enum LoraStats {
    /// The spectra of `adapters` (each with its display name): a text section and the
    /// JSON `adapters` list.
    static func spectra(of adapters: [(label: String, adapter: LoRAAdapter)]) throws -> (text: String, json: JSONValue) {
        var text = ""
        var entries: [JSONValue] = []
        for (label, adapter) in adapters {
            var modules: [JSONValue] = []
            let nameWidth = max(6, adapter.modules.map(\.module.count).max() ?? 0)
            text += "\(label): \(adapter.modules.count) adapted modules, \(adapter.saved.count) saved whole\n"
            text += "module".padding(toLength: nameWidth, withPad: " ", startingAt: 0)
                + "     r      ‖δ‖_F  eff. rank  r(90 %)  r(99 %)  energy of σ₁…σᵣ (cumulative)\n"
            for module in adapter.modules {
                let s = try LoRASpectrum.summary(of: module, in: adapter)
                let energy = s.energy
                text += module.module.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
                    + String(format: "  %4d  %9.3e  %9.2f  %7d  %7d  ", s.rank, s.frobenius, s.effectiveRank,
                             s.rank(holding: 0.9), s.rank(holding: 0.99))
                    + energy.prefix(8).map { String(format: "%.3f", $0) }.joined(separator: " ")
                    + (energy.count > 8 ? " …" : "") + "\n"
                modules.append(.object([
                    ("module", .string(module.module)), ("tensor", .string(module.baseName)),
                    ("rank", JSONValue.integer(s.rank)), ("scale", number(Double(module.scale))),
                    ("frobenius", number(s.frobenius)), ("effective_rank", number(s.effectiveRank)),
                    ("rank_90", JSONValue.integer(s.rank(holding: 0.9))), ("rank_99", JSONValue.integer(s.rank(holding: 0.99))),
                    ("singular_values", .array(s.singularValues.map(number))), ("energy", .array(energy.map(number))),
                ]))
            }
            text += "\n"
            entries.append(.object([("name", .string(label)), ("path", .string(adapter.path)),
                                    ("saved", .array(adapter.saved.keys.sorted().map { .string($0) })),
                                    ("modules", .array(modules))]))
        }
        text += """
            Effective rank: exp of the entropy of σ/Σσ; r(90 %), r(99 %): the fewest singular values holding \
            that share of ‖δ‖²_F.
            """
        return (text, .array(entries))
    }

    private static func number(_ x: Double) -> JSONValue { x.isFinite ? .number("\(x)") : .null }
}
