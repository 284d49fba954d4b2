//! The programs attached to a veth see every packet both ways, copy SIP to userspace
//! byte-identical, leave every packet unmodified, and detach cleanly.
use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use collector_tests::{
    counter, final_counters, fnv1a, programs_still_loaded, xdp_attached, Agent, VethPair,
};

const N_IN: usize = 40; // A -> B: arrive on B's veth (XDP ingress)
const N_OUT: usize = 25; // B -> A: leave through B's veth (TC egress)
const N_OTHER: usize = 10; // A -> B, not SIP

fn sip_payload(i: usize, request: bool) -> Vec<u8> {
    if request {
        format!(
            "OPTIONS sip:probe{i}@198.18.1.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.1.1:5060;branch=z9hG4bK{i}\r\nCall-ID: veth-{i}\r\nCSeq: {i} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    } else {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.1.1:5060;branch=z9hG4bK{i}\r\nCall-ID: veth-{i}\r\nCSeq: {i} OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }
}

/// Receives `n` datagrams on `sock` (bounded in time).
fn receive(sock: &UdpSocket, n: usize) -> Result<Vec<Vec<u8>>> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < n && Instant::now() < deadline {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            got.push(buf[..len].to_vec());
        }
    }
    Ok(got)
}

#[test]
fn counts_every_packet_both_ways_and_passes_them_unmodified() -> Result<()> {
    let pair = VethPair::new(1)?;
    let (addr_a, addr_b) = (pair.addr_a.clone(), pair.addr_b.clone());
    // Receivers first, so no packet meets a closed port (an ICMP error would be extra traffic).
    let rx_b = {
        let a = addr_b.clone();
        pair.b
            .run(move || Ok(UdpSocket::bind((a.as_str(), 5060))?))?
    };
    let rx_b_other = {
        let a = addr_b.clone();
        pair.b
            .run(move || Ok(UdpSocket::bind((a.as_str(), 4000))?))?
    };
    let rx_a = {
        let a = addr_a.clone();
        pair.a
            .run(move || Ok(UdpSocket::bind((a.as_str(), 5060))?))?
    };
    let agent = Agent::start(&pair.b.name, &[&pair.if_b], &["--print-events"])?;
    ensure!(
        xdp_attached(&pair.b.name, &pair.if_b)?,
        "no XDP program on the veth"
    );
    // The XDP and the TC egress program at least.
    let programs = agent.program_ids()?;
    ensure!(programs.len() >= 2, "the agent holds programs {programs:?}");

    {
        let (a, b) = (addr_a.clone(), addr_b.clone());
        pair.a.run(move || {
            let s = UdpSocket::bind((a.as_str(), 0))?;
            for i in 0..N_IN {
                s.send_to(&sip_payload(i, true), (b.as_str(), 5060))?;
            }
            let o = UdpSocket::bind((a.as_str(), 0))?;
            for i in 0..N_OTHER {
                o.send_to(format!("not sip {i}").as_bytes(), (b.as_str(), 4000))?;
            }
            Ok(())
        })?;
    }
    let got_b = receive(&rx_b, N_IN)?;
    let got_b_other = receive(&rx_b_other, N_OTHER)?;
    {
        let (a, b) = (addr_a.clone(), addr_b.clone());
        pair.b.run(move || {
            let s = UdpSocket::bind((b.as_str(), 0))?;
            for i in 0..N_OUT {
                s.send_to(&sip_payload(i, false), (a.as_str(), 5060))?;
            }
            Ok(())
        })?;
    }
    let got_a = receive(&rx_a, N_OUT)?;
    // Let the agent's 10 ms poll drain the ring before stopping it.
    std::thread::sleep(Duration::from_millis(300));
    let lines = agent.stop()?;

    // Every packet arrived, unmodified.
    let sent_in: Vec<_> = (0..N_IN).map(|i| sip_payload(i, true)).collect();
    let sent_out: Vec<_> = (0..N_OUT).map(|i| sip_payload(i, false)).collect();
    let sent_other: Vec<_> = (0..N_OTHER)
        .map(|i| format!("not sip {i}").into_bytes())
        .collect();
    assert_eq!(
        got_b, sent_in,
        "SIP datagrams A->B arrived changed or incomplete"
    );
    assert_eq!(
        got_a, sent_out,
        "SIP datagrams B->A arrived changed or incomplete"
    );
    assert_eq!(
        got_b_other, sent_other,
        "other datagrams arrived changed or incomplete"
    );

    // The programs saw exactly the packets sent (static neighbours, IPv6 off: nothing else).
    let c = final_counters(&lines)?;
    assert_eq!(counter(&c, "xdp_packets"), (N_IN + N_OTHER) as u64, "{c:?}");
    assert_eq!(counter(&c, "tc_packets"), N_OUT as u64, "{c:?}");
    assert_eq!(counter(&c, "sip_copied"), (N_IN + N_OUT) as u64, "{c:?}");
    assert_eq!(counter(&c, "no_match"), N_OTHER as u64, "{c:?}");
    assert_eq!(counter(&c, "ring_full"), 0, "{c:?}");

    // Userspace got each SIP payload byte-identical, in order, with the right direction.
    let events: Vec<_> = lines
        .iter()
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some("sip"))
        .collect();
    let digests = |dir: &str| -> Vec<String> {
        events
            .iter()
            .filter(|v| v.get("direction").and_then(|d| d.as_str()) == Some(dir))
            .filter_map(|v| v.get("digest").and_then(|d| d.as_str()).map(str::to_owned))
            .collect()
    };
    let want_in: Vec<_> = sent_in.iter().map(|p| fnv1a(p)).collect();
    let want_out: Vec<_> = sent_out.iter().map(|p| fnv1a(p)).collect();
    assert_eq!(digests("ingress"), want_in);
    assert_eq!(digests("egress"), want_out);

    // Detached: nothing left on the interface, and none of the agent's programs loaded.
    ensure!(
        !xdp_attached(&pair.b.name, &pair.if_b)?,
        "an XDP program is still attached after the agent stopped"
    );
    let left = programs_still_loaded(&programs).context("listing programs")?;
    ensure!(left.is_empty(), "programs still loaded: {left:?}");
    Ok(())
}
