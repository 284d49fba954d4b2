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

use collector_common::{Direction, MediaKey, MediaValue};
use collector_proto::v1::{
    flow_event, Alert, AlertSeverity, CallState, CallStateKind, Cdr, FlowEvent, MediaStats, Party,
    SipDirection,
};

use super::{
    cdr,
    dialog::{self, Effect, Ending, Event, Phase, Timers},
    media::{MediaTable, Pending, Plan, RtcpState, SdpMedia, Way},
    register::{self, Registrations},
    CallsConfig,
};
use crate::media::interval::IntervalTrack;
use crate::net::{SipPacket, Transport};
use crate::sip::{self, Method, SipLimits, SipMessage};

mod alerts;
mod binding;
mod call;
mod correlation;
mod headers;
mod ladder;

pub use self::ladder::LADDER_HEAD;
use self::{binding::*, call::*, headers::*, ladder::Step};
pub(crate) use self::{
    binding::{CallMedia, Hop, Snapshot},
    call::{Call, Cause, CorrelationSource},
    ladder::Ladder,
};

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
#[derive(Clone, Debug)]
pub struct FlowOut {
    /// The event, identifiers in clear; a SIP message event's message is still `sip`.
    event: FlowEvent,
    /// The raw value of the consent header of the call, if configured and present.
    pub consent: Option<String>,
    /// The captured message of a `SipMessage` event, kept compact: the ring thread makes
    /// one per message, and its strings are made where the event is read
    /// ([`FlowOut::into_event`], on the agent's output thread).
    sip: Option<ladder::Step>,
}

impl FlowOut {
    fn new(event: FlowEvent, consent: Option<String>) -> Self {
        Self {
            event,
            consent,
            sip: None,
        }
    }

    /// The event, complete.
    pub fn into_event(self) -> FlowEvent {
        let mut event = self.event;
        if let Some(step) = self.sip {
            event.event = Some(flow_event::Event::SipMessage(step.message()));
        }
        event
    }
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
    /// Legs linked to another leg of their call by the media the SBC relays between them.
    pub linked_by_media: u64,
    /// New legs that matched several unlinked legs by signalling or media: left unlinked.
    pub correlation_ambiguous: u64,
    /// Media map operations that failed.
    pub media_errors: u64,
    /// Flow events dropped because nobody drained them.
    pub flow_dropped: u64,
    /// RTCP datagrams that matched no call.
    pub rtcp_unmatched: u64,
    /// RTCP datagrams of a call that failed to parse.
    pub rtcp_errors: u64,
    /// CDRs emitted.
    pub cdrs: u64,
    /// Interim CDRs emitted for calls still in progress (every `interim_interval_ms` of a
    /// call, and at shutdown or the end of a capture); `cdrs` counts them too.
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

/// A CDR as the tracker hands it over. The final record of an ended call is made by
/// [`CdrOut::build`], wherever it is called: the call's state is moved, and the record's
/// strings (the SIP ladder's addresses, the parties, the codecs) are formatted there, off
/// the thread that follows the calls (a tenth of its time at 100k SIP messages/s).
#[derive(Debug)]
pub struct CdrOut(CdrState);

#[derive(Debug)]
enum CdrState {
    /// Made already (an interim record of a call still followed).
    Built(Box<Cdr>),
    /// The final record, to make.
    Draft(Box<Draft>),
}

/// What [`cdr::build`] makes a final record from.
#[derive(Debug)]
struct Draft {
    call: Box<Call>,
    agent_id: String,
    id: String,
    ring_lost: u64,
    record: cdr::Record,
    legs: Vec<collector_proto::v1::MediaLeg>,
}

impl CdrOut {
    /// The record.
    pub fn build(self) -> Cdr {
        match self.0 {
            CdrState::Built(c) => *c,
            CdrState::Draft(d) => {
                let Draft {
                    call,
                    agent_id,
                    id,
                    ring_lost,
                    record,
                    legs,
                } = *d;
                cdr::build(&call, &agent_id, id, ring_lost, record, legs)
            }
        }
    }
}

/// Where the output of the tracker collects.
#[derive(Debug, Default)]
struct Out {
    /// Handed over whole at each drain: a buffer kept across drains would stay at its
    /// largest round (thousands of events of about a kilobyte after a burst of calls).
    flows: Vec<FlowOut>,
    cdrs: Vec<CdrOut>,
    max_flows: usize,
    flow_dropped: u64,
}

impl Out {
    fn flow(&mut self, f: FlowOut) {
        if self.flows.len() >= self.max_flows {
            self.flow_dropped += 1;
            return;
        }
        self.flows.push(f);
    }
}

/// The call and registration tables.
pub struct Tracker {
    cfg: CallsConfig,
    timers: Timers,
    agent_id: String,
    ids: CdrIds,
    /// When the media statistics were last read (the interval of [`MediaStats`] events).
    last_media_poll: Option<u64>,
    limits: SipLimits,
    /// Boxed: a B-tree node holds eleven values and is about half full after ascending
    /// inserts, and a `Call` is close to a kilobyte.
    calls: BTreeMap<u64, Box<Call>>,
    index: HashMap<String, u64>,
    unanswered: BTreeSet<u64>,
    /// The calls that measured each SSRC, as last polled, plus what ended legs read since
    /// (see [`Tracker::link_by_media`]); may name calls that are gone.
    ssrc_owners: HashMap<u32, Vec<u64>>,
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

/// When the interim record after `now` of a call that began at `start` is due: the first
/// multiple of `interval_ms` of the call's life after `now` (None when the interval is 0).
fn interim_due(start: u64, now: u64, interval_ms: u64) -> Option<u64> {
    let interval = interval_ms.saturating_mul(MS);
    if interval == 0 {
        return None;
    }
    let periods = now.saturating_sub(start) / interval;
    Some(start.saturating_add(interval.saturating_mul(periods.saturating_add(1))))
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
            last_media_poll: None,
            limits: SipLimits::default(),
            calls: BTreeMap::new(),
            index: HashMap::new(),
            unanswered: BTreeSet::new(),
            ssrc_owners: HashMap::new(),
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
        self.drain_cdr_outs()
            .into_iter()
            .map(CdrOut::build)
            .collect()
    }

    /// Takes the CDRs produced so far, the final records of ended calls not made yet: the
    /// agent makes them on its output thread (see [`CdrOut`]).
    pub fn drain_cdr_outs(&mut self) -> Vec<CdrOut> {
        std::mem::take(&mut self.out.cdrs)
    }

    /// Takes the flow events produced so far (identifiers in clear).
    pub fn drain_flows(&mut self) -> Vec<FlowOut> {
        std::mem::take(&mut self.out.flows)
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
                self.sip_event(&msg);
            }
            (Some(cookie), _) => {
                self.in_call(cookie, pkt, &msg, initial_invite, media);
                self.sip_event(&msg);
            }
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
            media_ambiguous: false,
            consent,
            last_sip_ns: now,
            sip_messages: 1,
            ladder: Ladder::default(),
            parse_errors: 0,
            snap_cut: u32::from(pkt.truncated),
            retransmissions: 0,
            invite_paths: 1,
            seen: VecDeque::new(),
            media: CallMedia::default(),
            ring_lost_at_start: self.ring_lost_total,
            map_pressure: 0,
            alerts: 0,
            was_held: false,
            cdr_id: None,
            interims: 0,
            next_interim_ns: interim_due(now, now, self.cfg.interim_interval_ms),
        };
        call.observe(
            message_key(msg),
            message_path(pkt, msg),
            now,
            self.cfg.dedupe_window_ms.saturating_mul(MS),
        );
        call.ladder.push(Step::of(pkt, msg, false));
        self.index.insert(call_id, cookie);
        self.unanswered.insert(cookie);
        self.calls.insert(cookie, Box::new(call));
        self.notify(cookie, CallStateKind::Trying, "INVITE", now);
        self.link_by_signalling(cookie);
        self.take_sdp(cookie, hop, msg, media);
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
        let observed = call.observe(message_key(msg), message_path(pkt, msg), now, window);
        call.ladder
            .push(Step::of(pkt, msg, observed == Observed::Retransmission));
        match observed {
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
                // Pending entries do not: no answer will bind them now.
                self.release_pending(cookie, media);
                self.forget_addresses(cookie);
            }
            Effect::Finalize => self.finalize(cookie, now, media),
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
        self.link_by_media(cookie, Some(media));
        self.forget_addresses(cookie);
        // Its media legs, scored once: for the alerts judged at the end and for the record.
        let legs = self
            .calls
            .get(&cookie)
            .map(|c| cdr::legs(c, &[]))
            .unwrap_or_default();
        self.check_alerts(cookie, now, Some(&legs));
        self.unanswered.remove(&cookie);
        let Some(call) = self.calls.remove(&cookie) else {
            return;
        };
        if self.index.get(&call.call_id) == Some(&cookie) {
            self.index.remove(&call.call_id);
        }
        // A call still in progress at shutdown (or the end of a capture) gets one more
        // interim record; its media entries were retired above.
        let record = if call.end.is_none() {
            self.stats.interim += 1;
            cdr::Record::Interim {
                seq: call.interims.saturating_add(1),
                at_ns: now,
            }
        } else {
            cdr::Record::Final
        };
        self.stats.cdrs += 1;
        let id = call
            .cdr_id
            .clone()
            .unwrap_or_else(|| cdr::cdr_id(&self.ids, cookie));
        let ring_lost = self.ring_lost_total.saturating_sub(call.ring_lost_at_start);
        self.out.cdrs.push(CdrOut(CdrState::Draft(Box::new(Draft {
            call,
            agent_id: self.agent_id.clone(),
            id,
            ring_lost,
            record,
            legs,
        }))));
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
            self.interim(cookie, now, media);
        }
        self.registrations.tick(now, &mut self.reg_out);
        self.flush_registrations();
    }

    /// Makes the interim record of call `cookie` when one is due at `now` and the call is
    /// still in progress: its times up to `now` and its media so far, read from the table
    /// without retiring the entries (the running accounting goes on undisturbed).
    fn interim(&mut self, cookie: u64, now: u64, media: &mut dyn MediaTable) {
        let interval_ms = self.cfg.interim_interval_ms;
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let due = call.next_interim_ns.is_some_and(|t| now >= t);
        if !due || call.end.is_some() || call.phase.is_over() {
            return;
        }
        let live = live_snapshots(call, media, &mut self.stats);
        call.interims = call.interims.saturating_add(1);
        // The next one falls on the next multiple of the interval of the call's life (one
        // record, not a burst, after a stall of the agent's clock).
        call.next_interim_ns = interim_due(call.start_ns, now, interval_ms);
        let id = call
            .cdr_id
            .get_or_insert_with(|| cdr::cdr_id(&self.ids, cookie))
            .clone();
        let record = cdr::build(
            call,
            &self.agent_id,
            id,
            self.ring_lost_total.saturating_sub(call.ring_lost_at_start),
            cdr::Record::Interim {
                seq: call.interims,
                at_ns: now,
            },
            cdr::legs(call, &live),
        );
        self.stats.cdrs += 1;
        self.stats.interim += 1;
        self.out
            .cdrs
            .push(CdrOut(CdrState::Built(Box::new(record))));
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
                tenant: String::new(),
                time_ms: at / MS,
                agent_id: self.agent_id.clone(),
                call_id,
                event: Some(flow_event::Event::Registration(reg)),
            };
            self.out.flow(FlowOut::new(event, None));
        }
    }
}
