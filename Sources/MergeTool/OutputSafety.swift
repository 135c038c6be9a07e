import Checkpoints

/// A mistake in how the command was asked for, found after argument parsing.
struct UsageProblem: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Refuses an output that is one of the inputs, holds one, or lies inside an input
/// folder, `--force` or not: writing it would destroy what is being read. Every
/// command calls this for every file or folder it writes (`OutputGuard` holds the rule).
func refuseOverwritingInput(output: String, inputs: [String]) throws {
    try OutputGuard.check(output: output, inputs: inputs)
}
