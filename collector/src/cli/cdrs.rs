//! `collector cdrs`: queries stored CDRs over `collector.v1.Query` and prints them as a
//! table, JSON lines (proto field names) or CSV (RFC 4180). Filters: time range, subject
//! (a number is hashed here under every key, see [`super::connect::SubjectArgs`]),
//! disposition, agent, minimum loss, maximum MOS. With `--by-call` it asks for calls
//! (`ListCalls`) and prints them with [`crate::callview::print`]: each call, then its legs.
use std::{
    io::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use collector_proto::v1::{query_client::QueryClient, CdrQuery, Disposition};
use tokio_stream::StreamExt as _;

pub use super::output::OutputFormat;
use super::{output::print_cdrs, CdrsArgs};
use crate::callview;

/// Runs the verb.
pub fn run(args: CdrsArgs) -> anyhow::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let call_format = match (args.by_call, args.output) {
        (false, _) => None,
        (true, OutputFormat::Table) => Some(callview::Format::Table),
        (true, OutputFormat::Json) => Some(callview::Format::Json),
        (true, OutputFormat::Csv) => bail!("--by-call prints a table or json, not csv"),
    };
    let pseudonyms = args.subject.pseudonyms(&mut io::stdin().lock())?;
    let query = build_query(&args, pseudonyms, now_ms)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(format) = call_format {
        let calls = rt.block_on(async {
            let mut client = QueryClient::new(args.conn.connect().await?)
                .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
            let mut stream = client
                .list_calls(query)
                .await
                .context("querying calls")?
                .into_inner();
            let mut out = Vec::new();
            while let Some(c) = stream.next().await {
                out.push(c.context("receiving calls")?);
            }
            anyhow::Ok(out)
        })?;
        return write_out(|w| callview::print(w, &calls, format));
    }
    let cdrs = rt.block_on(async {
        let mut client = QueryClient::new(args.conn.connect().await?)
            .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
        let mut stream = client
            .list_cdrs(query)
            .await
            .context("querying CDRs")?
            .into_inner();
        let mut out = Vec::new();
        while let Some(c) = stream.next().await {
            out.push(c.context("receiving CDRs")?);
        }
        anyhow::Ok(out)
    })?;
    write_out(|w| print_cdrs(w, &cdrs, args.output))
}

/// Runs `print` over buffered stdout.
fn write_out(
    print: impl FnOnce(&mut io::BufWriter<io::StdoutLock<'static>>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut w = io::BufWriter::new(io::stdout().lock());
    match print(&mut w).and_then(|()| w.flush()) {
        // `collector cdrs | head` closing the pipe early is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Turns the flags into a query (the subject already turned into `pseudonyms`).
pub fn build_query(
    args: &CdrsArgs,
    pseudonyms: Vec<String>,
    now_ms: u64,
) -> anyhow::Result<CdrQuery> {
    let time = |v: &Option<String>| -> anyhow::Result<u64> {
        v.as_deref().map_or(Ok(0), |s| parse_time_ms(s, now_ms))
    };
    let (start_from_ms, start_to_ms) = (time(&args.since)?, time(&args.until)?);
    if start_to_ms != 0 && start_to_ms <= start_from_ms {
        bail!("--until must be later than --since");
    }
    let disposition = match &args.disposition {
        Some(d) => parse_disposition(d)? as i32,
        None => 0,
    };
    Ok(CdrQuery {
        start_from_ms,
        start_to_ms,
        pseudonyms,
        disposition,
        agent_id: args.agent.clone().unwrap_or_default(),
        min_loss_pct: args.min_loss,
        max_mos: args.max_mos,
        limit: args.limit,
        tenant: args.tenant.clone(),
        ..Default::default()
    })
}

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

/// `answered`, `no-answer`, `NO_ANSWER`, `DISPOSITION_BUSY`... → the enum.
pub fn parse_disposition(s: &str) -> anyhow::Result<Disposition> {
    let norm = s.trim().to_ascii_uppercase().replace('-', "_");
    let full = if norm.starts_with("DISPOSITION_") {
        norm
    } else {
        format!("DISPOSITION_{norm}")
    };
    match Disposition::from_str_name(&full) {
        Some(Disposition::Unspecified) | None => bail!(
            "unknown disposition {s:?}: use answered, busy, no-answer, cancelled, failed or rejected"
        ),
        Some(d) => Ok(d),
    }
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]
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
    fn dispositions_accept_the_usual_spellings() {
        assert_eq!(
            parse_disposition("answered").unwrap(),
            Disposition::Answered
        );
        assert_eq!(
            parse_disposition("no-answer").unwrap(),
            Disposition::NoAnswer
        );
        assert_eq!(
            parse_disposition("DISPOSITION_BUSY").unwrap(),
            Disposition::Busy
        );
        assert!(parse_disposition("unspecified").is_err());
        assert!(parse_disposition("hung").is_err());
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

    fn args() -> CdrsArgs {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "collector",
            "cdrs",
            "--since",
            "1h",
            "--until",
            "2001-09-09T01:46:40Z",
            "--disposition",
            "busy",
            "--agent",
            "sbc1",
            "--min-loss",
            "2.5",
            "--max-mos",
            "3.6",
            "--limit",
            "5",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Cdrs(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn by_call_is_a_flag_that_leaves_the_query_alone() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(["collector", "cdrs", "--by-call", "-o", "json"])
            .unwrap();
        let crate::cli::Command::Cdrs(a) = cli.command else {
            panic!("not cdrs");
        };
        assert!(a.by_call);
        assert_eq!(a.output, OutputFormat::Json);
        assert!(!args().by_call);
        // The filters (and the limit, which counts calls) go into the same CdrQuery.
        let q = build_query(&a, vec!["P-x".into()], 0).unwrap();
        assert_eq!(q.pseudonyms, ["P-x"]);
    }

    #[test]
    fn flags_become_the_query() {
        // 2001-09-09T01:46:40Z is Unix time 1_000_000_000 (`date -u -d @1000000000`).
        let q = build_query(&args(), vec!["P-x".into(), "P-y".into()], 999_000_000_000).unwrap();
        assert_eq!(q.start_from_ms, 999_000_000_000 - 3_600_000);
        assert_eq!(q.start_to_ms, 1_000_000_000_000);
        assert_eq!(q.pseudonyms, ["P-x", "P-y"]);
        assert_eq!(q.disposition, Disposition::Busy as i32);
        assert_eq!(q.agent_id, "sbc1");
        assert_eq!((q.min_loss_pct, q.max_mos), (Some(2.5), Some(3.6)));
        assert_eq!(q.limit, 5);
        // --until before --since is refused.
        assert!(build_query(&args(), vec![], 2_000_000_000_000).is_err());
        assert!(parse_time_ms("2001-13-01T00:00:00Z", 0).is_err());
    }
}
