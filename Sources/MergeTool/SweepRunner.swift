import Checkpoints
import Foundation
import Merging
import Training

/// Merges and scores the models of a sweep, one call per model on the worker queue's
/// threads, appending each result to the results file as it comes.
final class CandidateRunner: Sendable {
    /// How a model is scored.
    enum Evaluation: Sendable {
        /// The held-out tasks of `merge-tool eval`, the reward margin against `base`.
        case builtin(base: String?)
        /// A shell command with `{model}` replaced by the model folder.
        case command(String)
    }

    let folder: String
    let evaluation: Evaluation
    let keep: Bool
    let followSymlinks: Bool
    /// Merge threads per candidate.
    let mergeWorkers: Int
    let progress = ProgressLine(label: "sweep", unit: "models")
    let total: Int
    private let done = Locked(0)
    private let results: Locked<FileHandle>
    /// Warnings already shown: every candidate of a recipe repeats the same ones.
    private let warned = Locked(Set<String>())
    /// The base model of the builtin reward margin, loaded once per worker thread.
    private let bases = Locked([Int: LlamaModel]())

    init(folder: String, resultsPath: String, evaluation: Evaluation, keep: Bool, followSymlinks: Bool,
         mergeWorkers: Int, total: Int) throws {
        self.folder = folder
        self.evaluation = evaluation
        self.keep = keep
        self.followSymlinks = followSymlinks
        self.mergeWorkers = mergeWorkers
        self.total = total
        if !FileManager.default.fileExists(atPath: resultsPath) {
            _ = FileManager.default.createFile(atPath: resultsPath, contents: nil)
        }
        guard let handle = FileHandle(forUpdatingAtPath: resultsPath) else {
            throw SweepFailure(message: "\(resultsPath): cannot open for appending")
        }
        // A line cut short by an interrupted run is ended, so the next record starts a line.
        let end = try handle.seekToEnd()
        if end > 0 {
            try handle.seek(toOffset: end - 1)
            if try handle.read(upToCount: 1) != Data("\n".utf8) { try handle.write(contentsOf: Data("\n".utf8)) }
        }
        results = Locked(handle)
    }

    /// Scores the model of `record` (with its fingerprint set) and appends the record with
    /// its metrics, or its error shown as a warning, and the seconds it took. A parent is
    /// scored as it is; a candidate is first merged from its recipe (already in
    /// `folder/candidates/N.yml`) into `folder/candidates/N`, removed after unless asked
    /// to keep it.
    func score(_ record: SweepRecord, worker: Int) {
        let start = Date()
        var record = record
        do {
            switch record.subject {
            case .parent(let model): record.metrics = try evaluate(model, worker: worker)
            case .candidate(let index, _): record.metrics = try merge(candidate: index, andEvaluateOn: worker)
            }
        } catch {
            record.error = "\(error)"
            progress.finish()
            printError("warning: \(record.candidateIndex == nil ? "parent" : "candidate") \(record.label) failed: \(error)")
        }
        record.seconds = Date().timeIntervalSince(start)
        finish(record)
    }

    private func merge(candidate index: Int, andEvaluateOn worker: Int) throws -> [String: Double] {
        let modelPath = folder + "/candidates/\(index)"
        defer { if !keep { try? FileManager.default.removeItem(atPath: modelPath) } }
        let (plan, text) = try MergeRecipe.load(modelPath + ".yml")
        let prepared = try PreparedMerge.prepare(plan, followSymlinks: followSymlinks)
        for warning in prepared.warnings { warnOnce(warning) }
        let options = MergedModelWriter.Options(
            overwrite: true, followSymlinks: followSymlinks, workers: mergeWorkers, recipe: text)
        try MergedModelWriter.write(prepared, to: modelPath, options: options, warn: { self.warnOnce($0) })
        return try evaluate(modelPath, worker: worker)
    }

    private func evaluate(_ model: String, worker: Int) throws -> [String: Double] {
        switch evaluation {
        case .builtin(let basePath):
            let policy = try ModelFolder.load(model, followSymlinks: followSymlinks)
            var base: LlamaModel?
            if let basePath {
                base = try bases.withLock { (cache) throws(TrainingError) -> LlamaModel in
                    if let loaded = cache[worker] { return loaded }
                    let loaded = try ModelFolder.load(basePath, followSymlinks: followSymlinks)
                    cache[worker] = loaded
                    return loaded
                }
            }
            return try SweepRecord.metrics(fromOutput: Evaluator.evaluate(policy, base: base).json)
        case .command(let command):
            return try Self.run(command, model: model)
        }
    }

    /// The most standard output an evaluation command may print.
    static let maximumOutput = 16 << 20

    /// Runs the evaluation command through `/bin/sh -c` with `{model}` replaced by the
    /// quoted model path (appended when the command does not name it), and reads the
    /// metrics it prints. Its standard error goes to ours.
    static func run(_ command: String, model: String) throws -> [String: Double] {
        let quoted = "'" + model.replacingOccurrences(of: "'", with: "'\\''") + "'"
        let line = command.contains("{model}") ? command.replacingOccurrences(of: "{model}", with: quoted) : command + " " + quoted
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", line]
        let out = Pipe()
        process.standardOutput = out
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Kept up to a bound, and drained past it so the command never blocks on a full pipe.
        var data = Data()
        var overflow = false
        while let chunk = try out.fileHandleForReading.read(upToCount: 1 << 16), !chunk.isEmpty {
            if data.count + chunk.count <= maximumOutput { data.append(chunk) } else { overflow = true }
        }
        process.waitUntilExit()
        guard process.terminationReason == .exit else {
            throw SweepFailure(message: "the evaluation command was killed by signal \(process.terminationStatus)")
        }
        guard process.terminationStatus == 0 else {
            throw SweepFailure(message: "the evaluation command exited with status \(process.terminationStatus)")
        }
        guard !overflow else {
            throw SweepFailure(message: "the evaluation command printed more than \(maximumOutput >> 20) MiB")
        }
        return try SweepRecord.metrics(fromOutput: String(decoding: data, as: UTF8.self))
    }

    private func warnOnce(_ warning: String) {
        guard warned.withLock({ $0.insert(warning).inserted }) else { return }
        progress.finish()
        printError("warning: \(warning)")
    }

    /// The first error writing the results file: the sweep goes on (the models are
    /// scored), and the command reports it at the end.
    let writeFailure = Locked<String?>(nil)

    private func finish(_ record: SweepRecord) {
        results.withLock { handle in
            do {
                try handle.write(contentsOf: Data((record.jsonLine + "\n").utf8))
            } catch {
                writeFailure.withLock { if $0 == nil { $0 = "\(error.localizedDescription)" } }
            }
        }
        let count = done.withLock { (n: inout Int) -> Int in
            n += 1
            return n
        }
        progress.update(done: count, total: total)
    }
}
