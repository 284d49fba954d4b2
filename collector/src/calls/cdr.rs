//! The Call Detail Record (`collector_proto::v1::Cdr`) of a finished call: parties and
//! addresses from the initial INVITE, times in Unix ms, post-dial delay (RFC 6076 §4.1:
//! INVITE to the first 180/183, else to the final response), disposition and cause, and one
//! media leg per SSRC per direction with its RFC 3550 statistics and E-model score
//! ([`crate::media::quality::assess`]).
//!
//! Identifiers are in clear here; `crate::privacy::apply::apply_cdr` protects them at the
//! boundary.
#![deny(clippy::indexing_slicing, clippy::panic)]

use collector_common::media::RtpStream;
use collector_proto::v1::{
    Cdr, Coverage, Disposition, FarEndReport, MediaDirection, MediaInterval, MediaLeg, Reason,
};
use sha2::{Digest, Sha256};

use super::{
    media::{unmap_addr, SdpMedia, Way},
    tracker::{Call, CdrIds, Snapshot},
};
use crate::media::interval;
use crate::media::jitterbuf::BufferPolicy;
use crate::media::quality::{self, QualityInput};
use crate::net::Transport;
use crate::sip::sdp;

const MS: u64 = 1_000_000;

/// A UUID-shaped text of 16 bytes.
fn uuid_text(b: &[u8; 16]) -> String {
    let h = data_encoding::HEXLOWER.encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        h.get(0..8).unwrap_or(""),
        h.get(8..12).unwrap_or(""),
        h.get(12..16).unwrap_or(""),
        h.get(16..20).unwrap_or(""),
        h.get(20..32).unwrap_or("")
    )
}

/// The id of the CDR of call number `cookie`: a random version 4 UUID, or, for replay, the
/// first 16 bytes of SHA-256(seed ‖ cookie as 8 bytes big-endian) in UUID form (version
/// nibble 8, "custom", RFC 9562 §5.8), so that a capture replayed twice gives the same ids.
pub fn cdr_id(ids: &CdrIds, cookie: u64) -> String {
    let mut b = [0u8; 16];
    match ids {
        CdrIds::Random => {
            if getrandom::fill(&mut b).is_err() {
                // No entropy source: fall back to something unique within the process.
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let mut h = Sha256::new();
                h.update(t.to_be_bytes());
                h.update(cookie.to_be_bytes());
                let d = h.finalize();
                b.copy_from_slice(d.get(..16).unwrap_or(&[0u8; 16]));
            }
            b[6] = (b[6] & 0x0f) | 0x40;
        }
        CdrIds::Derived(seed) => {
            let mut h = Sha256::new();
            h.update(seed);
            h.update(cookie.to_be_bytes());
            let d = h.finalize();
            b.copy_from_slice(d.get(..16).unwrap_or(&[0u8; 16]));
            b[6] = (b[6] & 0x0f) | 0x80;
        }
    }
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_text(&b)
}

fn ms(ns: u64) -> u64 {
    ns / MS
}

/// The transport's name as CDRs and flow events spell it.
pub(crate) fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Ws => "WS",
    }
}

/// The encoding of payload type `pt` on `way`: the receiver's mapping (RFC 3264 §6.1),
/// else the sender's, else the RFC 3551 static one.
fn codec_name(receiver: Option<&SdpMedia>, sender: Option<&SdpMedia>, pt: u8) -> (String, u32) {
    if let Some(c) = receiver
        .and_then(|s| s.codec(pt))
        .or_else(|| sender.and_then(|s| s.codec(pt)))
    {
        return (c.name.clone(), c.clock_rate);
    }
    match sdp::static_codec(pt) {
        Some(c) => (c.encoding.to_owned(), c.clock_rate.unwrap_or(0)),
        None => (format!("PT{pt}"), 0),
    }
}

/// What scores one stream besides its counters: the codec as the record names it, its
/// clock, the packetisation interval and the round-trip time.
pub(crate) struct StreamContext<'a> {
    call: &'a Call,
    codec: String,
    te_only: bool,
    clock_rate: u32,
    ptime: Option<u32>,
}

impl<'a> StreamContext<'a> {
    /// The context of stream `s` of `snap`.
    pub(crate) fn new(call: &'a Call, snap: &Snapshot, s: &RtpStream) -> Self {
        let (receiver, sender) = call.sdp_for(snap.way, snap.hop);
        let te_only = s.te_packets > 0 && u64::from(s.te_packets) >= s.packets;
        let codec = if te_only {
            "telephone-event".to_owned()
        } else {
            let (name, _) = codec_name(receiver, sender, s.pt);
            // Comfort noise (RFC 3389) between talk spurts: the stream's codec is the one
            // negotiated, which is what the E-model needs.
            if name.eq_ignore_ascii_case("CN") {
                receiver
                    .and_then(SdpMedia::main_codec)
                    .or_else(|| sender.and_then(SdpMedia::main_codec))
                    .map_or(name, |c| c.name.clone())
            } else {
                name
            }
        };
        let ptime = receiver
            .and_then(|r| r.ptime)
            .or(sender.and_then(|r| r.ptime));
        Self {
            call,
            codec,
            te_only,
            clock_rate: snap.plan.clock_rate,
            ptime,
        }
    }

    /// The quality of counters `s` (the whole stream, or one interval of it), with the
    /// receiver's RTCP report about it when `rtcp`.
    fn assess(&self, s: &RtpStream, rtcp: bool) -> quality::DirectionQuality {
        let mut input = QualityInput::new(s, self.clock_rate, &self.codec);
        input.ptime_ms = self.ptime;
        input.rtt = self.call.media.rtcp.rtt;
        if rtcp {
            input.rtcp_report = self.call.media.rtcp.report_for(s.ssrc);
            input.rtcp_xr = self.call.media.rtcp.voip_metrics_for(s.ssrc);
        }
        quality::assess(&input)
    }

    /// (MOS, mean jitter ms) of counters `s`: the scorer of [`interval`] tracks.
    pub(crate) fn interval_score(&self, s: &RtpStream) -> (f64, f64) {
        if self.te_only {
            return (0.0, 0.0);
        }
        let q = self.assess(s, false);
        let mos = scored(&q).0.map_or(0.0, |e| e.mos);
        (mos, q.jitter_mean_ms.unwrap_or(0.0))
    }
}

/// The buffer whose E-model result is the MOS: the adaptive one, which most endpoints run.
fn scored(
    q: &quality::DirectionQuality,
) -> (
    Option<&crate::media::emodel::EModelResult>,
    Option<&quality::BufferQuality>,
) {
    let b = q
        .buffers
        .iter()
        .find(|b| matches!(b.policy, BufferPolicy::Adaptive { .. }))
        .or(q.buffers.first());
    (b.and_then(|b| b.emodel.as_ref()), b)
}

/// The far end's view of a stream: its latest report block and its latest XR VoIP Metrics
/// block, each beside our figures; `None` when neither was seen.
fn far_end(q: &quality::DirectionQuality) -> Option<FarEndReport> {
    if q.rtcp_check.is_none() && q.xr_check.is_none() {
        return None;
    }
    let rb = q.rtcp_check.as_ref();
    let xr = q.xr_check.as_ref();
    let reasons: Vec<&str> = [
        (rb.is_some_and(|c| c.loss_disagrees), "loss"),
        (rb.is_some_and(|c| c.jitter_disagrees), "jitter"),
        (xr.is_some_and(|c| c.loss_disagrees), "xr_loss"),
    ]
    .into_iter()
    .filter_map(|(d, r)| d.then_some(r))
    .collect();
    let mut fe = FarEndReport {
        disagreement: !reasons.is_empty(),
        disagreement_reason: reasons.join(","),
        ..FarEndReport::default()
    };
    if let Some(c) = rb {
        fe.fraction_lost_pct = c.rtcp_fraction_lost_pct;
        fe.cumulative_lost = c.rtcp_cumulative_lost;
        fe.ext_highest_seq = c.rtcp_ext_highest_seq;
        fe.jitter_ms = c.rtcp_jitter_ms.unwrap_or(0.0);
        fe.loss_pct = c.rtcp_loss_pct.unwrap_or(0.0);
        fe.rtt_ms = q.rtt_ms.unwrap_or(0.0);
    }
    if let Some(c) = xr {
        let m = &c.metrics;
        fe.xr_present = true;
        fe.xr_loss_pct = c.xr_loss_pct;
        fe.xr_discard_pct = m.discard_pct();
        fe.xr_burst_density_pct = m.burst_density_pct();
        fe.xr_gap_density_pct = m.gap_density_pct();
        fe.xr_round_trip_ms = u32::from(m.round_trip_delay_ms);
        fe.xr_end_system_delay_ms = u32::from(m.end_system_delay_ms);
        fe.xr_r_factor = m.r().map(u32::from);
        fe.xr_mos_lq = m.mos_lq_value();
        fe.xr_mos_cq = m.mos_cq_value();
    }
    Some(fe)
}

/// Packets the buffer `policy` of `q` discards as late (0 when `q` has no such buffer).
fn discarded(q: &quality::DirectionQuality, policy: BufferPolicy) -> u64 {
    q.buffers
        .iter()
        .find(|b| b.policy == policy)
        .map_or(0, |b| b.discarded)
}

/// How much of a stream's 10-second intervals a leg carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Intervals {
    /// The minimum and the mean of the closed intervals (live flow events, every second).
    Closed,
    /// The closed intervals and the open one up to the last packet, each listed (records).
    Full,
}

/// The media leg of stream `s` of `snap`: its statistics so far and its E-model score.
pub(crate) fn leg(call: &Call, snap: &Snapshot, s: &RtpStream, intervals: Intervals) -> MediaLeg {
    let way = snap.way;
    let key = snap.plan.key(way);
    let ctx = StreamContext::new(call, snap, s);
    let te_only = ctx.te_only;
    let q = ctx.assess(s, true);
    let (e, scored) = scored(&q);
    let mut leg = MediaLeg {
        direction: match way {
            Way::CallerToCallee => MediaDirection::CallerToCallee,
            Way::CalleeToCaller => MediaDirection::CalleeToCaller,
        } as i32,
        src_ip: unmap_addr(key.src).to_string(),
        src_port: u32::from(key.sport),
        dst_ip: unmap_addr(key.dst).to_string(),
        dst_port: u32::from(key.dport),
        ssrc: s.ssrc,
        codec: ctx.codec.clone(),
        clock_rate: ctx.clock_rate,
        packets: s.packets,
        bytes: s.bytes,
        expected: q.expected,
        lost: q.lost,
        loss_pct: q.loss_pct,
        duplicates: u64::from(s.duplicates),
        mean_jitter_ms: if te_only {
            0.0
        } else {
            q.jitter_mean_ms.unwrap_or(0.0)
        },
        max_jitter_ms: if te_only {
            0.0
        } else {
            q.jitter_max_ms.unwrap_or(0.0)
        },
        max_gap_ms: q.max_gap_ms,
        loss_bursts: s.loss_bursts.to_vec(),
        delay_hist: s.delay_hist.to_vec(),
        late_hist: s.late_hist.to_vec(),
        mos: if te_only {
            0.0
        } else {
            e.map_or(0.0, |e| e.mos)
        },
        r_factor: if te_only { 0.0 } else { e.map_or(0.0, |e| e.r) },
        quality_model: match (te_only, e, scored) {
            (false, Some(e), Some(b)) => format!("{} {} {:?}", e.model, b.label, b.method),
            _ => String::new(),
        },
        ..MediaLeg::default()
    };
    if !te_only {
        if let Some(b) = scored {
            leg.ta_ms = b.ta_ms;
        }
        leg.fixed_50ms_discarded = discarded(&q, BufferPolicy::FIXED_50);
        leg.fixed_200ms_discarded = discarded(&q, BufferPolicy::FIXED_200);
        leg.adaptive_discarded = discarded(&q, BufferPolicy::ADAPTIVE_500);
        leg.discard_methods = q
            .buffers
            .iter()
            .map(|b| format!("{:?}", b.method))
            .collect::<Vec<_>>()
            .join(",");
        leg.delay_source = if q.rtt_ms.is_some() {
            "rtcp_rtt"
        } else {
            "none"
        }
        .to_owned();
    }
    leg.far_end = far_end(&q);
    let track = call.media.interval_track(snap.hop, key, s.ssrc);
    let summary = match (intervals, track) {
        (Intervals::Closed, Some(t)) => t.closed(),
        (Intervals::Closed, None) => interval::Summary::default(),
        (Intervals::Full, t) => {
            let fresh;
            let t = match t {
                Some(t) => t,
                None => {
                    fresh = interval::IntervalTrack::new(s.first_ns);
                    &fresh
                }
            };
            t.summary(s.last_ns, s, &|d| ctx.interval_score(d))
        }
    };
    if let Some((mos, start)) = summary.min {
        leg.min_interval_mos = mos;
        leg.min_interval_start_ms = ms(start);
    }
    leg.mean_interval_mos = summary.mean_mos.unwrap_or(0.0);
    leg.intervals = summary
        .intervals
        .iter()
        .map(|i| MediaInterval {
            start_ms: ms(i.start_ns),
            duration_ms: u32::try_from(ms(i.duration_ns)).unwrap_or(u32::MAX),
            packets: i.packets,
            expected: i.expected,
            lost: i.lost,
            loss_pct: i.loss_pct,
            mean_jitter_ms: i.mean_jitter_ms,
            mos: i.mos,
        })
        .collect();
    leg
}

/// The media legs of a call: one per SSRC per direction per binding (a re-INVITE that
/// moved the media starts new entries), in the order they were retired, then those of
/// `live`, the entries still bound (an interim record's media so far).
pub(crate) fn legs(call: &Call, live: &[Snapshot]) -> Vec<MediaLeg> {
    call.media
        .snapshots
        .iter()
        .chain(live)
        .flat_map(|snap| {
            snap.value
                .slots
                .iter()
                .filter(|s| s.in_use != 0 && s.packets > 0)
                .map(move |s| leg(call, snap, s, Intervals::Full))
        })
        .collect()
}

/// Which record of a call [`build`] makes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Record {
    /// The final record of an ended call: its `interim_seq` is the number of interim
    /// records made before it.
    Final,
    /// Interim record number `seq` (from 1) of a call still in progress, made at `at_ns`
    /// (its end time).
    Interim {
        /// 1, 2, 3, ... per call.
        seq: u32,
        /// When the record is made (ns on the tracker's clock).
        at_ns: u64,
    },
}

/// The CDR of `call`, final or interim (`record`). `ring_lost` is the kernel ring-full
/// count over the call's lifetime so far; `media` its [`legs`] (of an interim record, with
/// the entries still bound, read without retiring them).
pub(crate) fn build(
    call: &Call,
    agent_id: &str,
    cdr_id: String,
    ring_lost: u64,
    record: Record,
    media: Vec<MediaLeg>,
) -> Cdr {
    let start = call.start_ns;
    let (interim, interim_seq, end) = match record {
        Record::Final => (false, call.interims, call.end.map(|e| e.at)),
        // An interim record runs to the time it is made.
        Record::Interim { seq, at_ns } => (true, seq, Some(at_ns)),
    };
    let pdd_to = call.ring_ns.or(call.final_ns);
    // The codecs the answer listed, in its order (the offer's if no answer carried SDP).
    let codecs = call
        .negotiated()
        .map(|s| s.codecs.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let observed = call.end.is_some_and(|e| e.observed);
    let coverage = Coverage {
        ring_lost,
        snap_cut: u64::from(call.snap_cut),
        map_pressure: u64::from(call.map_pressure),
        sip_parse_errors: u64::from(call.parse_errors),
        complete: observed
            && !interim
            && ring_lost == 0
            && call.snap_cut == 0
            && call.map_pressure == 0
            && call.parse_errors == 0,
    };
    let (ladder, ladder_omitted) = call.ladder.to_cdr();
    Cdr {
        agent_id: agent_id.to_owned(),
        cdr_id,
        call_id: call.call_id.clone(),
        correlation_id: call.correlation.clone(),
        correlation_method: call.correlation_source.method().to_owned(),
        caller: Some(call.caller.clone()),
        callee: Some(call.callee.clone()),
        src_ip: call.src.ip().to_canonical().to_string(),
        src_port: u32::from(call.src.port()),
        dst_ip: call.dst.ip().to_canonical().to_string(),
        dst_port: u32::from(call.dst.port()),
        transport: transport_name(call.transport).to_owned(),
        start_time_ms: ms(start),
        ring_time_ms: call.ring_ns.map_or(0, ms),
        answer_time_ms: call.answer_ns.map_or(0, ms),
        end_time_ms: end.map_or(0, ms),
        post_dial_delay_ms: pdd_to.map_or(0, |t| ms(t.saturating_sub(start))),
        duration_ms: end.map_or(0, |e| ms(e.saturating_sub(start))),
        billable_ms: match (call.answer_ns, end) {
            (Some(a), Some(e)) => ms(e.saturating_sub(a)),
            _ => 0,
        },
        // An interim record of an answered call is already known to be answered.
        disposition: call.end.map_or(
            if call.answer_ns.is_some() {
                Disposition::Answered as i32
            } else {
                Disposition::Unspecified as i32
            },
            |e| e.disposition as i32,
        ),
        final_code: u32::from(call.final_code),
        reason: call.reason.as_ref().map(|r| Reason {
            protocol: r.protocol.clone(),
            cause: r.cause,
            text: r.text.clone(),
        }),
        hangup_side: call.end.map_or(0, |e| e.side as i32),
        codecs,
        media,
        user_agent_caller: call.ua_caller.clone().unwrap_or_default(),
        user_agent_callee: call.ua_callee.clone().unwrap_or_default(),
        coverage: Some(coverage),
        consent: call.consent.clone().unwrap_or_default(),
        legs_hops: call.invite_paths,
        interim,
        sip_messages: call.sip_messages,
        ladder,
        ladder_omitted,
        interim_seq,
        // Written at the privacy boundary, from the callee number, only under the `billing`
        // policy (`privacy::apply::apply_cdr`): the tracker keeps no prefix of its own.
        destination_prefix: String::new(),
        sealed: Vec::new(),
    }
}
