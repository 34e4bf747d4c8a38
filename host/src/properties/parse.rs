//! The syntax of each value in clusterhost.properties (numbers, durations,
//! names, ports, host lists, signature modes, key ids) and the file's decoding; each parser's error
//! says what it expected.

use std::time::Duration;

/// The longest value the file may hold for any key (a path is at most 4096 bytes).
pub(super) const MAX_VALUE_BYTES: usize = 4096;

pub(super) fn bytes(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = value.parse().map_err(|_| "expected a number of bytes".to_string())?;
    if !(min..=max).contains(&n) {
        return Err(format!("expected a number of bytes between {min} and {max}"));
    }
    Ok(n)
}

/// A comma-separated list of host names (lower-cased), e.g. `admin.example, ch-1.lan`.
pub(super) fn host_names(value: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> =
        value.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()).collect();
    for name in &names {
        let ok = name.len() <= 253 && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
        if !ok {
            return Err(format!(
                "{} is not a host name (letters, digits, '-' and '.'; list several with commas; IP addresses are not needed here)",
                crate::text::clip_debug(name)
            ));
        }
    }
    Ok(names)
}

/// A number of connections, 1 to 65536.
pub(super) fn connections(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        _ => Err("expected a number of connections from 1 to 65536".into()),
    }
}

/// The text as java-properties reads it (Windows-1252 unless a byte order
/// mark says otherwise; malformed bytes replaced), decoded in one go. Its
/// own incremental decoder panics on a file whose end decodes only at end of
/// file (`\xff` alone, a byte order mark then half a character): it polls
/// the finished decoder once more. Valid UTF-8 never ends that way.
pub(super) fn decode(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    encoding_rs::WINDOWS_1252.decode(bytes).0
}

pub(super) fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub(super) fn seconds(value: &str, min: f64, max: f64) -> Result<Duration, String> {
    let n: f64 = value.parse().map_err(|_| "expected a number of seconds".to_string())?;
    if !(min..=max).contains(&n) {
        return Err(format!("expected seconds between {min} and {max}"));
    }
    Ok(Duration::from_secs_f64(n))
}

pub(super) fn name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(value.to_string())
    } else {
        Err("expected 1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

pub(super) fn port(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err("expected a port number from 1 to 65535".into()),
        Ok(port) => Ok(port),
    }
}

pub(super) fn count(value: &str, max: u32) -> Result<u32, String> {
    let n: i64 = value.parse().map_err(|_| "expected a whole number".to_string())?;
    if !(0..=i64::from(max)).contains(&n) {
        return Err(format!("expected a whole number between 0 and {max}"));
    }
    Ok(n as u32)
}

/// `plugins.signature`: `off`, `warn` or `require`.
pub(super) fn signature_mode(value: &str) -> Result<crate::plugins::signature::SignatureMode, String> {
    use crate::plugins::signature::SignatureMode;
    match value.to_ascii_lowercase().as_str() {
        "off" => Ok(SignatureMode::Off),
        "warn" => Ok(SignatureMode::Warn),
        "require" => Ok(SignatureMode::Require),
        _ => Err("expected off, warn or require".into()),
    }
}

/// `plugins.signature.revoked`: minisign key ids, comma-separated (upper-cased).
pub(super) fn key_ids(value: &str) -> Result<Vec<String>, String> {
    let mut ids = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match crate::plugins::signature::parse_key_id(part) {
            Some(id) => ids.push(id),
            None => {
                return Err(format!(
                    "{} is not a minisign key id (16 hex digits, as clusterhost plugins verify prints it); list several with commas",
                    crate::text::clip_debug(part)
                ))
            }
        }
    }
    Ok(ids)
}
