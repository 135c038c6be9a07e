import Foundation
import Yams

/// A recipe's output tokenizer, as mergekit 0.1.5 reads `tokenizer_source` and the
/// `tokenizer:` section: the tokenizer the output gets, the tokens added to it and
/// where their embedding rows come from. Every model's embedding and output-projection
/// rows are mapped to that tokenizer by token.
public struct TokenizerRecipe: Sendable, Equatable {
    /// Which tokenizer the output gets.
    public enum Source: Sendable, Equatable {
        /// The base model's (the first model's without a base).
        case base
        /// The base's with every token of the other models appended.
        case union
        /// The tokenizer of the model at this path.
        case model(String)
    }

    /// Where the embedding row of one token comes from when a model lacks it (or when forced).
    public enum TokenSource: Sendable, Equatable {
        /// The same token's row in the model at this path.
        case model(String)
        /// The row of token `token` (or of id `id`) in the model at `model`.
        case modelToken(model: String, token: String?, id: Int?)
        /// Zeros.
        case zero
    }

    /// One entry of `tokens:`.
    public struct TokenSetting: Sendable, Equatable {
        /// nil: mergekit's default (the base's row, the only model holding it, or the mean).
        public var source: TokenSource?
        /// Use `source` for every model, even those holding the token.
        public var force = false

        public init(source: TokenSource? = nil, force: Bool = false) {
            self.source = source
            self.force = force
        }
    }

    public var source: Source
    /// The `tokens:` entries in recipe order; tokens not in the tokenizer are added to it.
    public var tokens: [(token: String, setting: TokenSetting)]
    /// Rows are padded to a multiple of this (the padding rows are each model's mean row).
    public var padToMultipleOf: Int?

    public init(source: Source, tokens: [(token: String, setting: TokenSetting)] = [], padToMultipleOf: Int? = nil) {
        self.source = source
        self.tokens = tokens
        self.padToMultipleOf = padToMultipleOf
    }

    public static func == (a: TokenizerRecipe, b: TokenizerRecipe) -> Bool {
        a.source == b.source && a.padToMultipleOf == b.padToMultipleOf && a.tokens.count == b.tokens.count
            && zip(a.tokens, b.tokens).allSatisfy { $0.token == $1.token && $0.setting == $1.setting }
    }

    /// The setting of `token`, if the recipe has one.
    public func setting(for token: String) -> TokenSetting? {
        tokens.first { $0.token == token }?.setting
    }

    /// The model paths the recipe names (source and token sources), for locating them.
    public var modelPaths: [String] {
        var paths: [String] = []
        if case .model(let path) = source { paths.append(path) }
        for (_, setting) in tokens {
            switch setting.source {
            case .model(let path)?, .modelToken(let path, _, _)?: paths.append(path)
            default: break
            }
        }
        return paths
    }

    /// Replaces each model path by `transform`'s result.
    mutating func mapPaths(_ transform: (String) -> String) {
        if case .model(let path) = source { source = .model(transform(path)) }
        for i in tokens.indices {
            switch tokens[i].setting.source {
            case .model(let path)?: tokens[i].setting.source = .model(transform(path))
            case .modelToken(let path, let token, let id)?:
                tokens[i].setting.source = .modelToken(model: transform(path), token: token, id: id)
            default: break
            }
        }
    }
}

extension RecipeReader {
    /// `tokenizer_source`: `base`, `union` or a model path.
    func tokenizerSource(_ node: Node) throws(MergeError) -> TokenizerRecipe.Source {
        guard let value = node.string, !value.isEmpty else { throw problem("'tokenizer_source' must be base, union or a model path", at: node) }
        switch value {
        case "base": return .base
        case "union": return .union
        default: return .model(value)
        }
    }

    /// The `tokenizer:` section: `source` (default union, as in mergekit), `tokens`
    /// (token → {source, force}) and `pad_to_multiple_of`.
    func tokenizerSection(_ node: Node) throws(MergeError) -> TokenizerRecipe {
        guard let mapping = node.mapping else {
            throw problem("'tokenizer' must be a mapping with source, tokens, pad_to_multiple_of", at: node)
        }
        let fields = try fields(of: mapping, keys: ["source", "tokens", "pad_to_multiple_of"]) {
            "unknown key '\($0)' in 'tokenizer' (expected source, tokens, pad_to_multiple_of)"
        }
        var recipe = TokenizerRecipe(source: try fields["source"].map(tokenizerSource) ?? .union)
        if let value = fields["pad_to_multiple_of"], value.null == nil {
            guard let n = value.int, n > 0, n <= 1 << 20 else {
                throw problem("'pad_to_multiple_of' must be a positive integer (at most 1048576)", at: value)
            }
            recipe.padToMultipleOf = n
        }
        if let value = fields["tokens"], value.null == nil {
            guard let tokens = value.mapping else { throw problem("'tokens' must map each token to {source, force}", at: value) }
            guard tokens.count <= MergeRecipe.maximumParameterValues else {
                throw problem("'tokens' has more than \(MergeRecipe.maximumParameterValues) entries")
            }
            for (tokenNode, settingNode) in tokens {
                guard let token = tokenNode.string else { throw problem("each token of 'tokens' must be a string", at: tokenNode) }
                recipe.tokens.append((token: token, setting: try tokenSetting(settingNode, token: token)))
            }
        }
        return recipe
    }

    private func tokenSetting(_ node: Node, token: String) throws(MergeError) -> TokenizerRecipe.TokenSetting {
        if node.null != nil { return TokenizerRecipe.TokenSetting() }
        guard let mapping = node.mapping else { throw problem("token '\(token)': expected a mapping with source and force", at: node) }
        let fields = try fields(of: mapping, keys: ["source", "force"]) { "token '\(token)': unknown key '\($0)' (expected source, force)" }
        var setting = TokenizerRecipe.TokenSetting()
        if let value = fields["force"] {
            guard let flag = value.bool else { throw problem("token '\(token)': 'force' must be true or false", at: value) }
            setting.force = flag
        }
        if let value = fields["source"] { setting.source = try tokenSource(value, token: token) }
        return setting
    }

    /// A token's `source`: a model path, `{kind: zero}`, or `{kind: model_token, model,
    /// token | token_id}` (exactly one of the last two).
    private func tokenSource(_ node: Node, token: String) throws(MergeError) -> TokenizerRecipe.TokenSource? {
        if node.null != nil { return nil }
        if let path = node.string, !path.isEmpty { return .model(path) }
        guard let mapping = node.mapping else {
            throw problem("token '\(token)': 'source' must be a model path or {kind: zero | model_token}", at: node)
        }
        let fields = try fields(of: mapping, keys: ["kind", "model", "token", "token_id"]) {
            "token '\(token)': unknown key '\($0)' in 'source' (expected kind, model, token, token_id)"
        }
        switch fields["kind"]?.string {
        case "zero"?:
            guard fields.count == 1 else { throw problem("token '\(token)': a zero source takes no other keys", at: node) }
            return .zero
        case "model_token"?:
            guard let model = fields["model"]?.string, !model.isEmpty else {
                throw problem("token '\(token)': a model_token source needs 'model'", at: node)
            }
            let sourceToken = fields["token"]?.string
            let id = fields["token_id"]?.int
            if fields["token"] != nil && sourceToken == nil { throw problem("token '\(token)': 'token' must be a string", at: node) }
            if fields["token_id"] != nil && (id == nil || id! < 0) {
                throw problem("token '\(token)': 'token_id' must be a non-negative integer", at: node)
            }
            guard (sourceToken == nil) != (id == nil) else {
                throw problem("token '\(token)': give exactly one of 'token' and 'token_id'", at: node)
            }
            return .modelToken(model: model, token: sourceToken, id: id)
        default:
            throw problem("token '\(token)': 'kind' must be zero or model_token", at: node)
        }
    }
}
