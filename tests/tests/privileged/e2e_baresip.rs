//! End to end through the real SBC (Kamailio with topology hiding + rtpengine) with a second,
//! independent SIP stack: baresip places the calls in the carrier namespace and baresip
//! answers them in the PBX namespace, while the real `collector agent` watches the SBC's two
//! interfaces. The references, none of them the agent's: tshark's `rtp,streams` on captures
//! of the same two interfaces (per stream: packets and lost exactly, mean jitter within 5%),
//! and baresip's own record of each call (ctrl_tcp events stamped on arrival: dial, answer,
//! close; and the RTP summary it prints at hangup).
//!
//! Topology hiding gives each leg its own Call-ID, so the agent writes one CDR per leg and
//! must link the two by signalling (`correlation_method` "signalling"). The last tests run
//! two calls at once between the same two numbers and check that the agent never merges or
//! cross-links them.
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use collector_tests::{
    baresip::{Baresip, CallSummary, Event, UaConfig},
    sbc::{RtpStreamStat, SbcMode, Topology, CARRIER_IP, PBX_IP, RTP_PORTS, SBC_CARRIER_IP},
    Agent,
};
use serde_json::Value;

/// The caller's number (URI user), both calls of the concurrent tests included.
const CALLER: &str = "4930555001";
/// The callee's number.
const CALLEE: &str = "4940555002";
const CTRL_PORT: u16 = 4444;
const CALLER_TO_CALLEE: &str = "MEDIA_DIRECTION_CALLER_TO_CALLEE";
const CALLEE_TO_CALLER: &str = "MEDIA_DIRECTION_CALLEE_TO_CALLER";

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The final CDR lines among the agent's output.
fn cdrs_of(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|v| v.get("call_id").is_some() && !v.get("interim").is_some_and(|i| i == true))
        .cloned()
        .collect()
}

fn media(c: &Value) -> Vec<&Value> {
    c.get("media")
        .and_then(Value::as_array)
        .map(|m| m.iter().collect())
        .unwrap_or_default()
}

fn brief(c: &Value) -> String {
    let m: Vec<String> = media(c)
        .iter()
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
        .collect();
    format!(
        "{} {} dur {} bill {} corr {} ({}) media [{}]",
        s(c, "disposition"),
        u(c, "final_code"),
        u(c, "duration_ms"),
        u(c, "billable_ms"),
        s(c, "correlation_id").get(..8).unwrap_or(""),
        s(c, "correlation_method"),
        m.join("; ")
    )
}

fn all_brief(cdrs: &[Value]) -> String {
    cdrs.iter().map(brief).collect::<Vec<_>>().join("\n")
}

/// Which side of the SBC a leg is on, from its media ports: the carrier-side leg's caller
/// sends to rtpengine, the PBX-side leg's caller is rtpengine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Enters the SBC from the carrier.
    Carrier,
    /// Leaves the SBC towards the PBX.
    Pbx,
}

fn side_of(c: &Value) -> Option<Side> {
    let l = media(c)
        .into_iter()
        .find(|l| s(l, "direction") == CALLER_TO_CALLEE)?;
    let (sp, dp) = (u(l, "src_port") as u16, u(l, "dst_port") as u16);
    match (RTP_PORTS.contains(&sp), RTP_PORTS.contains(&dp)) {
        (false, true) => Some(Side::Carrier),
        (true, false) => Some(Side::Pbx),
        _ => None,
    }
}

/// The one stream of `dir` in a CDR.
fn stream<'a>(c: &'a Value, dir: &str) -> Result<&'a Value> {
    let m: Vec<&Value> = media(c)
        .into_iter()
        .filter(|l| s(l, "direction") == dir)
        .collect();
    ensure!(m.len() == 1, "{} streams {dir}:\n{}", m.len(), brief(c));
    m.into_iter().next().context("no stream")
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1000.0
}

fn caller_ua(topo: &Topology, sip_port: u16) -> UaConfig {
    UaConfig {
        user: CALLER.into(),
        ip: CARRIER_IP,
        iface: topo.carrier_if.clone(),
        sip_port,
        ctrl_port: CTRL_PORT + (sip_port - 5060),
        auto_answer: false,
    }
}

fn callee_ua(topo: &Topology) -> UaConfig {
    UaConfig {
        user: CALLEE.into(),
        ip: PBX_IP,
        iface: topo.pbx_if.clone(),
        sip_port: 5060,
        ctrl_port: CTRL_PORT,
        auto_answer: true,
    }
}

fn target() -> String {
    format!("sip:{CALLEE}@{SBC_CARRIER_IP}")
}

/// One call as baresip saw it: when it dialled, was answered and closed (caller side), and
/// when the callee saw the answer and the close.
struct Timeline {
    dial: Instant,
    answered: Event,
    closed: Event,
    callee_answered: Event,
    callee_closed: Event,
}

/// One baresip call of `talk` through the SBC with `loss` on the PBX's media, checked
/// against tshark and baresip.
fn one_call(talk: Duration, loss: f64) -> Result<()> {
    let topo = Topology::up(SbcMode::TopologyHiding)?;
    let mut callee = Baresip::start(&topo.pbx, callee_ua(&topo), &topo.dir().join("callee"))?;
    let mut caller = Baresip::start(
        &topo.carrier,
        caller_ua(&topo, 5060),
        &topo.dir().join("caller"),
    )?;
    let [a, b] = topo.sbc_ifaces();
    let mut cap_carrier = topo.capture(a)?;
    let mut cap_pbx = topo.capture(b)?;
    let agent = Agent::start(&topo.sbc.name, &[a, b], &[])?;
    let loss_rule = if loss > 0.0 {
        Some(topo.pbx_media_loss(loss)?)
    } else {
        None
    };

    let wait = Duration::from_secs(10);
    let dial = caller.dial(&target())?;
    let answered = caller
        .wait_event("CALL_ESTABLISHED", 1, wait)
        .with_context(|| topo.diagnostics())?;
    let callee_answered = callee.wait_event("CALL_ESTABLISHED", 1, wait)?;
    std::thread::sleep((answered.at + talk).saturating_duration_since(Instant::now()));
    caller.hangup()?;
    let closed = caller.wait_event("CALL_CLOSED", 1, wait)?;
    let callee_closed = callee.wait_event("CALL_CLOSED", 1, wait)?;
    let t = Timeline {
        dial,
        answered,
        closed,
        callee_answered,
        callee_closed,
    };
    // Let the last RTP and the BYE's 200 cross the SBC.
    std::thread::sleep(Duration::from_millis(500));
    drop(loss_rule);
    let caller_calls = caller.finish()?;
    let callee_calls = callee.finish()?;
    let lines = agent.stop()?;
    let cdrs = cdrs_of(&lines);
    let carrier = cap_carrier.rtp_streams()?;
    let pbx = cap_pbx.rtp_streams()?;

    let ctx = format!(
        "CDRs:\n{}\ntshark carrier side: {carrier:#?}\ntshark PBX side: {pbx:#?}\nbaresip caller {caller_calls:?} callee {callee_calls:?}\nfiles in {}",
        all_brief(&cdrs),
        topo.dir().display()
    );
    check_one_call(
        &cdrs,
        &carrier,
        &pbx,
        &caller_calls,
        &callee_calls,
        &t,
        loss,
    )
    .with_context(|| ctx)
}

fn check_one_call(
    cdrs: &[Value],
    carrier: &[RtpStreamStat],
    pbx: &[RtpStreamStat],
    caller_calls: &[CallSummary],
    callee_calls: &[CallSummary],
    t: &Timeline,
    loss: f64,
) -> Result<()> {
    ensure!(
        cdrs.len() == 2,
        "{} CDRs for one call of two legs",
        cdrs.len()
    );
    ensure!(
        carrier.len() == 2 && pbx.len() == 2,
        "tshark: {} streams on the carrier side, {} on the PBX side (2 each expected)",
        carrier.len(),
        pbx.len()
    );
    let leg = |side: Side| -> Result<&Value> {
        let v: Vec<&Value> = cdrs.iter().filter(|c| side_of(c) == Some(side)).collect();
        ensure!(v.len() == 1, "{} CDRs on the {side:?} side", v.len());
        v.into_iter().next().context("no leg")
    };
    let c_leg = leg(Side::Carrier)?;
    let p_leg = leg(Side::Pbx)?;
    for c in [c_leg, p_leg] {
        ensure!(
            s(c, "disposition") == "DISPOSITION_ANSWERED" && u(c, "final_code") == 200,
            "not answered: {}",
            brief(c)
        );
    }
    ensure!(
        !s(c_leg, "correlation_id").is_empty()
            && s(c_leg, "correlation_id") == s(p_leg, "correlation_id")
            && s(c_leg, "call_id") != s(p_leg, "call_id"),
        "the two legs are not linked (or share a Call-ID)"
    );
    ensure!(
        s(c_leg, "correlation_method") == "signalling"
            && s(p_leg, "correlation_method") == "signalling",
        "correlation methods {} / {}, signalling expected",
        s(c_leg, "correlation_method"),
        s(p_leg, "correlation_method")
    );

    // Every stream against tshark on the interface it crossed.
    let mut report = Vec::new();
    for (c, wire, side) in [(c_leg, carrier, "carrier"), (p_leg, pbx, "PBX")] {
        for dir in [CALLER_TO_CALLEE, CALLEE_TO_CALLER] {
            let l = stream(c, dir)?;
            let (ssrc, sp, dp) = (u(l, "ssrc"), u(l, "src_port"), u(l, "dst_port"));
            let Some(w) = wire.iter().find(|w| {
                u64::from(w.ssrc) == ssrc
                    && u64::from(w.src.port()) == sp
                    && u64::from(w.dst.port()) == dp
            }) else {
                report.push(format!(
                    "{dir} on the {side} side: ssrc {ssrc:#x} {sp}->{dp} is not in tshark"
                ));
                continue;
            };
            let packets = u(l, "packets");
            let lost = l.get("lost").and_then(Value::as_i64).unwrap_or(i64::MIN);
            let jit = l
                .get("mean_jitter_ms")
                .and_then(Value::as_f64)
                .unwrap_or(-1.0);
            let jit_ok = (jit - w.mean_jitter_ms).abs() <= 0.05 * w.mean_jitter_ms.max(0.02);
            if packets != w.packets || lost != w.lost || !jit_ok {
                report.push(format!(
                    "{dir} on the {side} side ({sp}->{dp}): agent packets {packets} lost {lost} \
                     jitter {jit:.3} ms; tshark packets {} lost {} jitter {:.3} ms",
                    w.packets, w.lost, w.mean_jitter_ms
                ));
            }
        }
    }
    if loss > 0.0 {
        let lost: i64 = carrier.iter().map(|w| w.lost.max(0)).sum();
        ensure!(
            lost > 0,
            "{loss} loss on the PBX's media showed in no carrier-side stream"
        );
    }

    // baresip's own record.
    ensure!(
        caller_calls.len() == 1 && callee_calls.len() == 1,
        "baresip printed {} caller and {} callee call summaries",
        caller_calls.len(),
        callee_calls.len()
    );
    let (me, them) = (&caller_calls[0], &callee_calls[0]);
    let pk = |c: &Value, dir: &str| stream(c, dir).map(|l| u(l, "packets"));
    // What baresip sent is on the wire exactly. What it received is counted until its call
    // ends: a packet already in flight when the BYE goes out reaches the wire (tshark, and
    // the agent, count it: checked exactly above) after baresip stopped receiving. So its
    // receive count is the agent's, or at most a packetisation interval or two short.
    const IN_FLIGHT_AT_HANGUP: u64 = 2;
    for (what, agent, baresip) in [
        (
            "caller sent (carrier side)",
            pk(c_leg, CALLER_TO_CALLEE)?,
            me.tx_packets,
        ),
        (
            "caller received (carrier side)",
            pk(c_leg, CALLEE_TO_CALLER)?,
            me.rx_packets,
        ),
        (
            "callee sent (PBX side)",
            pk(p_leg, CALLEE_TO_CALLER)?,
            them.tx_packets,
        ),
        (
            "callee received (PBX side)",
            pk(p_leg, CALLER_TO_CALLEE)?,
            them.rx_packets,
        ),
    ] {
        let agrees = if what.contains("received") {
            (baresip..=baresip + IN_FLIGHT_AT_HANGUP).contains(&agent)
        } else {
            agent == baresip
        };
        if !agrees {
            report.push(format!("{what}: agent {agent} packets, baresip {baresip}"));
        }
    }
    if let Some((_, rx_lost)) = me.lost {
        let agent = stream(c_leg, CALLEE_TO_CALLER)?
            .get("lost")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MIN);
        // baresip prints its receive loss as of its last RTCP report (its `pkt.report:`
        // line), not at hangup: a lower bound of the final count, which tshark checks
        // exactly above.
        if agent < rx_lost {
            report.push(format!(
                "caller's receive loss: agent {agent}, baresip already {rx_lost} at its last report"
            ));
        }
    }
    // Durations: the CDR's INVITE-to-end against baresip's dial-to-close, its answer-to-end
    // against baresip's answer-to-close (caller for the carrier leg, callee for the PBX leg).
    let call_ms = ms_between(t.dial, t.closed.at);
    let talk_ms = ms_between(t.answered.at, t.closed.at);
    let callee_talk_ms = ms_between(t.callee_answered.at, t.callee_closed.at);
    for (c, side, talk) in [(c_leg, "carrier", talk_ms), (p_leg, "PBX", callee_talk_ms)] {
        let (dur, bill) = (u(c, "duration_ms") as f64, u(c, "billable_ms") as f64);
        if (dur - call_ms).abs() > 100.0 || (bill - talk).abs() > 100.0 {
            report.push(format!(
                "{side} leg: agent duration {dur} ms billable {bill} ms; baresip dial to close \
                 {call_ms:.0} ms, answer to close {talk:.0} ms"
            ));
        }
        // baresip prints whole seconds of the answered call.
        let secs = if side == "carrier" {
            me.duration_s
        } else {
            them.duration_s
        };
        if (bill / 1000.0 - secs as f64).abs() >= 1.1 {
            report.push(format!(
                "{side} leg: agent billable {bill} ms, baresip printed {secs} s"
            ));
        }
    }
    ensure!(report.is_empty(), "disagreements:\n{}", report.join("\n"));
    Ok(())
}

#[test]
fn baresip_call_matches_tshark_and_baresip() -> Result<()> {
    one_call(Duration::from_secs(4), 0.0)
}

#[test]
fn baresip_call_with_loss_matches_tshark_and_baresip() -> Result<()> {
    one_call(Duration::from_secs(6), 0.05)
}

/// Two calls at once from the same number to the same number (two baresip callers in the
/// carrier, one baresip answering both in the PBX), the second dialled `stagger` after the
/// first, hung up after `talks` of talk each.
/// With `linked`, each call's two legs must also share a correlation id.
fn two_calls(stagger: Duration, talks: [Duration; 2], linked: bool) -> Result<()> {
    let topo = Topology::up(SbcMode::TopologyHiding)?;
    let mut callee = Baresip::start(&topo.pbx, callee_ua(&topo), &topo.dir().join("callee"))?;
    let mut callers = [
        Baresip::start(
            &topo.carrier,
            caller_ua(&topo, 5060),
            &topo.dir().join("caller0"),
        )?,
        Baresip::start(
            &topo.carrier,
            caller_ua(&topo, 5062),
            &topo.dir().join("caller1"),
        )?,
    ];
    let [a, b] = topo.sbc_ifaces();
    let agent = Agent::start(&topo.sbc.name, &[a, b], &[])?;

    let wait = Duration::from_secs(10);
    let mut dials = Vec::new();
    for (i, c) in callers.iter_mut().enumerate() {
        if i > 0 && !stagger.is_zero() {
            std::thread::sleep(stagger);
        }
        dials.push(c.dial(&target())?);
    }
    let mut answered = Vec::new();
    for c in &mut callers {
        answered.push(
            c.wait_event("CALL_ESTABLISHED", 1, wait)
                .with_context(|| topo.diagnostics())?,
        );
    }
    callee.wait_event("CALL_ESTABLISHED", 2, wait)?;
    // Hang up in the order the talks end.
    let mut order: Vec<usize> = vec![0, 1];
    order.sort_by_key(|&i| answered[i].at + talks[i]);
    let mut closed: Vec<Option<Event>> = vec![None, None];
    for i in order {
        std::thread::sleep((answered[i].at + talks[i]).saturating_duration_since(Instant::now()));
        callers[i].hangup()?;
        closed[i] = Some(callers[i].wait_event("CALL_CLOSED", 1, wait)?);
    }
    callee.wait_event("CALL_CLOSED", 2, wait)?;
    std::thread::sleep(Duration::from_millis(500));
    let [c0, c1] = callers;
    let summaries = [c0.finish()?, c1.finish()?];
    callee.finish()?;
    let cdrs = cdrs_of(&agent.stop()?);

    // Each call's length per baresip: dial to close.
    let mut call_ms = Vec::new();
    for i in 0..2 {
        let c = closed[i].as_ref().context("a call did not close")?;
        call_ms.push(ms_between(dials[i], c.at));
    }
    let ctx = format!(
        "CDRs:\n{}\nbaresip dial-to-close {call_ms:?} ms; summaries {summaries:?}; files in {}",
        all_brief(&cdrs),
        topo.dir().display()
    );
    check_two_calls(&cdrs, &call_ms, linked).with_context(|| ctx)
}

fn check_two_calls(cdrs: &[Value], call_ms: &[f64], linked: bool) -> Result<()> {
    ensure!(
        cdrs.len() == 4,
        "{} CDRs for two calls of two legs",
        cdrs.len()
    );
    // Which call each CDR belongs to, by its duration (the calls differ by over a second).
    let mut call_of = Vec::new();
    for c in cdrs {
        let d = u(c, "duration_ms") as f64;
        let (i, diff) = call_ms
            .iter()
            .enumerate()
            .map(|(i, m)| (i, (m - d).abs()))
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .context("no calls")?;
        ensure!(
            diff <= 100.0,
            "a CDR of {d} ms matches no call: {}",
            brief(c)
        );
        call_of.push(i);
    }
    for i in 0..2 {
        let sides: Vec<Option<Side>> = cdrs
            .iter()
            .zip(&call_of)
            .filter(|(_, k)| **k == i)
            .map(|(c, _)| side_of(c))
            .collect();
        ensure!(
            sides.len() == 2
                && sides.contains(&Some(Side::Carrier))
                && sides.contains(&Some(Side::Pbx)),
            "call {i}: legs on sides {sides:?}, one carrier-side and one PBX-side expected"
        );
    }
    let mut by_corr: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (k, c) in cdrs.iter().enumerate() {
        let id = s(c, "correlation_id");
        if !id.is_empty() {
            by_corr.entry(id).or_default().push(k);
        }
    }
    for (id, legs) in &by_corr {
        ensure!(
            legs.len() <= 2,
            "correlation id {id} on {} legs",
            legs.len()
        );
        if legs.len() == 2 {
            let (x, y) = (&cdrs[legs[0]], &cdrs[legs[1]]);
            ensure!(
                call_of[legs[0]] == call_of[legs[1]],
                "correlation id {id} links legs of different calls"
            );
            let (dx, dy) = (u(x, "duration_ms"), u(y, "duration_ms"));
            ensure!(
                dx.abs_diff(dy) <= 50,
                "correlation id {id}: durations {dx} and {dy} ms"
            );
            let sides = [side_of(x), side_of(y)];
            ensure!(
                sides.contains(&Some(Side::Carrier)) && sides.contains(&Some(Side::Pbx)),
                "correlation id {id}: legs on sides {sides:?}"
            );
        }
    }
    if linked {
        let pairs = by_corr.values().filter(|l| l.len() == 2).count();
        ensure!(pairs == 2, "{pairs} calls of 2 have their legs linked");
    }
    Ok(())
}

/// Both INVITEs enter the SBC before either leaves: two unlinked incoming legs match the
/// first outgoing one, so the agent may link nothing, but must never link wrongly.
#[test]
fn two_simultaneous_calls_same_numbers_never_merged() -> Result<()> {
    two_calls(
        Duration::ZERO,
        [Duration::from_millis(1500), Duration::from_secs(3)],
        false,
    )
}

/// The second call starts 300 ms after the first: each INVITE is the only unlinked incoming
/// one when its outgoing copy appears, so both calls must be linked, each to itself.
#[test]
fn two_staggered_calls_same_numbers_never_merged() -> Result<()> {
    two_calls(
        Duration::from_millis(300),
        [Duration::from_secs(3), Duration::from_millis(1500)],
        true,
    )
}
