//! The agent's Prometheus metrics (`collector agent --metrics-listen`) against a set of
//! packets known by construction: N complete SIP calls (INVITE with an SDP offer, 200 with
//! an answer, ACK, BYE, 200) sent as raw frames onto a veth, SIP datagrams that fail to
//! parse for two known reasons, and IPv4 frames with an impossible IHL. The metrics are
//! scraped over plain HTTP from inside the agent's namespace and must count exactly what
//! was sent: kernel counters by reason, ring records, parse errors by reason, dialogs and
//! media streams while the calls are up and after they end, CDRs, the spool and the
//! shipper's reconnects (the collector it ships to does not exist).
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use collector_tests::{send_raw, Agent, Netns, VethPair};

/// Complete calls sent.
const N: usize = 4;
/// SIP requests without a Call-ID (RFC 3261 §8.1.1.4 makes it mandatory).
const M_NO_CALL_ID: usize = 3;
/// SIP requests whose CSeq method differs from the request method (RFC 3261 §8.1.1.5).
const M_CSEQ: usize = 2;
/// IPv4 frames with IHL 4, below the minimum of 5 (RFC 791 §3.1).
const M_BAD_IHL: usize = 5;
/// Where the agent serves its metrics, inside its own namespace.
const METRICS_ADDR: &str = "127.0.0.1:9464";
/// Third octet of the veth pair's /24.
const NET: u8 = 6;

const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x62]; // nobody's: the frames die after XDP
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x61];
const A: [u8; 4] = [198, 18, NET, 1];
const B: [u8; 4] = [198, 18, NET, 2];

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let hi = c[0];
        let lo = c.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([hi, lo]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame carrying an IPv4 packet with a header of `ihl` words (only 5 is
/// valid; the header is always 20 bytes long) holding a UDP datagram.
fn frame(ihl: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut ip = vec![0x40 | ihl, 0];
    ip.extend_from_slice(&((20 + udp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&udp);
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f
}

/// A SIP datagram from A to B (requests) or B to A (responses), as a valid frame.
fn sip(from_a: bool, text: &str) -> Vec<u8> {
    let (src, dst) = if from_a { (A, B) } else { (B, A) };
    frame(5, src, dst, 5060, 5060, text.as_bytes())
}

fn sdp(addr: [u8; 4], port: u16) -> String {
    let ip = format!("{}.{}.{}.{}", addr[0], addr[1], addr[2], addr[3]);
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// One message of call `i`: `start` line, `cseq`, the To tag once the dialog exists, and
/// an optional SDP body.
fn msg(i: usize, start: &str, cseq: &str, to_tag: bool, body: Option<String>) -> String {
    let tag = if to_tag {
        format!(";tag=b{i}")
    } else {
        String::new()
    };
    let body = body.unwrap_or_default();
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{start}\r\nVia: SIP/2.0/UDP 198.18.{NET}.1:5060;branch=z9hG4bK{i}{}\r\nMax-Forwards: 70\r\nFrom: <sip:alice{i}@198.18.{NET}.1>;tag=a{i}\r\nTo: <sip:bob{i}@198.18.{NET}.2>{tag}\r\nCall-ID: metrics-{i}\r\nCSeq: {cseq}\r\nContact: <sip:alice{i}@198.18.{NET}.1:5060>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        cseq.replace(' ', ""),
        body.len()
    )
}

/// INVITE with an offer, 200 with an answer, ACK: the call is up.
fn call_setup(i: usize) -> Vec<Vec<u8>> {
    let ruri = format!("sip:bob{i}@198.18.{NET}.2");
    let offer = sdp(A, 40_000 + 2 * i as u16);
    let answer = sdp(B, 50_000 + 2 * i as u16);
    vec![
        sip(
            true,
            &msg(
                i,
                &format!("INVITE {ruri} SIP/2.0"),
                "1 INVITE",
                false,
                Some(offer),
            ),
        ),
        sip(
            false,
            &msg(i, "SIP/2.0 200 OK", "1 INVITE", true, Some(answer)),
        ),
        sip(
            true,
            &msg(i, &format!("ACK {ruri} SIP/2.0"), "1 ACK", true, None),
        ),
    ]
}

/// BYE and its 200: the call is over.
fn call_teardown(i: usize) -> Vec<Vec<u8>> {
    let ruri = format!("sip:bob{i}@198.18.{NET}.2");
    vec![
        sip(
            true,
            &msg(i, &format!("BYE {ruri} SIP/2.0"), "2 BYE", true, None),
        ),
        sip(false, &msg(i, "SIP/2.0 200 OK", "2 BYE", true, None)),
    ]
}

/// An INVITE whose only fault is the missing Call-ID.
fn no_call_id(i: usize) -> Vec<u8> {
    let text = msg(
        100 + i,
        &format!("INVITE sip:nobody{i}@198.18.{NET}.2 SIP/2.0"),
        "1 INVITE",
        false,
        None,
    );
    let text: String = text
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("Call-ID:"))
        .collect();
    sip(true, &text)
}

/// An INVITE whose CSeq names another method.
fn cseq_mismatch(i: usize) -> Vec<u8> {
    sip(
        true,
        &msg(
            200 + i,
            &format!("INVITE sip:other{i}@198.18.{NET}.2 SIP/2.0"),
            "1 BYE",
            false,
            None,
        ),
    )
}

/// A SIP-looking datagram in an IPv4 header that claims 16 bytes (IHL 4).
fn bad_ihl(i: usize) -> Vec<u8> {
    frame(
        4,
        A,
        B,
        5060,
        5060,
        format!("OPTIONS sip:x{i} SIP/2.0\r\n\r\n").as_bytes(),
    )
}

/// One scrape of `/metrics` over a plain HTTP/1.1 GET from inside `ns`; the body.
fn scrape(ns: &Netns) -> Result<String> {
    ns.run(|| {
        let mut s = TcpStream::connect(METRICS_ADDR).context("connecting to /metrics")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP head")?;
        if !head.starts_with("HTTP/1.1 200 ") {
            bail!("scrape answered {head}");
        }
        Ok(body.to_owned())
    })
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrapes until `done` holds (the agent refreshes its metrics once a second), at most
/// 15 s; returns the last body either way, for the assertions to report.
fn scrape_until(ns: &Netns, done: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = scrape(ns)?;
        if done(&body) || Instant::now() > deadline {
            return Ok(body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kernel(reason: &str) -> String {
    format!(r#"collector_kernel_packets_total{{reason="{reason}"}}"#)
}

#[test]
fn metrics_count_exactly_what_was_sent() -> Result<()> {
    let pair = VethPair::new(NET)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    // CDRs leave 300 ms after the BYE's 200 instead of 4 s.
    std::fs::write(&config, "[calls]\nlinger_ms = 300\n")?;
    let spool = dir.path().join("spool");
    let config = config.to_string_lossy().into_owned();
    let spool = spool.to_string_lossy().into_owned();
    let agent = Agent::start(
        &pair.b.name,
        &[&pair.if_b],
        &[
            "--config",
            &config,
            "--metrics-listen",
            METRICS_ADDR,
            // Nothing listens there: every CDR stays in the spool, every session fails.
            "--server",
            "http://127.0.0.1:9",
            "--spool-dir",
            &spool,
        ],
    )?;

    // Before any traffic: the families exist, at zero.
    let body = scrape(&pair.b)?;
    assert_eq!(
        sample(&body, "collector_active_dialogs"),
        Some(0.0),
        "{body}"
    );

    // Every call up.
    let setup: Vec<Vec<u8>> = (0..N).flat_map(call_setup).collect();
    send_raw(&pair.a, &pair.if_a, setup, Duration::from_millis(2))?;
    let up = scrape_until(&pair.b, |b| {
        sample(b, "collector_active_dialogs") == Some(N as f64)
    })?;
    assert_eq!(
        sample(&up, "collector_active_dialogs"),
        Some(N as f64),
        "{up}"
    );
    // An offer and an answer bind one stream per direction.
    assert_eq!(
        sample(&up, "collector_active_media_streams"),
        Some(2.0 * N as f64),
        "{up}"
    );

    // Every call down, then the malformed packets.
    let mut rest: Vec<Vec<u8>> = (0..N).flat_map(call_teardown).collect();
    rest.extend((0..M_NO_CALL_ID).map(no_call_id));
    rest.extend((0..M_CSEQ).map(cseq_mismatch));
    rest.extend((0..M_BAD_IHL).map(bad_ihl));
    let sent_down = Instant::now();
    send_raw(&pair.a, &pair.if_a, rest, Duration::from_millis(2))?;

    let sip_sent = (5 * N + M_NO_CALL_ID + M_CSEQ) as f64;
    let all_sent = sip_sent + M_BAD_IHL as f64;
    let cdrs = r#"collector_cdrs_total{stage="produced"}"#;
    let body = scrape_until(&pair.b, |b| {
        sample(b, cdrs) == Some(N as f64)
            && sample(b, "collector_active_dialogs") == Some(0.0)
            && sample(b, "collector_spool_unacked_cdrs") == Some(N as f64)
            && sample(b, &kernel("xdp_packets")) == Some(all_sent)
            && sample(b, "collector_ring_records_total") == Some(sip_sent)
            && sample(b, "collector_ship_reconnects_total").is_some_and(|r| r >= 1.0)
    })?;
    let waited = sent_down.elapsed().as_secs_f64();

    // Kernel: every frame seen, every SIP datagram copied, the bad IHLs counted by reason.
    assert_eq!(
        sample(&body, &kernel("xdp_packets")),
        Some(all_sent),
        "{body}"
    );
    assert_eq!(
        sample(&body, &kernel("sip_copied")),
        Some(sip_sent),
        "{body}"
    );
    assert_eq!(
        sample(&body, &kernel("malformed")),
        Some(M_BAD_IHL as f64),
        "{body}"
    );
    assert_eq!(sample(&body, &kernel("ring_full")), Some(0.0), "{body}");
    // Ring: each copied datagram read once, none lost or undecodable.
    assert_eq!(
        sample(&body, "collector_ring_records_total"),
        Some(sip_sent),
        "{body}"
    );
    assert_eq!(
        sample(&body, "collector_ring_lost_total"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "collector_ring_undecodable_total"),
        Some(0.0),
        "{body}"
    );
    // SIP parse errors by reason, and nothing else failed.
    assert_eq!(
        sample(
            &body,
            r#"collector_sip_parse_errors_total{reason="missing_header"}"#
        ),
        Some(M_NO_CALL_ID as f64),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            r#"collector_sip_parse_errors_total{reason="cseq_method_mismatch"}"#
        ),
        Some(M_CSEQ as f64),
        "{body}"
    );
    let parse_errors = body
        .lines()
        .filter(|l| l.starts_with("collector_sip_parse_errors_total{"))
        .count();
    assert_eq!(parse_errors, 2, "only the two reasons sent: {body}");
    // Calls: all over, media released, one CDR each, all spooled and none acknowledged.
    assert_eq!(sample(&body, cdrs), Some(N as f64), "{body}");
    assert_eq!(
        sample(&body, "collector_active_dialogs"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "collector_active_media_streams"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"collector_cdrs_total{stage="spooled"}"#),
        Some(N as f64),
        "{body}"
    );
    assert_eq!(
        sample(&body, r#"collector_cdrs_total{stage="acknowledged"}"#),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "collector_spool_unacked_cdrs"),
        Some(N as f64),
        "{body}"
    );
    // The oldest unacknowledged CDR was spooled after the BYEs were sent.
    let age = sample(&body, "collector_spool_oldest_unacked_age_seconds").unwrap_or(-1.0);
    assert!(
        age > 0.0 && age <= waited + 1.0,
        "age {age} s, BYEs sent {waited} s before: {body}"
    );
    assert!(
        sample(&body, "collector_ship_reconnects_total").is_some_and(|r| r >= 1.0),
        "{body}"
    );
    // No identifier reached a label: no address, Call-ID or user part anywhere.
    for id in ["198.18.", "metrics-", "alice", "bob"] {
        assert!(!body.contains(id), "{id} in the metrics: {body}");
    }

    let lines = agent.stop()?;
    assert!(
        lines.iter().any(|v| v.get("final").is_some()),
        "no final counters"
    );
    Ok(())
}
