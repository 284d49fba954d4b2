//! Quality alerts end to end through the kernel path: five calls (INVITE/200/ACK, RTP,
//! BYE/200) written as raw frames onto a veth into the attached agent, run side by side on
//! distinct Call-IDs and media ports, each built so that its alerts are known by
//! construction. The alerts are read back as live flow events from the agent's Watch API
//! (`collector flows --last N -o json` in its namespace):
//!
//! - one-way audio: only the caller sends, 2.5 s from the answer (threshold 1 s) →
//!   `one_way_audio`, raised during the call;
//! - a media gap: both ways, the callee pauses 1.5 s (sequence numbers continue, the RTP
//!   clock runs on: a sender that stopped, no loss, no jitter; threshold 500 ms) →
//!   `media_gap`;
//! - low MOS: the caller's every third packet never sent (33 % loss; the G.711 E-model gives
//!   well under 3.1) → `low_mos` at the end;
//! - an RTCP disagreement: the caller's every tenth packet never sent (9.6 % loss, so the
//!   MOS stays above 3.1) while the callee's RTCP receiver report about the caller's SSRC
//!   claims 0 % (the tolerance is 2 points and half the larger figure: 4.8) →
//!   `rtcp_disagreement` at the end;
//! - a clean call: both ways, no gap, no loss → no alert.
//!
//! Each alert carries its call's pseudonymized Call-ID (the one of its CDR, found by its
//! media ports), comes once, and no raw Call-ID appears anywhere in the flows output.
use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use collector_tests::{
    agent_config, collector_bin, ns_exec,
    rawsip::RawCall,
    scrape::await_cdrs,
    send_raw, send_raw_at,
    wire::{eth, ipv4, udp},
    Agent, VethPair,
};
use serde_json::Value;

/// Third octet of the veth pair's /24.
const NET: u8 = 23;
const A: [u8; 4] = [198, 18, NET, 1];
const B: [u8; 4] = [198, 18, NET, 2];
/// Where the agent serves its metrics and its live flows, inside its own namespace.
const METRICS_ADDR: &str = "127.0.0.1:9464";
const WATCH_ADDR: &str = "127.0.0.1:50072";
/// Alert thresholds of the agent's configuration.
const ONE_WAY_AFTER_MS: u64 = 1_000;
const MEDIA_GAP_MS: u64 = 500;
const MOS_BELOW: f64 = 3.1;
/// RTP packetisation (G.711, 20 ms, 160 samples) and the media phase: 2.5 s.
const TICK: Duration = Duration::from_millis(20);
const TICKS: u16 = 125;
/// The ticks during which the callee of the gap call sends nothing: 1.5 s.
const PAUSE: std::ops::Range<u16> = 25..100;
/// Paces the SIP frames.
const GAP: Duration = Duration::from_micros(40);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    OneWay,
    Gap,
    LowMos,
    Rtcp,
    Clean,
}

const CASES: [(Case, &str, Option<&str>); 5] = [
    (Case::OneWay, "oneway", Some("one_way_audio")),
    (Case::Gap, "gap", Some("media_gap")),
    (Case::LowMos, "lowmos", Some("low_mos")),
    (Case::Rtcp, "rtcp", Some("rtcp_disagreement")),
    (Case::Clean, "clean", None),
];

struct TestCall {
    case: Case,
    call: RawCall,
    expect: Option<&'static str>,
    ssrc_a: u32,
    ssrc_b: u32,
}

fn calls() -> Vec<TestCall> {
    CASES
        .iter()
        .zip(1u16..)
        .map(|(&(case, name, expect), i)| TestCall {
            case,
            call: RawCall::nth(A, B, i, &format!("alerts-{name}-7c1e"), (41_000, 51_000)),
            expect,
            ssrc_a: 0x0a1e_0000 + u32::from(i),
            ssrc_b: 0x0b1e_0000 + u32::from(i),
        })
        .collect()
}

/// One G.711 RTP packet of `c`, from the caller (`from_a`) or the callee.
fn rtp(c: &TestCall, from_a: bool, seq: u16, ts: u32) -> Vec<u8> {
    let ssrc = if from_a { c.ssrc_a } else { c.ssrc_b };
    c.call.rtp(from_a, ssrc, seq, ts)
}

/// An RTCP receiver report (RFC 3550 §6.4.2) from the callee about the caller's SSRC
/// claiming no loss at all (fraction 0, cumulative 0) up to `highest_seq`, jitter 0; from
/// the callee's RTCP port to the caller's (RTP + 1, no rtcp-mux).
fn receiver_report(c: &TestCall, highest_seq: u16) -> Vec<u8> {
    // V=2, RC=1, PT=201, length 7 (eight 32-bit words less one).
    let mut b = vec![0x81, 201, 0, 7];
    b.extend_from_slice(&c.ssrc_b.to_be_bytes());
    b.extend_from_slice(&c.ssrc_a.to_be_bytes());
    // Fraction lost and cumulative number of packets lost: none.
    b.extend_from_slice(&[0, 0, 0, 0]);
    b.extend_from_slice(&u32::from(highest_seq).to_be_bytes());
    // Interarrival jitter, LSR, DLSR.
    b.extend_from_slice(&[0; 12]);
    let (pa, pb) = c.call.rtp_ports;
    eth(0x0800, &ipv4(17, B, A, &[], 9, 0, &udp(pb + 1, pa + 1, &b)))
}

/// Whether the caller (`from_a`) or the callee of `c` sends at tick `k` (packets not sent
/// in the loss cases are lost: their sequence numbers are skipped).
fn sends(c: &TestCall, from_a: bool, k: u16) -> bool {
    match (c.case, from_a) {
        (Case::OneWay, false) => false,
        (Case::Gap, false) => !PAUSE.contains(&k),
        (Case::LowMos, true) => k % 3 != 2,
        (Case::Rtcp, true) => k % 10 != 5,
        _ => true,
    }
}

/// The media of every call on one real-time schedule: RTP every 20 ms both ways (as each
/// case allows), then the receiver report of the RTCP case.
fn media(calls: &[TestCall]) -> Vec<(Duration, Vec<u8>)> {
    let mut out = Vec::new();
    for k in 0..TICKS {
        let at = TICK * u32::from(k);
        for c in calls {
            for from_a in [true, false] {
                if !sends(c, from_a, k) {
                    continue;
                }
                // The paused sender's sequence numbers continue after the pause; its RTP
                // clock ran on.
                let seq = if c.case == Case::Gap && !from_a && k >= PAUSE.end {
                    k - PAUSE.len() as u16 + 1
                } else {
                    k + 1
                };
                out.push((at, rtp(c, from_a, seq, u32::from(k) * 160)));
            }
        }
    }
    let end = TICK * u32::from(TICKS);
    for c in calls.iter().filter(|c| c.case == Case::Rtcp) {
        out.push((end, receiver_report(c, TICKS)));
    }
    out
}

fn write_config(dir: &Path) -> Result<String> {
    // CDRs (and the alerts judged at the end) 300 ms after the BYE's 200 instead of 4 s.
    agent_config(
        dir,
        "alerts",
        &format!(
            "[agent]\nid = \"alerts-1\"\n\n[calls]\nlinger_ms = 300\n\n[calls.alerts]\n\
             one_way_after_ms = {ONE_WAY_AFTER_MS}\nmedia_gap_ms = {MEDIA_GAP_MS}\n\
             mos_below = {MOS_BELOW}"
        ),
    )
}

/// The agent's live flows (its whole history) as raw JSON lines.
fn flows_text(pair: &VethPair) -> Result<String> {
    let bin = collector_bin();
    ns_exec(
        &pair.b.name,
        &[
            bin.to_str().context("binary path")?,
            "flows",
            "--server",
            &format!("http://{WATCH_ADDR}"),
            "--last",
            "10000",
            "-o",
            "json",
        ],
    )
}

fn parse_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

fn state_count(events: &[Value], state: &str) -> usize {
    events
        .iter()
        .filter(|e| e["call_state"]["state"].as_str() == Some(state))
        .count()
}

/// The CDR of `c` among the agent's stdout lines: the one with a media leg on its ports.
fn cdr_of<'a>(lines: &'a [Value], c: &TestCall) -> Result<&'a Value> {
    let (pa, pb) = c.call.rtp_ports;
    let on_ports = |l: &Value| {
        let (s, d) = (l["src_port"].as_u64(), l["dst_port"].as_u64());
        [s, d].contains(&Some(u64::from(pa))) && [s, d].contains(&Some(u64::from(pb)))
    };
    let found: Vec<&Value> = lines
        .iter()
        .filter(|v| v.get("cdr_id").is_some())
        .filter(|v| {
            v["media"]
                .as_array()
                .is_some_and(|m| m.iter().any(on_ports))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => anyhow::bail!("{} CDRs of call {:?}: {found:?}", found.len(), c.case),
    }
}

/// MOS of each media leg of a CDR.
fn leg_mos(cdr: &Value) -> Vec<f64> {
    cdr["media"]
        .as_array()
        .map(|m| m.iter().filter_map(|l| l["mos"].as_f64()).collect())
        .unwrap_or_default()
}

#[test]
fn each_quality_alert_is_raised_once_for_its_call() -> Result<()> {
    let t0 = Instant::now();
    let pair = VethPair::new(NET)?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path())?;
    let agent = Agent::start(
        &pair.b.name,
        &[&pair.if_b],
        &[
            "--config",
            &config,
            "--metrics-listen",
            METRICS_ADDR,
            "--watch-listen",
            WATCH_ADDR,
        ],
    )?;
    let calls = calls();

    // Every call up; the media starts as soon as the agent has bound all answers (it binds
    // a call's media when it takes in the 200), well before the one-way threshold.
    let setup: Vec<Vec<u8>> = calls.iter().flat_map(|c| c.call.setup()).collect();
    let sent = Instant::now();
    send_raw(&pair.a, &pair.if_a, setup, GAP)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = parse_lines(&flows_text(&pair)?)?;
        let answered = state_count(&events, "CALL_STATE_KIND_ANSWERED");
        if answered == calls.len() {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{answered} of {} calls answered: {events:?}",
            calls.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered_after = sent.elapsed();
    send_raw_at(&pair.a, &pair.if_a, media(&calls))?;
    let teardown: Vec<Vec<u8>> = calls.iter().flat_map(|c| c.call.teardown()).collect();
    send_raw(&pair.a, &pair.if_a, teardown, GAP)?;

    // Every CDR made: the alerts judged at the end went out with them.
    await_cdrs(&pair.b, METRICS_ADDR, calls.len())?;
    let text = flows_text(&pair)?;
    let events = parse_lines(&text)?;
    let lines = agent.stop()?;

    // No raw Call-ID anywhere in what the Watch API served.
    for c in &calls {
        let id = &c.call.call_id;
        let local = id.split('@').next().unwrap_or(id);
        assert!(
            !text.contains(local),
            "the raw Call-ID {id} appears in the flows: {text}"
        );
    }
    ensure!(
        state_count(&events, "CALL_STATE_KIND_ENDED") == calls.len(),
        "not every call ended: {text}"
    );

    // The alerts of each (pseudonymized) Call-ID, in order.
    let mut alerts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in events.iter().filter(|e| e.get("alert").is_some()) {
        let id = e["call_id"].as_str().context("alert without a call_id")?;
        let kind = e["alert"]["kind"]
            .as_str()
            .context("alert without a kind")?;
        alerts
            .entry(id.to_owned())
            .or_default()
            .push(kind.to_owned());
    }
    let mut known = 0;
    for c in &calls {
        let cdr = cdr_of(&lines, c)?;
        let id = cdr["call_id"].as_str().context("CDR without a call_id")?;
        assert_ne!(id, c.call.call_id, "the CDR's Call-ID is not pseudonymized");
        let got = alerts.get(id).cloned().unwrap_or_default();
        let want: Vec<String> = c.expect.iter().map(|k| (*k).to_owned()).collect();
        eprintln!("alerts: {:?} → {got:?}, MOS {:?}", c.case, leg_mos(cdr));
        assert_eq!(
            got, want,
            "alerts of the {:?} call ({id}); CDR {cdr}",
            c.case
        );
        known += got.len();
    }
    // Every alert belongs to one of the calls.
    let total: usize = alerts.values().map(Vec::len).sum();
    assert_eq!(total, known, "alerts of unknown calls: {alerts:?}");
    eprintln!(
        "alerts: answered after {answered_after:.1?}, done in {:.1?}",
        t0.elapsed()
    );
    Ok(())
}
