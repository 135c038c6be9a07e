import Dispatch
import Foundation

/// An output being written: a hidden temporary sibling of the destination,
/// renamed into place only by `commit()`.
///
/// Every writer goes through this one mechanism, so a failed or interrupted run
/// never leaves a partial checkpoint: on error the temporary is removed
/// (`abort()`, also done on deinit), and `installInterruptCleanup()` removes all
/// pending temporaries when the process gets SIGINT or SIGTERM.
///
/// Replacing an existing output (`overwrite`) never passes through a moment
/// where neither the old nor the new output exists under the destination name:
/// the new one is swapped in with one `renameat2(RENAME_EXCHANGE)` call (Linux),
/// after which the temporary name holds the old output and is removed. Where the
/// exchange is not available, the old output is first renamed to the temporary's
/// name plus `.old` and the new one renamed into place; a run killed between the
/// two renames leaves that `.old`, and the next run for the same destination
/// renames it back when the destination is missing (and removes it otherwise),
/// so the old output survives.
public final class OutputPath: @unchecked Sendable {
    /// Where the output appears when committed.
    public let destination: String
    /// Where it is written meanwhile (same folder, so the rename is atomic).
    public let temporary: String
    /// True when the output is a folder.
    public let isDirectory: Bool
    private let overwrite: Bool
    /// The folder holding the destination.
    private let parent: String
    /// True once committed or aborted; held locked through either.
    private let finished = Locked(false)

    /// Prepares a temporary for `destination`. Fails when the parent folder is
    /// missing, or when `destination` exists and `overwrite` is false.
    public init(destination: String, isDirectory: Bool, overwrite: Bool) throws(CheckpointError) {
        // The path is split on its bytes (see `FilePaths`): "/" followed by a combining
        // mark is one Character, but still a separator to the file system.
        let slash = UInt8(ascii: "/")
        var bytes = Array(destination.utf8)
        while bytes.count > 1 && bytes.last == slash { bytes.removeLast() }
        let dest = String(decoding: bytes, as: UTF8.self)
        self.destination = dest
        self.isDirectory = isDirectory
        self.overwrite = overwrite
        let cut = bytes.lastIndex(of: slash)
        let name = String(decoding: bytes[(cut.map { $0 + 1 } ?? 0)...], as: UTF8.self)
        let parent = cut.map { $0 == 0 ? "/" : String(decoding: bytes[..<$0], as: UTF8.self) } ?? "."
        self.parent = parent
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDir), isDir.boolValue else {
            throw .io(file: dest, problem: "parent folder \(parent) does not exist")
        }
        if FileManager.default.fileExists(atPath: dest) && !overwrite {
            throw .io(file: dest, problem: "already exists (use --force to replace it)")
        }
        let token = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let prefix = "." + name + ".partial-"
        OutputPath.removeAbandoned(in: parent, prefix: prefix, destination: dest)
        temporary = parent + "/" + prefix + "\(getpid())-" + token
        // Registered before it exists, so a signal arriving in between still removes it.
        PendingOutputs.shared.add(temporary)
        if isDirectory {
            guard mkdir(temporary, 0o755) == 0 else {
                PendingOutputs.shared.remove(temporary)
                throw .io(file: dest, problem: "cannot create its temporary folder: \(String(cString: strerror(errno)))")
            }
        }
    }

    deinit { abort() }

    /// Path of `name` inside a folder output's temporary.
    public func temporaryPath(for name: String) -> String { temporary + "/" + name }

    /// Flushes the temporary to disk and renames it to the destination
    /// (replacing an existing one only when `overwrite` was given).
    public func commit() throws(CheckpointError) {
        try finished.withLock { (finished) throws(CheckpointError) in
            precondition(!finished, "output committed or aborted twice")
            try moveIntoPlace()
            finished = true
        }
        PendingOutputs.shared.remove(temporary)
    }

    /// The renames of `commit()`, run with `finished` locked.
    private func moveIntoPlace() throws(CheckpointError) {
        syncTree(temporary)
        let fm = FileManager.default
        var existing = stat()
        if lstat(destination, &existing) == 0 {
            guard overwrite else { throw .io(file: destination, problem: "already exists (use --force to replace it)") }
            if OutputPath.exchange(temporary, destination) {
                // The temporary name now holds the old output.
                try? fm.removeItem(atPath: temporary)
            } else {
                let displaced = temporary + ".old"
                guard rename(destination, displaced) == 0 else {
                    throw .io(file: destination, problem: "cannot replace: \(String(cString: strerror(errno)))")
                }
                guard rename(temporary, destination) == 0 else {
                    let reason = String(cString: strerror(errno))
                    _ = rename(displaced, destination)
                    throw .io(file: destination, problem: "cannot move output into place: \(reason)")
                }
                try? fm.removeItem(atPath: displaced)
            }
        } else {
            guard rename(temporary, destination) == 0 else {
                throw .io(file: destination, problem: "cannot move output into place: \(String(cString: strerror(errno)))")
            }
        }
        syncDirectory(parent)
    }

    /// Removes the temporary; does nothing after `commit()`.
    public func abort() {
        finished.withLock { finished in
            guard !finished else { return }
            finished = true
            try? FileManager.default.removeItem(atPath: temporary)
            PendingOutputs.shared.remove(temporary)
        }
    }

    /// Removes temporaries for the same destination left by processes that no
    /// longer exist (a run killed with SIGKILL cannot clean up after itself). An old
    /// output displaced by a replacement that was cut short is put back when the
    /// destination is missing.
    static func removeAbandoned(in parent: String, prefix: String, destination: String) {
        let prefixBytes = Array(prefix.utf8)
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] {
            let nameBytes = Array(name.utf8)
            guard nameBytes.starts(with: prefixBytes) else { continue }
            let rest = String(decoding: nameBytes[prefixBytes.count...], as: UTF8.self)
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]) else { continue }
            guard kill(pid, 0) != 0 && errno == ESRCH else { continue }
            let path = parent + "/" + name
            var info = stat()
            if nameBytes.reversed().starts(with: Array(".old".utf8).reversed()) && lstat(destination, &info) != 0 && rename(path, destination) == 0 { continue }
            try? FileManager.default.removeItem(atPath: path)
        }
    }

    /// Swaps the two names atomically (`renameat2(RENAME_EXCHANGE)`, looked up at run
    /// time as the C library may not declare it); false where that is not supported.
    static func exchange(_ a: String, _ b: String) -> Bool {
        #if os(Linux)
        typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "renameat2") else { return false }
        let renameat2 = unsafeBitCast(symbol, to: RenameAt2.self)
        let renameExchange: UInt32 = 2
        return renameat2(AT_FDCWD, a, AT_FDCWD, b, renameExchange) == 0
        #else
        return false
        #endif
    }

    /// Removes pending temporaries and exits (status 128 + signal number) when
    /// SIGINT or SIGTERM arrives. Also ignores SIGXFSZ, so a write past the file-size limit fails with
    /// EFBIG and is cleaned up like any other write error instead of killing
    /// the process with the temporary left behind. A mapped input that another
    /// process truncates becomes an error line and exit status 1 (see `MappedRegions`).
    public static func installInterruptCleanup() {
        signal(SIGXFSZ, SIG_IGN)
        PendingOutputs.shared.installSignalHandlers()
        MappedRegions.installFaultHandler()
    }

    private func syncTree(_ path: String) {
        if isDirectory {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                syncFile(path + "/" + name)
            }
            syncDirectory(path)
        } else {
            syncFile(path)
        }
    }

    private func syncFile(_ path: String) {
        try? FileDescriptor.open(path, O_RDONLY).sync()
    }

    private func syncDirectory(_ path: String) {
        try? FileDescriptor.open(path, O_RDONLY | O_DIRECTORY).sync()
    }
}

/// The process-wide set of temporaries not yet committed.
final class PendingOutputs: Sendable {
    static let shared = PendingOutputs()
    private let paths = Locked(Set<String>())
    private let sources = Locked([DispatchSourceSignal]())

    func add(_ path: String) {
        paths.withLock { _ = $0.insert(path) }
    }

    func remove(_ path: String) {
        paths.withLock { _ = $0.remove(path) }
    }

    func installSignalHandlers() {
        sources.withLock { sources in
            guard sources.isEmpty else { return }
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler { [weak self] in
                    self?.removeAll()
                    // Exit at once with the shell's status for a signal death; re-raising
                    // would wait on threads that have the signal blocked.
                    _exit(128 + sig)
                }
                source.resume()
                sources.append(source)
            }
        }
    }

    func removeAll() {
        let pending = paths.withLock { paths in
            defer { paths.removeAll() }
            return paths
        }
        // Writer threads keep running while the handler works, so a folder can gain a
        // file between being emptied and removed: try again until it is gone.
        for path in pending {
            for _ in 0..<100 {
                try? FileManager.default.removeItem(atPath: path)
                var info = stat()
                if lstat(path, &info) != 0 { break }
            }
        }
    }
}
