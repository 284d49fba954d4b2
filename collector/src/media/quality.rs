//! Per-direction media quality: the kernel's RFC 3550 A.1/A.8 statistics of one SSRC
//! (`collector_common::media::RtpStream`) turned into loss, jitter and gap figures in human
//! units, the packets each simulated jitter buffer would discard, an E-model MOS per buffer
//! (ITU-T G.107 / G.107.1, see [`super::emodel`]), and a cross-check against what the
//! receiver itself reported in RTCP (RFC 3550 §6.4.1).
//!
//! Mouth-to-ear delay for the E-model is Ta = RTT/2 (from RTCP when known, else 0: a
//! documented optimism) + the buffer's delay + the packetisation interval + the encoder's
//! look-ahead. The loss the E-model sees is network loss plus the buffer's late discards, over
//! the packets expected; its burstiness (BurstR) comes from the network-loss run histogram
//! only.
//!
//! The RTCP cross-check compares like with like: our cumulative loss percentage with the
//! report's cumulative loss over the same sequence range, and our current interarrival jitter
//! with the report's. A strong disagreement usually means the loss or jitter happens between
//! the observation point and the receiver (or the report is stale): worth a flag, not an error.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::time::Duration;

use collector_common::media::{
    RtpStream, DELAY_BUCKET_COUNT, LATE_BUCKET_COUNT, LOSS_BURST_BUCKETS,
};
use serde::Serialize;

use super::emodel::{self, EModelResult};
use super::jitterbuf::{self, BufferOutcome, BufferPolicy, Method};
use super::rtcp::{ReportBlock, VoipMetrics};

/// Loss percentages further apart than this many points (and than half the larger) disagree.
pub const LOSS_DISAGREE_POINTS: f64 = 2.0;
/// Jitter values further apart than this many ms (and than half the larger) disagree.
pub const JITTER_DISAGREE_MS: f64 = 10.0;

/// What [`assess`] needs about one direction.
#[derive(Debug, Clone, Copy)]
pub struct QualityInput<'a> {
    /// The kernel's (or replay's) state of the SSRC.
    pub stream: &'a RtpStream,
    /// RTP clock rate of the codec, Hz (0: unknown, no jitter figures).
    pub clock_rate: u32,
    /// Encoding name from the SDP `a=rtpmap` (for example `PCMU`, `opus`).
    pub codec: &'a str,
    /// Packetisation interval from SDP `a=ptime`, if given.
    pub ptime_ms: Option<u32>,
    /// Round-trip time from RTCP, if known.
    pub rtt: Option<Duration>,
    /// The latest RTCP report block about this SSRC, from its receiver.
    pub rtcp_report: Option<&'a ReportBlock>,
    /// The latest RTCP-XR VoIP Metrics block about this SSRC (RFC 3611 §4.7), from its
    /// receiver.
    pub rtcp_xr: Option<&'a VoipMetrics>,
    /// Per-packet jitter-buffer outcomes ([`jitterbuf::Simulator`]) for this direction; when
    /// absent they come from the kernel's histograms ([`jitterbuf::outcomes_from_kernel`]:
    /// the fixed buffers exact, the adaptive one an estimate).
    pub per_packet: Option<&'a [BufferOutcome]>,
}

impl<'a> QualityInput<'a> {
    /// Input with only the stream, clock rate and codec known.
    pub fn new(stream: &'a RtpStream, clock_rate: u32, codec: &'a str) -> Self {
        Self {
            stream,
            clock_rate,
            codec,
            ptime_ms: None,
            rtt: None,
            rtcp_report: None,
            rtcp_xr: None,
            per_packet: None,
        }
    }
}

/// One jitter buffer's effect on the direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BufferQuality {
    /// The buffer.
    pub policy: BufferPolicy,
    /// Its short name (`fixed-50ms`, ...).
    pub label: String,
    /// Simulated per packet, exact from the kernel's playout-delay histogram, or estimated
    /// from its delay-variation histogram.
    pub method: Method,
    /// Packets it would discard as late.
    pub discarded: u64,
    /// Network loss plus discards, percent of packets expected.
    pub effective_loss_pct: f64,
    /// Delay the buffer adds (mean), ms.
    pub buffer_delay_ms: f64,
    /// Mouth-to-ear delay used for the E-model, ms.
    pub ta_ms: f64,
    /// The E-model result (None when the codec is unknown).
    pub emodel: Option<EModelResult>,
}

/// Our figures against the receiver's RTCP report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RtcpCrossCheck {
    /// SSRC the report block is about.
    pub reported_ssrc: u32,
    /// Whether it is this stream's SSRC (nothing is compared otherwise).
    pub ssrc_matches: bool,
    /// The report's fraction lost since its previous report, percent.
    pub rtcp_fraction_lost_pct: f64,
    /// The report's cumulative loss.
    pub rtcp_cumulative_lost: i32,
    /// The report's extended highest sequence number received.
    pub rtcp_ext_highest_seq: u32,
    /// The report's cumulative loss over the packets expected from our first sequence number
    /// to its extended highest one, percent (None when that range is empty).
    pub rtcp_loss_pct: Option<f64>,
    /// Our cumulative loss, percent.
    pub our_loss_pct: f64,
    /// The report's interarrival jitter, ms.
    pub rtcp_jitter_ms: Option<f64>,
    /// Our current interarrival jitter, ms.
    pub our_jitter_ms: Option<f64>,
    /// The loss figures disagree strongly.
    pub loss_disagrees: bool,
    /// The jitter figures disagree strongly.
    pub jitter_disagrees: bool,
}

/// The receiver's RTCP-XR VoIP Metrics (RFC 3611 §4.7) against our figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct XrCrossCheck {
    /// The block as received.
    pub metrics: VoipMetrics,
    /// Its loss rate, percent (8-bit field / 256).
    pub xr_loss_pct: f64,
    /// Our cumulative loss, percent.
    pub our_loss_pct: f64,
    /// The loss figures disagree strongly (the tolerance of [`LOSS_DISAGREE_POINTS`]).
    pub loss_disagrees: bool,
}

/// Quality of one direction of one SSRC.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DirectionQuality {
    /// SSRC.
    pub ssrc: u32,
    /// Encoding name as negotiated.
    pub codec: String,
    /// Clock rate, Hz.
    pub clock_rate: u32,
    /// Packets seen (every packet, including duplicates and telephone events).
    pub packets: u64,
    /// Telephone-event packets among them.
    pub telephone_events: u32,
    /// Packets expected (RFC 3550 A.3).
    pub expected: u64,
    /// Packets lost (RFC 3550 A.3; negative with duplicates).
    pub lost: i64,
    /// Loss, percent of expected (negative loss counts as 0).
    pub loss_pct: f64,
    /// Duplicate packets.
    pub duplicates: u32,
    /// Sequence restarts.
    pub restarts: u32,
    /// Mean interarrival jitter, ms ([`mean_jitter_ms`]).
    pub jitter_mean_ms: Option<f64>,
    /// Largest interarrival jitter, ms.
    pub jitter_max_ms: Option<f64>,
    /// Interarrival jitter at the last packet, ms.
    pub jitter_last_ms: Option<f64>,
    /// Largest gap between consecutive packets, ms.
    pub max_gap_ms: f64,
    /// Loss runs: `[i]` counts runs of `i + 1` lost packets, the last 10 or more.
    pub loss_bursts: [u32; LOSS_BURST_BUCKETS],
    /// Histogram of |D| between consecutive packets (bounds in
    /// `collector_common::media::DELAY_BUCKETS_MS`).
    pub delay_hist: [u32; DELAY_BUCKET_COUNT],
    /// Histogram of each packet's delay behind the playout anchor (bounds, inclusive, in
    /// `collector_common::media::LATE_BUCKETS_MS`).
    pub late_hist: [u32; LATE_BUCKET_COUNT],
    /// Burst ratio of the network loss.
    pub burst_r: f64,
    /// Round-trip time used, ms.
    pub rtt_ms: Option<f64>,
    /// The E-model used ("ITU-T G.107" or "ITU-T G.107.1"); None for an unknown codec.
    pub model: Option<&'static str>,
    /// One entry per jitter buffer: fixed 50 ms, fixed 200 ms, adaptive ≤ 500 ms.
    pub buffers: Vec<BufferQuality>,
    /// Cross-check against the receiver's RTCP report, when one was given.
    pub rtcp_check: Option<RtcpCrossCheck>,
    /// Cross-check against the receiver's RTCP-XR VoIP Metrics, when given.
    pub xr_check: Option<XrCrossCheck>,
}

/// Mean interarrival jitter (RFC 3550 A.8) over the packets that had a predecessor, ms:
/// the project's one definition of mean jitter (CDRs, flow events, replay, intervals).
///
/// A.8 updates J on every packet after the first; the stream's running sum starts with the
/// estimator's initial 0 for the first packet (`jitter_samples` counts it), which is a
/// starting value, not a measurement. Leaving it out gives the mean of the measured values,
/// as tshark's `rtp,streams` reports it (checked on the corpus: a 9-packet stream of
/// sngrep_aaa.pcap, 5.646 ms, differs by 12 % from the mean that counts the 0). `None` when
/// the clock rate is unknown; 0 before a second packet.
pub fn mean_jitter_ms(s: &RtpStream, clock_rate: u32) -> Option<f64> {
    if clock_rate == 0 {
        return None;
    }
    if s.jitter_samples < 2 {
        return Some(0.0);
    }
    let measured = u64::from(s.jitter_samples - 1);
    Some(q8_units_to_ms(s.jitter_sum_q8 / measured, clock_rate))
}

fn q8_units_to_ms(q8: u64, clock_rate: u32) -> f64 {
    q8 as f64 / 256.0 * 1000.0 / f64::from(clock_rate)
}

fn pct(part: f64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part / whole as f64 * 100.0).clamp(0.0, 100.0)
    }
}

fn disagree(a: f64, b: f64, floor: f64) -> bool {
    (a - b).abs() > floor.max(0.5 * a.max(b))
}

/// Scores one direction.
pub fn assess(input: &QualityInput<'_>) -> DirectionQuality {
    let s = input.stream;
    let expected = u64::from(s.expected());
    let lost = s.lost();
    let net_lost = lost.max(0) as u64;
    let loss_pct = pct(net_lost as f64, expected);
    let jitter_known = input.clock_rate != 0;
    let jitter_mean_ms = mean_jitter_ms(s, input.clock_rate);
    let jitter_max_ms = jitter_known.then(|| q8_units_to_ms(s.max_jitter_q8, input.clock_rate));
    let jitter_last_ms = jitter_known.then(|| q8_units_to_ms(s.jitter_q8, input.clock_rate));
    let burst_r = emodel::burst_ratio(net_lost, expected, &s.loss_bursts);
    let rtt_ms = input.rtt.map(|d| d.as_secs_f64() * 1000.0);
    let profile = emodel::codec_profile(input.codec, input.clock_rate);

    let outcomes = match input.per_packet {
        Some(o) if !o.is_empty() => o.to_vec(),
        _ => jitterbuf::outcomes_from_kernel(s),
    };
    let buffers: Vec<BufferQuality> = outcomes
        .into_iter()
        .map(|o| {
            let effective_loss_pct = pct(net_lost.saturating_add(o.late) as f64, expected);
            let packet_ms = input
                .ptime_ms
                .or(profile.map(|p| p.packet_ms))
                .unwrap_or(20);
            let ta_ms = rtt_ms.unwrap_or(0.0) / 2.0
                + o.mean_delay_ms
                + f64::from(packet_ms)
                + profile.map_or(0.0, |p| p.lookahead_ms);
            BufferQuality {
                policy: o.policy,
                label: o.policy.label(),
                method: o.method,
                discarded: o.late,
                effective_loss_pct,
                buffer_delay_ms: o.mean_delay_ms,
                ta_ms,
                emodel: profile.map(|p| emodel::evaluate(p, effective_loss_pct, burst_r, ta_ms)),
            }
        })
        .collect();

    let rtcp_check = input
        .rtcp_report
        .map(|rb| cross_check(s, rb, input.clock_rate, loss_pct, jitter_last_ms));
    let xr_check = input.rtcp_xr.map(|m| {
        let xr_loss_pct = m.loss_pct();
        XrCrossCheck {
            metrics: *m,
            xr_loss_pct,
            our_loss_pct: loss_pct,
            // A block about another SSRC is reported, not compared (as for report blocks).
            loss_disagrees: m.ssrc == s.ssrc
                && disagree(loss_pct, xr_loss_pct, LOSS_DISAGREE_POINTS),
        }
    });

    DirectionQuality {
        ssrc: s.ssrc,
        codec: input.codec.to_owned(),
        clock_rate: input.clock_rate,
        packets: s.packets,
        telephone_events: s.te_packets,
        expected,
        lost,
        loss_pct,
        duplicates: s.duplicates,
        restarts: s.restarts,
        jitter_mean_ms,
        jitter_max_ms,
        jitter_last_ms,
        max_gap_ms: s.max_gap_ns as f64 / 1e6,
        loss_bursts: s.loss_bursts,
        delay_hist: s.delay_hist,
        late_hist: s.late_hist,
        burst_r,
        rtt_ms,
        model: buffers
            .first()
            .and_then(|b| b.emodel.as_ref())
            .map(|e| e.model),
        buffers,
        rtcp_check,
        xr_check,
    }
}

fn cross_check(
    s: &RtpStream,
    rb: &ReportBlock,
    clock_rate: u32,
    our_loss_pct: f64,
    our_jitter_ms: Option<f64>,
) -> RtcpCrossCheck {
    let ssrc_matches = rb.ssrc == s.ssrc;
    // The receiver's extended highest sequence and our base share the RFC 3550 A.1 cycle
    // numbering (both start at 0 cycles), so the range is comparable.
    let range = i64::from(rb.ext_highest_seq) - i64::from(s.base_seq) + 1;
    let rtcp_loss_pct =
        (range > 0).then(|| pct(f64::from(rb.cumulative_lost.max(0)), range as u64));
    let rtcp_jitter_ms = rb.jitter_ms(clock_rate);
    let loss_disagrees = ssrc_matches
        && rtcp_loss_pct.is_some_and(|r| disagree(our_loss_pct, r, LOSS_DISAGREE_POINTS));
    let jitter_disagrees = ssrc_matches
        && matches!((our_jitter_ms, rtcp_jitter_ms), (Some(a), Some(b)) if disagree(a, b, JITTER_DISAGREE_MS));
    RtcpCrossCheck {
        reported_ssrc: rb.ssrc,
        ssrc_matches,
        rtcp_fraction_lost_pct: rb.fraction_lost_ratio() * 100.0,
        rtcp_cumulative_lost: rb.cumulative_lost,
        rtcp_ext_highest_seq: rb.ext_highest_seq,
        rtcp_loss_pct,
        our_loss_pct,
        rtcp_jitter_ms,
        our_jitter_ms,
        loss_disagrees,
        jitter_disagrees,
    }
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
    use crate::media::jitterbuf::{PacketTiming, Simulator};
    use crate::media::testutil::udp_datagrams;
    use collector_common::media::MediaValue;
    use collector_common::rtp::RtpFields;

    const MS: u64 = 1_000_000;
    const SSRC: u32 = 0x1234_5678;

    /// Feeds `n` packets (seq 0..n, 8 kHz, 20 ms) through the shared kernel update,
    /// skipping `drop(seq)`, arriving at `arrival_ms(seq)`. Returns the stream and the
    /// per-packet timings of what arrived.
    fn feed(
        n: u16,
        drop: impl Fn(u16) -> bool,
        arrival_ms: impl Fn(u16) -> u64,
    ) -> (RtpStream, Vec<PacketTiming>) {
        let mut v = MediaValue::new(1, 8000, 0xff, 0);
        let mut pkts: Vec<PacketTiming> = (0..n)
            .filter(|&i| !drop(i))
            .map(|i| PacketTiming {
                arrival_ns: 5_000 * MS + arrival_ms(i) * MS,
                rtp_ts: u32::from(i) * 160,
                seq: i,
            })
            .collect();
        pkts.sort_by_key(|p| p.arrival_ns);
        for p in &pkts {
            let f = RtpFields {
                pt: 0,
                seq: p.seq,
                ts: p.rtp_ts,
                ssrc: SSRC,
            };
            v.update(&f, 172, p.arrival_ns);
        }
        (v.slots[0], pkts)
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    // 1000 packets, seq 0..=999; every 50th from 25 on is dropped (20 packets). Counted from
    // the first packet, as tshark does: expected = 1000, lost = 20, 2.0 %. Arrival on time
    // → jitter 0, every |D| (979 of them, between the 980 received) below 50 ms, no late
    // packet. Loss runs: 20 of length 1, so
    // BurstR = 1 / (p + q) with q = 1, p = 0.02/0.98: 0.98.
    //
    // E-model by hand (G.711 with PLC, RTT 40 ms): Ie,eff = 95·2/(2/0.98 + 25.1) = 7.0006;
    // Ta = 20 (RTT/2) + 50 (buffer) + 20 (ptime) = 90 ms for the 50 ms buffer and for the
    // adaptive estimate (95th percentile bucket < 50 ms → 50 ms), 240 ms for the 200 ms one.
    // G.107 with T = Ta, Tr = 2T (Python, independent of this code): Id(90) = 2.4851 and
    // Id(240) = 12.8046, Is = 1.4136, Ro = 94.7688 → R = 83.8696 and 73.5502 → MOS 4.1615 and
    // 3.7588.
    #[test]
    fn even_two_percent_loss_on_g711() {
        let (s, _) = feed(1000, |i| i % 50 == 25, |i| u64::from(i) * 20);
        let mut input = QualityInput::new(&s, 8000, "PCMA");
        input.rtt = Some(Duration::from_millis(40));
        let q = assess(&input);
        assert_eq!((q.expected, q.lost, q.packets), (1000, 20, 980));
        assert!(close(q.loss_pct, 2.0, 1e-12));
        assert_eq!(q.loss_bursts[0], 20);
        assert!(close(q.burst_r, 0.98, 1e-12));
        assert_eq!(q.jitter_last_ms, Some(0.0));
        assert_eq!(q.jitter_max_ms, Some(0.0));
        assert_eq!(q.delay_hist[0], 979);
        assert!(close(q.max_gap_ms, 40.0, 1e-9));
        assert_eq!(q.model, Some("ITU-T G.107"));
        assert_eq!(q.rtt_ms, Some(40.0));
        let want = [
            (90.0, 83.8696, 4.1615),
            (240.0, 73.5502, 3.7588),
            (90.0, 83.8696, 4.1615),
        ];
        let methods = [
            Method::KernelAnchor,
            Method::KernelAnchor,
            Method::DelayHistogram,
        ];
        // 980 packets on time: all on the anchor.
        assert_eq!(q.late_hist, [980, 0, 0, 0, 0, 0]);
        for ((b, (ta, r, mos)), method) in q.buffers.iter().zip(want).zip(methods) {
            assert_eq!(b.method, method);
            assert_eq!(b.discarded, 0);
            assert!(close(b.effective_loss_pct, 2.0, 1e-12));
            assert!(close(b.ta_ms, ta, 1e-9), "{} Ta {}", b.label, b.ta_ms);
            let e = b.emodel.as_ref().unwrap();
            assert!(close(e.ie_eff, 7.0006, 1e-4), "Ie,eff {}", e.ie_eff);
            assert!(close(e.r, r, 1e-3), "{} R {}", b.label, e.r);
            assert!(close(e.mos, mos, 1e-3), "{} MOS {}", b.label, e.mos);
        }
    }

    // 100 ms spikes on every 10th packet, simulated per packet: the 50 ms buffer discards the
    // 9 spiked packets of seq 10..=90, so its effective loss is 9/100 = 9 %; the 200 ms
    // buffer none; the adaptive one only the first.
    #[test]
    fn per_packet_discards_add_to_loss() {
        let spike = |i: u16| {
            u64::from(i) * 20
                + if i > 0 && i.is_multiple_of(10) {
                    100
                } else {
                    0
                }
        };
        let (s, pkts) = feed(100, |_| false, spike);
        let mut sim = Simulator::standard(8000).unwrap();
        for p in &pkts {
            sim.push(*p);
        }
        let outcomes = sim.outcomes();
        let mut input = QualityInput::new(&s, 8000, "PCMU");
        input.per_packet = Some(&outcomes);
        let q = assess(&input);
        assert_eq!(q.expected, 100);
        assert_eq!(q.lost, 0);
        let discarded: Vec<u64> = q.buffers.iter().map(|b| b.discarded).collect();
        assert_eq!(discarded, vec![9, 0, 1]);
        assert!(close(q.buffers[0].effective_loss_pct, 9.0, 1e-12));
        assert!(close(q.buffers[2].effective_loss_pct, 1.0, 1e-12));
        assert_eq!(q.buffers[0].method, Method::PerPacket);
        let mos: Vec<f64> = q
            .buffers
            .iter()
            .map(|b| b.emodel.as_ref().unwrap().mos)
            .collect();
        assert!(mos[0] < mos[2] && mos[2] < 4.41);
        // |D| = 100 ms twice per spike (late, then the next packet on time): 18 samples in
        // the 90..120 bucket.
        assert_eq!(q.delay_hist[3], 18);
    }

    // Cross-check with an RR block about this SSRC: our loss is 20 in 1000 (2 %).
    #[test]
    fn rtcp_cross_check_flags_strong_disagreement() {
        let (s, _) = feed(1000, |i| i % 50 == 25, |i| u64::from(i) * 20);
        let agreeing = ReportBlock {
            ssrc: SSRC,
            fraction_lost: 5,
            cumulative_lost: 20,
            ext_highest_seq: 999,
            jitter: 40, // 5 ms at 8 kHz
            lsr: 0,
            dlsr: 0,
        };
        let mut input = QualityInput::new(&s, 8000, "PCMU");
        input.rtcp_report = Some(&agreeing);
        let c = assess(&input).rtcp_check.unwrap();
        assert!(c.ssrc_matches);
        // Expected over seq 0..=999 (our base is the first packet, 0): 20/1000.
        assert_eq!(c.rtcp_loss_pct, Some(2.0));
        assert_eq!(c.rtcp_jitter_ms, Some(5.0));
        assert!(!c.loss_disagrees && !c.jitter_disagrees);
        assert!(close(c.rtcp_fraction_lost_pct, 5.0 / 2.56, 1e-12));

        // Loss downstream of us: the receiver lost 150 (15 %), jitter 50 ms.
        let downstream = ReportBlock {
            cumulative_lost: 150,
            jitter: 400,
            ..agreeing
        };
        input.rtcp_report = Some(&downstream);
        let c = assess(&input).rtcp_check.unwrap();
        assert!(c.loss_disagrees && c.jitter_disagrees);

        // A block about another SSRC is reported, not compared.
        let other = ReportBlock {
            ssrc: 7,
            ..downstream
        };
        input.rtcp_report = Some(&other);
        let c = assess(&input).rtcp_check.unwrap();
        assert!(!c.ssrc_matches && !c.loss_disagrees && !c.jitter_disagrees);
    }

    // Cross-check with an XR VoIP Metrics block about this SSRC: our loss is 20 in 1000 (2 %).
    #[test]
    fn xr_cross_check_flags_loss_disagreement() {
        let (s, _) = feed(1000, |i| i % 50 == 25, |i| u64::from(i) * 20);
        let agreeing = VoipMetrics {
            ssrc: SSRC,
            loss_rate: 5, // 1.95 %
            discard_rate: 0,
            burst_density: 0,
            gap_density: 0,
            burst_duration_ms: 0,
            gap_duration_ms: 0,
            round_trip_delay_ms: 0,
            end_system_delay_ms: 0,
            signal_level: 127,
            noise_level: 127,
            rerl: 127,
            gmin: 16,
            r_factor: 127,
            ext_r_factor: 127,
            mos_lq: 127,
            mos_cq: 127,
            rx_config: 0,
            jb_nominal_ms: 0,
            jb_maximum_ms: 0,
            jb_abs_max_ms: 0,
        };
        let mut input = QualityInput::new(&s, 8000, "PCMU");
        input.rtcp_xr = Some(&agreeing);
        let q = assess(&input);
        assert!(q.rtcp_check.is_none());
        let c = q.xr_check.unwrap();
        assert!(close(c.xr_loss_pct, 5.0 / 2.56, 1e-12));
        assert!(close(c.our_loss_pct, 2.0, 1e-12));
        assert!(!c.loss_disagrees);

        // 10.2 % against our 2 %: more than 2 points and half the larger apart.
        let downstream = VoipMetrics {
            loss_rate: 26,
            ..agreeing
        };
        input.rtcp_xr = Some(&downstream);
        assert!(assess(&input).xr_check.unwrap().loss_disagrees);

        // About another SSRC: reported, not compared.
        let other = VoipMetrics {
            ssrc: 7,
            ..downstream
        };
        input.rtcp_xr = Some(&other);
        assert!(!assess(&input).xr_check.unwrap().loss_disagrees);
    }

    #[test]
    fn unknown_codec_and_clock_still_report_counts() {
        let (s, _) = feed(100, |i| i == 50, |i| u64::from(i) * 20);
        let q = assess(&QualityInput::new(&s, 0, "X-UNKNOWN"));
        assert_eq!((q.expected, q.lost), (100, 1));
        assert_eq!(q.model, None);
        assert_eq!(q.jitter_mean_ms, None);
        assert_eq!(q.buffers.len(), 3);
        assert!(q.buffers.iter().all(|b| b.emodel.is_none()));
        assert!(close(q.buffers[0].effective_loss_pct, 1.0, 1e-12));
    }

    #[test]
    fn wideband_codec_uses_g107_1() {
        let (s, _) = feed(100, |_| false, |i| u64::from(i) * 20);
        let q = assess(&QualityInput::new(&s, 8000, "G722"));
        assert_eq!(q.model, Some("ITU-T G.107.1"));
        let e = q.buffers[0].emodel.as_ref().unwrap();
        assert_eq!(e.band, emodel::Band::Wideband);
        // Ta = 50 + 20 + 1.5 (G.722 look-ahead).
        assert!(close(e.ta_ms, 71.5, 1e-9));
    }

    // End to end on a real call: ws_nb6-telephone.pcap, both directions of RTP through the
    // shared kernel update, against tshark 4.0.17 `-z rtp,streams` (the corpus oracle):
    //   10.251.23.139:35560 → 109.3.79.137:44344  SSRC 0x446E4B53 g711A 248 pkts, 0 lost,
    //     max delta 66.048 ms, mean jitter 0.529 ms, max jitter 6.441 ms
    //   109.3.79.137:44344 → 10.251.23.139:35560  SSRC 0x2D7B0B2C g711A 261 pkts, 0 lost,
    //     max delta 63.439 ms, mean jitter 2.631 ms, max jitter 11.261 ms
    // The kernel's fixed-point jitter and the first sample counted as 0 differ from tshark's
    // floating point by well under 1 % here; the tolerances below allow 2 %.
    #[test]
    fn real_call_matches_tshark_rtp_streams() {
        let all = udp_datagrams("ws_nb6-telephone.pcap");
        let cases = [
            (
                35560u16,
                44344u16,
                0x446E_4B53u32,
                248u64,
                66.048,
                0.529,
                6.441,
            ),
            (44344, 35560, 0x2D7B_0B2C, 261, 63.439, 2.631, 11.261),
        ];
        for (sport, dport, ssrc, packets, max_delta, mean_j, max_j) in cases {
            let mut v = MediaValue::new(1, 8000, 0xff, 0);
            for d in all.iter().filter(|d| d.sport == sport && d.dport == dport) {
                let hdr: [u8; 12] = d.payload[..12].try_into().unwrap();
                let f = RtpFields::from_bytes(&hdr).unwrap();
                v.update(&f, d.payload.len() as u32, d.time_ns);
            }
            let s = v.slots[0];
            assert_eq!(s.ssrc, ssrc);
            let q = assess(&QualityInput::new(&s, 8000, "PCMA"));
            assert_eq!(q.packets, packets);
            assert_eq!(q.lost, 0);
            assert!(
                close(q.max_gap_ms, max_delta, 1e-3),
                "max gap {}",
                q.max_gap_ms
            );
            let jm = q.jitter_mean_ms.unwrap();
            let jx = q.jitter_max_ms.unwrap();
            assert!(
                close(jm, mean_j, 0.02 * mean_j),
                "mean jitter {jm} vs {mean_j}"
            );
            assert!(close(jx, max_j, 0.02 * max_j), "max jitter {jx} vs {max_j}");
            let mos = q.buffers[1].emodel.as_ref().unwrap().mos;
            assert!(mos > 4.0, "no loss, modest delay: MOS {mos}");
        }
    }

    proptest::proptest! {
        // Any counter values the kernel map could hold: no panic, MOS within the scale.
        #[test]
        fn arbitrary_counters_never_panic(
            received in proptest::num::u32::ANY,
            cycles in proptest::num::u32::ANY,
            max_seq in proptest::num::u16::ANY,
            base_seq in proptest::num::u32::ANY,
            sums in proptest::array::uniform4(proptest::num::u64::ANY),
            samples in proptest::num::u32::ANY,
            bursts in proptest::array::uniform10(proptest::num::u32::ANY),
            hist in proptest::array::uniform8(proptest::num::u32::ANY),
            clock in proptest::sample::select(vec![0u32, 8000, 16000, 48000]),
            codec in proptest::sample::select(vec!["PCMU", "G722", "opus", "nope"]),
            rtt_ms in proptest::option::of(0u64..100_000),
        ) {
            let s = RtpStream {
                ssrc: 1,
                in_use: 1,
                received,
                cycles,
                max_seq,
                base_seq,
                jitter_q8: sums[0],
                max_jitter_q8: sums[1],
                jitter_sum_q8: sums[2],
                max_gap_ns: sums[3],
                jitter_samples: samples,
                loss_bursts: bursts,
                delay_hist: hist,
                ..RtpStream::EMPTY
            };
            let mut input = QualityInput::new(&s, clock, codec);
            input.rtt = rtt_ms.map(Duration::from_millis);
            let q = assess(&input);
            for b in &q.buffers {
                proptest::prop_assert!((0.0..=100.0).contains(&b.effective_loss_pct));
                if let Some(e) = &b.emodel {
                    proptest::prop_assert!((1.0..=4.5).contains(&e.mos), "mos {}", e.mos);
                }
            }
        }
    }

    #[test]
    fn serialises_to_json() {
        let (s, _) = feed(10, |_| false, |i| u64::from(i) * 20);
        let json = serde_json::to_value(assess(&QualityInput::new(&s, 8000, "PCMU"))).unwrap();
        assert_eq!(json["expected"], 10);
        assert_eq!(json["buffers"][0]["label"], "fixed-50ms");
        assert_eq!(json["model"], "ITU-T G.107");
    }
}
