//! End to end through a real SBC: the `collector agent` binary attached to both interfaces of
//! a Kamailio + rtpengine SBC (in a network namespace) while sipp places calls of every
//! outcome through it. The references are independent of the agent: sipp's own statistics
//! (calls per outcome, final codes, per-call durations from its response-time trace) and
//! tshark's RTP stream analysis (`-z rtp,streams`) of a capture on the same SBC interface.
//!
//! What the agent must produce:
//! - Proxy mode (one Call-ID on both legs): one CDR per call, `legs_hops` 2 (the INVITE is
//!   seen once per leg, one Via deeper on the PBX leg), not one per leg or per message;
//! - topology hiding (one Call-ID per leg): one CDR per leg, the two of a call linked by the
//!   same `correlation_id`;
//! - RTP quality per stream equal to tshark's on the interface the stream crossed;
//! - each leg's SIP ladder equal to tshark's messages of its Call-ID on that interface;
//! - and sipp's results with the agent attached equal those without it.
use std::{collections::BTreeMap, time::Duration};

use anyhow::{bail, ensure, Context, Result};
use collector_tests::{
    sbc::{CallOptions, RtpStreamStat, SbcMode, Scenario, SippResult, Topology, RTP_PORTS},
    Agent,
};
use serde_json::Value;

fn options() -> CallOptions {
    CallOptions {
        duration: Duration::from_millis(1200),
        ring: Duration::from_millis(400),
        ..CallOptions::default()
    }
}

/// Calls placed per outcome.
const N: u32 = 3;

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The CDR lines among the agent's output (it also prints its ready line and final counters).
fn cdrs_of(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v.get("call_id").is_some() && !v.get("interim").is_some_and(|i| i == true))
        .cloned()
        .collect()
}

/// A one-line description of a CDR for failure messages (no identifier is in clear anyway:
/// the agent pseudonymized them).
fn brief(c: &Value) -> String {
    let media: Vec<String> = c
        .get("media")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .map(|l| {
                    format!(
                        "{}:{}->{} ssrc {:#x} pk {} lost {} jit {:.3}",
                        s(l, "direction").trim_start_matches("MEDIA_DIRECTION_"),
                        u(l, "src_port"),
                        u(l, "dst_port"),
                        u(l, "ssrc"),
                        u(l, "packets"),
                        l.get("lost").and_then(Value::as_i64).unwrap_or(0),
                        l.get("mean_jitter_ms")
                            .and_then(Value::as_f64)
                            .unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{} {} dur {} hops {} corr {} media [{}]",
        s(c, "disposition"),
        u(c, "final_code"),
        u(c, "duration_ms"),
        u(c, "legs_hops"),
        &s(c, "correlation_id").get(..8).unwrap_or(""),
        media.join("; ")
    )
}

fn all_brief(cdrs: &[Value]) -> String {
    cdrs.iter().map(brief).collect::<Vec<_>>().join("\n")
}

/// What sipp's statistics say about a run, without what may vary between two correct runs
/// (timings, retransmissions): calls created, successful, failed, and the first transmission
/// or reception count of each scenario step on both sides.
fn sipp_summary(r: &SippResult) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (side, st) in [("uac", &r.uac), ("uas", &r.uas)] {
        m.insert(format!("{side} created"), st.created);
        m.insert(format!("{side} successful"), st.successful);
        m.insert(format!("{side} failed"), st.failed);
        for (k, v) in &st.messages {
            if k.ends_with("_Sent") || k.ends_with("_Recv") {
                m.insert(format!("{side} {k}"), *v);
            }
        }
    }
    m
}

/// Runs N calls of every outcome and returns sipp's results.
fn run_all(topo: &Topology) -> Result<Vec<SippResult>> {
    let o = options();
    let mut out = Vec::new();
    for sc in Scenario::ALL {
        let r = topo
            .run_calls(sc, N, &o)
            .with_context(|| format!("{:?} {sc:?}\n{}", topo.mode, topo.diagnostics()))?;
        r.check_all_ok()?;
        out.push(r);
    }
    Ok(out)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// The CDRs of one outcome against sipp's view of the same calls: count, final code,
/// durations (sorted, matched pairwise) and, for answered calls, media both ways.
fn check_outcome(r: &SippResult, cdrs: &[&Value], per_call: usize, media: bool) -> Result<()> {
    let want = r.calls as usize * per_call;
    let ctx = || all_brief(&cdrs.iter().map(|c| (*c).clone()).collect::<Vec<_>>());
    ensure!(
        cdrs.len() == want,
        "{:?}: {} CDRs, {} calls x {per_call} expected:\n{}",
        r.scenario,
        cdrs.len(),
        r.calls,
        ctx()
    );
    for c in cdrs {
        ensure!(
            u(c, "final_code") == u64::from(r.scenario.final_status()),
            "{:?}: final code {}:\n{}",
            r.scenario,
            u(c, "final_code"),
            brief(c)
        );
    }
    // sipp's `call` RTD runs from the INVITE to the 200 of the BYE, `setup` from the INVITE
    // to the final response: the CDR's INVITE-to-end duration for answered and failed calls.
    let rtd = match r.scenario {
        Scenario::Answered | Scenario::HoldResume => "call",
        Scenario::Busy | Scenario::Cancelled | Scenario::NoAnswer => "setup",
    };
    let mut sipp = r.uac.rtd_ms(rtd);
    sipp.sort_by(f64::total_cmp);
    let mut ours: Vec<f64> = cdrs.iter().map(|c| u(c, "duration_ms") as f64).collect();
    ours.sort_by(f64::total_cmp);
    // Each call's duration appears once per leg record.
    let sipp: Vec<f64> = sipp
        .iter()
        .flat_map(|d| std::iter::repeat_n(*d, per_call))
        .collect();
    ensure!(
        sipp.len() == ours.len() && sipp.iter().zip(&ours).all(|(a, b)| close(*a, *b, 50.0)),
        "{:?}: durations {ours:?} ms, sipp's {rtd} {sipp:?} ms",
        r.scenario
    );
    for c in cdrs {
        let answered = matches!(r.scenario, Scenario::Answered | Scenario::HoldResume);
        ensure!(
            (u(c, "answer_time_ms") > 0) == answered,
            "{:?}: answer time {}",
            r.scenario,
            u(c, "answer_time_ms")
        );
        if answered && media {
            let media = c.get("media").and_then(Value::as_array);
            for dir in [
                "MEDIA_DIRECTION_CALLER_TO_CALLEE",
                "MEDIA_DIRECTION_CALLEE_TO_CALLER",
            ] {
                let pk: u64 = media
                    .into_iter()
                    .flatten()
                    .filter(|l| s(l, "direction") == dir)
                    .map(|l| u(l, "packets"))
                    .sum();
                ensure!(pk > 0, "{:?}: no RTP {dir}:\n{}", r.scenario, brief(c));
            }
        }
    }
    Ok(())
}

/// Groups CDRs by disposition.
fn by_disposition(cdrs: &[Value]) -> BTreeMap<String, Vec<&Value>> {
    let mut m: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for c in cdrs {
        m.entry(s(c, "disposition").to_owned()).or_default().push(c);
    }
    m
}

/// The answered CDRs of a run split into plain and held calls, by the duration sipp gave
/// each (a held call lasts three phases).
fn split_answered<'a>(answered: &[&'a Value]) -> (Vec<&'a Value>, Vec<&'a Value>) {
    let phase = options().duration.as_millis() as u64;
    answered
        .iter()
        .partition(|c| u(c, "duration_ms") < 2 * phase)
}

#[test]
fn proxy_one_cdr_per_call_matching_sipp() -> Result<()> {
    proxy(false)
}

/// Observed with this build: in Proxy mode only the last call of a run carries media, and
/// it holds every call's RTP of both legs merged into one stream per direction (ports
/// 6000->6000, e.g. 696 packets, lost -3, jitter 65 ms, where each leg of each call carried
/// 40 packets at under 1 ms of jitter); the other answered calls have `media: []`. The call
/// keeps one Call-ID while rtpengine rewrites the SDP per leg, and every call's streams share
/// sipp's SSRC and port 6000, so the agent plans a stream that is on no wire.
#[test]
fn proxy_media_per_call() -> Result<()> {
    proxy(true)
}

fn proxy(media: bool) -> Result<()> {
    let topo = Topology::up(SbcMode::Proxy)?;
    let [a, b] = topo.sbc_ifaces();
    let agent = Agent::start(&topo.sbc.name, &[a, b], &[])?;
    let runs = run_all(&topo)?;
    // Let the last in-dialog retransmission timers run out before stopping.
    std::thread::sleep(Duration::from_millis(500));
    let lines = agent.stop()?;
    let cdrs = cdrs_of(&lines);
    let total = N as usize * Scenario::ALL.len();
    ensure!(
        cdrs.len() == total,
        "{} CDRs for {total} calls (one Call-ID per call on both legs):\n{}",
        cdrs.len(),
        all_brief(&cdrs)
    );
    for c in &cdrs {
        ensure!(
            u(c, "legs_hops") == 2,
            "a proxied call is seen on two legs:\n{}",
            brief(c)
        );
    }
    let groups = by_disposition(&cdrs);
    let answered = groups
        .get("DISPOSITION_ANSWERED")
        .cloned()
        .unwrap_or_default();
    let (plain, held) = split_answered(&answered);
    for r in &runs {
        let set: Vec<&Value> = match r.scenario {
            Scenario::Answered => plain.clone(),
            Scenario::HoldResume => held.clone(),
            other => groups.get(other.disposition()).cloned().unwrap_or_default(),
        };
        check_outcome(r, &set, 1, media).with_context(|| all_brief(&cdrs))?;
    }

    if media {
        return Ok(());
    }
    // The same calls with no agent: sipp sees the same thing.
    let without = run_all(&topo)?;
    for (w, wo) in runs.iter().zip(&without) {
        ensure!(
            sipp_summary(w) == sipp_summary(wo),
            "{:?}: sipp with the agent {:?}, without {:?}",
            w.scenario,
            sipp_summary(w),
            sipp_summary(wo)
        );
    }
    Ok(())
}

#[test]
fn topology_hiding_one_cdr_per_leg() -> Result<()> {
    topology_hiding(false)
}

/// Observed with this build: 30 CDRs for 15 calls (right), but 30 distinct correlation ids.
/// Nothing links the legs: sipp sends no Session-ID (RFC 7989) nor P-Charging-Vector, topoh
/// masks the Call-ID, and rtpengine gives each leg its own address and port, so no SDP
/// address is shared between the legs for the tracker's media anchoring to match.
#[test]
fn topology_hiding_legs_share_a_correlation_id() -> Result<()> {
    topology_hiding(true)
}

fn topology_hiding(correlate: bool) -> Result<()> {
    let topo = Topology::up(SbcMode::TopologyHiding)?;
    let [a, b] = topo.sbc_ifaces();
    let agent = Agent::start(&topo.sbc.name, &[a, b], &[])?;
    let runs = run_all(&topo)?;
    std::thread::sleep(Duration::from_millis(500));
    let cdrs = cdrs_of(&agent.stop()?);
    let total = N as usize * Scenario::ALL.len();
    ensure!(
        cdrs.len() == 2 * total,
        "{} CDRs for {total} calls of two Call-IDs each:\n{}",
        cdrs.len(),
        all_brief(&cdrs)
    );
    let groups = by_disposition(&cdrs);
    let answered = groups
        .get("DISPOSITION_ANSWERED")
        .cloned()
        .unwrap_or_default();
    let (plain, held) = split_answered(&answered);
    for r in &runs {
        let set: Vec<&Value> = match r.scenario {
            Scenario::Answered => plain.clone(),
            Scenario::HoldResume => held.clone(),
            other => groups.get(other.disposition()).cloned().unwrap_or_default(),
        };
        check_outcome(r, &set, 2, true).with_context(|| all_brief(&cdrs))?;
    }
    if !correlate {
        return Ok(());
    }
    let mut by_corr: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for c in &cdrs {
        let corr = s(c, "correlation_id");
        ensure!(!corr.is_empty(), "no correlation id:\n{}", brief(c));
        by_corr.entry(corr).or_default().push(c);
    }
    ensure!(
        by_corr.len() == total,
        "{} correlation ids for {total} calls:\n{}",
        by_corr.len(),
        all_brief(&cdrs)
    );
    for (corr, legs) in &by_corr {
        ensure!(
            legs.len() == 2
                && s(legs[0], "call_id") != s(legs[1], "call_id")
                && s(legs[0], "disposition") == s(legs[1], "disposition")
                && u(legs[0], "final_code") == u(legs[1], "final_code"),
            "correlation {corr}: {}",
            legs.iter()
                .map(|c| brief(c))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(())
}

/// The media legs of the CDRs against tshark on the interface each stream crossed: a stream
/// is identified by SSRC and UDP ports (the addresses are pseudonymized in the CDR). Loss is
/// made inside the SBC after its PBX-facing interface, so it shows in the stream rtpengine
/// forwards to the carrier; jitter is in the PBX's own stream on both legs.
///
/// Observed with this build (2 calls of 3 s, 2% loss and 20 ms jitter on the PBX's media):
/// loss agrees where the agent sees the stream (1 = 1 on the carrier side), jitter agrees
/// within 3% on the second call, but (a) the agent counts one packet fewer than tshark on
/// every stream of the second call (99 vs 100, 98 vs 99: the first packet, before the stream
/// is in the MEDIA map), and (b) on every stream of the first call (rtpengine port 30000)
/// it counts one more (101 vs 100) with `lost` -1 where tshark has 0, and its jitter is far
/// off (1.99 ms vs 0.018 ms caller->callee, 7.36 vs 5.59 ms callee->caller).
#[test]
fn media_quality_matches_tshark_under_loss_and_jitter() -> Result<()> {
    // Topology hiding: one CDR per leg, so each stream is attributed (see proxy_media_per_call).
    let topo = Topology::up(SbcMode::TopologyHiding)?;
    let [a, b] = topo.sbc_ifaces();
    let mut cap_carrier = topo.capture(a)?;
    let mut cap_pbx = topo.capture(b)?;
    let agent = Agent::start(&topo.sbc.name, &[a, b], &[])?;
    let o = CallOptions {
        duration: Duration::from_secs(3),
        loss: 0.02,
        jitter: Duration::from_millis(20),
        ..CallOptions::default()
    };
    let r = topo.run_calls(Scenario::Answered, 2, &o)?;
    r.check_all_ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let cdrs = cdrs_of(&agent.stop()?);
    let mut tshark: Vec<(&str, RtpStreamStat)> = Vec::new();
    let carrier = cap_carrier.rtp_streams()?;
    let pbx = cap_pbx.rtp_streams()?;
    tshark.extend(carrier.into_iter().map(|s| ("carrier-side", s)));
    tshark.extend(pbx.into_iter().map(|s| ("pbx-side", s)));
    ensure!(
        cdrs.len() == 4,
        "{} CDRs:\n{}",
        cdrs.len(),
        all_brief(&cdrs)
    );
    // Each leg's SIP ladder is its Call-ID's messages as tshark dissected them on the
    // interface that leg crossed (topology hiding: one Call-ID per leg and interface; the
    // CDR's Call-ID is a pseudonym, so the ladders are compared as a set).
    let mut theirs: Vec<Vec<String>> = cap_carrier
        .sip_ladders()?
        .into_values()
        .chain(cap_pbx.sip_ladders()?.into_values())
        .collect();
    let mut ours: Vec<Vec<String>> = cdrs
        .iter()
        .map(|c| {
            c.get("ladder")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|step| s(&step["message"], "method_or_status").to_owned())
                .collect()
        })
        .collect();
    theirs.sort();
    ours.sort();
    ensure!(
        ours == theirs,
        "SIP ladders: agent {ours:?}\ntshark {theirs:?}"
    );

    let mut report = Vec::new();
    let mut matched = 0;
    let mut lossy = 0;
    for c in &cdrs {
        for l in c
            .get("media")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (ssrc, sp, dp) = (u(l, "ssrc"), u(l, "src_port"), u(l, "dst_port"));
            let Some((side, t)) = tshark.iter().find(|(_, t)| {
                u64::from(t.ssrc) == ssrc
                    && u64::from(t.src.port()) == sp
                    && u64::from(t.dst.port()) == dp
            }) else {
                bail!(
                    "a CDR stream tshark did not see: ssrc {ssrc:#x} {sp}->{dp}\n{}\ntshark: {tshark:?}",
                    brief(c)
                );
            };
            matched += 1;
            let packets = u(l, "packets");
            let lost = l.get("lost").and_then(Value::as_i64).unwrap_or(i64::MIN);
            let jit = l
                .get("mean_jitter_ms")
                .and_then(Value::as_f64)
                .unwrap_or(-1.0);
            if t.lost > 0 {
                lossy += 1;
            }
            let ok_pk = packets == t.packets;
            let ok_lost = lost == t.lost;
            // 5 %, but never finer than 5 µs: tshark reads the capture's microsecond
            // timestamps (taken at the packet socket), the agent the kernel's at its hook,
            // so a clean stream's few-µs jitter differs by their quantisation alone.
            let ok_jit = close(jit, t.mean_jitter_ms, (0.05 * t.mean_jitter_ms).max(0.005));
            if !(ok_pk && ok_lost && ok_jit) {
                report.push(format!(
                    "{} on the {side} interface ssrc {ssrc:#x} {sp}->{dp} toward rtpengine {}: \
                     agent packets {packets} lost {lost} jitter {jit:.3} ms; tshark packets {} \
                     lost {} jitter {:.3} ms",
                    s(l, "direction"),
                    RTP_PORTS.contains(&(dp as u16)),
                    t.packets,
                    t.lost,
                    t.mean_jitter_ms
                ));
            }
        }
    }
    // Two calls, each with two directions on two legs.
    ensure!(
        matched == 8,
        "{matched} streams matched:\n{}",
        all_brief(&cdrs)
    );
    ensure!(
        lossy >= 1,
        "2% loss over 200 packets showed nowhere in tshark: {tshark:?}"
    );
    ensure!(report.is_empty(), "disagreements:\n{}", report.join("\n"));
    Ok(())
}
