#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Checkpoints

/// LoRA adapters named as merge inputs: an adapter folder (applied to the merge's base),
/// or mergekit's `base+adapter` (applied to the model before the `+`).
public enum AdapterInputs {
    /// The model and adapter of a `base+adapter` name: `path` itself does not exist, and
    /// the part after some `+` is an adapter folder (the first such `+` splits).
    public static func split(_ path: String) -> (base: String, adapter: String)? {
        var info = stat()
        guard stat(path, &info) != 0 else { return nil }
        var index = path.startIndex
        while let plus = path[index...].firstIndex(of: "+") {
            let base = String(path[..<plus]), adapter = String(path[path.index(after: plus)...])
            if !base.isEmpty, LoRAAdapter.isAdapter(adapter) { return (base, adapter) }
            index = path.index(after: plus)
        }
        return nil
    }

    /// The files and folders an input name reads: both parts of `base+adapter`, else the name.
    public static func paths(_ path: String) -> [String] {
        split(path).map { [$0.base, $0.adapter] } ?? [path]
    }
}

/// One model input that is a LoRA adapter: its δ for one tensor, added to its base's.
public struct LoRAInput: Sendable {
    public let adapter: LoRAAdapter
    public let module: LoRAModule
    /// Index of the adapter's weights in `PreparedMerge.checkpoints`.
    public let checkpoint: Int
}
