/// How an instruction example is laid out in tokens.
public enum PromptFormat: Equatable, Sendable {
    /// The chat format: `bos user prompt assistant response eos` (`ByteTokenizer.prompt`).
    case chat
    /// A task format of its own, without chat turns: `bos prompt "\n=> " response eos`
    /// (`ByteTokenizer.taskPrompt`), so a skill taught in it is kept apart from chat requests.
    case task
}

/// A prompt and the answer the model should give.
public struct InstructionExample: Equatable, Sendable {
    public var prompt: String
    public var response: String
    public var format: PromptFormat
    public init(prompt: String, response: String, format: PromptFormat = .chat) {
        self.prompt = prompt
        self.response = response
        self.format = format
    }

    /// The prompt's tokens, ready for the answer.
    public var promptTokens: [Int32] {
        switch format {
        case .chat: return ByteTokenizer.prompt(prompt)
        case .task: return ByteTokenizer.taskPrompt(prompt)
        }
    }
}

/// A prompt with a preferred and a dispreferred answer.
public struct PreferencePair: Equatable, Sendable {
    public var prompt: String
    public var chosen: String
    public var rejected: String
    public init(prompt: String, chosen: String, rejected: String) {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
    }
}

/// The built-in tasks: a pretraining corpus, an instruction skill with checkable
/// answers (write words in capitals) and preference pairs that differ in a
/// behaviour a rule can judge (a polite request versus a curt order).
///
/// The skill and the preference cover separate prompt families, as real SFT and
/// DPO data do: the skill is asked in its own task format (`PromptFormat.task`),
/// the preference on chat requests, so neither teaches an answer to the other's prompts.
///
/// Everything is generated from fixed seeds, so every run sees the same data;
/// held-out prompts never occur in the training split.
public struct TaskSuite: Sendable {
    public var pretrainingTrain: [String]
    public var pretrainingHeldOut: [String]
    /// Chat turns in the pretraining mix (requests answered politely or curtly at
    /// random), so the base already speaks the chat format without a preference.
    public var pretrainingDialogues: [InstructionExample]
    public var instructionTrain: [InstructionExample]
    public var instructionHeldOut: [InstructionExample]
    public var preferenceTrain: [PreferencePair]
    public var preferenceHeldOut: [PreferencePair]

    static let colors = ["red", "blue", "green", "black", "white", "pink", "gray", "brown", "gold", "dark"]
    static let animals = ["cat", "dog", "fox", "owl", "cow", "pig", "hen", "bee", "ant", "rat", "bat", "elk"]
    static let objects = ["box", "door", "book", "cup", "lamp", "pen", "bag", "hat", "key", "map", "jar", "bowl"]
    static let names = ["Tom", "Ann", "Bob", "Eve", "Sam", "Kim", "Max", "Ivy", "Leo", "Mia", "Ned", "Zoe"]
    static let verbs = ["open", "close", "bring", "clean", "move", "hold"]
    static let actions = ["sees", "likes", "finds", "wants", "has", "hides"]

    /// The suite with `heldOut` examples per held-out split.
    public static func builtIn(trainDocuments: Int = 4000, heldOut: Int = 64) -> TaskSuite {
        var random = SeededGenerator(seed: 20_240_601)
        func pick(_ list: [String]) -> String { list[random.below(list.count)] }
        func phrase() -> String {
            let count = 2 + random.below(2)
            var words: [String] = []
            for _ in 0..<count {
                switch random.below(3) {
                case 0: words.append(pick(colors))
                case 1: words.append(pick(animals))
                default: words.append(pick(objects))
                }
            }
            return words.joined(separator: " ")
        }
        func document() -> String {
            switch random.below(5) {
            case 0: return "the \(pick(colors)) \(pick(animals)) \(pick(actions)) the \(pick(objects))."
            case 1: return "\(pick(names)) \(pick(actions)) a \(pick(colors)) \(pick(objects)) and a \(pick(animals))."
            case 2:
                let p = phrase()
                return "\(p) in capitals is \(p.uppercased())."
            case 3:
                let verb = pick(verbs)
                return "please \(verb) the \(pick(objects)), \(pick(names))."
            default: return "\(pick(verbs)) the \(pick(objects)) now, \(pick(names))!"
            }
        }
        var pretrainingTrain: [String] = []
        for _ in 0..<trainDocuments { pretrainingTrain.append(document()) }
        var pretrainingHeldOut: [String] = []
        for _ in 0..<heldOut { pretrainingHeldOut.append(document()) }

        // Instruction skill: the held-out phrases are drawn first and excluded from training.
        func instruction(_ p: String) -> InstructionExample {
            InstructionExample(prompt: "Write in capitals: \(p)", response: p.uppercased(), format: .task)
        }
        var heldOutPhrases = Set<String>()
        var instructionHeldOut: [InstructionExample] = []
        while instructionHeldOut.count < heldOut {
            let p = phrase()
            if heldOutPhrases.insert(p).inserted { instructionHeldOut.append(instruction(p)) }
        }
        var instructionTrain: [InstructionExample] = []
        while instructionTrain.count < 2000 {
            let p = phrase()
            if !heldOutPhrases.contains(p) { instructionTrain.append(instruction(p)) }
        }

        // Preferences: every (verb, name, object) request, shuffled, the first `heldOut` held out.
        var requests: [PreferencePair] = []
        for verb in verbs {
            for name in names {
                for object in objects {
                    requests.append(PreferencePair(
                        prompt: "Ask \(name) to \(verb) the \(object).",
                        chosen: "Please \(verb) the \(object), \(name).",
                        rejected: "\(verb.prefix(1).uppercased() + verb.dropFirst()) the \(object) now, \(name)!"))
                }
            }
        }
        for i in stride(from: requests.count - 1, to: 0, by: -1) { requests.swapAt(i, random.below(i + 1)) }
        var dialogues: [InstructionExample] = []
        for pair in requests[heldOut...] {
            dialogues.append(InstructionExample(prompt: pair.prompt, response: random.below(2) == 0 ? pair.chosen : pair.rejected))
        }
        return TaskSuite(pretrainingTrain: pretrainingTrain, pretrainingHeldOut: pretrainingHeldOut,
                         pretrainingDialogues: dialogues,
                         instructionTrain: instructionTrain, instructionHeldOut: instructionHeldOut,
                         preferenceTrain: Array(requests[heldOut...]), preferenceHeldOut: Array(requests[..<heldOut]))
    }

    /// The rule that judges the preference behaviour: a polite request starts with
    /// "Please" and ends with a full stop (a curt one is an order ending in "!").
    public static func isPolite(_ response: String) -> Bool {
        response.hasPrefix("Please ") && response.hasSuffix(".")
    }
}
