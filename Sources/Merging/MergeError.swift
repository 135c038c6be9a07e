import Checkpoints

/// Everything that stops a merge before or during its work.
public enum MergeError: Error, Equatable, CustomStringConvertible {
    /// A method name that does not exist, with the closest known name.
    case unknownMethod(name: String, suggestion: String?)
    /// A recipe file that cannot be read or breaks the recipe format.
    case recipe(file: String, problem: String)
    /// A parameter value that would make the merge meaningless (NaN, out of range).
    case badParameter(name: String, problem: String)
    /// The models, base and method do not fit together.
    case badPlan(String)
    /// Inputs that do not fit the base, every problem found (shapes, missing tensors, types).
    case incompatibleInputs(base: String, problems: [String])
    /// A checkpoint could not be read or written.
    case checkpoint(CheckpointError)
    /// An input tensor holds NaN or infinite values and `--strict` was given.
    case nonFiniteInput(file: String, tensor: String)
    /// Finite inputs merged to values the output type cannot hold (they would be ±Inf or NaN).
    case outputOutOfRange(tensor: String, dtype: DType)

    /// How many problems an error message lists before summarizing the rest.
    static let listedProblems = 8

    public var description: String {
        switch self {
        case .unknownMethod(let name, let suggestion):
            let known = MergeMethod.allCases.map(\.rawValue).joined(separator: ", ")
            if let suggestion { return "unknown merge method '\(name)' (did you mean '\(suggestion)'?)" }
            return "unknown merge method '\(name)' (known: \(known))"
        case .recipe(let file, let problem): return "\(file): \(problem)"
        case .badParameter(let name, let problem): return "parameter '\(name)': \(problem)"
        case .badPlan(let problem): return problem
        case .incompatibleInputs(let base, let problems):
            var shown = problems.prefix(MergeError.listedProblems).joined(separator: "; ")
            if problems.count > MergeError.listedProblems {
                shown += "; and \(problems.count - MergeError.listedProblems) more"
            }
            let count = problems.count == 1 ? "1 problem" : "\(problems.count) problems"
            return "\(base): inputs do not fit the base (\(count)): \(shown)"
        case .checkpoint(let error): return error.description
        case .nonFiniteInput(let file, let tensor):
            return "\(file): tensor '\(tensor)' holds NaN or infinite values (--strict)"
        case .outputOutOfRange(let tensor, let dtype):
            let wider = dtype == .f32 ? "" : ", or write F32 with --dtype f32"
            return "merged tensor '\(tensor)' has values beyond the range of \(dtype) (they would be written as Inf or NaN); lower the weights or lambda\(wider)"
        }
    }
}
