//! `/usage?month=YYYY-MM`: the month's calls, minutes and cost per destination, and the
//! answered calls no rate matched, for the caller's tenant: the gRPC `Usage` call
//! ([`crate::server::query::usage`]) in the columns of `collector report usage`
//! ([`crate::present::usage::rows`]). Counts and sums per destination only, no identifier.
//!
//! Destinations are named by rate tables only: a month with no named destination means the
//! tenant has no rate table (or none matched), and the page says rating is not configured.
use axum::{
    extract::{RawQuery, State},
    http::StatusCode,
    response::Response,
};
use collector_proto::v1::UsageReportRequest;

use super::{
    auth::SignedIn,
    layout::{self, esc},
    Console,
};
use crate::{
    present::{
        times::format_time,
        usage::{month_range, rows, DEST_COLUMNS, UNRATED_COLUMNS},
    },
    server::{query::usage, retention::now_ms},
};

/// A table of `rows` under `head`.
fn table<const N: usize>(class: &str, head: [&str; N], rows: &[[String; N]]) -> String {
    let head: String = head.iter().map(|h| format!("<th>{h}</th>")).collect();
    let body: String = rows
        .iter()
        .map(|r| {
            let cells: String = r.iter().map(|v| format!("<td>{}</td>", esc(v))).collect();
            format!("<tr>{cells}</tr>")
        })
        .collect();
    format!("<table class=\"{class}\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
}

/// `GET /usage?month=YYYY-MM` (this month, UTC, by default).
pub async fn page(
    State(console): State<Console>,
    SignedIn(caller): SignedIn,
    RawQuery(q): RawQuery,
) -> Response {
    let month = layout::fields(q.as_deref().unwrap_or(""))
        .into_iter()
        .find_map(|(k, v)| (k == "month").then(|| v.trim().to_owned()))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format_time(now_ms()).chars().take(7).collect());
    let form = format!(
        "<form method=\"get\" action=\"/usage\" class=\"search\">\
         <label>Month <input name=\"month\" value=\"{}\" placeholder=\"YYYY-MM\"></label>\
         <button type=\"submit\">Show</button></form>",
        esc(&month)
    );
    let Some((from_ms, to_ms)) = month_range(&month) else {
        let body = format!("<h2>Usage</h2><p class=\"error\">the month must be YYYY-MM</p>{form}");
        return layout::page(StatusCode::BAD_REQUEST, "usage", true, &body);
    };
    let req = UsageReportRequest {
        tenant: String::new(),
        from_ms,
        to_ms,
    };
    let report = match usage(console.store.as_ref(), &caller, &req).await {
        Ok(r) => r,
        Err(st) => return layout::status_error(&st),
    };
    let rated = report
        .destinations
        .iter()
        .any(|d| !d.destination.is_empty());
    let note = if rated {
        String::new()
    } else {
        "<p class=\"note rating-off\">Rating is not configured for this tenant: no call of \
         this month matched a rate table (import one with <code>collector rates import</code>). \
         Calls are counted; answered calls are listed as unrated.</p>"
            .to_owned()
    };
    let (dest, unrated) = rows(&report);
    let body = format!(
        "<h2>Usage</h2>{form}<p class=\"count\">{} to {} (UTC); cost in minor units of the \
         currency</p>{note}<h3>Per destination</h3>{}<h3>Unrated answered calls</h3>{}",
        format_time(from_ms),
        format_time(to_ms),
        table("usage", DEST_COLUMNS, &dest),
        table("unrated", UNRATED_COLUMNS, &unrated),
    );
    layout::page(StatusCode::OK, "usage", true, &body)
}
