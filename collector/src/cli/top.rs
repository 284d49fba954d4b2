//! `collector top`: a terminal view of live calls from the collector's relay or an agent
//! (ratatui over crossterm). The upper pane lists active calls (state, duration, codec,
//! per-direction loss, jitter and MOS), sortable from the keyboard; the lower pane shows the
//! selected call's SIP message ladder as sngrep draws it (hops as columns, one arrow per
//! message, time offsets from the first message). Everything shown is as the agent's
//! privacy policy left it: pseudonyms, truncated addresses or side labels.
//!
//! The model ([`TopState`]) is fed events and drawn by a pure function ([`draw`]), so the
//! screen can be tested on ratatui's `TestBackend`.
use std::{
    collections::HashMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use clap::Args;
use collector_proto::v1::{
    flow_event::Event, watch_client::WatchClient, CallStateKind, FlowEvent, FlowEventType,
    FlowFilter, MediaDirection, WatchRequest,
};
use ratatui::{
    crossterm::event::{self, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Paragraph, Row, Table, TableState},
    Frame,
};

use crate::present::short_name;

/// Calls kept in the view at most (the oldest ended, then the oldest started, go first).
pub const MAX_CALLS: usize = 5_000;
/// SIP messages kept per call for the ladder.
pub const MAX_LADDER: usize = 500;
/// Hops (ladder columns) drawn at most; further hops share the last column.
pub const MAX_HOPS: usize = 6;
/// How long an ended call stays on screen.
pub const LINGER_MS: u64 = 10_000;
/// Events buffered between the network task and the screen.
const FEED_QUEUE: usize = 8_192;

/// `collector top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Collector (relay of every agent) or agent to watch, and how to reach it (TLS,
    /// client certificate, token: the same flags as every verb that talks to a server).
    #[command(flatten)]
    pub conn: super::connect::ConnectArgs,
    /// Only these agents (repeat or comma-separate).
    #[arg(long = "agent", value_delimiter = ',')]
    pub agents: Vec<String>,
}

/// Quality of one direction of a call's media, from its latest interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegQuality {
    /// Loss, in percent.
    pub loss_pct: f64,
    /// Mean jitter, in milliseconds.
    pub jitter_ms: f64,
    /// MOS (0 = not computed).
    pub mos: f64,
}

/// One message of a call's ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderRow {
    /// When it was seen (Unix ms).
    pub time_ms: u64,
    /// Sending hop.
    pub from: String,
    /// Receiving hop.
    pub to: String,
    /// Method or status code.
    pub label: String,
    /// CSeq number.
    pub cseq: u32,
    /// Whether it carried SDP.
    pub has_sdp: bool,
}

/// One call as the view knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// Agent that saw it.
    pub agent: String,
    /// Call-ID (pseudonymized).
    pub call_id: String,
    /// Latest state.
    pub state: CallStateKind,
    /// Caller (pseudonymized user).
    pub caller: String,
    /// Callee (pseudonymized user).
    pub callee: String,
    /// First event of the call (Unix ms).
    pub first_ms: u64,
    /// When it ended (Unix ms), if it has.
    pub ended_ms: Option<u64>,
    /// SIP method or status code of the latest state change (e.g. "INVITE", "200").
    pub trigger: String,
    /// Codec of the latest media interval.
    pub codec: String,
    /// Caller → callee quality.
    pub forward: Option<LegQuality>,
    /// Callee → caller quality.
    pub backward: Option<LegQuality>,
    /// SIP messages, oldest first (at most [`MAX_LADDER`]).
    pub ladder: Vec<LadderRow>,
}

/// Sort orders of the call list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Longest first.
    Duration,
    /// By state, then duration.
    State,
    /// Worst MOS first.
    Mos,
    /// Highest loss first.
    Loss,
    /// Highest jitter first.
    Jitter,
}

impl SortKey {
    fn label(self) -> &'static str {
        match self {
            SortKey::Duration => "duration",
            SortKey::State => "state",
            SortKey::Mos => "mos",
            SortKey::Loss => "loss",
            SortKey::Jitter => "jitter",
        }
    }
}

/// What the screen shows.
#[derive(Debug, Clone)]
pub struct TopState {
    calls: HashMap<(String, String), CallRow>,
    /// Events lost on the way (sum of every LostEvents notice).
    pub lost: u64,
    /// Sort order.
    pub sort: SortKey,
    /// Reverse the sort order.
    pub reversed: bool,
    /// The selected call (agent, Call-ID): the selection follows the call when rows are
    /// re-sorted or calls come and go, as a row index would not.
    selected: Option<(String, String)>,
    /// The selected call's row when last placed, so that when the call goes the selection
    /// moves to the call now in its place rather than to the top.
    selected_row: usize,
    /// Where the events come from.
    pub source: String,
    /// Connection status line (why the stream ended, if it did).
    pub status: Option<String>,
}

fn worst<F: Fn(&LegQuality) -> f64>(c: &CallRow, f: F) -> Option<f64> {
    [c.forward, c.backward]
        .iter()
        .flatten()
        .map(f)
        .reduce(f64::max)
}

impl TopState {
    /// An empty view of `source`.
    pub fn new(source: impl Into<String>) -> Self {
        TopState {
            calls: HashMap::new(),
            lost: 0,
            sort: SortKey::Duration,
            reversed: false,
            selected: None,
            selected_row: 0,
            source: source.into(),
            status: None,
        }
    }

    /// Feeds one event.
    pub fn apply(&mut self, e: &FlowEvent) {
        if let Some(Event::LostEvents(l)) = &e.event {
            self.lost = self.lost.saturating_add(l.count);
            return;
        }
        if e.call_id.is_empty() {
            return;
        }
        let key = (e.agent_id.clone(), e.call_id.clone());
        if !self.calls.contains_key(&key) {
            if self.calls.len() >= MAX_CALLS {
                self.evict_one();
            }
            self.calls.insert(
                key.clone(),
                CallRow {
                    agent: e.agent_id.clone(),
                    call_id: e.call_id.clone(),
                    state: CallStateKind::Unspecified,
                    caller: String::new(),
                    callee: String::new(),
                    first_ms: e.time_ms,
                    ended_ms: None,
                    trigger: String::new(),
                    codec: String::new(),
                    forward: None,
                    backward: None,
                    ladder: Vec::new(),
                },
            );
        }
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        if e.time_ms > 0 && e.time_ms < c.first_ms {
            c.first_ms = e.time_ms;
        }
        match &e.event {
            Some(Event::CallState(cs)) => {
                c.state = cs.state();
                if !cs.trigger.is_empty() {
                    c.trigger.clone_from(&cs.trigger);
                }
                if let Some(p) = &cs.caller {
                    if !p.user.is_empty() {
                        c.caller.clone_from(&p.user);
                    }
                }
                if let Some(p) = &cs.callee {
                    if !p.user.is_empty() {
                        c.callee.clone_from(&p.user);
                    }
                }
                if c.state == CallStateKind::Ended {
                    c.ended_ms = Some(e.time_ms);
                }
            }
            Some(Event::MediaStats(m)) => {
                if let Some(l) = &m.leg {
                    if !l.codec.is_empty() {
                        c.codec.clone_from(&l.codec);
                    }
                    let q = Some(LegQuality {
                        loss_pct: l.loss_pct,
                        jitter_ms: l.mean_jitter_ms,
                        mos: l.mos,
                    });
                    match l.direction() {
                        MediaDirection::CallerToCallee => c.forward = q,
                        MediaDirection::CalleeToCaller => c.backward = q,
                        MediaDirection::Unspecified => {}
                    }
                }
            }
            Some(Event::SipMessage(m)) => {
                if c.ladder.len() < MAX_LADDER {
                    c.ladder.push(LadderRow {
                        time_ms: e.time_ms,
                        from: m.from.clone(),
                        to: m.to.clone(),
                        label: m.method_or_status.clone(),
                        cseq: m.cseq,
                        has_sdp: m.has_sdp,
                    });
                }
            }
            Some(Event::Registration(_) | Event::Alert(_) | Event::LostEvents(_)) | None => {}
        }
    }

    /// The call `call_id` seen by `agent`, if the view has it.
    pub fn call(&self, agent: &str, call_id: &str) -> Option<&CallRow> {
        self.calls.get(&(agent.to_owned(), call_id.to_owned()))
    }

    /// Forgets one call: the one that ended first, else the one that started first.
    fn evict_one(&mut self) {
        let victim = self
            .calls
            .iter()
            .min_by_key(|(_, c)| (c.ended_ms.is_none(), c.ended_ms.unwrap_or(c.first_ms)))
            .map(|(k, _)| k.clone());
        if let Some(k) = victim {
            self.calls.remove(&k);
        }
    }

    /// Drops calls that ended more than [`LINGER_MS`] before `now_ms`; if the selected call
    /// went (or none was selected yet), selects the call now in its row.
    pub fn prune(&mut self, now_ms: u64) {
        self.calls.retain(|_, c| {
            c.ended_ms
                .is_none_or(|t| now_ms.saturating_sub(t) <= LINGER_MS)
        });
        let rows = self.rows(now_ms);
        let row = self.selected_index(&rows);
        let key = rows.get(row).map(|c| (c.agent.clone(), c.call_id.clone()));
        self.selected = key;
        self.selected_row = row;
    }

    /// The row of the selected call among `rows` (from [`TopState::rows`]): where that call
    /// is now, else (it went, or nothing is selected) its last row, within the list.
    pub fn selected_index(&self, rows: &[&CallRow]) -> usize {
        let found = self.selected.as_ref().and_then(|(agent, call_id)| {
            rows.iter()
                .position(|c| &c.agent == agent && &c.call_id == call_id)
        });
        found.unwrap_or_else(|| self.selected_row.min(rows.len().saturating_sub(1)))
    }

    /// The selected call's (agent, Call-ID), if any.
    pub fn selected(&self) -> Option<(&str, &str)> {
        self.selected
            .as_ref()
            .map(|(a, c)| (a.as_str(), c.as_str()))
    }

    /// Moves the selection `by` rows (negative: up) from the selected call's row in the
    /// current order, staying within the list.
    fn move_selection(&mut self, by: isize, now_ms: u64) {
        let rows = self.rows(now_ms);
        if rows.is_empty() {
            return;
        }
        let row = self
            .selected_index(&rows)
            .saturating_add_signed(by)
            .min(rows.len() - 1);
        let key = rows.get(row).map(|c| (c.agent.clone(), c.call_id.clone()));
        self.selected = key;
        self.selected_row = row;
    }

    /// The calls in display order.
    pub fn rows(&self, now_ms: u64) -> Vec<&CallRow> {
        let mut rows: Vec<&CallRow> = self.calls.values().collect();
        let dur = |c: &CallRow| duration_ms(c, now_ms);
        rows.sort_by(|a, b| {
            let by = match self.sort {
                SortKey::Duration => dur(b).cmp(&dur(a)),
                SortKey::State => (a.state as i32)
                    .cmp(&(b.state as i32))
                    .then(dur(b).cmp(&dur(a))),
                // Calls without a MOS sort last.
                SortKey::Mos => {
                    let m = |c: &CallRow| {
                        [c.forward, c.backward]
                            .iter()
                            .flatten()
                            .map(|q| q.mos)
                            .filter(|m| *m > 0.0)
                            .reduce(f64::min)
                            .unwrap_or(f64::INFINITY)
                    };
                    m(a).total_cmp(&m(b))
                }
                SortKey::Loss => worst(b, |q| q.loss_pct)
                    .unwrap_or(-1.0)
                    .total_cmp(&worst(a, |q| q.loss_pct).unwrap_or(-1.0)),
                SortKey::Jitter => worst(b, |q| q.jitter_ms)
                    .unwrap_or(-1.0)
                    .total_cmp(&worst(a, |q| q.jitter_ms).unwrap_or(-1.0)),
            };
            // A stable tie-break keeps rows from jumping between frames.
            let by = by.then_with(|| (&a.agent, &a.call_id).cmp(&(&b.agent, &b.call_id)));
            if self.reversed {
                by.reverse()
            } else {
                by
            }
        });
        rows
    }

    /// Handles a key (`now_ms` orders the rows the selection moves over); returns false
    /// when the user asked to quit.
    pub fn on_key(&mut self, code: KeyCode, modifiers: KeyModifiers, now_ms: u64) -> bool {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Down | KeyCode::Char('j') => self.move_selection(1, now_ms),
            KeyCode::Up | KeyCode::Char('k') => self.move_selection(-1, now_ms),
            KeyCode::Home | KeyCode::Char('g') => self.move_selection(isize::MIN, now_ms),
            KeyCode::Char('d') => self.sort = SortKey::Duration,
            KeyCode::Char('s') => self.sort = SortKey::State,
            KeyCode::Char('m') => self.sort = SortKey::Mos,
            KeyCode::Char('l') => self.sort = SortKey::Loss,
            KeyCode::Char('t') => self.sort = SortKey::Jitter,
            KeyCode::Char('r') => self.reversed = !self.reversed,
            _ => {}
        }
        true
    }
}

fn duration_ms(c: &CallRow, now_ms: u64) -> u64 {
    c.ended_ms.unwrap_or(now_ms).saturating_sub(c.first_ms)
}

/// `mm:ss`, or `h:mm:ss` from an hour on.
pub fn format_duration(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

fn quality_cells(q: Option<LegQuality>) -> [String; 3] {
    match q {
        Some(q) => [
            format!("{:.1}%", q.loss_pct),
            format!("{:.1}", q.jitter_ms),
            if q.mos > 0.0 {
                format!("{:.2}", q.mos)
            } else {
                "-".into()
            },
        ],
        None => ["-".into(), "-".into(), "-".into()],
    }
}

/// A message a hop sends to itself (both ends of it look the same, e.g. two addresses that
/// privacy truncation made one), drawn beside that hop's own line: on its right up to the
/// next hop's line, or, at the last hop when the pane's edge would cut it, on its left.
fn self_message(
    mut line: Vec<char>,
    hops: &[&str],
    hop: usize,
    x: &dyn Fn(usize) -> usize,
    width: usize,
    label: &str,
) -> String {
    const OFFSET: usize = 10;
    let at = x(hop);
    let right: Vec<char> = format!(" ⟲ {label}").chars().collect();
    let left: Vec<char> = format!("{label} ⟲ ").chars().collect();
    let next = (hop + 1 < hops.len()).then(|| x(hop + 1));
    let room_right = next.unwrap_or(width).saturating_sub(at + 1);
    let room_left = at.saturating_sub(if hop == 0 { OFFSET } else { x(hop - 1) + 1 });
    let (start, text) = if right.len() <= room_right || room_left < left.len() {
        // Between two hop lines the label is cut before the next one; past the last hop
        // it runs on (the pane cuts it only when there is no room on either side).
        let keep = match next {
            Some(_) => room_right.saturating_sub(1),
            None => right.len(),
        };
        (at + 1, right.into_iter().take(keep).collect::<Vec<_>>())
    } else {
        (at - left.len(), left)
    };
    if line.len() < start + text.len() {
        line.resize(start + text.len(), ' ');
    }
    for (k, ch) in text.into_iter().enumerate() {
        if let Some(slot) = line.get_mut(start + k) {
            *slot = ch;
        }
    }
    line.into_iter().collect::<String>().trim_end().to_string()
}

/// The ladder of `rows` as text lines `width` columns wide, sngrep style: a header with
/// the hops, then per message its time offset from the first message and an arrow from
/// the sending hop's column to the receiving hop's.
pub fn ladder_lines(rows: &[LadderRow], width: usize) -> Vec<String> {
    const OFFSET: usize = 10;
    // Room right of the last hop line for the rest of its centred name.
    const RIGHT: usize = 8;
    let mut hops: Vec<&str> = Vec::new();
    for r in rows {
        for h in [r.from.as_str(), r.to.as_str()] {
            if !hops.contains(&h) && hops.len() < MAX_HOPS {
                hops.push(h);
            }
        }
    }
    if hops.is_empty() {
        return vec!["no SIP messages seen for this call".into()];
    }
    let col_of = |h: &str| hops.iter().position(|x| *x == h).unwrap_or(hops.len() - 1);
    let usable = width.saturating_sub(OFFSET + 1 + RIGHT).max(hops.len() * 4);
    let spacing = if hops.len() > 1 {
        usable / (hops.len() - 1)
    } else {
        usable
    };
    let x = |i: usize| OFFSET + 1 + i * spacing;
    let line_width = x(hops.len() - 1) + 2;
    let mut out = Vec::with_capacity(rows.len() + 1);

    let mut header = vec![' '; line_width + spacing];
    for (i, h) in hops.iter().enumerate() {
        let name: Vec<char> = h.chars().take(spacing.saturating_sub(1).max(4)).collect();
        let start = x(i).saturating_sub(name.len() / 2);
        for (k, ch) in name.into_iter().enumerate() {
            if let Some(slot) = header.get_mut(start + k) {
                *slot = ch;
            }
        }
    }
    out.push(
        header
            .into_iter()
            .collect::<String>()
            .trim_end()
            .to_string(),
    );

    let t0 = rows.first().map_or(0, |r| r.time_ms);
    for r in rows {
        let mut line = vec![' '; line_width];
        let offset = format!("+{:.3}", r.time_ms.saturating_sub(t0) as f64 / 1000.0);
        for (k, ch) in offset.chars().take(OFFSET - 1).enumerate() {
            if let Some(slot) = line.get_mut(k) {
                *slot = ch;
            }
        }
        for i in 0..hops.len() {
            if let Some(slot) = line.get_mut(x(i)) {
                *slot = '│';
            }
        }
        let (a, b) = (col_of(&r.from), col_of(&r.to));
        let mut label = r.label.clone();
        if r.has_sdp {
            label.push_str(" (SDP)");
        }
        if a == b {
            out.push(self_message(line, &hops, a, &x, width, &label));
            continue;
        }
        let (lo, hi) = (x(a.min(b)), x(a.max(b)));
        for slot in line.iter_mut().take(hi).skip(lo + 1) {
            *slot = '─';
        }
        if a < b {
            if let Some(slot) = line.get_mut(hi - 1) {
                *slot = '>';
            }
        } else if let Some(slot) = line.get_mut(lo + 1) {
            *slot = '<';
        }
        // The label is centred on the arrow, cut to leave at least the arrow's ends.
        let span = hi - lo - 1;
        let text: Vec<char> = format!(" {label} ")
            .chars()
            .take(span.saturating_sub(2))
            .collect();
        if !text.is_empty() {
            let start = lo + 1 + (span - text.len()) / 2;
            for (k, ch) in text.into_iter().enumerate() {
                if let Some(slot) = line.get_mut(start + k) {
                    *slot = ch;
                }
            }
        }
        out.push(line.into_iter().collect::<String>().trim_end().to_string());
    }
    out
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, state: &TopState, now_ms: u64) {
    let [list_area, ladder_area, status_area] = Layout::vertical([
        Constraint::Percentage(55),
        Constraint::Min(5),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let rows = state.rows(now_ms);
    let header = Row::new([
        "AGENT", "CALLER", "CALLEE", "STATE", "DUR", "CODEC", "LOSS→", "LOSS←", "JIT→", "JIT←",
        "MOS→", "MOS←",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let table_rows = rows.iter().map(|c| {
        let [lf, jf, mf] = quality_cells(c.forward);
        let [lb, jb, mb] = quality_cells(c.backward);
        Row::new(vec![
            c.agent.clone(),
            c.caller.clone(),
            c.callee.clone(),
            short_name(c.state.as_str_name(), "CALL_STATE_KIND_"),
            format_duration(duration_ms(c, now_ms)),
            if c.codec.is_empty() {
                "-".into()
            } else {
                c.codec.clone()
            },
            lf,
            lb,
            jf,
            jb,
            mf,
            mb,
        ])
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(11),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
    ];
    let title = format!(
        " calls: {} · sort: {}{} ",
        rows.len(),
        state.sort.label(),
        if state.reversed { " (reversed)" } else { "" }
    );
    let table = Table::new(table_rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let row = state.selected_index(&rows);
    let mut ts = TableState::default();
    if !rows.is_empty() {
        ts.select(Some(row));
    }
    frame.render_stateful_widget(table, list_area, &mut ts);

    let selected = rows.get(row);
    let (ladder_title, lines) = match selected {
        Some(c) => (
            format!(" SIP ladder · {} · {} ", c.agent, c.call_id),
            ladder_lines(&c.ladder, usize::from(ladder_area.width.saturating_sub(2))),
        ),
        None => (" SIP ladder ".to_string(), vec!["no calls".to_string()]),
    };
    let ladder = Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>())
        .block(Block::default().borders(Borders::ALL).title(ladder_title));
    frame.render_widget(ladder, ladder_area);

    let status = format!(
        "{} · lost events: {} · {} · ↑↓ select, d/s/m/l/t sort, r reverse, q quit",
        state.source,
        state.lost,
        state.status.as_deref().unwrap_or("live")
    );
    frame.render_widget(Paragraph::new(status), status_area);
}

/// What the network task tells the screen.
enum Feed {
    Event(Box<FlowEvent>),
    Ended(String),
}

/// The request `top` sends: every buffered event (for calls already up), then live ones,
/// only the kinds and fields the screen shows.
pub fn request(args: &TopArgs) -> WatchRequest {
    let fields = [
        "time_ms",
        "agent_id",
        "call_id",
        "call_state.state",
        "call_state.caller.user",
        "call_state.callee.user",
        "media_stats.leg.direction",
        "media_stats.leg.codec",
        "media_stats.leg.loss_pct",
        "media_stats.leg.mean_jitter_ms",
        "media_stats.leg.mos",
        "sip_message",
    ];
    WatchRequest {
        follow: true,
        last_n: u32::MAX,
        allow: vec![FlowFilter {
            agent_id: args.agents.clone(),
            event_type: [
                FlowEventType::CallState,
                FlowEventType::MediaStats,
                FlowEventType::SipMessage,
            ]
            .into_iter()
            .map(|t| t as i32)
            .collect(),
            ..Default::default()
        }],
        field_mask: fields.iter().map(|f| (*f).to_string()).collect(),
        ..Default::default()
    }
}

async fn feed(
    conn: super::connect::ConnectArgs,
    req: WatchRequest,
    tx: tokio::sync::mpsc::Sender<Feed>,
) {
    let server = conn.server.clone();
    let why = async {
        let channel = conn
            .connect()
            .await
            .with_context(|| format!("cannot reach {server}"))?;
        let mut client =
            WatchClient::new(channel).max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
        let mut stream = client.flows(req).await?.into_inner();
        while let Some(e) = stream.message().await? {
            if tx.send(Feed::Event(Box::new(e))).await.is_err() {
                return anyhow::Ok(String::new());
            }
        }
        Ok(format!("{server} closed the stream"))
    }
    .await;
    let msg = match why {
        Ok(m) => m,
        Err(e) => format!("{e:#}"),
    };
    let _ = tx.send(Feed::Ended(msg)).await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the verb until `q`, `Esc` or Ctrl-C.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(FEED_QUEUE);
    rt.spawn(feed(args.conn.clone(), request(&args), tx));
    let mut state = TopState::new(args.conn.server.clone());
    // `init` enters the alternate screen and raw mode, and restores them on panic.
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            for _ in 0..FEED_QUEUE {
                match rx.try_recv() {
                    Ok(Feed::Event(e)) => state.apply(&e),
                    Ok(Feed::Ended(why)) => {
                        state.status = Some(format!("disconnected: {why}"));
                    }
                    Err(_) => break,
                }
            }
            let now = now_ms();
            state.prune(now);
            terminal.draw(|f| draw(f, &state, now))?;
            if event::poll(Duration::from_millis(250))? {
                if let event::Event::Key(k) = event::read()? {
                    if k.kind == KeyEventKind::Press && !state.on_key(k.code, k.modifiers, now_ms())
                    {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    rt.shutdown_background();
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use super::*;
    use collector_proto::v1::{CallState, MediaLeg, MediaStats, Party, SipMessage};
    use ratatui::{backend::TestBackend, Terminal};

    const T: u64 = 1_700_000_000_000;

    /// A call state event of agent `edge-1` (also the web console's live page's fixture).
    pub(crate) fn cs(t: u64, call: &str, state: CallStateKind, a: &str, b: &str) -> FlowEvent {
        FlowEvent {
            tenant: String::new(),
            time_ms: t,
            agent_id: "edge-1".into(),
            call_id: call.into(),
            event: Some(Event::CallState(CallState {
                state: state as i32,
                caller: Some(Party {
                    user: a.into(),
                    ..Default::default()
                }),
                callee: Some(Party {
                    user: b.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    /// A media statistics event of agent `edge-1`.
    pub(crate) fn ms(
        t: u64,
        call: &str,
        dir: MediaDirection,
        loss: f64,
        jitter: f64,
        mos: f64,
    ) -> FlowEvent {
        FlowEvent {
            tenant: String::new(),
            time_ms: t,
            agent_id: "edge-1".into(),
            call_id: call.into(),
            event: Some(Event::MediaStats(MediaStats {
                leg: Some(Box::new(MediaLeg {
                    direction: dir as i32,
                    codec: "PCMA".into(),
                    loss_pct: loss,
                    mean_jitter_ms: jitter,
                    mos,
                    ..Default::default()
                })),
                interval_ms: 5_000,
            })),
        }
    }

    fn sip(
        t: u64,
        call: &str,
        from: &str,
        to: &str,
        label: &str,
        cseq: u32,
        sdp: bool,
    ) -> FlowEvent {
        FlowEvent {
            tenant: String::new(),
            time_ms: t,
            agent_id: "edge-1".into(),
            call_id: call.into(),
            event: Some(Event::SipMessage(SipMessage {
                method_or_status: label.into(),
                cseq,
                cseq_method: "INVITE".into(),
                from: from.into(),
                to: to.into(),
                has_sdp: sdp,
                ..Default::default()
            })),
        }
    }

    fn fixture() -> TopState {
        let mut s = TopState::new("http://collector");
        let events = [
            cs(T, "c1", CallStateKind::Trying, "n_alice", "n_bob"),
            sip(T, "c1", "caller", "sbc", "INVITE", 1, true),
            sip(T + 12, "c1", "sbc", "caller", "100", 1, false),
            sip(T + 40, "c1", "sbc", "callee", "INVITE", 1, true),
            sip(T + 900, "c1", "callee", "sbc", "180", 1, false),
            sip(T + 2_500, "c1", "callee", "sbc", "200", 1, true),
            cs(T + 2_500, "c1", CallStateKind::Answered, "n_alice", "n_bob"),
            ms(
                T + 7_500,
                "c1",
                MediaDirection::CallerToCallee,
                0.5,
                2.0,
                4.3,
            ),
            ms(
                T + 7_500,
                "c1",
                MediaDirection::CalleeToCaller,
                4.0,
                12.5,
                3.1,
            ),
            cs(
                T + 20_000,
                "c2",
                CallStateKind::Ringing,
                "n_carol",
                "n_dave",
            ),
        ];
        for e in &events {
            s.apply(e);
        }
        s
    }

    #[test]
    fn state_follows_events_and_sorts() {
        let s = fixture();
        let now = T + 65_000;
        let rows = s.rows(now);
        assert_eq!(rows.len(), 2);
        // Duration: c1 up 65 s, c2 45 s.
        assert_eq!(rows[0].call_id, "c1");
        assert_eq!(format_duration(duration_ms(rows[0], now)), "01:05");
        assert_eq!(rows[0].state, CallStateKind::Answered);
        assert_eq!(rows[0].forward.unwrap().mos, 4.3);
        assert_eq!(rows[0].backward.unwrap().loss_pct, 4.0);
        assert_eq!(rows[0].ladder.len(), 5);
        let mut s = s;
        // MOS: c1 has one (3.1 worst), c2 none → c1 first; reversed → c2 first.
        s.on_key(KeyCode::Char('m'), KeyModifiers::NONE, now);
        assert_eq!(s.rows(now)[0].call_id, "c1");
        s.on_key(KeyCode::Char('r'), KeyModifiers::NONE, now);
        assert_eq!(s.rows(now)[0].call_id, "c2");
        // Ended calls linger, then go.
        s.apply(&cs(
            T + 70_000,
            "c1",
            CallStateKind::Ended,
            "n_alice",
            "n_bob",
        ));
        s.prune(T + 70_000 + LINGER_MS);
        assert_eq!(s.rows(now).len(), 2);
        s.prune(T + 70_001 + LINGER_MS);
        assert_eq!(s.rows(now).len(), 1);
        assert!(!s.on_key(KeyCode::Char('q'), KeyModifiers::NONE, now));
        assert!(!s.on_key(KeyCode::Char('c'), KeyModifiers::CONTROL, now));
    }

    /// The selection is a call, not a row: it stays on that call when the list is re-sorted
    /// or a call that sorts before it arrives, and moves to the call in its row only when
    /// it goes.
    #[test]
    fn selection_follows_the_call() {
        let mut s = fixture();
        let now = T + 65_000;
        s.prune(now);
        // Nothing chosen yet: the first row (c1, the longest) is selected.
        assert_eq!(s.selected(), Some(("edge-1", "c1")));
        s.on_key(KeyCode::Down, KeyModifiers::NONE, now);
        assert_eq!(s.selected(), Some(("edge-1", "c2")));
        s.on_key(KeyCode::Down, KeyModifiers::NONE, now);
        assert_eq!(
            s.selected(),
            Some(("edge-1", "c2")),
            "stays on the last row"
        );
        // A call older than both arrives and takes the first row: c2 moves to the third
        // row and stays selected (a row index would now point at c1).
        s.apply(&cs(
            T - 30_000,
            "c0",
            CallStateKind::Answered,
            "n_erin",
            "n_frank",
        ));
        s.prune(now);
        let rows = s.rows(now);
        let ids: Vec<&str> = rows.iter().map(|c| c.call_id.as_str()).collect();
        assert_eq!(ids, ["c0", "c1", "c2"]);
        assert_eq!(s.selected_index(&rows), 2);
        assert_eq!(s.selected(), Some(("edge-1", "c2")));
        // Re-sorting (reversed) moves the row, not the selection.
        s.on_key(KeyCode::Char('r'), KeyModifiers::NONE, now);
        let rows = s.rows(now);
        assert_eq!(rows[0].call_id, "c2");
        assert_eq!(s.selected_index(&rows), 0);
        s.on_key(KeyCode::Down, KeyModifiers::NONE, now);
        assert_eq!(s.selected(), Some(("edge-1", "c1")));
        // The screen highlights and draws the ladder of the selected call.
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        terminal.draw(|f| draw(f, &s, now)).unwrap();
        let buf = terminal.backend().buffer().clone();
        let screen: String = (0..buf.area.height)
            .flat_map(|y| (0..buf.area.width).map(move |x| (x, y)))
            .map(|p| buf[p].symbol().to_string())
            .collect();
        assert!(screen.contains("SIP ladder · edge-1 · c1"), "{screen}");
        // The selected call goes: the call now in its row (reversed: c0 after c1) is
        // selected.
        s.apply(&cs(
            T + 66_000,
            "c1",
            CallStateKind::Ended,
            "n_alice",
            "n_bob",
        ));
        s.prune(T + 66_001 + LINGER_MS);
        assert_eq!(s.selected(), Some(("edge-1", "c0")));
        s.on_key(KeyCode::Home, KeyModifiers::NONE, now);
        assert_eq!(s.selected(), Some(("edge-1", "c2")));
    }

    /// Expected ladder worked out by hand from the layout rule (sngrep's call flow): at
    /// width 60 the time offsets take 10 columns and 8 stay free on the right for the last
    /// hop's name, so 3 hops share 41 columns and their lines stand at x = 11, 31 and 51;
    /// an arrow runs between two hop lines with its head next to the receiver and its
    /// label centred on it.
    #[test]
    fn ladder_as_sngrep_draws_it() {
        let s = fixture();
        let c = &s.rows(T + 65_000)[0];
        let lines = ladder_lines(&c.ladder, 60);
        let want = [
            "        caller                sbc               callee",
            "+0.000     │── INVITE (SDP) ──>│                   │",
            "+0.012     │<────── 100 ───────│                   │",
            "+0.040     │                   │── INVITE (SDP) ──>│",
            "+0.900     │                   │<────── 180 ───────│",
            "+2.500     │                   │<─── 200 (SDP) ────│",
        ];
        assert_eq!(lines, want);
        // Narrower (width 40: lines at 11, 21, 31), labels are cut to fit the arrow.
        assert_eq!(
            ladder_lines(&c.ladder, 40)[1],
            "+0.000     │─ INVITE>│         │"
        );
        // A message a hop sends to itself is drawn beside its line.
        let own = [LadderRow {
            time_ms: 0,
            from: "sbc".into(),
            to: "sbc".into(),
            label: "OPTIONS".into(),
            cseq: 1,
            has_sdp: false,
        }];
        assert_eq!(ladder_lines(&own, 20)[1], "+0.000     │ ⟲ OPTIONS");
        // With several hops, a hop's message to itself is drawn beside that hop, not after
        // the last one; at the last hop, where the pane's edge would cut it, on the left.
        let row = |from: &str, to: &str, label: &str| LadderRow {
            time_ms: 0,
            from: from.into(),
            to: to.into(),
            label: label.into(),
            cseq: 1,
            has_sdp: false,
        };
        let two = [
            row("carrier", "carrier", "INVITE"),
            row("pbx", "pbx", "INVITE"),
            row("carrier", "pbx", "ACK"),
        ];
        let lines = ladder_lines(&two, 40);
        assert_eq!(
            lines,
            [
                "        carrier                pbx",
                "+0.000     │ ⟲ INVITE           │",
                "+0.000     │           INVITE ⟲ │",
                "+0.000     │─────── ACK ───────>│",
            ]
        );
        assert_eq!(
            ladder_lines(&[], 20),
            ["no SIP messages seen for this call"]
        );
    }

    /// The request is one the watch service accepts (mask paths and filters valid).
    #[test]
    fn request_is_valid_for_the_service() {
        let req = request(&TopArgs {
            conn: crate::cli::connect::ConnectArgs::plain("http://127.0.0.1:1"),
            agents: vec!["edge-1".into()],
        });
        let plan =
            crate::watch::service::Plan::validate(&req, &Default::default(), 10_000, None).unwrap();
        assert!(plan.follow && plan.mask.is_some());
        assert_eq!(plan.window.last_n, 10_000);
    }

    #[test]
    fn screen_renders_call_list_and_ladder() {
        let s = fixture();
        let backend = TestBackend::new(120, 30);
        let mut terminal = Terminal::new(backend).unwrap();
        terminal.draw(|f| draw(f, &s, T + 65_000)).unwrap();
        let buf = terminal.backend().buffer().clone();
        let lines: Vec<String> = (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect();
        let find = |needle: &str| lines.iter().position(|l| l.contains(needle));
        let header = find("CALLER").expect("header row");
        assert!(lines[header].contains("MOS←"));
        // Row order: c1 (longest) first, with its per-direction quality.
        let c1 = find("n_alice").unwrap();
        let c2 = find("n_carol").unwrap();
        assert!(header < c1 && c1 < c2, "{lines:#?}");
        for cell in [
            "answered", "01:05", "PCMA", "0.5%", "4.0%", "2.0", "12.5", "4.30", "3.10",
        ] {
            assert!(lines[c1].contains(cell), "{cell} in {:?}", lines[c1]);
        }
        assert!(lines[c2].contains("ringing") && lines[c2].contains("00:45"));
        // The ladder pane shows the selected call's messages in order.
        assert!(find("SIP ladder · edge-1 · c1").is_some());
        let invite = find("+0.000").unwrap();
        let ok = find("+2.500").unwrap();
        assert!(lines[invite].contains(" INVITE (SDP) ") && lines[invite].contains("─>│"));
        assert!(lines[ok].contains(" 200 (SDP) ") && lines[ok].contains("│<─"));
        assert!(invite < ok);
        assert!(find("lost events: 0").is_some());
    }
}
