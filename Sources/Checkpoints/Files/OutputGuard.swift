#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// File-system paths compared as the bytes the kernel sees.
///
/// Swift `String` comparison uses canonical equivalence (`"café"` with a
/// precomposed é equals `"cafe\u{301}"`) and grapheme clusters (`"/\u{301}"` is one
/// character, not a `/`), while file systems such as ext4 compare names byte by
/// byte. Every path and name check that decides what may be read or written goes
/// through here, on `Array(path.utf8)` and `realpath(3)` results as bytes.
public enum FilePaths {
    private static let slash = UInt8(ascii: "/")

    /// True for a name that stays inside its folder: not empty, no `/` or NUL byte, not `.` or `..`.
    public static func isPlainFileName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return !bytes.isEmpty && bytes != [0x2E] && bytes != [0x2E, 0x2E] && !bytes.contains(slash) && !bytes.contains(0)
    }

    /// The canonical absolute path of an existing `path` (`realpath(3)`), as bytes.
    public static func resolved(_ path: String) -> [UInt8]? {
        guard let result = realpath(path, nil) else { return nil }
        defer { free(result) }
        return Array(UnsafeRawBufferPointer(start: result, count: strlen(result)))
    }

    /// The absolute, link-free form of `path`, also when it does not exist yet: its
    /// longest existing ancestor resolved, the rest appended (`.` dropped, `..` taken lexically).
    public static func canonical(_ path: String) -> [UInt8] {
        var components = Array(path.utf8).split(separator: slash, omittingEmptySubsequences: true).map(Array.init)
        var prefix: [UInt8] = []
        if Array(path.utf8).first != slash, let cwd = resolved(".") { prefix = cwd }
        // Find the longest leading run of components that exists.
        var rest: [[UInt8]] = []
        while true {
            let candidate = join(prefix, components)
            if let real = resolvedBytes(candidate) {
                var result = real
                for part in rest {
                    if part == [0x2E] { continue }
                    if part == [0x2E, 0x2E] {
                        if let cut = result.lastIndex(of: slash) { result = cut == 0 ? [slash] : Array(result[..<cut]) }
                        continue
                    }
                    if result.last != slash { result.append(slash) }
                    result += part
                }
                return result
            }
            guard let last = components.popLast() else { return join(prefix, rest) }
            rest.insert(last, at: 0)
        }
    }

    /// True when `inner` is `outer` or lies inside it, compared component by component as bytes.
    public static func lies(_ inner: [UInt8], within outer: [UInt8]) -> Bool {
        if inner == outer { return true }
        let base = outer.last == slash ? outer : outer + [slash]
        return inner.count > base.count && inner.starts(with: base)
    }

    /// A path's bytes as text for a message (invalid UTF-8 repaired).
    public static func display(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    private static func join(_ prefix: [UInt8], _ components: [[UInt8]]) -> [UInt8] {
        var result = prefix.isEmpty ? [slash] : prefix
        for part in components {
            if result.last != slash { result.append(slash) }
            result += part
        }
        return result
    }

    private static func resolvedBytes(_ path: [UInt8]) -> [UInt8]? {
        let cString = path.map { CChar(bitPattern: $0) } + [0]
        guard let result = realpath(cString, nil) else { return nil }
        defer { free(result) }
        return Array(UnsafeRawBufferPointer(start: result, count: strlen(result)))
    }
}

/// The rule every command applies to every file or folder it writes: an output may
/// never be an input, hold an input, or lie inside an input folder, whether or not
/// `--force` is given. Replacing or filling it would destroy what is being read.
///
/// Paths are compared resolved (`realpath(3)`, so links and `..` are seen through)
/// and byte by byte (see `FilePaths`); an existing output that is the same file as
/// an input under another name (a hard link) is refused too.
public enum OutputGuard {
    /// Throws when `output` is, holds or lies inside one of `inputs`.
    public static func check(output: String, inputs: [String]) throws(CheckpointError) {
        let target = FilePaths.canonical(output)
        var outputInfo = stat()
        let outputExists = stat(output, &outputInfo) == 0
        for input in inputs {
            let source = FilePaths.canonical(input)
            var inputInfo = stat()
            let sameFile = outputExists && stat(input, &inputInfo) == 0
                && inputInfo.st_dev == outputInfo.st_dev && inputInfo.st_ino == outputInfo.st_ino
            if sameFile || source == target {
                throw .io(file: output, problem: "is an input (\(input)); choose another output")
            }
            if FilePaths.lies(source, within: target) {
                throw .io(file: output, problem: "holds the input \(input); choose another output")
            }
            if FilePaths.lies(target, within: source) {
                throw .io(file: output, problem: "lies inside the input \(input); choose another output")
            }
        }
    }
}
