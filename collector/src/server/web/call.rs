//! `/calls/{id}`: one call, found by a leg's stored CDR id: its legs (the gRPC
//! `ListCalls` view, [`crate::callview::group`] over [`crate::server::query::read_call`], so sibling legs
//! come from the caller's tenant only), each leg's timings, parties' pseudonyms,
//! per-direction media, the quality chart and the SIP ladder ([`super::ladder`]).
//!
//! The look-up is by id alone ([`crate::server::store::CdrFilter::cdr_id`], indexed),
//! confined and audited like every read; the URL carries nothing but the id, which the
//! agent chose and which names no party. Another tenant's id finds nothing: 404.
use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use collector_proto::v1::{Call, Cdr, MediaLeg, Party};

use super::{
    auth::SignedIn,
    chart::{self, direction_name},
    ladder::ladder,
    layout::{self, esc},
    Console,
};
use crate::{
    callview::{group, Order},
    present::times::format_time,
    server::query::read_call,
};

/// Most calls one id may find (ids are chosen by agents: two agents of one tenant could
/// share one); the newest is shown.
const MAX_CALLS_PER_ID: u32 = 8;

/// `GET /calls/{id}`.
pub async fn page(
    State(console): State<Console>,
    SignedIn(caller): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let legs = match read_call(console.store.as_ref(), &caller, &id, MAX_CALLS_PER_ID).await {
        Ok(l) => l,
        // A malformed id (empty, too long) names no call.
        Err(st) if st.code() == tonic::Code::InvalidArgument => {
            return layout::error(StatusCode::NOT_FOUND, "no such call")
        }
        Err(st) => return layout::status_error(&st),
    };
    let call = group(legs, Order::NewestFirst)
        .into_iter()
        .find(|c| c.legs.iter().any(|l| l.cdr_id == id));
    match call {
        Some(call) => layout::page(StatusCode::OK, "call", true, &render(&call)),
        None => layout::error(StatusCode::NOT_FOUND, "no such call"),
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// Rows of a two-column table.
fn rows(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("<tr><th>{k}</th><td>{}</td></tr>", esc(v)))
        .collect()
}

/// One header row and one value row.
fn across(pairs: &[(&str, String)]) -> String {
    let (head, values): (String, String) = pairs
        .iter()
        .map(|(k, v)| (format!("<th>{k}</th>"), format!("<td>{}</td>", esc(v))))
        .unzip();
    format!("<tr>{head}</tr><tr>{values}</tr>")
}

fn render(call: &Call) -> String {
    let summary = across(&[
        ("Legs", call.leg_count.to_string()),
        ("Linked by", call.correlation_method.clone()),
        ("Caller", user(&call.caller)),
        ("Callee", user(&call.callee)),
        ("Start", format_time(call.start_time_ms)),
        ("Duration", secs(call.duration_ms)),
        ("Billable", secs(call.billable_ms)),
        ("Disposition", disposition(call.disposition())),
        ("Final code", call.final_code.to_string()),
    ]);
    let legs: String = call
        .legs
        .iter()
        .enumerate()
        .map(|(n, l)| leg(n, l))
        .collect();
    format!("<h2>Call</h2><table class=\"summary\">{summary}</table>{legs}")
}

/// A party's user part (a pseudonym).
fn user(p: &Option<Party>) -> String {
    p.as_ref().map(|p| p.user.clone()).unwrap_or_default()
}

fn disposition(d: collector_proto::v1::Disposition) -> String {
    d.as_str_name()
        .trim_start_matches("DISPOSITION_")
        .to_ascii_lowercase()
}

fn leg(n: usize, c: &Cdr) -> String {
    let facts = rows(&[
        ("Agent", c.agent_id.clone()),
        ("CDR id", c.cdr_id.clone()),
        ("Caller", user(&c.caller)),
        ("Callee", user(&c.callee)),
        ("Setup (INVITE)", format_time(c.start_time_ms)),
        ("Ringing", format_time(c.ring_time_ms)),
        ("Answer", format_time(c.answer_time_ms)),
        ("End", format_time(c.end_time_ms)),
        ("Post-dial delay", secs(c.post_dial_delay_ms)),
        ("Duration", secs(c.duration_ms)),
        ("Billable", secs(c.billable_ms)),
        ("Disposition", disposition(c.disposition())),
        ("Final code", c.final_code.to_string()),
    ]);
    let media: String = c.media.iter().map(media_row).collect();
    format!(
        "<section class=\"leg\"><h3>Leg {}</h3><div class=\"row\">\
         <table class=\"facts\">{facts}</table><div>{}</div></div>\
         <table class=\"media\"><thead><tr><th>direction</th><th>codec</th><th>ssrc</th>\
         <th>packets</th><th>lost</th><th>loss %</th><th>mean jitter ms</th>\
         <th>max jitter ms</th><th>MOS</th><th>worst 10 s MOS</th></tr></thead>\
         <tbody>{media}</tbody></table><h4>SIP messages</h4>{}</section>",
        n + 1,
        chart::quality(&c.media),
        ladder(c)
    )
}

fn media_row(m: &MediaLeg) -> String {
    let cells = [
        m.codec.clone(),
        format!("{:08x}", m.ssrc),
        m.packets.to_string(),
        m.lost.to_string(),
        format!("{:.2}", m.loss_pct),
        format!("{:.2}", m.mean_jitter_ms),
        format!("{:.2}", m.max_jitter_ms),
        format!("{:.2}", m.mos),
        format!("{:.2}", m.min_interval_mos),
    ];
    let cells: String = cells
        .iter()
        .map(|v| format!("<td>{}</td>", esc(v)))
        .collect();
    let d = direction_name(m.direction());
    format!("<tr class=\"{d}\"><td>{d}</td>{cells}</tr>")
}
