//! Printing: tables for people, the server's JSON for scripts, times in UTC.

use serde_json::Value;

/// Prints the server's JSON as it came, indented.
pub fn json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A borderless table, easy to read and to `grep`: no frame, no trailing blanks.
/// Cells come from the server, which relays what envoys and users named (file names,
/// users, envoys, messages): every cell is escaped ([`escape`]).
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    for row in rows {
        t.add_row(row.iter().map(|cell| escape(cell)).collect::<Vec<_>>());
    }
    if let Some(first) = t.column_mut(0) {
        first.set_padding((0, 1));
    }
    t.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// `text` safe for a terminal: control characters (escape sequences, newlines, C1
/// codes), invisible formatting characters (bidirectional overrides, zero-width
/// characters, line separators) and the backslash are written as escapes (`\u{1b}`,
/// `\n`, `\\`). The same rule as the envoy's `vigo status`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unprintable(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn unprintable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Unix seconds as `2026-01-31 12:00:00 UTC`.
pub fn when(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// An optional time, or `none` for a missing one.
pub fn when_opt(unix: Option<i64>, none: &str) -> String {
    unix.map_or_else(|| none.to_string(), when)
}

/// How long ago, coarsely: `40s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(unix: i64, now: i64) -> String {
    let secs = now.saturating_sub(unix);
    if secs < 0 {
        return "in the future".to_string();
    }
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Decodes the server's JSON into the shape a command prints; a mismatch means
/// client and server disagree on the API version.
pub fn decode<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).map_err(|e| anyhow::anyhow!("unexpected {what} from the server: {e}"))
}

/// Parses `90s`, `30m`, `24h`, `7d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a duration such as 90s, 30m, 24h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{text}`: unknown unit `{unit}`; use s, m, h or d")),
    };
    match n.checked_mul(scale) {
        Some(0) => Err("a duration of zero would expire at once".to_string()),
        Some(secs) => Ok(secs),
        None => Err(format!("`{text}` is too long")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_cannot_reach_the_terminal_raw() {
        let hostile = "\x1b[2J\x1b[Hok\nUSER FILE\u{9b}1m\u{202e}\\";
        let out = table(&["USER", "FILE"], vec![vec!["alice".into(), hostile.into()]]);
        assert!(out.contains("\\u{1b}[2J\\u{1b}[Hok\\nUSER FILE\\u{9b}1m\\u{202e}\\\\"), "{out}");
        assert!(out.chars().all(|c| c == '\n' || !unprintable(c)), "{out:?}");
        assert_eq!(out.lines().count(), 2, "one header, one row: {out}");
        assert_eq!(escape("plain 日本.txt"), "plain 日本.txt");
    }

    #[test]
    fn durations() {
        for (text, secs) in [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("45", 45)] {
            assert_eq!(parse_duration(text), Ok(secs), "{text}");
        }
        for bad in ["", "h", "5w", "-5m", "0h", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn tables_have_no_frame_nor_trailing_blanks() {
        let t = table(&["NAME", "STATE"], vec![vec!["web-1".into(), "enrolled".into()], vec!["db".into(), "-".into()]]);
        assert_eq!(t, "NAME   STATE\nweb-1  enrolled\ndb     -");
    }

    #[test]
    fn times() {
        assert_eq!(when(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(when(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(when_opt(None, "never"), "never");
        assert_eq!(ago(100, 130), "30s ago");
        assert_eq!(ago(0, 7200), "2h ago");
        assert_eq!(ago(0, 3 * 86400), "3d ago");
        assert_eq!(ago(10, 0), "in the future");
    }
}
