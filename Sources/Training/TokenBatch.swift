/// A batch of equal-length token sequences (right-padded) with the targets the
/// loss reads: `targets[n]` is the token to predict after `inputs[n]`, or −1
/// where nothing is predicted (prompt, padding).
public struct TokenBatch: Sendable {
    public let sequenceCount: Int
    public let length: Int
    public var inputs: [Int32]
    public var targets: [Int32]

    /// Row count of the flattened batch.
    public var rowCount: Int { sequenceCount * length }

    /// Packs `sequences` (each with its count of leading tokens that are not trained on)
    /// into one batch; a sequence of n tokens gives n − 1 predictions.
    public init(sequences: [(tokens: [Int32], promptLength: Int)]) {
        sequenceCount = sequences.count
        var longest = 1
        for s in sequences { longest = max(longest, s.tokens.count - 1) }
        length = longest
        inputs = [Int32](repeating: Int32(ByteTokenizer.pad), count: sequences.count * longest)
        targets = [Int32](repeating: -1, count: sequences.count * longest)
        for (b, s) in sequences.enumerated() {
            for t in 0..<(s.tokens.count - 1) {
                inputs[b * longest + t] = s.tokens[t]
                if t + 1 >= s.promptLength { targets[b * longest + t] = s.tokens[t + 1] }
            }
        }
    }

    /// A batch for a forward pass only (no targets), e.g. decoding.
    init(inputs: [Int32], sequenceCount: Int, length: Int) {
        self.sequenceCount = sequenceCount
        self.length = length
        self.inputs = inputs
        targets = [Int32](repeating: -1, count: inputs.count)
    }
}
