//! The agent's Prometheus metrics (`collector agent --metrics-listen`) against a set of
//! packets known by construction: N complete SIP calls (INVITE with an SDP offer, 200 with
//! an answer, ACK, BYE, 200) sent as raw frames onto a veth, SIP datagrams that fail to
//! parse for two known reasons, and IPv4 frames with an impossible IHL. The metrics are
//! scraped over plain HTTP from inside the agent's namespace and must count exactly what
//! was sent: kernel counters by reason, ring records, parse errors by reason, dialogs and
//! media streams while the calls are up and after they end, CDRs, the spool and the
//! shipper's reconnects (the collector it ships to does not exist).
use std::time::{Duration, Instant};

use anyhow::Result;
use collector_tests::{
    rawsip::{sip_frame, RawCall},
    scrape::{self, kernel, sample},
    send_raw, Agent, Netns, VethPair,
};

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

const A: [u8; 4] = [198, 18, NET, 1];
const B: [u8; 4] = [198, 18, NET, 2];

/// Call `i` of the test.
fn call(i: usize) -> RawCall {
    RawCall {
        a: A,
        b: B,
        i,
        call_id: format!("metrics-{i}"),
        rtp_ports: (40_000 + 2 * i as u16, 50_000 + 2 * i as u16),
    }
}

/// An INVITE whose only fault is the missing Call-ID.
fn no_call_id(i: usize) -> Vec<u8> {
    let c = call(100 + i);
    let text = c.msg(
        &format!("INVITE sip:nobody{i}@198.18.{NET}.2 SIP/2.0"),
        "1 INVITE",
        false,
        None,
    );
    let text: String = text
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("Call-ID:"))
        .collect();
    c.frame(true, &text)
}

/// An INVITE whose CSeq names another method.
fn cseq_mismatch(i: usize) -> Vec<u8> {
    let c = call(200 + i);
    c.frame(
        true,
        &c.msg(
            &format!("INVITE sip:other{i}@198.18.{NET}.2 SIP/2.0"),
            "1 BYE",
            false,
            None,
        ),
    )
}

/// A SIP-looking datagram in an IPv4 header that claims 16 bytes (IHL 4).
fn bad_ihl(i: usize) -> Vec<u8> {
    let mut f = sip_frame(A, B, &format!("OPTIONS sip:x{i} SIP/2.0\r\n\r\n"));
    f[14] = 0x44;
    f
}

fn scrape(ns: &Netns) -> Result<String> {
    scrape::scrape(ns, METRICS_ADDR)
}

fn scrape_until(ns: &Netns, done: impl Fn(&str) -> bool) -> Result<String> {
    scrape::scrape_until(ns, METRICS_ADDR, Duration::from_secs(15), done)
}

#[test]
fn metrics_count_exactly_what_was_sent() -> Result<()> {
    let pair = VethPair::new(NET)?;
    let dir = tempfile::tempdir()?;
    // CDRs leave 300 ms after the BYE's 200 instead of 4 s.
    let config = collector_tests::agent_config(dir.path(), "metrics", "[calls]\nlinger_ms = 300")?;
    let spool = dir.path().join("spool");
    let spool = spool.to_string_lossy().into_owned();
    let spool_key = dir.path().join("spool.key");
    let spool_key = spool_key.to_string_lossy().into_owned();
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
            "--spool-key",
            &spool_key,
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
    let setup: Vec<Vec<u8>> = (0..N).flat_map(|i| call(i).setup()).collect();
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
    let mut rest: Vec<Vec<u8>> = (0..N).flat_map(|i| call(i).teardown()).collect();
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
