//! The call view: legs (one CDR per SIP dialog) grouped into calls, and its printer.
//!
//! Through an SBC with topology hiding, or any B2BUA, one call is two (or more) SIP
//! dialogs with different Call-IDs; the agent gives their CDRs one `correlation_id` and
//! says how it linked them in `correlation_method`. A [`Call`] is the legs sharing a
//! non-empty correlation id; a leg with an empty one is a call of its own. The summary
//! takes the caller from the ingress leg (the one that started first), the callee from the
//! egress leg (the one that started last), and times, disposition, final code and
//! durations from the first leg: what the calling party experienced.
//!
//! One grouping ([`group`]) and one printer ([`print`]) serve both the Query API's
//! `ListCalls` and the CLI (`collector cdrs --by-call`, `collector replay --by-call`).
use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use collector_proto::v1::{Call, Cdr, Disposition, MediaDirection, MediaLeg, Party};

use crate::present::times::fmt_time;

/// The order of the calls [`group`] returns (by the call's start time, then correlation id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Latest start first (the Query API's order).
    NewestFirst,
    /// Earliest start first (a capture's order).
    OldestFirst,
}

/// The order of the legs within a call: start time, then agent, then CDR id (so equal
/// start times still give one order).
fn leg_key(c: &Cdr) -> (u64, &str, &str) {
    (c.start_time_ms, c.agent_id.as_str(), c.cdr_id.as_str())
}

/// Groups `legs` into calls: the legs sharing a non-empty correlation id are one call,
/// every leg with an empty one is a call alone. Legs are ordered by start time within a
/// call, calls by start time in `order`.
pub fn group(legs: impl IntoIterator<Item = Cdr>, order: Order) -> Vec<Call> {
    let mut linked: BTreeMap<String, Vec<Cdr>> = BTreeMap::new();
    let mut calls = Vec::new();
    for leg in legs {
        if leg.correlation_id.is_empty() {
            calls.push(summarize(String::new(), vec![leg]));
        } else {
            linked
                .entry(leg.correlation_id.clone())
                .or_default()
                .push(leg);
        }
    }
    calls.extend(linked.into_iter().map(|(id, legs)| summarize(id, legs)));
    calls.sort_by(|a, b| {
        let key = |c: &Call| {
            (
                c.start_time_ms,
                c.correlation_id.clone(),
                c.legs
                    .first()
                    .map(|l| (l.agent_id.clone(), l.cdr_id.clone())),
            )
        };
        key(a).cmp(&key(b))
    });
    if order == Order::NewestFirst {
        calls.reverse();
    }
    calls
}

/// One call from its legs (all with `correlation_id`, or one leg with an empty id).
fn summarize(correlation_id: String, mut legs: Vec<Cdr>) -> Call {
    legs.sort_by(|a, b| leg_key(a).cmp(&leg_key(b)));
    let first = legs.first().cloned().unwrap_or_default();
    let callee = legs.last().and_then(|l| l.callee.clone());
    let correlation_method = legs
        .iter()
        .map(|l| l.correlation_method.as_str())
        .find(|m| !m.is_empty())
        .unwrap_or_default()
        .to_string();
    Call {
        correlation_id,
        correlation_method,
        leg_count: u32::try_from(legs.len()).unwrap_or(u32::MAX),
        caller: first.caller,
        callee,
        start_time_ms: first.start_time_ms,
        answer_time_ms: first.answer_time_ms,
        end_time_ms: first.end_time_ms,
        disposition: first.disposition,
        final_code: first.final_code,
        duration_ms: first.duration_ms,
        billable_ms: first.billable_ms,
        legs,
    }
}

/// How calls are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A row per call with its legs indented under it.
    Table,
    /// One JSON object per call per line (proto field names), its legs inside.
    Json,
}

/// Prints `calls` in `format`.
pub fn print<W: Write>(w: &mut W, calls: &[Call], format: Format) -> io::Result<()> {
    match format {
        Format::Json => {
            for c in calls {
                serde_json::to_writer(&mut *w, c)?;
                writeln!(w)?;
            }
            Ok(())
        }
        Format::Table => w.write_all(render_table(calls).as_bytes()),
    }
}

const CALL_COLUMNS: [&str; 10] = [
    "START (UTC)",
    "FROM",
    "TO",
    "DISPOSITION",
    "CODE",
    "DURATION",
    "BILLABLE",
    "LEGS",
    "LINKED BY",
    "CORRELATION-ID",
];

const LEG_COLUMNS: [&str; 10] = [
    "LEG START (UTC)",
    "AGENT",
    "CALL-ID",
    "FROM",
    "TO",
    "DISPOSITION",
    "CODE",
    "DURATION",
    "CALLER→CALLEE pkts lost jitter MOS",
    "CALLEE→CALLER pkts lost jitter MOS",
];

/// Indentation of a leg row under its call.
const LEG_INDENT: &str = "  ";

/// The table form: a call header and an indented leg header, then each call's row followed
/// by its legs' rows, indented. Call rows and leg rows are aligned among themselves.
pub fn render_table(calls: &[Call]) -> String {
    let call_rows: Vec<[String; 10]> = calls.iter().map(call_cells).collect();
    let leg_rows: Vec<Vec<[String; 10]>> = calls
        .iter()
        .map(|c| c.legs.iter().map(leg_cells).collect())
        .collect();
    let call_widths = widths(&CALL_COLUMNS, call_rows.iter());
    let leg_widths = widths(&LEG_COLUMNS, leg_rows.iter().flatten());
    let mut out = String::new();
    out.push_str(&line("", &CALL_COLUMNS, &call_widths));
    out.push_str(&line(LEG_INDENT, &LEG_COLUMNS, &leg_widths));
    for (call, legs) in call_rows.iter().zip(&leg_rows) {
        out.push_str(&line("", call, &call_widths));
        for leg in legs {
            out.push_str(&line(LEG_INDENT, leg, &leg_widths));
        }
    }
    out
}

fn widths<'a>(header: &[&str; 10], rows: impl Iterator<Item = &'a [String; 10]>) -> [usize; 10] {
    let mut w = header.map(|h| h.chars().count());
    for r in rows {
        for (wd, cell) in w.iter_mut().zip(r) {
            *wd = (*wd).max(cell.chars().count());
        }
    }
    w
}

fn line<S: AsRef<str>>(indent: &str, cells: &[S; 10], widths: &[usize; 10]) -> String {
    let padded: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(c, &w)| {
            let c = c.as_ref();
            format!("{c}{}", " ".repeat(w.saturating_sub(c.chars().count())))
        })
        .collect();
    format!("{indent}{}\n", padded.join("  ").trim_end())
}

fn user(p: &Option<Party>) -> String {
    p.as_ref().map_or_else(String::new, |p| p.user.clone())
}

fn disposition_name(d: i32) -> String {
    Disposition::try_from(d)
        .map(|d| {
            d.as_str_name()
                .trim_start_matches("DISPOSITION_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| d.to_string())
}

fn seconds(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1000.0)
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

fn call_cells(c: &Call) -> [String; 10] {
    [
        fmt_time(c.start_time_ms),
        user(&c.caller),
        user(&c.callee),
        disposition_name(c.disposition),
        c.final_code.to_string(),
        seconds(c.duration_ms),
        seconds(c.billable_ms),
        c.leg_count.to_string(),
        or_dash(&c.correlation_method),
        or_dash(&c.correlation_id),
    ]
}

fn leg_cells(c: &Cdr) -> [String; 10] {
    let way = |d: MediaDirection| -> Vec<&MediaLeg> {
        c.media.iter().filter(|l| l.direction == d as i32).collect()
    };
    [
        fmt_time(c.start_time_ms),
        c.agent_id.clone(),
        c.call_id.clone(),
        user(&c.caller),
        user(&c.callee),
        format!(
            "{}{}",
            disposition_name(c.disposition),
            if c.interim { " (in progress)" } else { "" }
        ),
        c.final_code.to_string(),
        seconds(c.duration_ms),
        direction_summary(&way(MediaDirection::CallerToCallee)),
        direction_summary(&way(MediaDirection::CalleeToCaller)),
    ]
}

/// Packets, lost packets, mean jitter and MOS of one direction's audio stream (the stream
/// with the most packets, telephone-events aside), `-` when there is none.
fn direction_summary(streams: &[&MediaLeg]) -> String {
    match streams
        .iter()
        .filter(|l| l.codec != "telephone-event")
        .max_by_key(|l| l.packets)
    {
        None => "-".to_owned(),
        Some(l) => format!(
            "{} {} {:.2}ms {}",
            l.packets,
            l.lost,
            l.mean_jitter_ms,
            if l.mos > 0.0 {
                format!("{:.2}", l.mos)
            } else {
                "-".to_owned()
            }
        ),
    }
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

    fn party(user: &str) -> Option<Party> {
        Some(Party {
            user: user.into(),
            ..Default::default()
        })
    }

    /// A leg from `caller` to `callee` starting at `start`, linked by `cid` (empty: none).
    fn leg(id: &str, cid: &str, caller: &str, callee: &str, start: u64) -> Cdr {
        Cdr {
            agent_id: "sbc1".into(),
            cdr_id: id.into(),
            call_id: format!("call-{id}"),
            correlation_id: cid.into(),
            correlation_method: if cid.is_empty() { "" } else { "header" }.into(),
            caller: party(caller),
            callee: party(callee),
            start_time_ms: start,
            ..Default::default()
        }
    }

    #[test]
    fn two_legs_with_one_correlation_id_are_one_call() {
        // The egress leg (SBC → bob) completes first, as it does when bob hangs up.
        let mut egress = leg("out", "X", "sbc", "bob", 1_000_040);
        egress.disposition = Disposition::Answered as i32;
        egress.final_code = 200;
        egress.answer_time_ms = 1_003_000;
        egress.end_time_ms = 1_063_000;
        egress.duration_ms = 62_960;
        egress.billable_ms = 60_000;
        let mut ingress = leg("in", "X", "alice", "sbc", 1_000_000);
        ingress.disposition = Disposition::Answered as i32;
        ingress.final_code = 200;
        ingress.answer_time_ms = 1_003_010;
        ingress.end_time_ms = 1_063_020;
        ingress.duration_ms = 63_020;
        ingress.billable_ms = 60_010;
        let calls = group([egress, ingress], Order::NewestFirst);
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(c.correlation_id, "X");
        assert_eq!(c.correlation_method, "header");
        assert_eq!(c.leg_count, 2);
        let ids: Vec<&str> = c.legs.iter().map(|l| l.cdr_id.as_str()).collect();
        assert_eq!(ids, ["in", "out"]);
        // Caller from the ingress leg, callee from the egress leg, the rest from the first.
        assert_eq!(user(&c.caller), "alice");
        assert_eq!(user(&c.callee), "bob");
        assert_eq!(
            (c.start_time_ms, c.answer_time_ms, c.end_time_ms),
            (1_000_000, 1_003_010, 1_063_020)
        );
        assert_eq!((c.duration_ms, c.billable_ms), (63_020, 60_010));
        assert_eq!(
            (c.disposition, c.final_code),
            (Disposition::Answered as i32, 200)
        );
    }

    #[test]
    fn a_leg_without_correlation_id_is_a_call_alone() {
        let calls = group(
            [
                leg("a", "", "alice", "bob", 5),
                leg("b", "", "carol", "dan", 5),
            ],
            Order::OldestFirst,
        );
        assert_eq!(calls.len(), 2);
        for (c, (id, from)) in calls.iter().zip([("a", "alice"), ("b", "carol")]) {
            assert_eq!(c.leg_count, 1);
            assert_eq!(c.correlation_id, "");
            assert_eq!(c.correlation_method, "");
            assert_eq!(c.legs[0].cdr_id, id);
            assert_eq!(user(&c.caller), from);
        }
    }

    #[test]
    fn distinct_ids_make_distinct_calls_in_start_order() {
        let legs = vec![
            leg("y2", "Y", "sbc", "dan", 2_050),
            leg("x1", "X", "alice", "sbc", 1_000),
            leg("z", "", "eve", "bob", 1_500),
            leg("y1", "Y", "carol", "sbc", 2_000),
            leg("x2", "X", "sbc", "bob", 1_020),
        ];
        let summary = |calls: &[Call]| -> Vec<(String, Vec<String>)> {
            calls
                .iter()
                .map(|c| {
                    (
                        c.correlation_id.clone(),
                        c.legs.iter().map(|l| l.cdr_id.clone()).collect(),
                    )
                })
                .collect()
        };
        let oldest = group(legs.clone(), Order::OldestFirst);
        let want = vec![
            ("X".to_string(), vec!["x1".to_string(), "x2".to_string()]),
            (String::new(), vec!["z".to_string()]),
            ("Y".to_string(), vec!["y1".to_string(), "y2".to_string()]),
        ];
        assert_eq!(summary(&oldest), want);
        let newest = group(legs, Order::NewestFirst);
        assert_eq!(summary(&newest), want.into_iter().rev().collect::<Vec<_>>());
        assert_eq!(user(&newest[0].caller), "carol");
        assert_eq!(user(&newest[0].callee), "dan");
        assert!(group(Vec::new(), Order::NewestFirst).is_empty());
    }

    #[test]
    fn equal_start_times_order_by_agent_then_cdr_id() {
        let mut b = leg("b", "X", "sbc", "bob", 7);
        b.agent_id = "sbc2".into();
        let a2 = leg("a2", "X", "sbc", "carol", 7);
        let a1 = leg("a1", "X", "alice", "sbc", 7);
        let c = &group([b, a2, a1], Order::NewestFirst)[0];
        let ids: Vec<&str> = c.legs.iter().map(|l| l.cdr_id.as_str()).collect();
        assert_eq!(ids, ["a1", "a2", "b"]);
        assert_eq!(user(&c.caller), "alice");
        assert_eq!(user(&c.callee), "bob");
    }

    fn stream(
        direction: MediaDirection,
        packets: u64,
        lost: i64,
        jitter: f64,
        mos: f64,
    ) -> MediaLeg {
        MediaLeg {
            direction: direction as i32,
            codec: "PCMU".into(),
            packets,
            lost,
            mean_jitter_ms: jitter,
            mos,
            ..Default::default()
        }
    }

    #[test]
    fn table_puts_legs_under_their_call_with_media_per_direction() {
        let mut a = leg("in", "X", "alice", "sbc", 1_700_000_000_000);
        a.media = vec![
            stream(MediaDirection::CallerToCallee, 3000, 12, 1.5, 4.2),
            stream(MediaDirection::CalleeToCaller, 2990, 0, 0.25, 0.0),
        ];
        let b = leg("out", "X", "sbc", "bob", 1_700_000_000_040);
        let text = render_table(&group([a, b], Order::NewestFirst));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].starts_with("START (UTC)"), "{text}");
        assert!(lines[1].starts_with("  LEG START (UTC)"), "{text}");
        // `date -u -d @1700000000` = 2023-11-14 22:13:20.
        assert!(
            lines[2].starts_with("2023-11-14 22:13:20.000  alice  bob"),
            "{text}"
        );
        assert!(lines[2].ends_with("2     header     X"), "{text}");
        assert!(
            lines[3].starts_with("  2023-11-14 22:13:20.000  sbc1   call-in"),
            "{text}"
        );
        // The direction columns are as wide as their header (34 characters), then two spaces.
        let header = "CALLER→CALLEE pkts lost jitter MOS".chars().count();
        let gap = |cell: &str| " ".repeat(header - cell.chars().count() + 2);
        let a_to_b = "3000 12 1.50ms 4.20";
        assert!(
            lines[3].ends_with(&format!("{a_to_b}{}2990 0 0.25ms -", gap(a_to_b))),
            "{text}"
        );
        assert!(
            lines[4].starts_with("  2023-11-14 22:13:20.040  sbc1   call-out"),
            "{text}"
        );
        assert!(lines[4].ends_with(&format!("-{}-", gap("-"))), "{text}");
        // Columns line up with their header.
        assert_eq!(lines[0].find("FROM"), lines[2].find("alice"));
        assert_eq!(lines[1].find("CALL-ID"), lines[3].find("call-in"));
    }

    #[test]
    fn json_is_one_object_per_call_with_its_legs() {
        let calls = group(
            [
                leg("in", "X", "alice", "sbc", 1),
                leg("z", "", "eve", "bob", 2),
            ],
            Order::OldestFirst,
        );
        let mut out = Vec::new();
        print(&mut out, &calls, Format::Json).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["correlation_id"], "X");
        assert_eq!(lines[0]["leg_count"], 1);
        assert_eq!(lines[0]["legs"][0]["cdr_id"], "in");
        assert_eq!(lines[0]["disposition"], "DISPOSITION_UNSPECIFIED");
        assert_eq!(lines[1]["legs"][0]["caller"]["user"], "eve");
    }
}
