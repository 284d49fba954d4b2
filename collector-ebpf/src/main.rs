//! Kernel programs: `sip_xdp` (XDP, ingress) and `sip_tc_egress` (TC clsact, egress).
//!
//! Both run one bounded L2..L4 parse (`collector_common::parse`), then either copy a SIP
//! packet, a UDP fragment of a SIP host or an RTCP packet to userspace through the EVENTS
//! ring buffer, or update the RTP state of a stream installed in the MEDIA map. Every path
//! returns PASS: the programs observe, they never drop, delay or modify a packet. Whatever
//! could not be handled is counted in COUNTERS under its reason.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{xdp_action::XDP_PASS, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_PIPE},
    helpers::{bpf_ktime_get_ns, generated as gen},
    macros::{classifier, map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{TcContext, XdpContext},
};
use collector_common::{
    counters::COUNTER_COUNT,
    media::{EndpointKey, EndpointValue, MEDIA_PORT_WORDS},
    parse::{self, Fragment, Parsed, ParseError, IPPROTO_TCP, IPPROTO_UDP},
    rtp::{Outcome, RtpFields},
    Config, Counter, Direction, EventHeader, EventKind, HostKey, MediaKey, MediaValue,
    EVENT_VERSION, MEDIA_ENTRIES_DEFAULT, PORT_SIP, PORT_SIP_WS, RING_BYTES_DEFAULT,
    SIP_HOSTS_ENTRIES_DEFAULT, SIP_PORT_WORDS, SNAP_MAX,
};

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES_DEFAULT, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Two bits per port (bit 0: SIP, bit 1: SIP over WebSocket), 32 ports per word: an array
/// read is inlined by the verifier, a hash lookup is a call and a hash per packet.
#[map(name = "SIP_PORTS")]
static SIP_PORTS: Array<u64> = Array::with_max_entries(SIP_PORT_WORDS, 0);

/// Set by the loader before the programs are verified (read-only data): the verifier then
/// knows its value and prunes the branches it disables.
#[no_mangle]
static COLLECTOR_CONFIG: Config = Config::DEFAULT;

/// A plain (preallocated) hash, not an LRU: userspace installs and removes entries with the
/// calls, so the kernel never evicts an established call's stream to make room for a flood
/// (a full map is a counted insert failure in userspace), and a lookup does not dirty the
/// LRU reference bit of the entry on every packet.
#[map(name = "MEDIA")]
static MEDIA: HashMap<MediaKey, MediaValue> = HashMap::with_max_entries(MEDIA_ENTRIES_DEFAULT, 0);

#[map(name = "MEDIA_EP")]
static MEDIA_EP: HashMap<EndpointKey, EndpointValue> =
    HashMap::with_max_entries(MEDIA_ENTRIES_DEFAULT, 0);

#[map(name = "MEDIA_PORTS")]
static MEDIA_PORTS: Array<u64> = Array::with_max_entries(MEDIA_PORT_WORDS, 0);

#[map(name = "SIP_HOSTS")]
static SIP_HOSTS: LruHashMap<HostKey, u64> =
    LruHashMap::with_max_entries(SIP_HOSTS_ENTRIES_DEFAULT, 0);

/// Per-CPU scratch for one event: header + up to SNAP_MAX bytes of packet.
#[repr(C)]
struct Scratch {
    hdr: EventHeader,
    data: [u8; SNAP_MAX],
}

#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory for the parse result and map keys: the eBPF stack (512 bytes,
/// shared by every call frame) cannot hold them next to the parser's temporaries.
#[repr(C)]
struct Work {
    parsed: Parsed,
    key: MediaKey,
    ep: EndpointKey,
    host: HostKey,
    pair: LastPair,
}

/// The last SIP address pair this CPU found in SIP_HOSTS, and when: SIP between two hosts
/// comes in runs (an SBC and its peer), and two LRU lookups per message (two calls, two
/// hashes) only to learn again that both are known cost more than the rest of the check.
/// Rechecked after [`PAIR_RECHECK_NS`], so an entry the LRU evicted meanwhile (a flood of
/// new hosts on another CPU) is back within that time.
#[repr(C)]
struct LastPair {
    src: [u8; 16],
    dst: [u8; 16],
    at_ns: u64,
}

/// How long a confirmed pair is trusted without a lookup.
const PAIR_RECHECK_NS: u64 = 1_000_000_000;

#[map(name = "WORK")]
static WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(1, 0);

/// Wake the reader once this many bytes are waiting (else it polls on its timer).
const WAKEUP_BYTES: u64 = 256 * 1024;

#[inline(always)]
fn count(c: Counter) {
    if let Some(p) = COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: a per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *p += 1 };
    }
}

/// What the two program types have in common.
trait Packet {
    fn start(&self) -> usize;
    fn end(&self) -> usize;
    /// Whole packet length (the linear part may be shorter).
    fn len(&self) -> u64;
    fn ifindex(&self) -> u32;
    /// Copies `len` bytes from offset 0 into `dst`. `len` is in `1..=SNAP_MAX`.
    fn load(&self, dst: *mut u8, len: u64) -> i64;
}

impl Packet for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn len(&self) -> u64 {
        // The program is loaded without BPF_F_XDP_HAS_FRAGS, so the kernel only runs it on
        // a linear buffer (native mode refuses a multi-buffer setup, generic mode linearizes
        // the skb first): the packet is `[data, data_end)`, and bpf_xdp_get_buff_len would
        // be a helper call per packet to learn the same number.
        (self.data_end() - self.data()) as u64
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the kernel's context.
        unsafe { (*self.ctx).ingress_ifindex }
    }
    #[inline(always)]
    fn load(&self, dst: *mut u8, len: u64) -> i64 {
        // SAFETY: `dst` points into the per-CPU scratch map with room for SNAP_MAX bytes.
        unsafe { gen::bpf_xdp_load_bytes(self.ctx, 0, dst as *mut _, len as u32) }
    }
}

impl Packet for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn len(&self) -> u64 {
        u64::from(TcContext::len(self))
    }
    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: reading a field of the kernel's context.
        unsafe { (*self.skb.skb).ifindex }
    }
    #[inline(always)]
    fn load(&self, dst: *mut u8, len: u64) -> i64 {
        // SAFETY: `dst` points into the per-CPU scratch map with room for SNAP_MAX bytes.
        unsafe { gen::bpf_skb_load_bytes(self.skb.skb as *const _, 0, dst as *mut _, len as u32) }
    }
}

#[xdp]
pub fn sip_xdp(ctx: XdpContext) -> u32 {
    count(Counter::XdpPackets);
    handle(&ctx, Direction::Ingress);
    XDP_PASS
}

/// Returns PASS and does nothing else: the benchmark's baseline (the cost of running any
/// XDP program at all), never attached by the agent.
#[xdp]
pub fn pass_xdp(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Returns PIPE and does nothing else: the benchmark's TC baseline (the cost of running any
/// classifier on egress, where caches are colder than in XDP's batched receive), never
/// attached by the agent.
#[classifier]
pub fn pass_tc(_ctx: TcContext) -> i32 {
    TC_ACT_PIPE
}

#[classifier]
pub fn sip_tc_egress(ctx: TcContext) -> i32 {
    count(Counter::TcPackets);
    handle(&ctx, Direction::Egress);
    // TC_ACT_PIPE: continue with the next filter; the packet goes on untouched.
    TC_ACT_PIPE
}

#[inline(always)]
fn handle<P: Packet>(ctx: &P, dir: Direction) {
    let pkt_len = ctx.len() as usize;
    // The cheapest test first: a plain UDP packet on ports that are neither SIP nor
    // announced media (most of the traffic of a host) is decided from a few header loads and
    // four bitmap words, without the full parse or the per-CPU working memory. What the
    // shortcut does not answer for takes the full path below, which counts the same way.
    // SAFETY: `[data, data_end)` is the packet the kernel handed over.
    let plain = unsafe { parse::plain_udp4_ports(ctx.start(), ctx.end(), pkt_len) };
    if let Some((sport, dport)) = plain {
        if sip_kind(sport, dport) == 0 && !port_announced(sport) && !port_announced(dport) {
            count(Counter::NoMatch);
            return;
        }
    }
    let w = match WORK.get_ptr_mut(0) {
        Some(w) => w,
        None => return,
    };
    // SAFETY: the per-CPU slot is ours for the duration of the program.
    let w = unsafe { &mut *w };
    // A plain UDP packet (most RTP) is filled in from its fixed layout, the rest parsed.
    // SAFETY: `[data, data_end)` is the packet the kernel handed over, and `plain` says
    // whether the shortcut answered for it.
    let parsed = match plain {
        Some(_) if unsafe { parse::plain_udp4_into(ctx.start(), ctx.end(), &mut w.parsed) } => {
            Ok(())
        }
        _ => unsafe { parse::parse_into(ctx.start(), ctx.end(), pkt_len, &mut w.parsed) },
    };
    match parsed {
        Ok(()) => {}
        Err(e) => {
            count(match e {
                ParseError::Truncated => Counter::Truncated,
                ParseError::NotIp => Counter::NotIp,
                ParseError::Unsupported => Counter::UnsupportedHeaders,
                ParseError::Malformed => Counter::Malformed,
            });
            return;
        }
    }
    let Work {
        parsed: p,
        key,
        ep,
        host,
        pair,
    } = w;
    let p = &*p;
    if p.bad_length {
        count(Counter::BadLength);
        return;
    }
    // SAFETY: a plain read of a global; volatile so the compiler does not fold the default.
    let cfg = unsafe { core::ptr::read_volatile(&COLLECTOR_CONFIG) };
    if p.fragment != Fragment::None {
        if p.proto == IPPROTO_UDP
            && cfg.flags & Config::FLAG_FRAGMENTS != 0
            && is_sip_host(p, host)
        {
            let _ = copy(ctx, EventKind::Fragment, dir, p, &cfg);
            return;
        }
        count(Counter::NoMatch);
        return;
    }
    match p.proto {
        IPPROTO_UDP => {
            if let Some(kind) = sip_port(p) {
                if kind == PORT_SIP_WS || looks_like_sip(ctx, p) {
                    // Copied first: the copy's timestamp dates the pair check.
                    let now = copy(ctx, EventKind::Sip, dir, p, &cfg);
                    remember_pair(p, host, pair, now);
                } else {
                    count(Counter::SipPortNotSip);
                }
                return;
            }
            // The port filter first, inline: most packets that are not SIP end here, and
            // a call into `media` (registers saved, frame set up) would cost more than it.
            if !port_announced(p.sport) && !port_announced(p.dport) {
                count(Counter::NoMatch);
                return;
            }
            media(ctx, dir, p, &cfg, key, ep);
        }
        IPPROTO_TCP => {
            if sip_port(p).is_some() {
                // Every TCP segment of a SIP connection goes up, payload check or not: a
                // message may span segments, and userspace frames the stream.
                let _ = copy(ctx, EventKind::Sip, dir, p, &cfg);
                return;
            }
            count(Counter::NoMatch);
        }
        _ => count(Counter::NoMatch),
    }
}

/// The SIP_PORTS bits of either port (0: neither is a SIP port).
#[inline(always)]
fn sip_kind(sport: u16, dport: u16) -> u8 {
    let kind = |port: u16| -> u8 {
        match SIP_PORTS.get(u32::from(port >> 5)) {
            Some(w) => ((*w >> ((port & 31) * 2)) & 3) as u8,
            None => 0,
        }
    };
    kind(dport) | kind(sport)
}

#[inline(always)]
fn sip_port(p: &Parsed) -> Option<u8> {
    let k = sip_kind(p.sport, p.dport);
    if k == 0 {
        None
    } else if k & 2 != 0 {
        Some(PORT_SIP_WS)
    } else {
        Some(PORT_SIP)
    }
}

/// Both addresses of a SIP packet into SIP_HOSTS, unless this CPU confirmed the same pair
/// less than [`PAIR_RECHECK_NS`] ago (`now`: the packet's timestamp, 0 when unknown).
#[inline(always)]
fn remember_pair(p: &Parsed, key: &mut HostKey, last: &mut LastPair, now: u64) {
    if now != 0
        && same16(&last.src, &p.src)
        && same16(&last.dst, &p.dst)
        && now.wrapping_sub(last.at_ns) < PAIR_RECHECK_NS
    {
        return;
    }
    remember_host(&p.src, key, now);
    remember_host(&p.dst, key, now);
    if now != 0 {
        last.src = p.src;
        last.dst = p.dst;
        last.at_ns = now;
    }
}

/// Two 16-byte addresses compared as two words each: a slice or array comparison is a
/// `memcmp` call in BPF, a byte loop.
#[inline(always)]
fn same16(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let (a, b) = (a.as_ptr() as *const u64, b.as_ptr() as *const u64);
    // SAFETY: both point at 16 readable bytes; `read_unaligned` needs no alignment.
    unsafe {
        core::ptr::read_unaligned(a) == core::ptr::read_unaligned(b)
            && core::ptr::read_unaligned(a.add(1)) == core::ptr::read_unaligned(b.add(1))
    }
}

#[inline(always)]
fn remember_host(addr: &[u8; 16], key: &mut HostKey, now: u64) {
    key.addr = *addr;
    // SAFETY: as above.
    if unsafe { SIP_HOSTS.get(&*key) }.is_some() {
        return;
    }
    let now = if now != 0 {
        now
    } else {
        // SAFETY: bpf_ktime_get_ns has no preconditions.
        unsafe { bpf_ktime_get_ns() }
    };
    if SIP_HOSTS.insert(&*key, &now, 0).is_err() {
        count(Counter::MapFull);
    }
}

#[inline(always)]
fn is_sip_host(p: &Parsed, key: &mut HostKey) -> bool {
    key.addr = p.src;
    // SAFETY: as above.
    if unsafe { SIP_HOSTS.get(&*key) }.is_none() {
        return false;
    }
    key.addr = p.dst;
    // SAFETY: as above.
    unsafe { SIP_HOSTS.get(&*key) }.is_some()
}

/// The payload starts with `SIP/2.0` or a method name followed by a space.
#[inline(always)]
fn looks_like_sip<P: Packet>(ctx: &P, p: &Parsed) -> bool {
    let off = usize::from(p.l7_off);
    if off > 1500 {
        return false;
    }
    let at = ctx.start() + off;
    if at + 8 > ctx.end() {
        return false;
    }
    // SAFETY: the 8 bytes were checked against data_end just above.
    let b: [u8; 8] = unsafe { core::ptr::read_unaligned(at as *const [u8; 8]) };
    starts_sip(&b)
}

#[inline(always)]
fn starts_sip(b: &[u8; 8]) -> bool {
    match b[0] {
        b'S' => b == b"SIP/2.0 " || b.starts_with(b"SUBSCRI"),
        b'I' => b.starts_with(b"INVITE ") || b.starts_with(b"INFO "),
        b'A' => b.starts_with(b"ACK "),
        b'B' => b.starts_with(b"BYE "),
        b'C' => b.starts_with(b"CANCEL "),
        b'R' => b.starts_with(b"REGISTER") || b.starts_with(b"REFER "),
        b'O' => b.starts_with(b"OPTIONS "),
        b'P' => b.starts_with(b"PRACK ") || b.starts_with(b"PUBLISH "),
        b'N' => b.starts_with(b"NOTIFY "),
        b'M' => b.starts_with(b"MESSAGE "),
        b'U' => b.starts_with(b"UPDATE "),
        _ => false,
    }
}

#[inline(always)]
fn port_announced(port: u16) -> bool {
    match MEDIA_PORTS.get(u32::from(port >> 6)) {
        Some(w) => *w & (1u64 << (port & 63)) != 0,
        None => false,
    }
}

/// The exact entry, then the endpoints (see `collector_common::media`), for a UDP packet
/// whose port passed the filter.
#[inline(never)]
fn media<P: Packet>(
    ctx: &P,
    dir: Direction,
    p: &Parsed,
    cfg: &Config,
    key: &mut MediaKey,
    ep_key: &mut EndpointKey,
) {
    key.src = p.src;
    key.dst = p.dst;
    key.sport = p.sport;
    key.dport = p.dport;
    if let Some(v) = MEDIA.get_ptr_mut(&*key) {
        seed_if_due(v, p, key);
        rtp_hit(ctx, dir, p, cfg, v);
        return;
    }
    ep_key.addr = p.dst;
    ep_key.port = p.dport;
    ep_key._pad = 0;
    // SAFETY: map lookups return pointers valid for the duration of the program.
    if let Some(ep) = unsafe { MEDIA_EP.get(&*ep_key) } {
        endpoint_hit(ctx, dir, p, cfg, ep, true, key);
        return;
    }
    ep_key.addr = p.src;
    ep_key.port = p.sport;
    // SAFETY: as above.
    if let Some(ep) = unsafe { MEDIA_EP.get(&*ep_key) } {
        endpoint_hit(ctx, dir, p, cfg, ep, false, key);
        return;
    }
    count(Counter::NoMatch);
}

#[inline(always)]
fn endpoint_hit<P: Packet>(
    ctx: &P,
    dir: Direction,
    p: &Parsed,
    cfg: &Config,
    ep: &EndpointValue,
    as_dst: bool,
    scratch: &mut MediaKey,
) {
    if ep.flags & EndpointValue::FLAG_RTCP != 0 {
        if cfg.flags & Config::FLAG_RTCP != 0 {
            let _ = copy(ctx, EventKind::Rtcp, dir, p, cfg);
        }
        return;
    }
    let key = if as_dst { &ep.to_key } else { &ep.from_key };
    match MEDIA.get_ptr_mut(key) {
        Some(v) => {
            seed_if_due(v, p, scratch);
            rtp_hit(ctx, dir, p, cfg, v)
        }
        None => count(Counter::NoMatch),
    }
}

/// A bound stream installed with [`MediaValue::FLAG_SEED`] takes over its pending entry's
/// counts at its first packet (see the flag).
#[inline(always)]
fn seed_if_due(v: *mut MediaValue, p: &Parsed, scratch: &mut MediaKey) {
    // SAFETY: `v` came from a map lookup in this program run; the entry stays valid.
    if unsafe { (*v).flags } & MediaValue::FLAG_SEED != 0 {
        seed(v, p, scratch);
    }
}

#[inline(never)]
fn seed(v: *mut MediaValue, p: &Parsed, scratch: &mut MediaKey) {
    *scratch = MediaKey::pending(&p.dst, p.dport);
    // SAFETY: map lookups return pointers valid for the duration of the program; `v` as
    // above, and a different entry (its source is the unspecified address).
    unsafe {
        let pending = MEDIA.get(&*scratch);
        (*v).take_seed(pending);
    }
}

#[inline(never)]
fn rtp_hit<P: Packet>(ctx: &P, dir: Direction, p: &Parsed, cfg: &Config, v: *mut MediaValue) {
    let off = usize::from(p.l7_off);
    if off > 1500 {
        count(Counter::RtpInvalid);
        return;
    }
    let at = ctx.start() + off;
    if at + 12 > ctx.end() {
        count(Counter::RtpInvalid);
        return;
    }
    // SAFETY: the 12 bytes were checked against data_end just above.
    let b: [u8; 12] = unsafe { core::ptr::read_unaligned(at as *const [u8; 12]) };
    // SAFETY: `v` came from a map lookup in this program run; the entry stays valid.
    let v = unsafe { &mut *v };
    if v.flags & MediaValue::FLAG_RTCP_MUX != 0 && RtpFields::is_rtcp_mux(b[1]) {
        if cfg.flags & Config::FLAG_RTCP != 0 {
            let _ = copy(ctx, EventKind::Rtcp, dir, p, cfg);
        }
        return;
    }
    let f = match RtpFields::from_bytes(&b) {
        Some(f) => f,
        None => {
            count(Counter::RtpInvalid);
            return;
        }
    };
    // The CSRC list and the header extension must fit in the payload.
    let mut ext_words = 0u16;
    if RtpFields::has_extension(b[0]) {
        let x = at + RtpFields::csrc_end(b[0]);
        if x + 4 > ctx.end() {
            count(Counter::RtpInvalid);
            return;
        }
        // SAFETY: the 4 bytes were checked against data_end just above.
        let e: [u8; 4] = unsafe { core::ptr::read_unaligned(x as *const [u8; 4]) };
        ext_words = u16::from_be_bytes([e[2], e[3]]);
    }
    if RtpFields::header_len(b[0], ext_words) > usize::from(p.payload_len) {
        count(Counter::RtpInvalid);
        return;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match v.update(&f, u32::from(p.payload_len), now) {
        Outcome::Counted => count(Counter::RtpMatched),
        Outcome::TelephoneEvent => count(Counter::TelephoneEvents),
        Outcome::Overflow => count(Counter::SsrcOverflow),
    }
    if cfg.rtp_sample_every > 0 {
        if v.sample_countdown == 0 {
            v.sample_countdown = cfg.rtp_sample_every;
            let _ = copy(ctx, EventKind::RtpSample, dir, p, cfg);
        }
        v.sample_countdown -= 1;
    }
}

/// Copies the packet (up to the snap length) with an event header into the ring; the
/// timestamp it gave the packet (0 when it stopped before stamping it).
#[inline(never)]
fn copy<P: Packet>(ctx: &P, kind: EventKind, dir: Direction, p: &Parsed, cfg: &Config) -> u64 {
    let s = match SCRATCH.get_ptr_mut(0) {
        Some(s) => s,
        None => return 0,
    };
    // SAFETY: the per-CPU scratch slot is ours for the duration of the program.
    let s = unsafe { &mut *s };
    let pkt_len = ctx.len();
    let mut snap = u64::from(cfg.snap_len);
    if snap > SNAP_MAX as u64 {
        snap = SNAP_MAX as u64;
    }
    let mut cap = pkt_len;
    let mut flags = 0u8;
    if cap > snap {
        cap = snap;
        flags |= EventHeader::FLAG_SNAP_CUT;
        count(Counter::SnapCut);
    }
    // The verifier needs a length it can prove is in 1..=SNAP_MAX, checked on the very
    // register passed to the helper. LLVM would otherwise reuse the unbounded packet
    // length: a volatile round trip through map memory makes it check the loaded value.
    s.hdr.cap_len = cap as u32;
    // SAFETY: reading back the field just written, in map memory we own.
    let cap = u64::from(unsafe { core::ptr::read_volatile(&s.hdr.cap_len) });
    if cap == 0 || cap > SNAP_MAX as u64 {
        count(Counter::LoadFailed);
        return 0;
    }
    if ctx.load(s.data.as_mut_ptr(), cap) != 0 {
        count(Counter::LoadFailed);
        return 0;
    }
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    s.hdr = EventHeader {
        kind: kind as u8,
        version: EVENT_VERSION,
        direction: dir as u8,
        flags,
        ifindex: ctx.ifindex(),
        ts_ns: now,
        orig_len: pkt_len as u32,
        cap_len: cap as u32,
        l3_off: p.l3_off,
        l4_off: p.l4_off,
        l7_off: p.l7_off,
        _pad: 0,
    };
    let total = EventHeader::LEN + cap as usize;
    // SAFETY: `total` is at most the size of `Scratch`, which the pointer covers.
    let bytes = unsafe { core::slice::from_raw_parts(s as *const Scratch as *const u8, total) };
    // Wake the reader only when this record makes the backlog cross the threshold: a
    // wakeup is an IPI (a VM exit on a virtual machine), measured here at several µs, so
    // waking per record above the threshold would cost more than the copy itself. A SIP
    // message that may carry an offer or answer (a response, INVITE, UPDATE, ACK, PRACK) is
    // the exception: its media must be in the MEDIA map before the stream's first packet,
    // which follows within a round trip, not within the reader's 10 ms poll. For those the
    // ring's adaptive notification (flags 0) wakes the reader only when it has consumed
    // everything before this record, i.e. when it sleeps: a flood, where the reader lags,
    // still costs no wakeup per message.
    let avail = EVENTS.query(0);
    let wake = if avail < WAKEUP_BYTES && avail + total as u64 >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else if kind == EventKind::Sip && may_carry_sdp(s.data.get(usize::from(p.l7_off))) {
        0
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output::<[u8]>(bytes, u64::from(wake)).is_err() {
        count(Counter::RingFull);
        return now;
    }
    count(match kind {
        EventKind::Sip => Counter::SipCopied,
        EventKind::Fragment => Counter::FragmentsCopied,
        EventKind::Rtcp => Counter::RtcpCopied,
        EventKind::RtpSample => Counter::RtpSampled,
    });
    now
}

/// Whether a SIP message starting with `first` may carry SDP that moves media: a response
/// (`SIP/2.0`), INVITE, UPDATE, ACK or PRACK (and PUBLISH, which shares the letter).
#[inline(always)]
fn may_carry_sdp(first: Option<&u8>) -> bool {
    matches!(first, Some(b'S' | b'I' | b'U' | b'A' | b'P'))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
