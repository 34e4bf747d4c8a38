//! Text from outside (a request body, a file, a header) as it goes into a
//! message or a log line: cut to a length a person can read.

/// How many characters of an outside value a message or log line shows.
pub const SHOWN_CHARS: usize = 200;

/// `text` whole when it is short; else its first [`SHOWN_CHARS`] characters,
/// then `… (N bytes)`. The one helper for every value a message echoes.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// [`clip`] of `text`'s `{:?}` form (quoted and escaped, as messages show values).
pub fn clip_debug(text: &str) -> String {
    match text.char_indices().nth(SHOWN_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_whole_and_long_text_is_cut_with_its_length() {
        assert_eq!(clip("abc"), "abc");
        assert_eq!(clip_debug("a\"b"), "\"a\\\"b\"");
        let long = "é".repeat(1000);
        let cut = clip(&long);
        assert!(cut.starts_with(&"é".repeat(SHOWN_CHARS)) && cut.ends_with("… (2000 bytes)"), "{cut}");
        assert!(clip_debug(&"9".repeat(1 << 20)).ends_with("\"… (1048576 bytes)"));
    }
}
