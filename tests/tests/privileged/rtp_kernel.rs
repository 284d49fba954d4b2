//! RTP statistics computed in the kernel equal the RFC 3550 reference computed over the same
//! packets, with the kernel's own arrival times (every header sampled to userspace):
//! known gaps, reordering, duplicates, a sequence wrap and a timestamp wrap, an SSRC change,
//! telephone events.
//! Also: endpoint entries (NAT'd far end), RTCP copy on port+1 and with rtcp-mux.
use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use collector::capture::{decode_event, map_addr, Capture, CaptureOptions, XdpModeArg};
use collector_common::{
    media::{EndpointKey, EndpointValue},
    rtp::reference::RefSource,
    EventKind, MediaKey, MediaValue,
};
use collector_tests::VethPair;

const CLOCK: u32 = 8000;
const TE_PT: u8 = 101;
/// First RTP timestamp of SSRC 1: 150 packets of 16 ticks before the 32-bit wrap.
const TS_WRAP_START: u32 = u32::MAX - 150 * 16 + 1;

#[derive(Clone, Copy)]
struct Rtp {
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

impl Rtp {
    fn bytes(&self) -> Vec<u8> {
        let mut b = vec![0x80, self.pt];
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.ts.to_be_bytes());
        b.extend_from_slice(&self.ssrc.to_be_bytes());
        b.extend_from_slice(&[0xd5; 160]);
        b
    }
}

/// The stream as sent, in wire order: SSRC 1 from seq 65400 across the sequence wrap and
/// the timestamp wrap, with gaps,
/// reordering, duplicates and telephone events; then SSRC 2 (a restarted sender).
fn plan() -> Vec<Rtp> {
    let mut v = Vec::new();
    for i in 0..300u32 {
        let seq = 65_400u16.wrapping_add(i as u16);
        if [40, 41, 42, 120, 200].contains(&i) {
            continue; // lost
        }
        let pt = if i % 50 == 25 { TE_PT } else { 8 };
        v.push(Rtp {
            pt,
            seq,
            // The 32-bit timestamp wraps too, at i = 150 (RFC 3550 §5.1: modulo 2^32).
            ts: TS_WRAP_START.wrapping_add(i * 16),
            ssrc: 0x1111_1111,
        });
        if i == 77 || i == 150 {
            v.push(*v.last().unwrap_or(&v[0])); // duplicate
        }
    }
    for k in [60usize, 130, 220] {
        v.swap(k, k + 1); // reordered
    }
    for i in 0..150u32 {
        if i == 90 {
            continue;
        }
        v.push(Rtp {
            pt: 8,
            seq: 500 + i as u16,
            ts: 777 + i * 16,
            ssrc: 0x2222_2222,
        });
    }
    v
}

fn rtcp_sr(ssrc: u32) -> Vec<u8> {
    // RFC 3550 §6.4.1 SR with no report blocks: V=2, PT=200, length 6.
    let mut b = vec![0x80, 200, 0, 6];
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(&[0u8; 20]);
    b
}

#[test]
fn kernel_rtp_statistics_equal_the_rfc_reference() -> Result<()> {
    let pair = VethPair::new(3)?;
    let (a, b) = (pair.addr_a.clone(), pair.addr_b.clone());
    let ip_a: std::net::IpAddr = a.parse()?;
    let ip_b: std::net::IpAddr = b.parse()?;
    let key = MediaKey {
        src: map_addr(ip_a),
        dst: map_addr(ip_b),
        sport: 6000,
        dport: 6000,
    };
    // The far end of the second stream is unknown (NAT): only B's endpoint is announced.
    let nat_key = MediaKey {
        src: [0; 16],
        dst: map_addr(ip_b),
        sport: 0,
        dport: 6010,
    };
    let (iface, bb) = (pair.if_b.clone(), b.clone());
    let (mut cap, sockets) = pair.b.run(move || {
        let mut cap = Capture::load(&CaptureOptions {
            rtp_sample_every: 1,
            ring_bytes: 1 << 22,
            ..CaptureOptions::default()
        })?;
        cap.attach(&iface, XdpModeArg::Auto)?;
        let mut socks = Vec::new();
        for p in [6000u16, 6001, 6010] {
            socks.push(UdpSocket::bind((bb.as_str(), p))?); // no ICMP port unreachable noise
        }
        Ok((cap, socks))
    })?;
    let mut mux = MediaValue::new(1, CLOCK, TE_PT, MediaValue::FLAG_RTCP_MUX);
    mux.cookie = 1;
    cap.insert_stream(key, mux)?;
    cap.insert_stream(nat_key, MediaValue::new(2, CLOCK, 0xff, 0))?;
    cap.insert_endpoint(
        EndpointKey {
            addr: map_addr(ip_b),
            port: 6010,
            _pad: 0,
        },
        EndpointValue {
            cookie: 2,
            to_key: nat_key,
            ..EndpointValue::default()
        },
    )?;
    cap.insert_endpoint(
        EndpointKey {
            addr: map_addr(ip_b),
            port: 6001,
            _pad: 0,
        },
        EndpointValue {
            cookie: 1,
            flags: EndpointValue::FLAG_RTCP,
            ..EndpointValue::default()
        },
    )?;
    let mut ring = cap.take_ring_raw()?;

    let sent = plan();
    {
        let (sent, a, b) = (sent.clone(), a.clone(), b.clone());
        pair.a.run(move || {
            let s = UdpSocket::bind((a.as_str(), 6000))?;
            let nat = UdpSocket::bind((a.as_str(), 0))?; // unannounced source port
            let start = Instant::now();
            for (i, p) in sent.iter().enumerate() {
                s.send_to(&p.bytes(), (b.as_str(), 6000))?;
                if i % 10 == 0 {
                    nat.send_to(&p.bytes(), (b.as_str(), 6010))?;
                }
                // Uneven pacing: the jitter must come out non-zero and still match.
                std::thread::sleep(Duration::from_micros(if i % 7 == 0 { 3000 } else { 1500 }));
                ensure!(
                    start.elapsed() < Duration::from_secs(20),
                    "sending took too long"
                );
            }
            s.send_to(&rtcp_sr(0x1111_1111), (b.as_str(), 6000))?; // rtcp-mux
            s.send_to(&rtcp_sr(0x1111_1111), (b.as_str(), 6001))?; // port + 1
            Ok(())
        })?;
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut samples = Vec::new();
    let mut rtcp = 0;
    while let Some(rec) = ring.next() {
        let ev = decode_event(&rec).context("undecodable ring record")?;
        match EventKind::from_u8(ev.header.kind) {
            Some(EventKind::RtpSample) => samples.push(ev),
            Some(EventKind::Rtcp) => rtcp += 1,
            other => anyhow::bail!("unexpected event {other:?}"),
        }
    }
    ensure!(rtcp == 2, "RTCP events: {rtcp}, want 2 (mux and port+1)");

    // The reference, over the kernel's own arrival times of the same packets.
    let mut refs: Vec<(u32, RefSource, u64, u32)> = Vec::new(); // ssrc, state, packets, te
    for ev in samples.iter().filter(|e| {
        e.data
            .get(usize::from(e.header.l4_off) + 2..usize::from(e.header.l4_off) + 4)
            == Some(&6000u16.to_be_bytes()[..])
    }) {
        let r = &ev.data[usize::from(ev.header.l7_off)..];
        let (pt, seq) = (r[1] & 0x7f, u16::from_be_bytes([r[2], r[3]]));
        let ts = u32::from_be_bytes([r[4], r[5], r[6], r[7]]);
        let ssrc = u32::from_be_bytes([r[8], r[9], r[10], r[11]]);
        let idx = match refs.iter().position(|x| x.0 == ssrc) {
            Some(i) => i,
            None => {
                refs.push((ssrc, RefSource::new(seq), 0, 0));
                refs.len() - 1
            }
        };
        let e = &mut refs[idx];
        e.2 += 1;
        e.1.update_seq(seq);
        if pt == TE_PT {
            e.3 += 1;
        } else {
            e.1.jitter_update(ev.header.ts_ns as f64 * f64::from(CLOCK) / 1e9, ts);
        }
    }
    let v = cap.stream(&key)?.context("stream evicted")?;
    ensure!(refs.len() == 2, "want two SSRCs, got {}", refs.len());
    for (ssrc, r, packets, te) in &refs {
        let want_sent = sent.iter().filter(|p| p.ssrc == *ssrc).count() as u64;
        assert_eq!(*packets, want_sent, "every packet of {ssrc:#x} sampled");
        let s = v
            .slots
            .iter()
            .find(|s| s.in_use != 0 && s.ssrc == *ssrc)
            .context("slot")?;
        assert_eq!(s.packets, *packets, "packets of {ssrc:#x}");
        assert_eq!(s.te_packets, *te, "telephone events of {ssrc:#x}");
        // The update counts every packet from the first one seen (tshark's base), where
        // RFC 3550 A.1 starts after the probation: one packet more received and expected,
        // the same loss (no loss falls on the first packets here).
        assert_eq!(u64::from(s.received), *packets, "received of {ssrc:#x}");
        assert_eq!(
            i64::from(s.expected()),
            r.expected() + 1,
            "expected of {ssrc:#x}"
        );
        assert_eq!(s.lost(), r.lost(), "lost of {ssrc:#x}");
        let (j, jr) = (s.jitter_units(), r.jitter);
        assert!(
            (j - jr).abs() <= 1.0,
            "jitter {j} vs reference {jr} ({ssrc:#x})"
        );
        assert!(
            jr > 1.0,
            "the pacing should have produced jitter (reference {jr})"
        );
        // Pacing jitter is a few ms (tens of timestamp units at 8 kHz); a timestamp wrap
        // taken for a 2^32-tick jump would put J in the millions.
        assert!(
            j < 4000.0,
            "jitter {j} units of {ssrc:#x}: the timestamp wrap leaked in"
        );
    }
    // Known by construction, independently of any algorithm: SSRC 1 lost 5 and had 2
    // duplicates; SSRC 2 lost 1.
    let s1 = v
        .slots
        .iter()
        .find(|s| s.ssrc == 0x1111_1111)
        .context("ssrc 1")?;
    assert_eq!(s1.lost(), 5 - 2);
    assert_eq!(s1.duplicates, 2);
    assert_eq!(s1.cycles, 1 << 16, "the sequence wrapped once");
    let s2 = v
        .slots
        .iter()
        .find(|s| s.ssrc == 0x2222_2222)
        .context("ssrc 2")?;
    assert_eq!(s2.lost(), 1);

    // The NAT'd stream was credited through the endpoint entry.
    let n = cap.stream(&nat_key)?.context("nat stream")?;
    let nat_packets: u64 = n.slots.iter().map(|s| s.packets).sum();
    assert_eq!(nat_packets, sent.len().div_ceil(10) as u64);
    let c = cap.counters()?;
    assert_eq!(c["ring_full"], 0);
    assert_eq!(c["rtcp_copied"], 2);
    assert_eq!(
        c["rtp_matched"] + c["telephone_events"],
        sent.len() as u64 + nat_packets
    );
    drop(sockets);
    Ok(())
}

/// A bound stream installed with `FLAG_SEED` takes over, at its first packet, what its
/// pending entry counted (RTP to an offerer before its answer was bound): the counts go on
/// as one stream, known by construction (10 packets, none lost). A seeded stream whose
/// pending entry is gone (or another call's) counts from its own first packet.
#[test]
fn a_seeded_stream_takes_over_its_pending_counts() -> Result<()> {
    let pair = VethPair::new(3)?;
    let (a, b) = (pair.addr_a.clone(), pair.addr_b.clone());
    let ip_a: std::net::IpAddr = a.parse()?;
    let ip_b: std::net::IpAddr = b.parse()?;
    let (iface, bb) = (pair.if_b.clone(), b.clone());
    let (mut cap, sockets) = pair.b.run(move || {
        let mut cap = Capture::load(&CaptureOptions::default())?;
        cap.attach(&iface, XdpModeArg::Auto)?;
        let socks = [6020u16, 6030]
            .into_iter()
            .map(|p| UdpSocket::bind((bb.as_str(), p)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok((cap, socks))
    })?;
    let exact = |port| MediaKey {
        src: map_addr(ip_a),
        dst: map_addr(ip_b),
        sport: port,
        dport: port,
    };
    let pending = MediaKey::pending(&map_addr(ip_b), 6020);
    cap.insert_stream(pending, MediaValue::new(3, CLOCK, 0xff, 0))?;
    cap.insert_endpoint(
        EndpointKey {
            addr: map_addr(ip_b),
            port: 6020,
            _pad: 0,
        },
        EndpointValue {
            cookie: 3,
            to_key: pending,
            ..EndpointValue::default()
        },
    )?;
    let send = |port: u16, seqs: std::ops::Range<u16>| {
        let (a, b) = (a.clone(), b.clone());
        pair.a.run(move || {
            let s = UdpSocket::bind((a.as_str(), port))?;
            for seq in seqs {
                let p = Rtp {
                    pt: 0,
                    seq,
                    ts: u32::from(seq) * 160,
                    ssrc: 0x3333_3333,
                };
                s.send_to(&p.bytes(), (b.as_str(), port))?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
    };
    send(6020, 0..5)?;
    std::thread::sleep(Duration::from_millis(50));
    let counted = cap.stream(&pending)?.context("pending stream")?;
    ensure!(
        counted.slots[0].packets == 5,
        "pending: {:?}",
        counted.slots[0]
    );
    cap.insert_stream(
        exact(6020),
        MediaValue::new(3, CLOCK, 0xff, MediaValue::FLAG_SEED),
    )?;
    // Another call's seeded stream (cookie 4) finds no pending entry of its own.
    cap.insert_stream(
        exact(6030),
        MediaValue::new(4, CLOCK, 0xff, MediaValue::FLAG_SEED),
    )?;
    send(6020, 5..10)?;
    send(6030, 0..4)?;
    std::thread::sleep(Duration::from_millis(50));
    let v = cap.stream(&exact(6020))?.context("seeded stream")?;
    let s = &v.slots[0];
    assert_eq!(v.flags & MediaValue::FLAG_SEED, 0, "the flag is cleared");
    assert_eq!((s.ssrc, s.packets, s.lost()), (0x3333_3333, 10, 0));
    assert_eq!(u64::from(s.received), 10);
    let w = cap.stream(&exact(6030))?.context("unseeded stream")?;
    assert_eq!(w.flags & MediaValue::FLAG_SEED, 0);
    assert_eq!((w.slots[0].packets, w.slots[0].lost()), (4, 0));
    drop(sockets);
    Ok(())
}
