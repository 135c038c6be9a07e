import Checkpoints
import Merging

/// Namespace of the statistics entry point.
public enum DeltaStatistics {}

/// One compared tensor: the base entry, where each fine-tuned input's δ comes from,
/// and its scopes.
struct PlannedTensor {
    let base: TensorEntry
    let tuned: [DeltaSource]
    /// Scope indexes: the model (0), its kind, and its layer if any.
    let scopes: [Int]

    /// The scope of its layer, 0 for a tensor outside the layers.
    var layerScope: Int { scopes.count > 2 ? scopes[2] : 0 }
}

/// Which tensors are compared and how they group.
struct StatisticsPlan {
    var tensors: [PlannedTensor] = []
    var skipped: [SkippedTensor] = []
    /// Scope names and layers, indexed as `PlannedTensor.scopes`.
    var scopes: [(name: String, layer: Int?)] = [("model", nil)] + TensorKind.allCases.map { ($0.rawValue, nil) }
    /// The fine-tuned inputs' paths, as the report names them.
    var paths: [String]

    /// Every tensor of the base is compared with the tensor each input holds under its
    /// name — for a checkpoint in the other format of the Llama family, under the name
    /// and in the row order `FormatBridge` gives — and with what an adapter makes of it:
    /// every base tensor, δ = 0 where the adapter leaves it alone (a merged model holds
    /// the base's values there).
    init(base: Checkpoint, tuned: [StatisticsInput]) throws(DeltaStatisticsError) {
        paths = tuned.map(\.path)
        let bridges = tuned.map { input -> FormatBridge? in
            guard case .checkpoint(let checkpoint) = input else { return nil }
            return FormatBridge(base: base, model: checkpoint)
        }
        for (input, bridge) in zip(tuned, bridges) {
            guard case .checkpoint(let checkpoint) = input else { continue }
            var matched = Set<String>()
            for entry in base.tensors {
                guard let name = FormatBridge.modelName(for: entry.name, through: bridge),
                      let other = checkpoint.tensor(named: name) else { continue }
                matched.insert(name)
                if other.shape != entry.shape {
                    throw .shapeMismatch(file: checkpoint.path, tensor: entry.name, shape: other.shape, baseShape: entry.shape)
                }
            }
            if matched.isEmpty { throw .noSharedTensors(file: checkpoint.path, base: base.path) }
            for entry in checkpoint.tensors where !matched.contains(entry.name) {
                skipped.append(SkippedTensor(name: entry.name, reason: "not in the base (\(checkpoint.path))"))
            }
        }
        let layerNumbers = Set(base.tensors.compactMap { layerIndex(ofTensor: $0.name) }).sorted()
        var layerScope: [Int: Int] = [:]
        for layer in layerNumbers {
            layerScope[layer] = scopes.count
            scopes.append(("layer \(layer)", layer))
        }
        for entry in base.tensors {
            var sources: [DeltaSource] = []
            var rowProblem: String?
            for (input, bridge) in zip(tuned, bridges) {
                guard case .checkpoint(let checkpoint) = input else {
                    if case .adapter(let adapter) = input {
                        sources.append(.adapter(adapter, module: adapter.module(adapting: entry.name), saved: adapter.saved[entry.name]))
                    }
                    continue
                }
                guard let name = FormatBridge.modelName(for: entry.name, through: bridge),
                      let other = checkpoint.tensor(named: name) else { break }
                var order: RowOrder?
                if let bridge {
                    switch bridge.rowOrder(for: entry.name, shape: entry.shape) {
                    case .success(let found): order = found
                    case .failure(let problem): rowProblem = rowProblem ?? "\(checkpoint.path): \(problem.description)"
                    }
                }
                sources.append(.tensor(other, rowOrder: order))
            }
            if sources.count < tuned.count {
                skipped.append(SkippedTensor(name: entry.name, reason: "missing from a fine-tuned checkpoint"))
                continue
            }
            let dtypes = [entry.dtype] + sources.map { $0.stored?.dtype ?? entry.dtype }
            guard dtypes.allSatisfy({ $0.isFloatingPoint }) else {
                skipped.append(SkippedTensor(name: entry.name, reason: "not floating point (\(dtypes.map(\.rawValue).joined(separator: ", ")))"))
                continue
            }
            if let rowProblem {
                skipped.append(SkippedTensor(name: entry.name, reason: "rows not read across formats (\(rowProblem))"))
                continue
            }
            var memberOf = [0, 1 + TensorKind.allCases.firstIndex(of: TensorKind(tensorName: entry.name))!]
            if let layer = layerIndex(ofTensor: entry.name), let scope = layerScope[layer] { memberOf.append(scope) }
            tensors.append(PlannedTensor(base: entry, tuned: sources, scopes: memberOf))
        }
    }
}

/// What part of a transformer a tensor belongs to, judged from its name.
///
/// Hugging Face (`model.layers.3.self_attn.q_proj.weight`) and GGUF
/// (`blk.3.attn_q.weight`) spellings are both recognised. The output projection
/// (`lm_head`, GGUF `output`) counts as an embedding: it is the other
/// vocabulary-sized matrix and behaves like one under fine-tuning.
public enum TensorKind: String, CaseIterable, Sendable {
    case embeddings
    case attention
    case mlp
    case norms
    case other

    /// Classifies a tensor name. Norms are tested first because their names
    /// often contain an attention or MLP word (`attn_norm`, `post_attention_layernorm`).
    public init(tensorName name: String) {
        let lower = name.lowercased()
        func has(_ words: String...) -> Bool { words.contains { lower.contains($0) } }
        if has("norm", "ln_", ".ln", "layernorm") {
            self = .norms
        } else if has("embed", "wte", "wpe", "token_embd", "lm_head") || lower.hasPrefix("output.") {
            self = .embeddings
        } else if has("attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "qkv") {
            self = .attention
        } else if has("mlp", "ffn", "feed_forward", "gate_proj", "up_proj", "down_proj", "experts") {
            self = .mlp
        } else {
            self = .other
        }
    }
}

/// The transformer block a tensor belongs to: N in `layers.N.` or `blk.N.`
/// (also `h.N.` and `layer.N.`), or nil for tensors outside the blocks.
public func layerIndex(ofTensor name: String) -> Int? {
    let parts = name.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count >= 3 else { return nil }
    for i in 0..<(parts.count - 2) where ["layers", "blk", "h", "layer"].contains(parts[i]) {
        if let n = Int(parts[i + 1]), n >= 0, parts[i + 1].allSatisfy(\.isASCII) { return n }
    }
    return nil
}

/// How a report's table is grouped.
public enum StatisticsGrouping: String, CaseIterable, Sendable {
    case tensor
    case layer
    case kind
}
