/// What `adapter_config.json` says about a LoRA adapter, as far as its weights depend on it.
public struct LoRAConfig: Sendable, Equatable {
    /// `r`: the rank of every module not named in `rankPattern`.
    public var rank: Int
    /// `lora_alpha` (PEFT's default 8 when absent).
    public var alpha: Double
    /// `use_rslora`: scale by α/√r instead of α/r.
    public var useRSLoRA: Bool
    /// `target_modules` as a list of names; nil when absent or given as a pattern string.
    public var targetModules: [String]?
    /// `modules_to_save`: modules stored whole.
    public var modulesToSave: [String]
    /// `fan_in_fan_out`: the adapted weights are stored [in, out] (GPT-2's Conv1D).
    public var fanInFanOut: Bool
    /// `bias`: which biases the adapter trained and stores whole.
    public var bias: Bias = .none
    /// `rank_pattern` and `alpha_pattern` entries in file order; the first matching name wins.
    public var rankPattern: [(key: String, value: Int)]
    public var alphaPattern: [(key: String, value: Double)]

    /// PEFT's `bias` setting. With `loraOnly` the adapted layers' biases are stored
    /// whole (`<module>.base_layer.bias`); with `all`, every bias of the model.
    public enum Bias: String, Sendable, Equatable {
        case none
        case all
        case loraOnly = "lora_only"
    }

    public static func == (a: LoRAConfig, b: LoRAConfig) -> Bool {
        a.rank == b.rank && a.bias == b.bias && a.alpha == b.alpha && a.useRSLoRA == b.useRSLoRA && a.targetModules == b.targetModules
            && a.modulesToSave == b.modulesToSave && a.fanInFanOut == b.fanInFanOut
            && a.rankPattern.elementsEqual(b.rankPattern, by: { $0 == $1 })
            && a.alphaPattern.elementsEqual(b.alphaPattern, by: { $0 == $1 })
    }

    /// The rank configured for `module`.
    public func rank(of module: String) -> Int {
        rankPattern.first { PEFTNames.module(module, matches: $0.key) }?.value ?? rank
    }

    /// The α configured for `module`.
    public func alpha(of module: String) -> Double {
        alphaPattern.first { PEFTNames.module(module, matches: $0.key) }?.value ?? alpha
    }

    /// The scale of `module`'s product: α/r, or α/√r with rsLoRA (in Double, as PEFT computes it).
    public func scale(of module: String) -> Double {
        let r = Double(rank(of: module)), a = alpha(of: module)
        return useRSLoRA ? a / r.squareRoot() : a / r
    }

    /// The most bytes an adapter config may have; real ones are a few kilobytes.
    public static let maximumSize = 1 << 20

    /// Reads `adapter_config.json` text; problems are one line each, without the file name.
    public static func parse(_ bytes: [UInt8]) throws(LoRAProblem) -> LoRAConfig {
        let json: JSONValue
        guard let text = String(validating: bytes, as: UTF8.self) else { throw LoRAProblem("not valid UTF-8") }
        do {
            json = try JSONParser.parse(text)
        } catch {
            throw LoRAProblem("not valid JSON: \(error.description)")
        }
        guard case .object = json else { throw LoRAProblem("not a JSON object") }
        func bool(_ key: String) throws(LoRAProblem) -> Bool {
            switch json[key] {
            case nil, .null?: return false
            case .bool(let b)?: return b
            default: throw LoRAProblem("'\(key)' is not true or false")
            }
        }
        func names(_ key: String) throws(LoRAProblem) -> [String]? {
            switch json[key] {
            case nil, .null?: return nil
            case .string?: return nil
            case .array(let items)?:
                var out: [String] = []
                for item in items {
                    guard let s = item.stringValue else { throw LoRAProblem("'\(key)' holds something other than module names") }
                    out.append(s)
                }
                return out
            default: throw LoRAProblem("'\(key)' is not a list of module names")
            }
        }
        func pattern(_ key: String) throws(LoRAProblem) -> [(key: String, value: JSONValue)] {
            switch json[key] {
            case nil, .null?: return []
            case .object(let members)?:
                for m in members where m.key.utf8.contains(where: { "*+?()[]{}|^$\\".utf8.contains($0) }) {
                    throw LoRAProblem("'\(key)' key '\(m.key)' is a regular expression; only module names are supported")
                }
                return members
            default: throw LoRAProblem("'\(key)' is not an object")
            }
        }
        if let type = json["peft_type"], type != .null, type.stringValue != "LORA" {
            throw LoRAProblem("peft_type is \(type.stringValue.map { "'\($0)'" } ?? "not a name"), not 'LORA'")
        }
        if try bool("use_dora") { throw LoRAProblem("use_dora is set; DoRA adapters are not supported") }
        if try bool("lora_bias") { throw LoRAProblem("lora_bias is set; adapters with LoRA biases are not supported") }
        guard let rankValue = json["r"] else { throw LoRAProblem("no 'r' (the adapter's rank)") }
        guard let rank = rankValue.nonNegativeInteger, rank > 0 else { throw LoRAProblem("'r' is not a positive integer") }
        var alpha = 8.0
        if let a = json["lora_alpha"], a != .null {
            guard let v = a.doubleValue, v.isFinite else { throw LoRAProblem("'lora_alpha' is not a finite number") }
            alpha = v
        }
        var ranks: [(key: String, value: Int)] = []
        for (key, value) in try pattern("rank_pattern") {
            guard let r = value.nonNegativeInteger, r > 0 else { throw LoRAProblem("rank_pattern '\(key)' is not a positive integer") }
            ranks.append((key, r))
        }
        var alphas: [(key: String, value: Double)] = []
        for (key, value) in try pattern("alpha_pattern") {
            guard let a = value.doubleValue, a.isFinite else { throw LoRAProblem("alpha_pattern '\(key)' is not a finite number") }
            alphas.append((key, a))
        }
        var bias = Bias.none
        switch json["bias"] {
        case nil, .null?: break
        case .string(let text)?:
            guard let b = Bias(rawValue: text) else { throw LoRAProblem("'bias' is '\(text)', not 'none', 'all' or 'lora_only'") }
            bias = b
        default: throw LoRAProblem("'bias' is not 'none', 'all' or 'lora_only'")
        }
        return LoRAConfig(rank: rank, alpha: alpha, useRSLoRA: try bool("use_rslora"), targetModules: try names("target_modules"),
                          modulesToSave: try names("modules_to_save") ?? [], fanInFanOut: try bool("fan_in_fan_out"),
                          bias: bias, rankPattern: ranks, alphaPattern: alphas)
    }
}

/// A rule of LoRA adapters broken; the text follows the file name in a message.
public struct LoRAProblem: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
