#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::*;
use crate::media::testutil::{udp_datagrams, Datagram};
use proptest::prelude::*;

const STRICT: ParseOptions = ParseOptions {
    reduced_size: false,
};
const RSIZE: ParseOptions = ParseOptions { reduced_size: true };

fn frame(all: &[Datagram], n: usize) -> &Datagram {
    all.iter().find(|d| d.frame == n).unwrap()
}

fn rb(ssrc: u32, frac: u8, cum: i32, high: u32, jitter: u32, lsr: u32, dlsr: u32) -> ReportBlock {
    ReportBlock {
        ssrc,
        fraction_lost: frac,
        cumulative_lost: cum,
        ext_highest_seq: high,
        jitter,
        lsr,
        dlsr,
    }
}

fn sr<'c>(c: &'c Compound<'_>) -> &'c SenderReport {
    match &c.packets[0] {
        Packet::SenderReport(sr) => sr,
        other => panic!("expected SR, got {other:?}"),
    }
}

fn rr<'c>(c: &'c Compound<'_>) -> &'c ReceiverReport {
    match &c.packets[0] {
        Packet::ReceiverReport(rr) => rr,
        other => panic!("expected RR, got {other:?}"),
    }
}

// Reference values for the corpus files, produced with tshark 4.0.17:
//   tshark -n -r FILE -Y rtcp -T fields -E separator=/t -E occurrence=a -E aggregator=, \
//     -e frame.number -e rtcp.pt -e rtcp.senderssrc -e rtcp.ssrc.identifier \
//     -e rtcp.ssrc.fraction -e rtcp.ssrc.cum_nr -e rtcp.ssrc.high_seq -e rtcp.ssrc.jitter \
//     -e rtcp.ssrc.lsr -e rtcp.ssrc.dlsr -e rtcp.sdes.text
//   tshark -n -r FILE -Y rtcp -T fields -e frame.number -e frame.time_epoch -e rtcp.rc \
//     -e rtcp.timestamp.ntp.msw -e rtcp.timestamp.ntp.lsw -e rtcp.timestamp.rtp \
//     -e rtcp.sender.packetcount -e rtcp.sender.octetcount -e rtcp.sdes.type
// (rtcp.ssrc.identifier also lists the SDES chunk SSRC, which is the sender's.)
//
// ndpi_rtcp_multiple_pkts_in_the_same_datagram.pcap:
// 1  200,202 0x5d931534 0x00000000,0x5d931534 0 1 0     0 0          0      5d931534,FreeSWITCH.org -- Come to ClueCon.com
// 2  201,202 0x01932db4 0x00000000,0x01932db4 1 1 48834 1 0          0      1932db4,...
// 3  200,202 0x5d931534 0x01932db4,0x5d931534 0 1 0     0 0          0      5d931534,...
// 4  201,202 0x01932db4 0x5d931534,0x01932db4 0 1 49035 6 3245362529 263452 1932db4,...
// 5  200,202 0x5d931534 0x01932db4,0x5d931534 0 1 0     0 0          0      5d931534,...
// sender info (frames 1, 3, 5): msw 3711615344/3711615348/3711615352,
//   lsw 1298222584/1384156290/1469918197, rtp 32000/64160/96320, packets 200/401/602,
//   octets 32000/64160/96320; SDES types 1,7,0 (CNAME, NOTE, END).
#[test]
fn ndpi_compound_datagrams_match_tshark() {
    let all = udp_datagrams("ndpi_rtcp_multiple_pkts_in_the_same_datagram.pcap");
    assert_eq!(all.len(), 5);
    let sender = 0x5d93_1534;
    let receiver = 0x0193_2db4;
    let sr_frames = [
        (
            1,
            3_711_615_344,
            1_298_222_584,
            32_000,
            200,
            rb(0, 0, 1, 0, 0, 0, 0),
        ),
        (
            3,
            3_711_615_348,
            1_384_156_290,
            64_160,
            401,
            rb(receiver, 0, 1, 0, 0, 0, 0),
        ),
        (
            5,
            3_711_615_352,
            1_469_918_197,
            96_320,
            602,
            rb(receiver, 0, 1, 0, 0, 0, 0),
        ),
    ];
    for (n, msw, lsw, rtp, count, block) in sr_frames {
        let c = parse_compound(&frame(&all, n).payload, STRICT).unwrap();
        assert_eq!(c.packets.len(), 2, "frame {n}");
        let s = sr(&c);
        assert_eq!(s.ssrc, sender);
        assert_eq!(
            s.info,
            SenderInfo {
                ntp_msw: msw,
                ntp_lsw: lsw,
                rtp_ts: rtp,
                packet_count: count,
                octet_count: rtp,
            }
        );
        assert_eq!(s.reports, vec![block], "frame {n}");
        let cnames: Vec<_> = c.cnames().collect();
        assert_eq!(cnames, vec![(sender, &b"5d931534"[..])]);
        match &c.packets[1] {
            Packet::SourceDescription(chunks) => assert_eq!(chunks[0].other_items, 1),
            other => panic!("{other:?}"),
        }
    }
    let rr_frames = [
        (2, rb(0, 1, 1, 48_834, 1, 0, 0)),
        (4, rb(sender, 0, 1, 49_035, 6, 3_245_362_529, 263_452)),
    ];
    for (n, block) in rr_frames {
        let c = parse_compound(&frame(&all, n).payload, STRICT).unwrap();
        let r = rr(&c);
        assert_eq!(r.ssrc, receiver);
        assert_eq!(r.reports, vec![block], "frame {n}");
        assert_eq!(
            c.cnames().collect::<Vec<_>>(),
            vec![(receiver, &b"1932db4"[..])]
        );
    }
}

// Frame 4's LSR (0xc1704d61) is the middle of frame 1's SR NTP timestamp (msw 0xdd3ac170,
// lsw 0x4d614df8). Frame times (tshark frame.time_epoch): 1502626544.321377 and
// 1502626548.349503. By hand: 4.028126 s − 263452/65536 s (4.019958496 s) = 8.167504 ms.
#[test]
fn ndpi_round_trip_from_lsr_dlsr() {
    let all = udp_datagrams("ndpi_rtcp_multiple_pkts_in_the_same_datagram.pcap");
    let f1 = frame(&all, 1);
    let f4 = frame(&all, 4);
    let c1 = parse_compound(&f1.payload, STRICT).unwrap();
    let c4 = parse_compound(&f4.payload, STRICT).unwrap();
    let block = rr(&c4).reports[0];
    assert_eq!(sr(&c1).info.ntp_middle32(), block.lsr);
    let rtt = block.round_trip_observed(f1.time_ns, f4.time_ns).unwrap();
    assert_eq!(rtt.as_nanos(), 8_167_504);
}

// heplify_sip_ipv4_tcp.pcap, same commands:
// 14 200,202 0x42f433d4 0x42f433d4 (no report block)         rc 0 msw 2099493 lsw 811748763
//    rtp 1884819849 packets 1 octets 160, CNAME "c0" (rtcp.sdes.length 3: the sender counts
//    a terminating NUL, which tshark does not show and we trim)
// 17 200,202 0x5a3361b3 0x42f433d4,0x5a3361b3 0 0 54340 0 153432162 1048
//    rc 1 msw 2508829 lsw 2572685233 rtp 95878790 packets 1 octets 160, CNAME "c0"
// With `-o rtcp.show_roundtrip_calculation:TRUE -o rtcp.roundtrip_min_threshhold:0` tshark
// reports for frame 17: "Frame matching Last SR timestamp: 14", "Time since Last SR
// captured: 17" ms, "Roundtrip Delay(ms): 2" (it works in whole ms: 17 − 15). By hand from
// frame.time_epoch 1311857690.954947 / .972317: 17.370 ms − 1048/65536 s (15.991 ms)
// = 1.378790 ms.
#[test]
fn heplify_sender_reports_match_tshark() {
    let all = udp_datagrams("heplify_sip_ipv4_tcp.pcap");
    let f14 = frame(&all, 14);
    let f17 = frame(&all, 17);
    let c14 = parse_compound(&f14.payload, STRICT).unwrap();
    let c17 = parse_compound(&f17.payload, STRICT).unwrap();
    let s14 = sr(&c14);
    assert_eq!(s14.ssrc, 0x42f4_33d4);
    assert_eq!(
        s14.info,
        SenderInfo {
            ntp_msw: 2_099_493,
            ntp_lsw: 811_748_763,
            rtp_ts: 1_884_819_849,
            packet_count: 1,
            octet_count: 160,
        }
    );
    assert!(s14.reports.is_empty());
    assert_eq!(
        c14.cnames().collect::<Vec<_>>(),
        vec![(0x42f4_33d4, &b"c0"[..])]
    );

    let s17 = sr(&c17);
    assert_eq!(s17.ssrc, 0x5a33_61b3);
    assert_eq!(s17.info.ntp_msw, 2_508_829);
    assert_eq!(s17.info.ntp_lsw, 2_572_685_233);
    assert_eq!(s17.info.rtp_ts, 95_878_790);
    assert_eq!(
        s17.reports,
        vec![rb(0x42f4_33d4, 0, 0, 54_340, 0, 153_432_162, 1048)]
    );
    let blocks: Vec<_> = c17.report_blocks().collect();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, 0x5a33_61b3);

    let block = s17.reports[0];
    assert_eq!(s14.info.ntp_middle32(), block.lsr);
    let rtt = block.round_trip_observed(f14.time_ns, f17.time_ns).unwrap();
    assert_eq!(rtt.as_nanos(), 1_378_790);
    // tshark's whole-millisecond answer is 2 ms.
    assert!((rtt.as_secs_f64() * 1000.0 - 2.0).abs() < 1.0);
}

// sngrep_aaa.pcap frame 633: tshark -V shows SR 0x3796cb71 with RC 0, NTP msw 1120470986,
// lsw 1593492995, RTP 9411, 9 packets, 1548 octets; SDES chunk 0x3796cb71 with CNAME
// (29 bytes) and TOOL "SIPPS"; BYE 0x3796cb71, reason "session shutdown" (16 bytes).
#[test]
fn sngrep_sr_sdes_bye_match_tshark() {
    let all = udp_datagrams("sngrep_aaa.pcap");
    let c = parse_compound(&frame(&all, 633).payload, STRICT).unwrap();
    assert_eq!(c.packets.len(), 3);
    let s = sr(&c);
    assert_eq!(s.ssrc, 0x3796_cb71);
    assert_eq!(s.info.ntp_msw, 1_120_470_986);
    assert_eq!(s.info.ntp_lsw, 1_593_492_995);
    assert_eq!(s.info.rtp_ts, 9411);
    assert_eq!(s.info.packet_count, 9);
    assert_eq!(s.info.octet_count, 1548);
    let cnames: Vec<_> = c.cnames().collect();
    assert_eq!(cnames.len(), 1);
    assert_eq!(cnames[0].1.len(), 29);
    match &c.packets[2] {
        Packet::Bye(b) => {
            assert_eq!(b.ssrcs, vec![0x3796_cb71]);
            assert_eq!(b.reason, Some(&b"session shutdown"[..]));
        }
        other => panic!("{other:?}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// Crafted RR + SDES with padding on the last packet. tshark 4.0.17 decodes it (written into a
// pcap, `-d udp.port==40001,rtcp -V`) as: RR 0x0badf00d, block 0xcafebabe, fraction 64/256,
// cumulative lost -2, extended highest 65541 (cycles 1, highest 5), jitter 1234,
// LSR 0x12345678, DLSR 98304 (1500 ms); SDES padding True, CNAME "ab", padding count 4.
const RR_PADDED: &str = "81c900070badf00dcafebabe40fffffe00010005000004d21234567800018000\
                         a1ca00040badf00d010261620000000000000004";

#[test]
fn negative_cumulative_loss_and_padding_match_tshark() {
    let buf = hex(RR_PADDED);
    let c = parse_compound(&buf, STRICT).unwrap();
    let r = rr(&c);
    assert_eq!(r.ssrc, 0x0bad_f00d);
    assert_eq!(
        r.reports,
        vec![rb(0xcafe_babe, 64, -2, 65_541, 1234, 0x1234_5678, 98_304)]
    );
    assert_eq!(r.reports[0].dlsr_duration(), Duration::from_millis(1500));
    assert_eq!(r.reports[0].fraction_lost_ratio(), 0.25);
    assert_eq!(r.reports[0].jitter_ms(8000), Some(154.25));
    assert_eq!(r.reports[0].jitter_ms(0), None);
    assert_eq!(
        c.cnames().collect::<Vec<_>>(),
        vec![(0x0bad_f00d, &b"ab"[..])]
    );
}

// Crafted RR + XR (a Receiver Reference Time block, BT 4, then a VoIP Metrics block, BT 7).
// tshark 4.0.17 decodes block 2 as: identifier 0x5d931534, fraction lost 13/256, discarded
// 5/256, burst density 64, gap density 2, burst duration 120 ms, gap duration 4500 ms,
// round trip 84 ms, end system 45 ms, signal -22, noise -75, RERL unavailable, Gmin 16,
// R 82, external R unavailable, MOS-LQ 3.8, MOS-CQ 3.6, PLC standard (3), JB adaptive (3),
// JB rate 7, nominal 60, maximum 120, absolute maximum 400.
const RR_XR: &str = "80c900011122334480cf000d01932db404000002dd3ac1704d614df8070000085d931534\
                     0d054002007811940054002deab57f10527f2624f700003c00780190";

#[test]
fn xr_voip_metrics_match_tshark() {
    let buf = hex(RR_XR);
    let c = parse_compound(&buf, STRICT).unwrap();
    assert_eq!(c.packets.len(), 2);
    let xr = match &c.packets[1] {
        Packet::ExtendedReport(xr) => xr,
        other => panic!("{other:?}"),
    };
    assert_eq!(xr.ssrc, 0x0193_2db4);
    assert_eq!(xr.skipped_blocks, 1);
    assert_eq!(xr.voip_metrics.len(), 1);
    let m = xr.voip_metrics[0];
    assert_eq!(m.ssrc, 0x5d93_1534);
    assert_eq!((m.loss_rate, m.discard_rate), (13, 5));
    assert_eq!((m.burst_density, m.gap_density), (64, 2));
    assert_eq!((m.burst_duration_ms, m.gap_duration_ms), (120, 4500));
    assert_eq!((m.round_trip_delay_ms, m.end_system_delay_ms), (84, 45));
    assert_eq!((m.signal_dbm0(), m.noise_dbm0()), (Some(-22), Some(-75)));
    assert_eq!(m.rerl_db(), None);
    assert_eq!(m.gmin, 16);
    assert_eq!((m.r(), m.ext_r()), (Some(82), None));
    assert_eq!((m.mos_lq_value(), m.mos_cq_value()), (Some(3.8), Some(3.6)));
    assert_eq!(m.plc(), Plc::Standard);
    assert_eq!(m.jitter_buffer_kind(), JitterBufferKind::Adaptive);
    assert_eq!(m.jitter_buffer_rate(), 7);
    assert_eq!(
        (m.jb_nominal_ms, m.jb_maximum_ms, m.jb_abs_max_ms),
        (60, 120, 400)
    );
    assert!((m.loss_pct() - 13.0 * 100.0 / 256.0).abs() < 1e-12);
    assert_eq!(c.voip_metrics().count(), 1);
}

// RFC 3550 §6.4.1 example numbers: LSR 0xb705:2000 (46853.125 s), DLSR 0x0005:4000
// (5.250 s), A 0xb710:8000 (46864.500 s) → RTT = 6.125 s.
#[test]
fn round_trip_rfc3550_example() {
    let block = rb(1, 0, 0, 0, 0, 0xb705_2000, 0x0005_4000);
    assert_eq!(
        block.round_trip(0xb710_8000),
        Some(Duration::from_millis(6125))
    );
    // Negative (clocks disagree) and no SR yet: no answer.
    assert_eq!(block.round_trip(0xb705_2000), None);
    assert_eq!(rb(1, 0, 0, 0, 0, 0, 5).round_trip(0xb710_8000), None);
}

// NTP middle 32 bits of a Unix time: 2017-08-13 12:15:44.302265999 UTC is NTP msw
// 0xdd3ac170, lsw 0x4d614df8 (tshark's rendering of the ndpi SR above), middle 0xc1704d61.
#[test]
fn ntp_middle32_of_unix_time() {
    let unix_ns = (0xdd3a_c170u64 - 2_208_988_800) * 1_000_000_000 + 302_265_999;
    assert_eq!(ntp_middle32_from_unix_ns(unix_ns), 0xc170_4d61);
}

#[test]
fn reduced_size_is_an_option() {
    // A lone SDES packet: CNAME "ab".
    let sdes = hex("81ca00030badf00d0102616200000000");
    assert_eq!(
        parse_compound(&sdes, STRICT),
        Err(RtcpError::FirstNotReport { pt: 202 })
    );
    let c = parse_compound(&sdes, RSIZE).unwrap();
    assert_eq!(
        c.cnames().collect::<Vec<_>>(),
        vec![(0x0bad_f00d, &b"ab"[..])]
    );
    // A lone feedback packet (RFC 4585 PSFB PLI: sender + media SSRC).
    let pli = hex("81ce00020000000100000002");
    let c = parse_compound(&pli, RSIZE).unwrap();
    assert_eq!(c.packets, vec![Packet::Other { pt: 206, len: 8 }]);
}

#[test]
fn app_packet_is_identified_and_skipped() {
    let buf = hex("80c9000100000001\
                   83cc00040000000158595a21deadbeefcafebabe");
    let c = parse_compound(&buf, STRICT).unwrap();
    assert_eq!(
        c.packets[1],
        Packet::App {
            subtype: 3,
            ssrc: 1,
            name: *b"XYZ!"
        }
    );
}

// Lying lengths and counts: each must come back as the specific typed error.
#[test]
fn lying_lengths_are_typed_errors() {
    let rr_ok = "80c9000100000001";
    let cases: Vec<(String, RtcpError)> = vec![
        (String::new(), RtcpError::Empty),
        // Length 2 words (12 bytes) but only 8 present.
        (
            "80c9000200000001".into(),
            RtcpError::LengthOverrun {
                offset: 0,
                declared: 12,
                available: 8,
            },
        ),
        // Two stray bytes after a valid RR: the lengths do not sum to the datagram.
        (
            format!("{rr_ok}8000"),
            RtcpError::TruncatedHeader {
                offset: 8,
                available: 2,
            },
        ),
        // Version 1.
        (
            "40c9000100000001".into(),
            RtcpError::BadVersion {
                offset: 0,
                version: 1,
            },
        ),
        // Second packet version 3.
        (
            format!("{rr_ok}c0c9000100000001"),
            RtcpError::BadVersion {
                offset: 8,
                version: 3,
            },
        ),
        // Compound starting with BYE.
        (
            "81cb000100000001".into(),
            RtcpError::FirstNotReport { pt: 203 },
        ),
        // RR announcing 1 report block in a 1-word body.
        (
            "81c9000100000001".into(),
            RtcpError::BadBody {
                offset: 0,
                pt: PT_RR,
                what: "report count exceeds the packet",
            },
        ),
        // SR whose length (6 words) leaves room for the sender info but not its 2 blocks.
        (
            format!("82c80006{}", "00".repeat(24)),
            RtcpError::BadBody {
                offset: 0,
                pt: PT_SR,
                what: "report count exceeds the packet",
            },
        ),
        // SR too short for its sender info.
        (
            "80c800020000000100000000".into(),
            RtcpError::BadBody {
                offset: 0,
                pt: PT_SR,
                what: "sender info truncated",
            },
        ),
        // Padding on the first of two packets.
        (
            format!("a0c9000100000004{rr_ok}"),
            RtcpError::PaddingNotLast { offset: 0 },
        ),
        // Padding count 0.
        (
            "a0c9000100000000".into(),
            RtcpError::BadPadding { offset: 0, pad: 0 },
        ),
        // Padding count larger than the body.
        (
            "a0c9000100000009".into(),
            RtcpError::BadPadding { offset: 0, pad: 9 },
        ),
        // SDES item claiming 200 bytes.
        (
            format!("{rr_ok}81ca00030badf00d01c8616200000000"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_SDES,
                what: "sdes chunk or item runs past the packet",
            },
        ),
        // SDES announcing 2 chunks, holding 1.
        (
            format!("{rr_ok}82ca00030badf00d0102616200000000"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_SDES,
                what: "sdes chunk or item runs past the packet",
            },
        ),
        // SDES chunk without END before the packet ends.
        (
            format!("{rr_ok}81ca00020badf00d01026162"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_SDES,
                what: "sdes chunk or item runs past the packet",
            },
        ),
        // BYE announcing 3 sources, holding 1.
        (
            format!("{rr_ok}83cb000100000001"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_BYE,
                what: "bye source count or reason exceeds the packet",
            },
        ),
        // BYE reason length 20 in a 3-byte tail.
        (
            format!("{rr_ok}81cb00020000000114616263"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_BYE,
                what: "bye source count or reason exceeds the packet",
            },
        ),
        // APP without its name.
        (
            format!("{rr_ok}80cc000100000001"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_APP,
                what: "app packet shorter than ssrc and name",
            },
        ),
        // XR block claiming 9 words in a 1-word remainder.
        (
            format!("{rr_ok}80cf00030000000104000009aaaaaaaa"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_XR,
                what: "xr block length exceeds the packet",
            },
        ),
        // XR VoIP Metrics block with length 1 instead of 8.
        (
            format!("{rr_ok}80cf00030000000107000001aaaaaaaa"),
            RtcpError::BadBody {
                offset: 8,
                pt: PT_XR,
                what: "voip metrics block length is not 8",
            },
        ),
    ];
    for (h, want) in cases {
        let buf = hex(&h);
        assert_eq!(parse_compound(&buf, STRICT), Err(want), "input {h}");
    }
}

#[test]
fn too_many_packets_is_bounded() {
    let buf = hex(&"80c9000100000001".repeat(MAX_PACKETS + 1));
    assert_eq!(
        parse_compound(&buf, STRICT),
        Err(RtcpError::TooManyPackets { limit: MAX_PACKETS })
    );
    let ok = hex(&"80c9000100000001".repeat(MAX_PACKETS));
    assert_eq!(
        parse_compound(&ok, STRICT).unwrap().packets.len(),
        MAX_PACKETS
    );
}

#[test]
fn errors_read_in_lower_case() {
    let e = RtcpError::FirstNotReport { pt: 203 };
    assert_eq!(
        e.to_string(),
        "rtcp compound starts with packet type 203, expected sr or rr"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_compound(&buf, STRICT);
        let _ = parse_compound(&buf, RSIZE);
    }

    // Bytes behind a plausible header reach the body parsers more often than pure noise.
    #[test]
    fn plausible_headers_never_panic(
        b0 in 0x80u8..0xc0,
        pt in prop::sample::select(vec![200u8, 201, 202, 203, 204, 205, 207]),
        len in 0u16..40,
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut buf = vec![b0, pt];
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(&tail);
        let _ = parse_compound(&buf, RSIZE);
    }
}
