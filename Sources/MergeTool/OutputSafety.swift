import Checkpoints
import Foundation

/// A mistake in how the command was asked for, found after argument parsing.
struct UsageProblem: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The absolute, link-free form of `path`, also for a path that does not exist yet.
func canonicalPath(_ path: String) -> String {
    if let real = HFFolder.realPath(path) { return real }
    let url = URL(fileURLWithPath: path).standardizedFileURL
    let parent = HFFolder.realPath(url.deletingLastPathComponent().path) ?? url.deletingLastPathComponent().path
    return parent + "/" + url.lastPathComponent
}

/// Refuses an output that is one of the inputs, or a folder holding one: writing
/// it would destroy what is being read.
func refuseOverwritingInput(output: String, inputs: [String]) throws {
    let target = canonicalPath(output)
    for input in inputs {
        let path = canonicalPath(input)
        if path == target || path.hasPrefix(target + "/") {
            throw CheckpointError.io(file: output, problem: "is an input (\(input)); choose another output")
        }
    }
}
