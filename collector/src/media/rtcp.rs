//! RTCP parsing (RFC 3550 §6): compound-packet validation per §6.4.1 and Appendix A.2, sender
//! and receiver reports (§6.4.1, §6.4.2), SDES CNAME (§6.5.1), BYE (§6.6), APP (§6.7, skipped),
//! RTCP XR (RFC 3611 §4.7, the VoIP Metrics block; other block types skipped), reduced-size RTCP
//! (RFC 5506 §3) as an option, and the round-trip time from LSR/DLSR (RFC 3550 §6.4.1).
//!
//! A pure function over one UDP payload: no I/O, no clock (arrival times are passed in), no
//! logging. Every length the packet claims is checked against the bytes present before it is
//! used, so a lying length is a typed [`RtcpError`], never a panic or a read past the buffer.
//! Text items (CNAME, BYE reason) stay views into the datagram; CNAMEs often carry
//! `user@host`, so nothing here prints them.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

/// Sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Source description (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// Application-defined (RFC 3550 §6.7).
pub const PT_APP: u8 = 204;
/// Extended reports (RFC 3611).
pub const PT_XR: u8 = 207;
/// SDES item type CNAME (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;
/// XR block type of the VoIP Metrics report block (RFC 3611 §4.7).
pub const XR_BT_VOIP_METRICS: u8 = 7;

/// Most RTCP packets accepted in one compound datagram. Real stacks send 2..4; the limit
/// bounds the memory a hostile datagram can make us allocate.
pub const MAX_PACKETS: usize = 32;
/// Most VoIP Metrics blocks kept per XR packet; further ones are counted, not stored.
pub const MAX_VOIP_METRICS: usize = 8;

const HEADER_LEN: usize = 4;
const REPORT_BLOCK_LEN: usize = 24;
const SENDER_INFO_LEN: usize = 20;
/// RFC 3611 §4.7: the VoIP Metrics block length field is always 8 (words after the header).
const VOIP_METRICS_WORDS: usize = 8;
/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Why a datagram is not valid RTCP. Offsets are bytes from the start of the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RtcpError {
    /// The datagram is empty.
    #[error("empty rtcp datagram")]
    Empty,
    /// Fewer bytes remain than an RTCP header needs (the lengths do not sum to the datagram).
    #[error("truncated rtcp header at offset {offset}: {available} bytes left, 4 needed")]
    TruncatedHeader {
        /// Where the header would start.
        offset: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// A packet's version field is not 2.
    #[error("rtcp version {version} at offset {offset}, expected 2")]
    BadVersion {
        /// Where the packet starts.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// A compound packet does not start with SR or RR (RFC 3550 §6.4.1, A.2), and
    /// reduced-size RTCP was not allowed.
    #[error("rtcp compound starts with packet type {pt}, expected sr or rr")]
    FirstNotReport {
        /// Packet type of the first packet.
        pt: u8,
    },
    /// A packet claims more bytes than the datagram has left.
    #[error("rtcp packet at offset {offset} claims {declared} bytes, {available} left")]
    LengthOverrun {
        /// Where the packet starts.
        offset: usize,
        /// Bytes the length field claims (header included).
        declared: usize,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// The padding bit is set on a packet that is not the last of the compound.
    #[error("rtcp padding on packet at offset {offset}, which is not the last")]
    PaddingNotLast {
        /// Where the packet starts.
        offset: usize,
    },
    /// The padding count is zero or larger than the packet body.
    #[error("rtcp padding count {pad} invalid for packet at offset {offset}")]
    BadPadding {
        /// Where the packet starts.
        offset: usize,
        /// The padding count (last octet of the packet).
        pad: u8,
    },
    /// The body of a packet is inconsistent with its counts or item lengths.
    #[error("malformed rtcp packet type {pt} at offset {offset}: {what}")]
    BadBody {
        /// Where the packet starts.
        offset: usize,
        /// The packet type.
        pt: u8,
        /// What does not fit.
        what: &'static str,
    },
    /// More packets than [`MAX_PACKETS`] in one datagram.
    #[error("more than {limit} rtcp packets in one datagram")]
    TooManyPackets {
        /// The limit.
        limit: usize,
    },
}

/// How strictly a datagram is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParseOptions {
    /// Accept reduced-size RTCP (RFC 5506 §3): a datagram need not start with SR or RR and
    /// may hold a single packet of any type. Negotiated by `a=rtcp-rsize` in SDP.
    pub reduced_size: bool,
}

/// The sender information of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SenderInfo {
    /// NTP timestamp, seconds since 1900 (most significant word).
    pub ntp_msw: u32,
    /// NTP timestamp, fraction of a second in 1/2^32 s (least significant word).
    pub ntp_lsw: u32,
    /// RTP timestamp corresponding to the NTP timestamp.
    pub rtp_ts: u32,
    /// Packets sent since the start of transmission.
    pub packet_count: u32,
    /// Payload octets sent since the start of transmission.
    pub octet_count: u32,
}

impl SenderInfo {
    /// The middle 32 bits of the NTP timestamp: what a receiver echoes as LSR.
    pub fn ntp_middle32(&self) -> u32 {
        (self.ntp_msw << 16) | (self.ntp_lsw >> 16)
    }
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReportBlock {
    /// SSRC of the source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24-bit signed: duplicates make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles << 16 | highest).
    pub ext_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last SR received from that source (0: none).
    pub lsr: u32,
    /// Delay since that SR was received, in 1/65536 s.
    pub dlsr: u32,
}

impl ReportBlock {
    /// Fraction lost as a ratio in `0.0..1.0`.
    pub fn fraction_lost_ratio(&self) -> f64 {
        f64::from(self.fraction_lost) / 256.0
    }

    /// Interarrival jitter in milliseconds for a stream with `clock_rate` Hz (None when 0).
    pub fn jitter_ms(&self, clock_rate: u32) -> Option<f64> {
        (clock_rate != 0).then(|| f64::from(self.jitter) * 1000.0 / f64::from(clock_rate))
    }

    /// Delay since last SR as a duration.
    pub fn dlsr_duration(&self) -> Duration {
        units16_to_duration(self.dlsr)
    }

    /// Round-trip time per RFC 3550 §6.4.1, A − LSR − DLSR, where `arrival_ntp_middle32`
    /// (A) is the arrival time of this report at the sender of the SR, on the same clock as
    /// that SR's NTP timestamp (its middle 32 bits, 1/65536 s units). None when no SR was
    /// received (LSR = 0) or when the result would be negative (clocks disagree).
    pub fn round_trip(&self, arrival_ntp_middle32: u32) -> Option<Duration> {
        if self.lsr == 0 {
            return None;
        }
        let rtt = arrival_ntp_middle32
            .wrapping_sub(self.lsr)
            .wrapping_sub(self.dlsr);
        // Wrapping arithmetic: a "negative" result lands in the upper half of the range.
        (rtt < 0x8000_0000).then(|| units16_to_duration(rtt))
    }

    /// Round-trip time as a passive observer sees it: the RR arrived `rr_seen_ns` and the SR
    /// whose NTP middle 32 bits equal this block's LSR passed the same observation point at
    /// `sr_seen_ns` (same clock, any epoch). Needs no synchronised NTP at the sender, which
    /// captured SRs often lack; it measures the round trip from the observation point to the
    /// reporter. None when no SR was received or the result would be negative.
    pub fn round_trip_observed(&self, sr_seen_ns: u64, rr_seen_ns: u64) -> Option<Duration> {
        if self.lsr == 0 {
            return None;
        }
        let elapsed = rr_seen_ns.checked_sub(sr_seen_ns)?;
        let dlsr_ns = u64::from(self.dlsr) * 1_000_000_000 / 65_536;
        elapsed.checked_sub(dlsr_ns).map(Duration::from_nanos)
    }
}

/// The middle 32 bits of the NTP timestamp of a Unix time in ns (for [`ReportBlock::round_trip`]).
pub fn ntp_middle32_from_unix_ns(unix_ns: u64) -> u32 {
    let secs = unix_ns / 1_000_000_000 + NTP_UNIX_OFFSET_S;
    let frac16 = (unix_ns % 1_000_000_000) * 65_536 / 1_000_000_000;
    // Only the low 16 bits of the seconds survive in the middle word, by definition.
    (((secs & 0xffff) << 16) | frac16) as u32
}

fn units16_to_duration(units: u32) -> Duration {
    Duration::from_nanos(u64::from(units) * 1_000_000_000 / 65_536)
}

/// A sender report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SenderReport {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// Sender information.
    pub info: SenderInfo,
    /// Reception report blocks (at most 31).
    pub reports: Vec<ReportBlock>,
}

/// A receiver report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiverReport {
    /// SSRC of the report's sender.
    pub ssrc: u32,
    /// Reception report blocks (at most 31).
    pub reports: Vec<ReportBlock>,
}

/// One SDES chunk: the CNAME is kept, other items are only counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// SSRC or CSRC the chunk describes.
    pub ssrc: u32,
    /// The first CNAME item's text (bytes as sent, trailing NULs trimmed; may identify a user
    /// or host).
    pub cname: Option<&'a [u8]>,
    /// Items other than the first CNAME.
    pub other_items: u32,
}

/// A BYE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye<'a> {
    /// Sources leaving (at most 31).
    pub ssrcs: Vec<u32>,
    /// Reason for leaving, as sent.
    pub reason: Option<&'a [u8]>,
}

/// An XR VoIP Metrics report block (RFC 3611 §4.7), fields as on the wire.
///
/// Several fields reserve 127 for "unavailable"; the accessors return `None` then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VoipMetrics {
    /// SSRC of the source the metrics are about.
    pub ssrc: u32,
    /// Fraction of packets lost, in 1/256.
    pub loss_rate: u8,
    /// Fraction of packets discarded (late or early), in 1/256.
    pub discard_rate: u8,
    /// Fraction of packets lost or discarded within bursts, in 1/256.
    pub burst_density: u8,
    /// Fraction of packets lost or discarded within gaps, in 1/256.
    pub gap_density: u8,
    /// Mean burst duration, ms.
    pub burst_duration_ms: u16,
    /// Mean gap duration, ms.
    pub gap_duration_ms: u16,
    /// Most recent round-trip delay, ms.
    pub round_trip_delay_ms: u16,
    /// Most recent end-system delay, ms.
    pub end_system_delay_ms: u16,
    /// Signal level in dBm0 (127: unavailable).
    pub signal_level: i8,
    /// Noise level in dBm0 (127: unavailable).
    pub noise_level: i8,
    /// Residual echo return loss, dB (127: unavailable).
    pub rerl: u8,
    /// Gap threshold (lost-or-discarded count that ends a burst).
    pub gmin: u8,
    /// R factor, 0..120 (127: unavailable).
    pub r_factor: u8,
    /// External R factor (127: unavailable).
    pub ext_r_factor: u8,
    /// MOS-LQ × 10 (127: unavailable).
    pub mos_lq: u8,
    /// MOS-CQ × 10 (127: unavailable).
    pub mos_cq: u8,
    /// Receiver configuration byte: PLC (bits 7..6), jitter-buffer adaptive (5..4), rate (3..0).
    pub rx_config: u8,
    /// Nominal jitter-buffer delay, ms.
    pub jb_nominal_ms: u16,
    /// Maximum jitter-buffer delay, ms.
    pub jb_maximum_ms: u16,
    /// Absolute maximum jitter-buffer delay, ms.
    pub jb_abs_max_ms: u16,
}

/// Packet-loss concealment reported in [`VoipMetrics::rx_config`] (RFC 3611 §4.7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Plc {
    /// 00: unspecified.
    Unspecified,
    /// 01: disabled.
    Disabled,
    /// 10: enhanced.
    Enhanced,
    /// 11: standard.
    Standard,
}

/// Jitter-buffer adaptivity reported in [`VoipMetrics::rx_config`] (RFC 3611 §4.7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JitterBufferKind {
    /// 00: unknown.
    Unknown,
    /// 01: reserved.
    Reserved,
    /// 10: non-adaptive.
    NonAdaptive,
    /// 11: adaptive.
    Adaptive,
}

const XR_UNAVAILABLE: u8 = 127;

fn available(v: u8) -> Option<u8> {
    (v != XR_UNAVAILABLE).then_some(v)
}

impl VoipMetrics {
    /// Loss rate in percent.
    pub fn loss_pct(&self) -> f64 {
        f64::from(self.loss_rate) * 100.0 / 256.0
    }
    /// Discard rate in percent.
    pub fn discard_pct(&self) -> f64 {
        f64::from(self.discard_rate) * 100.0 / 256.0
    }
    /// Burst density in percent.
    pub fn burst_density_pct(&self) -> f64 {
        f64::from(self.burst_density) * 100.0 / 256.0
    }
    /// Gap density in percent.
    pub fn gap_density_pct(&self) -> f64 {
        f64::from(self.gap_density) * 100.0 / 256.0
    }
    /// Signal level in dBm0, if reported.
    pub fn signal_dbm0(&self) -> Option<i8> {
        (self.signal_level != 127).then_some(self.signal_level)
    }
    /// Noise level in dBm0, if reported.
    pub fn noise_dbm0(&self) -> Option<i8> {
        (self.noise_level != 127).then_some(self.noise_level)
    }
    /// Residual echo return loss in dB, if reported.
    pub fn rerl_db(&self) -> Option<u8> {
        available(self.rerl)
    }
    /// R factor, if reported.
    pub fn r(&self) -> Option<u8> {
        available(self.r_factor)
    }
    /// External R factor, if reported.
    pub fn ext_r(&self) -> Option<u8> {
        available(self.ext_r_factor)
    }
    /// MOS-LQ (listening quality), if reported.
    pub fn mos_lq_value(&self) -> Option<f64> {
        available(self.mos_lq).map(|v| f64::from(v) / 10.0)
    }
    /// MOS-CQ (conversational quality), if reported.
    pub fn mos_cq_value(&self) -> Option<f64> {
        available(self.mos_cq).map(|v| f64::from(v) / 10.0)
    }
    /// Packet-loss concealment in use.
    pub fn plc(&self) -> Plc {
        match self.rx_config >> 6 {
            0 => Plc::Unspecified,
            1 => Plc::Disabled,
            2 => Plc::Enhanced,
            _ => Plc::Standard,
        }
    }
    /// Jitter-buffer adaptivity.
    pub fn jitter_buffer_kind(&self) -> JitterBufferKind {
        match (self.rx_config >> 4) & 3 {
            0 => JitterBufferKind::Unknown,
            1 => JitterBufferKind::Reserved,
            2 => JitterBufferKind::NonAdaptive,
            _ => JitterBufferKind::Adaptive,
        }
    }
    /// Jitter-buffer adjustment rate (0..15).
    pub fn jitter_buffer_rate(&self) -> u8 {
        self.rx_config & 0x0f
    }
}

/// An extended report (RFC 3611): the VoIP Metrics blocks, other block types counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtendedReport {
    /// SSRC of the XR's sender.
    pub ssrc: u32,
    /// VoIP Metrics blocks (at most [`MAX_VOIP_METRICS`]).
    pub voip_metrics: Vec<VoipMetrics>,
    /// Blocks of other types, skipped.
    pub skipped_blocks: u32,
    /// VoIP Metrics blocks beyond [`MAX_VOIP_METRICS`], dropped.
    pub dropped_voip_metrics: u32,
}

/// One packet of a compound datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Sender report.
    SenderReport(SenderReport),
    /// Receiver report.
    ReceiverReport(ReceiverReport),
    /// Source description chunks.
    SourceDescription(Vec<SdesChunk<'a>>),
    /// Goodbye.
    Bye(Bye<'a>),
    /// Application-defined: identified, content skipped.
    App {
        /// Subtype (the count field).
        subtype: u8,
        /// SSRC/CSRC.
        ssrc: u32,
        /// Four ASCII characters naming the application.
        name: [u8; 4],
    },
    /// Extended report.
    ExtendedReport(ExtendedReport),
    /// Another packet type (feedback, IJ, ...): skipped.
    Other {
        /// Packet type.
        pt: u8,
        /// Body length in bytes (after the header, padding removed).
        len: usize,
    },
}

/// A validated compound RTCP datagram.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Compound<'a> {
    /// The packets, in order.
    pub packets: Vec<Packet<'a>>,
}

impl<'a> Compound<'a> {
    /// Every reception report block with the SSRC of the packet that carried it.
    pub fn report_blocks(&self) -> impl Iterator<Item = (u32, &ReportBlock)> + '_ {
        self.packets.iter().flat_map(|p| {
            let (reporter, blocks): (u32, &[ReportBlock]) = match p {
                Packet::SenderReport(sr) => (sr.ssrc, &sr.reports),
                Packet::ReceiverReport(rr) => (rr.ssrc, &rr.reports),
                _ => (0, &[]),
            };
            blocks.iter().map(move |b| (reporter, b))
        })
    }

    /// The sender reports of the datagram.
    pub fn sender_reports(&self) -> impl Iterator<Item = &SenderReport> + '_ {
        self.packets.iter().filter_map(|p| match p {
            Packet::SenderReport(sr) => Some(sr),
            _ => None,
        })
    }

    /// `(ssrc, cname)` of every SDES chunk that carries a CNAME.
    pub fn cnames(&self) -> impl Iterator<Item = (u32, &'a [u8])> + '_ {
        self.packets
            .iter()
            .filter_map(|p| match p {
                Packet::SourceDescription(chunks) => Some(chunks),
                _ => None,
            })
            .flatten()
            .filter_map(|c| c.cname.map(|n| (c.ssrc, n)))
    }

    /// Every XR VoIP Metrics block with the SSRC of the XR's sender.
    pub fn voip_metrics(&self) -> impl Iterator<Item = (u32, &VoipMetrics)> + '_ {
        self.packets
            .iter()
            .filter_map(|p| match p {
                Packet::ExtendedReport(xr) => Some(xr),
                _ => None,
            })
            .flat_map(|xr| xr.voip_metrics.iter().map(move |m| (xr.ssrc, m)))
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    let end = off.checked_add(2)?;
    b.get(off..end)?.try_into().ok().map(u16::from_be_bytes)
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    b.get(off..end)?.try_into().ok().map(u32::from_be_bytes)
}

fn byte(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

/// Parses and validates one RTCP datagram (a UDP payload).
///
/// Checks, per RFC 3550 §6.4.1 and A.2: every packet is version 2; the first is SR or RR
/// (unless `opts.reduced_size`, RFC 5506); only the last packet may be padded, with a count
/// that fits; the packet lengths add up exactly to the datagram; each body holds what its
/// counts announce. Padding on a lone packet is accepted: §6.4.1 allows it on the last
/// packet, although the sample check of A.2 would refuse it on the first.
pub fn parse_compound(buf: &[u8], opts: ParseOptions) -> Result<Compound<'_>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut packets = Vec::new();
    let mut off = 0usize;
    while off < buf.len() {
        if packets.len() >= MAX_PACKETS {
            return Err(RtcpError::TooManyPackets { limit: MAX_PACKETS });
        }
        let rest = buf.get(off..).unwrap_or_default();
        let (b0, pt, len_words) = match (byte(rest, 0), byte(rest, 1), be16(rest, 2)) {
            (Some(b0), Some(pt), Some(len)) => (b0, pt, len),
            _ => {
                return Err(RtcpError::TruncatedHeader {
                    offset: off,
                    available: rest.len(),
                })
            }
        };
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtcpError::BadVersion {
                offset: off,
                version,
            });
        }
        if packets.is_empty() && !opts.reduced_size && pt != PT_SR && pt != PT_RR {
            return Err(RtcpError::FirstNotReport { pt });
        }
        let total = (usize::from(len_words) + 1) * 4;
        let Some(pkt) = rest.get(..total) else {
            return Err(RtcpError::LengthOverrun {
                offset: off,
                declared: total,
                available: rest.len(),
            });
        };
        let padded = b0 & 0x20 != 0;
        let is_last = total == rest.len();
        if padded && !is_last {
            return Err(RtcpError::PaddingNotLast { offset: off });
        }
        let body_end = if padded {
            let pad = byte(pkt, total - 1).unwrap_or(0);
            if pad == 0 || usize::from(pad) > total - HEADER_LEN {
                return Err(RtcpError::BadPadding { offset: off, pad });
            }
            total - usize::from(pad)
        } else {
            total
        };
        let body = pkt.get(HEADER_LEN..body_end).unwrap_or_default();
        let count = b0 & 0x1f;
        packets.push(parse_packet(pt, count, body, off)?);
        off += total;
    }
    Ok(Compound { packets })
}

fn parse_packet(pt: u8, count: u8, body: &[u8], offset: usize) -> Result<Packet<'_>, RtcpError> {
    let bad = |what: &'static str| RtcpError::BadBody { offset, pt, what };
    match pt {
        PT_SR => {
            let ssrc = be32(body, 0).ok_or(bad("sender report shorter than its ssrc"))?;
            let info = SenderInfo {
                ntp_msw: be32(body, 4).ok_or(bad("sender info truncated"))?,
                ntp_lsw: be32(body, 8).ok_or(bad("sender info truncated"))?,
                rtp_ts: be32(body, 12).ok_or(bad("sender info truncated"))?,
                packet_count: be32(body, 16).ok_or(bad("sender info truncated"))?,
                octet_count: be32(body, 20).ok_or(bad("sender info truncated"))?,
            };
            let reports = report_blocks(body, 4 + SENDER_INFO_LEN, count)
                .ok_or(bad("report count exceeds the packet"))?;
            Ok(Packet::SenderReport(SenderReport {
                ssrc,
                info,
                reports,
            }))
        }
        PT_RR => {
            let ssrc = be32(body, 0).ok_or(bad("receiver report shorter than its ssrc"))?;
            let reports =
                report_blocks(body, 4, count).ok_or(bad("report count exceeds the packet"))?;
            Ok(Packet::ReceiverReport(ReceiverReport { ssrc, reports }))
        }
        PT_SDES => parse_sdes(body, count)
            .map(Packet::SourceDescription)
            .ok_or(bad("sdes chunk or item runs past the packet")),
        PT_BYE => parse_bye(body, count)
            .map(Packet::Bye)
            .ok_or(bad("bye source count or reason exceeds the packet")),
        PT_APP => {
            let ssrc = be32(body, 0).ok_or(bad("app packet shorter than ssrc and name"))?;
            let name = body
                .get(4..8)
                .and_then(|n| n.try_into().ok())
                .ok_or(bad("app packet shorter than ssrc and name"))?;
            Ok(Packet::App {
                subtype: count,
                ssrc,
                name,
            })
        }
        PT_XR => parse_xr(body, offset).map(Packet::ExtendedReport),
        _ => Ok(Packet::Other {
            pt,
            len: body.len(),
        }),
    }
}

/// `count` report blocks starting at `start`; profile-specific extensions after them are
/// allowed (RFC 3550 §6.4.1) and ignored.
fn report_blocks(body: &[u8], start: usize, count: u8) -> Option<Vec<ReportBlock>> {
    let mut out = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        let o = start + i * REPORT_BLOCK_LEN;
        let lost_word = be32(body, o + 4)?;
        out.push(ReportBlock {
            ssrc: be32(body, o)?,
            fraction_lost: (lost_word >> 24) as u8,
            // Sign-extend the 24-bit two's-complement count.
            cumulative_lost: ((lost_word << 8) as i32) >> 8,
            ext_highest_seq: be32(body, o + 8)?,
            jitter: be32(body, o + 12)?,
            lsr: be32(body, o + 16)?,
            dlsr: be32(body, o + 20)?,
        });
    }
    Some(out)
}

fn parse_sdes(body: &[u8], count: u8) -> Option<Vec<SdesChunk<'_>>> {
    let mut chunks = Vec::with_capacity(usize::from(count));
    let mut pos = 0usize;
    for _ in 0..count {
        let ssrc = be32(body, pos)?;
        pos += 4;
        let mut cname = None;
        let mut other_items = 0u32;
        loop {
            let ty = byte(body, pos)?;
            if ty == 0 {
                // END: null octets pad the chunk to the next 32-bit boundary. The body starts
                // on a boundary, so offsets within it align the same way.
                pos = (pos + 1).next_multiple_of(4);
                if pos > body.len() {
                    return None;
                }
                break;
            }
            let len = usize::from(byte(body, pos + 1)?);
            let text = body.get(pos + 2..pos + 2 + len)?;
            if ty == SDES_CNAME && cname.is_none() {
                cname = Some(trim_nul(text));
            } else {
                other_items += 1;
            }
            pos += 2 + len;
        }
        chunks.push(SdesChunk {
            ssrc,
            cname,
            other_items,
        });
    }
    Some(chunks)
}

/// Some stacks count a C string's terminating NUL in the item length; the NUL is not part
/// of the name (tshark shows it the same way), and keeping it would make one source's CNAME
/// differ from the same name sent without it.
fn trim_nul(text: &[u8]) -> &[u8] {
    let end = text.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    text.get(..end).unwrap_or_default()
}

fn parse_bye(body: &[u8], count: u8) -> Option<Bye<'_>> {
    let mut ssrcs = Vec::with_capacity(usize::from(count));
    for i in 0..usize::from(count) {
        ssrcs.push(be32(body, i * 4)?);
    }
    let after = usize::from(count) * 4;
    let reason = match byte(body, after) {
        None => None,
        Some(len) => Some(body.get(after + 1..after + 1 + usize::from(len))?),
    };
    Some(Bye { ssrcs, reason })
}

fn parse_xr(body: &[u8], offset: usize) -> Result<ExtendedReport, RtcpError> {
    let bad = |what: &'static str| RtcpError::BadBody {
        offset,
        pt: PT_XR,
        what,
    };
    let ssrc = be32(body, 0).ok_or(bad("xr shorter than its ssrc"))?;
    let mut xr = ExtendedReport {
        ssrc,
        voip_metrics: Vec::new(),
        skipped_blocks: 0,
        dropped_voip_metrics: 0,
    };
    let mut pos = 4usize;
    while pos < body.len() {
        let (bt, words) = match (byte(body, pos), be16(body, pos + 2)) {
            (Some(bt), Some(w)) => (bt, usize::from(w)),
            _ => return Err(bad("xr block header truncated")),
        };
        let block = body
            .get(pos + 4..pos + 4 + words * 4)
            .ok_or(bad("xr block length exceeds the packet"))?;
        if bt == XR_BT_VOIP_METRICS {
            if words != VOIP_METRICS_WORDS {
                return Err(bad("voip metrics block length is not 8"));
            }
            let m = voip_metrics(block).ok_or(bad("voip metrics block truncated"))?;
            if xr.voip_metrics.len() < MAX_VOIP_METRICS {
                xr.voip_metrics.push(m);
            } else {
                xr.dropped_voip_metrics += 1;
            }
        } else {
            xr.skipped_blocks += 1;
        }
        pos += 4 + words * 4;
    }
    Ok(xr)
}

fn voip_metrics(b: &[u8]) -> Option<VoipMetrics> {
    Some(VoipMetrics {
        ssrc: be32(b, 0)?,
        loss_rate: byte(b, 4)?,
        discard_rate: byte(b, 5)?,
        burst_density: byte(b, 6)?,
        gap_density: byte(b, 7)?,
        burst_duration_ms: be16(b, 8)?,
        gap_duration_ms: be16(b, 10)?,
        round_trip_delay_ms: be16(b, 12)?,
        end_system_delay_ms: be16(b, 14)?,
        signal_level: byte(b, 16)? as i8,
        noise_level: byte(b, 17)? as i8,
        rerl: byte(b, 18)?,
        gmin: byte(b, 19)?,
        r_factor: byte(b, 20)?,
        ext_r_factor: byte(b, 21)?,
        mos_lq: byte(b, 22)?,
        mos_cq: byte(b, 23)?,
        rx_config: byte(b, 24)?,
        // byte 25 is reserved.
        jb_nominal_ms: be16(b, 26)?,
        jb_maximum_ms: be16(b, 28)?,
        jb_abs_max_ms: be16(b, 30)?,
    })
}

#[cfg(test)]
mod tests;
