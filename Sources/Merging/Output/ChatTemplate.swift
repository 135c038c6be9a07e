import Checkpoints
import Foundation

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
        // Alpaca: an optional system text, then "### Instruction:", "### Input:" (a
        // user_context turn) and "### Response:" sections separated by blank lines.
        "alpaca": "{% set system = messages | selectattr('role', 'equalto', 'system') | list %}"
            + "{% if system %}{{ (system | last).content | trim }}{{ '\\n\\n' }}{% endif %}"
            + "{% for message in messages if message['role'] != 'system' %}"
            + "{% if message['role'] == 'user' %}{{ '### Instruction:\\n' }}"
            + "{% elif message['role'] == 'user_context' %}{{ '### Input:\\n' }}"
            + "{% else %}{{ '### Response:\\n' }}{% endif %}"
            + "{{ message['content'] | trim }}{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endfor %}"
            + "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}{{ '\\n\\n### Response:\\n' }}{% endif %}",
        // Mistral instruct: the BOS token, then [INST] user [/INST] and the assistant's
        // reply closed by the EOS token; a system message opens the first user turn.
        "mistral": "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}{% set turns = messages[1:] %}"
            + "{% else %}{% set turns = messages %}{% endif %}{{ bos_token }}"
            + "{% for message in turns %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            + "{{ raise_exception('roles must alternate user/assistant after an optional system message') }}{% endif %}"
            + "{% if message['role'] == 'user' %}{% if loop.first and system is defined %}"
            + "{{ ' [INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}"
            + "{% else %}{{ ' [INST] ' + message['content'] + ' [/INST]' }}{% endif %}"
            + "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}",
        // EXAONE: [|role|] before each turn; user turns end with a newline, the others
        // with [|endofturn|] and a newline; an empty system turn when none is given.
        "exaone": "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}{{ '[|system|][|endofturn|]\\n' }}{% endif %}"
            + "{{ '[|' + message['role'] + '|]' + message['content'] }}"
            + "{% if message['role'] == 'user' %}{{ '\\n' }}{% else %}{{ '[|endofturn|]\\n' }}{% endif %}{% endfor %}"
            + "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}",
    ]

    /// The value that picks the template most of the recipe's models have.
    public static let automatic = "auto"

    /// The names accepted, sorted (`auto` among them).
    public static var names: [String] { (Array(named.keys) + [automatic]).sorted() }

    /// `auto`: the chat template most of `models` have (a tokenizer_config.json's
    /// `chat_template`, else a chat_template.jinja), compared without surrounding white
    /// space; a tie goes to the first model's. nil when none has one.
    static func plurality(of models: [String], followSymlinks: Bool) -> String? {
        var counts: [String: Int] = [:]
        var order: [String] = []
        for model in models {
            let folder = AdapterInputs.split(model)?.base ?? model
            var found: String?
            if let path = try? HFFolder.sideFile("tokenizer_config.json", in: folder, followSymlinks: followSymlinks),
               FileManager.default.fileExists(atPath: path), let config = try? readJSONFile(path, rejectDuplicateKeys: false) {
                found = config["chat_template"]?.stringValue
            }
            if found == nil, let path = try? HFFolder.sideFile("chat_template.jinja", in: folder, followSymlinks: followSymlinks),
               let bytes = try? InputFile.readAll(path, cap: InputFile.maximumJSONSize, what: "a chat template") {
                found = String(validating: bytes, as: UTF8.self)
            }
            guard let template = found?.trimmingCharacters(in: .whitespacesAndNewlines), !template.isEmpty else { continue }
            if counts[template] == nil { order.append(template) }
            counts[template, default: 0] += 1
        }
        var best: String?
        for template in order where best == nil || counts[template]! > counts[best!]! { best = template }
        return best
    }

    /// The template a recipe value stands for: a known name, or the value itself when
    /// it reads as a template (at least 20 characters holding `{`, as mergekit requires);
    /// nil otherwise.
    public static func template(for value: String) -> String? {
        if value == automatic { return automatic }
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
