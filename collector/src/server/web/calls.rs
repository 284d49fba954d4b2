//! `/calls`: the call search (time range, number, disposition, MOS below, agent; paged) and
//! `/calls.csv`, the same filter in the CLI's CSV columns. Both read through
//! [`query::read`], the gRPC `ListCdrs` path: same validation, tenant confinement and audit.
//!
//! The number is taken from a POSTed form only and hashed here into the pseudonyms the
//! store holds ([`Pseudonymizer::pseudonyms_for`], every key); links (next page, CSV)
//! carry those pseudonyms (`p`), never the number, and the page does not echo it.
use axum::{
    extract::{RawQuery, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use collector_proto::v1::{Cdr, CdrQuery};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::{
    auth::{self, SignedIn},
    layout::{self, esc},
    Console,
};
use crate::{
    present::{
        cdrs::{cells, parse_disposition, print_cdrs, OutputFormat, COLUMNS},
        times::parse_time_ms,
    },
    server::{
        query::{read, View},
        retention::now_ms,
        store::DEFAULT_QUERY_LIMIT,
    },
};

/// Calls per page unless the search says otherwise.
const PAGE: u32 = 50;
/// Most calls on one page.
const MAX_PAGE: u32 = 1_000;
/// Why a number cannot be searched for (the caller's tenant has no key ring).
const NO_KEYS: &str = "number search is off: the server has no key ring for your tenant \
     (--privacy-config, or --tenant-privacy-config for its own keys)";

/// A search as the form or a link gives it.
#[derive(Debug, Default)]
struct Search {
    from: String,
    to: String,
    /// The typed number (POST only); never printed.
    number: String,
    /// Pseudonyms from a link (`p`, comma-separated).
    pseudonyms: String,
    disposition: String,
    mos: String,
    agent: String,
    limit: String,
    /// Next page: calls that started before this (Unix ms).
    before: String,
}

impl Search {
    /// The search of a form or query string; `number` is honoured only from a POST body.
    fn parse(encoded: &str, with_number: bool) -> Search {
        let mut s = Search::default();
        for (k, v) in layout::fields(encoded) {
            let v = v.trim().to_owned();
            match k.as_str() {
                "from" => s.from = v,
                "to" => s.to = v,
                "number" if with_number => s.number = v,
                "p" => s.pseudonyms = v,
                "disposition" => s.disposition = v,
                "mos" => s.mos = v,
                "agent" => s.agent = v,
                "limit" => s.limit = v,
                "before" => s.before = v,
                _ => {}
            }
        }
        s
    }

    /// The query (limit `default_limit` unless the search names one), with the number
    /// replaced by its pseudonyms under the key ring of the caller's `tenant`; or what is
    /// wrong, in words without the number.
    fn query(
        &self,
        console: &Console,
        tenant: Option<&str>,
        default_limit: u32,
    ) -> Result<CdrQuery, String> {
        let now = now_ms();
        let time = |s: &str, what: &str| time_field(s, what, now);
        let mut pseudonyms: Vec<String> = self
            .pseudonyms
            .split(',')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if !self.number.is_empty() {
            pseudonyms = console
                .numbers
                .pseudonyms_for(tenant, self.number.as_bytes())
                .ok_or(NO_KEYS)?;
            if pseudonyms.is_empty() {
                return Err(
                    "nothing to search for: the number is empty after normalisation".into(),
                );
            }
        }
        let number = |s: &str, what: &str| -> Result<Option<f64>, String> {
            (!s.is_empty())
                .then(|| {
                    s.parse::<f64>()
                        .map_err(|_| format!("{what} must be a number"))
                })
                .transpose()
        };
        let limit = match self.limit.as_str() {
            "" => default_limit,
            l => l
                .parse::<u32>()
                .map_err(|_| "limit must be a whole number".to_string())?
                .clamp(1, MAX_PAGE),
        };
        let to = match self.before.as_str() {
            "" => time(&self.to, "To")?,
            b => b.parse().map_err(|_| "bad page link".to_string())?,
        };
        Ok(CdrQuery {
            start_from_ms: time(&self.from, "From")?,
            start_to_ms: to,
            pseudonyms,
            disposition: match self.disposition.as_str() {
                "" => 0,
                d => parse_disposition(d).map_err(|_| {
                    "disposition must be answered, busy, no-answer, cancelled, failed or rejected"
                        .to_string()
                })? as i32,
            },
            agent_id: self.agent.clone(),
            max_mos: number(&self.mos, "MOS below")?,
            limit,
            ..Default::default()
        })
    }

    /// A link to `path` with this search, the number replaced by the query's pseudonyms.
    fn link(&self, path: &str, q: &CdrQuery, before: Option<u64>) -> String {
        let qs = layout::query_string(&[
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("p", q.pseudonyms.join(",")),
            ("disposition", self.disposition.clone()),
            ("mos", self.mos.clone()),
            ("agent", self.agent.clone()),
            ("limit", self.limit.clone()),
            ("before", before.map(|b| b.to_string()).unwrap_or_default()),
        ]);
        format!("{path}?{qs}")
    }

    /// The search form, filled in with everything but the number.
    fn form(&self, console: &Console, tenant: Option<&str>, message: &str) -> String {
        let field = |name: &str, label: &str, value: &str, hint: &str| {
            format!(
                "<label>{label} <input name=\"{name}\" value=\"{}\" placeholder=\"{hint}\"></label>",
                esc(value)
            )
        };
        let number = if console.numbers.available(tenant) {
            let hint = if self.pseudonyms.is_empty() && self.number.is_empty() {
                ""
            } else {
                " (searching its pseudonyms; type it again to refine)"
            };
            format!(
                "<label>Number{hint} <input name=\"number\" autocomplete=\"off\" \
                 placeholder=\"+44 20 7946 0000\"></label>"
            )
        } else {
            "<label>Number <input name=\"number\" disabled \
             placeholder=\"off: no key ring for your tenant\"></label>"
                .to_string()
        };
        let note = if message.is_empty() {
            String::new()
        } else {
            format!("<p class=\"error\">{}</p>", esc(message))
        };
        format!(
            "{note}<form method=\"post\" action=\"/calls\" class=\"search\">{}{}{number}{}{}{}{}\
             <button type=\"submit\">Search</button></form>",
            field("from", "From", &self.from, "2026-12-01T00:00:00Z or 1h"),
            field("to", "To", &self.to, "RFC 3339 or 10m"),
            field("disposition", "Disposition", &self.disposition, "answered"),
            field("mos", "MOS below", &self.mos, "3.5"),
            field("agent", "Agent", &self.agent, "sbc-1"),
            field("limit", "Per page", &self.limit, "50"),
        )
    }
}

/// A time typed into a form (RFC 3339, or a duration before `now` such as `1h`), 0 when
/// empty. The error does not repeat the input: a number typed in the wrong field stays off
/// the page.
pub fn time_field(s: &str, what: &str, now: u64) -> Result<u64, String> {
    if s.is_empty() {
        Ok(0)
    } else {
        parse_time_ms(s, now)
            .map_err(|_| format!("{what} must be an RFC 3339 time or a duration such as 1h"))
    }
}

/// The results table: the CSV columns and a link to each call's page.
fn table(cdrs: &[Cdr]) -> String {
    let head: String = COLUMNS.iter().map(|c| format!("<th>{c}</th>")).collect();
    let rows: String = cdrs
        .iter()
        .map(|c| {
            let cells: String = cells(c)
                .iter()
                .map(|v| format!("<td>{}</td>", esc(v)))
                .collect();
            format!(
                "<tr><td><a href=\"{}\">open</a></td>{cells}</tr>",
                esc(&call_link(c))
            )
        })
        .collect();
    format!("<table class=\"calls\"><thead><tr><th>call</th>{head}</tr></thead><tbody>{rows}</tbody></table>")
}

/// The page of one CDR's call, by its stored id alone.
pub fn call_link(c: &Cdr) -> String {
    format!(
        "/calls/{}",
        utf8_percent_encode(&c.cdr_id, NON_ALPHANUMERIC)
    )
}

async fn search_page(console: &Console, headers: &HeaderMap, s: Search) -> Response {
    let Some(caller) = auth::caller(console, headers) else {
        return auth::to_login();
    };
    let tenant = caller.tenant.as_deref();
    let bad = |message: &str| {
        layout::page(
            StatusCode::BAD_REQUEST,
            "calls",
            true,
            &s.form(console, tenant, message),
        )
    };
    let mut q = match s.query(console, tenant, PAGE) {
        Ok(q) => q,
        Err(m) => return bad(&m),
    };
    let limit = q.limit as usize;
    q.limit += 1; // one more tells whether there is a next page
    let mut cdrs = match read(console.store.as_ref(), &caller, q.clone(), View::Cdrs).await {
        Ok(c) => c,
        Err(st) if st.code() == tonic::Code::InvalidArgument => return bad(st.message()),
        Err(st) => return layout::status_error(&st),
    };
    let more = cdrs.len() > limit;
    cdrs.truncate(limit);
    let next = match cdrs.last() {
        Some(last) if more => format!(
            " <a href=\"{}\" class=\"next\">Next page</a>",
            esc(&s.link("/calls", &q, Some(last.start_time_ms)))
        ),
        _ => String::new(),
    };
    let body = format!(
        "{}<p class=\"count\">{} CDR{}{next} · <a href=\"{}\">CSV</a></p>{}",
        s.form(console, tenant, ""),
        cdrs.len(),
        if cdrs.len() == 1 { "" } else { "s" },
        esc(&s.link("/calls.csv", &q, s.before.parse().ok())),
        table(&cdrs),
    );
    layout::page(StatusCode::OK, "calls", true, &body)
}

/// `GET /calls`: the latest calls, or the search of a link.
pub async fn get(
    State(console): State<Console>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    search_page(
        &console,
        &headers,
        Search::parse(q.as_deref().unwrap_or(""), false),
    )
    .await
}

/// `POST /calls`: the search form (the only way a number comes in).
pub async fn post(State(console): State<Console>, headers: HeaderMap, body: String) -> Response {
    search_page(&console, &headers, Search::parse(&body, true)).await
}

/// `GET /calls.csv`: the search's CDRs in the CLI's CSV columns.
pub async fn csv(
    State(console): State<Console>,
    SignedIn(caller): SignedIn,
    RawQuery(q): RawQuery,
) -> Response {
    let s = Search::parse(q.as_deref().unwrap_or(""), false);
    let q = match s.query(&console, caller.tenant.as_deref(), DEFAULT_QUERY_LIMIT) {
        Ok(q) => q,
        Err(m) => return layout::error(StatusCode::BAD_REQUEST, &m),
    };
    let cdrs = match read(console.store.as_ref(), &caller, q, View::Cdrs).await {
        Ok(c) => c,
        Err(st) => return layout::status_error(&st),
    };
    let mut out = Vec::new();
    if print_cdrs(&mut out, &cdrs, OutputFormat::Csv).is_err() {
        return layout::error(StatusCode::INTERNAL_SERVER_ERROR, "could not write the CSV");
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"calls.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}
