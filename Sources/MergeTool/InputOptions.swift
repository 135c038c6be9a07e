import ArgumentParser
import Checkpoints

/// Options every command that reads checkpoints shares.
struct InputOptions: ParsableArguments {
    @Flag(help: "Follow shards that are links to files outside their model folder (refused by default).")
    var followSymlinks = false

    /// Applies the options to how checkpoints are opened.
    func apply() {
        Checkpoint.followsSymlinks = followSymlinks
    }
}
