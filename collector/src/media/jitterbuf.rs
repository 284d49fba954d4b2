//! Jitter-buffer simulation: how many packets of one RTP direction a receiver's playout
//! buffer would discard as late, for a fixed 50 ms, a fixed 200 ms and an adaptive (up to
//! 500 ms) buffer. Delay is measured the way RFC 3550 A.8 measures transit, (arrival − RTP
//! timestamp / clock rate), relative to the fastest packet recently seen.
//!
//! Two inputs:
//! - per packet ([`Simulator`], [`simulate`]): `(arrival_ns, rtp_timestamp, seq)` in arrival
//!   order, from offline replay or a full capture;
//! - the kernel's per-stream histograms ([`outcomes_from_kernel`]), when per-packet data is
//!   not kept: the fixed buffers are **exact** from `late_hist`, the histogram of each
//!   packet's delay behind the same anchor as here, whose bucket bounds include 50 and
//!   200 ms ([`Method::KernelAnchor`]); the adaptive buffer is an **estimate** from the
//!   histogram of |D| between consecutive packets ([`estimate_from_delay_hist`],
//!   [`Method::DelayHistogram`]): its depth depends on the order of the delays, which no
//!   histogram keeps.
//!
//! Buffer models (playout is scheduled at anchor + RTP time + depth):
//! - **Anchor**: the smallest transit of the current and the previous 10 s epoch
//!   (`collector_common::media::PlayoutAnchor`, the kernel's own rule, run here by the same
//!   code: at least the last 10 s, at most the last 20 s). A fixed buffer plays every packet
//!   `depth` after the fastest one; a packet whose transit exceeds the anchor by more than
//!   `depth` misses its slot and is discarded. The epochs let the buffer follow a lasting
//!   route change or clock drift instead of counting the rest of the call late, as real
//!   buffers do by resynchronising between talkspurts. Transit is computed with the
//!   kernel's fixed-point conversion of RTP time ([`Timing`]) for clock rates the kernel
//!   knows, so replay and kernel give the same counts.
//! - **Fixed**: `depth` never changes.
//! - **Adaptive**: starts at 40 ms, kept within 20..=max ms. After each packet the target is
//!   the 95th percentile (nearest rank) of the last 128 relative delays plus 5 ms. It grows
//!   fast: a late packet raises the depth at once to its own delay + 5 ms, and a target above
//!   the depth is taken at once. It shrinks slowly: at most 0.2 ms per packet (10 ms/s at a
//!   20 ms packet interval) toward a lower target. Each packet is judged against the depth
//!   in force when it arrives, before the update: a buffer cannot wait retroactively.
//!
//! Duplicates (same sequence number within the last 128; the kernel looks 64 back) are
//! skipped. Early packets never overflow the buffer: buffer capacity is not modelled.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::collections::VecDeque;

use collector_common::{
    media::{PlayoutAnchor, RtpStream, DELAY_BUCKETS_MS, DELAY_BUCKET_COUNT, LATE_BUCKETS_MS},
    rtp::Timing,
};
use serde::Serialize;
use thiserror::Error;

/// Relative delays the adaptive buffer's percentile looks at.
pub const ADAPTIVE_WINDOW: usize = 128;
/// Percentile of recent relative delay the adaptive buffer targets.
pub const ADAPTIVE_PERCENTILE: f64 = 0.95;
/// Headroom above the targeted delay, ms.
pub const ADAPTIVE_MARGIN_MS: f64 = 5.0;
/// Most the adaptive buffer shrinks per packet, ms.
pub const ADAPTIVE_SHRINK_MS_PER_PACKET: f64 = 0.2;
const DUP_WINDOW: i64 = 128;

/// Errors of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum JitterBufError {
    /// RTP timestamps cannot be turned into time without a clock rate.
    #[error("clock rate is zero")]
    ZeroClockRate,
}

/// Arrival of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketTiming {
    /// Arrival time, ns on any monotonic clock.
    pub arrival_ns: u64,
    /// RTP timestamp.
    pub rtp_ts: u32,
    /// RTP sequence number.
    pub seq: u16,
}

/// A playout buffer to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum BufferPolicy {
    /// Constant depth.
    Fixed {
        /// Depth, ms.
        depth_ms: f64,
    },
    /// Depth adapted to recent delay (see the module docs).
    Adaptive {
        /// Smallest depth, ms.
        min_ms: f64,
        /// Depth at the start, ms.
        initial_ms: f64,
        /// Largest depth, ms.
        max_ms: f64,
    },
}

impl BufferPolicy {
    /// A fixed 50 ms buffer.
    pub const FIXED_50: Self = Self::Fixed { depth_ms: 50.0 };
    /// A fixed 200 ms buffer.
    pub const FIXED_200: Self = Self::Fixed { depth_ms: 200.0 };
    /// An adaptive buffer of up to 500 ms.
    pub const ADAPTIVE_500: Self = Self::Adaptive {
        min_ms: 20.0,
        initial_ms: 40.0,
        max_ms: 500.0,
    };
    /// The three buffers every direction is scored with.
    pub const STANDARD: [Self; 3] = [Self::FIXED_50, Self::FIXED_200, Self::ADAPTIVE_500];

    /// A short name: `fixed-50ms`, `adaptive-500ms`.
    pub fn label(&self) -> String {
        match self {
            Self::Fixed { depth_ms } => format!("fixed-{depth_ms}ms"),
            Self::Adaptive { max_ms, .. } => format!("adaptive-{max_ms}ms"),
        }
    }
}

/// How an outcome was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Simulated packet by packet.
    PerPacket,
    /// Exact from the kernel's histogram of each packet's delay behind the playout anchor
    /// (`late_hist`): the packets of the buckets above the buffer's depth.
    KernelAnchor,
    /// Estimated from the kernel's delay-variation histogram (approximate).
    DelayHistogram,
}

/// What one buffer would have done.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BufferOutcome {
    /// The buffer.
    pub policy: BufferPolicy,
    /// Simulated or estimated.
    pub method: Method,
    /// Packets considered (duplicates excluded; histogram samples for the estimate).
    pub packets: u64,
    /// Packets discarded as late.
    pub late: u64,
    /// Mean buffer delay, ms (the depth, averaged over packets).
    pub mean_delay_ms: f64,
    /// Largest buffer delay, ms.
    pub max_delay_ms: f64,
}

#[derive(Debug, Clone)]
struct BufferState {
    policy: BufferPolicy,
    depth_ms: f64,
    late: u64,
    delay_sum_ms: f64,
    max_delay_ms: f64,
    /// Recent relative delays (adaptive only), bounded by [`ADAPTIVE_WINDOW`].
    recent: VecDeque<f64>,
}

impl BufferState {
    fn new(policy: BufferPolicy) -> Self {
        let depth_ms = match policy {
            BufferPolicy::Fixed { depth_ms } => depth_ms,
            BufferPolicy::Adaptive {
                min_ms,
                initial_ms,
                max_ms,
            } => initial_ms.clamp(min_ms, max_ms.max(min_ms)),
        };
        Self {
            policy,
            depth_ms,
            late: 0,
            delay_sum_ms: 0.0,
            max_delay_ms: 0.0,
            recent: VecDeque::new(),
        }
    }

    fn push(&mut self, rel_ms: f64) {
        let late = rel_ms > self.depth_ms;
        if late {
            self.late += 1;
        }
        self.delay_sum_ms += self.depth_ms;
        self.max_delay_ms = self.max_delay_ms.max(self.depth_ms);
        let BufferPolicy::Adaptive { min_ms, max_ms, .. } = self.policy else {
            return;
        };
        if self.recent.len() >= ADAPTIVE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(rel_ms);
        let hi = max_ms.max(min_ms);
        let target =
            (percentile(&self.recent, ADAPTIVE_PERCENTILE) + ADAPTIVE_MARGIN_MS).clamp(min_ms, hi);
        let grown = if late {
            target.max(rel_ms + ADAPTIVE_MARGIN_MS)
        } else {
            target
        };
        self.depth_ms = if grown >= self.depth_ms {
            grown
        } else {
            (self.depth_ms - ADAPTIVE_SHRINK_MS_PER_PACKET).max(grown)
        }
        .clamp(min_ms, hi);
    }

    fn outcome(&self, packets: u64) -> BufferOutcome {
        BufferOutcome {
            policy: self.policy,
            method: Method::PerPacket,
            packets,
            late: self.late,
            mean_delay_ms: if packets == 0 {
                self.depth_ms
            } else {
                self.delay_sum_ms / packets as f64
            },
            max_delay_ms: if packets == 0 {
                self.depth_ms
            } else {
                self.max_delay_ms
            },
        }
    }
}

/// Nearest-rank percentile of a small window.
fn percentile(values: &VecDeque<f64>, p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().collect();
    if v.is_empty() {
        return 0.0;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    let (_, nth, _) = v.select_nth_unstable_by(rank - 1, f64::total_cmp);
    *nth
}

/// Streaming jitter-buffer simulation of one direction (one SSRC).
#[derive(Debug, Clone)]
pub struct Simulator {
    clock_rate: u32,
    /// The kernel's conversion of RTP time (zeros outside the rates it knows).
    timing: Timing,
    last_ts: u32,
    /// RTP units since the first packet, extended past the wrap.
    ext_ts: i64,
    highest_seq: i64,
    seen: u128,
    /// The playout anchor (None before the first packet).
    anchor: Option<PlayoutAnchor>,
    buffers: Vec<BufferState>,
    packets: u64,
    duplicates: u64,
}

impl Simulator {
    /// A simulator for a stream with `clock_rate` Hz running the given buffers.
    pub fn try_new(clock_rate: u32, policies: &[BufferPolicy]) -> Result<Self, JitterBufError> {
        if clock_rate == 0 {
            return Err(JitterBufError::ZeroClockRate);
        }
        Ok(Self {
            clock_rate,
            timing: Timing::new(clock_rate),
            last_ts: 0,
            ext_ts: 0,
            highest_seq: 0,
            seen: 0,
            anchor: None,
            buffers: policies.iter().copied().map(BufferState::new).collect(),
            packets: 0,
            duplicates: 0,
        })
    }

    /// A simulator running [`BufferPolicy::STANDARD`].
    pub fn standard(clock_rate: u32) -> Result<Self, JitterBufError> {
        Self::try_new(clock_rate, &BufferPolicy::STANDARD)
    }

    /// Feeds the next packet, in arrival order.
    pub fn push(&mut self, p: PacketTiming) {
        if self.is_duplicate(p.seq) {
            self.duplicates += 1;
            return;
        }
        if self.anchor.is_some() {
            self.ext_ts = self
                .ext_ts
                .wrapping_add(i64::from(p.rtp_ts.wrapping_sub(self.last_ts) as i32));
        }
        self.last_ts = p.rtp_ts;
        self.packets += 1;

        // The kernel's arithmetic (`RtpStream::update`), so both judge a packet alike.
        let media_ns = if self.timing.ns_per_q4_q8 != 0 {
            self.timing.units_to_ns(self.ext_ts)
        } else {
            let ns = i128::from(self.ext_ts) * 1_000_000_000 / i128::from(self.clock_rate);
            i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
        };
        let transit = (p.arrival_ns as i64).wrapping_sub(media_ns);
        let rel_ns = match &mut self.anchor {
            Some(a) => a.observe(p.arrival_ns, transit),
            None => {
                self.anchor = Some(PlayoutAnchor::starting(p.arrival_ns, transit));
                0
            }
        };
        let rel_ms = rel_ns as f64 / 1e6;
        for b in &mut self.buffers {
            b.push(rel_ms);
        }
    }

    /// Duplicate detection over the last [`DUP_WINDOW`] sequence numbers (RFC 3550 A.1
    /// style extension across wrap-around); also records the sequence number.
    fn is_duplicate(&mut self, seq: u16) -> bool {
        if self.packets == 0 && self.duplicates == 0 {
            self.highest_seq = i64::from(seq);
            self.seen = 1;
            return false;
        }
        let delta = i64::from(seq.wrapping_sub(self.highest_seq as u16) as i16);
        if delta > 0 {
            self.seen = if delta >= DUP_WINDOW {
                1
            } else {
                (self.seen << delta) | 1
            };
            self.highest_seq = self.highest_seq.saturating_add(delta);
            false
        } else if -delta < DUP_WINDOW {
            let bit = 1u128 << (-delta);
            let dup = self.seen & bit != 0;
            self.seen |= bit;
            dup
        } else {
            // Too old to tell: counted as a (very late) new packet.
            false
        }
    }

    /// Packets fed, duplicates excluded.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Duplicates skipped.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The outcome of each buffer so far, in the order given at construction.
    pub fn outcomes(&self) -> Vec<BufferOutcome> {
        self.buffers
            .iter()
            .map(|b| b.outcome(self.packets))
            .collect()
    }
}

/// Runs [`BufferPolicy::STANDARD`] over packets given in arrival order.
pub fn simulate(
    packets: &[PacketTiming],
    clock_rate: u32,
) -> Result<Vec<BufferOutcome>, JitterBufError> {
    let mut sim = Simulator::standard(clock_rate)?;
    for &p in packets {
        sim.push(p);
    }
    Ok(sim.outcomes())
}

/// [`BufferPolicy::STANDARD`] outcomes from the kernel's per-stream histograms: each fixed
/// buffer whose depth is a bound of `LATE_BUCKETS_MS` (50 and 200 ms are) exactly from
/// `late_hist` ([`Method::KernelAnchor`]), the adaptive one (and a fixed one of another
/// depth) estimated from `delay_hist` ([`estimate_from_delay_hist`]).
pub fn outcomes_from_kernel(s: &RtpStream) -> Vec<BufferOutcome> {
    let estimates = estimate_from_delay_hist(&s.delay_hist);
    let played: u64 = s.late_hist.iter().map(|&c| u64::from(c)).sum();
    estimates
        .into_iter()
        .map(|e| match e.policy {
            BufferPolicy::Fixed { depth_ms } => match late_from_late_hist(&s.late_hist, depth_ms) {
                Some(late) => BufferOutcome {
                    method: Method::KernelAnchor,
                    packets: played,
                    late,
                    ..e
                },
                None => e,
            },
            BufferPolicy::Adaptive { .. } => e,
        })
        .collect()
}

/// Packets more than `depth_ms` behind the anchor: the buckets above the bound equal to
/// `depth_ms`; None when `depth_ms` is not a bound.
pub fn late_from_late_hist(hist: &[u32], depth_ms: f64) -> Option<u64> {
    let i = LATE_BUCKETS_MS
        .iter()
        .position(|&b| f64::from(b) == depth_ms)?;
    Some(hist.iter().skip(i + 1).map(|&c| u64::from(c)).sum::<u64>())
}

/// Estimates [`BufferPolicy::STANDARD`] outcomes from the kernel's histogram of |D|, the
/// transit difference between consecutive packets (RFC 3550 A.8), in
/// [`DELAY_BUCKETS_MS`] buckets.
///
/// An approximation, because |D| compares each packet with its predecessor, not with the
/// playout anchor:
/// - a fixed buffer of depth B loses about half the packets with |D| ≥ B: an isolated late
///   packet shows as +X then −X when the next one is on time, so two samples per discard;
///   within a bucket samples are taken as uniform (exact at the bucket bounds 50 and 200 ms);
///   the open bucket (≥ 300 ms) counts entirely when B ≤ 300 ms, otherwise not at all;
/// - it undercounts delay that builds up over several packets (each step below B, the sum
///   above: a ramp of +60 ms per packet is all late in a 50 ms buffer but shows here as half)
///   and overcounts early-then-on-time pairs;
/// - the adaptive buffer is taken as fixed at the upper bound of the bucket holding the 95th
///   percentile of |D| (the open bucket: its maximum), clamped to its range; its growth after
///   each spike, which costs one packet per spike, is not seen.
pub fn estimate_from_delay_hist(hist: &[u32; DELAY_BUCKET_COUNT]) -> Vec<BufferOutcome> {
    let total: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    BufferPolicy::STANDARD
        .iter()
        .map(|&policy| {
            let depth = match policy {
                BufferPolicy::Fixed { depth_ms } => depth_ms,
                BufferPolicy::Adaptive { min_ms, max_ms, .. } => {
                    adaptive_depth_from_hist(hist, total, max_ms).clamp(min_ms, max_ms.max(min_ms))
                }
            };
            BufferOutcome {
                policy,
                method: Method::DelayHistogram,
                packets: total,
                late: late_from_hist(hist, depth),
                mean_delay_ms: depth,
                max_delay_ms: depth,
            }
        })
        .collect()
}

/// Lower and upper bound (ms) of each bucket; the open bucket's upper bound is infinite.
fn bucket_bounds(i: usize) -> (f64, f64) {
    let lo = i
        .checked_sub(1)
        .and_then(|j| DELAY_BUCKETS_MS.get(j))
        .map_or(0.0, |&b| f64::from(b));
    let hi = DELAY_BUCKETS_MS
        .get(i)
        .map_or(f64::INFINITY, |&b| f64::from(b));
    (lo, hi)
}

fn late_from_hist(hist: &[u32; DELAY_BUCKET_COUNT], depth_ms: f64) -> u64 {
    let mut above = 0.0;
    for (i, &c) in hist.iter().enumerate() {
        let (lo, hi) = bucket_bounds(i);
        let share = if depth_ms <= lo {
            1.0
        } else if depth_ms >= hi || hi.is_infinite() {
            0.0
        } else {
            (hi - depth_ms) / (hi - lo)
        };
        above += f64::from(c) * share;
    }
    (above / 2.0).round() as u64
}

fn adaptive_depth_from_hist(hist: &[u32; DELAY_BUCKET_COUNT], total: u64, max_ms: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let need = (ADAPTIVE_PERCENTILE * total as f64).ceil() as u64;
    let mut cum = 0u64;
    for (i, &c) in hist.iter().enumerate() {
        cum += u64::from(c);
        if cum >= need {
            let (_, hi) = bucket_bounds(i);
            return if hi.is_finite() { hi } else { max_ms };
        }
    }
    max_ms
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// 8 kHz, 20 ms packets (160 timestamp units), sent every 20 ms, sequence numbers from
    /// 65530 (wrapping at packet 6); `extra_ms(i)` is packet
    /// i's delay on top of a constant 30 ms network transit. Sorted into arrival order.
    fn stream(n: u16, ts0: u32, extra_ms: impl Fn(u16) -> u64) -> Vec<PacketTiming> {
        let mut v: Vec<_> = (0..n)
            .map(|i| PacketTiming {
                arrival_ns: 1_000 * MS + u64::from(i) * 20 * MS + 30 * MS + extra_ms(i) * MS,
                rtp_ts: ts0.wrapping_add(u32::from(i) * 160),
                seq: 65_530u16.wrapping_add(i),
            })
            .collect();
        v.sort_by_key(|p| p.arrival_ns);
        v
    }

    fn late(out: &[BufferOutcome]) -> Vec<u64> {
        out.iter().map(|o| o.late).collect()
    }

    // Every packet 60 ms later than the previous: packet i is 60·i ms behind packet 0, the
    // fastest. Fixed 50 ms: every packet after the first is late (60·i > 50 for i ≥ 1): 19
    // of 20. Fixed 200 ms: late for 60·i > 200, i ≥ 4: 16. Adaptive: each packet's delay
    // exceeds the previous one's + 5 ms margin, so each is late (and the depth caps at
    // 500 ms): 19.
    #[test]
    fn ramp_of_60ms_per_packet() {
        let out = simulate(&stream(20, 1000, |i| 60 * u64::from(i)), 8000).unwrap();
        assert_eq!(late(&out), vec![19, 16, 19]);
        assert_eq!(out[0].packets, 20);
        assert_eq!(out[1].mean_delay_ms, 200.0);
        assert_eq!(out[2].max_delay_ms, 500.0);
    }

    // The same ramp across the 32-bit RTP timestamp and the 16-bit sequence wrap.
    #[test]
    fn ramp_across_timestamp_wrap() {
        let out = simulate(&stream(20, u32::MAX - 800, |i| 60 * u64::from(i)), 8000).unwrap();
        assert_eq!(late(&out), vec![19, 16, 19]);
    }

    // A burst of late packets: packets 50..=99 of 200 arrive 150 ms late. Fixed 50: all 50
    // late. Fixed 200: none. Adaptive: the first of the burst is late and lifts the depth to
    // 155 ms at once; the burst is soon above the 95th percentile, so it stays: 1 late.
    #[test]
    fn plateau_of_late_packets() {
        let out = simulate(
            &stream(200, 0, |i| if (50..100).contains(&i) { 150 } else { 0 }),
            8000,
        )
        .unwrap();
        assert_eq!(late(&out), vec![50, 0, 1]);
    }

    // Single 100 ms spikes on every 10th packet (9 in 100). Fixed 50: 9 late; fixed 200:
    // none. Adaptive: the first spike is late; spikes are 10 % of the window, above the 5 %
    // tail, so the 95th percentile stays at 100 ms and the depth at 105: 1 late.
    #[test]
    fn periodic_spikes() {
        let spiky = |i: u16| {
            if i > 0 && i.is_multiple_of(10) {
                100
            } else {
                0
            }
        };
        let out = simulate(&stream(100, 0, spiky), 8000).unwrap();
        assert_eq!(late(&out), vec![9, 0, 1]);
    }

    #[test]
    fn steady_stream_loses_nothing_and_adaptive_shrinks() {
        let out = simulate(&stream(500, 0, |_| 0), 8000).unwrap();
        assert_eq!(late(&out), vec![0, 0, 0]);
        // From 40 ms down to the 20 ms floor at 0.2 ms per packet: 100 packets.
        assert_eq!(out[2].max_delay_ms, 40.0);
        assert!(out[2].mean_delay_ms < 25.0);
    }

    #[test]
    fn duplicates_are_skipped() {
        let mut pkts = stream(10, 0, |_| 0);
        let dup = PacketTiming {
            arrival_ns: pkts[9].arrival_ns + 500 * MS,
            ..pkts[3]
        };
        pkts.push(dup);
        let mut sim = Simulator::standard(8000).unwrap();
        for p in pkts {
            sim.push(p);
        }
        assert_eq!(sim.duplicates(), 1);
        assert_eq!(sim.packets(), 10);
        assert_eq!(late(&sim.outcomes()), vec![0, 0, 0]);
    }

    #[test]
    fn zero_clock_rate_is_an_error() {
        assert_eq!(simulate(&[], 0).unwrap_err(), JitterBufError::ZeroClockRate);
        let empty = simulate(&[], 8000).unwrap();
        assert_eq!(late(&empty), vec![0, 0, 0]);
        assert_eq!(empty[0].mean_delay_ms, 50.0);
    }

    // The anchor follows a lasting shift: after a route change adding 300 ms for 30 s, a
    // fixed buffer loses the packets until the anchor's epochs have moved past the
    // pre-shift transit, then re-anchors. 2000 packets at 50/s; the shift starts at packet
    // 500.
    #[test]
    fn anchor_follows_a_lasting_shift() {
        let out = simulate(&stream(2000, 0, |i| if i >= 500 { 300 } else { 0 }), 8000).unwrap();
        // Packet i arrives at 1030 + 20·i ms (+ 300 from 500 on). The first epoch began with
        // packet 0 (1030 ms); the first arrival 10 s or more after it is packet 500's
        // (11 330 ms): the second epoch, whose end comes at the first arrival at or after
        // 21 330 ms, 1330 + 20·i ≥ 21 330, i ≥ 1000. Until then the first epoch's minimum
        // (pre-shift) is the anchor: packets 500..=999 (500) are 300 ms behind it, late in
        // both fixed buffers.
        assert_eq!(out[0].late, 500);
        assert_eq!(out[1].late, 500);
    }

    /// Packet `i` of `n` (8 kHz, 20 ms, seq and timestamp from 0) arriving at
    /// 1 s + 20·i ms + `extra_ms(i)`, in arrival order.
    fn shaped(n: u16, extra_ms: impl Fn(u16) -> u64) -> Vec<PacketTiming> {
        let mut v: Vec<_> = (0..n)
            .map(|i| PacketTiming {
                arrival_ns: 1_000 * MS + u64::from(i) * 20 * MS + extra_ms(i) * MS,
                rtp_ts: u32::from(i) * 160,
                seq: i,
            })
            .collect();
        v.sort_by_key(|p| (p.arrival_ns, p.seq));
        v
    }

    // The kernel's histograms (the shared `RtpStream` update over the same packets) and the
    // per-packet simulation agree on the fixed buffers, on a stream whose discards are known
    // by construction. 1500 packets (30 s): every 10th (i % 10 == 5, 150) 120 ms late, every
    // 25th (i % 25 == 12, 60) 300 ms late, and from packet 700 on a lasting +60 ms (a route
    // change) under the spikes too.
    //
    // Epochs (arrivals 1000 + 20·i ms + extra): the first from packet 0; the second from the
    // first arrival ≥ 11 000 ms, packet 500 (on time, exactly 11 000); the third from the
    // first arrival ≥ 21 000, packet 997 (1000 + 19 940 + 60; late spikes of lower index
    // arrive later: 995 at 21 080, 987 at 21 100); the fourth from the first arrival
    // ≥ 31 000, packet 1497. Until packet 1497 the second epoch's pre-shift minimum anchors,
    // so the on-time packets 700..=1496 (797 less 80 + 32 spikes: 685) are 60 ms behind;
    // 1497..=1499 are on the new anchor. The 120 ms spikes are 120 or 180 ms behind, the
    // 300 ms ones 300 or 360.
    // Fixed 50 ms: 685 + 150 + 60 = 895. Fixed 200 ms: the 60 spikes of 300 ms.
    #[test]
    fn kernel_histogram_and_per_packet_simulation_agree() {
        use collector_common::{rtp::RtpFields, MediaValue};
        let pkts = shaped(1500, |i| {
            let shift = if i >= 700 { 60 } else { 0 };
            shift
                + match (i % 10, i % 25) {
                    (5, _) => 120,
                    (_, 12) => 300,
                    _ => 0,
                }
        });
        let mut kernel = MediaValue::new(1, 8000, 0xff, 0);
        let mut sim = Simulator::standard(8000).unwrap();
        for p in &pkts {
            let f = RtpFields {
                pt: 0,
                seq: p.seq,
                ts: p.rtp_ts,
                ssrc: 9,
            };
            kernel.update(&f, 172, p.arrival_ns);
            sim.push(*p);
        }
        let from_kernel = outcomes_from_kernel(&kernel.slots[0]);
        let per_packet = sim.outcomes();
        assert_eq!(late(&from_kernel)[..2], [895, 60]);
        assert_eq!(late(&per_packet)[..2], [895, 60]);
        assert_eq!(from_kernel[0].method, Method::KernelAnchor);
        assert_eq!(from_kernel[1].method, Method::KernelAnchor);
        assert_eq!(from_kernel[2].method, Method::DelayHistogram);
        assert_eq!(from_kernel[0].packets, 1500);
    }

    #[test]
    fn late_hist_sums_the_buckets_above_the_depth() {
        let hist = [7, 6, 5, 4, 3, 2];
        assert_eq!(late_from_late_hist(&hist, 20.0), Some(6 + 5 + 4 + 3 + 2));
        assert_eq!(late_from_late_hist(&hist, 50.0), Some(5 + 4 + 3 + 2));
        assert_eq!(late_from_late_hist(&hist, 200.0), Some(3 + 2));
        assert_eq!(late_from_late_hist(&hist, 400.0), Some(2));
        assert_eq!(late_from_late_hist(&hist, 60.0), None);
    }

    // Histogram estimate against the per-packet truth of the patterns above.
    #[test]
    fn histogram_estimate_of_spikes_and_ramp() {
        // 9 spikes of 100 ms: |D| = 100 twice per spike (bucket 90..120), 81 samples < 50.
        let mut spikes = [0u32; DELAY_BUCKET_COUNT];
        spikes[0] = 81;
        spikes[3] = 18;
        let est = estimate_from_delay_hist(&spikes);
        assert_eq!(late(&est), vec![9, 0, 0]);
        assert!(est.iter().all(|o| o.method == Method::DelayHistogram));
        // 95th percentile of 99 samples is the 95th: in bucket 90..120, so depth 120 ms.
        assert_eq!(est[2].mean_delay_ms, 120.0);

        // The ramp: 19 samples of +60 ms (bucket 50..70). The truth is 19 / 16; the
        // histogram sees half of the 50 ms losses and none of the 200 ms ones.
        let mut ramp = [0u32; DELAY_BUCKET_COUNT];
        ramp[1] = 19;
        assert_eq!(late(&estimate_from_delay_hist(&ramp)), vec![10, 0, 0]);

        // Interpolation inside a bucket and the open bucket.
        let mut wide = [0u32; DELAY_BUCKET_COUNT];
        wide[4] = 40; // 120..150: a 130 ms depth keeps 2/3 above → 26.7 → /2 → 13.
        wide[7] = 10; // ≥ 300
        assert_eq!(late_from_hist(&wide, 130.0), 18);
        assert_eq!(late_from_hist(&wide, 300.0), 5);
        assert_eq!(late_from_hist(&wide, 400.0), 0);
        assert_eq!(
            late(&estimate_from_delay_hist(&[0; DELAY_BUCKET_COUNT])),
            vec![0, 0, 0]
        );
    }

    proptest::proptest! {
        // Any arrival order, timestamps and sequence numbers: no panic, counts consistent.
        #[test]
        fn arbitrary_packets_never_panic(
            pkts in proptest::collection::vec(
                (proptest::num::u64::ANY, proptest::num::u32::ANY, proptest::num::u16::ANY),
                0..300,
            ),
            clock in 1u32..200_000,
        ) {
            let mut sim = Simulator::standard(clock).unwrap();
            for (arrival_ns, rtp_ts, seq) in pkts.iter().copied() {
                sim.push(PacketTiming { arrival_ns, rtp_ts, seq });
            }
            proptest::prop_assert_eq!(sim.packets() + sim.duplicates(), pkts.len() as u64);
            for o in sim.outcomes() {
                proptest::prop_assert!(o.late <= o.packets);
                proptest::prop_assert!(o.max_delay_ms <= 500.0);
            }
        }

        #[test]
        fn arbitrary_histograms_never_panic(
            hist in proptest::array::uniform8(proptest::num::u32::ANY),
        ) {
            let total: u64 = hist.iter().map(|&c| u64::from(c)).sum();
            for o in estimate_from_delay_hist(&hist) {
                proptest::prop_assert!(o.late <= total);
            }
        }
    }

    #[test]
    fn labels() {
        assert_eq!(BufferPolicy::FIXED_50.label(), "fixed-50ms");
        assert_eq!(BufferPolicy::ADAPTIVE_500.label(), "adaptive-500ms");
    }
}
