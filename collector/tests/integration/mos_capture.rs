//! MOS from RTP alone on real captures with injected loss: the corpus' clean sipp G.711 call
//! is written again without some of the caller's RTP packets (2% at random, 2% in bursts of
//! 5, 10% at random) and replayed. The loss must show in the score the way G.107 says it
//! does: any loss lowers MOS, bursts hurt more than random loss at the same rate (BurstR),
//! and 10% loss is far from "good" (an anchor reported MOS 4.5 at 10% loss).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use collector::cli::replay::{replay_file, ReplayOptions};
use collector_proto::v1::MediaDirection;
use pcap_file::pcap::{PcapReader, PcapWriter};

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/corpus")
        .join(name)
}

/// The caller's audio packets (198.18.0.1 → 198.18.0.2:6000, PT 8): the call's stream,
/// told apart by the caller's per-call port.
fn caller_audio(data: &[u8]) -> Option<u16> {
    let p = collector_common::parse::parse_slice(data).ok()?;
    let audio = p.proto == 17
        && p.dport == 6000
        && p.src[12..] == [198, 18, 0, 1]
        && data
            .get(usize::from(p.l7_off) + 1)
            .is_some_and(|pt| pt & 0x7f == 8);
    audio.then_some(p.sport)
}

/// Copies `src` to `dst`, dropping caller audio packets for which `drop(i)` is true, `i`
/// counting them from 0 over the file. Packets among the first and last 5 of each call are
/// kept: a loss before the first or after the last packet received is invisible to any
/// receiver (RFC 3550 A.3 counts between the first and the highest sequence seen).
/// Returns how many were dropped.
fn rewrite(src: &Path, dst: &Path, mut drop: impl FnMut(usize) -> bool) -> usize {
    let mut totals = std::collections::HashMap::<u16, usize>::new();
    let mut r = PcapReader::new(std::fs::File::open(src).unwrap()).unwrap();
    while let Some(pkt) = r.next_packet() {
        if let Some(port) = caller_audio(&pkt.unwrap().data) {
            *totals.entry(port).or_default() += 1;
        }
    }
    let mut r = PcapReader::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut w = PcapWriter::with_header(std::fs::File::create(dst).unwrap(), r.header()).unwrap();
    let mut seen = std::collections::HashMap::<u16, usize>::new();
    let (mut i, mut dropped) = (0, 0);
    while let Some(pkt) = r.next_packet() {
        let pkt = pkt.unwrap();
        if let Some(port) = caller_audio(&pkt.data) {
            let k = seen.entry(port).or_default();
            let inner = *k >= 5 && *k + 5 < totals[&port];
            *k += 1;
            let d = drop(i);
            i += 1;
            if d && inner {
                dropped += 1;
                continue;
            }
        }
        w.write_packet(&pkt).unwrap();
    }
    dropped
}

/// The caller→callee audio leg of each call: (lost, loss %, MOS, model).
fn legs(path: &Path) -> Vec<(i64, f64, f64, String)> {
    let out = replay_file(path, &ReplayOptions::default(), |_| {}).unwrap();
    assert_eq!(out.cdrs.len(), 3, "the capture holds 3 calls");
    out.cdrs
        .iter()
        .map(|c| {
            let l = c
                .media
                .iter()
                .find(|l| {
                    l.direction() == MediaDirection::CallerToCallee && l.codec != "telephone-event"
                })
                .expect("audio leg");
            (l.lost, l.loss_pct, l.mos, l.quality_model.clone())
        })
        .collect()
}

#[test]
fn injected_loss_lowers_mos_and_bursts_hurt_more_than_random_loss() {
    let dir = tempfile::tempdir().unwrap();
    let src = corpus("sipp_g711_basic.pcap");
    let clean = legs(&src);
    // Deterministic "random" loss: a fixed LCG, so the test reproduces.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let random2 = dir.path().join("random2.pcap");
    let d_random = rewrite(&src, &random2, |_| rnd() < 0.02);
    let burst = dir.path().join("burst.pcap");
    // Bursts of 5 spread evenly, as many packets in all as the random loss took.
    let bursts = (d_random + 2) / 5;
    let spacing = 700 / bursts.max(1);
    let d_burst = rewrite(&src, &burst, |i| {
        i / spacing < bursts && i % spacing >= spacing - 5
    });
    assert!(
        d_burst.abs_diff(d_random) <= 2,
        "same rate: {d_burst} vs {d_random}"
    );
    let random10 = dir.path().join("random10.pcap");
    let mut rnd10 = {
        let mut s: u64 = 7;
        move || {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (s >> 33) as f64 / (1u64 << 31) as f64
        }
    };
    let d_ten = rewrite(&src, &random10, |_| rnd10() < 0.10);
    assert!(
        d_random > 0 && d_burst > 0 && d_ten > 0,
        "{d_random} {d_burst} {d_ten}"
    );

    let (random, bursty, ten) = (legs(&random2), legs(&burst), legs(&random10));
    // The loss we injected is the loss we report, exactly (summed over the calls).
    let lost = |v: &[(i64, f64, f64, String)]| v.iter().map(|l| l.0).sum::<i64>();
    assert_eq!(lost(&clean), 0);
    assert_eq!(lost(&random), d_random as i64);
    assert_eq!(lost(&bursty), d_burst as i64);
    assert_eq!(lost(&ten), d_ten as i64);
    let mean = |v: &[(i64, f64, f64, String)]| v.iter().map(|l| l.2).sum::<f64>() / v.len() as f64;
    let (m_clean, m_random, m_burst, m_ten) =
        (mean(&clean), mean(&random), mean(&bursty), mean(&ten));
    assert!(!clean[0].3.is_empty(), "the record names its model");
    assert!(m_clean > 4.0, "clean G.711 should score above 4: {m_clean}");
    assert!(
        m_random < m_clean,
        "2% random loss {m_random} vs clean {m_clean}"
    );
    assert!(
        m_burst < m_random,
        "2% in bursts of 5 {m_burst} vs 2% random {m_random}"
    );
    assert!(m_ten < 3.7, "10% loss must be well below 4, got {m_ten}");
}

/// A 30-second G.711 call written as a capture (SIP over UDP, PCMU RTP both ways every
/// 20 ms from 0.1 s, 1,500 packets each way), with the caller's packets `lose(i)` left out.
fn thirty_second_capture(path: &Path, lose: impl Fn(usize) -> bool) {
    use etherparse::PacketBuilder;
    use pcap_file::pcap::PcapPacket;
    use std::time::Duration;
    const T0_MS: u64 = 1_796_119_200_000; // 2026-12-01 10:00:00 UTC
    let (a, b) = ([198, 18, 7, 1], [198, 18, 7, 2]);
    let sdp = |ip: &str, port: u16| {
        format!(
            "v=0\r\no=x 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
        )
    };
    let sip = |first: &str, cseq: &str, to_tag: bool, body: String| {
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{first}\r\nVia: SIP/2.0/UDP 198.18.7.1:5060;branch=z9hG4bK-{}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@198.18.7.1>;tag=a1\r\n\
             To: <sip:bob@198.18.7.2>{}\r\nCall-ID: window-call@198.18.7.1\r\nCSeq: {cseq}\r\n\
             Contact: <sip:x@198.18.7.1:5060>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            cseq.replace(' ', "-"),
            if to_tag { ";tag=b1" } else { "" },
            body.len()
        )
        .into_bytes()
    };
    let invite = "INVITE sip:bob@198.18.7.2 SIP/2.0";
    // (ms, from the caller, ports, payload)
    type Datagram = (u64, bool, (u16, u16), Vec<u8>);
    let mut pkts: Vec<Datagram> = vec![
        (
            0,
            true,
            (5060, 5060),
            sip(invite, "1 INVITE", false, sdp("198.18.7.1", 40000)),
        ),
        (
            50,
            false,
            (5060, 5060),
            sip("SIP/2.0 200 OK", "1 INVITE", true, sdp("198.18.7.2", 50000)),
        ),
        (
            60,
            true,
            (5060, 5060),
            sip(
                "ACK sip:bob@198.18.7.2 SIP/2.0",
                "1 ACK",
                true,
                String::new(),
            ),
        ),
    ];
    for i in 0..1500usize {
        let t = 100 + 20 * i as u64;
        let rtp = |seq: u16, ts: u32, ssrc: u32| {
            let mut p = vec![0x80, 0];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&ssrc.to_be_bytes());
            p.extend_from_slice(&[0xff; 160]);
            p
        };
        let (seq, ts) = (1000 + i as u16, 160 * i as u32);
        if !lose(i) {
            pkts.push((t, true, (40000, 50000), rtp(seq, ts, 0x1a2b_3c4d)));
        }
        pkts.push((t + 1, false, (50000, 40000), rtp(seq, ts, 0x5e6f_7081)));
    }
    let bye = "BYE sip:bob@198.18.7.2 SIP/2.0";
    pkts.push((
        30_200,
        true,
        (5060, 5060),
        sip(bye, "2 BYE", true, String::new()),
    ));
    pkts.push((
        30_210,
        false,
        (5060, 5060),
        sip("SIP/2.0 200 OK", "2 BYE", true, String::new()),
    ));
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (ms, from_caller, (sport, dport), payload) in pkts {
        let (src, dst) = if from_caller { (a, b) } else { (b, a) };
        let mut data = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .udp(sport, dport)
            .write(&mut data, &payload)
            .unwrap();
        let len = u32::try_from(data.len()).unwrap();
        let ts = Duration::from_millis(T0_MS + ms);
        w.write_packet(&PcapPacket::new(ts, len, &data)).unwrap();
    }
}

/// The worst moment from a capture: a clean 30-second call, and the same call with every
/// tenth caller packet from 12.1 s to 18.1 s left out (30 lost, all inside the second
/// 10-second interval whatever the poll's exact instant). The minimum interval MOS is that
/// window's, clearly under the average; the clean windows score as the clean call's do.
#[test]
fn loss_confined_to_one_window_is_the_worst_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (clean_pcap, lossy_pcap) = (dir.path().join("clean.pcap"), dir.path().join("lossy.pcap"));
    thirty_second_capture(&clean_pcap, |_| false);
    thirty_second_capture(&lossy_pcap, |i| (600..900).contains(&i) && i % 10 == 0);
    let leg = |path: &Path| {
        let out = replay_file(path, &ReplayOptions::default(), |_| {}).unwrap();
        assert_eq!(out.cdrs.len(), 1);
        out.cdrs[0]
            .media
            .iter()
            .find(|l| l.direction() == MediaDirection::CallerToCallee)
            .cloned()
            .expect("caller leg")
    };
    let (c, l) = (leg(&clean_pcap), leg(&lossy_pcap));
    assert_eq!((c.lost, l.lost), (0, 30));
    assert_eq!(l.intervals.len(), 3, "{:?}", l.intervals);
    let lost: Vec<i64> = l.intervals.iter().map(|i| i.lost).collect();
    assert_eq!(lost, [0, 30, 0]);
    let worst = &l.intervals[1];
    assert_eq!(l.min_interval_start_ms, worst.start_ms);
    let t0 = 1_796_119_200_000;
    assert!(worst.start_ms <= t0 + 100 + 20 * 600);
    assert!(worst.start_ms + u64::from(worst.duration_ms) >= t0 + 100 + 20 * 899);
    assert!((l.min_interval_mos - worst.mos).abs() < 1e-12);
    assert!(
        l.min_interval_mos < l.mean_interval_mos - 0.2,
        "min {} mean {}",
        l.min_interval_mos,
        l.mean_interval_mos
    );
    for (a, b) in [
        (&l.intervals[0], &c.intervals[0]),
        (&l.intervals[2], &c.intervals[2]),
    ] {
        assert!((a.mos - b.mos).abs() < 1e-9, "{a:?} vs {b:?}");
    }
    assert!(
        c.intervals.iter().all(|i| (i.mos - c.mos).abs() < 0.05),
        "{c:?}"
    );
}
