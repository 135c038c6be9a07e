import Checkpoints

/// A recipe's `chat_template`: a known template name or a literal Jinja template,
/// written into the output's tokenizer_config.json.
public enum ChatTemplate {
    /// Templates known by name, written from the formats' published turn markers.
    static let named: [String: String] = [
        // ChatML: <|im_start|>role, newline, content, <|im_end|>, newline.
        "chatml": "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
        // Llama 3: the BOS token once, then per turn a role header, a blank line, the
        // trimmed content and <|eot_id|>.
        "llama3": "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
    ]

    /// The names accepted, sorted.
    public static var names: [String] { named.keys.sorted() }

    /// The template a recipe value stands for: a known name, or the value itself when
    /// it reads as a template (at least 20 characters holding `{`, as mergekit requires);
    /// nil otherwise.
    public static func template(for value: String) -> String? {
        if let template = named[value] { return template }
        guard value.count >= 20, value.contains("{") else { return nil }
        return value
    }

    /// `config` (a tokenizer_config.json) with its `chat_template` set to `template`,
    /// replacing any there, or added at the end.
    public static func settingTemplate(_ template: String, in config: JSONValue) -> JSONValue? {
        guard case .object(var members) = config else { return nil }
        if let i = members.firstIndex(where: { $0.key == "chat_template" }) {
            members[i].value = .string(template)
        } else {
            members.append((key: "chat_template", value: .string(template)))
        }
        return .object(members)
    }
}
