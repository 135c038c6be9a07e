/// A mistake in how the command was asked for, found after argument parsing.
struct UsageProblem: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
