import Checkpoints
import Foundation

/// The output tokenizer of a recipe and, for every model, where each of its tokens sits
/// in the model's own vocabulary, as mergekit 0.1.5 builds them:
///
/// - `base`: the base's tokenizer; a model: that model's; `union`: the base's with
///   the tokens of the other models appended (their vocabulary tokens first, then
///   their added tokens with the settings they have), in recipe order; then the
///   `tokens:` entries no model has, appended by name.
/// - A model's rows are its own for the tokens it has. A token a model lacks (or one
///   whose entry is `force`d) gets the recipe's source for it, else the base's row
///   when the base has the token, else the row of the only model holding it, else
///   the mean of the rows of the models holding it; a token no model holds gets zeros.
/// - With `pad_to_multiple_of`, the extra rows of each model are its mean row.
///
/// Values computed (means) are rounded to the inputs' type after each operation, as
/// mergekit computes them in that type.
struct VocabularyAlignment {
    let output: OutputTokenizer
    let recipe: TokenizerRecipe
    /// mergekit's model order: the recipe's models, then the base when not among them.
    let models: [String]
    /// Per model, per output id: the model's id for that token, or −1.
    let positions: [[Int32]]
    /// Per model, its own token → id table.
    let vocabularies: [[String: Int]]
    /// Index of the base in `models`.
    let base: Int?

    /// Reads the tokenizers of `plan`'s models and builds the output tokenizer; nil when
    /// the plan names none (the base's tokenizer files are then copied).
    static func build(_ plan: MergePlan, basePath: String, followSymlinks: Bool) throws(MergeError) -> VocabularyAlignment? {
        guard let recipe = plan.tokenizer else { return nil }
        var models: [String] = []
        for model in plan.models where !models.contains(model.path) { models.append(model.path) }
        if let base = plan.base, !models.contains(base) { models.append(base) }
        let baseIndex = models.firstIndex(of: basePath)

        func folder(_ path: String) -> String {
            // An adapter reference (`base+adapter`) reads its base's tokenizer.
            AdapterInputs.split(path)?.base ?? path
        }
        func missing(_ path: String, _ why: String) -> MergeError {
            .checkpoint(.io(file: path + "/tokenizer.json", problem: "missing; \(why)"))
        }
        guard let baseFile = try TokenizerFile.read(folder: folder(basePath), followSymlinks: followSymlinks) else {
            throw missing(folder(basePath), "a recipe's tokenizer needs the base's tokenizer.json")
        }
        var files: [TokenizerFile] = []
        for path in models {
            if path == basePath { files.append(baseFile); continue }
            if let file = try TokenizerFile.read(folder: folder(path), followSymlinks: followSymlinks) {
                files.append(file)
            } else if recipe.source == .union {
                throw missing(folder(path), "tokenizer_source union needs every model's tokenizer")
            } else {
                // As mergekit: a model without a tokenizer is taken to share the base's.
                files.append(baseFile)
            }
        }
        // Tokens at ids past a model's vocab_size have no row; mergekit leaves them out.
        func limit(_ path: String) -> Int {
            TokenizerFile.configVocabularySize(folder: folder(path), followSymlinks: followSymlinks) ?? Int.max
        }
        let baseLimit = limit(basePath)
        if let past = baseFile.ids.first(where: { $0.value >= baseLimit }) {
            throw .checkpoint(.io(file: baseFile.path, problem: "token '\(past.key)' has id \(past.value), past the model's vocab_size \(baseLimit); such tokenizers cannot be merged"))
        }

        // The output tokenizer.
        let sourceFile: TokenizerFile, sourceFolder: String
        switch recipe.source {
        case .base, .union:
            sourceFile = baseFile
            sourceFolder = folder(basePath)
        case .model(let path):
            if let i = models.firstIndex(of: path) {
                sourceFile = files[i]
            } else {
                guard let file = try TokenizerFile.read(folder: folder(path), followSymlinks: followSymlinks) else {
                    throw missing(folder(path), "it is the recipe's tokenizer_source")
                }
                sourceFile = file
            }
            sourceFolder = folder(path)
        }
        var ids = sourceFile.ids
        var appended: [(content: String, id: Int, entry: JSONValue)] = []
        // The Rust tokenizer's next id: past its vocabulary and past every added token.
        var next = max(sourceFile.modelVocabularySize, (sourceFile.added.map(\.id).max() ?? -1) + 1)
        func append(_ content: String, like entry: JSONValue?) throws(MergeError) {
            guard ids[content] == nil else { return }
            guard next <= TokenizerFile.maximumID else { throw .badPlan("the output tokenizer would have more than \(TokenizerFile.maximumID) tokens") }
            ids[content] = next
            appended.append((content: content, id: next, entry: OutputTokenizer.addedEntry(content, id: next, like: entry)))
            next += 1
        }
        if recipe.source == .union {
            let addedSets = files.map { Set($0.added.map(\.content)) }
            for (m, file) in files.enumerated() {
                let bound = limit(models[m])
                for (token, _) in file.ids.filter({ $0.value < bound && !addedSets[m].contains($0.key) }).sorted(by: { $0.value < $1.value }) {
                    try append(token, like: nil)
                }
            }
            for (m, file) in files.enumerated() {
                let bound = limit(models[m])
                for added in file.added where added.id < bound { try append(added.content, like: added.entry) }
            }
        }
        for (token, _) in recipe.tokens { try append(token, like: nil) }

        let count = ids.count
        var rows = count
        if let multiple = recipe.padToMultipleOf, rows % multiple != 0 { rows += multiple - rows % multiple }
        var tokens = [String?](repeating: nil, count: rows)
        for (token, id) in ids {
            guard id < rows else {
                throw .checkpoint(.io(file: sourceFile.path, problem: "token '\(token)' has id \(id) but the tokenizer has \(count) tokens (ids with gaps cannot be mapped)"))
            }
            tokens[id] = token
        }
        let output = OutputTokenizer(folder: sourceFolder, appended: appended, ids: ids, rowCount: rows, tokens: tokens)

        var positions: [[Int32]] = []
        for (m, file) in files.enumerated() {
            let bound = limit(models[m])
            var p = [Int32](repeating: -1, count: rows)
            for (id, token) in tokens.enumerated() {
                if let token, let own = file.ids[token], own < bound { p[id] = Int32(own) }
            }
            positions.append(p)
        }
        let alignment = VocabularyAlignment(output: output, recipe: recipe, models: models, positions: positions,
                                            vocabularies: files.map(\.ids), base: baseIndex)
        try alignment.checkTokenSettings()
        return alignment
    }

    /// The recipe's `tokens:` entries refer to models of the recipe and to tokens they
    /// have; a token some model lacks needs a source unless the default gives one.
    private func checkTokenSettings() throws(MergeError) {
        for (token, setting) in recipe.tokens {
            guard let id = output.ids[token] else { continue }
            let holders = positions.indices.filter { positions[$0][id] >= 0 }
            func model(_ path: String) throws(MergeError) -> Int {
                guard let m = models.firstIndex(of: path) else {
                    throw .badPlan("tokenizer token '\(token)' takes its row from \(path), which is not a model of the recipe")
                }
                return m
            }
            switch setting.source {
            case nil:
                if holders.isEmpty {
                    throw .badPlan("tokenizer token '\(token)' is in no model's tokenizer; give it a source (a model's token or {kind: zero})")
                }
                if setting.force || holders.count < models.count {
                    throw .badPlan("tokenizer token '\(token)' is not in every model; give it a source")
                }
            case .zero?:
                break
            case .model(let path)?:
                guard positions[try model(path)][id] >= 0 else { throw .badPlan("tokenizer token '\(token)' is not in the tokenizer of \(path)") }
            case .modelToken(let path, let name, _)?:
                let m = try model(path)
                if let name, vocabularies[m][name] == nil {
                    throw .badPlan("tokenizer token '\(token)': token '\(name)' is not in the tokenizer of \(path)")
                }
            }
        }
    }

    /// True when every model's ids are the output's and the output has `rows` rows: no
    /// mapping is needed for a tensor of that many rows.
    func isIdentity(rows: Int) -> Bool {
        guard output.rowCount == rows else { return false }
        return positions.allSatisfy { p in p.enumerated().allSatisfy { $0.element == Int32($0.offset) } }
    }

    /// The rows of one embedding (or output-projection) tensor for each model, in the
    /// output's order. `tensors[m]` is model `m`'s tensor (nil: the model does not take
    /// part in this tensor); all share their trailing dimensions.
    func rows(of tensors: [(checkpoint: Checkpoint, tensor: TensorEntry)?], name: String) throws(MergeError) -> [VocabularyRows?] {
        let present = tensors.indices.filter { tensors[$0] != nil }
        guard let first = present.first.flatMap({ tensors[$0] }) else { return tensors.map { _ in nil } }
        let shape = first.tensor.shape
        let width = shape.dropFirst().reduce(1, *)
        guard width > 0 else { throw .badPlan("tensor '\(name)' has an empty row") }
        let vocabulary = output.rowCount
        // mergekit computes filled rows in the inputs' common type.
        let dtype = present.map { tensors[$0]!.tensor.dtype }.allSatisfy { $0 == first.tensor.dtype } ? first.tensor.dtype : DType.f32
        // Each model's positions for this tensor: ids past its rows are missing.
        var p: [[Int32]] = []
        for m in tensors.indices {
            guard let t = tensors[m] else { p.append([]); continue }
            let stored = t.tensor.shape.first ?? 0
            p.append(positions[m].map { $0 >= 0 && Int($0) < stored ? $0 : -1 })
        }
        func row(_ m: Int, _ r: Int32) throws(MergeError) -> [Float] {
            try VocabularyAlignment.readRow(tensors[m]!.checkpoint, tensors[m]!.tensor, Int(r), width: width)
        }

        // The default row of each token some model lacks or whose setting forces it.
        var filled: [[Float]] = [[Float](repeating: 0, count: width)]  // 0: zeros
        var fillIndex: [Int: Int] = [:]
        for id in 0..<vocabulary {
            guard let token = output.tokens[id] else { continue }
            let setting = recipe.setting(for: token)
            let holders = present.filter { p[$0][id] >= 0 }
            guard setting?.force == true || holders.count < present.count else { continue }
            var values: [Float]
            if let setting {
                switch setting.source {
                case nil:
                    // Checked when the plan was built for the recipe's models; a model
                    // missing the row in this tensor only.
                    throw .badPlan("tokenizer token '\(token)' has no row in every model's '\(name)'; give it a source")
                case .zero?:
                    values = filled[0]
                case .model(let path)?:
                    guard let m = models.firstIndex(of: path), tensors[m] != nil, p[m][id] >= 0 else {
                        throw .badPlan("tokenizer token '\(token)': \(path) has no row for it in '\(name)'")
                    }
                    values = try row(m, p[m][id])
                case .modelToken(let path, let sourceToken, let sourceID)?:
                    guard let m = models.firstIndex(of: path), let t = tensors[m] else {
                        throw .badPlan("tokenizer token '\(token)': \(path) has no '\(name)'")
                    }
                    let r = sourceID ?? sourceToken.flatMap { vocabularies[m][$0] } ?? -1
                    guard r >= 0, r < (t.tensor.shape.first ?? 0) else {
                        throw .badPlan("tokenizer token '\(token)': row \(r) is out of range for \(path)'s '\(name)'")
                    }
                    values = try row(m, Int32(r))
                }
            } else if holders.isEmpty {
                values = filled[0]
            } else if holders.count == 1 {
                values = try row(holders[0], p[holders[0]][id])
            } else if let b = base, tensors[b] != nil, p[b][id] >= 0 {
                values = try row(b, p[b][id])
            } else {
                // The mean, rounded as the type's arithmetic rounds each step.
                values = filled[0]
                for m in holders {
                    let r = try row(m, p[m][id])
                    for i in 0..<width { values[i] = values[i] + r[i] }
                    VocabularyAlignment.round(&values, to: dtype)
                }
                for i in 0..<width { values[i] = values[i] / Float(holders.count) }
                VocabularyAlignment.round(&values, to: dtype)
            }
            fillIndex[id] = filled.count
            filled.append(values)
        }

        var result: [VocabularyRows?] = []
        for m in tensors.indices {
            guard tensors[m] != nil else { result.append(nil); continue }
            var source = [Int32](repeating: -1, count: vocabulary)
            var own = filled
            for id in 0..<vocabulary {
                guard let token = output.tokens[id] else { continue }
                if p[m][id] >= 0 && recipe.setting(for: token)?.force != true {
                    source[id] = p[m][id]
                } else {
                    source[id] = Int32(-1 - (fillIndex[id] ?? 0))
                }
            }
            let count = output.ids.count
            if vocabulary > count {
                // Padding rows: the model's mean row over the tokens' rows, summed in
                // Float32 in torch's order and divided in Float32 (then rounded to a
                // 16-bit type), as torch.mean computes it.
                var sum = CascadeSum(width: width, count: count)
                for id in 0..<count {
                    sum.add(source[id] >= 0 ? try row(m, source[id]) : own[Int(-1 - source[id])])
                }
                var mean = sum.total.map { $0 / Float(count) }
                VocabularyAlignment.round(&mean, to: dtype)
                own.append(mean)
                for id in count..<vocabulary { source[id] = Int32(-own.count) }
            }
            result.append(VocabularyRows(rowLength: width, source: source, filled: own))
        }
        return result
    }

    /// Row `r` of a 2-D (or higher) tensor, decoded.
    static func readRow(_ checkpoint: Checkpoint, _ tensor: TensorEntry, _ r: Int, width: Int) throws(MergeError) -> [Float] {
        var values = [Float](repeating: 0, count: width)
        let data = checkpoint.data(of: tensor)
        let bytes = tensor.dtype.byteRange(of: (r * width)..<((r + 1) * width))
        guard r >= 0, bytes.upperBound <= data.count else {
            throw .checkpoint(.io(file: checkpoint.path, problem: "tensor '\(tensor.name)' has no row \(r)"))
        }
        do {
            try values.withUnsafeMutableBufferPointer { (buffer) throws(CodecError) in
                try ElementCodec.decode(tensor.dtype, from: UnsafeRawBufferPointer(rebasing: data[bytes]), into: buffer)
            }
        } catch {
            throw .checkpoint(.codec(file: checkpoint.path, tensor: tensor.name, problem: error))
        }
        return values
    }

    /// Rounds `values` to the nearest values of `dtype` (16-bit types; others are kept).
    static func round(_ values: inout [Float], to dtype: DType) {
        guard dtype == .bf16 || dtype == .f16 else { return }
        var bytes = [UInt8](repeating: 0, count: values.count * 2)
        values.withUnsafeBufferPointer { v in
            bytes.withUnsafeMutableBytes { b in _ = try? ElementCodec.encode(dtype, from: v, into: b) }
        }
        values.withUnsafeMutableBufferPointer { v in
            bytes.withUnsafeBytes { b in _ = try? ElementCodec.decode(dtype, from: b, into: v) }
        }
    }
}

/// A column-wise sum of rows in the order of torch's CPU sum (its `row_sum`): the rows
/// are taken as groups of four, each of the four lanes summed with a cascade of four
/// accumulator levels (the first carried into the next every 2^p groups, p = max(4,
/// ⌈log₂ groups⌉ / 4), each level carried on when the group count is a multiple of its
/// span), the levels of a lane added together, the rows left over after the last whole
/// group added to lane 0, and the lanes added in order. (A large tensor that torch
/// splits across threads is summed in another order; the sums then differ in the last
/// bits only.)
struct CascadeSum {
    private var levels: [[[Float]]]
    private var leftover: [[Float]] = []
    private let step: Int
    private let groups: Int
    private var rows = 0

    init(width: Int, count: Int) {
        groups = count / 4
        var log2 = 0
        while (1 << log2) < groups { log2 += 1 }
        step = 1 << max(4, log2 / 4)
        levels = [[[Float]]](repeating: [[Float]](repeating: [Float](repeating: 0, count: width), count: 4), count: 4)
    }

    mutating func add(_ row: [Float]) {
        guard rows < groups * 4 else {
            leftover.append(row)
            return
        }
        let lane = rows % 4
        for i in row.indices { levels[lane][0][i] += row[i] }
        rows += 1
        guard rows % 4 == 0, (rows / 4) % step == 0 else { return }
        let done = rows / 4
        var span = step
        for j in 1..<4 {
            for k in 0..<4 {
                for i in levels[k][j].indices {
                    levels[k][j][i] += levels[k][j - 1][i]
                    levels[k][j - 1][i] = 0
                }
            }
            span *= step
            if done % span != 0 { break }
        }
    }

    /// The sum of the rows added.
    var total: [Float] {
        var lanes = levels.map { lane in
            var sum = lane[0]
            for j in 1..<4 { for i in sum.indices { sum[i] += lane[j][i] } }
            return sum
        }
        for row in leftover { for i in row.indices { lanes[0][i] += row[i] } }
        var result = lanes[0]
        for k in 1..<4 { for i in result.indices { result[i] += lanes[k][i] } }
        return result
    }
}
