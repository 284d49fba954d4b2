//! The month's usage report as rows (`collector report usage` and the console's usage
//! page): per destination calls, answered, failed, ASR (answered / attempts), ACD (mean
//! answered duration), billable minutes and cost in integer minor units; then the unrated
//! answered calls by prefix. As a table, CSV or JSON; every figure computed in integers.
use collector_proto::v1::UsageReport;
use serde_json::json;
use time::{Date, Month};

use super::cdrs::{csv_field, OutputFormat};

/// The Unix-ms range `[first day, first day of the next month)` of `YYYY-MM` (UTC).
pub fn month_range(month: &str) -> Option<(u64, u64)> {
    let (y, m) = month.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let year: i32 = y.parse().ok()?;
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let first = Date::from_calendar_date(year, month, 1).ok()?;
    let next = match month {
        Month::December => Date::from_calendar_date(year.checked_add(1)?, Month::January, 1),
        _ => Date::from_calendar_date(year, month.next(), 1),
    }
    .ok()?;
    let ms = |d: Date| {
        u64::try_from(d.midnight().assume_utc().unix_timestamp())
            .ok()?
            .checked_mul(1000)
    };
    Some((ms(first)?, ms(next)?))
}

/// `num / den` with `decimals` decimals, rounded half up (`-` when `den` is 0).
fn ratio(num: u64, den: u64, decimals: u32) -> String {
    if den == 0 {
        return "-".to_owned();
    }
    let scale = 10u128.pow(decimals);
    let scaled = (u128::from(num) * scale * 2 + u128::from(den)) / (u128::from(den) * 2);
    if decimals == 0 {
        return scaled.to_string();
    }
    let width = decimals as usize;
    format!("{}.{:0width$}", scaled / scale, scaled % scale)
}

/// The columns of a destination row ([`rows`]).
pub const DEST_COLUMNS: [&str; 9] = [
    "destination",
    "currency",
    "calls",
    "answered",
    "failed",
    "asr_pct",
    "acd_s",
    "billable_min",
    "cost_minor",
];
/// The columns of an unrated-prefix row ([`rows`]).
pub const UNRATED_COLUMNS: [&str; 3] = ["unrated_prefix", "answered_calls", "answered_min"];

/// The rows of the report as cells: destinations, then unrated prefixes.
pub fn rows(r: &UsageReport) -> (Vec<[String; 9]>, Vec<[String; 3]>) {
    let dest = r
        .destinations
        .iter()
        .map(|d| {
            [
                if d.destination.is_empty() {
                    "(no rate row)".to_owned()
                } else {
                    d.destination.clone()
                },
                d.currency.clone(),
                d.calls.to_string(),
                d.answered.to_string(),
                d.calls.saturating_sub(d.answered).to_string(),
                ratio(d.answered.saturating_mul(100), d.calls, 1),
                ratio(d.answered_ms, d.answered.saturating_mul(1000), 0),
                ratio(d.billable_secs, 60, 2),
                d.cost.to_string(),
            ]
        })
        .collect();
    let unrated = r
        .unrated
        .iter()
        .map(|u| {
            [
                if u.destination_prefix.is_empty() {
                    "(no prefix)".to_owned()
                } else {
                    u.destination_prefix.clone()
                },
                u.calls.to_string(),
                ratio(u.answered_ms, 60_000, 2),
            ]
        })
        .collect();
    (dest, unrated)
}

fn table<const N: usize>(header: [&str; N], rows: &[[String; N]], out: &mut String) {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec(), out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), out);
    }
}

/// The report printed in `format`: a table (destinations, then an `unrated` section), CSV
/// (one section per header line, the unrated section after an empty line) or one JSON object.
pub fn render(r: &UsageReport, format: OutputFormat) -> String {
    let (dest, unrated) = rows(r);
    let mut out = String::new();
    match format {
        OutputFormat::Table => {
            table(DEST_COLUMNS, &dest, &mut out);
            if !unrated.is_empty() {
                out.push_str("\nunrated answered calls (fix the rate table, then re-rate):\n");
                table(UNRATED_COLUMNS, &unrated, &mut out);
            }
        }
        OutputFormat::Csv => {
            let section = |header: &[&str], rows: Vec<Vec<String>>, out: &mut String| {
                out.push_str(&header.join(","));
                out.push('\n');
                for r in rows {
                    let cells: Vec<String> = r.iter().map(|c| csv_field(c)).collect();
                    out.push_str(&cells.join(","));
                    out.push('\n');
                }
            };
            section(
                &DEST_COLUMNS,
                dest.into_iter().map(Vec::from).collect(),
                &mut out,
            );
            out.push('\n');
            section(
                &UNRATED_COLUMNS,
                unrated.into_iter().map(Vec::from).collect(),
                &mut out,
            );
        }
        OutputFormat::Json => {
            let dest: Vec<_> = r
                .destinations
                .iter()
                .map(|d| {
                    json!({
                        "destination": d.destination,
                        "currency": d.currency,
                        "calls": d.calls,
                        "answered": d.answered,
                        "failed": d.calls.saturating_sub(d.answered),
                        "answered_ms": d.answered_ms,
                        "billable_secs": d.billable_secs,
                        "cost_minor": d.cost,
                    })
                })
                .collect();
            let unrated: Vec<_> = r
                .unrated
                .iter()
                .map(|u| {
                    json!({
                        "destination_prefix": u.destination_prefix,
                        "answered_calls": u.calls,
                        "answered_ms": u.answered_ms,
                    })
                })
                .collect();
            out.push_str(&json!({ "destinations": dest, "unrated": unrated }).to_string());
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use collector_proto::v1::{DestinationUsage, UnratedUsage};

    fn report() -> UsageReport {
        UsageReport {
            destinations: vec![DestinationUsage {
                destination: "United Kingdom, mobile".into(),
                currency: "EUR".into(),
                calls: 3,
                answered: 2,
                answered_ms: 36_000,
                billable_secs: 66,
                cost: 43,
            }],
            unrated: vec![UnratedUsage {
                destination_prefix: "+33".into(),
                calls: 1,
                answered_ms: 90_000,
            }],
        }
    }

    #[test]
    fn months_are_utc_ranges_and_garbage_is_refused() {
        // 2026-11-01 and 2026-12-01, 2026-12-01 and 2027-01-01 (UTC), by hand.
        assert_eq!(
            month_range("2026-11"),
            Some((1_793_491_200_000, 1_796_083_200_000))
        );
        assert_eq!(
            month_range("2026-12"),
            Some((1_796_083_200_000, 1_798_761_600_000))
        );
        for bad in ["2026-13", "2026-1", "26-11", "2026", "x-11", ""] {
            assert_eq!(month_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn figures_are_integer_ratios() {
        // ASR 2/3 = 66.7 %, ACD 36 s / 2 = 18 s, 66 s = 1.10 min, cost 43 minor units.
        let csv = render(&report(), OutputFormat::Csv);
        assert_eq!(
            csv,
            "destination,currency,calls,answered,failed,asr_pct,acd_s,billable_min,cost_minor\n\
             \"United Kingdom, mobile\",EUR,3,2,1,66.7,18,1.10,43\n\
             \n\
             unrated_prefix,answered_calls,answered_min\n\
             +33,1,1.50\n"
        );
        let table = render(&report(), OutputFormat::Table);
        assert!(table.contains("unrated answered calls"), "{table}");
        let v: serde_json::Value =
            serde_json::from_str(&render(&report(), OutputFormat::Json)).unwrap();
        assert_eq!(v["destinations"][0]["cost_minor"], 43);
        assert_eq!(v["unrated"][0]["destination_prefix"], "+33");
        assert_eq!(ratio(1, 0, 1), "-");
        assert_eq!(ratio(1, 3, 0), "0");
        assert_eq!(ratio(2, 3, 0), "1");
    }
}
