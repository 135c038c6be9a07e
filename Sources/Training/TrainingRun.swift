import Checkpoints

/// One complete training command: data, defaults, the run and the saved folder.
/// The command line and the demo pipeline both go through here.
public enum TrainingRun {
    /// The defaults each objective is tuned with on the built-in suite.
    public static func defaultOptions(for task: TrainingTask) -> TrainingOptions {
        var options = TrainingOptions()
        switch task {
        case .pretrain: options.steps = 600; options.learningRate = 3e-3; options.batchSize = 16
        case .sft: options.steps = 150; options.learningRate = 1e-3; options.batchSize = 16
        case .dpo: options.steps = 120; options.learningRate = 5e-5; options.batchSize = 8
        case .orpo: options.steps = 120; options.learningRate = 2e-4; options.batchSize = 8
        }
        return options
    }

    /// The training split of the built-in suite for `task`.
    public static func builtInData(for task: TrainingTask, suite: TaskSuite, maxPositions: Int) throws(TrainingError) -> TrainingData {
        switch task {
        case .pretrain:
            return try TrainingData.documents(suite.pretrainingTrain, maxPositions: maxPositions, file: "built-in corpus")
                .appending(.dialogues(suite.pretrainingDialogues, maxPositions: maxPositions, file: "built-in dialogues"))
        case .sft: return try .instructions(suite.instructionTrain, maxPositions: maxPositions, file: "built-in instructions")
        case .dpo, .orpo: return try .preferences(suite.preferenceTrain, maxPositions: maxPositions, file: "built-in preferences")
        }
    }

    /// Data for `task` from a JSONL file.
    public static func fileData(for task: TrainingTask, path: String, maxPositions: Int) throws(TrainingError) -> TrainingData {
        switch task {
        case .pretrain: return try .documents(JSONLData.documents(path), maxPositions: maxPositions, file: path)
        case .sft: return try .instructions(JSONLData.instructions(path), maxPositions: maxPositions, file: path)
        case .dpo, .orpo: return try .preferences(JSONLData.preferences(path), maxPositions: maxPositions, file: path)
        }
    }

    /// Trains `model` in place and writes it to `output`. A diverging run writes the
    /// last good weights and then throws `.diverged`. Returns the final loss.
    /// `dataFile` names the data in messages. A batch whose activations would pass
    /// `LlamaConfig.maximumActivationBytes` is refused before anything is written.
    @discardableResult
    public static func train(_ model: LlamaModel, task: TrainingTask, data: TrainingData, options: TrainingOptions,
                             output: String, overwrite: Bool = false, dataFile: String = "training data",
                             storage: WeightStorage = .f32,
                             progress: (StepReport) -> Void = { _ in }) throws(TrainingError) -> Double {
        try checkActivations(model.config, data: data, batchSize: options.batchSize, file: dataFile)
        let folder = try ModelFolderWriter(path: output, config: model.config, overwrite: overwrite, storage: storage)
        let outcome = Trainer(model: model, task: task, data: data, options: options).run(progress: progress)
        try folder.write(model)
        switch outcome {
        case .completed(let loss): return loss
        case .diverged(let step, let kept): throw .diverged(file: output, step: step, keptStep: kept)
        }
    }

    /// Refuses data whose longest example, batched `batchSize` at a time (pairs as
    /// two sequences), would need more activation memory than the budget.
    static func checkActivations(_ config: LlamaConfig, data: TrainingData, batchSize: Int, file: String) throws(TrainingError) {
        var longest = (index: 0, length: 0)
        var perExample = 1
        switch data {
        case .sequences(let s):
            for (i, x) in s.enumerated() where x.tokens.count - 1 > longest.length { longest = (i, x.tokens.count - 1) }
        case .pairs(let p):
            perExample = 2
            for (i, x) in p.enumerated() {
                let length = max(x.chosen.tokens.count, x.rejected.tokens.count) - 1
                if length > longest.length { longest = (i, length) }
            }
        }
        let sequences = Double(max(1, min(batchSize, data.count))) * Double(perExample)
        let bytes = config.activationBytes(sequences: Int(sequences), length: max(1, longest.length))
        guard bytes <= LlamaConfig.maximumActivationBytes else {
            let gib = { (b: Double) in "\((b / 107_374_182.4).rounded() / 10) GiB" }
            throw .data(file: file, line: longest.index + 1,
                        problem: "example of \(longest.length + 1) tokens needs \(gib(bytes)) of activations in a batch of "
                            + "\(Int(sequences)) sequences, more than the \(gib(LlamaConfig.maximumActivationBytes)) training budget "
                            + "(shorten the example or lower the batch size)")
        }
    }
}
