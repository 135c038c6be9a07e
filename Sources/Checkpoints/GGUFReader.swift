/// Reads GGUF files.
public enum GGUFReader {
    /// Opens a mapped GGUF file as a checkpoint.
    public static func open(_ file: MappedFile) throws(CheckpointError) -> Checkpoint {
        throw .io(file: file.path, problem: "GGUF files are not supported by this build")
    }
}
