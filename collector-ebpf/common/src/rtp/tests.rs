//! The integer, verifier-friendly update checked against a literal transcription of the
//! RFC 3550 reference code (A.1 `update_seq` for the sequence tracking, A.8 jitter in
//! floating point with exact arrival times), against counts known by construction (every
//! packet from the first one seen), and against tshark's way of counting ([`TsharkCount`])
//! where the RFC's probation deliberately is not followed.
#![allow(clippy::indexing_slicing, clippy::panic, clippy::unwrap_used)]

extern crate std;
use std::vec::Vec;

use super::reference::{RefSource, TsharkCount};
use super::*;
use crate::media::MediaValue;

/// One packet of a synthetic stream: sequence, timestamp, arrival (ns), SSRC.
#[derive(Clone, Copy)]
struct Pkt {
    seq: u16,
    ts: u32,
    at_ns: u64,
    ssrc: u32,
}

/// Deterministic pseudo-random numbers (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A 20 ms G.711 stream (160 timestamp units) starting at `seq0`, with loss, jitter,
/// reordering and duplicates drawn from `rng`.
fn stream(rng: &mut Rng, n: usize, seq0: u16, ts0: u32, ssrc: u32) -> Vec<Pkt> {
    let mut out = Vec::new();
    let base_ns: u64 = 1_000_000_000;
    for i in 0..n {
        if rng.below(100) < 3 {
            continue; // lost
        }
        let jitter_ns = rng.below(8_000_000); // up to 8 ms late
        let p = Pkt {
            seq: seq0.wrapping_add(i as u16),
            ts: ts0.wrapping_add(160 * i as u32),
            at_ns: base_ns + 20_000_000 * i as u64 + jitter_ns,
            ssrc,
        };
        out.push(p);
        if rng.below(100) < 2 {
            let mut d = p;
            d.at_ns += 1_000;
            out.push(d); // duplicate
        }
    }
    // Swap a few neighbours: reordering on the wire (arrival order is list order).
    for _ in 0..n / 50 {
        let i = rng.below(out.len() as u64 - 1) as usize;
        let (a, b) = (out[i].at_ns, out[i + 1].at_ns);
        out.swap(i, i + 1);
        out[i].at_ns = a;
        out[i + 1].at_ns = b;
    }
    out
}

/// One SSRC's references: the RFC's code, tshark's counts, and the sequence numbers as they
/// arrived.
struct Refs {
    ssrc: u32,
    rfc: RefSource,
    tshark: TsharkCount,
    seqs: Vec<u16>,
}

fn run_both(pkts: &[Pkt], clock: u32) -> (MediaValue, Vec<Refs>) {
    let mut v = MediaValue::new(1, clock, 0xff, 0);
    let mut refs: Vec<Refs> = Vec::new();
    for p in pkts {
        let f = RtpFields {
            pt: 8,
            seq: p.seq,
            ts: p.ts,
            ssrc: p.ssrc,
        };
        v.update(&f, 172, p.at_ns);
        let r = match refs.iter_mut().find(|r| r.ssrc == p.ssrc) {
            Some(r) => r,
            None => {
                refs.push(Refs {
                    ssrc: p.ssrc,
                    rfc: RefSource::new(p.seq),
                    tshark: TsharkCount::default(),
                    seqs: Vec::new(),
                });
                refs.last_mut().unwrap()
            }
        };
        r.rfc.update_seq(p.seq);
        r.rfc
            .jitter_update(p.at_ns as f64 * clock as f64 / 1e9, p.ts);
        r.tshark.update(p.seq);
        r.seqs.push(p.seq);
    }
    (v, refs)
}

fn slot(v: &MediaValue, ssrc: u32) -> &RtpStream {
    v.slots
        .iter()
        .find(|s| s.in_use != 0 && s.ssrc == ssrc)
        .unwrap()
}

/// Checks the update against the RFC's sequence tracking and jitter, and, for a stream
/// without a restart, its counts against those known by construction: every packet is
/// received, and expected runs from the first packet seen to the highest sequence number
/// (offsets from the first, a packet more than `MAX_MISORDER` behind it being reordered).
fn check(v: &MediaValue, refs: &[Refs]) {
    for r in refs {
        let (s, ssrc) = (slot(v, r.ssrc), r.ssrc);
        assert_eq!(s.max_seq, r.rfc.max_seq, "max_seq, ssrc {ssrc:#x}");
        // The same extended highest sequence number, each counted from its own base (the
        // RFC's is later when the probation moved it, and may be past a wrap).
        let ours = s.extended_max().wrapping_sub(s.base_seq);
        let rfc = (r.rfc.cycles + u32::from(r.rfc.max_seq)).wrapping_sub(r.rfc.base_seq);
        let shift = (r.rfc.base_seq as u16).wrapping_sub(s.base_seq as u16);
        assert_eq!(ours, rfc + u32::from(shift), "extended max, ssrc {ssrc:#x}");
        if s.restarts == 0 {
            let first = r.seqs[0];
            let highest = r
                .seqs
                .iter()
                .map(|q| q.wrapping_sub(first))
                .filter(|off| *off < u16::MAX - MAX_MISORDER)
                .max()
                .unwrap();
            assert_eq!(
                s.received as usize,
                r.seqs.len(),
                "received, ssrc {ssrc:#x}"
            );
            assert_eq!(
                s.expected(),
                u32::from(highest) + 1,
                "expected, ssrc {ssrc:#x}"
            );
        } else {
            // After a confirmed restart both start again at the same packet.
            assert_eq!(s.received, r.rfc.received, "received, ssrc {ssrc:#x}");
            assert_eq!(
                i64::from(s.expected()),
                r.rfc.expected(),
                "expected, ssrc {ssrc:#x}"
            );
        }
        assert_eq!(
            s.lost(),
            i64::from(s.expected()) - i64::from(s.received),
            "lost (RFC 3550 A.3), ssrc {ssrc:#x}"
        );
        let diff = (s.jitter_units() - r.rfc.jitter).abs();
        assert!(
            diff <= 1.0,
            "jitter {} vs reference {} (ssrc {ssrc:#x})",
            s.jitter_units(),
            r.rfc.jitter
        );
    }
}

/// For streams whose last packet is their highest and that have no restart: the counts are
/// tshark's.
fn check_tshark(v: &MediaValue, refs: &[Refs]) {
    for r in refs {
        let (s, ssrc) = (slot(v, r.ssrc), r.ssrc);
        assert_eq!(
            i64::from(s.received),
            i64::from(r.tshark.total),
            "received, ssrc {ssrc:#x}"
        );
        assert_eq!(
            i64::from(s.expected()),
            r.tshark.expected(),
            "expected, ssrc {ssrc:#x}"
        );
        assert_eq!(s.lost(), r.tshark.lost(), "lost, ssrc {ssrc:#x}");
    }
}

#[test]
fn random_streams_match_the_rfc_reference() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..50 {
        let seq0 = rng.next() as u16;
        let ts0 = rng.next() as u32;
        let pkts = stream(&mut rng, 2000, seq0, ts0, 0x1234_0000 + round);
        let (v, refs) = run_both(&pkts, 8000);
        check(&v, &refs);
    }
}

#[test]
fn sequence_wrap_is_counted_as_a_cycle_not_loss() {
    let pkts: Vec<_> = (0..200u32)
        .map(|i| Pkt {
            seq: 65_500u16.wrapping_add(i as u16),
            ts: i * 160,
            at_ns: 1_000_000_000 + u64::from(i) * 20_000_000,
            ssrc: 7,
        })
        .collect();
    let (v, refs) = run_both(&pkts, 8000);
    check(&v, &refs);
    check_tshark(&v, &refs);
    let s = &v.slots[0];
    assert_eq!(s.cycles, 1 << 16);
    assert_eq!(s.lost(), 0);
    // Every packet counted, the probation's first included: 200 of 200.
    assert_eq!((s.received, s.expected()), (200, 200));
    assert_eq!(s.packets, 200);
    assert_eq!(s.probation, 0, "valid after two sequential packets");
    assert_eq!(s.jitter_q8, 0, "perfectly paced stream has zero jitter");
}

#[test]
fn known_gaps_give_exact_loss_and_bursts() {
    // Drop seq 10, 20..=22 and 40..=51 (1 + 3 + 12 = 16 lost).
    let lost: Vec<u16> = core::iter::once(10).chain(20..=22).chain(40..=51).collect();
    let pkts: Vec<_> = (0..100u16)
        .filter(|s| !lost.contains(s))
        .map(|s| Pkt {
            seq: s,
            ts: u32::from(s) * 160,
            at_ns: 5_000_000_000 + u64::from(s) * 20_000_000,
            ssrc: 9,
        })
        .collect();
    let (v, refs) = run_both(&pkts, 8000);
    check(&v, &refs);
    check_tshark(&v, &refs);
    let s = &v.slots[0];
    assert_eq!(s.lost(), 16);
    assert_eq!(s.loss_bursts[0], 1, "one single loss");
    assert_eq!(s.loss_bursts[2], 1, "one burst of 3");
    assert_eq!(s.loss_bursts[9], 1, "one burst of 10+");
    // The largest gap: 13 packets' worth of time (seq 39 -> 52).
    assert_eq!(s.max_gap_ns, 13 * 20_000_000);
}

#[test]
fn duplicates_are_detected_and_counted_like_the_rfc() {
    let mut pkts: Vec<_> = (0..50u16)
        .map(|s| Pkt {
            seq: s,
            ts: u32::from(s) * 160,
            at_ns: 1_000_000_000 + u64::from(s) * 20_000_000,
            ssrc: 3,
        })
        .collect();
    let mut d = pkts[30];
    d.at_ns += 1000;
    pkts.insert(31, d);
    let mut d = pkts[10];
    d.at_ns = pkts[40].at_ns + 1000;
    pkts.insert(41, d); // a late duplicate, 30 behind
    let (v, refs) = run_both(&pkts, 8000);
    check(&v, &refs);
    check_tshark(&v, &refs);
    let s = &v.slots[0];
    assert_eq!(s.duplicates, 2);
    assert_eq!(
        s.lost(),
        -2,
        "RFC 3550 counts duplicates as received: lost goes negative"
    );
}

#[test]
fn ssrc_change_opens_a_second_slot_and_a_third_overflows() {
    let mk = |ssrc: u32, n: u16, t0: u64| -> Vec<Pkt> {
        (0..n)
            .map(|s| Pkt {
                seq: 1000 + s,
                ts: u32::from(s) * 160,
                at_ns: t0 + u64::from(s) * 20_000_000,
                ssrc,
            })
            .collect()
    };
    let mut pkts = mk(0xaaaa, 50, 1_000_000_000);
    pkts.extend(mk(0xbbbb, 50, 3_000_000_000));
    let (mut v, refs) = run_both(&pkts, 8000);
    check(&v, &refs);
    check_tshark(&v, &refs);
    let f = RtpFields {
        pt: 8,
        seq: 1,
        ts: 1,
        ssrc: 0xcccc,
    };
    assert_eq!(v.update(&f, 172, 9_000_000_000), Outcome::Overflow);
    assert_eq!(v.ssrc_overflow, 1);
}

#[test]
fn telephone_events_are_counted_but_kept_out_of_the_jitter() {
    let mut v = MediaValue::new(1, 8000, 101, 0);
    for s in 0..100u16 {
        // Audio paced perfectly; events every 10th packet with a far-off timestamp.
        let te = s % 10 == 5;
        let f = RtpFields {
            pt: if te { 101 } else { 8 },
            seq: s,
            ts: if te { 999_999 } else { u32::from(s) * 160 },
            ssrc: 5,
        };
        let out = v.update(&f, 100, 1_000_000_000 + u64::from(s) * 20_000_000);
        assert_eq!(out == Outcome::TelephoneEvent, te);
    }
    let s = &v.slots[0];
    assert_eq!(s.te_packets, 10);
    assert_eq!(s.jitter_q8, 0);
    assert_eq!(s.lost(), 0);
}

#[test]
fn unknown_clock_rate_means_no_jitter_not_a_division_by_zero() {
    let mut v = MediaValue::new(1, 0, 0xff, 0);
    for s in 0..10u16 {
        let f = RtpFields {
            pt: 96,
            seq: s,
            ts: u32::from(s) * 960,
            ssrc: 1,
        };
        v.update(&f, 80, 1_000_000_000 + u64::from(s) * 17_000_000);
    }
    assert_eq!(v.slots[0].jitter_samples, 0);
    assert_eq!(v.slots[0].packets, 10);
}

/// A 20 ms stream of seq `seq0 .. seq0 + n` without the offsets in `lost`.
fn paced(seq0: u16, n: u16, lost: &[u16], ssrc: u32) -> Vec<Pkt> {
    (0..n)
        .filter(|i| !lost.contains(i))
        .map(|i| Pkt {
            seq: seq0.wrapping_add(i),
            ts: u32::from(i) * 160,
            at_ns: 1_000_000_000 + u64::from(i) * 20_000_000,
            ssrc,
        })
        .collect()
}

/// The case: a loss among the first packets. The RFC's probation moves the base past
/// it (the RFC reference shows one loss too few), tshark does not and neither does the
/// update. Known by construction: 50 packets sent, the listed ones lost; a loss after the
/// last packet received is invisible to anyone.
#[test]
fn loss_at_the_start_and_end_is_counted_like_tshark() {
    // (offsets lost, lost as counted from the first packet received, RFC A.1's lost)
    let cases: [(&[u16], i64, i64); 7] = [
        (&[], 0, 0),
        (&[0], 0, 0),
        (&[1], 1, 0),
        (&[0, 1], 0, 0),
        (&[0, 2], 1, 0),
        (&[1, 2, 3], 3, 0),
        (&[1, 49], 1, 0),
    ];
    for (i, (lost, want, rfc)) in cases.iter().enumerate() {
        for seq0 in [1000u16, 65_534] {
            let pkts = paced(seq0, 50, lost, 0x50 + i as u32);
            let (v, refs) = run_both(&pkts, 8000);
            check(&v, &refs);
            check_tshark(&v, &refs);
            let s = &v.slots[0];
            assert_eq!(s.lost(), *want, "lost {lost:?} from {seq0}");
            assert_eq!(s.received as usize, pkts.len(), "{lost:?} from {seq0}");
            assert_eq!(
                refs[0].rfc.lost(),
                *rfc,
                "the RFC's count, {lost:?} from {seq0}"
            );
            assert!(s.duplicates == 0 && s.lost() >= 0);
        }
    }
}

/// A stream of one packet: expected 1, lost 0 (never negative without a duplicate), still
/// on probation.
#[test]
fn a_single_packet_is_expected_and_received() {
    let (v, refs) = run_both(&paced(7, 1, &[], 1), 8000);
    check_tshark(&v, &refs);
    let s = &v.slots[0];
    assert_eq!((s.expected(), s.received, s.lost()), (1, 1, 0));
    assert_eq!(s.probation, MIN_SEQUENTIAL - 1);
}

/// Hold and resume: the sender pauses (a 10 s gap, sequence numbers continuing) or restarts
/// its sequence far away after the resume; counts stay exact either way (a restart is
/// RFC 3550 A.1's: confirmed by a second sequential packet, counted from there).
#[test]
fn hold_and_resume_keep_the_counts() {
    let mut pkts = paced(500, 100, &[0, 1], 3);
    let mut resumed = paced(600, 100, &[3], 3);
    for p in &mut resumed {
        p.at_ns += 10_000_000_000;
    }
    pkts.extend(resumed);
    let (v, refs) = run_both(&pkts, 8000);
    check(&v, &refs);
    check_tshark(&v, &refs);
    assert_eq!(v.slots[0].lost(), 1);
    assert_eq!(v.slots[0].restarts, 0);

    let mut pkts = paced(500, 100, &[1], 4);
    let mut resumed = paced(40_000, 100, &[5], 4);
    for p in &mut resumed {
        p.at_ns += 10_000_000_000;
    }
    pkts.extend(resumed);
    let (v, refs) = run_both(&pkts, 8000);
    check(&v, &refs);
    let s = &v.slots[0];
    assert_eq!(s.restarts, 1);
    // Counted again from seq 40001 (40000 was the unconfirmed "bad" one): 98 of 99.
    assert_eq!((s.expected(), s.received, s.lost()), (99, 98, 1));
}

#[test]
fn a_large_jump_restarts_only_when_confirmed() {
    let mut pkts: Vec<_> = (0..20u16)
        .map(|s| Pkt {
            seq: s,
            ts: u32::from(s) * 160,
            at_ns: 1_000_000_000 + u64::from(s) * 20_000_000,
            ssrc: 4,
        })
        .collect();
    // A stray packet far ahead, then back to normal: no restart.
    pkts.push(Pkt {
        seq: 30_000,
        ts: 0,
        at_ns: 2_000_000_000,
        ssrc: 4,
    });
    for s in 20..30u16 {
        pkts.push(Pkt {
            seq: s,
            ts: u32::from(s) * 160,
            at_ns: 2_000_000_000 + u64::from(s) * 20_000_000,
            ssrc: 4,
        });
    }
    // Two sequential packets far ahead: the sender restarted.
    for k in 0..10u16 {
        pkts.push(Pkt {
            seq: 40_000 + k,
            ts: u32::from(k) * 160,
            at_ns: 3_000_000_000 + u64::from(k) * 20_000_000,
            ssrc: 4,
        });
    }
    let (v, refs) = run_both(&pkts, 8000);
    check(&v, &refs);
    assert_eq!(v.slots[0].restarts, 1);
}

#[test]
fn rtp_header_decoding_follows_rfc3550_5_1() {
    // V=2, P=0, X=0, CC=0, M=1, PT=8, seq=0x1234, ts=0x01020304, ssrc=0xdeadbeef
    let b = [
        0x80, 0x88, 0x12, 0x34, 0x01, 0x02, 0x03, 0x04, 0xde, 0xad, 0xbe, 0xef,
    ];
    let f = RtpFields::from_bytes(&b).unwrap();
    assert_eq!(f.pt, 8);
    assert_eq!(f.seq, 0x1234);
    assert_eq!(f.ts, 0x0102_0304);
    assert_eq!(f.ssrc, 0xdead_beef);
    let mut v1 = b;
    v1[0] = 0x40; // version 1
    assert!(RtpFields::from_bytes(&v1).is_none());
    assert!(RtpFields::is_rtcp_mux(200)); // SR
    assert!(!RtpFields::is_rtcp_mux(0x88));
}

#[test]
fn header_len_counts_the_csrc_list_and_the_extension() {
    // RFC 3550 §5.1: 12 bytes, 4 per CSRC; §5.3.1: 4 bytes of extension header plus its
    // length in 32-bit words.
    assert_eq!(RtpFields::header_len(0x80, 0), 12);
    assert_eq!(RtpFields::header_len(0x8f, 0), 72);
    assert_eq!(RtpFields::csrc_end(0x92), 20);
    assert!(RtpFields::has_extension(0x92));
    assert_eq!(RtpFields::header_len(0x92, 3), 20 + 4 + 12);
    // The extension length is only read with the X bit.
    assert_eq!(RtpFields::header_len(0x82, 0xffff), 20);
    assert_eq!(RtpFields::header_len(0x90, 0xffff), 12 + 4 + 4 * 0xffff);
}

/// `n` 20 ms G.711 packets from seq 0 and timestamp `ts0`, packet `i` arriving
/// `extra_ms(i)` after its nominal time (1 s + 20·i ms), in arrival order.
fn delayed(n: u16, ts0: u32, extra_ms: impl Fn(u16) -> u64) -> Vec<Pkt> {
    let mut v: Vec<Pkt> = (0..n)
        .map(|i| Pkt {
            seq: i,
            ts: ts0.wrapping_add(u32::from(i) * 160),
            at_ns: 1_000_000_000 + u64::from(i) * 20_000_000 + extra_ms(i) * 1_000_000,
            ssrc: 7,
        })
        .collect();
    v.sort_by_key(|p| p.at_ns);
    v
}

fn late_hist_of(pkts: &[Pkt], te_pt: u8) -> [u32; LATE_BUCKET_COUNT] {
    let mut v = MediaValue::new(1, 8000, te_pt, 0);
    for p in pkts {
        let f = RtpFields {
            pt: if p.ts == u32::MAX { te_pt } else { 8 },
            seq: p.seq,
            ts: p.ts,
            ssrc: p.ssrc,
        };
        v.update(&f, 172, p.at_ns);
    }
    v.slots[0].late_hist
}

// Known by construction: of 500 packets, every 10th (i % 10 == 5: 50) arrives 120 ms late
// and every 25th (i % 25 == 12: 20) 300 ms late, the rest on time, so the fastest recent
// packet is an on-time one: 430 packets 0 ms behind it (bucket ≤ 20 ms), 50 in (100, 200],
// 20 in (200, 400]. Across the 32-bit timestamp wrap too. A late duplicate is left out, and
// so is a telephone event (in place of an on-time packet: one fewer on time).
#[test]
fn playout_delay_of_known_late_packets() {
    let pattern = |i: u16| match (i % 10, i % 25) {
        (5, _) => 120,
        (_, 12) => 300,
        _ => 0,
    };
    // (`u32::MAX` marks the telephone event: no audio packet has it.)
    for ts0 in [0, u32::MAX - 160 * 250 + 1] {
        let mut pkts = delayed(500, ts0, pattern);
        assert_eq!(late_hist_of(&pkts, 0xff), [430, 0, 0, 50, 20, 0]);
        let mut dup = pkts[100];
        dup.at_ns += 150_000_000;
        pkts.insert(110, dup);
        // An on-time packet sent as a telephone event instead.
        let te = pkts.iter_mut().find(|p| p.seq == 201).unwrap();
        te.ts = u32::MAX;
        assert_eq!(late_hist_of(&pkts, 101), [429, 0, 0, 50, 20, 0]);
    }
}

// Bucket bounds are inclusive: a packet exactly 50 ms behind is played by a 50 ms buffer.
#[test]
fn late_buckets_include_their_upper_bound() {
    const MS: u64 = 1_000_000;
    assert_eq!(late_bucket(0), 0);
    assert_eq!(late_bucket(20 * MS), 0);
    assert_eq!(late_bucket(20 * MS + 1), 1);
    assert_eq!(late_bucket(50 * MS), 1);
    assert_eq!(late_bucket(50 * MS + 1), 2);
    assert_eq!(late_bucket(200 * MS), 3);
    assert_eq!(late_bucket(200 * MS + 1), 4);
    assert_eq!(late_bucket(400 * MS + 1), 5);
    assert_eq!(late_bucket(u64::MAX), 5);
}

// The anchor's two epochs: a route change adds 300 ms from packet 500 (1 s + 10.3 s) of a
// 2000-packet stream. The first epoch began with packet 0 (at 1 s); packet 500 is the first
// 10 s or more after it, so it opens the second epoch; the first epoch's minimum (the
// pre-shift transit) still anchors until the second epoch ends, at the first packet 10 s or
// more after packet 500: 1 s + 20·i ms + 300 ms ≥ 1 s + 10 300 ms + 10 s, i ≥ 1000. So
// packets 500..=999 (500) are 300 ms behind, the rest on the anchor.
#[test]
fn the_anchor_follows_a_lasting_shift_after_two_epochs() {
    let h = late_hist_of(&delayed(2000, 0, |i| if i >= 500 { 300 } else { 0 }), 0xff);
    assert_eq!(h, [1500, 0, 0, 0, 500, 0]);
}

// A pause of two epochs or more (a hold of 25 s with the RTP clock running on, the media
// resuming 100 ms slower): the anchor starts afresh at the first packet after it, so nothing
// is behind. A 15 s pause keeps the previous epoch: 100 ms behind, each packet until the
// epoch that began at the resumption ends (10 s of packets: 500).
#[test]
fn a_long_pause_forgets_the_anchor() {
    let resume = |pause_ms: u64| {
        let mut pkts = delayed(100, 0, |_| 0);
        let gap = pause_ms / 20;
        pkts.extend((0..1000u64).map(|k| Pkt {
            seq: 100 + k as u16,
            ts: (100 + gap + k) as u32 * 160,
            at_ns: 1_000_000_000 + (100 + gap + k) * 20_000_000 + 100_000_000,
            ssrc: 7,
        }));
        late_hist_of(&pkts, 0xff)
    };
    assert_eq!(resume(25_000), [1100, 0, 0, 0, 0, 0]);
    assert_eq!(resume(15_000), [600, 0, 500, 0, 0, 0]);
}
