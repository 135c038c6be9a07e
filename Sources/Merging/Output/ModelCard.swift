/// The README.md written beside a merged model.
public enum ModelCard {
    /// Files copied from the base (or tokenizer source) folder into the output when present.
    public static let configFiles = ["config.json", "generation_config.json"]
    /// Tokenizer files copied from the tokenizer source (the base unless the recipe says otherwise).
    public static let tokenizerFiles = [
        "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json",
        "vocab.json", "merges.txt", "chat_template.jinja",
    ]
    /// The name the recipe is stored under.
    public static let recipeFileName = "merge-config.yml"

    /// A model card naming the method, the inputs and the full recipe.
    public static func text(for plan: MergePlan, recipe: String) -> String {
        var lines = ["---", "tags:", "- merge", "- claire", "---", "", "# Merged model", ""]
        lines.append("Merged with Claire (`merge-tool fuse`) using the **\(plan.method)** method.")
        lines.append("")
        if let base = plan.base { lines.append("Base model: `\(base)`"); lines.append("") }
        lines.append("Models:")
        for model in plan.contributingModels { lines.append("- `\(model.path)`") }
        lines.append("")
        lines.append("## Recipe")
        lines.append("")
        lines.append("```yaml")
        lines.append(recipe.hasSuffix("\n") ? String(recipe.dropLast()) : recipe)
        lines.append("```")
        return lines.joined(separator: "\n") + "\n"
    }
}
