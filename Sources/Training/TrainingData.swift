/// One token sequence to train on: the first `promptLength` tokens are context only.
public struct TrainingSequence: Equatable, Sendable {
    public var tokens: [Int32]
    public var promptLength: Int
}

/// Examples tokenized for one objective: single sequences (pretraining, SFT) or
/// (chosen, rejected) pairs sharing a prompt (DPO, ORPO).
public enum TrainingData: Sendable {
    case sequences([TrainingSequence])
    case pairs([(chosen: TrainingSequence, rejected: TrainingSequence)])

    /// Number of examples (pairs count once).
    public var count: Int {
        switch self {
        case .sequences(let s): return s.count
        case .pairs(let p): return p.count
        }
    }

    /// Pretraining documents: every token after `bos` is predicted.
    public static func documents(_ texts: [String], maxPositions: Int, file: String) throws(TrainingError) -> TrainingData {
        var sequences: [TrainingSequence] = []
        for (i, text) in texts.enumerated() {
            let tokens = ByteTokenizer.document(text)
            try checkLength(tokens, maxPositions, file, i)
            sequences.append(TrainingSequence(tokens: tokens, promptLength: 1))
        }
        return .sequences(sequences)
    }

    /// Chat turns trained as pretraining text: every token after `bos` is predicted.
    public static func dialogues(_ examples: [InstructionExample], maxPositions: Int, file: String) throws(TrainingError) -> TrainingData {
        var sequences: [TrainingSequence] = []
        for (i, example) in examples.enumerated() {
            var s = sequence(example)
            try checkLength(s.tokens, maxPositions, file, i)
            s.promptLength = 1
            sequences.append(s)
        }
        return .sequences(sequences)
    }

    /// Both sets of sequences together (pairs cannot be combined).
    func appending(_ other: TrainingData) -> TrainingData {
        guard case .sequences(let a) = self, case .sequences(let b) = other else { preconditionFailure("only sequences combine") }
        return .sequences(a + b)
    }

    /// SFT examples, each in its own format: only the response and its `eos` are predicted.
    public static func instructions(_ examples: [InstructionExample], maxPositions: Int, file: String) throws(TrainingError) -> TrainingData {
        var sequences: [TrainingSequence] = []
        for (i, example) in examples.enumerated() {
            let s = sequence(example)
            try checkLength(s.tokens, maxPositions, file, i)
            sequences.append(s)
        }
        return .sequences(sequences)
    }

    /// Preference pairs for DPO or ORPO.
    public static func preferences(_ pairs: [PreferencePair], maxPositions: Int, file: String) throws(TrainingError) -> TrainingData {
        var result: [(chosen: TrainingSequence, rejected: TrainingSequence)] = []
        for (i, pair) in pairs.enumerated() {
            let chosen = chat(pair.prompt, pair.chosen), rejected = chat(pair.prompt, pair.rejected)
            try checkLength(chosen.tokens, maxPositions, file, i)
            try checkLength(rejected.tokens, maxPositions, file, i)
            result.append((chosen, rejected))
        }
        return .pairs(result)
    }

    /// `example` in its format, the prompt not predicted.
    static func sequence(_ example: InstructionExample) -> TrainingSequence {
        let p = example.promptTokens
        return TrainingSequence(tokens: p + ByteTokenizer.response(example.response), promptLength: p.count)
    }

    static func chat(_ prompt: String, _ response: String) -> TrainingSequence {
        let p = ByteTokenizer.prompt(prompt)
        return TrainingSequence(tokens: p + ByteTokenizer.response(response), promptLength: p.count)
    }

    private static func checkLength(_ tokens: [Int32], _ maxPositions: Int, _ file: String, _ index: Int) throws(TrainingError) {
        if tokens.count - 1 > maxPositions {
            throw .data(file: file, line: index + 1,
                        problem: "example is \(tokens.count) tokens, more than the model's \(maxPositions) positions")
        }
    }

    /// The batch holding examples `indices` (pairs as chosen, rejected, chosen, …).
    func batch(_ indices: ArraySlice<Int>) -> TokenBatch {
        var sequences: [(tokens: [Int32], promptLength: Int)] = []
        switch self {
        case .sequences(let s):
            for i in indices { sequences.append((s[i].tokens, s[i].promptLength)) }
        case .pairs(let p):
            for i in indices {
                sequences.append((p[i].chosen.tokens, p[i].chosen.promptLength))
                sequences.append((p[i].rejected.tokens, p[i].rejected.promptLength))
            }
        }
        return TokenBatch(sequences: sequences)
    }
}
