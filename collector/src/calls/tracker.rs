//! The call tables: SIP messages in, [`dialog::step`] events out, effects applied, CDRs and
//! flow events produced (RFC 3261 §12–§17 dialog and transaction matching).
//!
//! A call is keyed by its Call-ID; within it the initial INVITE transaction is the current
//! INVITE's CSeq, early dialogs are told apart by To-tag (forks), and the first 2xx's To-tag
//! confirms the dialog. Every message is first checked against the call's recent messages,
//! keyed by (CSeq number and method, status, To-tag): the same key on the same path
//! (addresses, hook, top Via branch) is a retransmission, on another path another hop of a
//! forwarded message (an SBC sees each message arrive and leave). Either way it is recorded,
//! never applied twice.
//!
//! Bounded: at most `max_calls` calls and `max_early` unanswered ones. A new INVITE that
//! finds the table full evicts the oldest unanswered call (its CDR says so); established
//! calls are never evicted, so when all calls are established the new INVITE is refused and
//! counted. Per call, the remembered messages, paths, early To-tags and media snapshots are
//! capped too.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
};

use collector_common::{Direction, MediaValue};
use collector_proto::v1::{
    flow_event, Alert, AlertSeverity, CallState, CallStateKind, Cdr, FlowEvent, Party,
};

use super::{
    cdr,
    dialog::{self, Effect, Ending, Event, Phase, Timers},
    media::{MediaTable, Plan, RtcpState, SdpMedia, Way},
    register::{self, Registrations},
    CallsConfig,
};
use crate::net::{SipPacket, Transport};
use crate::sip::{self, Method, SipLimits, SipMessage};

/// Nanoseconds per millisecond.
const MS: u64 = 1_000_000;
/// Messages remembered per call for deduplication.
const MAX_SEEN: usize = 64;
/// Paths remembered per message.
const MAX_PATHS: usize = 8;
/// Early-dialog To-tags remembered per call.
const MAX_EARLY_TAGS: usize = 8;
/// Media snapshots kept per call (one per re-INVITE that moved the media).
const MAX_SNAPSHOTS: usize = 16;
/// Most hops of one call whose media is bound (a call proxied through an anchoring SBC has
/// two: each with its own offer and answer).
const MAX_HOPS: usize = 4;
/// Calls remembered per SDP address for media-anchoring correlation.
const MAX_PER_ADDRESS: usize = 8;

/// A flow event with the consent value of its call (the privacy boundary needs it).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowOut {
    /// The event, identifiers in clear.
    pub event: FlowEvent,
    /// The raw value of the consent header of the call, if configured and present.
    pub consent: Option<String>,
}

/// Counters of the tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerStats {
    /// SIP messages fed.
    pub messages: u64,
    /// Messages that failed to parse.
    pub parse_errors: u64,
    /// SDP bodies that failed to parse.
    pub sdp_errors: u64,
    /// Messages cut by the capture (snap length).
    pub truncated: u64,
    /// Retransmissions recognised (not applied again).
    pub retransmissions: u64,
    /// Other hops of a forwarded message recognised (not applied again).
    pub hops: u64,
    /// In-dialog messages of no known call (the call began before the capture, or was
    /// already closed).
    pub orphans: u64,
    /// Calls created.
    pub calls: u64,
    /// Unanswered calls evicted to make room.
    pub evicted: u64,
    /// INVITEs refused because every tracked call was established.
    pub table_full: u64,
    /// 2xx responses from a second fork after the dialog was confirmed.
    pub forked_answers: u64,
    /// Early dialogs beyond the per-call limit.
    pub early_tags_dropped: u64,
    /// Media snapshots beyond the per-call limit.
    pub snapshots_dropped: u64,
    /// SDP seen on more hops of one call than are bound (its media is not measured there).
    pub hops_dropped: u64,
    /// Legs linked to another leg of their call by signalling (INVITE in, INVITE out).
    pub linked_by_signalling: u64,
    /// New legs that matched several unlinked legs by signalling: left unlinked.
    pub correlation_ambiguous: u64,
    /// Media map operations that failed.
    pub media_errors: u64,
    /// Flow events dropped because nobody drained them.
    pub flow_dropped: u64,
    /// RTCP datagrams that matched no call.
    pub rtcp_unmatched: u64,
    /// CDRs emitted.
    pub cdrs: u64,
    /// CDRs emitted for calls still in progress (shutdown, end of capture).
    pub interim: u64,
}

/// How CDR ids are made.
#[derive(Clone, Debug)]
pub enum CdrIds {
    /// Random (version 4 UUID): the agent.
    Random,
    /// Derived from a seed (the capture file's hash) and the call's order: replay, so that
    /// replaying a file twice gives the same ids.
    Derived([u8; 32]),
}

/// Which side of the call sent something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Caller,
    Callee,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// One observation of a message: a retransmission is the same message on the same path.
#[derive(Clone, Debug)]
struct Seen {
    key: u64,
    at: u64,
    paths: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Observed {
    New,
    Retransmission,
    Hop,
}

/// A media snapshot: one direction's map entry when it was retired.
#[derive(Clone, Debug)]
pub(crate) struct Snapshot {
    pub(crate) way: Way,
    pub(crate) hop: Hop,
    pub(crate) plan: Plan,
    pub(crate) value: MediaValue,
}

/// The two addresses one hop's SIP messages travel between (lower first, so both directions
/// give the same hop). A call through a proxy that keeps the Call-ID is seen on two hops;
/// a media-anchoring SBC rewrites the SDP on each, so each hop's media is bound from that
/// hop's own offer and answer: the streams really on that wire.
pub(crate) type Hop = (IpAddr, IpAddr);

/// The hop of a packet.
pub(crate) fn hop_of(pkt: &SipPacket) -> Hop {
    let (a, b) = (pkt.src.ip().to_canonical(), pkt.dst.ip().to_canonical());
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// The media of one hop of a call.
#[derive(Clone, Debug)]
pub(crate) struct HopMedia {
    pub(crate) hop: Hop,
    pub(crate) caller: Option<SdpMedia>,
    pub(crate) callee: Option<SdpMedia>,
    pub(crate) plan: Option<Plan>,
    pub(crate) live: Vec<(Way, MediaValue)>,
}

impl HopMedia {
    fn side(&self, side: Side) -> Option<&SdpMedia> {
        match side {
            Side::Caller => self.caller.as_ref(),
            Side::Callee => self.callee.as_ref(),
        }
    }
}

/// The media of one call: per hop (the first is where the call was first seen).
#[derive(Clone, Debug, Default)]
pub(crate) struct CallMedia {
    pub(crate) hops: Vec<HopMedia>,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) rtcp: RtcpState,
    pub(crate) last_media_ns: Option<u64>,
}

impl CallMedia {
    /// The media of `hop`, created when new (None past [`MAX_HOPS`]).
    fn hop_mut(&mut self, hop: Hop) -> Option<&mut HopMedia> {
        let i = match self.hops.iter().position(|h| h.hop == hop) {
            Some(i) => i,
            None if self.hops.len() < MAX_HOPS => {
                self.hops.push(HopMedia {
                    hop,
                    caller: None,
                    callee: None,
                    plan: None,
                    live: Vec::new(),
                });
                self.hops.len() - 1
            }
            None => return None,
        };
        self.hops.get_mut(i)
    }

    /// Whether any hop has entries installed.
    pub(crate) fn planned(&self) -> bool {
        self.hops.iter().any(|h| h.plan.is_some())
    }

    /// Every hop's live kernel values.
    fn live(&self) -> impl Iterator<Item = &(Way, MediaValue)> {
        self.hops.iter().flat_map(|h| h.live.iter())
    }

    /// Every SDP address announced on any hop.
    fn addresses(&self) -> Vec<SocketAddr> {
        self.hops
            .iter()
            .flat_map(|h| [&h.caller, &h.callee])
            .flatten()
            .map(|s| s.rtp)
            .collect()
    }
}

/// A Reason (RFC 3326) or final response's cause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cause {
    pub(crate) protocol: String,
    pub(crate) cause: u32,
    pub(crate) text: String,
}

/// Where the correlation id came from, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CorrelationSource {
    SessionId,
    ChargingVector,
    Header,
    Media,
    Signalling,
    CallId,
}

impl CorrelationSource {
    /// The CDR's `correlation_method`.
    pub(crate) fn method(self) -> &'static str {
        match self {
            Self::SessionId | Self::ChargingVector | Self::Header => "header",
            Self::Media => "media",
            Self::Signalling => "signalling",
            Self::CallId => "none",
        }
    }
}

/// One call.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) cookie: u64,
    pub(crate) call_id: String,
    pub(crate) phase: Phase,
    pub(crate) invite_cseq: u32,
    pub(crate) caller_tag: String,
    pub(crate) caller: Party,
    pub(crate) callee: Party,
    pub(crate) src: SocketAddr,
    pub(crate) dst: SocketAddr,
    pub(crate) transport: Transport,
    pub(crate) start_ns: u64,
    pub(crate) ring_ns: Option<u64>,
    pub(crate) answer_ns: Option<u64>,
    pub(crate) final_ns: Option<u64>,
    pub(crate) final_code: u16,
    pub(crate) end: Option<Ending>,
    pub(crate) reason: Option<Cause>,
    pub(crate) answer_tag: Option<String>,
    early_tags: Vec<String>,
    pub(crate) ua_caller: Option<String>,
    pub(crate) ua_callee: Option<String>,
    pub(crate) correlation: String,
    pub(crate) correlation_source: CorrelationSource,
    /// Where the initial INVITE was seen (XDP ingress or TC egress; None in replay).
    pub(crate) invite_dir: Option<Direction>,
    pub(crate) consent: Option<String>,
    pub(crate) last_sip_ns: u64,
    pub(crate) sip_messages: u32,
    pub(crate) parse_errors: u32,
    pub(crate) snap_cut: u32,
    pub(crate) retransmissions: u32,
    pub(crate) invite_paths: u32,
    seen: VecDeque<Seen>,
    pub(crate) media: CallMedia,
    pub(crate) ring_lost_at_start: u64,
    pub(crate) map_pressure: u32,
    alerts: u8,
}

const ALERT_ONE_WAY: u8 = 1;
const ALERT_GAP: u8 = 2;
const ALERT_MOS: u8 = 4;

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separator, so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn socket_bytes(a: &SocketAddr) -> Vec<u8> {
    let mut v = super::media::map_addr(a.ip()).to_vec();
    v.extend_from_slice(&a.port().to_be_bytes());
    v
}

/// The identity of a message across retransmissions and hops: CSeq (each side numbers its
/// own requests, so the From tag tells whose), status, and the To tag (forks).
fn message_key(msg: &SipMessage<'_>) -> u64 {
    let cseq = msg.cseq();
    let status = msg.status_code().unwrap_or(0);
    fnv(&[
        &cseq.seq.to_be_bytes(),
        cseq.method.as_str().as_bytes(),
        &status.to_be_bytes(),
        msg.from().tag().unwrap_or("").as_bytes(),
        msg.to().tag().unwrap_or("").as_bytes(),
    ])
}

/// The path a message took: addresses, hook, and its top Via branch.
fn message_path(pkt: &SipPacket, msg: &SipMessage<'_>) -> u64 {
    let dir = match pkt.direction {
        None => 0u8,
        Some(Direction::Ingress) => 1,
        Some(Direction::Egress) => 2,
    };
    fnv(&[
        &socket_bytes(&pkt.src),
        &socket_bytes(&pkt.dst),
        &[dir],
        msg.top_via().branch().unwrap_or("").as_bytes(),
    ])
}

impl Call {
    fn observe(&mut self, key: u64, path: u64, now: u64, window: u64) -> Observed {
        while self
            .seen
            .front()
            .is_some_and(|s| s.at.saturating_add(window) < now)
        {
            self.seen.pop_front();
        }
        if let Some(s) = self.seen.iter_mut().find(|s| s.key == key) {
            if s.paths.contains(&path) {
                return Observed::Retransmission;
            }
            if s.paths.len() < MAX_PATHS {
                s.paths.push(path);
            }
            return Observed::Hop;
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.pop_front();
        }
        self.seen.push_back(Seen {
            key,
            at: now,
            paths: vec![path],
        });
        Observed::New
    }

    /// Which side sent `msg`: a request from the caller carries the caller's From tag; a
    /// response answers a request, so it comes from the other side.
    fn sender(&self, msg: &SipMessage<'_>) -> Side {
        let from_caller = msg.from().tag() == Some(self.caller_tag.as_str());
        match (msg.is_request(), from_caller) {
            (true, true) | (false, false) => Side::Caller,
            (true, false) | (false, true) => Side::Callee,
        }
    }

    /// The SDP of `side` on the call's first hop.
    fn sdp_of(&self, side: Side) -> Option<&SdpMedia> {
        self.media.hops.first().and_then(|h| h.side(side))
    }

    /// The SDP of `side` on `hop` (the first hop's when that hop has none).
    fn sdp_on(&self, hop: Hop, side: Side) -> Option<&SdpMedia> {
        self.media
            .hops
            .iter()
            .find(|h| h.hop == hop)
            .and_then(|h| h.side(side))
            .or_else(|| self.sdp_of(side))
    }
}

/// The Call-ID of a message that failed to parse, read leniently (for attribution only).
fn lax_call_id(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(16 * 1024))?).ok()?;
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            let v = value.trim();
            return (!v.is_empty()).then_some(v);
        }
    }
    None
}

/// Whether two URI users name the same number: equal, or equal digits when both have some
/// (an SBC may add or strip a `+`, or visual separators).
fn same_number(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    let digits = |s: &str| s.bytes().filter(u8::is_ascii_digit).collect::<Vec<u8>>();
    let (da, db) = (digits(a), digits(b));
    !da.is_empty() && da == db
}

fn party(addr: &sip::NameAddr<'_>) -> Party {
    register::party_of(addr)
}

fn cause_of(msg: &SipMessage<'_>) -> Option<Cause> {
    // A BYE may carry one Reason per protocol (RFC 3326 §2): Q.850 says most about why.
    let mut first: Option<Cause> = None;
    for r in msg.reasons().flatten() {
        let c = Cause {
            protocol: match r.protocol {
                sip::ReasonProtocol::Sip => "SIP".to_owned(),
                sip::ReasonProtocol::Q850 => "Q.850".to_owned(),
                sip::ReasonProtocol::Other(p) => p.to_owned(),
            },
            cause: u32::from(r.cause.unwrap_or(0)),
            text: r.text.unwrap_or("").to_owned(),
        };
        if matches!(r.protocol, sip::ReasonProtocol::Q850) {
            return Some(c);
        }
        if first.is_none() {
            first = Some(c);
        }
    }
    first
}

fn trigger_of(msg: &SipMessage<'_>) -> String {
    match msg.status_code() {
        Some(code) => code.to_string(),
        None => msg.method().as_str().to_owned(),
    }
}

fn ua_of(msg: &SipMessage<'_>) -> Option<String> {
    let raw = if msg.is_request() {
        msg.user_agent()
    } else {
        msg.server().or_else(|| msg.user_agent())
    }?;
    let s = String::from_utf8_lossy(&raw).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn session_interval(msg: &SipMessage<'_>) -> Option<u32> {
    msg.session_expires()
        .ok()
        .flatten()
        .map(|s| s.delta_seconds)
        .filter(|&s| s > 0)
}

/// Where the output of the tracker collects.
#[derive(Debug, Default)]
struct Out {
    flows: VecDeque<FlowOut>,
    cdrs: Vec<Cdr>,
    max_flows: usize,
    flow_dropped: u64,
}

impl Out {
    fn flow(&mut self, f: FlowOut) {
        if self.flows.len() >= self.max_flows {
            self.flow_dropped += 1;
            return;
        }
        self.flows.push_back(f);
    }
}

/// The call and registration tables.
pub struct Tracker {
    cfg: CallsConfig,
    timers: Timers,
    agent_id: String,
    ids: CdrIds,
    limits: SipLimits,
    calls: BTreeMap<u64, Call>,
    index: HashMap<String, u64>,
    unanswered: BTreeSet<u64>,
    sdp_index: HashMap<SocketAddr, Vec<(u64, Side)>>,
    rtcp_index: HashMap<SocketAddr, u64>,
    next_cookie: u64,
    registrations: Registrations,
    reg_out: Vec<register::RegistrationOut>,
    out: Out,
    stats: TrackerStats,
    methods: BTreeMap<String, u64>,
    ring_lost_total: u64,
}

/// Request methods counted by name; anything else is `other`.
const COUNTED_METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "INFO",
    "PRACK",
    "UPDATE",
    "SUBSCRIBE",
    "NOTIFY",
    "REFER",
    "MESSAGE",
    "PUBLISH",
];

impl Tracker {
    /// An empty tracker.
    pub fn new(cfg: CallsConfig, agent_id: impl Into<String>, ids: CdrIds) -> Self {
        Self {
            timers: cfg.timers(),
            registrations: Registrations::new(cfg.max_registrations),
            out: Out {
                max_flows: cfg.max_flow_events.max(1),
                ..Out::default()
            },
            cfg,
            agent_id: agent_id.into(),
            ids,
            limits: SipLimits::default(),
            calls: BTreeMap::new(),
            index: HashMap::new(),
            unanswered: BTreeSet::new(),
            sdp_index: HashMap::new(),
            rtcp_index: HashMap::new(),
            next_cookie: 1,
            reg_out: Vec::new(),
            stats: TrackerStats::default(),
            methods: BTreeMap::new(),
            ring_lost_total: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> TrackerStats {
        TrackerStats {
            flow_dropped: self.out.flow_dropped,
            ..self.stats
        }
    }

    /// Counters of the REGISTER view.
    pub fn register_stats(&self) -> register::RegisterStats {
        self.registrations.stats()
    }

    /// Requests seen per method (retransmissions and hops excluded for calls).
    pub fn methods(&self) -> &BTreeMap<String, u64> {
        &self.methods
    }

    /// Calls currently tracked (including ended ones still lingering).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Unanswered calls currently tracked.
    pub fn unanswered_calls(&self) -> usize {
        self.unanswered.len()
    }

    /// The kernel's running count of packets lost to a full ring buffer (coverage).
    pub fn set_ring_lost(&mut self, total: u64) {
        self.ring_lost_total = total;
    }

    /// Takes the CDRs produced so far (identifiers in clear).
    pub fn drain_cdrs(&mut self) -> Vec<Cdr> {
        std::mem::take(&mut self.out.cdrs)
    }

    /// Takes the flow events produced so far (identifiers in clear).
    pub fn drain_flows(&mut self) -> Vec<FlowOut> {
        self.out.flows.drain(..).collect()
    }

    fn count_method(&mut self, m: &Method<'_>) {
        let name = m.as_str();
        let key = if COUNTED_METHODS.contains(&name) {
            name
        } else {
            "other"
        };
        match self.methods.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.methods.insert(key.to_owned(), 1);
            }
        }
    }

    /// Takes in one SIP message.
    pub fn on_sip(&mut self, pkt: &SipPacket, media: &mut dyn MediaTable) {
        self.stats.messages += 1;
        if pkt.truncated {
            self.stats.truncated += 1;
        }
        let msg = match sip::parse_message(&pkt.bytes, &self.limits) {
            Ok(m) => m,
            Err(_) => {
                self.stats.parse_errors += 1;
                if let Some(c) = lax_call_id(&pkt.bytes)
                    .and_then(|id| self.index.get(id))
                    .and_then(|k| self.calls.get_mut(k))
                {
                    c.parse_errors = c.parse_errors.saturating_add(1);
                    if pkt.truncated {
                        c.snap_cut = c.snap_cut.saturating_add(1);
                    }
                }
                return;
            }
        };
        let now = pkt.ts_ns;
        let method = msg.method();
        if matches!(method, Method::Register) {
            let before = self.registrations.stats().requests;
            self.registrations.on_message(&msg, now, &mut self.reg_out);
            if self.registrations.stats().requests > before {
                self.count_method(&method);
            }
            self.flush_registrations();
            return;
        }
        let initial_invite =
            msg.is_request() && matches!(method, Method::Invite) && msg.to().tag().is_none();
        let cookie = self.index.get(msg.call_id()).copied();
        match (cookie, initial_invite) {
            (None, true) => {
                self.count_method(&method);
                self.new_call(pkt, &msg, media);
            }
            (Some(cookie), _) => self.in_call(cookie, pkt, &msg, initial_invite, media),
            (None, false) => {
                if msg.is_request() {
                    self.count_method(&method);
                }
                // In-dialog requests and responses to dialog methods belong to a call we did
                // not see begin (or that is already closed); out-of-dialog requests
                // (OPTIONS, MESSAGE, ...) and their responses are only counted.
                let dialog_response = !msg.is_request()
                    && matches!(
                        method,
                        Method::Invite
                            | Method::Bye
                            | Method::Cancel
                            | Method::Update
                            | Method::Prack
                    );
                if dialog_response || (msg.is_request() && msg.to().tag().is_some()) {
                    self.stats.orphans += 1;
                }
            }
        }
    }

    fn new_call(&mut self, pkt: &SipPacket, msg: &SipMessage<'_>, media: &mut dyn MediaTable) {
        let now = pkt.ts_ns;
        let hop = hop_of(pkt);
        if self.unanswered.len() >= self.cfg.max_early || self.calls.len() >= self.cfg.max_calls {
            // Make room with the oldest unanswered call; never an established one.
            match self.unanswered.first().copied() {
                Some(victim) => {
                    self.stats.evicted += 1;
                    self.drive(victim, Event::Evict, now, "evicted", media);
                }
                None => {
                    self.stats.table_full += 1;
                    return;
                }
            }
            if self.calls.len() >= self.cfg.max_calls {
                self.stats.table_full += 1;
                return;
            }
        }
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        self.stats.calls += 1;
        let call_id = msg.call_id().to_owned();
        let (correlation, correlation_source) = self.correlation_of(msg);
        let consent = self.cfg.consent_header.as_deref().and_then(|h| {
            msg.header(h)
                .map(|v| String::from_utf8_lossy(&v.unfolded()).trim().to_owned())
        });
        let mut call = Call {
            cookie,
            call_id: call_id.clone(),
            phase: Phase::Calling {
                invite_at: now,
                trying_at: None,
                cancel_at: None,
            },
            invite_cseq: msg.cseq().seq,
            caller_tag: msg.from().tag().unwrap_or("").to_owned(),
            caller: party(msg.from()),
            callee: party(msg.to()),
            src: pkt.src,
            dst: pkt.dst,
            transport: pkt.transport,
            start_ns: now,
            ring_ns: None,
            answer_ns: None,
            final_ns: None,
            final_code: 0,
            end: None,
            reason: None,
            answer_tag: None,
            early_tags: Vec::new(),
            ua_caller: ua_of(msg),
            ua_callee: None,
            correlation,
            correlation_source,
            invite_dir: pkt.direction,
            consent,
            last_sip_ns: now,
            sip_messages: 1,
            parse_errors: 0,
            snap_cut: u32::from(pkt.truncated),
            retransmissions: 0,
            invite_paths: 1,
            seen: VecDeque::new(),
            media: CallMedia::default(),
            ring_lost_at_start: self.ring_lost_total,
            map_pressure: 0,
            alerts: 0,
        };
        call.observe(
            message_key(msg),
            message_path(pkt, msg),
            now,
            self.cfg.dedupe_window_ms.saturating_mul(MS),
        );
        self.index.insert(call_id, cookie);
        self.unanswered.insert(cookie);
        self.calls.insert(cookie, call);
        self.notify(cookie, CallStateKind::Trying, "INVITE", now);
        self.link_by_signalling(cookie);
        self.take_sdp(cookie, hop, msg, media);
    }

    /// Signalling correlation, for legs whose Call-IDs differ and whose headers link
    /// nothing (topology hiding, a B2BUA): a new leg whose INVITE leaves the host is the
    /// continuation of the one unlinked, unanswered leg whose INVITE entered the host
    /// within the correlation window with the same caller and callee numbers. Two or more
    /// such legs (simultaneous calls between the same numbers) link nothing: a false link
    /// would merge two calls, which is worse than none; media correlation may still link
    /// them later.
    fn link_by_signalling(&mut self, cookie: u64) {
        let Some(me) = self.calls.get(&cookie) else {
            return;
        };
        if me.correlation_source != CorrelationSource::CallId
            || me.invite_dir == Some(Direction::Ingress)
        {
            return;
        }
        let window = self.cfg.correlation_window_ms.saturating_mul(MS);
        let mut found: Option<u64> = None;
        let mut several = false;
        for &other in &self.unanswered {
            let Some(o) = self.calls.get(&other) else {
                continue;
            };
            let continues = match (o.invite_dir, me.invite_dir) {
                (Some(Direction::Ingress), Some(Direction::Egress)) => true,
                // Replay: the INVITE went out from the address the other came in on.
                (None, None) => o.dst.ip() == me.src.ip(),
                _ => false,
            };
            if other == cookie
                || !continues
                || o.correlation_source != CorrelationSource::CallId
                || o.call_id == me.call_id
                || o.phase.is_over()
                || o.start_ns > me.start_ns
                || me.start_ns - o.start_ns > window
                || !same_number(&o.caller.user, &me.caller.user)
                || !same_number(&o.callee.user, &me.callee.user)
            {
                continue;
            }
            if found.is_some() {
                several = true;
                break;
            }
            found = Some(other);
        }
        if several {
            self.stats.correlation_ambiguous += 1;
            return;
        }
        let Some(other) = found else {
            return;
        };
        let Some(corr) = self.calls.get_mut(&other).map(|o| {
            o.correlation_source = CorrelationSource::Signalling;
            o.correlation.clone()
        }) else {
            return;
        };
        if let Some(me) = self.calls.get_mut(&cookie) {
            me.correlation = corr;
            me.correlation_source = CorrelationSource::Signalling;
        }
        self.stats.linked_by_signalling += 1;
    }

    /// The correlation id of a new call from its INVITE's headers; the Call-ID itself when
    /// none applies (media anchoring may replace it later).
    fn correlation_of(&self, msg: &SipMessage<'_>) -> (String, CorrelationSource) {
        if let Ok(Some(sid)) = msg.session_id() {
            // RFC 7989: the UUID of the session's originator travels unchanged through
            // every intermediary; compared ignoring case.
            if !sid.local.bytes().all(|b| b == b'0') {
                return (sid.local.to_ascii_lowercase(), CorrelationSource::SessionId);
            }
        }
        if let Ok(Some(pcv)) = msg.p_charging_vector() {
            if !pcv.icid_value.is_empty() {
                return (pcv.icid_value.to_owned(), CorrelationSource::ChargingVector);
            }
        }
        for name in &self.cfg.correlation_headers {
            if let Some(h) = msg.header(name) {
                let v = String::from_utf8_lossy(&h.unfolded()).trim().to_owned();
                if !v.is_empty() {
                    return (v, CorrelationSource::Header);
                }
            }
        }
        (msg.call_id().to_owned(), CorrelationSource::CallId)
    }

    fn in_call(
        &mut self,
        cookie: u64,
        pkt: &SipPacket,
        msg: &SipMessage<'_>,
        initial_invite: bool,
        media: &mut dyn MediaTable,
    ) {
        let now = pkt.ts_ns;
        let hop = hop_of(pkt);
        let window = self.cfg.dedupe_window_ms.saturating_mul(MS);
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        call.last_sip_ns = call.last_sip_ns.max(now);
        if pkt.truncated {
            call.snap_cut = call.snap_cut.saturating_add(1);
        }
        let is_invite_of_call = initial_invite && msg.cseq().seq == call.invite_cseq;
        match call.observe(message_key(msg), message_path(pkt, msg), now, window) {
            Observed::Retransmission => {
                call.retransmissions = call.retransmissions.saturating_add(1);
                self.stats.retransmissions += 1;
                return;
            }
            Observed::Hop => {
                if is_invite_of_call {
                    call.invite_paths = call.invite_paths.saturating_add(1);
                }
                self.stats.hops += 1;
                // The same message on another hop: a media-anchoring SBC rewrote its SDP
                // for this hop, whose streams are bound from it (no state changes).
                self.take_sdp(cookie, hop, msg, media);
                return;
            }
            Observed::New => {}
        }
        call.sip_messages = call.sip_messages.saturating_add(1);
        let sender = call.sender(msg);
        let invite_cseq = call.invite_cseq;
        let method = msg.method();
        if msg.is_request() {
            self.count_method(&method);
        }
        let trigger = trigger_of(msg);
        match (msg.status_code(), &method) {
            // A new INVITE attempt without To-tag: credentials after a challenge.
            (None, Method::Invite) if initial_invite => {
                if msg.cseq().seq > invite_cseq {
                    if let Some(c) = self.calls.get_mut(&cookie) {
                        c.invite_cseq = msg.cseq().seq;
                        // The challenge is not why this attempt ends.
                        c.reason = None;
                    }
                    self.drive(cookie, Event::Invite, now, &trigger, media);
                    self.take_sdp(cookie, hop, msg, media);
                }
            }
            (None, Method::Invite | Method::Update) => {
                // An offer inside the dialog (re-INVITE, UPDATE): hold, resume, new media.
                let offer = self.take_sdp(cookie, hop, msg, media);
                if let Some(hold) = offer {
                    self.drive(cookie, Event::Offer { hold }, now, &trigger, media);
                }
            }
            (None, Method::Cancel) => {
                if let Some(c) = self.calls.get_mut(&cookie) {
                    if let Some(r) = cause_of(msg) {
                        c.reason = Some(r);
                    }
                }
                self.drive(cookie, Event::Cancel, now, &trigger, media);
            }
            (None, Method::Bye) => {
                if let Some(c) = self.calls.get_mut(&cookie) {
                    if !c.phase.is_over() {
                        c.reason = cause_of(msg);
                    }
                }
                let by_caller = sender == Side::Caller;
                self.drive(cookie, Event::Bye { by_caller }, now, &trigger, media);
            }
            (None, _) => {
                // ACK, PRACK, INFO, ...: their SDP (an answer in an ACK or PRACK) still
                // tells where media flows.
                self.take_sdp(cookie, hop, msg, media);
            }
            (Some(code), Method::Invite)
                if msg.cseq().seq == invite_cseq && sender == Side::Callee =>
            {
                self.invite_response(cookie, hop, msg, code, now, &trigger, media);
            }
            (Some(code), Method::Invite | Method::Update) => {
                // Answer to a re-INVITE or UPDATE.
                if (200..300).contains(&code) {
                    self.take_sdp(cookie, hop, msg, media);
                    let session_interval_s = session_interval(msg);
                    self.drive(
                        cookie,
                        Event::Refresh { session_interval_s },
                        now,
                        &trigger,
                        media,
                    );
                }
            }
            (Some(_), _) => {
                // Responses to BYE, CANCEL, PRACK, INFO: nothing changes (PRACK's 2xx may
                // carry an SDP answer).
                self.take_sdp(cookie, hop, msg, media);
            }
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the response and where it was seen"
    )]
    fn invite_response(
        &mut self,
        cookie: u64,
        hop: Hop,
        msg: &SipMessage<'_>,
        code: u16,
        now: u64,
        trigger: &str,
        media: &mut dyn MediaTable,
    ) {
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let tag = msg.to().tag().map(str::to_owned);
        if call.ua_callee.is_none() {
            call.ua_callee = ua_of(msg);
        }
        if (200..300).contains(&code) {
            match (&call.answer_tag, &tag) {
                (Some(a), Some(t)) if a != t => {
                    // A second fork answered too: the caller will ACK and BYE it. This
                    // CDR follows the first answer.
                    self.stats.forked_answers += 1;
                    return;
                }
                (None, _) => call.answer_tag = tag.clone(),
                (Some(_), _) => {}
            }
        } else if code > 100 {
            if let Some(t) = tag {
                if !call.early_tags.contains(&t) {
                    if call.early_tags.len() < MAX_EARLY_TAGS {
                        call.early_tags.push(t);
                    } else {
                        self.stats.early_tags_dropped += 1;
                    }
                }
            }
        }
        if code >= 300 && !call.phase.is_over() {
            call.reason = cause_of(msg).or_else(|| {
                Some(super::tracker::Cause {
                    protocol: "SIP".to_owned(),
                    cause: u32::from(code),
                    text: msg
                        .reason_phrase()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_default(),
                })
            });
        }
        let has_sdp = self.take_sdp(cookie, hop, msg, media).is_some();
        let event = match code {
            100..=199 => Event::Provisional { code, sdp: has_sdp },
            200..=299 => Event::Answer {
                code,
                session_interval_s: session_interval(msg),
            },
            _ => Event::Reject { code },
        };
        self.drive(cookie, event, now, trigger, media);
    }

    /// Reads the SDP of `msg` into the sender's side and rebinds the media. Returns whether
    /// the SDP puts the media on hold (`None`: no SDP, or it did not parse).
    fn take_sdp(
        &mut self,
        cookie: u64,
        hop: Hop,
        msg: &SipMessage<'_>,
        media: &mut dyn MediaTable,
    ) -> Option<bool> {
        let body = match msg.sdp_body() {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(_) => {
                self.stats.sdp_errors += 1;
                if let Some(c) = self.calls.get_mut(&cookie) {
                    c.parse_errors = c.parse_errors.saturating_add(1);
                }
                return None;
            }
        };
        let parsed = match SdpMedia::from_body(body) {
            Ok(p) => p,
            Err(_) => {
                self.stats.sdp_errors += 1;
                if let Some(c) = self.calls.get_mut(&cookie) {
                    c.parse_errors = c.parse_errors.saturating_add(1);
                }
                return None;
            }
        };
        let call = self.calls.get_mut(&cookie)?;
        if call.phase.is_over() {
            return None;
        }
        let new = parsed?;
        let hold = new.is_hold();
        let side = call.sender(msg);
        let Some(bound) = call.media.hop_mut(hop) else {
            self.stats.hops_dropped += 1;
            return Some(hold);
        };
        let slot = match side {
            Side::Caller => &mut bound.caller,
            Side::Callee => &mut bound.callee,
        };
        let previous = slot.take();
        let previous_addr = previous.as_ref().map(|p| p.rtp);
        // RFC 2543 hold (c=0.0.0.0) keeps the side's address: media resumes there.
        let merged = match previous {
            Some(old) if new.rtp.ip().is_unspecified() => SdpMedia {
                rtp: old.rtp,
                rtcp: old.rtcp,
                ..new
            },
            _ => new,
        };
        let announced = merged.rtp;
        *slot = Some(merged);
        if let Some(old) = previous_addr.filter(|&a| a != announced) {
            self.unindex(old, cookie, Some(side));
        }
        self.anchor(cookie, announced, side);
        self.replan(cookie, hop, media);
        Some(hold)
    }

    /// Media anchoring: a call whose only correlation is its own Call-ID adopts the
    /// correlation of the one other live call, begun within the window, that shares an SDP
    /// address:port with it in the way two legs of one call through a B2BUA do: the SBC's
    /// address is the callee side of one leg and the caller side of the other (media
    /// anchored on one port), or both sides are equal (SDP passed through unchanged). One
    /// side shared in the same role is what calls to a media server look like (every call
    /// answered from one port): never a link. Several candidates: no link either.
    fn anchor(&mut self, cookie: u64, addr: SocketAddr, side: Side) {
        if addr.ip().is_unspecified() {
            return;
        }
        let list = self.sdp_index.entry(addr).or_default();
        if !list.iter().any(|&(c, s)| c == cookie && s == side) && list.len() < MAX_PER_ADDRESS {
            list.push((cookie, side));
        }
        let sharing: Vec<(u64, Side)> =
            list.iter().copied().filter(|&(c, _)| c != cookie).collect();
        let window = self.cfg.correlation_window_ms.saturating_mul(MS);
        let Some(me) = self.calls.get(&cookie) else {
            return;
        };
        if me.correlation_source < CorrelationSource::Media {
            return;
        }
        let my_start = me.start_ns;
        let my_other = me.sdp_of(side.other()).map(|s| s.rtp);
        let mut candidates: Vec<&Call> = sharing
            .iter()
            .filter_map(|&(c, their_side)| {
                let other = self.calls.get(&c)?;
                let linked = their_side != side
                    || (my_other.is_some()
                        && other.sdp_of(their_side.other()).map(|s| s.rtp) == my_other);
                (linked && !other.phase.is_over() && other.start_ns.abs_diff(my_start) <= window)
                    .then_some(other)
            })
            .collect();
        candidates.dedup_by_key(|c| c.cookie);
        let [other] = candidates.as_slice() else {
            return;
        };
        let (corr, older, other_cookie) = (
            other.correlation.clone(),
            other.start_ns <= my_start,
            other.cookie,
        );
        if older {
            if let Some(me) = self.calls.get_mut(&cookie) {
                me.correlation = corr;
                me.correlation_source = CorrelationSource::Media;
            }
        } else {
            // The other leg began later: it takes this leg's id.
            let mine = me.correlation.clone();
            if let Some(o) = self.calls.get_mut(&other_cookie) {
                if o.correlation_source >= CorrelationSource::Media {
                    o.correlation = mine;
                    o.correlation_source = CorrelationSource::Media;
                }
            }
        }
    }

    /// Binds the media of one hop from its offer and answer, retiring what it bound before.
    fn replan(&mut self, cookie: u64, hop: Hop, media: &mut dyn MediaTable) {
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let Some(h) = call.media.hops.iter().find(|h| h.hop == hop) else {
            return;
        };
        let (Some(a), Some(b)) = (&h.caller, &h.callee) else {
            return;
        };
        let Some(plan) = Plan::new(a, b) else {
            return;
        };
        if h.plan == Some(plan) {
            return;
        }
        // A proxy that passed the SDP through unchanged: the streams are bound once.
        if call
            .media
            .hops
            .iter()
            .any(|o| o.hop != hop && o.plan == Some(plan))
        {
            return;
        }
        let old = call
            .media
            .hops
            .iter_mut()
            .find(|h| h.hop == hop)
            .and_then(|h| h.plan.take());
        if let Some(old) = old {
            retire(call, hop, old, media, &mut self.stats);
            for ep in old.rtcp_endpoints() {
                if self.rtcp_index.get(&ep) == Some(&cookie) {
                    self.rtcp_index.remove(&ep);
                }
            }
        }
        if plan.install(cookie, media).is_err() {
            self.stats.media_errors += 1;
            call.map_pressure = call.map_pressure.saturating_add(1);
        }
        if let Some(h) = call.media.hops.iter_mut().find(|h| h.hop == hop) {
            h.plan = Some(plan);
            h.live.clear();
        }
        for ep in plan.rtcp_endpoints() {
            self.rtcp_index.insert(ep, cookie);
        }
    }

    /// Takes in one RTCP datagram copied by the kernel (or its emulation).
    pub fn on_rtcp(&mut self, ts_ns: u64, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let cookie = self
            .rtcp_index
            .get(&dst)
            .or_else(|| self.rtcp_index.get(&src))
            .copied();
        match cookie.and_then(|c| self.calls.get_mut(&c)) {
            Some(call) => call.media.rtcp.observe(ts_ns, payload),
            None => self.stats.rtcp_unmatched += 1,
        }
    }

    /// Runs one event through the state machine of call `cookie` and applies the effects.
    fn drive(
        &mut self,
        cookie: u64,
        event: Event,
        now: u64,
        trigger: &str,
        media: &mut dyn MediaTable,
    ) {
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let (next, effects) = dialog::step(call.phase, event, now, &self.timers);
        call.phase = next;
        if !next.is_unanswered() {
            self.unanswered.remove(&cookie);
        }
        for fx in effects {
            self.apply(cookie, fx, now, trigger, media);
        }
    }

    fn apply(
        &mut self,
        cookie: u64,
        fx: Effect,
        now: u64,
        trigger: &str,
        media: &mut dyn MediaTable,
    ) {
        match fx {
            Effect::Notify(kind) => self.notify(cookie, kind, trigger, now),
            Effect::Ring => {
                if let Some(c) = self.calls.get_mut(&cookie) {
                    c.ring_ns.get_or_insert(now);
                }
            }
            Effect::Answer => {
                if let Some(c) = self.calls.get_mut(&cookie) {
                    c.answer_ns.get_or_insert(now);
                }
            }
            Effect::Final(code) => {
                if let Some(c) = self.calls.get_mut(&cookie) {
                    c.final_code = code;
                    c.final_ns = Some(now);
                }
            }
            Effect::End(ending) => {
                if let Some(c) = self.calls.get_mut(&cookie) {
                    c.end = Some(ending);
                }
                // The media entries stay for the linger: RTP in flight when the BYE or the
                // final response passed still belongs to the call (tshark counts it too).
                self.forget_addresses(cookie);
            }
            Effect::Finalize => self.finalize(cookie, now, media),
        }
    }

    fn notify(&mut self, cookie: u64, kind: CallStateKind, trigger: &str, now: u64) {
        let Some(c) = self.calls.get(&cookie) else {
            return;
        };
        let disposition = match (kind, c.end) {
            (CallStateKind::Ended, Some(e)) => e.disposition as i32,
            _ => 0,
        };
        let event = FlowEvent {
            time_ms: now / MS,
            agent_id: self.agent_id.clone(),
            call_id: c.call_id.clone(),
            event: Some(flow_event::Event::CallState(CallState {
                state: kind as i32,
                caller: Some(c.caller.clone()),
                callee: Some(c.callee.clone()),
                trigger: trigger.to_owned(),
                disposition,
                cdr: None,
            })),
        };
        let consent = c.consent.clone();
        self.out.flow(FlowOut { event, consent });
    }

    fn alert(&mut self, cookie: u64, kind: &str, message: String, now: u64) {
        let Some(c) = self.calls.get(&cookie) else {
            return;
        };
        let event = FlowEvent {
            time_ms: now / MS,
            agent_id: self.agent_id.clone(),
            call_id: c.call_id.clone(),
            event: Some(flow_event::Event::Alert(Alert {
                severity: AlertSeverity::Warning as i32,
                kind: kind.to_owned(),
                message,
            })),
        };
        let consent = c.consent.clone();
        self.out.flow(FlowOut { event, consent });
    }

    /// Snapshots and removes the call's media entries.
    fn release_media(&mut self, cookie: u64, media: &mut dyn MediaTable) {
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let plans: Vec<(Hop, Plan)> = call
            .media
            .hops
            .iter_mut()
            .filter_map(|h| h.plan.take().map(|p| (h.hop, p)))
            .collect();
        for (hop, plan) in plans {
            retire(call, hop, plan, media, &mut self.stats);
            for ep in plan.rtcp_endpoints() {
                if self.rtcp_index.get(&ep) == Some(&cookie) {
                    self.rtcp_index.remove(&ep);
                }
            }
        }
    }

    /// Takes an ended call's SDP addresses out of the media-anchoring index.
    fn forget_addresses(&mut self, cookie: u64) {
        let Some(call) = self.calls.get(&cookie) else {
            return;
        };
        let addrs = call.media.addresses();
        for a in addrs {
            self.unindex(a, cookie, None);
        }
    }

    /// Takes `cookie` (on `side`, or any side) off the anchoring index of `addr`.
    fn unindex(&mut self, addr: SocketAddr, cookie: u64, side: Option<Side>) {
        if let Some(list) = self.sdp_index.get_mut(&addr) {
            list.retain(|&(c, s)| c != cookie || side.is_some_and(|x| x != s));
            if list.is_empty() {
                self.sdp_index.remove(&addr);
            }
        }
    }

    /// Sizes of the internal indexes (calls, Call-IDs, SDP addresses, RTCP addresses):
    /// all zero once every call has been finalized.
    pub fn table_sizes(&self) -> [usize; 4] {
        [
            self.calls.len(),
            self.index.len(),
            self.sdp_index.len(),
            self.rtcp_index.len(),
        ]
    }

    fn finalize(&mut self, cookie: u64, now: u64, media: &mut dyn MediaTable) {
        self.release_media(cookie, media);
        self.forget_addresses(cookie);
        self.check_alerts(cookie, now, true);
        self.unanswered.remove(&cookie);
        let Some(call) = self.calls.remove(&cookie) else {
            return;
        };
        if self.index.get(&call.call_id) == Some(&cookie) {
            self.index.remove(&call.call_id);
        }
        let interim = call.end.is_none();
        if interim {
            self.stats.interim += 1;
        }
        self.stats.cdrs += 1;
        let id = cdr::cdr_id(&self.ids, cookie);
        let record = cdr::build(
            &call,
            &self.agent_id,
            id,
            self.ring_lost_total.saturating_sub(call.ring_lost_at_start),
            interim,
        );
        self.out.cdrs.push(record);
    }

    /// Reads the media statistics of every call with installed entries (the agent polls the
    /// kernel every few seconds; replay reads its emulation).
    pub fn poll_media(&mut self, now: u64, media: &mut dyn MediaTable) {
        let cookies: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| c.media.planned())
            .map(|(&k, _)| k)
            .collect();
        for cookie in cookies {
            let Some(call) = self.calls.get_mut(&cookie) else {
                continue;
            };
            let mut pressure = 0u32;
            for h in &mut call.media.hops {
                let Some(plan) = h.plan else {
                    continue;
                };
                match plan.read(media) {
                    Ok(values) => {
                        for (way, v) in values {
                            match v.filter(|v| v.cookie == cookie) {
                                Some(v) => {
                                    h.live.retain(|(w, _)| *w != way);
                                    h.live.push((way, v));
                                }
                                None => {
                                    // Removed from the map (or replaced by another call's).
                                    if h.live.iter().any(|(w, _)| *w == way) {
                                        pressure = pressure.saturating_add(1);
                                    }
                                }
                            }
                        }
                    }
                    Err(_) => self.stats.media_errors += 1,
                }
            }
            call.map_pressure = call.map_pressure.saturating_add(pressure);
            let last = call
                .media
                .live()
                .flat_map(|(_, v)| v.slots.iter())
                .filter(|s| s.in_use != 0 && s.packets > 0)
                .map(|s| s.last_ns)
                .max();
            if let Some(l) = last {
                call.media.last_media_ns = Some(call.media.last_media_ns.map_or(l, |m| m.max(l)));
            }
            self.check_alerts(cookie, now, false);
        }
    }

    /// Raises the quality alerts of a call once each: one-way audio (during the call),
    /// long media gaps, and (at the end) a low MOS.
    fn check_alerts(&mut self, cookie: u64, now: u64, at_end: bool) {
        let Some(call) = self.calls.get(&cookie) else {
            return;
        };
        let a = &self.cfg.alerts;
        let mut raise: Vec<(u8, &'static str, String)> = Vec::new();
        let values: Vec<(Way, MediaValue)> = if at_end {
            call.media
                .snapshots
                .iter()
                .map(|s| (s.way, s.value))
                .collect()
        } else {
            call.media.live().copied().collect()
        };
        let packets = |way: Way| -> u64 {
            values
                .iter()
                .filter(|(w, _)| *w == way)
                .flat_map(|(_, v)| v.slots.iter())
                .map(|s| s.packets)
                .sum()
        };
        let both_sendrecv = [call.sdp_of(Side::Caller), call.sdp_of(Side::Callee)]
            .iter()
            .all(|s| s.is_some_and(|s| matches!(s.direction, sip::sdp::Direction::SendRecv)));
        if call.alerts & ALERT_ONE_WAY == 0
            && both_sendrecv
            && matches!(call.phase, Phase::Confirmed { held: false, .. })
            && call
                .answer_ns
                .is_some_and(|t| now >= t.saturating_add(a.one_way_after_ms.saturating_mul(MS)))
        {
            let (c2e, e2c) = (packets(Way::CallerToCallee), packets(Way::CalleeToCaller));
            if (c2e == 0) != (e2c == 0) {
                let dir = if c2e == 0 {
                    "callee to caller"
                } else {
                    "caller to callee"
                };
                raise.push((
                    ALERT_ONE_WAY,
                    "one_way_audio",
                    format!("RTP flows only {dir} after the answer"),
                ));
            }
        }
        if call.alerts & ALERT_GAP == 0 {
            let gap_ms = values
                .iter()
                .flat_map(|(_, v)| v.slots.iter())
                .map(|s| s.max_gap_ns / MS)
                .max()
                .unwrap_or(0);
            if gap_ms > a.media_gap_ms {
                raise.push((
                    ALERT_GAP,
                    "media_gap",
                    format!(
                        "RTP stopped for {gap_ms} ms (threshold {} ms)",
                        a.media_gap_ms
                    ),
                ));
            }
        }
        if at_end && call.alerts & ALERT_MOS == 0 {
            let worst = cdr::legs(call)
                .iter()
                .filter(|l| l.mos > 0.0)
                .map(|l| l.mos)
                .fold(f64::INFINITY, f64::min);
            if worst.is_finite() && worst < a.mos_below {
                raise.push((
                    ALERT_MOS,
                    "low_mos",
                    format!("MOS {worst:.2} below {:.2}", a.mos_below),
                ));
            }
        }
        for (bit, kind, message) in raise {
            if let Some(c) = self.calls.get_mut(&cookie) {
                c.alerts |= bit;
            }
            self.alert(cookie, kind, message, now);
        }
    }

    /// Runs the timers of every call and registration at `now`.
    pub fn tick(&mut self, now: u64, media: &mut dyn MediaTable) {
        let cookies: Vec<u64> = self.calls.keys().copied().collect();
        for cookie in cookies {
            let Some(c) = self.calls.get(&cookie) else {
                continue;
            };
            let event = Event::Tick {
                last_media: c.media.last_media_ns,
                last_sip: c.last_sip_ns,
            };
            self.drive(cookie, event, now, "timeout", media);
        }
        self.registrations.tick(now, &mut self.reg_out);
        self.flush_registrations();
    }

    /// Ends the observation: every call left gets its CDR (interim when still in
    /// progress), in the order the calls began.
    pub fn finish(&mut self, now: u64, media: &mut dyn MediaTable) {
        self.poll_media(now, media);
        let cookies: Vec<u64> = self.calls.keys().copied().collect();
        for cookie in cookies {
            self.drive(cookie, Event::Shutdown, now, "shutdown", media);
        }
    }

    fn flush_registrations(&mut self) {
        for (at, call_id, reg) in std::mem::take(&mut self.reg_out) {
            let event = FlowEvent {
                time_ms: at / MS,
                agent_id: self.agent_id.clone(),
                call_id,
                event: Some(flow_event::Event::Registration(reg)),
            };
            self.out.flow(FlowOut {
                event,
                consent: None,
            });
        }
    }
}

/// Snapshots the entries of `plan`, bound on `hop` (the live copy when an entry vanished),
/// and removes them.
fn retire(
    call: &mut Call,
    hop: Hop,
    plan: Plan,
    media: &mut dyn MediaTable,
    stats: &mut TrackerStats,
) {
    let cookie = call.cookie;
    let read = plan.read(media);
    if read.is_err() {
        stats.media_errors += 1;
    }
    let live: Vec<(Way, MediaValue)> = call
        .media
        .hops
        .iter_mut()
        .find(|h| h.hop == hop)
        .map(|h| std::mem::take(&mut h.live))
        .unwrap_or_default();
    for way in [Way::CallerToCallee, Way::CalleeToCaller] {
        let fresh = read.as_ref().ok().and_then(|vs| {
            vs.iter()
                .find(|(w, _)| *w == way)
                .and_then(|(_, v)| *v)
                .filter(|v| v.cookie == cookie)
        });
        let value = match fresh {
            Some(v) => Some(v),
            None => {
                let last = live.iter().find(|(w, _)| *w == way).map(|(_, v)| *v);
                if last.is_some() {
                    call.map_pressure = call.map_pressure.saturating_add(1);
                }
                last
            }
        };
        if let Some(value) = value {
            if value.slots.iter().any(|s| s.in_use != 0) {
                if call.media.snapshots.len() < MAX_SNAPSHOTS {
                    call.media.snapshots.push(Snapshot {
                        way,
                        hop,
                        plan,
                        value,
                    });
                } else {
                    stats.snapshots_dropped += 1;
                }
            }
        }
    }
    if plan.remove(cookie, media).is_err() {
        stats.media_errors += 1;
    }
}

impl Call {
    /// The SDP of the side that receives `way`'s packets, then of the side that sends them.
    pub(crate) fn sdp_for(&self, way: Way, hop: Hop) -> (Option<&SdpMedia>, Option<&SdpMedia>) {
        match way {
            Way::CallerToCallee => (
                self.sdp_on(hop, Side::Callee),
                self.sdp_on(hop, Side::Caller),
            ),
            Way::CalleeToCaller => (
                self.sdp_on(hop, Side::Caller),
                self.sdp_on(hop, Side::Callee),
            ),
        }
    }

    /// The SDP the call's first hop answered with (the offer's when no answer had SDP).
    pub(crate) fn negotiated(&self) -> Option<&SdpMedia> {
        self.sdp_of(Side::Callee).or(self.sdp_of(Side::Caller))
    }
}
