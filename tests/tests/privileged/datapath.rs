//! The kernel datapath on crafted frames sent raw onto a veth (AF_PACKET), both directions:
//! every SIP packet (UDP and TCP, IPv4 and IPv6, VLAN-tagged or not, with IP options or IPv6
//! extension headers, fragmented or not) reaches userspace byte-identical; nothing else does.
use std::time::Duration;

use anyhow::Result;
use collector_tests::{
    counter, final_counters, fnv1a, send_raw,
    wire::{eth, ipv4, ipv4_fragments, ipv6, ipv6_fragments, tag, tcp, udp},
    Agent, VethPair,
};

const V4_A: [u8; 4] = [198, 18, 2, 10];
const V4_B: [u8; 4] = [198, 18, 2, 20];
const V4_C: [u8; 4] = [198, 18, 2, 30]; // never exchanges SIP
const V6_A: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a,
];
const V6_B: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b,
];

fn sip(tag: &str, len: usize) -> Vec<u8> {
    let head = format!(
        "INVITE sip:{tag}@example.invalid SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.2.10;branch=z9hG4bK{tag}\r\nCall-ID: {tag}\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
    );
    let body_len = len.saturating_sub(head.len() + 30);
    let body = "v".repeat(body_len);
    format!("{head}Content-Length: {body_len}\r\n\r\n{body}").into_bytes()
}

struct Case {
    frames: Vec<Vec<u8>>,
    /// "sip" or "fragment": what userspace must receive for each frame; None: nothing.
    kind: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let mut c = Vec::new();
    let one = |f: Vec<u8>, kind| Case {
        frames: vec![f],
        kind,
    };
    // SIP over UDP/IPv4, which also makes A and B "SIP hosts" for the fragments below.
    c.push(one(
        eth(
            0x0800,
            &ipv4(17, V4_A, V4_B, &[], 1, 0, &udp(5060, 5060, &sip("u4", 600))),
        ),
        Some("sip"),
    ));
    c.push(one(
        eth(
            0x86dd,
            &ipv6(17, V6_A, V6_B, &udp(5062, 5080, &sip("u6", 700))),
        ),
        Some("sip"),
    ));
    // 802.1Q, and 802.1ad + 802.1Q (QinQ).
    c.push(one(
        tag(
            eth(
                0x0800,
                &ipv4(
                    17,
                    V4_A,
                    V4_B,
                    &[],
                    2,
                    0,
                    &udp(40000, 5060, &sip("v1", 500)),
                ),
            ),
            0x8100,
            42,
        ),
        Some("sip"),
    ));
    c.push(one(
        tag(
            tag(
                eth(
                    0x86dd,
                    &ipv6(17, V6_A, V6_B, &udp(5060, 40001, &sip("v2", 500))),
                ),
                0x8100,
                7,
            ),
            0x88a8,
            100,
        ),
        Some("sip"),
    ));
    // SIP over TCP, both IP versions (a segment in the middle of a message goes up too).
    c.push(one(
        eth(
            0x0800,
            &ipv4(
                6,
                V4_A,
                V4_B,
                &[],
                3,
                0x4000,
                &tcp(41000, 5060, 1, &sip("t4", 900)),
            ),
        ),
        Some("sip"),
    ));
    c.push(one(
        eth(
            0x86dd,
            &ipv6(
                6,
                V6_A,
                V6_B,
                &tcp(5060, 41001, 7, b"ontinued body bytes of a message"),
            ),
        ),
        Some("sip"),
    ));
    // IPv4 with options (NOP x3 + EOL), IPv6 with hop-by-hop and destination options.
    c.push(one(
        eth(
            0x0800,
            &ipv4(
                17,
                V4_A,
                V4_B,
                &[1, 1, 1, 0],
                4,
                0,
                &udp(5060, 5060, &sip("o4", 400)),
            ),
        ),
        Some("sip"),
    ));
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0]; // HBH: next=DSTOPTS, len 0, PadN
    ext.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]); // DSTOPTS: next=UDP
    ext.extend_from_slice(&udp(5060, 5060, &sip("x6", 400)));
    c.push(one(eth(0x86dd, &ipv6(0, V6_A, V6_B, &ext)), Some("sip")));
    // Large INVITEs, fragmented: every fragment goes up, for userspace to reassemble.
    c.push(Case {
        frames: ipv4_fragments(V4_A, V4_B, 77, &udp(5060, 5060, &sip("f4", 3000)), 1480),
        kind: Some("fragment"),
    });
    c.push(Case {
        frames: ipv6_fragments(V6_A, V6_B, 0xabcd, &udp(5060, 5060, &sip("f6", 2500)), 1232),
        kind: Some("fragment"),
    });
    // Nothing else: keepalives and junk on the SIP port, other ports, ARP, fragments between
    // hosts that never exchanged SIP.
    c.push(one(
        eth(
            0x0800,
            &ipv4(17, V4_A, V4_B, &[], 5, 0, &udp(5060, 5060, b"\r\n\r\n")),
        ),
        None,
    ));
    c.push(one(
        eth(
            0x0800,
            &ipv4(17, V4_A, V4_B, &[], 6, 0, &udp(7000, 7002, &sip("no", 300))),
        ),
        None,
    ));
    c.push(one(
        eth(
            0x0800,
            &ipv4(
                6,
                V4_A,
                V4_B,
                &[],
                7,
                0,
                &tcp(80, 41002, 9, b"GET / HTTP/1.1\r\n\r\n"),
            ),
        ),
        None,
    ));
    c.push(one(
        eth(
            0x0806,
            &[
                0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 198, 18, 2, 10, 0, 0, 0, 0, 0, 0, 198,
                18, 2, 20,
            ],
        ),
        None,
    ));
    c.push(one(
        eth(0x86dd, &ipv6(17, V6_A, V6_B, &udp(9999, 9998, b"hello"))),
        None,
    ));
    c.push(Case {
        frames: ipv4_fragments(V4_A, V4_C, 78, &udp(5060, 5060, &sip("fc", 2000)), 1480),
        kind: None,
    });
    c
}

#[test]
fn every_sip_packet_reaches_userspace_byte_identical_and_nothing_else() -> Result<()> {
    let pair = VethPair::new(2)?;
    let agent = Agent::start(
        &pair.b.name,
        &[&pair.if_b],
        &["--print-events", "--snap-len", "4096"],
    )?;
    let cases = cases();
    let all: Vec<Vec<u8>> = cases.iter().flat_map(|c| c.frames.clone()).collect();
    // Ingress: sent by A, seen by XDP on B's interface. Egress: sent by B itself, seen by TC.
    send_raw(&pair.a, &pair.if_a, all.clone(), Duration::from_millis(2))?;
    std::thread::sleep(Duration::from_millis(100));
    send_raw(&pair.b, &pair.if_b, all.clone(), Duration::from_millis(2))?;
    std::thread::sleep(Duration::from_millis(300));
    let lines = agent.stop()?;

    let mut want = Vec::new();
    for dir in ["ingress", "egress"] {
        for c in &cases {
            if let Some(kind) = c.kind {
                for f in &c.frames {
                    want.push((dir.to_owned(), kind.to_owned(), fnv1a(f), f.len() as u64));
                }
            }
        }
    }
    let got: Vec<_> = lines
        .iter()
        .filter(|v| v.get("kind").is_some())
        .map(|v| {
            (
                v["direction"].as_str().unwrap_or_default().to_owned(),
                v["kind"].as_str().unwrap_or_default().to_owned(),
                v["frame_digest"].as_str().unwrap_or_default().to_owned(),
                v["cap_len"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(got, want, "events differ from the SIP frames sent");

    let c = final_counters(&lines)?;
    let n_sip = cases.iter().filter(|c| c.kind == Some("sip")).count() as u64;
    let n_frag: u64 = cases
        .iter()
        .filter(|c| c.kind == Some("fragment"))
        .map(|c| c.frames.len() as u64)
        .sum();
    assert_eq!(counter(&c, "xdp_packets"), all.len() as u64, "{c:?}");
    assert_eq!(counter(&c, "tc_packets"), all.len() as u64, "{c:?}");
    assert_eq!(counter(&c, "sip_copied"), 2 * n_sip, "{c:?}");
    assert_eq!(counter(&c, "fragments_copied"), 2 * n_frag, "{c:?}");
    assert_eq!(
        counter(&c, "sip_port_not_sip"),
        2,
        "the CRLF keepalive, both ways: {c:?}"
    );
    assert_eq!(counter(&c, "not_ip"), 2, "the ARP frame, both ways: {c:?}");
    for zero in [
        "ring_full",
        "load_failed",
        "snap_cut",
        "truncated",
        "malformed",
        "rtcp_copied",
        "rtp_sampled",
    ] {
        assert_eq!(counter(&c, zero), 0, "{zero}: {c:?}");
    }
    Ok(())
}
