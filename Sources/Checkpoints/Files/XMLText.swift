/// Text written into an XML document (the SVG plots): markup characters as entities,
/// and the control characters XML 1.0 forbids even escaped as spaces.
public enum XMLText {
    /// `text` safe inside an element or a quoted attribute value.
    public static func escape(_ text: String) -> String {
        var out = ""
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default:
                if c.value < 0x20 && c != "\t" { out += " " } else { out.unicodeScalars.append(c) }
            }
        }
        return out
    }
}
