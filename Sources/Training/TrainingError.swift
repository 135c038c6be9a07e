import Checkpoints

/// Everything that can stop training, evaluation or loading a model.
///
/// `description` is the text after `error: ` on the command line: the file
/// first, then what is wrong.
public enum TrainingError: Error, Equatable, CustomStringConvertible {
    /// A checkpoint could not be read or written.
    case checkpoint(CheckpointError)
    /// `config.json` is missing, malformed, or describes a model this module cannot build.
    case config(file: String, problem: String)
    /// A JSONL data line is malformed: the 1-based line number and the field at fault.
    case data(file: String, line: Int, problem: String)
    /// A data file has no usable example.
    case emptyData(file: String, problem: String)
    /// The loss or the gradient became NaN or infinite; the last good weights were kept.
    case diverged(file: String, step: Int, keptStep: Int)
    /// A file could not be read or written.
    case io(file: String, problem: String)

    public var description: String {
        switch self {
        case .checkpoint(let error): return error.description
        case .config(let file, let problem): return "\(file): \(problem)"
        case .data(let file, let line, let problem): return "\(file): line \(line): \(problem)"
        case .emptyData(let file, let problem): return "\(file): \(problem)"
        case .diverged(let file, let step, let kept):
            return "\(file): training diverged at step \(step) (loss or gradient not finite); kept the weights after step \(kept)"
        case .io(let file, let problem): return "\(file): \(problem)"
        }
    }
}
