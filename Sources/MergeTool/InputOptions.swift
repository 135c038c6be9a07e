import ArgumentParser
import Checkpoints
import Foundation

/// Options every command that reads checkpoints shares.
struct InputOptions: ParsableArguments {
    @Flag(help: "Follow shards that are links to files outside their model folder (refused by default).")
    var followSymlinks = false

    /// Applies the options to how checkpoints are opened.
    func apply() {
        Checkpoint.followsSymlinks = followSymlinks
    }
}

/// Options every command that writes an output shares.
struct WorkOptions: ParsableArguments {
    @Option(help: "Worker threads (default: one per core).")
    var threads: Int?

    /// The threads to use.
    var workerCount: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

    @Flag(help: "Replace an existing output.")
    var force = false

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }
}

/// The shard limit of commands that write safetensors folders.
struct ShardOptions: ParsableArguments {
    @Option(help: "Largest safetensors shard, e.g. 5GB, 500MB, 2GiB.")
    var maxShardSize: String = "5GB"

    /// The limit in bytes (checked by `validate`).
    var bytes: Int { parseByteSize(maxShardSize)! }

    func validate() throws {
        guard parseByteSize(maxShardSize) != nil else {
            throw ValidationError("--max-shard-size '\(maxShardSize)' is not a size such as 5GB or 500MB")
        }
    }
}
