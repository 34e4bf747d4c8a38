//! A properties file edited line by line, as the admin API's PATCH does:
//! the keys a file sets, and a text with some keys replaced or dropped and
//! every other line (comments included) kept.

use java_properties::{LineContent, PropertiesIter};

use super::parse::decode;

/// The keys `bytes` (properties text) sets, known or not; none if it does not parse.
pub fn file_keys(bytes: &[u8]) -> std::collections::BTreeSet<String> {
    // Decoded first, as `Properties::parse` does (see `decode`).
    let text = decode(bytes);
    PropertiesIter::new_with_encoding(text.as_bytes(), encoding_rs::UTF_8)
        .filter_map(Result::ok)
        .filter_map(|line| match line.consume_content() {
            LineContent::KVPair(key, _) => Some(key),
            LineContent::Comment(_) => None,
        })
        .collect()
}

/// `text` with `edits` applied, every other line kept: a key set to
/// `Some(value)` replaces its first line (or is appended), `None` (and
/// any further line of an edited key) is dropped.
pub fn patch_text(text: &str, edits: &[(String, Option<String>)]) -> String {
    let mut out = String::new();
    let mut done = std::collections::BTreeSet::new();
    for entry in logical_lines(text) {
        let key = file_keys(entry.as_bytes()).into_iter().next();
        match key.and_then(|k| edits.iter().find(|(e, _)| *e == k)) {
            None => out.push_str(entry),
            Some((key, value)) => {
                if let (Some(value), true) = (value, done.insert(key.clone())) {
                    out.push_str(&format_line(key, value));
                }
            }
        }
    }
    for (key, value) in edits {
        if let (Some(value), false) = (value, done.contains(key)) {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format_line(key, value));
        }
    }
    out
}

/// `text` cut into logical lines, each with its line ends: a line whose
/// last backslash is not escaped continues on the next one, except in a
/// comment.
fn logical_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let (mut start, mut continued) = (0, false);
    for physical in text.split_inclusive('\n') {
        let end = start_of(text, physical) + physical.len();
        let content = physical.trim_end_matches(['\n', '\r']);
        let comment = !continued && content.trim_start().starts_with(['#', '!']);
        let backslashes = content.len() - content.trim_end_matches('\\').len();
        continued = !comment && backslashes % 2 == 1;
        if !continued {
            lines.push(&text[start..end]);
            start = end;
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

/// Where `part` (a slice of `text`) starts in `text`.
fn start_of(text: &str, part: &str) -> usize {
    part.as_ptr() as usize - text.as_ptr() as usize
}

/// `key = value`, escaped as the format needs, with a line end.
fn format_line(key: &str, value: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        escape_char(&mut out, c, true, i == 0);
    }
    out.push_str(" = ");
    for (i, c) in value.chars().enumerate() {
        escape_char(&mut out, c, false, i == 0);
    }
    out.push('\n');
    out
}

fn escape_char(out: &mut String, c: char, in_key: bool, first: bool) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        ' ' if in_key || first => out.push_str("\\ "),
        '=' | ':' if in_key => {
            out.push('\\');
            out.push(c);
        }
        '#' | '!' if first && in_key => {
            out.push('\\');
            out.push(c);
        }
        c if c.is_control() || !c.is_ascii() => {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::parse;
    use super::*;

    #[test]
    fn a_patch_keeps_every_other_line_and_escapes_values() {
        let text = "# head\ncluster.startup.retry.count = 7\ncluster.config.directory = /etc/\\\n    clusterhost\n! bang \\\nplugins.poll.seconds = 3\ncluster.startup.retry.count = 8\n";
        let edits = vec![
            ("cluster.startup.retry.count".to_string(), Some("9".to_string())),
            ("cluster.config.directory".to_string(), None),
            ("cluster.config.file".to_string(), Some(" gossip é\\x.toml".to_string())),
        ];
        let patched = patch_text(text, &edits);
        assert_eq!(
            patched,
            "# head\ncluster.startup.retry.count = 9\n! bang \\\nplugins.poll.seconds = 3\ncluster.config.file = \\ gossip \\u00e9\\\\x.toml\n"
        );
        let (p, _) = parse(&patched).unwrap();
        assert_eq!(p.startup_retry_count, 9);
        assert_eq!(p.poll_interval, Duration::from_secs(3));
        assert_eq!(p.config_file.as_deref(), Some("gossip é\\x.toml"), "values are trimmed by the parser");
        assert_eq!(
            patch_text("a.b = 1", &[("clustering.enabled".into(), Some("false".into()))]),
            "a.b = 1\nclustering.enabled = false\n"
        );
    }
}
