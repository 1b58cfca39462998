//! Units shared by every layer: durations and sizes as workflows write
//! them and as people read them.

use std::time::Duration;

/// `1.5s`, `2m`, ... for messages.
pub fn humanize(duration: Duration) -> String {
    if duration < Duration::from_millis(1) {
        return "<1ms".to_string();
    }
    humantime::format_duration(Duration::from_millis(duration.as_millis() as u64)).to_string()
}

/// The longest duration a workflow may give: deadlines are computed as
/// "now + duration", which must not overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// Parse a duration such as `30s`, `10m`, `1h 30m` or `250ms` (more than zero, at most
/// [`MAX_DURATION`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("invalid duration '': expected e.g. 30s, 10m, 1h".to_string());
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("invalid duration '{s}': must be more than zero")),
        Ok(d) if d > MAX_DURATION => Err(format!(
            "invalid duration '{s}': longer than the longest allowed, 100 years"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "invalid duration '{s}': {e} (expected e.g. 30s, 10m, 1h)"
        )),
    }
}

/// Parse a size: `1048576`, `512KiB`, `256MiB`, `1GiB`, `10MB`, `1G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 256MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gi" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "'{text}': unknown unit '{other}' (use B, KiB, MiB, GiB)"
            ))
        }
    };
    number
        .checked_mul(factor)
        .filter(|bytes| *bytes > 0)
        .ok_or_else(|| format!("'{text}' is not a usable size"))
}

/// Serde helper for durations: a string as written (`30s`), or a bare
/// number of milliseconds (`300000`, as the seed systems write timeouts),
/// kept as the text `300000ms`; `None` when absent.
pub fn duration_text<'de, D>(de: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let value = Option::<serde_json::Value>::deserialize(de)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => match n.as_u64() {
            Some(ms) => Ok(Some(format!("{ms}ms"))),
            None => Err(serde::de::Error::custom(format!(
                "expected a duration such as 30s, or a whole number of milliseconds, not {n}"
            ))),
        },
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a duration such as 30s (or a number of milliseconds), not {other}"
        ))),
    }
}

/// Serde helper for sizes and versions written either as a string or as a
/// number (`memory: 1048576`, `memory: 1MiB`): the text, `None` when absent.
pub fn string_or_number<'de, D>(de: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::Deserialize;
    let value = Option::<serde_json::Value>::deserialize(de)?;
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "expected a string or number, not {other}"
        ))),
    }
}
