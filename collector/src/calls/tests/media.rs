//! The media binder and the kernel emulation: the lookup order of the kernel programs
//! (`collector-ebpf/src/main.rs`: port filter, exact pair, destination endpoint, source
//! endpoint; RTCP endpoints copied; muxed RTCP by RFC 5761 §4 payload types), the binding
//! of offer/answer SDP (RFC 3264: payload types as the receiver numbered them; RTCP on
//! port + 1, RFC 3550 §11, or RFC 3605 `a=rtcp`), and removal without leaks.
use collector_common::{rtp::Outcome, MediaValue};

use super::sipgen::{addr, rtcp_rr, rtcp_rr_xr, rtp, sdp};
use crate::calls::media::{
    endpoint_key, media_key, EmulatedMedia, MediaTable, Pending, Plan, SdpMedia, UdpVerdict, Way,
};

const MS: u64 = 1_000_000;

fn side(ip: &str, port: u16, extra: &str) -> SdpMedia {
    SdpMedia::from_body(sdp(ip, port, extra).as_bytes())
        .unwrap()
        .unwrap()
}

const A: &str = "192.0.2.10:4000";
const B: &str = "198.51.100.20:5000";

fn bound(cookie: u64) -> (EmulatedMedia, Plan) {
    let mut m = EmulatedMedia::new(&[5060, 5080], 1024);
    let plan = Plan::new(
        &side("192.0.2.10", 4000, ""),
        &side("198.51.100.20", 5000, ""),
    )
    .unwrap();
    plan.install(cookie, &mut m).unwrap();
    (m, plan)
}

fn packets(m: &mut EmulatedMedia, src: &str, dst: &str) -> u64 {
    m.stream(&media_key(addr(src), addr(dst)))
        .unwrap()
        .map_or(0, |v| v.slots.iter().map(|s| s.packets).sum())
}

#[test]
fn sdp_side_reads_the_first_audio_stream() {
    let s = side("192.0.2.10", 4000, "a=ptime:30\r\na=sendonly\r\n");
    assert_eq!(s.rtp, addr(A));
    assert_eq!(s.rtcp, Some(addr("192.0.2.10:4001")));
    assert_eq!(s.te_pt, Some(101));
    assert_eq!(s.ptime, Some(30));
    assert!(s.is_hold());
    assert_eq!(s.main_codec().unwrap().name, "PCMU");
    let s = side("192.0.2.10", 4000, "a=rtcp:4500\r\n");
    assert_eq!(s.rtcp, Some(addr("192.0.2.10:4500")));
    let s = side("192.0.2.10", 4000, "a=rtcp-mux\r\n");
    assert_eq!((s.rtcp, s.mux), (None, true));
    assert!(side("0.0.0.0", 4000, "").is_hold());
    // A rejected stream (port 0) binds nothing.
    assert!(SdpMedia::from_body(sdp("192.0.2.10", 0, "").as_bytes())
        .unwrap()
        .is_none());
}

#[test]
fn plan_uses_the_receivers_payload_numbers_and_the_agreed_codec() {
    let offer = SdpMedia::from_body(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
          m=audio 4000 RTP/AVP 96 0 100\r\na=rtpmap:96 opus/48000/2\r\n\
          a=rtpmap:100 telephone-event/8000\r\n",
    )
    .unwrap()
    .unwrap();
    let answer = SdpMedia::from_body(
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.20\r\ns=-\r\nc=IN IP4 198.51.100.20\r\nt=0 0\r\n\
          m=audio 5000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
    .unwrap()
    .unwrap();
    let p = Plan::new(&offer, &answer).unwrap();
    // The answer keeps PCMU (static PT 0, 8000 Hz, RFC 3551 table 4).
    assert_eq!(p.clock_rate, 8000);
    // Packets to the callee use its 101; packets to the caller use the caller's 100.
    assert_eq!((p.te_to_callee, p.te_to_caller), (101, 100));
    assert!(!p.mux);
    assert_eq!(p.caller_rtcp, Some(addr("192.0.2.10:4001")));
    // Mux only when both sides agreed (RFC 5761 §5.1.1).
    let mux_a = side("192.0.2.10", 4000, "a=rtcp-mux\r\n");
    assert!(!Plan::new(&mux_a, &answer).unwrap().mux);
    let mux_b = side("198.51.100.20", 5000, "a=rtcp-mux\r\n");
    let p = Plan::new(&mux_a, &mux_b).unwrap();
    assert!(p.mux);
    assert_eq!((p.caller_rtcp, p.callee_rtcp), (None, None));
    // No address yet (hold or unknown): nothing to bind.
    assert!(Plan::new(&side("0.0.0.0", 4000, ""), &answer).is_none());
}

#[test]
fn install_writes_pairs_endpoints_and_rtcp_ports() {
    let (mut m, plan) = bound(42);
    assert_eq!(m.len(), (2, 4));
    let c2e = media_key(addr(A), addr(B));
    let e2c = media_key(addr(B), addr(A));
    let v = m.stream(&c2e).unwrap().unwrap();
    assert_eq!(
        (v.cookie, v.clock_rate, v.te_pt, v.flags),
        (42, 8000, 101, 0)
    );
    let ep = m.endpoint(&endpoint_key(addr(A))).unwrap().unwrap();
    // Packets to the caller flow callee → caller.
    assert_eq!((ep.to_key, ep.from_key, ep.flags), (e2c, c2e, 0));
    let rtcp = m
        .endpoint(&endpoint_key(addr("198.51.100.20:5001")))
        .unwrap()
        .unwrap();
    assert_eq!(
        rtcp.flags,
        collector_common::media::EndpointValue::FLAG_RTCP
    );
    plan.remove(42, &mut m).unwrap();
    assert!(m.is_empty());
}

#[test]
fn kernel_lookup_order() {
    let (mut m, _) = bound(1);
    let p = |seq: u16| rtp(0, seq, u32::from(seq) * 160, 0xabc);
    // 1. The exact pair.
    assert_eq!(
        m.on_udp(MS, addr(A), addr(B), &p(1)),
        UdpVerdict::Rtp(Outcome::Counted)
    );
    // 2. The destination endpoint: the callee's packets arrive from a NAT address.
    let nat = "203.0.113.7:61000";
    assert_eq!(
        m.on_udp(2 * MS, addr(nat), addr(A), &p(1)),
        UdpVerdict::Rtp(Outcome::Counted)
    );
    assert_eq!(packets(&mut m, B, A), 1, "credited to callee → caller");
    // 3. The source endpoint: the caller sends to an address it was not told about.
    assert_eq!(
        m.on_udp(3 * MS, addr(A), addr("203.0.113.8:62000"), &p(2)),
        UdpVerdict::Rtp(Outcome::Counted)
    );
    assert_eq!(packets(&mut m, A, B), 2, "credited to caller → callee");
    // Neither port announced: no lookup at all.
    assert_eq!(
        m.on_udp(
            4 * MS,
            addr("192.0.2.99:7000"),
            addr("192.0.2.98:7002"),
            &p(1)
        ),
        UdpVerdict::NoMatch
    );
    // Announced port, unknown endpoints.
    assert_eq!(
        m.on_udp(
            5 * MS,
            addr("192.0.2.99:4000"),
            addr("192.0.2.98:7002"),
            &p(1)
        ),
        UdpVerdict::NoMatch
    );
    // SIP ports never take the media path.
    assert_eq!(
        m.on_udp(6 * MS, addr("192.0.2.10:5060"), addr(B), &p(1)),
        UdpVerdict::SipPort
    );
    // RTCP on port + 1 is copied, not counted.
    assert_eq!(
        m.on_udp(
            7 * MS,
            addr("198.51.100.20:5001"),
            addr("192.0.2.10:4001"),
            &rtcp_rr(1, 2)
        ),
        UdpVerdict::Rtcp
    );
    // Not RTP version 2, or too short.
    assert_eq!(
        m.on_udp(8 * MS, addr(A), addr(B), &[0x40; 20]),
        UdpVerdict::RtpInvalid
    );
    assert_eq!(
        m.on_udp(9 * MS, addr(A), addr(B), &[0x80; 11]),
        UdpVerdict::RtpInvalid
    );
    let st = m.stats();
    assert_eq!(
        (
            st.rtp_matched,
            st.no_match,
            st.sip_port_not_sip,
            st.rtcp_copied,
            st.rtp_invalid
        ),
        (3, 2, 1, 1, 2)
    );
}

#[test]
fn muxed_rtcp_is_told_apart_by_payload_type() {
    let mut m = EmulatedMedia::new(&[5060], 64);
    let plan = Plan::new(
        &side("192.0.2.10", 4000, "a=rtcp-mux\r\n"),
        &side("198.51.100.20", 5000, "a=rtcp-mux\r\n"),
    )
    .unwrap();
    plan.install(3, &mut m).unwrap();
    assert_eq!(m.len(), (2, 2), "no separate RTCP ports");
    assert_eq!(
        m.on_udp(MS, addr(A), addr(B), &rtcp_rr(5, 6)),
        UdpVerdict::Rtcp
    );
    assert_eq!(
        m.on_udp(2 * MS, addr(A), addr(B), &rtp(0, 1, 0, 5)),
        UdpVerdict::Rtp(Outcome::Counted)
    );
    assert_eq!(
        m.on_udp(3 * MS, addr(A), addr(B), &rtp(101, 2, 0, 5)),
        UdpVerdict::Rtp(Outcome::TelephoneEvent)
    );
    assert_eq!(plan.rtcp_endpoints().count(), 2);
}

#[test]
fn a_shared_port_keeps_calls_apart_by_their_pairs_and_removal_respects_cookies() {
    // Two calls to one media-server port (the SIPp echo port 6000 of the corpus).
    let server = "198.51.100.20:6000";
    let mut m = EmulatedMedia::new(&[5060], 64);
    let p1 = Plan::new(
        &side("192.0.2.10", 6000, ""),
        &side("198.51.100.20", 6000, ""),
    )
    .unwrap();
    let p2 = Plan::new(
        &side("192.0.2.10", 6004, ""),
        &side("198.51.100.20", 6000, ""),
    )
    .unwrap();
    p1.install(1, &mut m).unwrap();
    p2.install(2, &mut m).unwrap();
    for seq in 0..5u16 {
        let pkt = rtp(8, seq, u32::from(seq) * 160, 77);
        m.on_udp(
            u64::from(seq) * 20 * MS,
            addr(server),
            addr("192.0.2.10:6000"),
            &pkt,
        );
        m.on_udp(
            u64::from(seq) * 20 * MS,
            addr(server),
            addr("192.0.2.10:6004"),
            &pkt,
        );
        m.on_udp(
            u64::from(seq) * 20 * MS,
            addr(server),
            addr("192.0.2.10:6004"),
            &pkt,
        );
    }
    assert_eq!(packets(&mut m, server, "192.0.2.10:6000"), 5);
    assert_eq!(packets(&mut m, server, "192.0.2.10:6004"), 10);
    // The server's endpoint now belongs to call 2: removing call 1 leaves it.
    p1.remove(1, &mut m).unwrap();
    let ep = m.endpoint(&endpoint_key(addr(server))).unwrap().unwrap();
    assert_eq!(ep.cookie, 2);
    assert!(m
        .stream(&media_key(addr(server), addr("192.0.2.10:6004")))
        .unwrap()
        .is_some());
    p2.remove(2, &mut m).unwrap();
    assert!(m.is_empty());
}

#[test]
fn emulation_runs_the_kernel_update_with_capture_times() {
    // RFC 3550 A.8 by hand: 8 kHz, 20 ms packets (160 units), the third 5 ms late, the
    // fourth on time: D = 40, then −40 units; J = 40/16 = 2.5, then 2.5 + (40 − 2.5)/16.
    let (mut m, _) = bound(1);
    let arrivals_ms = [0u64, 20, 45, 60];
    for (i, at) in arrivals_ms.iter().enumerate() {
        let seq = i as u16;
        m.on_udp(
            (1000 + at) * MS,
            addr(A),
            addr(B),
            &rtp(0, seq, u32::from(seq) * 160, 9),
        );
    }
    let v: MediaValue = m.stream(&media_key(addr(A), addr(B))).unwrap().unwrap();
    let s = v.slots[0];
    assert_eq!((s.packets, s.lost(), s.bytes), (4, 0, 4 * 172));
    let j = s.jitter_units();
    let want = 2.5 + (40.0 - 2.5) / 16.0;
    assert!((j - want).abs() < 0.01, "jitter {j} units, want {want}");
    assert_eq!(s.max_gap_ns, 25 * MS);
    assert_eq!((s.first_ns, s.last_ns), (1000 * MS, 1060 * MS));
}

#[test]
fn a_full_table_refuses_new_entries_and_keeps_the_old_ones() {
    // As the kernel's preallocated hash map: no eviction, the insert fails.
    let mut m = EmulatedMedia::new(&[5060], 2);
    let key = |port: u16| media_key(addr(&format!("192.0.2.10:{port}")), addr(B));
    for (i, port) in [4000u16, 4002].into_iter().enumerate() {
        m.insert_stream(key(port), MediaValue::new(i as u64, 8000, 0xff, 0))
            .unwrap();
    }
    let third = m.insert_stream(key(4004), MediaValue::new(2, 8000, 0xff, 0));
    assert!(
        matches!(third, Err(crate::calls::MediaError::Full)),
        "{third:?}"
    );
    assert_eq!(m.len().0, 2);
    assert_eq!(m.stats().refused, 1);
    assert!(m.stream(&key(4000)).unwrap().is_some());
    assert!(m.stream(&key(4004)).unwrap().is_none());
    // Replacing an installed key is not a new entry.
    m.insert_stream(key(4002), MediaValue::new(3, 8000, 0xff, 0))
        .unwrap();
}

#[test]
fn pending_entries_count_rtp_to_the_offerer_until_the_plan_takes_over() {
    let mut m = EmulatedMedia::new(&[5060], 64);
    let offer = side("192.0.2.10", 4000, "");
    let p = Pending::new(&offer).unwrap();
    assert!(p.install(1, &mut m).unwrap());
    assert_eq!(m.len(), (1, 1));
    // Anything to the offerer counts; what it sends does not (its peer is not known).
    for seq in 0..3u16 {
        assert_eq!(
            m.on_udp(
                u64::from(seq) * 20 * MS,
                addr(B),
                addr(A),
                &rtp(0, seq, u32::from(seq) * 160, 9)
            ),
            UdpVerdict::Rtp(Outcome::Counted)
        );
    }
    assert_eq!(
        m.on_udp(MS, addr(A), addr(B), &rtp(0, 0, 0, 7)),
        UdpVerdict::NoMatch
    );
    // Another call offering the same address does not take it over; installing again
    // keeps the counters.
    assert!(!p.install(2, &mut m).unwrap());
    assert!(p.read(2, &mut m).unwrap().is_none());
    assert!(p.install(1, &mut m).unwrap());
    let counted = p.read(1, &mut m).unwrap().unwrap();
    assert_eq!(counted.slots[0].packets, 3);
    // The plan's answerer → offerer stream is seeded from the pending one: until its first
    // packet a read takes the pending counts; the pending stream stays with the plan.
    let mut plan = Plan::new(&offer, &side("198.51.100.20", 5000, "")).unwrap();
    plan.seeded = Some((Way::CalleeToCaller, p.key()));
    plan.install(1, &mut m).unwrap();
    assert_eq!(m.len(), (3, 4), "the plan's endpoint stays");
    let before = plan.read(&mut m).unwrap();
    assert_eq!(before[1].1.unwrap().slots[0].packets, 3);
    for seq in 3..10u16 {
        m.on_udp(
            u64::from(seq) * 20 * MS,
            addr(B),
            addr(A),
            &rtp(0, seq, u32::from(seq) * 160, 9),
        );
    }
    let v = m.stream(&media_key(addr(B), addr(A))).unwrap().unwrap();
    assert_eq!((v.slots[0].packets, v.slots[0].lost()), (10, 0));
    assert_eq!(v.flags & MediaValue::FLAG_SEED, 0);
    assert_eq!(plan.read(&mut m).unwrap()[1].1, Some(v));
    assert_eq!(packets(&mut m, A, B), 0);
    plan.remove(1, &mut m).unwrap();
    assert!(m.is_empty());
    // Nothing to count at an unusable address; a full table refuses the entries.
    assert!(Pending::new(&side("0.0.0.0", 4000, "")).is_none());
    let mut full = EmulatedMedia::new(&[5060], 1);
    full.insert_stream(
        media_key(addr(B), addr("192.0.2.99:4000")),
        MediaValue::new(5, 8000, 0xff, 0),
    )
    .unwrap();
    assert!(p.install(1, &mut full).is_err());
}

#[test]
fn rtcp_state_keeps_the_latest_xr_block_per_ssrc_bounded() {
    let mut s = crate::calls::media::RtcpState::default();
    assert!(s.observe(1, &rtcp_rr_xr(1, 0xaa, 5, 90)));
    assert!(s.observe(2, &rtcp_rr_xr(1, 0xaa, 7, 127)));
    let m = s.voip_metrics_for(0xaa).unwrap();
    assert_eq!((m.loss_rate, m.r()), (7, None));
    assert!(s.report_for(0xaa).is_none());
    // As many SSRCs as report blocks are kept; later ones are left out, known ones updated.
    for ssrc in 0..20 {
        assert!(s.observe(3, &rtcp_rr_xr(1, ssrc, 1, 80)));
    }
    assert_eq!(s.voip_metrics.len(), 8);
    assert!(s.voip_metrics_for(19).is_none());
    assert_eq!(s.voip_metrics_for(0xaa).unwrap().loss_rate, 7);
    // A truncated XR is counted, not kept.
    let mut bad = rtcp_rr_xr(1, 0xbb, 1, 80);
    bad.truncate(bad.len() - 4);
    assert!(!s.observe(4, &bad));
    assert_eq!(s.errors, 1);
    assert!(s.voip_metrics_for(0xbb).is_none());
}
