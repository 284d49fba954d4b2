//! The fuzz targets' bodies, one function per decoder that sees untrusted bytes. They live in
//! the library so that `collector/fuzz` (cargo-fuzz, nightly) and the regression test over
//! saved inputs (`tests/integration/fuzz_regressions.rs`) run exactly the same code. Each panics only if
//! the code under test does.
#![allow(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::media::rtcp::{parse_compound, ParseOptions};
use crate::net::{Decoder, DecoderConfig};
use crate::sip::sdp::{parse, SdpLimits};
use crate::sip::{frame_stream, parse_message, SipLimits};
use crate::spool::segment::scan_bytes;
use collector_common::{rtp::RtpFields, MediaValue};
use collector_proto::v1::IngestRequest;
use prost::Message;

/// The kernel's L2..L4 parser on arbitrary frames: never panics, never reads out of bounds,
/// and the offsets it returns lie inside the frame.
///
/// The kernel's shortcut for plain UDP (`plain_udp4_ports`, `plain_udp4_into`) agrees with
/// the full parse whenever it answers: the kernel skips the parse on its word.
pub fn l2l4(data: &[u8]) {
    use collector_common::parse::{parse_slice, plain_udp4_ports_slice, plain_udp4_slice};
    let full = parse_slice(data);
    if let Ok(p) = full {
        assert!(usize::from(p.l3_off) <= data.len());
        assert!(usize::from(p.l4_off) <= data.len());
        assert!(usize::from(p.l7_off) <= data.len());
    }
    if let Some((sport, dport)) = plain_udp4_ports_slice(data) {
        assert!(
            full.is_ok(),
            "the shortcut answered for a packet the full parse refuses"
        );
        let p = full.unwrap();
        assert_eq!((p.sport, p.dport), (sport, dport));
        assert_eq!(plain_udp4_slice(data), Some(p));
    }
}

/// SIP: one datagram through the parser and every typed accessor, and the stream framer.
pub fn sip(data: &[u8]) {
    let limits = SipLimits::default();
    if let Ok(m) = parse_message(data, &limits) {
        let _ = (
            m.method(),
            m.status_code(),
            m.call_id(),
            m.cseq(),
            m.from(),
            m.to(),
        );
        let _ = m.vias().count();
        let _ = m.contacts().count();
        let _ = (
            m.expires(),
            m.reason(),
            m.session_id(),
            m.p_charging_vector(),
        );
        let _ = (m.session_expires(), m.user_agent(), m.sdp_body());
        let _ = m.reasons().count();
    }
    let _ = frame_stream(data, &limits);
}

/// SDP bodies: the parser and its helpers.
pub fn sdp(data: &[u8]) {
    if let Ok(s) = parse(data, &SdpLimits::default()) {
        for m in &s.media {
            let _ = (s.connection_for(m), s.direction_for(m), m.rtcp_port());
            let _ = m.telephone_event_pt();
        }
    }
}

/// The shared RTP update (kernel and replay) on arbitrary packet sequences: no panic, no
/// overflow trap, whatever the sequence numbers, timestamps, SSRCs and arrival times.
pub fn rtp(data: &[u8]) {
    let Some((&rate_sel, rest)) = data.split_first() else {
        return;
    };
    let rates = [0u32, 1, 8000, 16000, 48000, 90000, 192_000, u32::MAX];
    let mut v = MediaValue::new(1, rates[usize::from(rate_sel) % rates.len()], 101, 0);
    let mut now: u64 = 1;
    for chunk in rest.chunks_exact(16) {
        let mut h = [0u8; 12];
        h.copy_from_slice(&chunk[..12]);
        h[0] = 0x80;
        let dt = u64::from(u32::from_le_bytes([
            chunk[12], chunk[13], chunk[14], chunk[15],
        ]));
        now = now.wrapping_add(dt * 997);
        if let Some(f) = RtpFields::from_bytes(&h) {
            let _ = v.update(&f, 160, now);
        }
    }
    for s in &v.slots {
        let _ = (s.expected(), s.lost(), s.jitter_units());
    }
}

/// RTCP compound packets (RFC 3550 §6.4.1 validation), both framing options.
pub fn rtcp(data: &[u8]) {
    for reduced_size in [false, true] {
        if let Ok(c) = parse_compound(data, ParseOptions { reduced_size }) {
            let _ = c.report_blocks().count();
            let _ = c.cnames().count();
            let _ = c.voip_metrics().count();
        }
    }
}

/// The decoder facade: IP fragment, TCP and WebSocket reassembly over a stream of
/// arbitrary frames (length-prefixed in the input) with advancing time.
pub fn reassembly(data: &[u8]) {
    let mut d = Decoder::with_framer(DecoderConfig::default(), crate::sip::stream_framer);
    let mut out = Vec::new();
    let mut rest = data;
    let mut now = 1_000_000_000u64;
    while rest.len() > 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])) % 2048;
        rest = &rest[2..];
        let take = len.min(rest.len());
        d.feed(now, &rest[..take], None, &mut out);
        rest = &rest[take..];
        now += 7_000_000;
        out.clear();
    }
    d.expire(now + 600_000_000_000);
}

/// The spool's frame scanner on arbitrary segment bytes (a corrupt or hostile spool file).
pub fn spool_frames(data: &[u8]) {
    let _ = scan_bytes(data, 0, 1 << 20);
}

/// The server's validation of an Ingest request decoded from arbitrary wire bytes.
pub fn ingest_validation(data: &[u8]) {
    if let Ok(req) = IngestRequest::decode(data) {
        let mut agent = crate::server::auth::StreamAgent::new(crate::server::auth::Caller {
            subject: "sbc-1".into(),
            role: Some(crate::server::token::Role::Ingest),
            tenant: Some(crate::server::token::DEFAULT_TENANT.into()),
        });
        let _ = crate::server::ingest::validate_request(&req, &mut agent);
    }
}

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target by name, for the regression test.
pub const TARGETS: &[(&str, Target)] = &[
    ("l2l4", l2l4),
    ("sip", sip),
    ("sdp", sdp),
    ("rtp", rtp),
    ("rtcp", rtcp),
    ("reassembly", reassembly),
    ("spool_frames", spool_frames),
    ("ingest_validation", ingest_validation),
];
