//! Fixed jitter-buffer discards through the kernel path: three calls (INVITE/200/ACK, RTP
//! both ways, BYE/200) written as raw frames onto a veth into the attached agent, side by
//! side on distinct Call-IDs and media ports. Every stream is G.711 (8 kHz, 20 ms, 500
//! packets: 10 s, so the kernel's playout anchor rolls its epoch once) with RTP timestamps
//! and sequence numbers always nominal; the sender shapes arrival by sending chosen packets
//! late. Each CDR leg's `fixed_50ms_discarded` and `fixed_200ms_discarded` must equal the
//! counts known by construction:
//!
//! - steady: both ways on time → 0 and 0;
//! - spikes: the caller's every 10th packet (k % 10 == 5: 50) 120 ms late → 50 and 0;
//! - mixed: the caller's every 10th 120 ms late and every 25th (k % 25 == 12: 20, none of
//!   them among the former) 300 ms late → 70 and 20; the callee's every 50th (k % 50 == 30:
//!   10) 250 ms late → 10 and 10.
//!
//! Margins: a buffer discards a packet more than its depth behind the fastest recent packet.
//! On-time packets are 0 behind it, the late ones 120, 250 or 300 ms: at least 50 ms from
//! the 50 and 200 ms edges. The sender's own lateness (measured when each `sendto`
//! returned: on a veth the receiver's XDP program has run by then) is checked to stay under
//! 30 ms for every frame, so the machine's scheduling cannot have moved a packet across an
//! edge; a stalled sender fails the test with that reason instead of a wrong count.
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use collector_tests::{
    agent_config,
    rawsip::RawCall,
    scrape::{await_cdrs, await_sample},
    send_raw, send_raw_at_timed, Agent, VethPair,
};
use serde_json::Value;

/// Third octet of the veth pair's /24.
const NET: u8 = 24;
const A: [u8; 4] = [198, 18, NET, 1];
const B: [u8; 4] = [198, 18, NET, 2];
const METRICS_ADDR: &str = "127.0.0.1:9464";
/// RTP packetisation (G.711, 20 ms, 160 samples) and packets per stream.
const TICK: Duration = Duration::from_millis(20);
const TICKS: u16 = 500;
/// Most a frame may go out after its due time without putting a count in doubt (see the
/// module doc: every delay is 50 ms or more from a buffer's edge).
const SENDER_MARGIN: Duration = Duration::from_millis(30);
/// Paces the SIP frames.
const GAP: Duration = Duration::from_micros(40);

/// One direction's delay pattern: packet `k` is sent this many ms late.
type Pattern = fn(u16) -> u64;
/// A call's name, its two directions' patterns and their known (50 ms, 200 ms) discards.
type Case = (&'static str, [Pattern; 2], [(u64, u64); 2]);

fn on_time(_: u16) -> u64 {
    0
}

fn spikes_120(k: u16) -> u64 {
    if k % 10 == 5 {
        120
    } else {
        0
    }
}

fn spikes_120_and_300(k: u16) -> u64 {
    match (k % 10, k % 25) {
        (5, _) => 120,
        (_, 12) => 300,
        _ => 0,
    }
}

fn spikes_250(k: u16) -> u64 {
    if k % 50 == 30 {
        250
    } else {
        0
    }
}

struct TestCall {
    name: &'static str,
    call: RawCall,
    /// Caller → callee and callee → caller patterns.
    patterns: [Pattern; 2],
    /// (50 ms, 200 ms) discards known by construction, per direction.
    want: [(u64, u64); 2],
    ssrcs: [u32; 2],
}

fn calls() -> Vec<TestCall> {
    let cases: [Case; 3] = [
        ("steady", [on_time, on_time], [(0, 0), (0, 0)]),
        ("spikes", [spikes_120, on_time], [(50, 0), (0, 0)]),
        (
            "mixed",
            [spikes_120_and_300, spikes_250],
            [(70, 20), (10, 10)],
        ),
    ];
    cases
        .into_iter()
        .zip(1u16..)
        .map(|((name, patterns, want), i)| TestCall {
            name,
            call: RawCall::nth(A, B, i, &format!("jbuf-{name}-5d2a"), (42_000, 52_000)),
            patterns,
            want,
            ssrcs: [0x0a2b_0000 + u32::from(i), 0x0b2b_0000 + u32::from(i)],
        })
        .collect()
}

/// Packet `k` of `c`'s direction `dir` (0: caller → callee), nominal sequence number and
/// timestamp.
fn rtp(c: &TestCall, dir: usize, k: u16) -> Vec<u8> {
    let ssrc = c.ssrcs.get(dir).copied().unwrap_or_default();
    c.call.rtp(dir == 0, ssrc, k + 1, u32::from(k) * 160)
}

/// Every stream's packets at their (shaped) send times, in time order.
fn media(calls: &[TestCall]) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    for c in calls {
        for (dir, pattern) in c.patterns.iter().enumerate() {
            for k in 0..TICKS {
                let at = TICK * u32::from(k) + Duration::from_millis(pattern(k));
                out.push((at, rtp(c, dir, k)));
            }
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

/// The media leg of `c` from `from` to `to` (RTP ports) in the CDRs among `lines`.
fn leg(lines: &[Value], from: u16, to: u16) -> Result<&Value> {
    let legs: Vec<&Value> = lines
        .iter()
        .filter(|v| v.get("cdr_id").is_some())
        .filter_map(|v| v["media"].as_array())
        .flatten()
        .filter(|l| {
            l["src_port"].as_u64() == Some(u64::from(from))
                && l["dst_port"].as_u64() == Some(u64::from(to))
        })
        .collect();
    match legs.as_slice() {
        [one] => Ok(one),
        _ => anyhow::bail!("{} legs {from} → {to}: {legs:?}", legs.len()),
    }
}

fn field(l: &Value, name: &str) -> Result<u64> {
    l[name]
        .as_u64()
        .with_context(|| format!("no {name} in the leg {l}"))
}

#[test]
fn fixed_buffer_discards_equal_the_counts_known_by_construction() -> Result<()> {
    let pair = VethPair::new(NET)?;
    let dir = tempfile::tempdir()?;
    // CDRs 300 ms after the BYE's 200 instead of 4 s.
    let config = agent_config(
        dir.path(),
        "jbuf",
        "[agent]\nid = \"jbuf-1\"\n\n[calls]\nlinger_ms = 300",
    )?;
    let agent = Agent::start(
        &pair.b.name,
        &[&pair.if_b],
        &["--config", &config, "--metrics-listen", METRICS_ADDR],
    )?;
    let calls = calls();

    let setup: Vec<Vec<u8>> = calls.iter().flat_map(|c| c.call.setup()).collect();
    send_raw(&pair.a, &pair.if_a, setup, GAP)?;
    await_sample(
        &pair.b,
        METRICS_ADDR,
        "collector_active_media_streams",
        (2 * calls.len()) as f64,
        Duration::from_secs(10),
        "the calls' media bound",
    )?;
    let lateness = send_raw_at_timed(&pair.a, &pair.if_a, media(&calls))?;
    let worst = lateness.iter().max().copied().unwrap_or_default();
    let teardown: Vec<Vec<u8>> = calls.iter().flat_map(|c| c.call.teardown()).collect();
    send_raw(&pair.a, &pair.if_a, teardown, GAP)?;

    await_cdrs(&pair.b, METRICS_ADDR, calls.len())?;
    let lines = agent.stop()?;
    ensure!(
        worst <= SENDER_MARGIN,
        "the sender went out up to {worst:?} late (margin {SENDER_MARGIN:?}): the machine \
         stalled it, the arrival pattern is not the one constructed"
    );
    eprintln!("jitter buffers: sender at most {worst:?} late");

    for c in &calls {
        let (pa, pb) = c.call.rtp_ports;
        for (dir, (from, to)) in [(pa, pb), (pb, pa)].into_iter().enumerate() {
            let l = leg(&lines, from, to)?;
            let got = (
                field(l, "fixed_50ms_discarded")?,
                field(l, "fixed_200ms_discarded")?,
            );
            let want = c.want.get(dir).copied().unwrap_or_default();
            eprintln!(
                "jitter buffers: {} {from} → {to}: {got:?} (want {want:?}), late_hist {}, \
                 adaptive {} ({})",
                c.name, l["late_hist"], l["adaptive_discarded"], l["discard_methods"]
            );
            assert_eq!(
                field(l, "packets")?,
                u64::from(TICKS),
                "{} {from} → {to}",
                c.name
            );
            assert_eq!(got, want, "{} {from} → {to}: {l}", c.name);
            assert_eq!(
                l["discard_methods"].as_str(),
                Some("KernelAnchor,KernelAnchor,DelayHistogram"),
                "{l}"
            );
        }
    }
    Ok(())
}
