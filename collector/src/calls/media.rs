//! The media binder: turns the offer/answer SDP of a call (RFC 3264, RFC 8866) into MEDIA
//! and MEDIA_EP entries (`collector_common::media`), reads their RTP statistics back, and
//! removes them when the call ends.
//!
//! The entries go through the [`MediaTable`] trait, with two implementations: the kernel's
//! maps (in the agent, over `crate::capture::Capture`) and [`EmulatedMedia`], an in-memory
//! copy used by replay that applies exactly the kernel's lookup order (exact pair, then
//! destination endpoint, then source endpoint; RTCP endpoints copied, not counted) and runs
//! the same `MediaValue::update` with the packet's capture time. Replay therefore produces
//! the numbers the kernel would have produced for the same packets.
//!
//! What is installed for a call whose two sides announced `A` (caller) and `B` (callee):
//! the pair entries `A→B` and `B→A` (only once both sides are known: a pair needs both
//! ends), the endpoints `A` and `B` pointing at them (for a far end latched behind NAT, or a
//! port shared by many calls), and the RTCP endpoints (RTP port + 1, or `a=rtcp`; none with
//! `a=rtcp-mux`, where the pair entry's mux flag lets RTCP through). Only the first audio
//! stream of an SDP is bound (the first RTP stream when there is no audio).
//!
//! Until the answer is bound, the offerer's address has [`Pending`] entries: RTP the
//! answerer sends right after its answer, before userspace has read it, is counted there,
//! and the plan's answerer → offerer stream starts from it.
//!
//! Removal checks the cookie of every entry first: a shared endpoint (the same media-server
//! port in two calls) may meanwhile belong to another call.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use collector_common::{
    media::{EndpointKey, EndpointValue},
    rtp::{Outcome, RtpFields},
    MediaKey, MediaValue,
};
use thiserror::Error;

use crate::media::rtcp::{self, ReportBlock, VoipMetrics};
use crate::sip::sdp::{self, Direction, SdpLimits};

/// Errors of a [`MediaTable`].
#[derive(Debug, Error)]
pub enum MediaError {
    /// A kernel map operation failed (a full map among the causes).
    #[error("kernel media map operation failed")]
    Kernel(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The emulated table is full: like the kernel's preallocated hash map it refuses the
    /// insert and evicts nothing, so a flood never displaces an established call.
    #[error("media table full")]
    Full,
}

/// The MEDIA and MEDIA_EP maps, as the binder uses them.
pub trait MediaTable {
    /// Installs (or replaces) one direction of a stream.
    fn insert_stream(&mut self, key: MediaKey, value: MediaValue) -> Result<(), MediaError>;
    /// Reads one direction; `None` when absent (never installed, removed or evicted).
    fn stream(&mut self, key: &MediaKey) -> Result<Option<MediaValue>, MediaError>;
    /// The call (cookie) a direction belongs to, `None` when absent. Only userspace
    /// writes entries, so a table that remembers what it wrote answers without reading
    /// the kernel's counters.
    fn stream_cookie(&mut self, key: &MediaKey) -> Result<Option<u64>, MediaError> {
        Ok(self.stream(key)?.map(|v| v.cookie))
    }
    /// Removes one direction (absent is fine).
    fn remove_stream(&mut self, key: &MediaKey) -> Result<(), MediaError>;
    /// Installs (or replaces) an endpoint.
    fn insert_endpoint(&mut self, key: EndpointKey, value: EndpointValue)
        -> Result<(), MediaError>;
    /// Reads an endpoint.
    fn endpoint(&mut self, key: &EndpointKey) -> Result<Option<EndpointValue>, MediaError>;
    /// Removes an endpoint (absent is fine).
    fn remove_endpoint(&mut self, key: &EndpointKey) -> Result<(), MediaError>;
    /// Applies the writes the table queued, if it queues them (the kernel's maps take them
    /// in batches); the cookie of each entry refused (a full map).
    fn flush(&mut self) -> Vec<u64> {
        Vec::new()
    }
    /// About `reads` reads follow (a poll of every call): the table may read all its
    /// entries at once and answer [`MediaTable::stream`] from that copy until
    /// [`MediaTable::end_bulk_read`].
    fn begin_bulk_read(&mut self, _reads: usize) {}
    /// Ends what [`MediaTable::begin_bulk_read`] began: reads go to the table again.
    fn end_bulk_read(&mut self) {}
}

/// An address as the maps store it: IPv4 mapped into IPv6, network byte order.
pub fn map_addr(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address of a map key field (IPv4-mapped addresses back to IPv4).
pub fn unmap_addr(a: [u8; 16]) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::from(a)).to_canonical()
}

/// The MEDIA key of packets from `src` to `dst`.
pub fn media_key(src: SocketAddr, dst: SocketAddr) -> MediaKey {
    MediaKey {
        src: map_addr(src.ip()),
        dst: map_addr(dst.ip()),
        sport: src.port(),
        dport: dst.port(),
    }
}

/// The MEDIA_EP key of `ep`.
pub fn endpoint_key(ep: SocketAddr) -> EndpointKey {
    EndpointKey {
        addr: map_addr(ep.ip()),
        port: ep.port(),
        _pad: 0,
    }
}

/// What the kernel (or its emulation) did with a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpVerdict {
    /// On a SIP port: the SIP path handles it, never the media path.
    SipPort,
    /// Neither port announced, or no entry matched.
    NoMatch,
    /// Counted in a stream entry.
    Rtp(Outcome),
    /// Matched an entry but is not RTP version 2 (or shorter than its header).
    RtpInvalid,
    /// RTCP of a bound stream: copied to userspace.
    Rtcp,
}

/// Counters of [`EmulatedMedia`], named after the kernel's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmulationStats {
    /// RTP packets counted (kernel `rtp_matched`).
    pub rtp_matched: u64,
    /// Telephone-event packets counted.
    pub telephone_events: u64,
    /// Packets without a free SSRC slot.
    pub ssrc_overflow: u64,
    /// Matched packets that are not RTP.
    pub rtp_invalid: u64,
    /// RTCP packets copied.
    pub rtcp_copied: u64,
    /// Non-SIP UDP that matched nothing.
    pub no_match: u64,
    /// UDP on a SIP port that is not SIP.
    pub sip_port_not_sip: u64,
    /// Inserts refused because the table was full (the kernel's hash map refuses them too).
    pub refused: u64,
}

/// Default capacity of each emulated map (the kernel's `MEDIA_ENTRIES_DEFAULT`).
pub const EMULATED_ENTRIES: usize = collector_common::MEDIA_ENTRIES_DEFAULT as usize;

const PORT_WORDS: usize = 1024;

/// An in-memory MEDIA / MEDIA_EP / MEDIA_PORTS with the kernel's lookup order, for replay.
pub struct EmulatedMedia {
    sip_ports: Vec<u64>,
    announced: Vec<u64>,
    media: HashMap<MediaKey, MediaValue>,
    endpoints: HashMap<EndpointKey, EndpointValue>,
    // Entries per table; a full table refuses new keys, as the kernel's hash maps do.
    capacity: usize,
    stats: EmulationStats,
}

fn bit_set(words: &mut [u64], port: u16) {
    if let Some(w) = words.get_mut(usize::from(port >> 6)) {
        *w |= 1u64 << (port & 63);
    }
}

fn bit_test(words: &[u64], port: u16) -> bool {
    words
        .get(usize::from(port >> 6))
        .is_some_and(|w| w & (1u64 << (port & 63)) != 0)
}

impl EmulatedMedia {
    /// An empty table for a host whose SIP ports are `sip_ports` (UDP on them never takes
    /// the media path, as in the kernel), holding at most `capacity` entries per map.
    pub fn new(sip_ports: &[u16], capacity: usize) -> Self {
        let mut sip = vec![0u64; PORT_WORDS];
        for &p in sip_ports {
            bit_set(&mut sip, p);
        }
        Self {
            sip_ports: sip,
            announced: vec![0u64; PORT_WORDS],
            media: HashMap::new(),
            endpoints: HashMap::new(),
            capacity: capacity.max(1),
            stats: EmulationStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> EmulationStats {
        self.stats
    }

    /// Entries currently installed (MEDIA, MEDIA_EP).
    pub fn len(&self) -> (usize, usize) {
        (self.media.len(), self.endpoints.len())
    }

    /// True when both maps are empty.
    pub fn is_empty(&self) -> bool {
        self.media.is_empty() && self.endpoints.is_empty()
    }

    /// The kernel's media path for one non-SIP UDP datagram captured at `ts_ns`.
    pub fn on_udp(
        &mut self,
        ts_ns: u64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> UdpVerdict {
        let v = self.classify(ts_ns, src, dst, payload);
        match v {
            UdpVerdict::SipPort => self.stats.sip_port_not_sip += 1,
            UdpVerdict::NoMatch => self.stats.no_match += 1,
            UdpVerdict::Rtp(Outcome::Counted) => self.stats.rtp_matched += 1,
            UdpVerdict::Rtp(Outcome::TelephoneEvent) => self.stats.telephone_events += 1,
            UdpVerdict::Rtp(Outcome::Overflow) => self.stats.ssrc_overflow += 1,
            UdpVerdict::RtpInvalid => self.stats.rtp_invalid += 1,
            UdpVerdict::Rtcp => self.stats.rtcp_copied += 1,
        }
        v
    }

    fn classify(
        &mut self,
        ts_ns: u64,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> UdpVerdict {
        // The kernel sends anything on a SIP port down the SIP path (copied or counted as
        // "SIP port, not SIP"), never to the media lookup.
        if bit_test(&self.sip_ports, src.port()) || bit_test(&self.sip_ports, dst.port()) {
            return UdpVerdict::SipPort;
        }
        if !bit_test(&self.announced, src.port()) && !bit_test(&self.announced, dst.port()) {
            return UdpVerdict::NoMatch;
        }
        let key = media_key(src, dst);
        if self.media.contains_key(&key) {
            return self.rtp_hit(&key, &key, ts_ns, payload);
        }
        if let Some(ep) = self.endpoints.get(&endpoint_key(dst)).copied() {
            return self.endpoint_hit(&ep, true, &key, ts_ns, payload);
        }
        if let Some(ep) = self.endpoints.get(&endpoint_key(src)).copied() {
            return self.endpoint_hit(&ep, false, &key, ts_ns, payload);
        }
        UdpVerdict::NoMatch
    }

    fn endpoint_hit(
        &mut self,
        ep: &EndpointValue,
        as_dst: bool,
        packet: &MediaKey,
        ts_ns: u64,
        payload: &[u8],
    ) -> UdpVerdict {
        if ep.flags & EndpointValue::FLAG_RTCP != 0 {
            return UdpVerdict::Rtcp;
        }
        let key = if as_dst { ep.to_key } else { ep.from_key };
        if self.media.contains_key(&key) {
            self.rtp_hit(&key, packet, ts_ns, payload)
        } else {
            UdpVerdict::NoMatch
        }
    }

    /// As the kernel: counts one packet (addresses `packet`) in entry `key`, which first
    /// takes over the pending entry of the packet's destination when it is due to.
    fn rtp_hit(
        &mut self,
        key: &MediaKey,
        packet: &MediaKey,
        ts_ns: u64,
        payload: &[u8],
    ) -> UdpVerdict {
        if self
            .media
            .get(key)
            .is_some_and(|v| v.flags & MediaValue::FLAG_SEED != 0)
        {
            let pending = MediaKey::pending(&packet.dst, packet.dport);
            let seed = self.media.get(&pending).copied();
            if let Some(v) = self.media.get_mut(key) {
                v.take_seed(seed.as_ref());
            }
        }
        let Some(v) = self.media.get_mut(key) else {
            return UdpVerdict::NoMatch;
        };
        let Some(hdr) = payload
            .get(..12)
            .and_then(|h| <&[u8; 12]>::try_from(h).ok())
        else {
            return UdpVerdict::RtpInvalid;
        };
        if v.flags & MediaValue::FLAG_RTCP_MUX != 0 && RtpFields::is_rtcp_mux(hdr[1]) {
            return UdpVerdict::Rtcp;
        }
        let Some(f) = RtpFields::from_bytes(hdr) else {
            return UdpVerdict::RtpInvalid;
        };
        // As the kernel: the CSRC list and the header extension must fit in the payload.
        let ext_words = if RtpFields::has_extension(hdr[0]) {
            let at = RtpFields::csrc_end(hdr[0]);
            match payload.get(at + 2..at + 4) {
                Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
                _ => return UdpVerdict::RtpInvalid,
            }
        } else {
            0
        };
        if RtpFields::header_len(hdr[0], ext_words) > payload.len() {
            return UdpVerdict::RtpInvalid;
        }
        // The kernel passes the UDP payload length, clamped to the packet (u16 there).
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        UdpVerdict::Rtp(v.update(&f, len, ts_ns))
    }
}

impl EmulatedMedia {
    /// Refuses an insert of a new key into a full table, as the kernel's map does.
    fn room<K: std::hash::Hash + Eq, V>(
        stats: &mut EmulationStats,
        table: &HashMap<K, V>,
        key: &K,
        capacity: usize,
    ) -> Result<(), MediaError> {
        if !table.contains_key(key) && table.len() >= capacity {
            stats.refused += 1;
            return Err(MediaError::Full);
        }
        Ok(())
    }
}

impl MediaTable for EmulatedMedia {
    fn insert_stream(&mut self, key: MediaKey, value: MediaValue) -> Result<(), MediaError> {
        bit_set(&mut self.announced, key.sport);
        bit_set(&mut self.announced, key.dport);
        Self::room(&mut self.stats, &self.media, &key, self.capacity)?;
        self.media.insert(key, value);
        Ok(())
    }

    fn stream(&mut self, key: &MediaKey) -> Result<Option<MediaValue>, MediaError> {
        Ok(self.media.get(key).copied())
    }

    fn remove_stream(&mut self, key: &MediaKey) -> Result<(), MediaError> {
        self.media.remove(key);
        Ok(())
    }

    fn insert_endpoint(
        &mut self,
        key: EndpointKey,
        value: EndpointValue,
    ) -> Result<(), MediaError> {
        bit_set(&mut self.announced, key.port);
        Self::room(&mut self.stats, &self.endpoints, &key, self.capacity)?;
        self.endpoints.insert(key, value);
        Ok(())
    }

    fn endpoint(&mut self, key: &EndpointKey) -> Result<Option<EndpointValue>, MediaError> {
        Ok(self.endpoints.get(key).copied())
    }

    fn remove_endpoint(&mut self, key: &EndpointKey) -> Result<(), MediaError> {
        self.endpoints.remove(key);
        Ok(())
    }
}

/// One payload type of an m= line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecInfo {
    /// Payload type.
    pub pt: u8,
    /// Encoding name (rtpmap, or the RFC 3551 static assignment).
    pub name: String,
    /// Clock rate, Hz (0 when unknown).
    pub clock_rate: u32,
}

/// What one side announced for its first audio stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdpMedia {
    /// Where it receives RTP (the address may be unspecified: RFC 2543 hold).
    pub rtp: SocketAddr,
    /// Where it receives RTCP (None with rtcp-mux, or when port + 1 overflows).
    pub rtcp: Option<SocketAddr>,
    /// It offered or accepted `a=rtcp-mux` (RFC 5761).
    pub mux: bool,
    /// Its direction attribute (RFC 8866 §6.7).
    pub direction: Direction,
    /// The payload types in preference order.
    pub codecs: Vec<CodecInfo>,
    /// The telephone-event payload type (RFC 4733), if any.
    pub te_pt: Option<u8>,
    /// `a=ptime`, ms.
    pub ptime: Option<u32>,
}

/// Telephone events and comfort noise are not the call's codec.
fn is_auxiliary(name: &str) -> bool {
    name.eq_ignore_ascii_case("telephone-event") || name.eq_ignore_ascii_case("CN")
}

impl SdpMedia {
    /// The first audio RTP stream of an SDP body (else its first RTP stream); `Ok(None)`
    /// when there is none, or it is disabled (port 0), or it has no usable address.
    pub fn from_body(body: &[u8]) -> Result<Option<Self>, sdp::SdpError> {
        let s = sdp::parse(body, &SdpLimits::default())?;
        let m = s
            .media
            .iter()
            .find(|m| m.is_rtp() && matches!(m.kind, sdp::MediaKind::Audio))
            .or_else(|| s.media.iter().find(|m| m.is_rtp()));
        let Some(m) = m else {
            return Ok(None);
        };
        if m.is_disabled() {
            return Ok(None);
        }
        let Some(ip) = s.connection_for(m).and_then(|c| c.address.ip()) else {
            return Ok(None);
        };
        let rtp = SocketAddr::new(ip, m.port);
        let rtcp = if m.rtcp_mux {
            None
        } else {
            let rip = s.rtcp_address_for(m).and_then(|a| a.ip()).unwrap_or(ip);
            m.rtcp_port().map(|p| SocketAddr::new(rip, p))
        };
        let codecs = m
            .payload_types()
            .map(|pt| {
                let c = m.codec(pt);
                CodecInfo {
                    pt,
                    name: c.map_or_else(|| format!("PT{pt}"), |c| c.encoding.to_owned()),
                    clock_rate: c.and_then(|c| c.clock_rate).unwrap_or(0),
                }
            })
            .collect();
        Ok(Some(Self {
            rtp,
            rtcp,
            mux: m.rtcp_mux,
            direction: s.direction_for(m),
            codecs,
            te_pt: m.telephone_event_pt(),
            ptime: m.ptime,
        }))
    }

    /// RFC 3264 §8.4 hold: `sendonly` or `inactive`, or the RFC 2543 `c=0.0.0.0`.
    pub fn is_hold(&self) -> bool {
        matches!(self.direction, Direction::SendOnly | Direction::Inactive)
            || self.rtp.ip().is_unspecified()
    }

    /// The first payload type that is a real codec (not telephone-event or CN).
    pub fn main_codec(&self) -> Option<&CodecInfo> {
        self.codecs.iter().find(|c| !is_auxiliary(&c.name))
    }

    /// What payload type `pt` means in this description.
    pub fn codec(&self, pt: u8) -> Option<&CodecInfo> {
        self.codecs.iter().find(|c| c.pt == pt)
    }
}

/// Which way a stream flows, relative to the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Way {
    /// RTP from the caller to the callee.
    CallerToCallee,
    /// RTP from the callee to the caller.
    CalleeToCaller,
}

/// The entries of one call, as installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The caller's RTP address.
    pub caller: SocketAddr,
    /// The callee's RTP address.
    pub callee: SocketAddr,
    /// The caller's RTCP address (None with mux).
    pub caller_rtcp: Option<SocketAddr>,
    /// The callee's RTCP address.
    pub callee_rtcp: Option<SocketAddr>,
    /// Clock rate of the negotiated codec, Hz.
    pub clock_rate: u32,
    /// Telephone-event PT of caller → callee packets (0xff: none).
    pub te_to_callee: u8,
    /// Telephone-event PT of callee → caller packets.
    pub te_to_caller: u8,
    /// RTCP multiplexed on the RTP ports (both sides agreed).
    pub mux: bool,
    /// The direction that starts from a [`Pending`] entry (RTP to the offerer counted
    /// before the answer was bound), and that entry's key. Its exact entry is installed
    /// with [`MediaValue::FLAG_SEED`]: the kernel moves the pending counts into it at its
    /// first packet, so nothing is read and written apart. The pending entry stays until
    /// the plan is removed; reads take it while the flag is still set.
    pub seeded: Option<(Way, MediaKey)>,
}

impl Plan {
    /// The plan for two announced sides; `None` while either address is unusable.
    pub fn new(caller: &SdpMedia, callee: &SdpMedia) -> Option<Self> {
        if caller.rtp.ip().is_unspecified()
            || callee.rtp.ip().is_unspecified()
            || caller.rtp.port() == 0
            || callee.rtp.port() == 0
            || caller.rtp == callee.rtp
        {
            return None;
        }
        // The answerer's first real codec that the offerer also listed is what flows; the
        // clock rate is what the jitter needs.
        let clock_rate = callee
            .codecs
            .iter()
            .filter(|c| !is_auxiliary(&c.name))
            .find(|c| {
                caller
                    .codecs
                    .iter()
                    .any(|o| o.name.eq_ignore_ascii_case(&c.name) && o.clock_rate == c.clock_rate)
            })
            .or_else(|| callee.main_codec())
            .or_else(|| caller.main_codec())
            .map_or(0, |c| c.clock_rate);
        // Payload type numbers are those the receiver announced (RFC 3264 §6.1), falling
        // back to the sender's when the receiver listed no telephone-event.
        let te = |receiver: &SdpMedia, sender: &SdpMedia| {
            receiver.te_pt.or(sender.te_pt).unwrap_or(0xff)
        };
        let mux = caller.mux && callee.mux;
        Some(Self {
            caller: caller.rtp,
            callee: callee.rtp,
            caller_rtcp: if mux { None } else { caller.rtcp },
            callee_rtcp: if mux { None } else { callee.rtcp },
            clock_rate,
            te_to_callee: te(callee, caller),
            te_to_caller: te(caller, callee),
            mux,
            seeded: None,
        })
    }

    /// Whether `other` binds the same streams (whatever they were seeded from).
    pub fn binds_same(&self, other: &Plan) -> bool {
        Plan {
            seeded: None,
            ..*self
        } == Plan {
            seeded: None,
            ..*other
        }
    }

    /// The MEDIA key of one direction.
    pub fn key(&self, way: Way) -> MediaKey {
        match way {
            Way::CallerToCallee => media_key(self.caller, self.callee),
            Way::CalleeToCaller => media_key(self.callee, self.caller),
        }
    }

    fn endpoints(&self) -> impl Iterator<Item = SocketAddr> {
        [
            Some(self.caller),
            Some(self.callee),
            self.caller_rtcp.filter(|&r| r != self.caller),
            self.callee_rtcp.filter(|&r| r != self.callee),
        ]
        .into_iter()
        .flatten()
    }

    /// Writes the entries. Errors are counted by the caller; what was written stays.
    pub fn install(&self, cookie: u64, table: &mut dyn MediaTable) -> Result<(), MediaError> {
        for way in [Way::CallerToCallee, Way::CalleeToCaller] {
            let te_pt = match way {
                Way::CallerToCallee => self.te_to_callee,
                Way::CalleeToCaller => self.te_to_caller,
            };
            let mut flags = stream_flags(self.mux);
            if self.seeded.is_some_and(|(w, _)| w == way) {
                flags |= MediaValue::FLAG_SEED;
            }
            let value = MediaValue::new(cookie, self.clock_rate, te_pt, flags);
            table.insert_stream(self.key(way), value)?;
        }
        let c2e = self.key(Way::CallerToCallee);
        let e2c = self.key(Way::CalleeToCaller);
        let ep = |to_key, from_key, flags| EndpointValue {
            cookie,
            flags,
            _pad: 0,
            to_key,
            from_key,
        };
        // Packets to the caller flow callee → caller; packets from it, caller → callee.
        table.insert_endpoint(endpoint_key(self.caller), ep(e2c, c2e, 0))?;
        table.insert_endpoint(endpoint_key(self.callee), ep(c2e, e2c, 0))?;
        if let Some(r) = self.caller_rtcp.filter(|&r| r != self.caller) {
            table.insert_endpoint(endpoint_key(r), ep(e2c, c2e, EndpointValue::FLAG_RTCP))?;
        }
        if let Some(r) = self.callee_rtcp.filter(|&r| r != self.callee) {
            table.insert_endpoint(endpoint_key(r), ep(c2e, e2c, EndpointValue::FLAG_RTCP))?;
        }
        Ok(())
    }

    /// Removes the pending entry the seeded direction started from once the kernel has
    /// moved its counts (the bound entry's [`MediaValue::FLAG_SEED`] is clear), and forgets
    /// it; until then (no packet yet) it stays.
    pub fn settle(&mut self, cookie: u64, table: &mut dyn MediaTable) -> Result<(), MediaError> {
        let Some((way, pending)) = self.seeded else {
            return Ok(());
        };
        let taken = match table.stream(&self.key(way))? {
            Some(v) if v.cookie == cookie => v.flags & MediaValue::FLAG_SEED == 0,
            // The bound entry is gone: nothing will move the counts any more.
            _ => false,
        };
        if taken {
            if table.stream_cookie(&pending)? == Some(cookie) {
                table.remove_stream(&pending)?;
            }
            self.seeded = None;
        }
        Ok(())
    }

    /// Reads both directions: `(way, value)` for each entry still present.
    pub fn read(
        &self,
        table: &mut dyn MediaTable,
    ) -> Result<Vec<(Way, Option<MediaValue>)>, MediaError> {
        let mut out = Vec::with_capacity(2);
        for way in [Way::CallerToCallee, Way::CalleeToCaller] {
            // The pending entry first: if the bound one still has its flag after it, the
            // kernel has not moved the pending counts yet, and they are the stream's.
            let pending = match self.seeded {
                Some((w, key)) if w == way => table.stream(&key)?,
                _ => None,
            };
            let value = table.stream(&self.key(way))?.map(|mut v| {
                if v.flags & MediaValue::FLAG_SEED != 0 {
                    v.take_seed(pending.as_ref());
                }
                v
            });
            out.push((way, value));
        }
        Ok(out)
    }

    /// Removes the entries that still belong to `cookie`.
    pub fn remove(&self, cookie: u64, table: &mut dyn MediaTable) -> Result<(), MediaError> {
        let seeded_from = self.seeded.map(|(_, key)| key);
        let keys = [self.key(Way::CallerToCallee), self.key(Way::CalleeToCaller)];
        for key in keys.into_iter().chain(seeded_from) {
            if table.stream_cookie(&key)? == Some(cookie) {
                table.remove_stream(&key)?;
            }
        }
        for ep in self.endpoints() {
            let key = endpoint_key(ep);
            if table.endpoint(&key)?.is_some_and(|v| v.cookie == cookie) {
                table.remove_endpoint(&key)?;
            }
        }
        Ok(())
    }

    /// The RTCP addresses of the plan (for attributing copied RTCP to the call).
    pub fn rtcp_endpoints(&self) -> impl Iterator<Item = SocketAddr> {
        let (a, b) = if self.mux {
            (Some(self.caller), Some(self.callee))
        } else {
            (self.caller_rtcp, self.callee_rtcp)
        };
        [a, b].into_iter().flatten()
    }
}

/// The flags of a MEDIA stream entry: RTCP may arrive on its RTP port when `mux`.
fn stream_flags(mux: bool) -> u8 {
    if mux {
        MediaValue::FLAG_RTCP_MUX
    } else {
        0
    }
}

/// The entries that count RTP sent to an offerer while its answer is not bound yet.
///
/// The answerer may send RTP right after its answer, before userspace has read the answer
/// and installed the [`Plan`]; the kernel counts only what an entry matches. So once one
/// side of a hop has announced its address (the offer: an INVITE's SDP, or a 2xx's in a
/// late offer), a stream "anything → offerer" is installed under a key no packet can have
/// (source the unspecified address), with the offerer's endpoint pointing at it for packets
/// it receives. Packets it sends are not counted (`from_key` names a stream that never
/// exists): their destination is not known yet. When the plan is installed its
/// answerer → offerer direction is seeded from this entry ([`Plan::seeded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The offerer's RTP address.
    pub addr: SocketAddr,
    /// Clock rate of the offer's main codec, Hz (0 when unknown).
    pub clock_rate: u32,
    /// The offer's telephone-event PT (0xff: none).
    pub te_pt: u8,
    /// The offer asked for `a=rtcp-mux`: RTCP may arrive on the RTP port.
    pub mux: bool,
}

impl Pending {
    /// The pending entries of one offer; `None` when its address is unusable.
    pub fn new(offer: &SdpMedia) -> Option<Self> {
        if offer.rtp.ip().is_unspecified() || offer.rtp.port() == 0 {
            return None;
        }
        Some(Self {
            addr: offer.rtp,
            clock_rate: offer.main_codec().map_or(0, |c| c.clock_rate),
            te_pt: offer.te_pt.unwrap_or(0xff),
            mux: offer.mux,
        })
    }

    /// The MEDIA key of the pending stream: from the unspecified address of the offerer's
    /// family, which no packet has.
    pub fn key(&self) -> MediaKey {
        let at = endpoint_key(self.addr);
        MediaKey::pending(&at.addr, at.port)
    }

    /// A MEDIA key that is never installed: to port 0 of the unspecified address.
    fn nowhere_key(&self) -> MediaKey {
        media_key(self.addr, self.unspecified(0))
    }

    fn unspecified(&self, port: u16) -> SocketAddr {
        let ip = match self.addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        SocketAddr::new(ip, port)
    }

    /// Installs the entries for call `cookie`, unless the offerer's endpoint (or the
    /// pending stream) belongs to something else: another call's, or this call's own plan
    /// on another hop. Installing again what is there keeps its counters. Returns whether
    /// the entries are the call's.
    pub fn install(&self, cookie: u64, table: &mut dyn MediaTable) -> Result<bool, MediaError> {
        let key = self.key();
        let ep_key = endpoint_key(self.addr);
        let ep = table.endpoint(&ep_key)?;
        if ep.is_some_and(|e| e.cookie != cookie || e.to_key != key) {
            return Ok(false);
        }
        match table.stream_cookie(&key)? {
            Some(c) if c != cookie => return Ok(false),
            Some(_) => {}
            None => {
                table.insert_stream(
                    key,
                    MediaValue::new(cookie, self.clock_rate, self.te_pt, stream_flags(self.mux)),
                )?;
            }
        }
        if ep.is_none() {
            table.insert_endpoint(
                ep_key,
                EndpointValue {
                    cookie,
                    flags: 0,
                    _pad: 0,
                    to_key: key,
                    from_key: self.nowhere_key(),
                },
            )?;
        }
        Ok(true)
    }

    /// What the pending stream of `cookie` counted; `None` when it counted nothing (or is
    /// gone, or another call's).
    pub fn read(
        &self,
        cookie: u64,
        table: &mut dyn MediaTable,
    ) -> Result<Option<MediaValue>, MediaError> {
        Ok(table.stream(&self.key())?.filter(|v| {
            v.cookie == cookie && (v.ssrc_overflow > 0 || v.slots.iter().any(|s| s.in_use != 0))
        }))
    }

    /// Removes the entries that are still the pending ones of `cookie` (the offerer's
    /// endpoint is left alone once a plan has replaced it).
    pub fn remove(&self, cookie: u64, table: &mut dyn MediaTable) -> Result<(), MediaError> {
        let key = self.key();
        let ep_key = endpoint_key(self.addr);
        if table
            .endpoint(&ep_key)?
            .is_some_and(|e| e.cookie == cookie && e.to_key == key)
        {
            table.remove_endpoint(&ep_key)?;
        }
        if table.stream_cookie(&key)? == Some(cookie) {
            table.remove_stream(&key)?;
        }
        Ok(())
    }
}

/// Most report blocks kept per call (one per SSRC reported on); as many XR VoIP Metrics
/// blocks again.
const MAX_REPORTS: usize = 8;
/// Most sender reports remembered per call for the observed round trip.
const MAX_SRS: usize = 16;

/// What RTCP told about a call's streams.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RtcpState {
    /// The latest report block about each SSRC.
    pub reports: Vec<ReportBlock>,
    /// The latest XR VoIP Metrics block (RFC 3611 §4.7) about each SSRC.
    pub voip_metrics: Vec<VoipMetrics>,
    /// Sender reports seen: (NTP middle 32 bits, arrival ns).
    srs: VecDeque<(u32, u64)>,
    /// The latest round trip measured from the observation point.
    pub rtt: Option<Duration>,
    /// RTCP datagrams that did not parse.
    pub errors: u32,
    /// RTCP datagrams attributed to the call.
    pub packets: u32,
}

impl RtcpState {
    /// Takes in one RTCP datagram seen at `ts_ns`; false when it does not parse (it is
    /// then only counted).
    pub fn observe(&mut self, ts_ns: u64, payload: &[u8]) -> bool {
        self.packets = self.packets.saturating_add(1);
        let opts = rtcp::ParseOptions { reduced_size: true };
        let Ok(c) = rtcp::parse_compound(payload, opts) else {
            self.errors = self.errors.saturating_add(1);
            return false;
        };
        for sr in c.sender_reports() {
            if self.srs.len() >= MAX_SRS {
                self.srs.pop_front();
            }
            self.srs.push_back((sr.info.ntp_middle32(), ts_ns));
        }
        for (_, rb) in c.report_blocks() {
            if let Some(&(_, seen)) = self.srs.iter().rev().find(|(m, _)| *m == rb.lsr) {
                if let Some(rtt) = rb.round_trip_observed(seen, ts_ns) {
                    self.rtt = Some(rtt);
                }
            }
            keep_latest(&mut self.reports, rb, |r| r.ssrc);
        }
        for (_, m) in c.voip_metrics() {
            keep_latest(&mut self.voip_metrics, m, |m| m.ssrc);
        }
        true
    }

    /// The latest report about `ssrc`.
    pub fn report_for(&self, ssrc: u32) -> Option<&ReportBlock> {
        self.reports.iter().find(|r| r.ssrc == ssrc)
    }

    /// The latest XR VoIP Metrics block about `ssrc` (its SSRC of source).
    pub fn voip_metrics_for(&self, ssrc: u32) -> Option<&VoipMetrics> {
        self.voip_metrics.iter().find(|m| m.ssrc == ssrc)
    }
}

/// Replaces the entry of `kept` about the same SSRC as `new`, or adds `new` while fewer
/// than [`MAX_REPORTS`] are kept (later SSRCs are then ignored).
fn keep_latest<T: Copy>(kept: &mut Vec<T>, new: &T, ssrc: impl Fn(&T) -> u32) {
    if let Some(slot) = kept.iter_mut().find(|k| ssrc(k) == ssrc(new)) {
        *slot = *new;
    } else if kept.len() < MAX_REPORTS {
        kept.push(*new);
    }
}
