//! Output manners shared by every tool: stdout is data, stderr is messages;
//! `--json` is JSON Lines with a `type` field; colour only on a terminal and
//! never with `NO_COLOR`; a closed pipe (`| head`) is not an error.

use std::io::{self, IsTerminal, Write};

/// True when stdout is a terminal.
pub fn stdout_is_tty() -> bool {
    io::stdout().is_terminal()
}

/// True when stderr is a terminal (progress goes there).
pub fn stderr_is_tty() -> bool {
    io::stderr().is_terminal()
}

/// Colour on stdout: only on a terminal, and never when `NO_COLOR` is set
/// to anything non-empty (<https://no-color.org>).
pub fn color_enabled() -> bool {
    stdout_is_tty() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes one JSON Lines record: `{"type": kind, ...fields}` and a newline,
/// flushed so a consumer sees it at once.
pub fn json_line(out: &mut impl Write, kind: &str, fields: serde_json::Value) -> io::Result<()> {
    let mut obj = serde_json::Map::new();
    obj.insert("type".into(), serde_json::Value::String(kind.into()));
    if let serde_json::Value::Object(m) = fields {
        for (k, v) in m {
            if k != "type" {
                obj.insert(k, v);
            }
        }
    }
    serde_json::to_writer(&mut *out, &serde_json::Value::Object(obj))?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Wraps text in an ANSI colour when `enabled`.
pub fn paint(text: &str, color: Color, enabled: bool) -> String {
    if !enabled {
        return text.to_string();
    }
    let code = match color {
        Color::Green => "32",
        Color::Yellow => "33",
        Color::Red => "31",
        Color::Magenta => "35",
        Color::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The few colours we use.
#[derive(Debug, Clone, Copy)]
pub enum Color {
    /// OK.
    Green,
    /// Warning.
    Yellow,
    /// Critical.
    Red,
    /// Unknown.
    Magenta,
    /// Less important text.
    Dim,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_puts_type_first_and_ends_with_newline() {
        let mut buf = Vec::new();
        json_line(
            &mut buf,
            "check",
            serde_json::json!({"name": "disk", "type": "ignored"}),
        )
        .unwrap();
        let s = String::from_utf8(buf).unwrap();
        assert!(s.starts_with("{\"type\":\"check\""), "{s}");
        assert!(s.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["type"], "check");
        assert_eq!(v["name"], "disk");
    }

    #[test]
    fn paint_is_plain_when_disabled() {
        assert_eq!(paint("OK", Color::Green, false), "OK");
        assert_eq!(paint("OK", Color::Green, true), "\x1b[32mOK\x1b[0m");
    }
}
