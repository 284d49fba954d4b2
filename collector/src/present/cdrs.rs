//! The CDR printer every verb shares (`collector cdrs`, `collector replay`): one
//! `-o table|json|csv` (aligned columns with the media of each direction; JSON lines with
//! the proto field names; RFC 4180 CSV of the billing columns, `destination_prefix` last so
//! the columns before it keep their places). Calls (`--by-call`) are
//! printed by [`crate::callview::print`].
use std::io::{self, Write};

use anyhow::bail;
use collector_proto::v1::{Cdr, Disposition, MediaDirection, MediaLeg};

use super::times::{fmt_time, format_time};

/// How CDRs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON object per line, with the proto field names.
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

/// The CSV columns (also the web console's result table).
pub const COLUMNS: [&str; 12] = [
    "start",
    "agent",
    "caller",
    "callee",
    "disposition",
    "code",
    "duration_s",
    "billable_s",
    "min_mos",
    "max_loss_pct",
    "worst_10s_mos",
    "destination_prefix",
];

/// The CSV cells of one CDR, in [`COLUMNS`] order.
pub fn cells(c: &Cdr) -> [String; 12] {
    let user = |p: &Option<collector_proto::v1::Party>| {
        p.as_ref().map_or_else(String::new, |p| p.user.clone())
    };
    let disposition = c.disposition();
    let name = disposition
        .as_str_name()
        .trim_start_matches("DISPOSITION_")
        .to_ascii_lowercase();
    // The lowest score of any leg (0 means not scored).
    let lowest =
        |f: fn(&MediaLeg) -> f64| c.media.iter().map(f).filter(|m| *m > 0.0).reduce(f64::min);
    let mos = lowest(|m| m.mos);
    let loss = c.media.iter().map(|m| m.loss_pct).reduce(f64::max);
    let worst = lowest(|m| m.min_interval_mos);
    [
        format_time(c.start_time_ms),
        c.agent_id.clone(),
        user(&c.caller),
        user(&c.callee),
        name,
        c.final_code.to_string(),
        format!("{:.1}", c.duration_ms as f64 / 1000.0),
        format!("{:.1}", c.billable_ms as f64 / 1000.0),
        mos.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
        loss.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
        worst.map_or_else(|| "-".into(), |v| format!("{v:.2}")),
        c.destination_prefix.clone(),
    ]
}

/// RFC 4180 field: quoted when it holds a comma, quote or line break; quotes doubled.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
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

/// Prints `cdrs` in `format`: the one CDR printer of every verb.
pub fn print_cdrs<W: Write>(w: &mut W, cdrs: &[Cdr], format: OutputFormat) -> io::Result<()> {
    match format {
        OutputFormat::Json => {
            for c in cdrs {
                serde_json::to_writer(&mut *w, c)?;
                writeln!(w)?;
            }
        }
        OutputFormat::Csv => {
            writeln!(w, "{}", COLUMNS.join(","))?;
            for c in cdrs {
                let row: Vec<String> = cells(c).iter().map(|s| csv_field(s)).collect();
                writeln!(w, "{}", row.join(","))?;
            }
        }
        OutputFormat::Table => w.write_all(render_table(cdrs).as_bytes())?,
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn direction_summary(legs: &[&MediaLeg]) -> String {
    // The audio stream of the direction: the leg with the most packets.
    match legs
        .iter()
        .filter(|l| l.codec != "telephone-event")
        .max_by_key(|l| l.packets)
    {
        None => "-".to_owned(),
        Some(l) => format!(
            "{}p {:.1}% {:.2}ms {}",
            l.packets,
            l.loss_pct,
            l.mean_jitter_ms,
            if l.mos > 0.0 && l.min_interval_mos > 0.0 {
                format!("{:.2}/{:.2}", l.mos, l.min_interval_mos)
            } else if l.mos > 0.0 {
                format!("{:.2}", l.mos)
            } else {
                "-".to_owned()
            }
        ),
    }
}

/// The table form of a list of CDRs: one row per CDR, its destination prefix (`-` unless the
/// agent had the `billing` policy), the audio stream of each direction
/// (packets, loss, mean jitter, MOS of the whole stream / of its worst 10 seconds).
pub fn render_table(cdrs: &[Cdr]) -> String {
    let mut rows = vec![[
        "START (UTC)".to_owned(),
        "AGENT".to_owned(),
        "CALL-ID".to_owned(),
        "FROM".to_owned(),
        "TO".to_owned(),
        "DEST".to_owned(),
        "DISPOSITION".to_owned(),
        "CODE".to_owned(),
        "DURATION".to_owned(),
        "BILLABLE".to_owned(),
        "CODEC".to_owned(),
        "CALLER→CALLEE pkts loss jitter MOS/worst10s".to_owned(),
        "CALLEE→CALLER pkts loss jitter MOS/worst10s".to_owned(),
    ]];
    for c in cdrs {
        let party = |p: &Option<collector_proto::v1::Party>| {
            p.as_ref().map_or(String::new(), |p| truncate(&p.user, 18))
        };
        let disposition = collector_proto::v1::Disposition::try_from(c.disposition)
            .map(|d| {
                d.as_str_name()
                    .trim_start_matches("DISPOSITION_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let way = |d: MediaDirection| -> Vec<&MediaLeg> {
            c.media.iter().filter(|l| l.direction == d as i32).collect()
        };
        let codec = c
            .media
            .iter()
            .filter(|l| l.codec != "telephone-event")
            .max_by_key(|l| l.packets)
            .map(|l| l.codec.clone())
            .or_else(|| c.codecs.first().cloned())
            .unwrap_or_default();
        rows.push([
            fmt_time(c.start_time_ms),
            if c.agent_id.is_empty() {
                "-".to_owned()
            } else {
                truncate(&c.agent_id, 16)
            },
            truncate(&c.call_id, 24),
            party(&c.caller),
            party(&c.callee),
            if c.destination_prefix.is_empty() {
                "-".to_owned()
            } else {
                truncate(&c.destination_prefix, 16)
            },
            format!(
                "{disposition}{}",
                if c.interim { " (in progress)" } else { "" }
            ),
            c.final_code.to_string(),
            format!("{:.3}s", c.duration_ms as f64 / 1000.0),
            format!("{:.3}s", c.billable_ms as f64 / 1000.0),
            codec,
            direction_summary(&way(MediaDirection::CallerToCallee)),
            direction_summary(&way(MediaDirection::CalleeToCaller)),
        ]);
    }
    let mut widths = [0usize; 13];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths.iter())
            .map(|(cell, &w)| {
                format!(
                    "{cell}{}",
                    " ".repeat(w.saturating_sub(cell.chars().count()))
                )
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use collector_proto::v1::{MediaLeg, Party};

    use super::*;

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

    fn sample() -> Cdr {
        Cdr {
            agent_id: "sbc1".into(),
            caller: Some(Party {
                user: "P-a,b".into(),
                ..Default::default()
            }),
            callee: Some(Party {
                user: "P-\"c\"".into(),
                ..Default::default()
            }),
            start_time_ms: 1_700_000_000_000,
            destination_prefix: "+447700".into(),
            duration_ms: 61_500,
            billable_ms: 50_000,
            disposition: Disposition::Answered as i32,
            final_code: 200,
            media: vec![
                MediaLeg {
                    mos: 4.1,
                    loss_pct: 0.5,
                    ..Default::default()
                },
                MediaLeg {
                    mos: 3.25,
                    loss_pct: 2.0,
                    min_interval_mos: 2.5,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn csv_quotes_per_rfc4180() {
        let mut out = Vec::new();
        print_cdrs(&mut out, &[sample()], OutputFormat::Csv).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "start,agent,caller,callee,disposition,code,duration_s,billable_s,min_mos,max_loss_pct,worst_10s_mos,destination_prefix\n\
             2023-11-14T22:13:20Z,sbc1,\"P-a,b\",\"P-\"\"c\"\"\",answered,200,61.5,50.0,3.25,2.00,2.50,+447700\n"
        );
    }

    #[test]
    fn json_lines_use_proto_field_names() {
        let mut out = Vec::new();
        print_cdrs(&mut out, &[sample(), sample()], OutputFormat::Json).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["caller"]["user"], "P-a,b");
        assert_eq!(v["start_time_ms"], 1_700_000_000_000u64);
        assert_eq!(v["disposition"], "DISPOSITION_ANSWERED");
        assert_eq!(v["destination_prefix"], "+447700");
    }

    #[test]
    fn table_aligns_columns() {
        let mut out = Vec::new();
        print_cdrs(&mut out, &[sample()], OutputFormat::Table).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("START (UTC)              AGENT  CALL-ID"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("2023-11-14 22:13:20.000  sbc1   "),
            "{text}"
        );
        assert_eq!(lines[0].find("AGENT"), lines[1].find("sbc1"));
        assert_eq!(lines[0].find("BILLABLE"), lines[1].find("50.000s"));
        assert_eq!(lines[0].find("DURATION"), lines[1].find("61.500s"));
        assert_eq!(lines[0].find("DEST "), lines[1].find("+447700"));
    }
}
