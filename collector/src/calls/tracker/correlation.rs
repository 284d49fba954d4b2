//! Leg correlation: the correlation id of a new leg from its headers (Session-ID,
//! P-Charging-Vector, configured headers), then by signalling (INVITE in, INVITE out) and
//! by media: anchoring (legs sharing an SDP address through a B2BUA) and relay (the SBC
//! forwards one leg's RTP into the other: the same SSRC, starting moments apart).
#![deny(clippy::indexing_slicing, clippy::panic)]

#[allow(
    clippy::wildcard_imports,
    reason = "the tracker's types and imports, shared by its parts"
)]
use super::*;
use std::collections::HashSet;

/// Whether two URI users name the same number: equal, or equal digits when both have some
/// (an SBC may add or strip a `+`, or visual separators).
pub(super) fn same_number(a: &str, b: &str) -> bool {
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

/// The relay of a media-anchoring SBC forwards a packet within this time; two streams of
/// one SSRC whose first packets are further apart are not one relayed stream, ns.
const RELAY_WINDOW_NS: u64 = 100 * MS;

/// Most other legs whose entries [`Tracker::link_by_media`] reads afresh when a leg ends.
const MAX_FRESH_READS: usize = 64;

/// A stream counts for relay correlation from its second packet: a poll this long after
/// the relay window has seen every relayed stream that could match, ns.
const FRESH_SLACK_NS: u64 = 1_000 * MS;

/// The (SSRC, first packet) of every stream a call has measured: its snapshots and its
/// installed entries, read afresh from the table when `media` is given (a leg that ends
/// before the next poll), else as last polled.
fn streams_of(call: &Call, media: Option<&mut (dyn MediaTable + '_)>) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    let mut add = |v: &MediaValue| {
        for s in v.slots.iter().filter(|s| s.in_use != 0 && s.packets >= 2) {
            out.push((s.ssrc, s.first_ns));
        }
    };
    for snap in &call.media.snapshots {
        add(&snap.value);
    }
    match media {
        Some(table) => {
            for plan in call.media.hops.iter().filter_map(|h| h.plan) {
                if let Ok(values) = plan.read(table) {
                    for v in values.iter().filter_map(|(_, v)| v.as_ref()) {
                        if v.cookie == call.cookie {
                            add(v);
                        }
                    }
                }
            }
        }
        None => {
            for (_, v) in call.media.hops.iter().flat_map(|h| h.live.iter()) {
                add(v);
            }
        }
    }
    out
}

impl Tracker {
    /// Rebuilds the SSRC index from every call's streams as last polled.
    pub(super) fn index_ssrcs(&mut self) {
        let mut owners: HashMap<u32, Vec<u64>> = HashMap::new();
        for (&cookie, call) in &self.calls {
            for (ssrc, _) in streams_of(call, None) {
                let calls = owners.entry(ssrc).or_default();
                // A call's streams come one after the other: it is listed once.
                if calls.last() != Some(&cookie) {
                    calls.push(cookie);
                }
            }
        }
        self.ssrc_owners = owners;
    }

    /// Whether call `cookie` measured an SSRC that the index lists for another call too:
    /// only such a leg can be linked by [`Tracker::link_by_media`] without fresh reads.
    pub(super) fn has_shared_ssrc(&self, cookie: u64) -> bool {
        let shared = |s: &u32| self.ssrc_owners.get(s).is_some_and(|c| c.len() > 1);
        self.calls
            .get(&cookie)
            .is_some_and(|c| streams_of(c, None).iter().any(|(s, _)| shared(s)))
    }

    /// Media relay correlation, for legs still unlinked (numbers rewritten by the SBC, or
    /// several calls between the same numbers at once): an anchoring SBC forwards each RTP
    /// packet of one leg into the other unchanged but for addresses, so a stream of this leg
    /// and a stream of another unlinked leg begun within the correlation window share the
    /// SSRC and start within [`RELAY_WINDOW_NS`]. Exactly one such leg: linked (the newer
    /// takes the older's id). Several (endpoints that all send one SSRC, as sipp does): no
    /// link. Only calls created within the window are looked at (cookies grow with time).
    ///
    /// `media` is given when the leg ends: the other legs' entries are then read afresh
    /// (the nearest [`MAX_FRESH_READS`] in time), since a short call ends before a poll;
    /// not when a poll came after its streams began.
    pub(super) fn link_by_media(&mut self, cookie: u64, mut media: Option<&mut dyn MediaTable>) {
        let Some(me) = self.calls.get(&cookie) else {
            return;
        };
        if me.correlation_source != CorrelationSource::CallId || me.media_ambiguous {
            return;
        }
        let mine = streams_of(me, None);
        if mine.is_empty() {
            return;
        }
        let window = self.cfg.correlation_window_ms.saturating_mul(MS);
        let (my_start, my_call_id) = (me.start_ns, me.call_id.clone());
        let in_window = |o: &&Call| o.start_ns.abs_diff(my_start) <= window;
        let unlinked = |o: &Call| {
            o.correlation_source == CorrelationSource::CallId
                && !o.media_ambiguous
                && o.call_id != my_call_id
        };
        // The legs nearest in time are read afresh when this one ends (a short call ends
        // before the next poll), unless a poll came after this leg's streams began (by the
        // relay window, and [`FRESH_SLACK_NS`] for a relayed stream's second packet): a
        // relayed stream of another leg had begun by then too, and that poll indexed it.
        // Any other leg can only match through an SSRC it measured, as the index has it:
        // looking only at those keeps a mass teardown (thousands of calls ending together,
        // all within the window) from comparing every leg with every other.
        let latest = mine.iter().map(|&(_, first)| first).max().unwrap_or(0);
        let polled_after = self.last_media_poll.is_some_and(|p| {
            p >= latest
                .saturating_add(RELAY_WINDOW_NS)
                .saturating_add(FRESH_SLACK_NS)
        });
        let mut fresh: Vec<u64> = Vec::new();
        if media.is_some() && !polled_after {
            let before = self.calls.range(..cookie).rev().map(|(_, o)| &**o);
            let after = self
                .calls
                .range(cookie.saturating_add(1)..)
                .map(|(_, o)| &**o);
            fresh = before
                .take_while(in_window)
                .chain(after.take_while(in_window))
                .filter(|o| unlinked(o))
                .take(MAX_FRESH_READS)
                .map(|o| o.cookie)
                .collect();
        }
        let mut indexed: Vec<u64> = Vec::new();
        let mut seen: HashSet<u64> = fresh.iter().copied().chain([cookie]).collect();
        for (ssrc, _) in &mine {
            for c in self.ssrc_owners.get(ssrc).into_iter().flatten() {
                let near = self
                    .calls
                    .get(c)
                    .is_some_and(|o| in_window(&&**o) && unlinked(o));
                if near && seen.insert(*c) {
                    indexed.push(*c);
                }
            }
        }
        // What this leg measured is in the index from now on, for the legs that end after it.
        for (ssrc, _) in &mine {
            let calls = self.ssrc_owners.entry(*ssrc).or_default();
            if !calls.contains(&cookie) {
                calls.push(cookie);
            }
        }
        let mut matched: Vec<u64> = Vec::new();
        let candidates = fresh.iter().map(|c| (*c, true));
        for (other, read) in candidates.chain(indexed.iter().map(|c| (*c, false))) {
            let Some(o) = self.calls.get(&other) else {
                continue;
            };
            let table = if read { media.as_deref_mut() } else { None };
            let theirs = streams_of(o, table);
            let relayed = mine.iter().any(|&(ssrc, first)| {
                theirs
                    .iter()
                    .any(|&(s, f)| s == ssrc && f.abs_diff(first) <= RELAY_WINDOW_NS)
            });
            if relayed {
                matched.push(other);
            }
        }
        let other = match matched.as_slice() {
            [] => return,
            &[one] => one,
            several => {
                self.stats.correlation_ambiguous += 1;
                for c in several.iter().chain([&cookie]) {
                    if let Some(call) = self.calls.get_mut(c) {
                        call.media_ambiguous = true;
                    }
                }
                return;
            }
        };
        let (Some(a), Some(b)) = (self.calls.get(&cookie), self.calls.get(&other)) else {
            return;
        };
        let (older, newer) = if (a.start_ns, a.cookie) <= (b.start_ns, b.cookie) {
            (cookie, other)
        } else {
            (other, cookie)
        };
        let Some(id) = self.calls.get_mut(&older).map(|o| {
            o.correlation_source = CorrelationSource::Media;
            o.correlation.clone()
        }) else {
            return;
        };
        if let Some(n) = self.calls.get_mut(&newer) {
            n.correlation = id;
            n.correlation_source = CorrelationSource::Media;
        }
        self.stats.linked_by_media += 1;
    }

    /// Signalling correlation, for legs whose Call-IDs differ and whose headers link
    /// nothing (topology hiding, a B2BUA): a new leg whose INVITE leaves the host is the
    /// continuation of the one unlinked, unanswered leg whose INVITE entered the host
    /// within the correlation window with the same caller and callee numbers. Two or more
    /// such legs (simultaneous calls between the same numbers) link nothing: a false link
    /// would merge two calls, which is worse than none; media correlation may still link
    /// them later.
    pub(super) fn link_by_signalling(&mut self, cookie: u64) {
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
}

impl Tracker {
    /// The correlation id of a new call from its INVITE's headers; the Call-ID itself when
    /// none applies (media anchoring may replace it later).
    pub(super) fn correlation_of(&self, msg: &SipMessage<'_>) -> (String, CorrelationSource) {
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
}

impl Tracker {
    /// Media anchoring: a call whose only correlation is its own Call-ID adopts the
    /// correlation of the one other live call, begun within the window, that shares an SDP
    /// address:port with it in the way two legs of one call through a B2BUA do: the SBC's
    /// address is the callee side of one leg and the caller side of the other (media
    /// anchored on one port), or both sides are equal (SDP passed through unchanged). One
    /// side shared in the same role is what calls to a media server look like (every call
    /// answered from one port): never a link. Several candidates: no link either.
    pub(super) fn anchor(&mut self, cookie: u64, addr: SocketAddr, side: Side) {
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
                    .then_some(&**other)
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
}
