//! One call: its state, the message dedup (retransmissions and hops), who sent what.
#![deny(clippy::indexing_slicing, clippy::panic)]

#[allow(
    clippy::wildcard_imports,
    reason = "the tracker's types and imports, shared by its parts"
)]
use super::*;

/// Which side of the call sent something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    Caller,
    Callee,
}

impl Side {
    pub(super) fn other(self) -> Self {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }
}

/// One observation of a message: a retransmission is the same message on the same path.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub(super) key: u64,
    pub(super) at: u64,
    pub(super) paths: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Observed {
    New,
    Retransmission,
    Hop,
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
    pub(super) early_tags: Vec<String>,
    pub(crate) ua_caller: Option<String>,
    pub(crate) ua_callee: Option<String>,
    pub(crate) correlation: String,
    pub(crate) correlation_source: CorrelationSource,
    /// Where the initial INVITE was seen (XDP ingress or TC egress; None in replay).
    pub(crate) invite_dir: Option<Direction>,
    /// Its media matched the relayed media of several legs once: never linked by media (the
    /// others ending later would leave a pair that only looks unique).
    pub(crate) media_ambiguous: bool,
    pub(crate) consent: Option<String>,
    pub(crate) last_sip_ns: u64,
    pub(crate) sip_messages: u32,
    /// The messages as captured, for the CDR's ladder and the live SIP message events.
    pub(crate) ladder: Ladder,
    pub(crate) parse_errors: u32,
    pub(crate) snap_cut: u32,
    pub(crate) retransmissions: u32,
    pub(crate) invite_paths: u32,
    pub(super) seen: VecDeque<Seen>,
    pub(crate) media: CallMedia,
    pub(crate) ring_lost_at_start: u64,
    pub(crate) map_pressure: u32,
    pub(super) alerts: u8,
    /// The call was put on hold at least once: a gap in its media is then expected, not
    /// an alert.
    pub(super) was_held: bool,
    /// The id of the call's CDR, chosen with its first record: its interim records and
    /// its final record share it.
    pub(super) cdr_id: Option<String>,
    /// Interim records made so far.
    pub(crate) interims: u32,
    /// When the next interim record is due (None: interim records are off).
    pub(super) next_interim_ns: Option<u64>,
}

pub(super) fn fnv(parts: &[&[u8]]) -> u64 {
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

pub(super) fn socket_bytes(a: &SocketAddr) -> [u8; 18] {
    let mut v = [0u8; 18];
    let (addr, port) = v.split_at_mut(16);
    addr.copy_from_slice(&crate::calls::media::map_addr(a.ip()));
    port.copy_from_slice(&a.port().to_be_bytes());
    v
}

/// The identity of a message across retransmissions and hops: CSeq (each side numbers its
/// own requests, so the From tag tells whose), status, and the To tag (forks).
pub(super) fn message_key(msg: &SipMessage<'_>) -> u64 {
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
pub(super) fn message_path(pkt: &SipPacket, msg: &SipMessage<'_>) -> u64 {
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
    pub(super) fn observe(&mut self, key: u64, path: u64, now: u64, window: u64) -> Observed {
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
    pub(super) fn sender(&self, msg: &SipMessage<'_>) -> Side {
        let from_caller = msg.from().tag() == Some(self.caller_tag.as_str());
        match (msg.is_request(), from_caller) {
            (true, true) | (false, false) => Side::Caller,
            (true, false) | (false, true) => Side::Callee,
        }
    }

    /// The SDP of `side` on the call's first hop.
    pub(super) fn sdp_of(&self, side: Side) -> Option<&SdpMedia> {
        self.media.hops.first().and_then(|h| h.side(side))
    }

    /// The SDP of `side` on `hop` (the first hop's when that hop has none).
    pub(super) fn sdp_on(&self, hop: Hop, side: Side) -> Option<&SdpMedia> {
        self.media
            .hops
            .iter()
            .find(|h| h.hop == hop)
            .and_then(|h| h.side(side))
            .or_else(|| self.sdp_of(side))
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
