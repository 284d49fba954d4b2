//! Hostile traffic on a live interface: crafted malformed frames interleaved with one
//! legitimate call (INVITE/200/ACK, RTP both ways, BYE/200), sent raw onto a veth into the
//! attached agent. The agent must survive, count every malformed unit under its reason in
//! the kernel counters of its metrics (counts known by construction), stay within a memory
//! bound, and give the legitimate call the same CDR as a clean run of that call made first
//! in this test, field by field except identifiers and times.
//!
//! Malformed kinds and where they are counted:
//! - IPv4 IHL below 5, IPv4 total length below the header, UDP length below 8: `malformed`;
//! - IPv4 total length or UDP length running past the packet: `bad_length`;
//! - RTP on the live stream (its SSRC) whose CSRC list or header extension runs past the
//!   packet: `rtp_invalid` (the stream's statistics do not see them);
//! - more than two stacked VLAN tags: `unsupported_headers`;
//! - CRLF keepalives on the SIP port: `sip_port_not_sip`;
//! - an SSRC spray on the live call's media port (both SSRC slots of that direction are
//!   taken by the call itself, so every sprayed packet overflows): `ssrc_overflow`;
//! - RTCP whose length field runs past the datagram: copied (`rtcp_copied`), then
//!   `collector_rtcp_parse_errors_total`;
//! - IPv4 and IPv6 fragments (between SIP hosts, so the kernel copies them,
//!   `fragments_copied`; the IPv6 hosts become SIP hosts by one OPTIONS between them):
//!   overlapping pairs, `frag_overlap`, and first fragments never completed,
//!   `frag_timeout`, in `collector_decoder_packets_total` (the agent's configuration gives
//!   incomplete datagrams up after 2 s instead of 30);
//! - 3,000 half-open INVITEs (no response ever): copied (`sip_copied`), one dialog each.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use collector_tests::{
    agent_config,
    rawsip::{sip_frame, RawCall},
    scrape::{kernel, sample, scrape, scrape_until},
    send_raw,
    wire::{eth, ipv4, ipv6, tag, udp},
    Agent, VethPair,
};
use serde_json::Value;

/// Third octet of the veth pair's /24.
const NET: u8 = 22;
const A: [u8; 4] = [198, 18, NET, 1];
const B: [u8; 4] = [198, 18, NET, 2];
/// IPv6 hosts (documentation prefix, RFC 3849) that exchange one OPTIONS, then fragments.
const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NET, 1];
const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, NET, 2];
/// Where the agent serves its metrics, inside its own namespace.
const METRICS_ADDR: &str = "127.0.0.1:9464";
/// RTP port of the caller (offer) and of the callee (answer).
const RTP_A: u16 = 40_000;
const RTP_B: u16 = 50_000;
/// RTP packets of each SSRC of the call (caller: two SSRCs, a restarted sender; callee: one).
const RTP_PER_SSRC: u16 = 50;
const SSRC_A1: u32 = 0x0a0a_0001;
const SSRC_A2: u32 = 0x0a0a_0002;
const SSRC_B: u32 = 0x0b0b_0001;

/// Frames of each kind counted as `malformed`.
const M_BAD_IHL: usize = 20;
const M_IP_LEN_SHORT: usize = 20;
const M_UDP_LEN_SHORT: usize = 20;
/// Frames whose IPv4 total length, or UDP length, runs past the packet.
const M_IP_LEN_LONG: usize = 20;
const M_UDP_LEN_LONG: usize = 20;
/// RTP on the live stream whose CSRC list, or header extension, runs past the packet.
const M_RTP_CSRC: usize = 20;
const M_RTP_EXT: usize = 20;
/// Frames with three stacked VLAN tags.
const M_VLAN3: usize = 20;
/// CRLF keepalive datagrams on 5060.
const M_CRLF: usize = 2_000;
/// Half-open INVITEs.
const M_HALF_OPEN: usize = 3_000;
/// Sprayed RTP packets, each with its own SSRC, onto the caller→callee stream.
const M_SPRAY: usize = 500;
/// RTCP sender reports whose length field claims more than the datagram holds.
const M_RTCP_LYING: usize = 20;
/// IPv4 datagrams sent as two overlapping fragments (RFC 5722 discards them whole).
const M_FRAG_OVERLAP: usize = 10;
/// IPv4 datagrams of which only the first fragment is ever sent.
const M_FRAG_OPEN: usize = 10;
/// The same two kinds over IPv6 (Fragment header, RFC 8200 §4.5).
const M_FRAG6_OVERLAP: usize = 10;
const M_FRAG6_OPEN: usize = 10;
/// Bound of the agent's peak RSS (VmHWM) over the hostile run.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// The legitimate call, the same in both runs.
fn the_call() -> RawCall {
    RawCall {
        a: A,
        b: B,
        i: 1,
        call_id: "hostile-legit-1".into(),
        rtp_ports: (RTP_A, RTP_B),
    }
}

fn rtp(from_a: bool, ssrc: u32, seq: u16) -> Vec<u8> {
    let mut b = vec![0x80, 0];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(&[0xff; 160]);
    let (src, dst, sp, dp) = if from_a {
        (A, B, RTP_A, RTP_B)
    } else {
        (B, A, RTP_B, RTP_A)
    };
    eth(0x0800, &ipv4(17, src, dst, &[], 7, 0, &udp(sp, dp, &b)))
}

/// The call's RTP in wire order: packet `k` of each direction (caller's first SSRC, then
/// its second).
fn media(k: u16) -> [Vec<u8>; 2] {
    let (ssrc, seq) = if k < RTP_PER_SSRC {
        (SSRC_A1, k + 1)
    } else {
        (SSRC_A2, k - RTP_PER_SSRC + 1)
    };
    [rtp(true, ssrc, seq), rtp(false, SSRC_B, k + 1)]
}

fn options(n: usize) -> Vec<u8> {
    sip_frame(
        A,
        B,
        &format!("OPTIONS sip:probe{n}@198.18.{NET}.2 SIP/2.0\r\n\r\n"),
    )
}

/// OPTIONS `n` with `bytes` written over its own at offset `at` of the frame (14: IPv4
/// version and IHL, 16: IPv4 total length, 38: UDP length).
fn patched(n: usize, at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut f = options(n);
    f[at..at + bytes.len()].copy_from_slice(bytes);
    f
}

/// RTP on the caller's stream, with its current SSRC, whose first byte announces 15 CSRCs
/// (60 bytes) in a 32-byte payload.
fn rtp_csrc(n: usize) -> Vec<u8> {
    rtp_lying(n, 0x8f, &[0; 20])
}

/// RTP on the caller's stream whose header extension claims 65,535 words.
fn rtp_ext(n: usize) -> Vec<u8> {
    rtp_lying(n, 0x90, &[0xbe, 0xde, 0xff, 0xff, 0, 0, 0, 0])
}

fn rtp_lying(n: usize, b0: u8, rest: &[u8]) -> Vec<u8> {
    let mut b = vec![b0, 0];
    b.extend_from_slice(&(1000 + n as u16).to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&SSRC_A2.to_be_bytes());
    b.extend_from_slice(rest);
    eth(0x0800, &ipv4(17, A, B, &[], 8, 0, &udp(RTP_A, RTP_B, &b)))
}

/// Three stacked 802.1Q tags (the parser walks two).
fn vlan3(n: usize) -> Vec<u8> {
    let mut f = options(n);
    for vid in [10, 20, 30] {
        f = tag(f, 0x8100, vid);
    }
    f
}

/// An RTCP SR (RFC 3550 §6.4.1) claiming 20 words after its header, carrying 6, on the
/// caller's RTCP port (RTP + 1) towards the callee's.
fn rtcp_lying(n: usize) -> Vec<u8> {
    let mut b = vec![0x80, 200, 0, 20];
    b.extend_from_slice(&(0x0a0a_0000 + n as u32).to_be_bytes());
    b.extend_from_slice(&[0; 20]);
    eth(
        0x0800,
        &ipv4(17, A, B, &[], 9, 0, &udp(RTP_A + 1, RTP_B + 1, &b)),
    )
}

/// Fragments of a UDP 5060 datagram: `[0, 24)` with more fragments following, and, for an
/// overlapping pair, `[8, 32)` as the last.
fn fragments(id: u16, overlap: bool) -> Vec<Vec<u8>> {
    let l4 = udp(
        5060,
        5060,
        format!("OPTIONS sip:frag{id} SIP/2.0\r\n").as_bytes(),
    );
    let mut out = vec![eth(0x0800, &ipv4(17, A, B, &[], id, 0x2000, &l4[..24]))];
    if overlap {
        out.push(eth(0x0800, &ipv4(17, A, B, &[], id, 1, &l4[8..32])));
    }
    out
}

/// The IPv6 twin of [`fragments`]: `[0, 24)` with more following and, for an overlapping
/// pair, `[8, 32)` as the last, each behind a Fragment header.
fn fragments6(id: u32, overlap: bool) -> Vec<Vec<u8>> {
    let l4 = udp(
        5060,
        5060,
        format!("OPTIONS sip:frag6-{id} SIP/2.0\r\n").as_bytes(),
    );
    let piece = |offset_units: u16, more: bool, bytes: &[u8]| {
        let mut p = vec![17, 0];
        p.extend_from_slice(&(offset_units << 3 | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(bytes);
        eth(0x86dd, &ipv6(44, A6, B6, &p))
    };
    let mut out = vec![piece(0, true, &l4[..24])];
    if overlap {
        out.push(piece(1, false, &l4[8..32]));
    }
    out
}

/// One complete OPTIONS between the IPv6 hosts: the kernel remembers them as SIP hosts.
fn options6() -> Vec<u8> {
    let text = "OPTIONS sip:probe@[2001:db8::1602] SIP/2.0\r\n\
        Via: SIP/2.0/UDP [2001:db8::1601]:5060;branch=z9hG4bK-v6probe\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:probe@[2001:db8::1601]>;tag=v6\r\n\
        To: <sip:probe@[2001:db8::1602]>\r\n\
        Call-ID: v6-probe\r\n\
        CSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";
    eth(0x86dd, &ipv6(17, A6, B6, &udp(5060, 5060, text.as_bytes())))
}

fn crlf() -> Vec<u8> {
    sip_frame(A, B, "\r\n\r\n")
}

/// An INVITE without SDP that nobody answers.
fn half_open(n: usize) -> Vec<u8> {
    RawCall {
        a: A,
        b: B,
        i: 10_000 + n,
        call_id: format!("half-open-{n}"),
        rtp_ports: (0, 0),
    }
    .invite(false)
}

/// RTP from the caller's address and port with a fresh SSRC each packet.
fn spray(n: usize) -> Vec<u8> {
    rtp(true, 0x5eed_0000 + n as u32, (n % 60_000) as u16 + 1)
}

/// The frames of unit `n` of one kind of unwanted traffic.
type Make = fn(usize) -> Vec<Vec<u8>>;

/// Every kind but the spray (it must wait for the caller's second SSRC): how many units,
/// and their frames.
const KINDS: [(usize, Make); 15] = [
    // IHL 4: a 16-byte IPv4 header (RFC 791 §3.1: at least 5).
    (M_BAD_IHL, |n| vec![patched(n, 14, &[0x44])]),
    // IPv4 total length 12, shorter than its own header.
    (M_IP_LEN_SHORT, |n| {
        vec![patched(n, 16, &12u16.to_be_bytes())]
    }),
    // UDP length 4, shorter than the UDP header (RFC 768).
    (M_UDP_LEN_SHORT, |n| {
        vec![patched(n, 38, &4u16.to_be_bytes())]
    }),
    // IPv4 total length 1400 on a packet of less than 100 bytes.
    (M_IP_LEN_LONG, |n| {
        vec![patched(n, 16, &1400u16.to_be_bytes())]
    }),
    // UDP length 1000 in an IP payload of less than 100 bytes.
    (M_UDP_LEN_LONG, |n| {
        vec![patched(n, 38, &1000u16.to_be_bytes())]
    }),
    (M_RTP_CSRC, |n| vec![rtp_csrc(n)]),
    (M_RTP_EXT, |n| vec![rtp_ext(n)]),
    (M_VLAN3, |n| vec![vlan3(n)]),
    (M_RTCP_LYING, |n| vec![rtcp_lying(n)]),
    (M_FRAG_OVERLAP, |n| fragments(0x7000 + n as u16, true)),
    (M_FRAG_OPEN, |n| fragments(0x7800 + n as u16, false)),
    (M_FRAG6_OVERLAP, |n| fragments6(0x6000 + n as u32, true)),
    (M_FRAG6_OPEN, |n| fragments6(0x6800 + n as u32, false)),
    (M_CRLF, |_| vec![crlf()]),
    (M_HALF_OPEN, |n| vec![half_open(n)]),
];

/// The units of `total` that go out at step `k` of `steps`, spread evenly.
fn share(total: usize, k: usize, steps: usize) -> std::ops::Range<usize> {
    total * k / steps..total * (k + 1) / steps
}

/// What the hostile run sends between the call's setup and its teardown: the call's media
/// with every kind of unwanted traffic spread between its packets.
fn hostile_media() -> Vec<Vec<u8>> {
    let steps = 2 * usize::from(RTP_PER_SSRC);
    // The spray starts once the caller's second SSRC has taken the second slot.
    let spray_from = usize::from(RTP_PER_SSRC) + 1;
    // The IPv6 hosts' OPTIONS goes first, so that their fragments are copied.
    let mut frames = vec![options6()];
    for k in 0..steps {
        frames.extend(media(k as u16));
        for (units, make) in KINDS {
            frames.extend(share(units, k, steps).flat_map(make));
        }
        if k >= spray_from {
            frames.extend(share(M_SPRAY, k - spray_from, steps - spray_from).map(spray));
        }
    }
    frames
}

fn clean_media() -> Vec<Vec<u8>> {
    (0..2 * RTP_PER_SSRC).flat_map(media).collect()
}

/// Peak resident set size of `pid` (VmHWM), KiB.
fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM")?;
    line.split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()
        .context("VmHWM number")
}

fn write_config(dir: &Path) -> Result<String> {
    // CDRs leave 300 ms after the BYE's 200 instead of 4 s. One key file for both runs:
    // the pseudonyms of the two CDRs are comparable.
    agent_config(
        dir,
        "hostile",
        "[agent]\nid = \"hostile-1\"\nfragment_timeout_ms = 2000\n\n[calls]\nlinger_ms = 300",
    )
}

/// Paced so the veth's ring never overflows (a dropped frame would never reach XDP).
const GAP: Duration = Duration::from_micros(40);

/// One run of the agent: the call's setup, `middle` (the media, hostile or not), the
/// teardown; waits until `settled` holds on the metrics; returns the agent's stdout lines,
/// the last metrics and the agent's peak RSS.
fn run(
    pair: &VethPair,
    config: &str,
    middle: Vec<Vec<u8>>,
    settled: impl Fn(&str) -> bool,
) -> Result<(Vec<Value>, String, u64)> {
    let agent = Agent::start(
        &pair.b.name,
        &[&pair.if_b],
        &["--config", config, "--metrics-listen", METRICS_ADDR],
    )?;
    let call = the_call();
    send_raw(&pair.a, &pair.if_a, call.setup(), GAP)?;
    let up = scrape_until(&pair.b, METRICS_ADDR, Duration::from_secs(10), |b| {
        sample(b, "collector_active_media_streams") == Some(2.0)
    })?;
    ensure!(
        sample(&up, "collector_active_media_streams") == Some(2.0),
        "the call's media was not bound: {up}"
    );
    send_raw(&pair.a, &pair.if_a, middle, GAP)?;
    send_raw(&pair.a, &pair.if_a, call.teardown(), GAP)?;
    // Incomplete fragments are given up 2 s after their first one arrived (the config).
    let body = scrape_until(&pair.b, METRICS_ADDR, Duration::from_secs(20), settled)?;
    let hwm = vm_hwm_kib(agent.pid())?;
    // The agent is still alive and answering after everything was sent.
    scrape(&pair.b, METRICS_ADDR)?;
    let lines = agent.stop()?;
    Ok((lines, body, hwm))
}

/// The CDR of the legitimate call (its pseudonymized Call-ID is `call_id`, or the only
/// answered one).
fn cdr_of<'a>(lines: &'a [Value], call_id: Option<&str>) -> Result<&'a Value> {
    let cdrs: Vec<&Value> = lines
        .iter()
        .filter(|v| v.get("cdr_id").is_some())
        .filter(|v| call_id.is_none_or(|c| v.get("call_id").and_then(Value::as_str) == Some(c)))
        .collect();
    match cdrs.as_slice() {
        [one] => Ok(one),
        _ => bail!("{} CDRs of the call: {cdrs:?}", cdrs.len()),
    }
}

/// Identifiers, and the media fields measured from arrival times besides the times
/// themselves (every field in milliseconds, `*_ms`): the scores computed from jitter, the
/// delay and playout-delay histograms and the jitter-buffer discards drawn from them, and
/// the 10-second intervals (cut at the agent's statistics polls, so their packet counts
/// follow the wall clock). The two runs cannot share them.
const NOT_COMPARED: &[&str] = &[
    "cdr_id",
    "correlation_id",
    "delay_hist",
    "late_hist",
    "fixed_50ms_discarded",
    "fixed_200ms_discarded",
    "adaptive_discarded",
    "mos",
    "r_factor",
    "intervals",
    "min_interval_mos",
    "mean_interval_mos",
];

fn decoder(reason: &str) -> String {
    format!(r#"collector_decoder_packets_total{{reason="{reason}"}}"#)
}

fn comparable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.ends_with("_ms") && !NOT_COMPARED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(comparable).collect()),
        other => other.clone(),
    }
}

#[test]
fn hostile_traffic_is_counted_and_leaves_the_call_intact() -> Result<()> {
    let t0 = Instant::now();
    let pair = VethPair::new(NET)?;
    let dir = tempfile::tempdir()?;
    let config = write_config(dir.path())?;
    let cdrs = r#"collector_cdrs_total{stage="produced"}"#;
    let rtp_packets = 4.0 * f64::from(RTP_PER_SSRC);

    // The clean run: the call alone.
    let (clean_lines, clean_body, _) = run(&pair, &config, clean_media(), |b| {
        sample(b, cdrs) == Some(1.0) && sample(b, &kernel("rtp_matched")) == Some(rtp_packets)
    })?;
    assert_eq!(sample(&clean_body, cdrs), Some(1.0), "{clean_body}");
    let clean = cdr_of(&clean_lines, None)?.clone();
    let call_id = clean
        .get("call_id")
        .and_then(Value::as_str)
        .context("the clean CDR has no call_id")?
        .to_owned();
    let legs = clean
        .get("media")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    assert_eq!(legs, 3, "two caller SSRCs, one callee SSRC: {clean}");

    // The hostile run: the same call with the malformed traffic interleaved.
    let hostile = hostile_media();
    let all = (5 + hostile.len()) as f64;
    // The call's five messages, the half-open INVITEs and the IPv6 hosts' OPTIONS.
    let sip = (5 + M_HALF_OPEN + 1) as f64;
    let frags = (2 * M_FRAG_OVERLAP + M_FRAG_OPEN + 2 * M_FRAG6_OVERLAP + M_FRAG6_OPEN) as f64;
    let malformed = (M_BAD_IHL + M_IP_LEN_SHORT + M_UDP_LEN_SHORT) as f64;
    let expect: Vec<(String, f64)> = vec![
        (kernel("xdp_packets"), all),
        (kernel("sip_copied"), sip),
        (kernel("malformed"), malformed),
        (kernel("unsupported_headers"), M_VLAN3 as f64),
        (kernel("sip_port_not_sip"), M_CRLF as f64),
        (kernel("ssrc_overflow"), M_SPRAY as f64),
        (kernel("rtp_matched"), rtp_packets),
        (kernel("ring_full"), 0.0),
        (kernel("truncated"), 0.0),
        (kernel("load_failed"), 0.0),
        (kernel("rtp_invalid"), (M_RTP_CSRC + M_RTP_EXT) as f64),
        (
            kernel("bad_length"),
            (M_IP_LEN_LONG + M_UDP_LEN_LONG) as f64,
        ),
        (kernel("rtcp_copied"), M_RTCP_LYING as f64),
        (kernel("fragments_copied"), frags),
        (
            "collector_ring_records_total".into(),
            sip + frags + M_RTCP_LYING as f64,
        ),
        (
            "collector_rtcp_parse_errors_total".into(),
            M_RTCP_LYING as f64,
        ),
        (decoder("frag_fragments"), frags),
        (
            decoder("frag_overlap"),
            (M_FRAG_OVERLAP + M_FRAG6_OVERLAP) as f64,
        ),
        (decoder("frag_timeout"), (M_FRAG_OPEN + M_FRAG6_OPEN) as f64),
        (decoder("frag_reassembled"), 0.0),
        ("collector_ring_undecodable_total".into(), 0.0),
        ("collector_active_dialogs".into(), M_HALF_OPEN as f64),
        (cdrs.into(), 1.0),
    ];
    let (lines, body, hwm) = run(&pair, &config, hostile, |b| {
        expect.iter().all(|(s, v)| sample(b, s) == Some(*v))
    })?;
    for (series, want) in &expect {
        assert_eq!(sample(&body, series), Some(*want), "{series}: {body}");
    }
    // Nothing failed to parse: the malformed frames never reached the SIP parser.
    assert!(
        !body.contains("collector_sip_parse_errors_total{"),
        "{body}"
    );
    assert!(
        hwm <= RSS_BOUND_KIB,
        "peak RSS {hwm} KiB above the bound of {RSS_BOUND_KIB} KiB"
    );
    eprintln!(
        "hostile: {} frames, peak RSS {hwm} KiB (bound {RSS_BOUND_KIB} KiB), {:.1?} so far",
        all,
        t0.elapsed()
    );

    // Every half-open INVITE ended at shutdown with a CDR; the call's CDR is the clean one.
    let answered = cdr_of(&lines, Some(&call_id))?;
    assert_eq!(comparable(answered), comparable(&clean));
    let total_cdrs = lines.iter().filter(|v| v.get("cdr_id").is_some()).count();
    assert_eq!(total_cdrs, 1 + M_HALF_OPEN);
    Ok(())
}
