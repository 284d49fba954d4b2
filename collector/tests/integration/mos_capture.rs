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
