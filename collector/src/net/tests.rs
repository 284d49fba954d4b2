//! Decoder tests against the shared corpus (tshark 4.0.17 oracles) and property tests.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::net::IpAddr;

use proptest::prelude::*;

use super::{
    framer::{find_start_line, local_framer},
    pcap::PcapSource,
    ws::{find_resync, parse_handshake, WsDecoder},
    Decoder, DecoderConfig, NetEvent, NetStats, Transport,
};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/corpus/");

/// One SIP message as identified by tshark or by the decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Msg {
    ts_ns: u64,
    src: IpAddr,
    dst: IpAddr,
    /// Method, or status code.
    first: String,
    cseq: String,
}

struct Oracle {
    decode_as_ports: Vec<u16>,
    msgs: Vec<Msg>,
    /// Frame numbers of the listed messages (for failure messages).
    frames: Vec<String>,
}

/// `1507433576.371389000` as ns.
fn epoch_ns(s: &str) -> u64 {
    let (sec, frac) = s.split_once('.').unwrap();
    let frac = format!("{frac:0<9}");
    sec.parse::<u64>().unwrap() * 1_000_000_000 + frac[..9].parse::<u64>().unwrap()
}

/// Parses section 2 of `F.oracle.txt` (one tab-separated line per SIP message, fields as in
/// its header line). Lines where tshark found neither a method nor a status code are the SIP
/// dissector forced by a decode-as rule onto non-SIP bytes ("Continuation"): they carry no
/// message and are left out.
fn oracle(file: &str) -> Oracle {
    let text = std::fs::read_to_string(format!("{CORPUS}{file}.oracle.txt"))
        .unwrap_or_else(|e| panic!("test data {CORPUS}{file}.oracle.txt: {e}"));
    let mut decode_as_ports = Vec::new();
    let mut msgs = Vec::new();
    let mut frames = Vec::new();
    let mut in_list = false;
    let mut cols: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rules) = line.strip_prefix("# decode-as: ") {
            for rule in rules.split('\'').filter(|r| r.contains(".port==")) {
                let port = rule.split("==").nth(1).unwrap().split(',').next().unwrap();
                decode_as_ports.push(port.parse().unwrap());
            }
        }
        if line.starts_with("## ") {
            in_list = line.contains("-Y sip");
            continue;
        }
        if !in_list || line.trim().is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix("# ") {
            cols = h.split('\t').map(str::to_owned).collect();
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let get = |name: &str| {
            let i = cols.iter().position(|c| c == name).unwrap();
            f.get(i).copied().unwrap_or("")
        };
        let (method, status) = (get("sip.Method"), get("sip.Status-Code"));
        if method.is_empty() && status.is_empty() {
            continue;
        }
        assert!(
            !method.contains('~') && !status.contains('~'),
            "one frame with several SIP messages is not handled by this test"
        );
        let addr = |v4: &str, v6: &str| -> IpAddr {
            if get(v4).is_empty() { get(v6) } else { get(v4) }
                .parse()
                .unwrap()
        };
        msgs.push(Msg {
            ts_ns: epoch_ns(get("frame.time_epoch")),
            src: addr("ip.src", "ipv6.src"),
            dst: addr("ip.dst", "ipv6.dst"),
            first: if method.is_empty() { status } else { method }.to_owned(),
            cseq: format!("{} {}", get("sip.CSeq.seq"), get("sip.CSeq.method")),
        });
        frames.push(get("frame.number").to_owned());
    }
    Oracle {
        decode_as_ports,
        msgs,
        frames,
    }
}

/// The method or status code of the start line, and the CSeq value: a plain line scan,
/// independent of the SIP parser.
fn summary(bytes: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let first = match start.strip_prefix("SIP/2.0 ") {
        Some(rest) => rest.get(..3).unwrap_or(rest).to_owned(),
        None => start.split(' ').next().unwrap_or_default().to_owned(),
    };
    let cseq = lines
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("cseq")
                .then(|| value.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default();
    (first, cseq)
}

fn run(file: &str, cfg: DecoderConfig) -> (Vec<Msg>, Vec<Transport>, NetStats) {
    let mut src = PcapSource::open(format!("{CORPUS}{file}"))
        .unwrap_or_else(|e| panic!("test data {CORPUS}{file}: {e}"));
    let mut dec = Decoder::new(cfg);
    let mut events = Vec::new();
    for frame in &mut src {
        let frame = frame.unwrap();
        dec.feed(frame.ts_ns, &frame.data, None, &mut events);
    }
    let mut msgs = Vec::new();
    let mut transports = Vec::new();
    for e in events {
        if let NetEvent::Sip(p) = e {
            let (first, cseq) = summary(&p.bytes);
            msgs.push(Msg {
                ts_ns: p.ts_ns,
                src: p.src.ip(),
                dst: p.dst.ip(),
                first,
                cseq,
            });
            transports.push(p.transport);
        }
    }
    (msgs, transports, dec.stats())
}

/// The decoder yields exactly the oracle's messages, in order, each at the time of the frame
/// that completed it.
fn check(file: &str) -> (Vec<Transport>, NetStats) {
    let o = oracle(file);
    let mut cfg = DecoderConfig::default();
    cfg.sip_ports.extend(&o.decode_as_ports);
    let (got, transports, stats) = run(file, cfg);
    for (i, want) in o.msgs.iter().enumerate() {
        assert_eq!(
            got.get(i),
            Some(want),
            "{file}: message {i} (oracle frame {})",
            o.frames[i]
        );
    }
    assert_eq!(got.len(), o.msgs.len(), "{file}: message count");
    assert!(!o.msgs.is_empty());
    (transports, stats)
}

#[test]
fn corpus_tcp() {
    let (t, s) = check("heplify_sip_ipv4_tcp.pcap");
    assert!(t.iter().all(|&t| t == Transport::Tcp));
    assert_eq!(s.tcp.tcp_gaps, 0);
}

#[test]
fn corpus_tcp_retransmissions_on_sll() {
    let o = oracle("heplify_sip_ipv4_tcp_retrans.pcap");
    assert_eq!(o.decode_as_ports, vec![60010, 60022]);
    let (t, s) = check("heplify_sip_ipv4_tcp_retrans.pcap");
    assert!(t.contains(&Transport::Tcp) && t.contains(&Transport::Udp));
    // Frame 38 retransmits the 200 OK of frame 36: seen, and not yielded twice.
    assert!(s.tcp.tcp_retransmissions >= 1);
    // The decode-as ports carry XML-RPC and encrypted bytes: nothing framed there.
    assert_eq!(s.tcp.tcp_framing_errors, 0);
}

#[test]
fn corpus_websocket() {
    let (t, s) = check("heplify_sip_tcp_websocket.pcap");
    assert!(t.contains(&Transport::Ws) && t.contains(&Transport::Udp));
    assert_eq!(s.tcp.ws_handshakes, 2);
    assert_eq!(s.tcp.ws_errors, 0);
}

#[test]
fn corpus_sipp_tcp() {
    let (t, _) = check("sipp_tcp.pcap");
    assert!(t.iter().all(|&t| t == Transport::Tcp));
}

#[test]
fn corpus_ipv6_udp() {
    let (t, _) = check("heplify_sip_ipv6_udp.pcap");
    assert!(t.iter().all(|&t| t == Transport::Udp));
}

#[test]
fn corpus_sngrep_aaa() {
    check("sngrep_aaa.pcap");
}

#[test]
fn corpus_sctp_is_counted_unsupported() {
    let o = oracle("heplify_sip_sctp.pcap");
    let (got, _, s) = run("heplify_sip_sctp.pcap", DecoderConfig::default());
    assert!(got.is_empty());
    // Every SIP message tshark found travelled in an SCTP packet the decoder counted.
    assert!(s.sctp_unsupported >= o.msgs.len() as u64, "{s:?}");
}

#[test]
fn udp_non_sip_is_yielded_for_media() {
    // The RTCP-only capture: every UDP datagram comes out as non-SIP.
    let mut src = PcapSource::open(format!(
        "{CORPUS}ndpi_rtcp_multiple_pkts_in_the_same_datagram.pcap"
    ))
    .unwrap();
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut events = Vec::new();
    let mut frames = 0;
    for f in &mut src {
        let f = f.unwrap();
        frames += 1;
        dec.feed(f.ts_ns, &f.data, None, &mut events);
    }
    assert_eq!(events.len(), frames);
    for e in &events {
        let NetEvent::Udp(u) = e else {
            panic!("unexpected SIP")
        };
        // RTCP version 2 (RFC 3550 §6.4).
        assert_eq!(u.payload[0] >> 6, 2);
    }
}

fn eth_ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(l4);
    f
}

#[test]
fn udp_classification() {
    let udp = |sport: u16, dport: u16, payload: &[u8]| {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(payload);
        eth_ipv4(17, &l4)
    };
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    let opts = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
    dec.feed(1, &udp(5060, 5060, opts), None, &mut out);
    dec.feed(2, &udp(40000, 40002, opts), None, &mut out);
    dec.feed(3, &udp(5060, 5060, b"\r\n\r\n"), None, &mut out);
    dec.feed(4, &udp(40000, 40002, &[0x80, 0, 0, 1]), None, &mut out);
    // SCTP and a frame cut inside the IP header.
    dec.feed(5, &eth_ipv4(132, &[0; 12]), None, &mut out);
    dec.feed(6, &udp(1, 2, b"")[..20], None, &mut out);
    let kinds: Vec<bool> = out.iter().map(|e| matches!(e, NetEvent::Sip(_))).collect();
    assert_eq!(kinds, vec![true, true, false, false]);
    let s = dec.stats();
    assert_eq!(
        (
            s.udp_sip,
            s.udp_other,
            s.sip_port_not_sip,
            s.sctp_unsupported,
            s.parse_truncated
        ),
        (2, 2, 1, 1, 1)
    );
    let mut strict = Decoder::new(DecoderConfig {
        heuristic: false,
        ..DecoderConfig::default()
    });
    let mut out = Vec::new();
    strict.feed(2, &udp(40000, 40002, opts), None, &mut out);
    assert!(matches!(out[0], NetEvent::Udp(_)));
}

fn tcp_frame(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&seq.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    eth_ipv4(6, &l4)
}

#[test]
fn udp_fragments_through_the_decoder() {
    use etherparse::PacketBuilder;
    let body = "v=0\r\n".repeat(400);
    let sip = format!(
        "INVITE sip:b@x SIP/2.0\r\nCSeq: 1 INVITE\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut whole = Vec::new();
    PacketBuilder::ethernet2([0; 6], [0; 6])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(5060, 5060)
        .write(&mut whole, sip.as_bytes())
        .unwrap();
    let udp = &whole[34..];
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    for (i, chunk) in udp.chunks(1480).enumerate() {
        let more = (i + 1) * 1480 < udp.len();
        let mut f = eth_ipv4(17, chunk);
        let fo = (i * 1480 / 8) as u16 | if more { 0x2000 } else { 0 };
        f[20..22].copy_from_slice(&fo.to_be_bytes());
        dec.feed(i as u64, &f, None, &mut out);
    }
    assert_eq!(out.len(), 1);
    let NetEvent::Sip(p) = &out[0] else {
        panic!("not SIP")
    };
    assert_eq!(p.bytes, sip.as_bytes());
    assert_eq!(p.src, "10.0.0.1:5060".parse().unwrap());
    assert_eq!(dec.stats().frag.frag_reassembled, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoder_never_panics_on_arbitrary_frames(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..8)) {
        let mut dec = Decoder::new(DecoderConfig::default());
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            dec.feed(i as u64, f, None, &mut out);
        }
    }

    #[test]
    fn decoder_never_panics_on_tcp_payloads(
        segs in prop::collection::vec((any::<u16>(), any::<u8>(), prop::collection::vec(any::<u8>(), 0..300), any::<bool>()), 0..12),
    ) {
        let mut dec = Decoder::new(DecoderConfig::default());
        let mut out = Vec::new();
        for (i, (seq, flags, payload, ws)) in segs.iter().enumerate() {
            let dport = if *ws { 8080 } else { 5060 };
            let f = tcp_frame(40000, dport, u32::from(*seq), *flags & 0x1f, payload);
            dec.feed(i as u64, &f, None, &mut out);
        }
    }

    #[test]
    fn decoder_never_panics_on_sip_like_tcp(
        cuts in prop::collection::vec(0usize..200, 0..6),
        cl in 0u32..1000,
        order in any::<u64>(),
    ) {
        let msg = format!("INVITE sip:b@x SIP/2.0\r\nl: {cl}\r\n\r\n{}", "a".repeat(150));
        let bytes = msg.as_bytes();
        let mut pieces = vec![0usize];
        pieces.extend(cuts.iter().map(|c| c.min(&bytes.len()).to_owned()));
        pieces.push(bytes.len());
        pieces.sort_unstable();
        let mut segs: Vec<(usize, usize)> = pieces.windows(2).map(|w| (w[0], w[1])).collect();
        let n = segs.len().max(1);
        segs.rotate_left((order % n as u64) as usize);
        let mut dec = Decoder::new(DecoderConfig::default());
        let mut out = Vec::new();
        for (i, (a, b)) in segs.into_iter().enumerate() {
            let f = tcp_frame(40000, 5060, 1000 + a as u32, 0x18, &bytes[a..b]);
            dec.feed(i as u64, &f, None, &mut out);
        }
    }

    #[test]
    fn fragments_never_panic(frags in prop::collection::vec((0u16..200, any::<bool>(), prop::collection::vec(any::<u8>(), 0..64)), 0..10)) {
        let mut dec = Decoder::new(DecoderConfig::default());
        let mut out = Vec::new();
        for (i, (off, more, data)) in frags.iter().enumerate() {
            let mut f = eth_ipv4(17, data);
            let fo = off | if *more { 0x2000 } else { 0 };
            f[20..22].copy_from_slice(&fo.to_be_bytes());
            dec.feed(i as u64, &f, None, &mut out);
        }
    }

    #[test]
    fn byte_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = local_framer(&bytes);
        let _ = find_start_line(&bytes);
        let _ = parse_handshake(&bytes);
        let _ = find_resync(&bytes);
        let mut d = WsDecoder::default();
        let mut rest: &[u8] = &bytes;
        while let Ok(Some(step)) = d.next(rest) {
            prop_assert!(step.consumed > 0 && step.consumed <= rest.len());
            rest = &rest[step.consumed..];
        }
    }

    #[test]
    fn pcap_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), magic in 0usize..4) {
        let magics: [[u8; 4]; 4] = [
            [0xd4, 0xc3, 0xb2, 0xa1],
            [0xa1, 0xb2, 0xc3, 0xd4],
            [0x4d, 0x3c, 0xb2, 0xa1],
            [0x0a, 0x0d, 0x0d, 0x0a],
        ];
        let mut file = magics[magic].to_vec();
        file.extend_from_slice(&bytes);
        if let Ok(src) = PcapSource::new(&file[..]) {
            for f in src.take(100) {
                let _ = f;
            }
        }
    }
}

#[test]
fn the_kernel_shortcut_answers_only_for_plain_udp() {
    use collector_common::parse::plain_udp4_ports_slice;
    let mut l4 = vec![0x13, 0xc4, 0x9c, 0x40, 0, 12, 0, 0];
    l4.extend_from_slice(b"abcd");
    let ok = eth_ipv4(17, &l4);
    assert_eq!(plain_udp4_ports_slice(&ok), Some((5060, 40000)));
    crate::fuzzing::l2l4(&ok);
    // Each of these is the full parse's to judge.
    let mut frag = ok.clone();
    frag[20] = 0x20;
    let mut options = ok.clone();
    options[14] = 0x46;
    let mut ip_long = ok.clone();
    ip_long[16..18].copy_from_slice(&200u16.to_be_bytes());
    let mut udp_long = ok.clone();
    udp_long[38..40].copy_from_slice(&100u16.to_be_bytes());
    let mut udp_short = ok.clone();
    udp_short[38..40].copy_from_slice(&4u16.to_be_bytes());
    let tcp = eth_ipv4(6, &l4);
    for (what, f) in [
        ("fragment", &frag),
        ("options", &options),
        ("IP length", &ip_long),
        ("UDP length", &udp_long),
        ("short UDP length", &udp_short),
        ("TCP", &tcp),
        ("truncated", &ok[..41].to_vec()),
    ] {
        assert_eq!(plain_udp4_ports_slice(f), None, "{what}");
        crate::fuzzing::l2l4(f);
    }
}

#[test]
fn lengths_past_the_packet_are_flagged() {
    use collector_common::parse::parse_slice;
    let mut l4 = vec![0x13, 0xc4, 0x13, 0xc4, 0, 12, 0, 0];
    l4.extend_from_slice(b"abcd");
    let ok = eth_ipv4(17, &l4);
    assert!(!parse_slice(&ok).unwrap().bad_length);
    // RFC 791 §3.1: the total length claims 200 bytes of a 32-byte packet.
    let mut ip_long = ok.clone();
    ip_long[16..18].copy_from_slice(&200u16.to_be_bytes());
    assert!(parse_slice(&ip_long).unwrap().bad_length);
    // RFC 768: the UDP length claims more than the IP payload.
    let mut udp_long = ok.clone();
    udp_long[38..40].copy_from_slice(&100u16.to_be_bytes());
    assert!(parse_slice(&udp_long).unwrap().bad_length);
    // A first fragment's UDP length covers the whole datagram: not a lie.
    let mut first = udp_long.clone();
    first[20] = 0x20;
    assert!(!parse_slice(&first).unwrap().bad_length);
}
