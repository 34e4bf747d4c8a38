//! Text as a person reads it: values from outside (a request body, a file,
//! a header) cut to a readable length, and times and durations in words
//! instead of epoch milliseconds (JSON keeps the numbers).

use std::time::Duration;

/// How many characters of an outside value a message or log line shows.
pub const SHOWN_CHARS: usize = 200;

/// `text` whole when it is short; else its first [`SHOWN_CHARS`] characters,
/// then `… (N bytes)`. The one helper for every value a message echoes.
pub fn clip(text: &str) -> String {
    clip_at(text, SHOWN_CHARS)
}

/// [`clip`] at `chars` characters instead of [`SHOWN_CHARS`] (for a kept
/// reason, whose advice at its end should survive).
pub fn clip_at(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
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

/// A time in milliseconds since the Unix epoch as a person reads it: the
/// local date and time to the millisecond, `2026-12-01 20:15:03.120`. The
/// one helper for every time shown in text (CLI, console, reasons).
pub fn local_time(ms: u64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms.min(i64::MAX as u64) as i64) {
        Some(at) => at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => format!("{ms} ms after the epoch"),
    }
}

/// A duration as a person reads it: `350 ms`, `1.2 s`, `4 min 05 s`, `2 h 03 min`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    let secs = d.as_secs();
    if ms < 1000 {
        format!("{ms} ms")
    } else if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, secs % 3600 / 60)
    }
}

/// [`duration`] of a count of milliseconds.
pub fn duration_ms(ms: u64) -> String {
    duration(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_local_dates_to_the_millisecond() {
        let shown = local_time(1_796_001_791_772);
        // The zone is the machine's; the shape and the milliseconds are not.
        assert_eq!(shown.len(), "2026-11-30 01:23:11.772".len(), "{shown}");
        assert!(shown.ends_with(":11.772") && shown.starts_with("2026-11-"), "{shown}");
        assert!(!local_time(u64::MAX).is_empty());
    }

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        assert_eq!(duration(Duration::from_millis(350)), "350 ms");
        assert_eq!(duration(Duration::from_millis(1250)), "1.2 s");
        assert_eq!(duration(Duration::from_secs(245)), "4 min 05 s");
        assert_eq!(duration_ms(7_380_000), "2 h 03 min");
    }

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
