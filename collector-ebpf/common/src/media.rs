//! MEDIA map layout: exact address:port pairs carry per-direction RTP state; endpoints point
//! at the pair to credit when the far end is unknown (NAT) or shared (a media server
//! answering many calls from one port).
//!
//! Lookup order in the kernel for a UDP packet that is not SIP:
//! 1. `MEDIA[(src, dst)]`: the exact direction entry.
//! 2. `MEDIA_EP[dst]`: an endpoint announced in SDP receives this packet; its `to_key`
//!    names the direction entry to update (or it is an RTCP endpoint: copy the packet).
//! 3. `MEDIA_EP[src]`: an announced endpoint sends this packet (the far end it sends to is
//!    latched behind NAT); its `from_key` names the entry.
//!
//! Before any of those, a 64 Kibit port filter (`MEDIA_PORTS`) sends packets whose ports were
//! never announced down the cheap no-match path with one array read.

/// HASH [`EndpointKey`] -> [`EndpointValue`].
pub const MAP_MEDIA_EP: &str = "MEDIA_EP";
/// ARRAY of 1024 `u64`: bit `p` set when port `p` is (or was) announced in SDP.
pub const MAP_MEDIA_PORTS: &str = "MEDIA_PORTS";
/// Number of `u64` words of [`MAP_MEDIA_PORTS`].
pub const MEDIA_PORT_WORDS: u32 = 1024;

/// SSRC slots per direction entry: the stream's SSRC and one change (a re-INVITE, a
/// restarted sender). More are counted as overflow.
pub const SSRC_SLOTS: usize = 2;

/// Key of the MEDIA map: one direction of one media stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct MediaKey {
    /// Source address (IPv4 mapped into IPv6), network byte order.
    pub src: [u8; 16],
    /// Destination address (IPv4 mapped into IPv6), network byte order.
    pub dst: [u8; 16],
    /// Source port, host byte order.
    pub sport: u16,
    /// Destination port, host byte order.
    pub dport: u16,
}

/// Key of the MEDIA_EP map: an address:port announced in SDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct EndpointKey {
    /// Address (IPv4 mapped into IPv6), network byte order.
    pub addr: [u8; 16],
    /// Port, host byte order.
    pub port: u16,
    /// Explicit padding.
    pub _pad: u16,
}

/// Value of the MEDIA_EP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct EndpointValue {
    /// Userspace cookie of the call (for RTCP events).
    pub cookie: u64,
    /// [`EndpointValue::FLAG_RTCP`]: this endpoint is an RTCP port; copy its packets.
    pub flags: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Direction entry to update when this endpoint is the destination.
    pub to_key: MediaKey,
    /// Direction entry to update when this endpoint is the source.
    pub from_key: MediaKey,
}

impl EndpointValue {
    /// The endpoint is an RTCP port (RTP port + 1).
    pub const FLAG_RTCP: u32 = 1;
}

/// Value of the MEDIA map: one direction of one media stream.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MediaValue {
    /// Userspace cookie of the call.
    pub cookie: u64,
    /// RTP clock rate of the negotiated codec (Hz); 0 = unknown, jitter not computed.
    pub clock_rate: u32,
    /// RFC 4733 telephone-event payload type, or 0xff when none was negotiated.
    pub te_pt: u8,
    /// [`MediaValue::FLAG_RTCP_MUX`].
    pub flags: u8,
    /// Explicit padding.
    pub _pad: u16,
    /// Packets that found no free SSRC slot.
    pub ssrc_overflow: u32,
    /// Copy one RTP header in this many of this entry's packets (0 = none); a countdown.
    pub sample_countdown: u32,
    /// Sixteenths of a timestamp unit per ns, × 2^32 (0: clock rate unknown). Precomputed
    /// so the per-packet update multiplies instead of dividing (a 64-bit division is tens of
    /// cycles after JIT).
    pub q4_per_ns_q32: u64,
    /// ns per sixteenth of a timestamp unit, × 256 (0: clock rate unknown).
    pub ns_per_q4_q8: u64,
    /// Per-SSRC state.
    pub slots: [RtpStream; SSRC_SLOTS],
}

impl MediaValue {
    /// RTCP is multiplexed on the RTP port (RFC 5761): PT 192..=223 is RTCP.
    pub const FLAG_RTCP_MUX: u8 = 1;
    /// Counting starts from the pending entry of the same destination
    /// ([`MediaKey::pending`]): the first packet that reaches this entry takes that entry's
    /// per-SSRC state over (and clears the flag) before it is counted. Userspace installs
    /// a bound stream this way so that what was counted for an offerer before its answer
    /// was bound goes on without a read-and-copy window in which a packet could be lost.
    pub const FLAG_SEED: u8 = 2;

    /// Lowest clock rate with a computed jitter (Hz); below it the rate is taken as unknown.
    pub const MIN_CLOCK_RATE: u32 = 1000;
    /// Highest clock rate with a computed jitter (Hz).
    pub const MAX_CLOCK_RATE: u32 = 192_000;

    /// A fresh entry for a stream with the given clock rate and telephone-event PT. A rate
    /// of 0 or outside `MIN_CLOCK_RATE..=MAX_CLOCK_RATE` means "jitter unknown".
    pub const fn new(cookie: u64, clock_rate: u32, te_pt: u8, flags: u8) -> Self {
        let timing = crate::rtp::Timing::new(clock_rate);
        Self {
            cookie,
            clock_rate,
            te_pt,
            flags,
            _pad: 0,
            ssrc_overflow: 0,
            sample_countdown: 0,
            q4_per_ns_q32: timing.q4_per_ns_q32,
            ns_per_q4_q8: timing.ns_per_q4_q8,
            slots: [RtpStream::EMPTY; SSRC_SLOTS],
        }
    }
}

impl MediaValue {
    /// Takes over the per-SSRC state of `pending` (the same call's pending entry) and
    /// clears [`MediaValue::FLAG_SEED`]; with no such entry only the flag is cleared.
    #[inline(always)]
    pub fn take_seed(&mut self, pending: Option<&MediaValue>) {
        if let Some(p) = pending {
            if p.cookie == self.cookie {
                self.slots = p.slots;
                self.ssrc_overflow = p.ssrc_overflow;
            }
        }
        self.flags &= !Self::FLAG_SEED;
    }
}

impl MediaKey {
    /// The key of the pending entry that counts packets sent to `dst`:`dport` while its
    /// peer is not known: from the unspecified address of `dst`'s family (which no packet
    /// has), port `dport`.
    #[inline(always)]
    pub fn pending(dst: &[u8; 16], dport: u16) -> Self {
        let mut src = [0u8; 16];
        // Byte by byte: a slice comparison would be a memcmp call, which BPF has not.
        let zero = dst[0] | dst[1] | dst[2] | dst[3] | dst[4] | dst[5] | dst[6] | dst[7];
        if zero | dst[8] | dst[9] == 0 && dst[10] == 0xff && dst[11] == 0xff {
            src[10] = 0xff;
            src[11] = 0xff;
        }
        Self {
            src,
            dst: *dst,
            sport: dport,
            dport,
        }
    }

    /// Whether this is a pending entry's key ([`MediaKey::pending`]): no packet has it.
    pub fn is_pending(&self) -> bool {
        *self == Self::pending(&self.dst, self.dport)
    }
}

/// Buckets of the delay-variation histogram, upper bounds in ms (the last is open).
pub const DELAY_BUCKETS_MS: [u32; 7] = [50, 70, 90, 120, 150, 200, 300];
/// Number of delay-variation buckets (one more than the bounds: the open one).
pub const DELAY_BUCKET_COUNT: usize = 8;
/// Buckets of the playout-delay histogram (`RtpStream::late_hist`), upper bounds in ms,
/// inclusive (the last bucket is open): a packet `d` ms behind the playout anchor is in the
/// first bucket whose bound is ≥ `d`. 50 and 200 are bounds, so a fixed buffer of either
/// depth discards exactly the packets of the buckets above its bound (a packet exactly
/// `depth` behind is played, as the per-packet simulation judges).
pub const LATE_BUCKETS_MS: [u32; 5] = [20, 50, 100, 200, 400];
/// Number of playout-delay buckets (one more than the bounds: the open one).
pub const LATE_BUCKET_COUNT: usize = 6;
/// Length of one epoch of the playout anchor, ns (see [`PlayoutAnchor`]).
pub const ANCHOR_EPOCH_NS: u64 = 10_000_000_000;
/// Loss bursts of 1..=9 packets, then 10 or more.
pub const LOSS_BURST_BUCKETS: usize = 10;

/// Where a fixed jitter buffer schedules playout: the smallest transit (arrival ns − media
/// ns since the stream's first packet) of the packets of the current epoch and of the one
/// before it. That covers at least the last [`ANCHOR_EPOCH_NS`] and at most twice that,
/// with constant work per packet (a sliding 10 s minimum would need the window's packets).
/// An epoch ends at the first packet [`ANCHOR_EPOCH_NS`] or more after it began; when
/// twice that has passed (a pause, a hold), the ending epoch is forgotten too and the
/// anchor starts afresh from the packet. The kernel and the per-packet simulation in
/// userspace run this same rule (`PlayoutAnchor::observe`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PlayoutAnchor {
    /// Start of the current epoch, ns (arrival of its first packet; 0: none yet).
    pub epoch_ns: u64,
    /// Smallest transit of the current epoch, ns.
    pub cur_ns: i64,
    /// Smallest transit of the previous epoch, ns (`i64::MAX`: none).
    pub prev_ns: i64,
}

impl PlayoutAnchor {
    /// No packet seen.
    pub const EMPTY: Self = Self {
        epoch_ns: 0,
        cur_ns: 0,
        prev_ns: 0,
    };
}

/// RTP state of one SSRC in one direction (RFC 3550 A.1 and A.8), updated per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RtpStream {
    /// SSRC of this slot.
    pub ssrc: u32,
    /// 1 when the slot is in use.
    pub in_use: u8,
    /// Payload type of the last non-telephone-event packet.
    pub pt: u8,
    /// Packets still needed before the source is valid (RFC 3550 A.1 probation).
    pub probation: u8,
    /// Explicit padding.
    pub _pad0: u8,
    /// Highest sequence number seen.
    pub max_seq: u16,
    /// Explicit padding.
    pub _pad1: u16,
    /// Shifted count of sequence-number cycles (multiple of 65536).
    pub cycles: u32,
    /// Base sequence number (extended, first of the current run).
    pub base_seq: u32,
    /// Last "bad" sequence number + 1 (RFC 3550 A.1 restart detection).
    pub bad_seq: u32,
    /// Packets received per RFC 3550 A.1 (duplicates included, as the RFC counts them).
    pub received: u32,
    /// Packets whose sequence number was already seen within the last 64.
    pub duplicates: u32,
    /// Telephone-event packets (kept out of the jitter).
    pub te_packets: u32,
    /// RTP timestamp of the last packet that fed the jitter.
    pub last_ts: u32,
    /// Sequence restarts (a jump larger than the dropout limit, confirmed).
    pub restarts: u32,
    /// Jitter samples summed in `jitter_sum_q8`.
    pub jitter_samples: u32,
    /// Packets seen in this slot (every packet, valid or not).
    pub packets: u64,
    /// RTP bytes (UDP payload) seen.
    pub bytes: u64,
    /// Arrival of the first packet, ns (CLOCK_MONOTONIC).
    pub first_ns: u64,
    /// Arrival of the last packet, ns.
    pub last_ns: u64,
    /// Arrival of the last packet that fed the jitter, ns.
    pub jit_last_ns: u64,
    /// Largest gap between consecutive packets, ns.
    pub max_gap_ns: u64,
    /// Interarrival jitter (RFC 3550 A.8) in timestamp units × 256.
    pub jitter_q8: u64,
    /// Largest value `jitter_q8` took.
    pub max_jitter_q8: u64,
    /// Sum of `jitter_q8` after each sample (mean jitter = sum / samples).
    pub jitter_sum_q8: u64,
    /// Bit `i` set when sequence `max_seq - i` was received (duplicate detection).
    pub seen_bits: u64,
    /// Histogram of |D| (transit difference, RFC 3550 A.8) in the [`DELAY_BUCKETS_MS`].
    pub delay_hist: [u32; DELAY_BUCKET_COUNT],
    /// Histogram of loss bursts: `[i]` counts gaps of `i + 1` packets (the last: 10+).
    pub loss_bursts: [u32; LOSS_BURST_BUCKETS],
    /// RTP timestamp units from the first packet that fed the jitter to the last one,
    /// extended past the 32-bit wrap (each step is the signed 32-bit difference).
    pub media_units: i64,
    /// The playout anchor: the fastest recent packet.
    pub anchor: PlayoutAnchor,
    /// Histogram of each packet's playout delay, its transit minus the anchor, in the
    /// [`LATE_BUCKETS_MS`] (duplicates, telephone events and streams of unknown clock rate
    /// are left out): what a fixed jitter buffer discards on.
    pub late_hist: [u32; LATE_BUCKET_COUNT],
}

impl RtpStream {
    /// An unused slot.
    pub const EMPTY: Self = Self {
        ssrc: 0,
        in_use: 0,
        pt: 0,
        probation: 0,
        _pad0: 0,
        max_seq: 0,
        _pad1: 0,
        cycles: 0,
        base_seq: 0,
        bad_seq: 0,
        received: 0,
        duplicates: 0,
        te_packets: 0,
        last_ts: 0,
        restarts: 0,
        jitter_samples: 0,
        packets: 0,
        bytes: 0,
        first_ns: 0,
        last_ns: 0,
        jit_last_ns: 0,
        max_gap_ns: 0,
        jitter_q8: 0,
        max_jitter_q8: 0,
        jitter_sum_q8: 0,
        seen_bits: 0,
        delay_hist: [0; DELAY_BUCKET_COUNT],
        loss_bursts: [0; LOSS_BURST_BUCKETS],
        media_units: 0,
        anchor: PlayoutAnchor::EMPTY,
        late_hist: [0; LATE_BUCKET_COUNT],
    };
}

const _: () = assert!(core::mem::size_of::<MediaKey>() == 36);
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 20);
const _: () = assert!(core::mem::size_of::<EndpointValue>() == 16 + 2 * 36);
const _: () = assert!(core::mem::size_of::<PlayoutAnchor>() == 24);
const _: () = assert!(core::mem::size_of::<RtpStream>() == 256);
const _: () = assert!(core::mem::size_of::<MediaValue>() == 40 + SSRC_SLOTS * 256);
