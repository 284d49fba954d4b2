//! RFC 3261 example messages (§24 call flows) and the header examples of §7.3.1 and §20,
//! RFC 3326 / 4028 / 7315 / 7989 header examples: every asserted value is the one printed
//! in the RFC text.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use collector::sip::sdp::{self, ConnAddress, Direction, SdpLimits};
use collector::sip::{
    frame_stream, parse_message, Contact, HeaderName, Host, Method, ReasonProtocol, Refresher,
    Scheme, SipError, SipLimits, StreamFrame, Transport,
};

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// RFC 3261 §24.2, F1 INVITE Alice -> atlanta.example.com proxy (with Alice's SDP).
const F1_INVITE: &str = "INVITE sips:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/TLS client.atlanta.example.com:5061;branch=z9hG4bK74bf9
Max-Forwards: 70
From: Alice <sips:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sips:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
Contact: <sips:alice@client.atlanta.example.com>
Content-Type: application/sdp
Content-Length: 151

v=0
o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com
s=-
c=IN IP4 192.0.2.101
t=0 0
m=audio 49172 RTP/AVP 0
a=rtpmap:0 PCMU/8000
";

#[test]
fn rfc3261_24_2_invite_with_sdp() {
    let bytes = crlf(F1_INVITE);
    let m = parse_message(&bytes, &SipLimits::default()).unwrap();
    assert!(m.is_request());
    assert_eq!(m.method(), Method::Invite);
    let ruri = m.request_uri().unwrap();
    assert_eq!(ruri.scheme(), Scheme::Sips);
    assert_eq!(ruri.user(), Some("bob"));
    assert_eq!(ruri.host(), Some(Host::Name("biloxi.example.com")));
    let via = m.top_via();
    assert_eq!(via.transport(), Transport::Tls);
    assert_eq!(via.host(), Host::Name("client.atlanta.example.com"));
    assert_eq!(via.port(), Some(5061));
    assert_eq!(via.branch(), Some("z9hG4bK74bf9"));
    assert_eq!(m.max_forwards(), Some(70));
    assert_eq!(m.from().display_name().unwrap().raw(), b"Alice");
    assert_eq!(m.from().tag(), Some("9fxced76sl"));
    assert_eq!(m.to().display_name().unwrap().raw(), b"Bob");
    assert_eq!(m.to().tag(), None);
    assert_eq!(m.call_id(), "3848276298220188511@atlanta.example.com");
    assert_eq!((m.cseq().seq, m.cseq().method), (1, Method::Invite));
    let contacts: Vec<_> = m.contacts().collect();
    assert_eq!(
        contacts[0].addr().unwrap().uri().as_str(),
        "sips:alice@client.atlanta.example.com"
    );
    assert_eq!(m.content_length(), Some(151));
    assert_eq!(m.body().len(), 151);

    let s = sdp::parse(m.sdp_body().unwrap().unwrap(), &SdpLimits::default()).unwrap();
    let o = s.origin.unwrap();
    assert_eq!(o.username, "alice");
    assert_eq!(o.address, ConnAddress::Fqdn("client.atlanta.example.com"));
    assert_eq!(s.media.len(), 1);
    let a = &s.media[0];
    assert_eq!((a.port, a.proto), (49172, "RTP/AVP"));
    assert_eq!(
        s.connection_for(a).unwrap().address,
        ConnAddress::Ip("192.0.2.101".parse().unwrap())
    );
    assert_eq!(a.codec(0).unwrap().encoding, "PCMU");
    assert_eq!(a.codec(0).unwrap().clock_rate, Some(8000));
    assert_eq!(s.direction_for(a), Direction::SendRecv);
    assert_eq!(a.rtcp_port(), Some(49173));

    // The same message on a stream: framed exactly, whatever follows.
    let mut stream = bytes.clone();
    stream.extend_from_slice(b"\r\n\r\nINVITE sip:next");
    assert_eq!(
        frame_stream(&stream, &SipLimits::default()).unwrap(),
        StreamFrame::Message { len: bytes.len() }
    );
    assert_eq!(
        frame_stream(&bytes[..bytes.len() - 1], &SipLimits::default()).unwrap(),
        StreamFrame::NeedMore
    );
}

/// RFC 3261 §24.1, F2 401 Unauthorized (folded Via and WWW-Authenticate).
const F2_401: &str = "SIP/2.0 401 Unauthorized
Via: SIP/2.0/TLS client.biloxi.example.com:5061;branch=z9hG4bKnashds7
 ;received=192.0.2.201
From: Bob <sips:bob@biloxi.example.com>;tag=a73kszlfl
To: Bob <sips:bob@biloxi.example.com>;tag=1410948204
Call-ID: 1j9FpLxk3uxtm8tn@biloxi.example.com
CSeq: 1 REGISTER
WWW-Authenticate: Digest realm=\"atlanta.example.com\", qop=\"auth\",
 nonce=\"ea9c8e88df84f1cec4341ae6cbe5a359\",
 opaque=\"\", stale=FALSE, algorithm=MD5
Content-Length: 0

";

#[test]
fn rfc3261_24_1_unauthorized_response() {
    let bytes = crlf(F2_401);
    let m = parse_message(&bytes, &SipLimits::default()).unwrap();
    assert!(!m.is_request());
    assert_eq!(m.status_code(), Some(401));
    assert_eq!(m.reason_phrase(), Some(&b"Unauthorized"[..]));
    assert_eq!(m.method(), Method::Register);
    assert_eq!(m.top_via().received(), Some("192.0.2.201".parse().unwrap()));
    assert_eq!(m.top_via().branch(), Some("z9hG4bKnashds7"));
    assert_eq!(m.to().tag(), Some("1410948204"));
    assert_eq!(m.from().uri().scheme(), Scheme::Sips);
    let auth = m.first(HeaderName::WwwAuthenticate).unwrap();
    assert!(auth
        .unfolded()
        .ends_with(b"opaque=\"\", stale=FALSE, algorithm=MD5"));
    assert_eq!(m.body(), b"");
}

/// RFC 3261 §7.3.1: the four Subject lines are the same header; a folded value equals its
/// unfolded form; Route values spread over lines form one list.
#[test]
fn rfc3261_7_3_1_header_forms() {
    let msg = crlf(
        "OPTIONS sip:carol@chicago.com SIP/2.0
Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bKhjhs8ass877
To: <sip:carol@chicago.com>
From: Alice <sip:alice@atlanta.com>;tag=1928301774
Call-ID: a84b4c76e66710
CSeq: 63104 OPTIONS
Subject:            lunch
Subject      :      lunch
Subject            :lunch
Subject: lunch
s: I know you're there,
         pick up the phone
         and talk to me!
Route: <sip:alice@atlanta.com>
Route: <sip:bob@biloxi.com>, <sip:carol@chicago.com>
Content-Length: 0

",
    );
    let m = parse_message(&msg, &SipLimits::default()).unwrap();
    let subjects: Vec<_> = m.headers_named("subject").collect();
    assert_eq!(subjects.len(), 5);
    for s in &subjects[..4] {
        assert_eq!(s.value(), b"lunch");
    }
    assert_eq!(
        &*subjects[4].unfolded(),
        b"I know you're there, pick up the phone and talk to me!"
    );
    let routes: Vec<_> = m.list(HeaderName::Route).collect();
    assert_eq!(
        routes,
        vec![
            &b"<sip:alice@atlanta.com>"[..],
            b"<sip:bob@biloxi.com>",
            b"<sip:carol@chicago.com>"
        ]
    );
}

/// RFC 3261 §20 examples for Contact (§20.10), From (§20.20), To (§20.39), Via (§20.42),
/// Content-Type (§20.15), Expires (§20.19), Server (§20.35), User-Agent (§20.41).
#[test]
fn rfc3261_20_header_examples() {
    let msg = crlf(
        "REGISTER sip:bell-telephone.com SIP/2.0
Via: SIP/2.0/UDP erlang.bell-telephone.com:5060;branch=z9hG4bK87asdks7
Via: SIP/2.0/UDP 192.0.2.1:5060 ;received=192.0.2.207;branch=z9hG4bK77asjd
Via: SIP / 2.0 / UDP first.example.com: 4000;ttl=16;maddr=224.2.0.1 ;branch=z9hG4bKa7c6a8dlze.1
From: \"A. G. Bell\" <sip:agb@bell-telephone.com> ;tag=a48s
t: The Operator <sip:operator@cs.columbia.edu>;tag=287447
i:f81d4fae-7dec-11d0-a765-00a0c91e6bf6@192.0.2.4
CSeq: 4711 REGISTER
Contact: \"Mr. Watson\" <sip:watson@worcester.bell-telephone.com>
   ;q=0.7; expires=3600,
   \"Mr. Watson\" <mailto:watson@bell-telephone.com> ;q=0.1
m: <sips:bob@192.0.2.4>;expires=60
Expires: 5
Server: HomeServer v2
User-Agent: Softphone Beta1.5
c: text/html; charset=ISO-8859-4
l: 0

",
    );
    let m = parse_message(&msg, &SipLimits::default()).unwrap();
    let vias: Vec<_> = m.vias().collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].port(), Some(5060));
    assert_eq!(vias[0].branch(), Some("z9hG4bK87asdks7"));
    assert_eq!(vias[1].host(), Host::V4("192.0.2.1".parse().unwrap()));
    assert_eq!(vias[1].received(), Some("192.0.2.207".parse().unwrap()));
    assert_eq!(vias[1].branch(), Some("z9hG4bK77asjd"));
    assert_eq!(vias[2].host(), Host::Name("first.example.com"));
    assert_eq!(vias[2].port(), Some(4000));
    assert_eq!(vias[2].params().value("maddr"), Some("224.2.0.1"));
    assert_eq!(vias[2].params().value("ttl"), Some("16"));
    assert_eq!(vias[2].branch(), Some("z9hG4bKa7c6a8dlze.1"));

    assert_eq!(m.from().display_name().unwrap().raw(), b"A. G. Bell");
    assert_eq!(m.from().tag(), Some("a48s"));
    assert_eq!(m.to().display_name().unwrap().raw(), b"The Operator");
    assert_eq!(m.to().tag(), Some("287447"));
    assert_eq!(
        m.call_id(),
        "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@192.0.2.4"
    );
    assert_eq!(m.cseq().seq, 4711);

    let contacts: Vec<_> = m.contacts().collect();
    assert_eq!(contacts.len(), 3);
    let c0 = contacts[0].addr().unwrap();
    assert_eq!(c0.params().value("q"), Some("0.7"));
    assert_eq!(c0.params().value("expires"), Some("3600"));
    let c1 = contacts[1].addr().unwrap();
    assert_eq!(c1.uri().scheme(), Scheme::Other("mailto"));
    assert_eq!(c1.params().value("q"), Some("0.1"));
    let c2 = contacts[2].addr().unwrap();
    assert_eq!(
        c2.uri().host(),
        Some(Host::V4("192.0.2.4".parse().unwrap()))
    );
    assert_eq!(c2.params().value("expires"), Some("60"));
    assert!(!contacts.contains(&Contact::Star));

    assert_eq!(m.expires().unwrap(), Some(5));
    assert_eq!(&*m.server().unwrap(), b"HomeServer v2");
    assert_eq!(&*m.user_agent().unwrap(), b"Softphone Beta1.5");
    let ct = m.content_type().unwrap();
    assert!(ct.is("text", "html"));
    assert_eq!(ct.params().value("charset"), Some("ISO-8859-4"));
    assert_eq!(m.content_length(), Some(0));
}

/// Reason (RFC 3326 §2), Session-ID (RFC 7989 §9), P-Charging-Vector (RFC 7315 §4.6),
/// Session-Expires (RFC 4028 §4) read from a BYE.
#[test]
fn extension_headers_of_a_bye() {
    let msg = crlf(
        "BYE sip:bob@192.0.2.4 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds10
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf
Call-ID: a84b4c76e66710
CSeq: 231 BYE
Reason: SIP ;cause=200 ;text=\"Call completed elsewhere\"
Reason: Q.850 ;cause=16 ;text=\"Terminated\"
Session-ID: ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2
P-Charging-Vector: icid-value=1234bc9876e; icid-generated-at=192.0.6.8; orig-ioi=home1.net
x: 4000;refresher=uas
Content-Length: 0

",
    );
    let m = parse_message(&msg, &SipLimits::default()).unwrap();
    let reasons: Vec<_> = m.reasons().collect::<Result<_, _>>().unwrap();
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons[0].protocol, ReasonProtocol::Sip);
    assert_eq!(reasons[0].cause, Some(200));
    assert_eq!(reasons[0].text, Some("Call completed elsewhere"));
    assert_eq!(reasons[1].protocol, ReasonProtocol::Q850);
    assert_eq!(reasons[1].cause, Some(16));
    assert_eq!(m.reason().unwrap().unwrap().cause, Some(200));
    let sid = m.session_id().unwrap().unwrap();
    assert_eq!(sid.local, "ab30317f1a784dc48ff824d0d3715d86");
    assert_eq!(sid.remote, Some("47755a9de7794ba387653f2099600ef2"));
    assert_eq!(
        m.p_charging_vector().unwrap().unwrap().icid_value,
        "1234bc9876e"
    );
    let se = m.session_expires().unwrap().unwrap();
    assert_eq!(
        (se.delta_seconds, se.refresher),
        (4000, Some(Refresher::Uas))
    );
    // Absent optional headers are None, not errors.
    assert_eq!(m.expires().unwrap(), None);
    assert_eq!(m.user_agent(), None);
}

/// Missing and malformed are different errors, also for lazily typed headers.
#[test]
fn missing_versus_malformed() {
    let base = "OPTIONS sip:a@example.com SIP/2.0
Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1
To: <sip:a@example.com>
From: <sip:b@example.com>;tag=1
Call-ID: c1
CSeq: 1 OPTIONS
";
    let with = |extra: &str| {
        if extra.is_empty() {
            crlf(&format!("{base}\n"))
        } else {
            crlf(&format!("{base}{extra}\n\n"))
        }
    };
    let limits = SipLimits::default();

    let m = with("Session-ID: nothex");
    let m = parse_message(&m, &limits).unwrap();
    assert!(matches!(
        m.session_id(),
        Err(SipError::MalformedHeader {
            name: "Session-ID",
            ..
        })
    ));
    let m = with("Expires: soon");
    let m = parse_message(&m, &limits).unwrap();
    assert!(matches!(
        m.expires(),
        Err(SipError::MalformedHeader {
            name: "Expires",
            ..
        })
    ));

    let no_from = crlf(&format!(
        "{}\n",
        base.replace("From: <sip:b@example.com>;tag=1\n", "")
    ));
    assert_eq!(
        parse_message(&no_from, &limits).unwrap_err(),
        SipError::MissingHeader { name: "From" }
    );
    let bad_from = crlf(&format!(
        "{}\n",
        base.replace("From: <sip:b@example.com>", "From: <sip:b@example.com")
    ));
    assert!(matches!(
        parse_message(&bad_from, &limits).unwrap_err(),
        SipError::MalformedHeader { name: "From", .. }
    ));
    assert!(parse_message(&with(""), &limits).is_ok());
    let dup = with("i: c2");
    assert_eq!(
        parse_message(&dup, &limits).unwrap_err(),
        SipError::DuplicateHeader { name: "Call-ID" }
    );
    let mf = with("Max-Forwards: 300");
    assert!(matches!(
        parse_message(&mf, &limits).unwrap_err(),
        SipError::MalformedHeader {
            name: "Max-Forwards",
            ..
        }
    ));
    let badver = crlf(&format!("{}\n", base.replace("SIP/2.0\n", "SIP/7.0\n")));
    assert_eq!(
        parse_message(&badver, &limits).unwrap_err(),
        SipError::UnsupportedVersion
    );
    let mismatch = crlf(&format!(
        "{}\n",
        base.replace("CSeq: 1 OPTIONS", "CSeq: 1 foobarOPTIONS")
    ));
    assert_eq!(
        parse_message(&mismatch, &limits).unwrap_err(),
        SipError::CSeqMethodMismatch
    );
    let clerr = with("Content-Length: 9999");
    assert!(matches!(
        parse_message(&clerr, &limits).unwrap_err(),
        SipError::BodyTruncated { declared: 9999, .. }
    ));
}

/// Every error variant has its own metrics label.
#[test]
fn reasons_are_distinct_labels() {
    let errors = [
        SipError::Empty,
        SipError::TooLarge { len: 1, max: 0 },
        SipError::TooManyHeaders { max: 1 },
        SipError::HeaderLineTooLong { max: 1 },
        SipError::MultipartTooDeep { max: 1 },
        SipError::UnterminatedHeaders,
        SipError::BadStartLine,
        SipError::UnsupportedVersion,
        SipError::BadStatusCode,
        SipError::BadMethod,
        SipError::BadRequestUri(collector::sip::UriError::BadHost),
        SipError::BadHeaderLine,
        SipError::MissingHeader { name: "To" },
        SipError::MalformedHeader {
            name: "To",
            source: collector::sip::ValueError::Empty,
        },
        SipError::DuplicateHeader { name: "To" },
        SipError::CSeqMethodMismatch,
        SipError::BadContentLength,
        SipError::ConflictingContentLength,
        SipError::BodyTruncated {
            declared: 1,
            available: 0,
        },
        SipError::BadMultipart,
        SipError::Sdp(sdp::SdpError::Empty),
    ];
    let mut labels: Vec<_> = errors.iter().map(SipError::reason).collect();
    assert!(labels
        .iter()
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    labels.sort_unstable();
    labels.dedup();
    assert_eq!(labels.len(), errors.len());
}
