//! Property tests of the SIP and SDP parsers: arbitrary and mutated bytes never panic, and
//! messages built from known parts parse back to those parts (in any header order, long or
//! compact names, with folding), on datagrams and on streams.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use collector::sip::sdp::{self, ConnAddress, SdpError, SdpLimits};
use collector::sip::{
    frame_len, frame_stream, parse_message, CSeq, Contact, Host, MediaType, Method, NameAddr,
    Reason, SessionId, SipLimits, StreamFrame, Uri, Via,
};
use proptest::prelude::*;

fn limits() -> SipLimits {
    SipLimits::default()
}

/// Checks what must hold for any successfully parsed message.
fn check_invariants(buf: &[u8]) {
    if let Ok(m) = parse_message(buf, &limits()) {
        if let Some(cl) = m.content_length() {
            assert_eq!(m.body().len(), cl);
        }
        assert!(m.as_bytes().len() <= buf.len());
        assert!(m.as_bytes().ends_with(m.body()));
        let _ = (
            m.vias().count(),
            m.contacts().count(),
            m.reason(),
            m.session_id(),
        );
        let _ = (m.expires(), m.p_charging_vector(), m.session_expires());
        if let Ok(Some(body)) = m.sdp_body() {
            let _ = sdp::parse(body, &SdpLimits::default());
        }
    }
    match frame_stream(buf, &limits()) {
        Ok(StreamFrame::Message { len } | StreamFrame::Keepalive { len }) => {
            assert!(len > 0 && len <= buf.len());
        }
        Ok(StreamFrame::NeedMore) | Err(_) => {}
    }
    let _ = frame_len(buf, &limits());
}

const SEED: &[u8] = b"INVITE sip:+4420123456@sbc.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport, SIP/2.0/TCP [2001:db8::1]:5061;received=192.0.2.9\r\n\
v: SIP / 2.0 / UDP h.example.com\r\n ;branch=z9hG4bK-2\r\n\
Max-Forwards: 69\r\n\
Contact: \"A \\\"q\\\"\" <sip:a@198.51.100.7:5060;transport=udp>;expires=60, <tel:+1-201-555-0123>\r\n\
To: <sip:+4420123456@sbc.example.com;user=phone>\r\n\
From: Alice <sip:+4420987654@pbx.example.net>;tag=as6b0c5e2f\r\n\
Call-ID: 3c26700a5c7e@pbx.example.net\r\n\
CSeq: 102 INVITE\r\n\
Reason: Q.850;cause=16;text=\"x\"\r\n\
Session-ID: ab30317f1a784dc48ff824d0d3715d86\r\n\
Content-Type: multipart/mixed;boundary=bb\r\n\
Content-Length: 173\r\n\
\r\n\
--bb\r\nContent-Type: application/sdp\r\n\r\n\
v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\r\n--bb--";

#[test]
fn seed_is_valid() {
    let m = parse_message(SEED, &limits()).unwrap();
    assert_eq!(m.vias().count(), 3);
    let s = sdp::parse(m.sdp_body().unwrap().unwrap(), &SdpLimits::default()).unwrap();
    assert_eq!(s.media[0].telephone_event_pt(), Some(101));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..1024)) {
        check_invariants(&buf);
        let _ = sdp::parse(&buf, &SdpLimits::default());
    }

    #[test]
    fn sip_like_text_never_panics(s in "(INVITE|SIP/2.0|[A-Za-z:;,<>\"\\\\@ =/\\[\\]\r\n\t0-9.%-]){0,400}") {
        check_invariants(s.as_bytes());
        let b = s.as_bytes();
        let _ = (Uri::parse(b), NameAddr::parse(b), Contact::parse(b), Via::parse(b));
        let _ = (CSeq::parse(b), MediaType::parse(b), Reason::parse(b), SessionId::parse(b));
    }

    #[test]
    fn sdp_like_text_never_panics(s in "(v=0\r\n|[vosctma]=|IN IP[46] |RTP/AVP |rtpmap:|rtcp:|[0-9/ .:]|\r\n|[a-z]){0,300}") {
        let _ = sdp::parse(s.as_bytes(), &SdpLimits::default());
    }

    #[test]
    fn mutated_messages_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut buf = SEED.to_vec();
        for (pos, byte, op) in edits {
            let at = pos % (buf.len() + 1);
            match op {
                0 if at < buf.len() => buf[at] = byte,
                1 => buf.insert(at, byte),
                _ if at < buf.len() => { buf.remove(at); }
                _ => {}
            }
        }
        check_invariants(&buf);
    }

    #[test]
    fn every_prefix_of_a_stream_message_needs_more(cut in 1usize..SEED.len()) {
        prop_assert_eq!(frame_stream(&SEED[..cut], &limits()).unwrap(), StreamFrame::NeedMore);
    }
}

/// The parts a generated message is built from.
#[derive(Debug, Clone)]
struct Parts {
    method: &'static str,
    user: String,
    host: String,
    port: Option<u16>,
    display: String,
    from_tag: String,
    to_tag: Option<String>,
    call_id: String,
    seq: u32,
    branch: String,
    body: Vec<u8>,
    compact: bool,
    fold: bool,
    order: Vec<usize>,
}

fn parts() -> impl Strategy<Value = Parts> {
    let who = (
        prop::sample::select(vec!["INVITE", "BYE", "OPTIONS", "REGISTER", "NEWMETHOD"]),
        "[a-zA-Z0-9+._-]{1,16}",
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
        proptest::option::of(any::<u16>()),
        "[ -~]{0,20}",
        "[a-zA-Z0-9]{1,12}",
        proptest::option::of("[a-zA-Z0-9]{1,12}"),
    );
    let how = (
        "[a-zA-Z0-9.@+-]{1,40}",
        any::<u32>(),
        "z9hG4bK[a-zA-Z0-9]{1,12}",
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
        any::<bool>(),
        Just((0..7).collect::<Vec<usize>>()).prop_shuffle(),
    );
    (who, how).prop_map(
        |(
            (method, user, host, port, display, from_tag, to_tag),
            (call_id, seq, branch, body, compact, fold, order),
        )| Parts {
            method,
            user,
            host,
            port,
            display,
            from_tag,
            to_tag,
            call_id,
            seq,
            branch,
            body,
            compact,
            fold,
            order,
        },
    )
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

fn build(p: &Parts) -> Vec<u8> {
    let hostport = match p.port {
        Some(port) => format!("{}:{port}", p.host),
        None => p.host.clone(),
    };
    let name = |long: &'static str, short: &'static str| if p.compact { short } else { long };
    let sep = if p.fold { ":\r\n   " } else { ": " };
    let to_tag = p
        .to_tag
        .as_ref()
        .map(|t| format!(";tag={t}"))
        .unwrap_or_default();
    let headers = [
        format!(
            "{}{sep}SIP/2.0/UDP {hostport};branch={}",
            name("Via", "v"),
            p.branch
        ),
        format!(
            "{}{sep}{} <sip:{}@{hostport}>;tag={}",
            name("From", "f"),
            quote(&p.display),
            p.user,
            p.from_tag
        ),
        format!(
            "{}{sep}<sip:{}@{}>{to_tag}",
            name("To", "t"),
            p.user,
            p.host
        ),
        format!("{}{sep}{}", name("Call-ID", "i"), p.call_id),
        format!("CSeq{sep}{} {}", p.seq, p.method),
        format!("{}{sep}{}", name("Content-Length", "l"), p.body.len()),
        format!("{}{sep}application/octet-stream", name("Content-Type", "c")),
    ];
    let mut out = format!("{} sip:{}@{hostport} SIP/2.0\r\n", p.method, p.user).into_bytes();
    for &i in &p.order {
        out.extend_from_slice(headers[i].as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&p.body);
    out
}

fn expected_host(h: &str) -> Host<'_> {
    // The generated names are never dotted quads.
    Host::Name(h)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn built_messages_parse_back(p in parts(), trailing in proptest::collection::vec(any::<u8>(), 0..64)) {
        let msg = build(&p);
        let mut datagram = msg.clone();
        datagram.extend_from_slice(&trailing);
        let m = parse_message(&datagram, &limits()).unwrap();
        prop_assert_eq!(m.as_bytes(), &msg[..]);
        prop_assert_eq!(m.method().as_str(), p.method);
        prop_assert_eq!(m.cseq(), CSeq { seq: p.seq, method: Method::parse(p.method.as_bytes()).unwrap() });
        let ruri = m.request_uri().unwrap();
        prop_assert_eq!(ruri.user(), Some(p.user.as_str()));
        prop_assert_eq!(ruri.host(), Some(expected_host(&p.host)));
        prop_assert_eq!(ruri.port(), p.port);
        prop_assert_eq!(m.call_id(), p.call_id.as_str());
        prop_assert_eq!(m.from().tag(), Some(p.from_tag.as_str()));
        prop_assert_eq!(m.to().tag(), p.to_tag.as_deref());
        let dn = m.from().display_name().unwrap();
        prop_assert_eq!(&*dn.unescaped(), p.display.as_bytes());
        prop_assert_eq!(m.top_via().branch(), Some(p.branch.as_str()));
        prop_assert_eq!(m.top_via().port(), p.port);
        prop_assert_eq!(m.body(), &p.body[..]);

        // As a stream: the same message twice, with a keepalive between.
        let mut stream = msg.clone();
        stream.extend_from_slice(b"\r\n\r\n");
        stream.extend_from_slice(&msg);
        prop_assert_eq!(frame_stream(&stream, &limits()).unwrap(), StreamFrame::Message { len: msg.len() });
        let rest = &stream[msg.len()..];
        prop_assert_eq!(frame_stream(rest, &limits()).unwrap(), StreamFrame::Keepalive { len: 4 });
        prop_assert_eq!(frame_len(&rest[4..], &limits()).unwrap(), Some(msg.len()));
        // Content-Length longer than the datagram is a framing error, never a short body.
        if !p.body.is_empty() {
            let short = &msg[..msg.len() - 1];
            let is_truncated = matches!(
                parse_message(short, &limits()),
                Err(collector::sip::SipError::BodyTruncated { .. })
            );
            prop_assert!(is_truncated);
        }
    }

    #[test]
    fn sdp_media_lines_parse_back(
        media in proptest::collection::vec((any::<u16>(), proptest::collection::vec(0u8..128, 1..8), any::<bool>()), 1..6),
        conn in any::<[u8; 4]>(),
    ) {
        let mut text = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 {}.{}.{}.{}\r\nt=0 0\r\n",
            conn[0], conn[1], conn[2], conn[3]
        );
        for (port, pts, mux) in &media {
            let fmts: Vec<String> = pts.iter().map(u8::to_string).collect();
            text.push_str(&format!("m=audio {port} RTP/AVP {}\r\n", fmts.join(" ")));
            if *mux {
                text.push_str("a=rtcp-mux\r\n");
            }
        }
        let s = sdp::parse(text.as_bytes(), &SdpLimits::default()).unwrap();
        prop_assert_eq!(s.media.len(), media.len());
        for (m, (port, pts, mux)) in s.media.iter().zip(&media) {
            prop_assert_eq!(m.port, *port);
            prop_assert_eq!(m.payload_types().collect::<Vec<_>>(), pts.clone());
            let want_rtcp = if *port == 0 { None } else if *mux { Some(*port) } else { port.checked_add(1) };
            prop_assert_eq!(m.rtcp_port(), want_rtcp);
            prop_assert_eq!(
                s.connection_for(m).unwrap().address,
                ConnAddress::Ip(std::net::IpAddr::from(conn))
            );
        }
    }

    #[test]
    fn sdp_ports_above_u16_are_errors(port in 65536u64..u64::MAX) {
        let text = format!("v=0\r\nm=audio {port} RTP/AVP 0\r\n");
        prop_assert_eq!(sdp::parse(text.as_bytes(), &SdpLimits::default()), Err(SdpError::PortOutOfRange { line: 2 }));
    }
}
