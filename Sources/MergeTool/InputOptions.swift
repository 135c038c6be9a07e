import ArgumentParser
import Checkpoints
import Foundation

/// Options every command that reads checkpoints shares.
struct InputOptions: ParsableArguments {
    @Flag(help: "Follow shards that are links to files outside their model folder (refused by default).")
    var followSymlinks = false
}

/// Options every command that writes an output shares.
struct WorkOptions: ParsableArguments {
    /// The most worker threads a command starts; each holds its own buffers.
    static let maximumThreads = 256

    @Option(help: "Worker threads, 1 to \(WorkOptions.maximumThreads) (default: one per core).")
    var threads: Int?

    /// The threads to use.
    var workerCount: Int { threads ?? min(ProcessInfo.processInfo.activeProcessorCount, Self.maximumThreads) }

    @Flag(help: "Replace an existing output.")
    var force = false

    func validate() throws {
        if let threads, !(1...Self.maximumThreads).contains(threads) {
            throw ValidationError("--threads must lie between 1 and \(Self.maximumThreads), got \(threads)")
        }
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
