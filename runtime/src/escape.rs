//! Names that come from untrusted files (shard, tensor and file names) as they appear in
//! messages: control characters escaped (a newline cannot split an error line or forge
//! another) and at most 200 characters.

/// `s` escaped and bounded for a one-line message.
pub fn shown(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == 200 {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A path, escaped as [`shown`].
pub fn path(p: &std::path::Path) -> String {
    shown(&p.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_bounded() {
        assert_eq!(shown("a\nb\rc\u{1b}[31m"), "a\\nb\\rc\\u{1b}[31m");
        assert_eq!(shown("héllo"), "héllo");
        assert_eq!(shown(&"x".repeat(500)).chars().count(), 201);
    }
}
