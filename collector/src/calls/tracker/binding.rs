//! Media binding: each hop's offer and answer become MEDIA map entries (a [`Plan`]), read
//! back while the call runs and snapshotted when it is retired; RTCP attributed to its call.
#![deny(clippy::indexing_slicing, clippy::panic)]

#[allow(
    clippy::wildcard_imports,
    reason = "the tracker's types and imports, shared by its parts"
)]
use super::*;

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
    /// The entries counting RTP sent to the offerer while no plan is installed (one side
    /// of the hop has announced its address, the other not yet).
    pub(crate) pending: Option<Pending>,
    pub(crate) live: Vec<(Way, MediaValue)>,
}

impl HopMedia {
    pub(super) fn side(&self, side: Side) -> Option<&SdpMedia> {
        match side {
            Side::Caller => self.caller.as_ref(),
            Side::Callee => self.callee.as_ref(),
        }
    }
}

/// One stream of a call, as its 10-second intervals are kept: the hop, the direction's map
/// key (a re-INVITE that moves the media makes new keys) and the SSRC.
pub(crate) type StreamId = (Hop, MediaKey, u32);

/// Streams whose intervals one call keeps (two directions, two SSRC slots each, on a few
/// hops and re-INVITEs); a stream past it is scored as a whole only.
const MAX_INTERVAL_TRACKS: usize = 16;

/// The media of one call: per hop (the first is where the call was first seen).
#[derive(Clone, Debug, Default)]
pub(crate) struct CallMedia {
    pub(crate) hops: Vec<HopMedia>,
    pub(crate) snapshots: Vec<Snapshot>,
    pub(crate) rtcp: RtcpState,
    pub(crate) last_media_ns: Option<u64>,
    /// The 10-second intervals of each stream read so far.
    pub(crate) intervals: Vec<(StreamId, IntervalTrack)>,
}

impl CallMedia {
    /// The intervals of one stream, once a poll has read it.
    pub(crate) fn interval_track(
        &self,
        hop: Hop,
        key: MediaKey,
        ssrc: u32,
    ) -> Option<&IntervalTrack> {
        self.intervals
            .iter()
            .find(|(id, _)| *id == (hop, key, ssrc))
            .map(|(_, t)| t)
    }

    /// The media of `hop`, created when new (None past [`MAX_HOPS`]).
    pub(super) fn hop_mut(&mut self, hop: Hop) -> Option<&mut HopMedia> {
        let i = match self.hops.iter().position(|h| h.hop == hop) {
            Some(i) => i,
            None if self.hops.len() < MAX_HOPS => {
                push_exact(
                    &mut self.hops,
                    HopMedia {
                        hop,
                        caller: None,
                        callee: None,
                        plan: None,
                        pending: None,
                        live: Vec::new(),
                    },
                );
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
    pub(super) fn live(&self) -> impl Iterator<Item = &(Way, MediaValue)> {
        self.hops.iter().flat_map(|h| h.live.iter())
    }

    /// Every SDP address announced on any hop.
    pub(super) fn addresses(&self) -> Vec<SocketAddr> {
        self.hops
            .iter()
            .flat_map(|h| [&h.caller, &h.callee])
            .flatten()
            .map(|s| s.rtp)
            .collect()
    }
}

impl Tracker {
    /// Reads the SDP of `msg` into the sender's side and rebinds the media. Returns whether
    /// the SDP puts the media on hold (`None`: no SDP, or it did not parse).
    pub(super) fn take_sdp(
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
        self.sync_pending(cookie, hop, media);
        Some(hold)
    }
}

impl Tracker {
    /// Installs, moves or removes the pending entries of one hop: wanted while the hop has
    /// no plan and exactly one side (the offerer, whichever sent its SDP first) announced a
    /// usable address.
    pub(super) fn sync_pending(&mut self, cookie: u64, hop: Hop, media: &mut dyn MediaTable) {
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let Some(h) = call.media.hops.iter_mut().find(|h| h.hop == hop) else {
            return;
        };
        let want = match (&h.plan, &h.caller, &h.callee) {
            (None, Some(offer), None) | (None, None, Some(offer)) => Pending::new(offer),
            _ => None,
        };
        if h.pending.map(|p| p.addr) == want.map(|p| p.addr) {
            return;
        }
        let mut errors = 0u32;
        if let Some(old) = h.pending.take() {
            if old.remove(cookie, media).is_err() {
                errors += 1;
            }
        }
        if let Some(p) = want {
            match p.install(cookie, media) {
                Ok(true) => h.pending = Some(p),
                // The offerer's endpoint is another call's (or this call's plan on another
                // hop): never taken over.
                Ok(false) => {}
                Err(_) => {
                    errors += 1;
                    if p.remove(cookie, media).is_err() {
                        errors += 1;
                    }
                }
            }
        }
        count_map_errors(&mut self.stats, call, errors);
    }

    /// Removes the pending entries of every hop of the call (it ended unanswered, or its
    /// media is released).
    pub(super) fn release_pending(&mut self, cookie: u64, media: &mut dyn MediaTable) {
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let mut errors = 0u32;
        for h in &mut call.media.hops {
            if let Some(p) = h.pending.take() {
                if p.remove(cookie, media).is_err() {
                    errors += 1;
                }
            }
        }
        count_map_errors(&mut self.stats, call, errors);
    }
}

impl Tracker {
    /// Binds the media of one hop from its offer and answer, retiring what it bound before.
    pub(super) fn replan(&mut self, cookie: u64, hop: Hop, media: &mut dyn MediaTable) {
        let Some(call) = self.calls.get_mut(&cookie) else {
            return;
        };
        let Some(h) = call.media.hops.iter().find(|h| h.hop == hop) else {
            return;
        };
        let (Some(a), Some(b)) = (&h.caller, &h.callee) else {
            return;
        };
        let Some(mut plan) = Plan::new(a, b) else {
            return;
        };
        if h.plan.is_some_and(|p| p.binds_same(&plan)) {
            return;
        }
        // A proxy that passed the SDP through unchanged: the streams are bound once.
        if call
            .media
            .hops
            .iter()
            .any(|o| o.hop != hop && o.plan.is_some_and(|p| p.binds_same(&plan)))
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
        // RTP that reached the offerer before this answer was bound was counted by the
        // pending entries: the plan's answerer → offerer stream is seeded from them (the
        // kernel moves the counts at its first packet: no read-and-copy window).
        let pending = call
            .media
            .hops
            .iter_mut()
            .find(|h| h.hop == hop)
            .and_then(|h| h.pending.take());
        plan.seeded = pending.and_then(|p| {
            let way = if p.addr == plan.caller {
                Way::CalleeToCaller
            } else if p.addr == plan.callee {
                Way::CallerToCallee
            } else {
                return None;
            };
            Some((way, p.key()))
        });
        let mut errors = 0u32;
        if plan.install(cookie, media).is_err() {
            errors += 1;
        }
        // Not seeded from (the offer moved): the pending entries go; otherwise they go with
        // the plan.
        if let Some(p) = pending.filter(|_| plan.seeded.is_none()) {
            if p.remove(cookie, media).is_err() {
                errors += 1;
            }
        }
        count_map_errors(&mut self.stats, call, errors);
        if let Some(h) = call.media.hops.iter_mut().find(|h| h.hop == hop) {
            h.plan = Some(plan);
            h.live.clear();
        }
        for ep in plan.rtcp_endpoints() {
            self.rtcp_index.insert(ep, cookie);
        }
    }
}

impl Tracker {
    /// Takes in one RTCP datagram copied by the kernel (or its emulation).
    pub fn on_rtcp(&mut self, ts_ns: u64, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        let cookie = self
            .rtcp_index
            .get(&dst)
            .or_else(|| self.rtcp_index.get(&src))
            .copied();
        match cookie.and_then(|c| self.calls.get_mut(&c)) {
            Some(call) => {
                if !call.media.rtcp.observe(ts_ns, payload) {
                    self.stats.rtcp_errors += 1;
                }
            }
            None => self.stats.rtcp_unmatched += 1,
        }
    }
}

impl Tracker {
    /// Snapshots and removes the call's media entries.
    pub(super) fn release_media(&mut self, cookie: u64, media: &mut dyn MediaTable) {
        self.release_pending(cookie, media);
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
}

impl Tracker {
    /// Takes an ended call's SDP addresses out of the media-anchoring index.
    pub(super) fn forget_addresses(&mut self, cookie: u64) {
        let Some(call) = self.calls.get(&cookie) else {
            return;
        };
        let addrs = call.media.addresses();
        for a in addrs {
            self.unindex(a, cookie, None);
        }
    }
}

impl Tracker {
    /// Takes `cookie` (on `side`, or any side) off the anchoring index of `addr`.
    pub(super) fn unindex(&mut self, addr: SocketAddr, cookie: u64, side: Option<Side>) {
        if let Some(list) = self.sdp_index.get_mut(&addr) {
            list.retain(|&(c, s)| c != cookie || side.is_some_and(|x| x != s));
            if list.is_empty() {
                self.sdp_index.remove(&addr);
            }
        }
    }
}

impl Tracker {
    /// Reads the media statistics of every call with installed entries (the agent polls the
    /// kernel every few seconds; replay reads its emulation).
    pub fn poll_media(&mut self, now: u64, media: &mut dyn MediaTable) {
        // An ended call (lingering for late messages) is read once more when it retires;
        // until then only when one of its 10 s intervals is due. Live statistics of a call
        // that is over help no one, and at high call rates the lingering calls outnumber
        // the live ones.
        let cookies: Vec<u64> = self
            .calls
            .iter()
            .filter(|(_, c)| {
                c.media.planned()
                    && (c.end.is_none() || c.media.intervals.iter().any(|(_, t)| t.due(now)))
            })
            .map(|(&k, _)| k)
            .collect();
        // Two directions of each call are read (three while seeded): the table may read
        // the whole map at once instead.
        media.begin_bulk_read(cookies.len().saturating_mul(2));
        let interval_ms = self
            .last_media_poll
            .map_or(0, |t| now.saturating_sub(t) / MS);
        self.last_media_poll = Some(now);
        for &cookie in &cookies {
            let Some(call) = self.calls.get_mut(&cookie) else {
                continue;
            };
            let mut pressure = 0u32;
            // The directions that carried new packets since the last poll.
            let mut active: Vec<Snapshot> = Vec::new();
            for h in &mut call.media.hops {
                let Some(mut plan) = h.plan else {
                    continue;
                };
                if plan.seeded.is_some() {
                    if plan.settle(cookie, media).is_err() {
                        self.stats.media_errors += 1;
                    }
                    h.plan = Some(plan);
                }
                match plan.read(media) {
                    Ok(values) => {
                        for (way, v) in values {
                            match v.filter(|v| v.cookie == cookie) {
                                Some(v) => {
                                    let before = h
                                        .live
                                        .iter()
                                        .find(|(w, _)| *w == way)
                                        .map_or(0, |(_, old)| packets(old));
                                    if packets(&v) > before {
                                        active.push(Snapshot {
                                            way,
                                            hop: h.hop,
                                            plan,
                                            value: v,
                                        });
                                    }
                                    h.live.retain(|(w, _)| *w != way);
                                    push_exact(&mut h.live, (way, v));
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
            observe_intervals(call, now);
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
            let call = &*call;
            for snap in &active {
                for s in snap
                    .value
                    .slots
                    .iter()
                    .filter(|s| s.in_use != 0 && s.packets > 0)
                {
                    let event = FlowEvent {
                        tenant: String::new(),
                        time_ms: now / MS,
                        agent_id: self.agent_id.clone(),
                        call_id: call.call_id.clone(),
                        event: Some(flow_event::Event::MediaStats(MediaStats {
                            leg: Some(Box::new(cdr::leg(call, snap, s, cdr::Intervals::Closed))),
                            interval_ms,
                        })),
                    };
                    self.out.flow(FlowOut::new(event, call.consent.clone()));
                }
            }
            self.check_alerts(cookie, now, None);
        }
        media.end_bulk_read();
        // Once every call's values are fresh: a leg matched against others not yet read
        // in this round could look unique when it is not. A leg none of whose SSRCs any
        // other call has measured cannot be linked by media: it is not looked at (the scan
        // compares a leg with every call of the window, too many when thousands start
        // within it).
        self.index_ssrcs();
        for cookie in cookies {
            if self.has_shared_ssrc(cookie) {
                self.link_by_media(cookie, None);
            }
        }
    }

    /// Applies the media writes `media` queued; each one refused counts against its call
    /// (its CDR is then not complete).
    pub fn flush_media(&mut self, media: &mut dyn MediaTable) {
        for cookie in media.flush() {
            match self.calls.get_mut(&cookie) {
                Some(call) => count_map_errors(&mut self.stats, call, 1),
                None => self.stats.media_errors += 1,
            }
        }
    }
}

/// Counts `errors` failed map operations for `call`: in the tracker's totals, and in the
/// call's coverage (its CDR is then not complete).
fn count_map_errors(stats: &mut TrackerStats, call: &mut Call, errors: u32) {
    stats.media_errors += u64::from(errors);
    call.map_pressure = call.map_pressure.saturating_add(errors);
}

/// Feeds every stream's fresh counters (read at `now`) to its interval track, closing an
/// interval when one is due.
fn observe_intervals(call: &mut Call, now: u64) {
    let mut tracks = std::mem::take(&mut call.media.intervals);
    for h in &call.media.hops {
        let Some(plan) = h.plan else {
            continue;
        };
        for (way, v) in &h.live {
            let key = plan.key(*way);
            for s in v.slots.iter().filter(|s| s.in_use != 0 && s.packets > 0) {
                let id = (h.hop, key, s.ssrc);
                let i = match tracks.iter().position(|(t, _)| *t == id) {
                    Some(i) => i,
                    None if tracks.len() < MAX_INTERVAL_TRACKS => {
                        push_exact(&mut tracks, (id, IntervalTrack::new(s.first_ns)));
                        tracks.len() - 1
                    }
                    None => continue,
                };
                let Some((_, track)) = tracks.get_mut(i) else {
                    continue;
                };
                if !track.due(now) {
                    continue;
                }
                let snap = Snapshot {
                    way: *way,
                    hop: h.hop,
                    plan,
                    value: *v,
                };
                let ctx = cdr::StreamContext::new(call, &snap, s);
                track.observe(now, s, &|d| ctx.interval_score(d));
            }
        }
    }
    call.media.intervals = tracks;
}

/// Pushes `x` with room for it alone: a call's media vectors hold a few elements of
/// hundreds of bytes (a map value is about 560), where a first push makes room for four
/// (most of a call's memory, at 10,000 calls). They are bounded (hops, snapshots, interval
/// tracks), so growing one at a time costs little.
fn push_exact<T>(v: &mut Vec<T>, x: T) {
    v.reserve_exact(1);
    v.push(x);
}

/// Packets counted in every slot of `v`.
fn packets(v: &MediaValue) -> u64 {
    v.slots
        .iter()
        .map(|s| s.packets)
        .fold(0, u64::saturating_add)
}

/// Snapshots the entries of `plan`, bound on `hop` (the live copy when an entry vanished),
/// and removes them.
pub(super) fn retire(
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
                    let snap = Snapshot {
                        way,
                        hop,
                        plan,
                        value,
                    };
                    push_exact(&mut call.media.snapshots, snap);
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

/// The media entries of `call` still bound, as they stand: read from the table (the last
/// polled value when an entry is gone), neither retired nor removed, so the running
/// accounting goes on. The media so far of an interim record.
pub(super) fn live_snapshots(
    call: &Call,
    media: &mut dyn MediaTable,
    stats: &mut TrackerStats,
) -> Vec<Snapshot> {
    let mut out = Vec::new();
    for h in &call.media.hops {
        let Some(plan) = h.plan else {
            continue;
        };
        let read = plan.read(media);
        if read.is_err() {
            stats.media_errors += 1;
        }
        for way in [Way::CallerToCallee, Way::CalleeToCaller] {
            let fresh = read.as_ref().ok().and_then(|vs| {
                vs.iter()
                    .find(|(w, _)| *w == way)
                    .and_then(|(_, v)| *v)
                    .filter(|v| v.cookie == call.cookie)
            });
            let value = fresh.or_else(|| h.live.iter().find(|(w, _)| *w == way).map(|(_, v)| *v));
            if let Some(value) = value.filter(|v| v.slots.iter().any(|s| s.in_use != 0)) {
                out.push(Snapshot {
                    way,
                    hop: h.hop,
                    plan,
                    value,
                });
            }
        }
    }
    out
}
