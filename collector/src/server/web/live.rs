//! `/live`: the calls in progress from the relay's live flows (what `collector top` shows),
//! confined to the caller's tenant the way `Watch.Flows` confines a tenant's token (the same
//! [`WatchService::start`]); `/live/events`: the same rows kept current as server-sent
//! events, for the small script at `/static/live.js`.
//!
//! The page is whole without the script: the relay's history folded into one row per call
//! ([`TopState`], the model of `collector top`). Each `call` event carries its call's whole
//! row as JSON, so the script only puts text in cells. A `lost` event says how many events
//! this client missed: it lives on the hub's bounded per-subscriber queue, so a slow browser
//! loses events (counted and told) and never holds the relay up. Everything shown is as the
//! agents' privacy policy left it: pseudonyms, never a clear number, address or Call-ID.
use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{RawQuery, State},
    http::{header, StatusCode},
    response::{
        sse::{Event as SseEvent, Sse},
        IntoResponse, Response,
    },
};
use collector_proto::v1::{
    flow_event::Event, CallStateKind, FlowEvent, FlowEventType, FlowFilter, WatchRequest,
};
use tokio_stream::{
    wrappers::{IntervalStream, ReceiverStream},
    StreamExt as _,
};

use super::{
    auth::SignedIn,
    layout::{self, esc},
    Console,
};
use crate::{
    cli::top::{CallRow, TopState},
    present::{short_name, times::fmt_time},
    server::retention::now_ms,
    watch::WatchService,
};

/// How long an ended call stays listed on the page.
pub const ENDED_SHOWN_MS: u64 = 120_000;
/// How far before the page was drawn its script asks the events to start: events already
/// folded into the page come again (rows are replaced, not added), so an agent's clock
/// a little behind the collector's loses nothing between the page and the stream.
const STREAM_OVERLAP_MS: u64 = 30_000;
/// A comment this often keeps proxies from closing an idle stream and tells the server
/// when the browser has gone.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The relay request of the page (`follow = false`) and of the stream: call states and
/// media statistics, from as far back as the hub keeps.
fn request(follow: bool) -> WatchRequest {
    WatchRequest {
        follow,
        last_n: u32::MAX,
        allow: vec![FlowFilter {
            event_type: vec![
                FlowEventType::CallState as i32,
                FlowEventType::MediaStats as i32,
            ],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// One call as the page and the stream show it, every field already text.
#[derive(Debug, Clone, PartialEq)]
struct LiveRow {
    agent: String,
    call: String,
    state: String,
    ended: bool,
    caller: String,
    callee: String,
    start: String,
    trigger: String,
    mos: String,
}

impl LiveRow {
    fn of(c: &CallRow) -> LiveRow {
        let text = |s: &str| if s.is_empty() { "-" } else { s }.to_owned();
        // The worse direction's latest MOS.
        let mos = [c.forward, c.backward]
            .iter()
            .flatten()
            .map(|q| q.mos)
            .filter(|m| *m > 0.0)
            .reduce(f64::min);
        LiveRow {
            agent: c.agent.clone(),
            call: c.call_id.clone(),
            state: short_name(c.state.as_str_name(), "CALL_STATE_KIND_"),
            ended: c.state == CallStateKind::Ended,
            caller: text(&c.caller),
            callee: text(&c.callee),
            start: fmt_time(c.first_ms),
            trigger: text(&c.trigger),
            mos: mos.map_or_else(|| "-".to_owned(), |m| format!("{m:.2}")),
        }
    }

    /// The cells in column order.
    fn cells(&self) -> [&str; 7] {
        [
            &self.agent,
            &self.state,
            &self.caller,
            &self.callee,
            &self.start,
            &self.trigger,
            &self.mos,
        ]
    }

    /// The table row, escaped.
    fn html(&self) -> String {
        let class = if self.ended { " class=\"ended\"" } else { "" };
        let cells: String = self
            .cells()
            .iter()
            .map(|c| format!("<td>{}</td>", esc(c)))
            .collect();
        format!(
            "<tr{class} data-agent=\"{}\" data-call=\"{}\">{cells}</tr>\n",
            esc(&self.agent),
            esc(&self.call)
        )
    }

    /// The stream's JSON of the row.
    fn json(&self) -> String {
        html_safe_json(&serde_json::json!({
            "agent": self.agent,
            "call": self.call,
            "state": self.state,
            "ended": self.ended,
            "caller": self.caller,
            "callee": self.callee,
            "start": self.start,
            "trigger": self.trigger,
            "mos": self.mos,
        }))
    }
}

/// `v` as JSON with no markup character in it: `<`, `>`, `&` and `'` (only ever inside
/// strings in JSON) as `\u` escapes, which `JSON.parse` turns back into the characters.
fn html_safe_json(v: &serde_json::Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\'', "\\u0027")
}

/// The calls to list at `now_ms`: not ended, or ended less than [`ENDED_SHOWN_MS`] ago,
/// and with a call state seen (a call known from media statistics alone has no parties).
fn shown(model: &TopState, now_ms: u64) -> Vec<LiveRow> {
    model
        .rows(now_ms)
        .into_iter()
        .filter(|c| c.state != CallStateKind::Unspecified)
        .filter(|c| {
            c.ended_ms
                .is_none_or(|t| now_ms.saturating_sub(t) <= ENDED_SHOWN_MS)
        })
        .map(LiveRow::of)
        .collect()
}

/// What the stream tells the browser.
#[derive(Debug, Clone, PartialEq)]
enum Update {
    /// A call's row, whole.
    Call(LiveRow),
    /// This many events were lost on the way to this client.
    Lost(u64),
}

impl Update {
    fn sse(&self) -> SseEvent {
        match self {
            Update::Call(row) => SseEvent::default().event("call").data(row.json()),
            Update::Lost(count) => SseEvent::default()
                .event("lost")
                .data(serde_json::json!({ "count": count }).to_string()),
        }
    }
}

/// Folds `e` into `model`; the update to send for it: its call's row when it happened at
/// or after `since_ms` (earlier events only fill the model in), or a loss notice.
fn update(model: &mut TopState, e: &FlowEvent, since_ms: u64) -> Option<Update> {
    match &e.event {
        Some(Event::LostEvents(l)) => Some(Update::Lost(l.count)),
        Some(Event::CallState(_) | Event::MediaStats(_)) => {
            model.apply(e);
            let c = model.call(&e.agent_id, &e.call_id)?;
            (e.time_ms >= since_ms && c.state != CallStateKind::Unspecified)
                .then(|| Update::Call(LiveRow::of(c)))
        }
        Some(Event::Registration(_) | Event::Alert(_) | Event::SipMessage(_)) | None => None,
    }
}

/// The page when the console has no relay (a console built without one, in tests).
fn no_relay() -> Response {
    layout::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "live calls are not available on this console",
    )
}

/// `GET /live`.
pub async fn page(State(console): State<Console>, SignedIn(caller): SignedIn) -> Response {
    let Some(relay) = &console.relay else {
        return no_relay();
    };
    let now = now_ms();
    let mut rx = match relay.start(&request(false), caller.tenant) {
        Ok(rx) => rx,
        Err(e) => return layout::status_error(&e.into()),
    };
    let mut model = TopState::new("");
    while let Some(Ok(e)) = rx.recv().await {
        model.apply(&e);
    }
    let rows = shown(&model, now);
    let none = if rows.is_empty() {
        "<p id=\"live-none\" class=\"note\">No calls in progress.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h2>Live calls</h2>\
         <p class=\"count\">Calls in progress and those ended in the last {linger} s, as \
         the agents report them (the parties are pseudonyms).</p>\
         <p id=\"live-status\" class=\"note\" data-since=\"{since}\"></p>{none}\
         <table class=\"live\"><thead><tr><th>Agent</th><th>State</th><th>Caller</th>\
         <th>Callee</th><th>Started (UTC)</th><th>Trigger</th><th>MOS</th></tr></thead>\
         <tbody>\n{rows}</tbody></table>\
         <script src=\"/static/live.js\" defer></script>",
        linger = ENDED_SHOWN_MS / 1000,
        since = now.saturating_sub(STREAM_OVERLAP_MS),
        rows = rows.iter().map(LiveRow::html).collect::<String>(),
    );
    layout::page(StatusCode::OK, "live calls", true, &body)
}

/// `GET /live/events?since=MS`: the caller's tenant's call rows as server-sent events,
/// from the events at or after `since` (Unix ms; now without it) on.
pub async fn events(
    State(console): State<Console>,
    SignedIn(caller): SignedIn,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(relay) = &console.relay else {
        return no_relay();
    };
    let since = layout::fields(query.as_deref().unwrap_or(""))
        .into_iter()
        .find_map(|(k, v)| (k == "since").then(|| v.parse::<u64>().ok()).flatten())
        .unwrap_or_else(now_ms);
    stream(relay, caller.tenant, since)
}

/// The event stream of `tenant`'s calls (see [`events`]); it ends when the hub closes.
fn stream(relay: &WatchService, tenant: Option<String>, since_ms: u64) -> Response {
    let rx = match relay.start(&request(true), tenant) {
        Ok(rx) => rx,
        Err(e) => return layout::status_error(&e.into()),
    };
    let mut model = TopState::new("");
    let updates = ReceiverStream::new(rx)
        .filter_map(move |e| update(&mut model, &e.ok()?, since_ms))
        .map(|u| Some(u.sse()))
        // The end of the relay's stream, marked so that the keep-alive stops with it.
        .chain(tokio_stream::once(None));
    let keep_alive = IntervalStream::new(tokio::time::interval(KEEP_ALIVE))
        .map(|_| Some(SseEvent::default().comment("")));
    let sse = updates
        .merge(keep_alive)
        .take_while(Option::is_some)
        .filter_map(|e| e.map(Ok::<_, Infallible>));
    Sse::new(sse).into_response()
}

/// `GET /static/live.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("live.js"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use std::sync::Arc;

    use collector_proto::v1::{LostEvents, MediaDirection, Registration};

    use super::*;
    use crate::{
        cli::top::tests::{cs, ms},
        watch::{Hub, HubConfig},
    };

    const T: u64 = 1_800_000_000_000;

    /// A call state event with a trigger, the caller's pseudonym full of markup.
    fn state(t: u64, call: &str, s: CallStateKind, trigger: &str) -> FlowEvent {
        let mut e = cs(t, call, s, "n_<b>&'al\"ice", "n_bob");
        if let Some(Event::CallState(c)) = &mut e.event {
            c.trigger = trigger.into();
        }
        e
    }

    fn media(t: u64, call: &str, dir: MediaDirection, mos: f64) -> FlowEvent {
        ms(t, call, dir, 0.0, 0.0, mos)
    }

    #[test]
    fn rows_escape_markup_in_html_and_json() {
        let mut m = TopState::new("");
        m.apply(&state(T, "c1", CallStateKind::Trying, "INVITE"));
        let rows = shown(&m, T);
        assert_eq!(rows.len(), 1);
        let html = rows[0].html();
        assert!(
            html.contains("<td>n_&lt;b&gt;&amp;&#39;al&quot;ice</td>"),
            "{html}"
        );
        let json = rows[0].json();
        for c in ['<', '>', '&', '\''] {
            assert!(!json.contains(c), "{json}");
        }
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["caller"], "n_<b>&'al\"ice");
        assert_eq!(back["state"], "trying");
        assert_eq!(back["trigger"], "INVITE");
        assert_eq!(back["mos"], "-");
    }

    #[test]
    fn the_page_lists_calls_in_progress_and_recently_ended_ones() {
        let mut m = TopState::new("");
        m.apply(&state(T, "up", CallStateKind::Trying, "INVITE"));
        m.apply(&state(T + 1_000, "up", CallStateKind::Answered, "200"));
        m.apply(&media(T + 2_000, "up", MediaDirection::CallerToCallee, 4.2));
        m.apply(&media(T + 2_000, "up", MediaDirection::CalleeToCaller, 3.9));
        m.apply(&state(T, "old", CallStateKind::Trying, "INVITE"));
        m.apply(&state(T + 1_000, "old", CallStateKind::Ended, "BYE"));
        let now = T + 1_000 + ENDED_SHOWN_MS;
        m.apply(&state(now - 1, "recent", CallStateKind::Ended, "487"));
        // Media alone: no call state, no parties, not listed.
        m.apply(&media(T, "media-only", MediaDirection::CallerToCallee, 4.0));
        let rows = shown(&m, now + 1);
        let calls: Vec<(&str, &str, bool, &str, &str)> = rows
            .iter()
            .map(|r| {
                (
                    r.call.as_str(),
                    r.state.as_str(),
                    r.ended,
                    r.trigger.as_str(),
                    r.mos.as_str(),
                )
            })
            .collect();
        assert_eq!(
            calls,
            [
                ("up", "answered", false, "200", "3.90"),
                ("recent", "ended", true, "487", "-"),
            ]
        );
        assert!(rows[1].html().starts_with("<tr class=\"ended\""));
    }

    #[test]
    fn the_stream_sends_rows_from_since_on_and_passes_losses_on() {
        let mut m = TopState::new("");
        // Before `since`: folded in, not sent.
        assert_eq!(
            update(
                &mut m,
                &state(T, "c1", CallStateKind::Trying, "INVITE"),
                T + 1
            ),
            None
        );
        // After: the whole row, parties learnt from the earlier event included.
        let Some(Update::Call(row)) = update(
            &mut m,
            &media(T + 5, "c1", MediaDirection::CalleeToCaller, 4.25),
            T + 1,
        ) else {
            panic!("no row")
        };
        assert_eq!((row.state.as_str(), row.mos.as_str()), ("trying", "4.25"));
        assert_eq!(row.callee, "n_bob");
        let lost = FlowEvent {
            event: Some(Event::LostEvents(LostEvents {
                source: 0,
                count: 7,
            })),
            ..Default::default()
        };
        assert_eq!(update(&mut m, &lost, T), Some(Update::Lost(7)));
        let other = FlowEvent {
            time_ms: T + 9,
            event: Some(Event::Registration(Registration::default())),
            ..Default::default()
        };
        assert_eq!(update(&mut m, &other, T), None);
        // Media of a call with no state yet: nothing to show.
        assert_eq!(
            update(
                &mut m,
                &media(T + 9, "c2", MediaDirection::CallerToCallee, 4.0),
                T
            ),
            None
        );
    }

    /// A browser that does not read: the hub keeps its queue of two and counts the rest
    /// as lost, the stream passes the count on as a `lost` event.
    #[tokio::test]
    async fn a_slow_client_is_told_what_it_lost() {
        let hub = Arc::new(Hub::new(HubConfig {
            subscriber_queue: 2,
            ..HubConfig::default()
        }));
        let response = stream(&WatchService::collector(Arc::clone(&hub)), None, 0);
        // Published before the stream's task first runs (one thread, no await between).
        for i in 0..20 {
            let call = format!("c{i}");
            hub.publish(cs(T + i, &call, CallStateKind::Trying, "n_a", "n_b"));
        }
        hub.close();
        let body = tokio::time::timeout(
            Duration::from_secs(10),
            axum::body::to_bytes(response.into_body(), usize::MAX),
        )
        .await
        .unwrap()
        .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(text.matches("event: call\n").count(), 2, "{text}");
        assert!(
            text.contains("event: lost\ndata: {\"count\":18}\n"),
            "{text}"
        );
    }
}
