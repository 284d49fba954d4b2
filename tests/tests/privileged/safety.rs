//! Passive and safe: a full ring buffer costs counted samples, never a packet; the programs
//! load in both XDP modes and leave nothing attached when the agent stops.
use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use anyhow::{ensure, Result};
use collector_tests::{
    counter, final_counters, programs_still_loaded, xdp_attached, Agent, VethPair,
};

fn invite(i: usize) -> Vec<u8> {
    let pad = "x".repeat(500);
    format!(
        "INVITE sip:ring{i}@198.18.4.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.4.1;branch=z9hG4bK{i}\r\nCall-ID: ring-{i}\r\nCSeq: 1 INVITE\r\nX-Pad: {pad}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn send(pair: &VethPair, range: std::ops::Range<usize>) -> Result<()> {
    let (a, b) = (pair.addr_a.clone(), pair.addr_b.clone());
    pair.a.run(move || {
        let s = UdpSocket::bind((a.as_str(), 0))?;
        for i in range {
            s.send_to(&invite(i), (b.as_str(), 5060))?;
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    })
}

fn receive_all(sock: &UdpSocket, n: usize) -> Result<Vec<Vec<u8>>> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while got.len() < n && Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            got.push(buf[..len].to_vec());
        }
    }
    Ok(got)
}

#[test]
fn a_full_ring_is_counted_and_the_traffic_is_untouched() -> Result<()> {
    const N: usize = 300;
    let pair = VethPair::new(4)?;
    let b = pair.addr_b.clone();
    let rx = pair
        .b
        .run(move || Ok(UdpSocket::bind((b.as_str(), 5060))?))?;
    // A 4 KiB ring holds about six of these INVITEs; the paused agent reads none of them.
    let agent = Agent::start(
        &pair.b.name,
        &[&pair.if_b],
        &["--print-events", "--ring-bytes", "4096"],
    )?;
    agent.signal(libc::SIGSTOP)?;
    // Receive on another thread while sending, so the socket buffer never overflows.
    let rx2 = rx.try_clone()?;
    let receiver = std::thread::spawn(move || receive_all(&rx2, N));
    send(&pair, 0..N)?;
    let got = match receiver.join() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("receiver thread panicked"),
    };
    let want: Vec<_> = (0..N).map(invite).collect();
    assert_eq!(got.len(), N, "packets lost while the ring was full");
    assert_eq!(got, want, "packets changed while the ring was full");
    agent.signal(libc::SIGCONT)?;
    std::thread::sleep(Duration::from_millis(200));
    // The agent recovers without a restart: the next packets are copied again.
    send(&pair, N..N + 5)?;
    let after = receive_all(&rx, 5)?;
    assert_eq!(after.len(), 5);
    std::thread::sleep(Duration::from_millis(300));
    let lines = agent.stop()?;
    let c = final_counters(&lines)?;
    let copied = counter(&c, "sip_copied");
    let full = counter(&c, "ring_full");
    assert!(full > 0, "the tiny ring never filled: {c:?}");
    assert_eq!(
        copied + full,
        (N + 5) as u64,
        "every SIP packet copied or counted: {c:?}"
    );
    let events = lines.iter().filter(|v| v.get("kind").is_some()).count() as u64;
    assert_eq!(
        events, copied,
        "every copied packet was read after the pause"
    );
    ensure!(copied >= 5, "nothing copied after the agent resumed: {c:?}");
    Ok(())
}

#[test]
fn programs_load_in_both_xdp_modes_and_detach_cleanly() -> Result<()> {
    let pair = VethPair::new(5)?;
    for (mode, hook) in [("generic", "xdp-generic"), ("native", "xdp-native")] {
        let agent = Agent::start(&pair.b.name, &[&pair.if_b], &["--xdp-mode", mode])?;
        let hooks: Vec<_> = agent.ready["attachments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["hook"].as_str())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(hooks, vec![hook.to_owned(), "tc-egress".to_owned()]);
        ensure!(
            xdp_attached(&pair.b.name, &pair.if_b)?,
            "{mode}: nothing attached"
        );
        let programs = agent.program_ids()?;
        ensure!(
            programs.len() >= 2,
            "{mode}: the agent holds programs {programs:?}"
        );
        let lines = agent.stop()?;
        ensure!(final_counters(&lines).is_ok(), "{mode}: no final counters");
        ensure!(
            !xdp_attached(&pair.b.name, &pair.if_b)?,
            "{mode}: XDP still attached after stop"
        );
        let left = programs_still_loaded(&programs)?;
        ensure!(left.is_empty(), "{mode}: programs still loaded: {left:?}");
    }
    Ok(())
}
