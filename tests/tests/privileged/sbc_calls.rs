//! Calls through the test SBC (Kamailio + rtpengine between a sipp carrier and a sipp PBX, in
//! namespaces): every outcome ends as sipp on both sides expects, the media is anchored on the
//! SBC, the Call-ID is kept across the two legs by the proxy and changed by topology hiding,
//! and the impairments show in tshark's RTP analysis. The references are sipp's own
//! statistics and tshark's dissection of captures on the SBC's two interfaces.
use std::{collections::BTreeSet, time::Duration};

use anyhow::{ensure, Context, Result};
use collector_tests::sbc::{
    CallOptions, RtpStreamStat, SbcMode, Scenario, SippResult, Topology, CARRIER_IP, CARRIER_SSRC,
    PBX_IP, PBX_SSRC, RTP_PORTS, SBC_CARRIER_IP, SBC_PBX_IP,
};

fn options() -> CallOptions {
    CallOptions {
        duration: Duration::from_millis(1200),
        ring: Duration::from_millis(400),
        ..CallOptions::default()
    }
}

/// The calls of each outcome this test runs.
fn calls(s: Scenario) -> u32 {
    match s {
        Scenario::HoldResume => 2,
        Scenario::Answered | Scenario::Busy | Scenario::Cancelled | Scenario::NoAnswer => 3,
    }
}

/// sipp's own verdict: every call ran its scenario to the end on both sides, and the
/// messages that make the outcome were exchanged once per call.
fn check_outcome(r: &SippResult, o: &CallOptions) -> Result<()> {
    let n = u64::from(r.calls);
    let s = r.scenario;
    let ctx = || {
        format!(
            "{s:?}: uac {:?}/{:?} errors {:?}; uas {:?}/{:?} errors {:?}; traces in {}",
            r.uac.exit_code,
            r.uac.messages,
            r.uac.errors,
            r.uas.exit_code,
            r.uas.messages,
            r.uas.errors,
            r.dir.display()
        )
    };
    ensure!(
        r.uac.created == n,
        "caller created {} calls; {}",
        r.uac.created,
        ctx()
    );
    ensure!(
        r.uac.successful == n && r.uac.failed == 0,
        "caller: {} successful, {} failed; {}",
        r.uac.successful,
        r.uac.failed,
        ctx()
    );
    ensure!(
        r.uas.successful == n && r.uas.failed == 0,
        "callee: {} successful, {} failed; {}",
        r.uas.successful,
        r.uas.failed,
        ctx()
    );
    ensure!(
        r.uac.exit_code == Some(0) && r.uas.exit_code == Some(0),
        "{}",
        ctx()
    );
    ensure!(
        r.uac.sent("INVITE") >= n && r.uas.received("INVITE") >= n,
        "{}",
        ctx()
    );
    let status = s.final_status().to_string();
    // The callee's final answer reached the caller through the SBC.
    ensure!(r.uas.sent(&status) >= n, "callee sent {status}; {}", ctx());
    ensure!(
        r.uac.received(&status) >= n,
        "caller got {status}; {}",
        ctx()
    );
    // Per call: INVITE to final response, from sipp's response-time trace.
    let setup = r.uac.rtd_ms("setup");
    ensure!(
        setup.len() == r.calls as usize,
        "setup times {setup:?}; {}",
        ctx()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match s {
        Scenario::Answered | Scenario::HoldResume => {
            let phases = if s == Scenario::HoldResume { 3.0 } else { 1.0 };
            let call = r.uac.rtd_ms("call");
            ensure!(call.len() == r.calls as usize, "call times {call:?}");
            for c in &call {
                // The pauses are sipp's own; setup and teardown add milliseconds.
                ensure!(
                    *c >= phases * ms(o.duration) && *c < phases * ms(o.duration) + 1000.0,
                    "call of {c} ms for {phases} x {:?}",
                    o.duration
                );
            }
            ensure!(r.uas.received("BYE") == n, "{}", ctx());
            ensure!(
                r.uac.received("200") == n * (phases as u64 + 1),
                "{}",
                ctx()
            );
            if s == Scenario::HoldResume {
                // The two re-INVITEs (hold, resume) made it to the PBX and were answered.
                ensure!(r.uas.received("INVITE") == 3 * n, "{}", ctx());
                ensure!(r.uas.sent("200") == 4 * n, "{}", ctx());
            }
        }
        Scenario::Busy => {
            ensure!(
                r.uas.received("ACK") == n,
                "the 486 was acknowledged; {}",
                ctx()
            );
        }
        Scenario::Cancelled => {
            ensure!(
                r.uac.sent("CANCEL") == n && r.uas.received("CANCEL") == n,
                "{}",
                ctx()
            );
            for t in &setup {
                ensure!(
                    *t >= ms(o.ring),
                    "cancelled after {t} ms, ring {:?}",
                    o.ring
                );
            }
        }
        Scenario::NoAnswer => {
            for t in &setup {
                ensure!(*t >= ms(o.ring), "480 after {t} ms, ring {:?}", o.ring);
            }
        }
    }
    Ok(())
}

/// Every RTP stream on a leg runs between the peer's media port and an rtpengine port of the
/// SBC: the media is anchored, never direct between carrier and PBX.
fn check_anchored(
    streams: &[RtpStreamStat],
    peer: std::net::Ipv4Addr,
    sbc: std::net::Ipv4Addr,
) -> Result<()> {
    ensure!(!streams.is_empty(), "no RTP on the leg of {peer}");
    for st in streams {
        let (p, s) = if st.src.ip() == &peer {
            (st.src, st.dst)
        } else {
            (st.dst, st.src)
        };
        ensure!(
            p.ip() == &peer && s.ip() == &sbc && RTP_PORTS.contains(&s.port()),
            "stream {st:?} not anchored on the SBC"
        );
    }
    Ok(())
}

fn run_mode(mode: SbcMode) -> Result<()> {
    let topo = Topology::up(mode)?;
    let mut cap_carrier = topo.capture(&topo.sbc_carrier_if)?;
    let mut cap_pbx = topo.capture(&topo.sbc_pbx_if)?;
    let o = options();
    let mut total = 0;
    for s in Scenario::ALL {
        let r = topo
            .run_calls(s, calls(s), &o)
            .with_context(|| format!("{mode:?} {s:?}\n{}", topo.diagnostics()))?;
        check_outcome(&r, &o).with_context(|| format!("{mode:?}\n{}", topo.diagnostics()))?;
        total += calls(s) as usize;
    }

    let ids_carrier = cap_carrier.sip_call_ids()?;
    let ids_pbx = cap_pbx.sip_call_ids()?;
    ensure!(
        ids_carrier.len() == total && ids_pbx.len() == total,
        "{mode:?}: {} Call-IDs towards the carrier, {} towards the PBX, {total} calls",
        ids_carrier.len(),
        ids_pbx.len()
    );
    match mode {
        SbcMode::Proxy => ensure!(
            ids_carrier == ids_pbx,
            "the proxy changed Call-IDs: {:?}",
            ids_carrier
                .symmetric_difference(&ids_pbx)
                .collect::<BTreeSet<_>>()
        ),
        SbcMode::TopologyHiding => ensure!(
            ids_carrier.is_disjoint(&ids_pbx),
            "topology hiding kept Call-IDs: {:?}",
            ids_carrier.intersection(&ids_pbx).collect::<BTreeSet<_>>()
        ),
    }
    check_anchored(&cap_carrier.rtp_streams()?, CARRIER_IP, SBC_CARRIER_IP)?;
    check_anchored(&cap_pbx.rtp_streams()?, PBX_IP, SBC_PBX_IP)?;
    Ok(())
}

#[test]
fn calls_through_the_proxy_keep_their_call_id() -> Result<()> {
    run_mode(SbcMode::Proxy)
}

#[test]
fn calls_through_topology_hiding_change_their_call_id() -> Result<()> {
    run_mode(SbcMode::TopologyHiding)
}

/// Loss and jitter on the PBX's media show where tshark looks for them: jitter in the streams
/// the PBX sends, as they arrive at the SBC and as the SBC forwards them to the carrier; loss
/// (made inside the SBC, after its PBX-facing interface) in the forwarded streams only; and
/// neither in the carrier's streams.
#[test]
fn impairments_show_in_the_pbx_media_only() -> Result<()> {
    let topo = Topology::up(SbcMode::Proxy)?;
    let mut cap_carrier = topo.capture(&topo.sbc_carrier_if)?;
    let mut cap_pbx = topo.capture(&topo.sbc_pbx_if)?;
    let o = CallOptions {
        duration: Duration::from_secs(3),
        loss: 0.2,
        jitter: Duration::from_millis(40),
        ..CallOptions::default()
    };
    let r = topo.run_calls(Scenario::Answered, 2, &o)?;
    check_outcome(&r, &o)?;
    let mut pbx_streams = 0;
    let mut carrier_streams = 0;
    let pbx_leg = cap_pbx.rtp_streams()?;
    let carrier_leg = cap_carrier.rtp_streams()?;
    for (st, forwarded) in pbx_leg
        .iter()
        .map(|s| (s, false))
        .chain(carrier_leg.iter().map(|s| (s, true)))
    {
        match st.ssrc {
            PBX_SSRC => {
                pbx_streams += 1;
                // 3 s of 30 ms packets: 100 sent per stream.
                if forwarded {
                    // 20% of 100: fewer than 5 or more than 45 has a chance below 1e-4. Lost
                    // counts gaps between the first and last packet seen, so it may miss a
                    // few dropped at the very end.
                    ensure!(
                        st.packets <= 95
                            && st.packets >= 55
                            && st.lost >= 5
                            && st.packets + st.lost.max(0) as u64 <= 100,
                        "forwarded PBX stream lost {}: {st:?}",
                        st.lost
                    );
                } else {
                    ensure!(
                        st.packets == 100 && st.lost == 0,
                        "the PBX leg lost packets on the wire: {st:?}"
                    );
                }
                // RFC 3550 jitter of a uniform 0-40 ms delay converges near 13 ms.
                ensure!(st.mean_jitter_ms > 5.0, "PBX stream jitter: {st:?}");
            }
            CARRIER_SSRC => {
                carrier_streams += 1;
                ensure!(st.lost == 0, "carrier stream lost packets: {st:?}");
                ensure!(st.mean_jitter_ms < 5.0, "carrier stream jitter: {st:?}");
            }
            other => anyhow::bail!("unexpected SSRC {other:#x}: {st:?}"),
        }
    }
    // Two calls, each stream seen on both legs.
    ensure!(
        pbx_streams == 4 && carrier_streams == 4,
        "{pbx_streams} PBX, {carrier_streams} carrier streams"
    );
    Ok(())
}
