//! Times as the command line and the console read and print them: RFC 3339 or a duration
//! back from now in; UTC out, to the second (`2023-11-14T22:13:20Z`), to the millisecond
//! (`…:20.123Z`) or for tables (`2023-11-14 22:13:20.123`). `-` for 0 ("did not happen").
use anyhow::{bail, Context as _};

/// A point in time: an RFC 3339 time, or a duration (`1h`) before `now_ms`.
pub fn parse_time_ms(s: &str, now_ms: u64) -> anyhow::Result<u64> {
    if s.starts_with(|c: char| c.is_ascii_digit()) && s.contains('-') {
        let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{s:?} is not an RFC 3339 time"))?;
        let ms = t.unix_timestamp_nanos() / 1_000_000;
        return u64::try_from(ms).with_context(|| format!("{s:?} is before 1970"));
    }
    Ok(now_ms.saturating_sub(parse_duration_ms(s)?))
}

/// `90s`, `30m`, `1h`, `7d`, `2w` → milliseconds.
pub fn parse_duration_ms(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("duration {s:?} must start with a number"))?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => bail!("duration {s:?} needs a unit: s, m, h, d or w"),
    };
    n.checked_mul(unit_ms)
        .with_context(|| format!("duration {s:?} is too long"))
}

/// Unix ms → `YYYY-MM-DDTHH:MM:SSZ` (UTC), or `-` for 0 ("did not happen").
pub fn format_time(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → proleptic Gregorian (year, month, day); H. Hinnant's
/// `civil_from_days`, restricted to dates on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Unix ms → `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), or `-` for 0.
pub fn format_time_ms(unix_ms: u64) -> String {
    let s = format_time(unix_ms);
    match s.strip_suffix('Z') {
        Some(base) => format!("{base}.{:03}Z", unix_ms % 1000),
        None => s,
    }
}

/// `ms` (Unix ms) as `YYYY-MM-DD HH:MM:SS.mmm` UTC; `-` for 0.
pub fn fmt_time(ms: u64) -> String {
    if ms == 0 {
        return "-".to_owned();
    }
    let fmt = time::format_description::parse_borrowed::<2>(
        "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3]",
    );
    match (
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000),
        fmt,
    ) {
        (Ok(t), Ok(f)) => t.format(&f).unwrap_or_else(|_| ms.to_string()),
        _ => ms.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn durations_and_their_errors() {
        assert_eq!(parse_duration_ms("1h").unwrap(), 3_600_000);
        assert_eq!(parse_duration_ms("30m").unwrap(), 1_800_000);
        assert_eq!(parse_duration_ms("7d").unwrap(), 604_800_000);
        assert_eq!(parse_duration_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("2w").unwrap(), 1_209_600_000);
        assert!(parse_duration_ms("1").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("1y").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }

    #[test]
    fn times_are_utc_iso8601() {
        // Reference values: `date -u -d @0` and `date -u -d @1700000000`,
        // and 2000-02-29 (leap day) = 951782400 s.
        assert_eq!(format_time(1), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_time(0), "-");
    }

    #[test]
    fn milliseconds_and_tables() {
        assert_eq!(
            format_time_ms(1_700_000_000_123),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(fmt_time(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(
            (format_time_ms(0).as_str(), fmt_time(0).as_str()),
            ("-", "-")
        );
    }
}
