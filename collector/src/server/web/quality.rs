//! `/quality`: MOS and loss percentiles per hour and per agent over a chosen time range
//! (the last 24 hours unless the form says otherwise), as a line chart ([`chart`]) and a
//! table.
//!
//! The store keeps only daily aggregates, and only of CDRs retention has deleted, so the
//! hours are computed here from the stored CDRs' media legs, read through [`read`] (the
//! gRPC `ListCdrs` path: the caller's tenant only, audited). The read is bounded by
//! [`MAX_CDRS`]: past it, the newest CDRs are counted and the page says so.
//!
//! A sample is one voice stream (not telephone-event) of a final CDR that carried packets. Percentiles are
//! nearest-rank: MOS p50 and MOS p5 (95% of the scored streams of that hour scored at least
//! this: the worst-5% edge), loss p50 and loss p95.
use std::collections::BTreeMap;

use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};
use collector_proto::v1::{Cdr, CdrQuery};

use super::{
    auth::SignedIn,
    calls::time_field,
    chart::{chart, Series, PALETTE},
    layout::{self, esc},
    Console,
};
use crate::{
    present::times::format_time,
    server::{
        query::{read, View},
        retention::now_ms,
    },
};

/// Most CDRs one page reads.
pub const MAX_CDRS: u32 = 20_000;
/// The range when the form gives none.
const DEFAULT_FROM: &str = "24h";
const HOUR_MS: u64 = 3_600_000;

/// The samples of one (hour, agent).
#[derive(Debug, Default)]
struct Hour {
    /// Streams that carried packets.
    streams: u64,
    /// MOS of the scored streams.
    mos: Vec<f64>,
    /// Loss % of every stream.
    loss: Vec<f64>,
}

/// The nearest-rank `p`-th percentile of `v` (sorted here), `None` when empty.
fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank - 1).copied()
}

/// The samples of `cdrs` by (hour since the epoch, agent).
fn hours(cdrs: &[Cdr]) -> BTreeMap<(u64, String), Hour> {
    let mut out: BTreeMap<(u64, String), Hour> = BTreeMap::new();
    for c in cdrs.iter().filter(|c| !c.interim) {
        // Voice only: a telephone-event stream (RFC 4733 digits) has no MOS and its loss is
        // not the call's.
        let voice = c
            .media
            .iter()
            .filter(|m| m.packets > 0 && m.codec != "telephone-event");
        for m in voice {
            let h = out
                .entry((c.start_time_ms / HOUR_MS, c.agent_id.clone()))
                .or_default();
            h.streams += 1;
            h.loss.push(m.loss_pct);
            if m.mos > 0.0 {
                h.mos.push(m.mos);
            }
        }
    }
    out
}

/// One row's percentiles: MOS p50, MOS p5, loss p50, loss p95.
type Row = [Option<f64>; 4];

fn row(h: &mut Hour) -> Row {
    [
        percentile(&mut h.mos, 50.0),
        percentile(&mut h.mos, 5.0),
        percentile(&mut h.loss, 50.0),
        percentile(&mut h.loss, 95.0),
    ]
}

/// A chart of column `col` of the rows, one line per agent, over hours since the first.
fn agent_chart(
    title: &str,
    lo: f64,
    hi: f64,
    rows: &[((u64, String), u64, Row)],
    col: usize,
) -> String {
    let first = rows.iter().map(|((h, _), _, _)| *h).min().unwrap_or(0);
    let last = rows.iter().map(|((h, _), _, _)| *h).max().unwrap_or(0);
    let mut agents: Vec<&str> = rows.iter().map(|((_, a), _, _)| a.as_str()).collect();
    agents.sort_unstable();
    agents.dedup();
    let series: Vec<Series> = agents
        .iter()
        .zip(PALETTE.iter().cycle())
        .map(|(agent, colour)| Series {
            label: (*agent).to_owned(),
            colour,
            points: rows
                .iter()
                .filter(|((_, a), _, _)| a == agent)
                .filter_map(|((h, _), _, r)| {
                    let v = r.get(col).copied().flatten()?;
                    Some(((h - first) as f64 + 0.5, v))
                })
                .collect(),
        })
        .collect();
    // The time axis counts hours from the first hour shown, named in the title.
    let title = format!("{title} (hours from {})", format_time(first * HOUR_MS));
    chart(&title, lo, hi, &series, (last - first + 1) as f64, "h")
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// `GET /quality?from=..&to=..`.
pub async fn page(
    State(console): State<Console>,
    SignedIn(caller): SignedIn,
    RawQuery(q): RawQuery,
) -> Response {
    let (mut from, mut to) = (String::new(), String::new());
    for (k, v) in layout::fields(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "from" => from = v.trim().to_owned(),
            "to" => to = v.trim().to_owned(),
            _ => {}
        }
    }
    let form = format!(
        "<form method=\"get\" action=\"/quality\" class=\"search\">\
         <label>From <input name=\"from\" value=\"{}\" placeholder=\"{DEFAULT_FROM}\"></label>\
         <label>To <input name=\"to\" value=\"{}\" placeholder=\"now\"></label>\
         <button type=\"submit\">Show</button></form>",
        esc(&from),
        esc(&to)
    );
    let now = now_ms();
    let range = time_field(
        if from.is_empty() { DEFAULT_FROM } else { &from },
        "From",
        now,
    )
    .and_then(|f| {
        let t = match time_field(&to, "To", now)? {
            0 => now,
            t => t,
        };
        if t <= f {
            return Err("To must be after From".to_owned());
        }
        Ok((f, t))
    });
    let (start, end) = match range {
        Ok(r) => r,
        Err(m) => {
            let body = format!("<h2>Quality</h2><p class=\"error\">{}</p>{form}", esc(&m));
            return layout::page(StatusCode::BAD_REQUEST, "quality", true, &body);
        }
    };
    let q = CdrQuery {
        start_from_ms: start,
        start_to_ms: end,
        limit: MAX_CDRS + 1,
        ..Default::default()
    };
    let mut cdrs = match read(console.store.as_ref(), &caller, q, View::Cdrs).await {
        Ok(c) => c,
        Err(st) => return layout::status_error(&st),
    };
    let bounded = cdrs.len() > MAX_CDRS as usize;
    cdrs.truncate(MAX_CDRS as usize);
    let rows: Vec<((u64, String), u64, Row)> = hours(&cdrs)
        .into_iter()
        .map(|(k, mut h)| {
            let r = row(&mut h);
            (k, h.streams, r)
        })
        .collect();
    let note = if bounded {
        format!(
            "<p class=\"error\">More than {MAX_CDRS} CDRs in this range: only the newest \
             {MAX_CDRS} are counted. Choose a shorter range.</p>"
        )
    } else {
        String::new()
    };
    let range_text = format!(
        "<p class=\"count\">{} to {} · {} CDR{} · percentiles by nearest rank over the voice \
         streams of final CDRs; MOS p5 is the worst-5% edge (95% of the streams scored at \
         least this)</p>",
        format_time(start),
        format_time(end),
        cdrs.len(),
        if cdrs.len() == 1 { "" } else { "s" }
    );
    let charts = if rows.is_empty() {
        "<p class=\"note\">No media streams in this range.</p>".to_owned()
    } else {
        let loss_max = rows
            .iter()
            .filter_map(|(_, _, r)| r.get(3).copied().flatten())
            .fold(1.0, f64::max)
            .ceil();
        agent_chart("MOS p50 per hour", 1.0, 5.0, &rows, 0)
            + &agent_chart("MOS p5 per hour", 1.0, 5.0, &rows, 1)
            + &agent_chart("loss % p95 per hour", 0.0, loss_max, &rows, 3)
    };
    let table: String = rows
        .iter()
        .map(|((hour, agent), streams, r)| {
            let cells: String = r.iter().map(|v| format!("<td>{}</td>", cell(*v))).collect();
            format!(
                "<tr><td>{}</td><td>{}</td><td>{streams}</td>{cells}</tr>",
                esc(&format_time(hour * HOUR_MS)),
                esc(agent)
            )
        })
        .collect();
    let body = format!(
        "<h2>Quality</h2>{form}{note}{range_text}{charts}\
         <table class=\"quality\"><thead><tr><th>hour</th><th>agent</th><th>streams</th>\
         <th>MOS p50</th><th>MOS p5</th><th>loss % p50</th><th>loss % p95</th></tr></thead>\
         <tbody>{table}</tbody></table>"
    );
    layout::page(StatusCode::OK, "quality", true, &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector_proto::v1::MediaLeg;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(10.0));
        assert_eq!(percentile(&mut v, 5.0), Some(1.0));
        assert_eq!(percentile(&mut v, 95.0), Some(19.0));
        assert_eq!(percentile(&mut [3.0], 5.0), Some(3.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn streams_with_packets_of_final_cdrs_by_hour_and_agent() {
        let leg = |packets, mos, loss_pct| MediaLeg {
            packets,
            mos,
            loss_pct,
            ..Default::default()
        };
        let cdr = |agent: &str, start_time_ms, interim| Cdr {
            agent_id: agent.into(),
            start_time_ms,
            interim,
            media: vec![
                leg(10, 4.0, 1.0),
                leg(0, 0.0, 0.0),
                leg(5, 0.0, 3.0),
                MediaLeg {
                    codec: "telephone-event".into(),
                    ..leg(10, 0.0, 50.0)
                },
            ],
            ..Default::default()
        };
        let h = hours(&[
            cdr("a", HOUR_MS, false),
            cdr("a", HOUR_MS + 5, false),
            cdr("a", HOUR_MS + 9, true),
            cdr("b", 2 * HOUR_MS, false),
        ]);
        let a = &h[&(1, "a".to_owned())];
        assert_eq!((a.streams, a.mos.len(), a.loss.len()), (4, 2, 4));
        assert_eq!(h[&(2, "b".to_owned())].streams, 2);
        assert_eq!(h.len(), 2);
    }
}
