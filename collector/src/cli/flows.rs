//! `collector flows`: live call events from the collector's relay or an agent, like
//! `hubble observe`: filters are sent to the server (`Watch.Flows`), history with `--last`
//! and `--since`, new events with `--follow`; printed one line per event (`compact`), as
//! JSON lines (`json`, for jq) or as aligned columns (`table`).
//!
//! The printers ask the server only for the fields they show (a field mask), so ended
//! calls' CDRs do not cross the network for a one-line summary.
use std::{
    io::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use clap::Args;
use collector_proto::v1::{
    flow_event::Event, watch_client::WatchClient, CallStateKind, FlowEvent, FlowEventType,
    FlowFilter, LostEventsSource, MediaDirection, Party, SipDirection, WatchRequest,
};
use serde_json::Value;

use super::connect::{ConnectArgs, SubjectArgs};
use crate::present::{
    cdrs::parse_disposition,
    short_name,
    times::{format_time_ms, parse_duration_ms},
};

/// History sent without `--follow`, `--last` or `--since` (as `hubble observe` does).
pub const DEFAULT_LAST: u32 = 20;

/// `collector flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Collector (relay of every agent) or agent to watch, and how to reach it (TLS,
    /// client certificate, token: the same flags as every verb that talks to a server).
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Keep streaming new events until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Start with the last N buffered events (default 20 without --follow or --since).
    #[arg(long)]
    pub last: Option<u32>,
    /// Start with the buffered events of this long ago (e.g. `90s`, `10m`, `1h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only buffered events older than this long ago (not with --follow).
    #[arg(long, conflicts_with = "follow")]
    pub until: Option<String>,
    /// Only these agents (repeat or comma-separate).
    #[arg(long = "agent", value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Only these event kinds: call-state, media-stats, registration, alert, sip-message,
    /// lost-events (repeat or comma-separate).
    #[arg(long = "type", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Only call_state events in these states: trying, ringing, answered, ended,
    /// early-media, held, resumed.
    #[arg(long = "state", value_delimiter = ',')]
    pub states: Vec<String>,
    /// Only ended calls with these dispositions: answered, busy, no-answer, cancelled,
    /// failed, rejected.
    #[arg(long = "disposition", value_delimiter = ',')]
    pub dispositions: Vec<String>,
    /// Only the calls and registrations of this subject: a number (hashed here under every
    /// key of the key file; never sent) or pseudonyms.
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Only this (pseudonymized) Call-ID.
    #[arg(long = "call-id")]
    pub call_ids: Vec<String>,
    /// Only events with an address starting with this text (addresses are shown truncated
    /// or pseudonymized, e.g. `192.0.2.` or `ip_k1_`).
    #[arg(long = "address")]
    pub addresses: Vec<String>,
    /// Only quality measurements with a MOS below this.
    #[arg(long)]
    pub mos_below: Option<f64>,
    /// Only quality measurements with a loss above this, in percent.
    #[arg(long)]
    pub loss_above: Option<f64>,
    /// Output format.
    #[arg(long = "output", short = 'o', value_enum, default_value_t = FlowsFormat::Compact)]
    pub output: FlowsFormat,
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowsFormat {
    /// One line per event.
    Compact,
    /// One JSON object per line, proto field names, the event kind as a key (`call_state`,
    /// `media_stats`, ...).
    Json,
    /// Aligned columns with a header.
    Table,
}

/// The fields the compact and table printers show (their field mask).
pub const SUMMARY_FIELDS: &[&str] = &[
    "time_ms",
    "agent_id",
    "call_id",
    "call_state.state",
    "call_state.caller.user",
    "call_state.callee.user",
    "call_state.trigger",
    "call_state.disposition",
    "media_stats.leg.direction",
    "media_stats.leg.codec",
    "media_stats.leg.loss_pct",
    "media_stats.leg.mean_jitter_ms",
    "media_stats.leg.mos",
    "registration.aor.user",
    "registration.status_code",
    "registration.expires_s",
    "registration.contact_count",
    "alert",
    "lost_events",
    "sip_message",
];

/// `call-state`, `CALL_STATE`, `FLOW_EVENT_TYPE_CALL_STATE` → the enum.
pub fn parse_event_type(s: &str) -> anyhow::Result<FlowEventType> {
    let norm = s.trim().to_ascii_uppercase().replace('-', "_");
    let full = if norm.starts_with("FLOW_EVENT_TYPE_") {
        norm
    } else {
        format!("FLOW_EVENT_TYPE_{norm}")
    };
    match FlowEventType::from_str_name(&full) {
        Some(FlowEventType::Unspecified) | None => bail!(
            "unknown event type {s:?}: use call-state, media-stats, registration, alert, \
             sip-message or lost-events"
        ),
        Some(t) => Ok(t),
    }
}

/// `answered`, `early-media`, `CALL_STATE_KIND_HELD` → the enum.
pub fn parse_call_state(s: &str) -> anyhow::Result<CallStateKind> {
    let norm = s.trim().to_ascii_uppercase().replace('-', "_");
    let full = if norm.starts_with("CALL_STATE_KIND_") {
        norm
    } else {
        format!("CALL_STATE_KIND_{norm}")
    };
    match CallStateKind::from_str_name(&full) {
        Some(CallStateKind::Unspecified) | None => bail!(
            "unknown call state {s:?}: use trying, ringing, answered, ended, early-media, \
             held or resumed"
        ),
        Some(k) => Ok(k),
    }
}

/// Turns the flags into a request (`now_ms` anchors `--since` and `--until`).
/// `pseudonyms` are the subject's (`--number` already hashed, or `--pseudonym`).
pub fn build_request(
    args: &FlowsArgs,
    pseudonyms: Vec<String>,
    now_ms: u64,
) -> anyhow::Result<WatchRequest> {
    let ago = |s: &Option<String>| -> anyhow::Result<u64> {
        Ok(match s {
            Some(s) => now_ms.saturating_sub(parse_duration_ms(s)?).max(1),
            None => 0,
        })
    };
    let since_ms = ago(&args.since)?;
    let until_ms = ago(&args.until)?;
    let last_n = match args.last {
        Some(n) => n,
        None if !args.follow && since_ms == 0 => DEFAULT_LAST,
        None => 0,
    };
    for (name, v, max) in [
        ("--mos-below", args.mos_below, 5.0),
        ("--loss-above", args.loss_above, 100.0),
    ] {
        if let Some(x) = v {
            if !(0.0..=max).contains(&x) {
                bail!("{name} must be between 0 and {max}");
            }
        }
    }
    let filter = FlowFilter {
        agent_id: args.agents.clone(),
        pseudonym: pseudonyms,
        call_id: args.call_ids.clone(),
        event_type: args
            .types
            .iter()
            .map(|t| parse_event_type(t).map(|t| t as i32))
            .collect::<anyhow::Result<_>>()?,
        disposition: args
            .dispositions
            .iter()
            .map(|d| parse_disposition(d).map(|d| d as i32))
            .collect::<anyhow::Result<_>>()?,
        call_state: args
            .states
            .iter()
            .map(|s| parse_call_state(s).map(|s| s as i32))
            .collect::<anyhow::Result<_>>()?,
        // Never the number itself: it was hashed on this side.
        number: Vec::new(),
        address_prefix: args.addresses.clone(),
        mos_below: args.mos_below,
        loss_above_pct: args.loss_above,
    };
    let allow = if filter == FlowFilter::default() {
        Vec::new()
    } else {
        vec![filter]
    };
    let field_mask = match args.output {
        FlowsFormat::Json => Vec::new(),
        FlowsFormat::Compact | FlowsFormat::Table => {
            SUMMARY_FIELDS.iter().map(|f| (*f).to_string()).collect()
        }
    };
    Ok(WatchRequest {
        follow: args.follow,
        since_ms,
        until_ms,
        last_n,
        allow,
        deny: Vec::new(),
        field_mask,
    })
}

/// Runs the verb.
pub fn run(args: FlowsArgs) -> anyhow::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let pseudonyms = args.subject.pseudonyms(&mut io::stdin().lock())?;
    let req = build_request(&args, pseudonyms, now_ms)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut printer = Printer::new(args.output);
    let result = rt.block_on(watch(&args.conn, req, &mut printer, &mut out, async {
        let _ = tokio::signal::ctrl_c().await;
    }));
    let flushed = out.flush();
    match result {
        // `collector flows | head` closing the pipe early is not an error.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
        Ok(()) => match flushed {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => Ok(other?),
        },
    }
}

/// Streams `req` from `server` into `out` until the stream ends (without follow), the
/// server goes away (an error saying so), or `interrupt` completes (Ctrl-C: a clean end).
pub async fn watch<W, F>(
    conn: &ConnectArgs,
    req: WatchRequest,
    printer: &mut Printer,
    out: &mut W,
    interrupt: F,
) -> anyhow::Result<()>
where
    W: Write,
    F: std::future::Future<Output = ()>,
{
    let follow = req.follow;
    let server = conn.server.as_str();
    tokio::pin!(interrupt);
    let connect = tokio::select! {
        () = &mut interrupt => return Ok(()),
        c = conn.connect() => c,
    };
    let mut client = WatchClient::new(connect.with_context(|| format!("cannot reach {server}"))?)
        .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
    let mut stream = client
        .flows(req)
        .await
        .map_err(|s| status_error(server, &s))?
        .into_inner();
    loop {
        let msg = tokio::select! {
            () = &mut interrupt => return Ok(()),
            m = stream.message() => m,
        };
        match msg {
            Ok(Some(e)) => {
                printer.print(out, &e)?;
                if follow {
                    out.flush()?;
                }
            }
            Ok(None) if follow => {
                bail!("{server} closed the stream (it is shutting down or restarting)")
            }
            Ok(None) => return Ok(()),
            Err(s) => return Err(status_error(server, &s)),
        }
    }
}

/// A clear message for a gRPC error.
fn status_error(server: &str, s: &tonic::Status) -> anyhow::Error {
    use tonic::Code;
    match s.code() {
        Code::Unavailable => anyhow::anyhow!("lost the connection to {server}: {}", s.message()),
        Code::InvalidArgument => anyhow::anyhow!("{server} refused the request: {}", s.message()),
        Code::Unimplemented => anyhow::anyhow!(
            "{server} does not serve live flows (Watch.Flows): {}",
            s.message()
        ),
        Code::Cancelled => anyhow::anyhow!("{server} cancelled the stream"),
        _ => anyhow::anyhow!("{server}: {}", s.message()),
    }
}

/// The short kind label of an event.
pub fn kind_label(e: &FlowEvent) -> &'static str {
    match &e.event {
        Some(Event::CallState(_)) => "call",
        Some(Event::MediaStats(_)) => "media",
        Some(Event::Registration(_)) => "reg",
        Some(Event::Alert(_)) => "alert",
        Some(Event::LostEvents(_)) => "lost",
        Some(Event::SipMessage(_)) => "sip",
        None => "?",
    }
}

fn user(p: &Option<Party>) -> &str {
    match p {
        Some(p) if !p.user.is_empty() => &p.user,
        _ => "-",
    }
}

/// The details of an event, without time, agent and call.
pub fn summary(e: &FlowEvent) -> String {
    match &e.event {
        Some(Event::CallState(cs)) => {
            let mut s = format!(
                "{} {} -> {}",
                short_name(cs.state().as_str_name(), "CALL_STATE_KIND_"),
                user(&cs.caller),
                user(&cs.callee),
            );
            if !cs.trigger.is_empty() {
                s.push_str(&format!(" ({})", cs.trigger));
            }
            if cs.disposition != 0 {
                s.push_str(&format!(
                    " {}",
                    short_name(cs.disposition().as_str_name(), "DISPOSITION_")
                ));
            }
            s
        }
        Some(Event::MediaStats(m)) => match &m.leg {
            Some(l) => {
                let dir = match l.direction() {
                    MediaDirection::CallerToCallee => "caller->callee",
                    MediaDirection::CalleeToCaller => "callee->caller",
                    MediaDirection::Unspecified => "?",
                };
                let codec = if l.codec.is_empty() { "-" } else { &l.codec };
                let mos = if l.mos > 0.0 {
                    format!("{:.2}", l.mos)
                } else {
                    "-".into()
                };
                format!(
                    "{dir} {codec} loss {:.2}% jitter {:.1}ms mos {mos}",
                    l.loss_pct, l.mean_jitter_ms
                )
            }
            None => "-".into(),
        },
        Some(Event::Registration(r)) => format!(
            "{} {} expires {}s contacts {}",
            user(&r.aor),
            r.status_code,
            r.expires_s,
            r.contact_count
        ),
        Some(Event::Alert(a)) => format!(
            "{} {}: {}",
            short_name(a.severity().as_str_name(), "ALERT_SEVERITY_"),
            a.kind,
            a.message
        ),
        Some(Event::LostEvents(l)) => {
            let source = match l.source() {
                LostEventsSource::KernelRing => "kernel ring buffer full",
                LostEventsSource::AgentQueue => "agent queue full",
                LostEventsSource::Relay => "relay from the agent fell behind",
                LostEventsSource::ClientQueue => "this client was too slow",
                LostEventsSource::Unspecified => "unknown",
            };
            format!("{} events lost ({source})", l.count)
        }
        Some(Event::SipMessage(m)) => {
            let dir = match m.direction() {
                SipDirection::Ingress => " in",
                SipDirection::Egress => " out",
                SipDirection::Unspecified => "",
            };
            format!(
                "{} -> {} {} (CSeq {} {}){}{}",
                m.from,
                m.to,
                m.method_or_status,
                m.cseq,
                m.cseq_method,
                if m.has_sdp { " sdp" } else { "" },
                dir
            )
        }
        None => "-".into(),
    }
}

/// The JSON object of an event: the proto field names, with the event's kind as a key of
/// the object itself (the proto3 JSON mapping of a oneof).
pub fn to_json(e: &FlowEvent) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Value::Object(obj) = &mut v {
        if let Some(Value::Object(inner)) = obj.remove("event") {
            obj.extend(inner);
        }
    }
    v
}

/// Prints events in one format.
#[derive(Debug)]
pub struct Printer {
    format: FlowsFormat,
    header_done: bool,
}

/// Table column widths: time, agent, kind, call.
const WIDTHS: [usize; 4] = [24, 12, 5, 33];

fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        format!("{s:<width$}")
    } else {
        let cut: String = s.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

impl Printer {
    /// A printer for `format`.
    pub fn new(format: FlowsFormat) -> Self {
        Printer {
            format,
            header_done: false,
        }
    }

    /// Prints one event.
    pub fn print<W: Write>(&mut self, w: &mut W, e: &FlowEvent) -> io::Result<()> {
        let call = if e.call_id.is_empty() {
            "-"
        } else {
            &e.call_id
        };
        let agent = if e.agent_id.is_empty() {
            "-"
        } else {
            &e.agent_id
        };
        match self.format {
            FlowsFormat::Compact => writeln!(
                w,
                "{} {agent} {} {call} {}",
                format_time_ms(e.time_ms),
                kind_label(e),
                summary(e)
            ),
            FlowsFormat::Json => {
                serde_json::to_writer(&mut *w, &to_json(e))?;
                writeln!(w)
            }
            FlowsFormat::Table => {
                if !self.header_done {
                    self.header_done = true;
                    let [t, a, k, c] = WIDTHS;
                    writeln!(
                        w,
                        "{} {} {} {} DETAILS",
                        fit("TIME", t),
                        fit("AGENT", a),
                        fit("KIND", k),
                        fit("CALL", c)
                    )?;
                }
                let [t, a, k, c] = WIDTHS;
                writeln!(
                    w,
                    "{} {} {} {} {}",
                    fit(&format_time_ms(e.time_ms), t),
                    fit(agent, a),
                    fit(kind_label(e), k),
                    fit(call, c),
                    summary(e)
                )
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use collector_proto::v1::{
        Alert, CallState, Disposition, LostEvents, MediaLeg, MediaStats, SipMessage,
    };

    /// 2023-11-14T22:13:20Z is Unix 1_700_000_000 (`date -u -d @1700000000`).
    const T: u64 = 1_700_000_000_123;

    fn events() -> Vec<FlowEvent> {
        vec![
            FlowEvent {
                tenant: String::new(),
                time_ms: T,
                agent_id: "edge-1".into(),
                call_id: "cid_k1_aaaa".into(),
                event: Some(Event::CallState(CallState {
                    state: CallStateKind::Answered as i32,
                    caller: Some(Party {
                        user: "n_k1_alice".into(),
                        domain: "d_k1_x".into(),
                        display: String::new(),
                    }),
                    callee: Some(Party {
                        user: "n_k1_bob".into(),
                        ..Default::default()
                    }),
                    trigger: "200".into(),
                    disposition: 0,
                    cdr: None,
                })),
            },
            FlowEvent {
                tenant: String::new(),
                time_ms: T + 5_000,
                agent_id: "edge-1".into(),
                call_id: "cid_k1_aaaa".into(),
                event: Some(Event::MediaStats(MediaStats {
                    leg: Some(Box::new(MediaLeg {
                        direction: MediaDirection::CalleeToCaller as i32,
                        codec: "PCMU".into(),
                        loss_pct: 1.25,
                        mean_jitter_ms: 3.44,
                        mos: 4.1,
                        src_ip: "192.0.2.0/24".into(),
                        ..Default::default()
                    })),
                    interval_ms: 5_000,
                })),
            },
            FlowEvent {
                tenant: String::new(),
                time_ms: T + 6_000,
                agent_id: "edge-1".into(),
                call_id: "cid_k1_aaaa".into(),
                event: Some(Event::SipMessage(SipMessage {
                    method_or_status: "BYE".into(),
                    cseq: 2,
                    cseq_method: "BYE".into(),
                    from: "caller".into(),
                    to: "sbc".into(),
                    direction: SipDirection::Ingress as i32,
                    transport: "UDP".into(),
                    has_sdp: false,
                })),
            },
            FlowEvent {
                tenant: String::new(),
                time_ms: T + 7_000,
                agent_id: "edge-1".into(),
                call_id: "cid_k1_aaaa".into(),
                event: Some(Event::CallState(CallState {
                    state: CallStateKind::Ended as i32,
                    caller: Some(Party {
                        user: "n_k1_alice".into(),
                        ..Default::default()
                    }),
                    callee: Some(Party {
                        user: "n_k1_bob".into(),
                        ..Default::default()
                    }),
                    trigger: "BYE".into(),
                    disposition: Disposition::Answered as i32,
                    cdr: None,
                })),
            },
            FlowEvent {
                tenant: String::new(),
                time_ms: T + 8_000,
                agent_id: "core".into(),
                call_id: String::new(),
                event: Some(Event::Alert(Alert {
                    severity: 2,
                    kind: "low_mos".into(),
                    message: "3 calls below 3.0".into(),
                })),
            },
            FlowEvent {
                tenant: String::new(),
                time_ms: T + 9_000,
                agent_id: String::new(),
                call_id: String::new(),
                event: Some(Event::LostEvents(LostEvents {
                    source: LostEventsSource::ClientQueue as i32,
                    count: 12,
                })),
            },
        ]
    }

    fn render(format: FlowsFormat, events: &[FlowEvent]) -> String {
        let mut p = Printer::new(format);
        let mut out = Vec::new();
        for e in events {
            p.print(&mut out, e).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn compact_output() {
        let want = "\
2023-11-14T22:13:20.123Z edge-1 call cid_k1_aaaa answered n_k1_alice -> n_k1_bob (200)
2023-11-14T22:13:25.123Z edge-1 media cid_k1_aaaa callee->caller PCMU loss 1.25% jitter 3.4ms mos 4.10
2023-11-14T22:13:26.123Z edge-1 sip cid_k1_aaaa caller -> sbc BYE (CSeq 2 BYE) in
2023-11-14T22:13:27.123Z edge-1 call cid_k1_aaaa ended n_k1_alice -> n_k1_bob (BYE) answered
2023-11-14T22:13:28.123Z core alert - warning low_mos: 3 calls below 3.0
2023-11-14T22:13:29.123Z - lost - 12 events lost (this client was too slow)
";
        assert_eq!(render(FlowsFormat::Compact, &events()), want);
    }

    #[test]
    fn table_output() {
        let got = render(FlowsFormat::Table, &events()[..2]);
        let want = "\
TIME                     AGENT        KIND  CALL                              DETAILS
2023-11-14T22:13:20.123Z edge-1       call  cid_k1_aaaa                       answered n_k1_alice -> n_k1_bob (200)
2023-11-14T22:13:25.123Z edge-1       media cid_k1_aaaa                       callee->caller PCMU loss 1.25% jitter 3.4ms mos 4.10
";
        assert_eq!(got, want);
        // Over-long values are cut with an ellipsis so the columns stay aligned.
        let mut long = events()[4].clone();
        long.agent_id = "a-very-long-agent-name".into();
        let row = render(FlowsFormat::Table, &[long]);
        assert!(
            row.lines().nth(1).unwrap().contains(" a-very-long… alert "),
            "{row}"
        );
    }

    #[test]
    fn json_lines_use_proto_names_and_the_kind_as_a_key() {
        let out = render(FlowsFormat::Json, &events());
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0]["time_ms"], T);
        assert_eq!(lines[0]["agent_id"], "edge-1");
        assert_eq!(lines[0]["call_state"]["state"], "CALL_STATE_KIND_ANSWERED");
        assert_eq!(lines[0]["call_state"]["caller"]["user"], "n_k1_alice");
        assert_eq!(lines[1]["media_stats"]["leg"]["mos"], 4.1);
        assert_eq!(
            lines[1]["media_stats"]["leg"]["direction"],
            "MEDIA_DIRECTION_CALLEE_TO_CALLER"
        );
        assert_eq!(
            lines[2]["sip_message"]["direction"],
            "SIP_DIRECTION_INGRESS"
        );
        assert_eq!(lines[5]["lost_events"]["count"], 12);
        assert_eq!(
            lines[5]["lost_events"]["source"],
            "LOST_EVENTS_SOURCE_CLIENT_QUEUE"
        );
        assert!(lines[0].get("event").is_none());
    }

    /// The summary field mask keeps everything the compact printer shows: the masked
    /// event prints the same line as the full one.
    #[test]
    fn summary_mask_covers_the_compact_printer() {
        let paths: Vec<String> = SUMMARY_FIELDS.iter().map(|s| (*s).to_string()).collect();
        let mask = crate::watch::FieldMask::compile(&paths).unwrap().unwrap();
        let full = events();
        let masked: Vec<FlowEvent> = full.iter().map(|e| mask.apply(e)).collect();
        assert_eq!(
            render(FlowsFormat::Compact, &masked),
            render(FlowsFormat::Compact, &full)
        );
    }

    #[derive(Debug, clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        args: FlowsArgs,
    }

    fn req(argv: &[&str]) -> anyhow::Result<WatchRequest> {
        let w = Wrap::try_parse_from(std::iter::once("flows").chain(argv.iter().copied()))?;
        let pseudonyms = w.args.subject.pseudonym.clone();
        build_request(&w.args, pseudonyms, 1_000_000)
    }

    #[test]
    fn flags_become_the_request() {
        let r = req(&[]).unwrap();
        assert_eq!((r.follow, r.last_n, r.since_ms), (false, DEFAULT_LAST, 0));
        assert!(r.allow.is_empty());
        assert!(!r.field_mask.is_empty());
        let r = req(&["-f"]).unwrap();
        assert_eq!((r.follow, r.last_n), (true, 0));
        let r = req(&[
            "--since",
            "10m",
            "--agent",
            "a,b",
            "--type",
            "call-state,alert",
            "--state",
            "answered",
            "--pseudonym",
            "tel_k1_aaaa",
            "--mos-below",
            "3.5",
            "--loss-above",
            "1",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!((r.since_ms, r.last_n), (1_000_000 - 600_000, 0));
        let f = &r.allow[0];
        assert_eq!(f.agent_id, ["a", "b"]);
        assert_eq!(
            f.event_type,
            [FlowEventType::CallState as i32, FlowEventType::Alert as i32]
        );
        assert_eq!(f.call_state, [CallStateKind::Answered as i32]);
        assert_eq!(f.pseudonym, ["tel_k1_aaaa"]);
        assert!(f.number.is_empty(), "a number never goes to the server");
        assert_eq!((f.mos_below, f.loss_above_pct), (Some(3.5), Some(1.0)));
        assert!(r.field_mask.is_empty(), "json asks for every field");
        assert!(req(&["--type", "bogus"]).is_err());
        assert!(req(&["--state", "ringing-ish"]).is_err());
        assert!(req(&["--mos-below", "7"]).is_err());
        assert!(req(&["--number", "1", "--pseudonym", "p"]).is_err());
        assert!(req(&["--follow", "--until", "1m"]).is_err());
    }

    async fn wait_for_subscribers(hub: &crate::watch::Hub, n: usize) {
        for _ in 0..500 {
            if hub.stats().subscribers == n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("expected {n} followers");
    }

    /// Against a real collector: the stream ends cleanly without --follow, and a follow
    /// stream ended by the server is reported, not hung on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_against_a_collector() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = crate::server::watch::relay(crate::server::watch::RelayOptions::default());
        let hub = std::sync::Arc::clone(service.hub());
        for e in events() {
            hub.publish(e);
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::watch::serve_service(listener, service, async {
            let _ = stopped.await;
        }));
        let w = Wrap::try_parse_from(["flows", "--server", &url, "--type", "media-stats"]).unwrap();
        let req = build_request(&w.args, Vec::new(), T + 60_000).unwrap();
        let mut out = Vec::new();
        let mut p = Printer::new(FlowsFormat::Compact);
        watch(&w.args.conn, req, &mut p, &mut out, std::future::pending())
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2023-11-14T22:13:25.123Z edge-1 media cid_k1_aaaa callee->caller PCMU loss 1.25% jitter 3.4ms mos 4.10\n\
             2023-11-14T22:13:29.123Z - lost - 12 events lost (this client was too slow)\n"
        );

        // Ctrl-C (the interrupt) ends a follow stream cleanly.
        let w = Wrap::try_parse_from(["flows", "--server", &url, "-f", "--last", "1"]).unwrap();
        let req = build_request(&w.args, Vec::new(), T).unwrap();
        let (int_tx, int_rx) = tokio::sync::oneshot::channel::<()>();
        let conn2 = w.args.conn.clone();
        let follower = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut p = Printer::new(FlowsFormat::Compact);
            let r = watch(&conn2, req, &mut p, &mut out, async {
                let _ = int_rx.await;
            })
            .await;
            (r, String::from_utf8(out).unwrap())
        });
        wait_for_subscribers(&hub, 1).await;
        int_tx.send(()).unwrap();
        let (r, printed) = follower.await.unwrap();
        r.unwrap();
        assert!(printed.lines().count() <= 1, "{printed}");

        // The server going away ends a follow stream with a clear error.
        wait_for_subscribers(&hub, 0).await;
        let req = build_request(&w.args, Vec::new(), T).unwrap();
        let conn3 = w.args.conn.clone();
        let follower = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut p = Printer::new(FlowsFormat::Compact);
            watch(&conn3, req, &mut p, &mut out, std::future::pending()).await
        });
        wait_for_subscribers(&hub, 1).await;
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        let err = tokio::time::timeout(std::time::Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{url} closed the stream (it is shutting down or restarting)")
        );
        // And with no server at all, the message names it.
        let err = watch(
            &w.args.conn,
            WatchRequest::default(),
            &mut Printer::new(FlowsFormat::Json),
            &mut Vec::new(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), format!("cannot reach {url}"));
    }
}
