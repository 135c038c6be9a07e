import Checkpoints

/// User data in JSON Lines, one example per line, with the field names TRL uses:
/// `{"prompt", "response"}` for SFT, `{"prompt", "chosen", "rejected"}` for
/// preferences and `{"text"}` for pretraining. Blank lines are skipped.
public enum JSONLData {
    /// The cap on one line (one example), parsed whole.
    public static let maximumLineSize = 16 << 20

    /// Instruction examples from `path`.
    public static func instructions(_ path: String) throws(TrainingError) -> [InstructionExample] {
        var examples: [InstructionExample] = []
        try forEachLine(path) { (line, object) throws(TrainingError) in
            examples.append(InstructionExample(prompt: try field("prompt", object, path, line),
                                               response: try field("response", object, path, line)))
        }
        guard !examples.isEmpty else { throw .emptyData(file: path, problem: "no {\"prompt\", \"response\"} example") }
        return examples
    }

    /// Preference pairs from `path`.
    public static func preferences(_ path: String) throws(TrainingError) -> [PreferencePair] {
        var pairs: [PreferencePair] = []
        try forEachLine(path) { (line, object) throws(TrainingError) in
            pairs.append(PreferencePair(prompt: try field("prompt", object, path, line),
                                        chosen: try field("chosen", object, path, line),
                                        rejected: try field("rejected", object, path, line)))
        }
        guard !pairs.isEmpty else { throw .emptyData(file: path, problem: "no {\"prompt\", \"chosen\", \"rejected\"} example") }
        return pairs
    }

    /// Pretraining texts from `path`.
    public static func documents(_ path: String) throws(TrainingError) -> [String] {
        var texts: [String] = []
        try forEachLine(path) { (line, object) throws(TrainingError) in texts.append(try field("text", object, path, line)) }
        guard !texts.isEmpty else { throw .emptyData(file: path, problem: "no {\"text\"} example") }
        return texts
    }

    private static func field(_ name: String, _ object: JSONValue, _ path: String, _ line: Int) throws(TrainingError) -> String {
        guard let value = object[name] else { throw .data(file: path, line: line, problem: "missing field \"\(name)\"") }
        guard let text = value.stringValue else {
            throw .data(file: path, line: line, problem: "field \"\(name)\" is not a string")
        }
        return text
    }

    private static func forEachLine(_ path: String, _ body: (Int, JSONValue) throws(TrainingError) -> Void) throws(TrainingError) {
        let file: MappedFile
        do {
            file = try MappedFile(path: path)
        } catch {
            guard case .io(_, let problem) = error else { throw .io(file: path, problem: "cannot read (\(error))") }
            throw .io(file: path, problem: "cannot read: \(problem)")
        }
        let bytes = file.bytes
        var start = 0
        var line = 0
        while start < bytes.count {
            var end = start
            while end < bytes.count && bytes[end] != 0x0A { end += 1 }
            line += 1
            guard end - start <= maximumLineSize else {
                throw .data(file: path, line: line,
                            problem: "line is \(end - start) bytes, more than the \(InputFile.describeSize(maximumLineSize)) a line may have")
            }
            let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<end])  // start ≤ end ≤ bytes.count
            start = end + 1
            if slice.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            guard let text = String(validating: slice, as: UTF8.self) else {
                throw .data(file: path, line: line, problem: "not valid UTF-8")
            }
            let value: JSONValue
            do { value = try JSONParser.parse(text) } catch {
                throw .data(file: path, line: line, problem: "not valid JSON (\(error))")
            }
            guard case .object = value else { throw .data(file: path, line: line, problem: "not a JSON object") }
            try body(line, value)
        }
    }
}
