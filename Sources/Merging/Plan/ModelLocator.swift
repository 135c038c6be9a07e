#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Checkpoints
import Foundation

/// Finds the model a recipe names: a local path, or a Hugging Face hub ID (`org/name`,
/// or `org/name@revision`) that is already in the local hub cache. Nothing is fetched.
///
/// The cache keeps a repository as `models--org--name/`, with `snapshots/<commit>/`
/// holding the files (links to `../../blobs/<hash>`) and `refs/<branch>` naming the
/// commit a branch points at.
public struct ModelLocator: Sendable {
    /// The hub cache folder searched.
    public var cacheFolder: String

    /// The longest `refs/<revision>` file read; a ref holds a 40-digit commit hash.
    static let maximumRefSize = 1024

    /// A locator searching `cacheFolder`.
    public init(cacheFolder: String) {
        self.cacheFolder = cacheFolder
    }

    /// A locator searching the cache the Hugging Face libraries use in `environment`.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.init(cacheFolder: Self.cacheFolder(environment: environment))
    }

    /// `HF_HUB_CACHE` (or its older name `HUGGINGFACE_HUB_CACHE`), else `HF_HOME/hub`,
    /// else `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    public static func cacheFolder(environment: [String: String]) -> String {
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        if let folder = value("HF_HUB_CACHE") ?? value("HUGGINGFACE_HUB_CACHE") { return folder }
        if let home = value("HF_HOME") { return home + "/hub" }
        let cache = value("XDG_CACHE_HOME") ?? ((value("HOME") ?? NSHomeDirectory()) + "/.cache")
        return cache + "/huggingface/hub"
    }

    /// A hub ID split into repository and revision; nil when `name` does not have the
    /// shape `org/name[@revision]` (letters, digits, `.`, `_`, `-`; a revision may hold `/`).
    public static func hubID(_ name: String) -> (repository: String, revision: String)? {
        let parts = name.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let repository = String(parts[0])
        let revision = parts.count == 2 ? String(parts[1]) : "main"
        let components = repository.split(separator: "/", omittingEmptySubsequences: false)
        guard components.count == 2, components.allSatisfy(isPlainComponent) else { return nil }
        let revisionComponents = revision.split(separator: "/", omittingEmptySubsequences: false)
        guard revisionComponents.allSatisfy(isPlainComponent) else { return nil }
        return (repository, revision)
    }

    private static func isPlainComponent(_ part: Substring) -> Bool {
        guard !part.isEmpty, part != ".", part != ".." else { return false }
        return part.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-")
        }
    }

    /// Why a name could not be found.
    public enum Failure: Error, Equatable, Sendable {
        /// A hub ID with no usable snapshot in the cache; `looked` is the path searched.
        case notCached(name: String, looked: String)
    }

    /// The path of the model `name`: `name` itself when something exists there or it is
    /// no hub ID; otherwise the cached snapshot of the hub ID.
    public func locate(_ name: String) throws(Failure) -> String {
        var info = stat()
        if stat(name, &info) == 0 { return name }
        if let plus = name.firstIndex(of: "+") {
            // mergekit's `model+adapter`: each part found on its own.
            return try locate(String(name[..<plus])) + "+" + locate(String(name[name.index(after: plus)...]))
        }
        guard let (repository, revision) = Self.hubID(name) else { return name }
        let repoFolder = cacheFolder + "/models--" + repository.replacingOccurrences(of: "/", with: "--")
        let commit: String
        if Self.isCommitHash(revision) {
            commit = revision
        } else {
            let refPath = repoFolder + "/refs/" + revision
            guard let bytes = try? InputFile.readAll(refPath, cap: Self.maximumRefSize, what: "a hub ref"),
                  let text = String(validating: bytes, as: UTF8.self),
                  case let hash = text.trimmingCharacters(in: .whitespacesAndNewlines), Self.isCommitHash(hash)
            else {
                throw .notCached(name: name, looked: refPath)
            }
            commit = hash
        }
        let snapshot = repoFolder + "/snapshots/" + commit
        guard stat(snapshot, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw .notCached(name: name, looked: snapshot)
        }
        return snapshot
    }

    /// Forty lower-case hexadecimal digits, as the hub names commits.
    static func isCommitHash(_ text: String) -> Bool {
        text.utf8.count == 40 && text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}

extension ModelLocator.Failure: CustomStringConvertible {
    public var description: String {
        switch self {
        case .notCached(let name, let looked):
            return "model '\(name)' is neither a local path nor in the Hugging Face cache (looked for \(looked))"
        }
    }
}
