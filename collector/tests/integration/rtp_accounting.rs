//! RTP accounting against tshark's `rtp,streams`, stream by stream: the corpus' 12
//! concurrent SIPp G.711 calls, clean and with 2 % and 10 % of their RTP dropped (some
//! streams lose their first, second or last packets; `testdata/corpus/sipp/drop_rtp.py`),
//! replayed through the same code path as `collector replay`. For every row of tshark
//! 4.0.17's stream table (the `.oracle.txt` next to each capture) there must be exactly one
//! media leg with the same SSRC, addresses and ports, with packets, expected (tshark's
//! packets + lost) and lost equal, and mean and max jitter within 5 % (0.01 ms floor: tshark
//! prints three decimals); and every leg must be one of those rows.
//!
//! tshark counts every packet of a stream from the first one it saw (expected = last
//! sequence − first sequence + 1, lost = expected − packets), so a loss among the first
//! packets is counted, where RFC 3550 A.1's probation alone would leave it out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::path::PathBuf;

use collector::cli::replay::{replay_file, ReplayOptions};
use collector_proto::v1::MediaLeg;
use pcap_file::pcap::PcapReader;

fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/corpus")
        .join(name)
}

/// One row of tshark's `rtp,streams` table.
#[derive(Debug)]
struct Row {
    src: String,
    sport: u32,
    dst: String,
    dport: u32,
    ssrc: u32,
    packets: u64,
    lost: i64,
    mean_jitter: f64,
    max_jitter: f64,
}

fn rows(name: &str) -> Vec<Row> {
    let p = corpus(&format!("{name}.oracle.txt"));
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("test data {p:?}: {e}"));
    let table = text
        .split("RTP Streams")
        .nth(1)
        .unwrap_or_else(|| panic!("{p:?}: no rtp,streams table"));
    table
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with('='))
        .map(|l| {
            let mut t: Vec<&str> = l.split_whitespace().collect();
            if t.last() == Some(&"X") {
                t.pop();
            }
            let n = t.len();
            // Start End Src Port Dst Port SSRC Payload Pkts Lost (pct) MinΔ MeanΔ MaxΔ
            // MinJ MeanJ MaxJ
            Row {
                src: t[2].to_owned(),
                sport: t[3].parse().unwrap(),
                dst: t[4].to_owned(),
                dport: t[5].parse().unwrap(),
                ssrc: u32::from_str_radix(t[6].trim_start_matches("0x"), 16).unwrap(),
                packets: t[n - 9].parse().unwrap(),
                lost: t[n - 8].parse().unwrap(),
                mean_jitter: t[n - 2].parse().unwrap(),
                max_jitter: t[n - 1].parse().unwrap(),
            }
        })
        .collect()
}

fn close(ours: f64, theirs: f64) -> bool {
    (ours - theirs).abs() <= (0.05 * theirs.abs()).max(0.01)
}

fn same_stream(l: &MediaLeg, r: &Row) -> bool {
    l.ssrc == r.ssrc
        && l.src_ip == r.src
        && l.src_port == r.sport
        && l.dst_ip == r.dst
        && l.dst_port == r.dport
}

/// Replays `name` and compares every stream with its row; returns one line per difference.
fn check(name: &str, want_rows: usize) -> Vec<String> {
    let out = replay_file(&corpus(name), &ReplayOptions::default(), |_| {}).unwrap();
    assert_eq!(out.cdrs.len(), 12, "{name}: calls");
    let legs: Vec<&MediaLeg> = out.cdrs.iter().flat_map(|c| &c.media).collect();
    let rows = rows(name);
    assert_eq!(rows.len(), want_rows, "{name}: rows of rtp,streams");
    let mut failures = Vec::new();
    for r in &rows {
        let found: Vec<&&MediaLeg> = legs.iter().filter(|l| same_stream(l, r)).collect();
        let [l] = found[..] else {
            failures.push(format!("{name}: {} legs for {r:?}", found.len()));
            continue;
        };
        let expected = r.packets.checked_add_signed(r.lost).unwrap();
        let mut diff = Vec::new();
        if l.packets != r.packets {
            diff.push(format!("packets {} vs {}", l.packets, r.packets));
        }
        if l.expected != expected {
            diff.push(format!("expected {} vs {expected}", l.expected));
        }
        if l.lost != r.lost {
            diff.push(format!("lost {} vs {}", l.lost, r.lost));
        }
        if !close(l.mean_jitter_ms, r.mean_jitter) {
            diff.push(format!(
                "mean jitter {} vs {}",
                l.mean_jitter_ms, r.mean_jitter
            ));
        }
        if !close(l.max_jitter_ms, r.max_jitter) {
            diff.push(format!(
                "max jitter {} vs {}",
                l.max_jitter_ms, r.max_jitter
            ));
        }
        if !diff.is_empty() {
            failures.push(format!(
                "{name}: {}:{} -> {}:{} {:#x} ({}): {}",
                r.src,
                r.sport,
                r.dst,
                r.dport,
                r.ssrc,
                l.codec,
                diff.join(", ")
            ));
        }
    }
    for l in &legs {
        if !rows.iter().any(|r| same_stream(l, r)) {
            failures.push(format!("{name}: leg not in rtp,streams: {l:?}"));
        }
    }
    // RFC 3550 A.3: lost is negative only where duplicates explain it.
    for l in &legs {
        if l.lost < 0 && l.duplicates < l.lost.unsigned_abs() {
            failures.push(format!(
                "{name}: lost {} with {} duplicates: {}:{} -> {}:{}",
                l.lost, l.duplicates, l.src_ip, l.src_port, l.dst_ip, l.dst_port
            ));
        }
    }
    failures
}

/// 12 calls × (G.711A both ways + the DTMF event stream both ways).
const ROWS: usize = 48;

#[test]
fn clean_concurrent_calls_match_tshark() {
    let f = check("sipp_g711_concurrent12.pcap", ROWS);
    assert!(
        f.is_empty(),
        "{} streams differ:\n{}",
        f.len(),
        f.join("\n")
    );
}

#[test]
fn two_percent_loss_matches_tshark_on_every_stream() {
    let f = check("sipp_g711_concurrent12_loss2.pcap", ROWS);
    assert!(
        f.is_empty(),
        "{} streams differ:\n{}",
        f.len(),
        f.join("\n")
    );
}

#[test]
fn ten_percent_loss_matches_tshark_on_every_stream() {
    let f = check("sipp_g711_concurrent12_loss10.pcap", ROWS);
    assert!(
        f.is_empty(),
        "{} streams differ:\n{}",
        f.len(),
        f.join("\n")
    );
}

/// Sequence numbers of each G.711A stream of a capture, in capture order, keyed by
/// (source address, source port, destination port): read from the packets, independently of the collector.
fn audio_seqs(name: &str) -> HashMap<([u8; 16], u16, u16), Vec<u16>> {
    let p = corpus(name);
    let mut r =
        PcapReader::new(std::fs::File::open(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))).unwrap();
    let mut out = HashMap::new();
    while let Some(pkt) = r.next_packet() {
        let pkt = pkt.unwrap();
        let Ok(h) = collector_common::parse::parse_slice(&pkt.data) else {
            continue;
        };
        let rtp = &pkt.data[usize::from(h.l7_off)..];
        let audio = h.proto == 17
            && (h.sport == 6000 || h.dport == 6000)
            && rtp.len() >= 12
            && rtp[0] >> 6 == 2
            && rtp[1] & 0x7f == 8;
        if audio {
            out.entry((h.src, h.sport, h.dport))
                .or_insert_with(Vec::new)
                .push(u16::from_be_bytes([rtp[2], rtp[3]]));
        }
    }
    out
}

/// The lossy copies hold the cases the test is about: against the clean capture, some
/// audio streams lost their first packet, some their second (the first kept), some their
/// last; `drop_rtp.py` forces these by stream number.
#[test]
fn lossy_copies_lose_first_second_and_last_packets() {
    let clean = audio_seqs("sipp_g711_concurrent12.pcap");
    assert_eq!(clean.len(), 24, "12 calls, audio both ways");
    for name in [
        "sipp_g711_concurrent12_loss2.pcap",
        "sipp_g711_concurrent12_loss10.pcap",
    ] {
        let lossy = audio_seqs(name);
        let (mut first, mut second, mut last) = (0, 0, 0);
        for (k, c) in &clean {
            let l = &lossy[k];
            first += usize::from(l[0] != c[0]);
            second += usize::from(l[0] == c[0] && l[1] != c[1]);
            last += usize::from(l.last() != c.last());
        }
        assert!(
            first >= 3 && second >= 3 && last >= 3,
            "{name}: first {first}, second {second}, last {last}"
        );
    }
}
