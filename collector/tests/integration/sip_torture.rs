//! RFC 4475 and RFC 5118 torture messages: every shared file parses or is rejected exactly
//! as `testdata/badinput/*/INDEX.md` says, and accepted files yield the values the RFC
//! prose describes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use collector::sip::multipart::parts;
use collector::sip::sdp::{self, ConnAddress, SdpLimits};
use collector::sip::{
    parse_message, pct_eq, Contact, Host, Method, Scheme, SipError, SipLimits, SipMessage,
    Transport,
};

const BADINPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/badinput");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accept,
    Reject,
    RejectStar,
}

type Check = fn(&SipMessage<'_>);

struct Case {
    file: &'static str,
    verdict: Verdict,
    /// Checks an accepted message (the liberal interpretation for REJECT*).
    check: Option<Check>,
    /// For REJECT: the error reason expected.
    reason: Option<&'static str>,
}

const fn accept(file: &'static str, check: Check) -> Case {
    Case {
        file,
        verdict: Verdict::Accept,
        check: Some(check),
        reason: None,
    }
}
const fn reject(file: &'static str, reason: &'static str) -> Case {
    Case {
        file,
        verdict: Verdict::Reject,
        check: None,
        reason: Some(reason),
    }
}
const fn reject_star(file: &'static str, check: Check) -> Case {
    Case {
        file,
        verdict: Verdict::RejectStar,
        check: Some(check),
        reason: None,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sdp_of<'a>(m: &SipMessage<'a>) -> sdp::Sdp<'a> {
    let body = m.sdp_body().unwrap().expect("sdp body");
    sdp::parse(body, &SdpLimits::default()).unwrap()
}

/// The SDP used by many RFC 4475 messages: c= given, audio 49217 (0 12), video 3227 (31).
fn check_common_sdp(m: &SipMessage<'_>, conn: &str) {
    let s = sdp_of(m);
    assert_eq!(s.connection.unwrap().address, ConnAddress::Ip(ip(conn)));
    assert_eq!(s.media.len(), 2);
    assert_eq!(
        (s.media[0].port, s.media[0].formats.clone()),
        (49217, vec!["0", "12"])
    );
    assert_eq!(
        (s.media[1].port, s.media[1].formats.clone()),
        (3227, vec!["31"])
    );
    assert_eq!(s.media[1].codec(31).unwrap().encoding, "LPC");
}

fn rfc4475_cases() -> Vec<Case> {
    vec![
        accept("wsinv.dat", |m| {
            assert_eq!(m.method(), Method::Invite);
            let ruri = m.request_uri().unwrap();
            assert_eq!(ruri.user(), Some("vivekg"));
            assert_eq!(ruri.host(), Some(Host::Name("chair-dnrc.example.com")));
            assert_eq!(ruri.param("unknownparam"), Some(None));
            assert_eq!(m.to().tag(), Some("1918181833n"));
            assert_eq!(m.to().uri().as_str(), "sip:vivekg@chair-dnrc.example.com");
            let dn = m.from().display_name().unwrap();
            assert_eq!(&*dn.unescaped(), br#"J Rosenberg \""#);
            assert_eq!(m.from().tag(), Some("98asjd8"));
            assert_eq!(m.max_forwards(), Some(68));
            assert_eq!((m.cseq().seq, m.cseq().method), (9, Method::Invite));
            assert_eq!(m.call_id(), "wsinv.ndaksdj@192.0.2.1");
            assert_eq!(m.content_length(), Some(150));
            let vias: Vec<_> = m.vias().collect();
            assert_eq!(vias.len(), 3);
            assert_eq!(
                (vias[0].transport(), vias[0].host(), vias[0].branch()),
                (
                    Transport::Udp,
                    Host::V4("192.0.2.2".parse().unwrap()),
                    Some("390skdjuw")
                )
            );
            assert_eq!(
                (vias[1].transport(), vias[1].host(), vias[1].branch()),
                (
                    Transport::Tcp,
                    Host::Name("spindle.example.com"),
                    Some("z9hG4bK9ikj8")
                )
            );
            assert_eq!(
                (vias[2].transport(), vias[2].host(), vias[2].branch()),
                (
                    Transport::Udp,
                    Host::V4("192.168.255.111".parse().unwrap()),
                    Some("z9hG4bK30239")
                )
            );
            let contacts: Vec<_> = m.contacts().collect();
            assert_eq!(contacts.len(), 1);
            let c = contacts[0].addr().unwrap();
            assert_eq!(
                &*c.display_name().unwrap().unescaped(),
                br#"Quoted string """#
            );
            assert_eq!(c.params().value("newparam"), Some("newvalue"));
            assert!(c.params().has("secondparam"));
            assert_eq!(c.params().value("q"), Some("0.33"));
            let nf = m.header("newfangledheader").unwrap();
            assert_eq!(
                &*nf.unfolded(),
                b"newfangled value continued newfangled value"
            );
            assert_eq!(m.header("Subject").unwrap().value(), b"");
            assert_eq!(
                m.header("UnknownHeaderWithUnusualValue").unwrap().value(),
                b";;,,;;,;"
            );
            assert_eq!(m.body().len(), 150);
            check_common_sdp(m, "192.0.2.4");
        }),
        accept("esc01.dat", |m| {
            let ruri = m.request_uri().unwrap();
            assert_eq!(&*ruri.user_decoded().unwrap(), b"sips:user@example.com");
            assert_eq!(ruri.host(), Some(Host::Name("example.net")));
            // sip:%75se%72@example.com is sip:user@example.com.
            assert!(pct_eq(m.to().uri().user().unwrap().as_bytes(), b"user"));
            assert_eq!(&*m.from().uri().user_decoded().unwrap(), b"I have spaces");
            assert_eq!(m.call_id(), "esc01.239409asdfakjkn23onasd0-3234");
            assert!(m.content_type().unwrap().is("application", "sdp"));
            let c: Vec<_> = m.contacts().collect();
            let c = c[0].addr().unwrap().uri();
            assert_eq!(&*c.user_decoded().unwrap(), b"caller");
            assert_eq!(c.param("lr"), Some(None));
            let v = c.param("name").unwrap().unwrap();
            assert_eq!(&*collector::sip::pct_decode(v.as_bytes()), b"value%41");
            check_common_sdp(m, "192.0.2.1");
        }),
        accept("esc02.dat", |m| {
            assert_eq!(m.method(), Method::Other("RE%47IST%45R"));
            assert_ne!(m.method(), Method::Register);
            assert_eq!(m.cseq().method, Method::Other("RE%47IST%45R"));
            let dn = m.to().display_name().unwrap();
            assert!(dn.is_quoted());
            assert_eq!(dn.raw(), b"%Z%45");
            assert_eq!(m.from().display_name().unwrap().raw(), b"%Z%45");
            // C%6Fntact is an unknown header, not a third Contact.
            let hosts: Vec<_> = m
                .contacts()
                .map(|c| c.addr().unwrap().uri().host().unwrap())
                .collect();
            assert_eq!(
                hosts,
                vec![
                    Host::Name("host1.example.com"),
                    Host::Name("host3.example.com")
                ]
            );
            let odd = m.header("C%6Fntact").unwrap();
            assert_eq!(odd.known(), None);
            assert_eq!(m.top_via().branch(), Some("z9hG4bK209%fzsnel234"));
            assert_eq!(m.top_via().transport(), Transport::Tcp);
        }),
        accept("longreq.dat", |m| {
            assert_eq!(m.method(), Method::Invite);
            let to = m.to();
            assert!(to
                .display_name()
                .unwrap()
                .raw()
                .starts_with(b"I have a user name of extreme"));
            assert_eq!(to.uri().port(), Some(6000));
            assert_eq!(to.uri().params().count(), 3);
            let tag = m.from().tag().unwrap();
            assert!(tag.starts_with("1298298298") && tag.ends_with("2424"));
            assert!(m.from().params().has("unknownValuelessparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamnameparamname"));
            assert!(m.call_id().starts_with("longreq.onereallyreally"));
            let vias: Vec<_> = m.vias().collect();
            assert_eq!(vias.len(), 34);
            assert_eq!(vias[0].host(), Host::Name("sip33.example.com"));
            assert_eq!(vias[33].received(), Some(ip("192.0.2.5")));
            assert!(vias[33].branch().unwrap().ends_with("longbranchvalue"));
            assert_eq!(m.max_forwards(), Some(70));
            assert_eq!(m.content_length(), Some(150));
            check_common_sdp(m, "192.0.2.1");
        }),
        accept("semiuri.dat", |m| {
            let ruri = m.request_uri().unwrap();
            assert_eq!(ruri.user(), Some("user;par=u%40example.net"));
            assert_eq!(ruri.host(), Some(Host::Name("example.com")));
            assert_eq!(ruri.params().count(), 0);
            let accept: Vec<_> = m.header("Accept").unwrap().list().collect();
            assert_eq!(accept.len(), 6);
            assert_eq!(accept[5], b"message/sipfrag");
        }),
        accept("mpart01.dat", |m| {
            assert_eq!(m.method(), Method::Message);
            let ct = m.content_type().unwrap();
            assert!(ct.is("multipart", "mixed"));
            assert_eq!(ct.boundary(), Some("7a9cbec02ceef655"));
            assert_eq!(m.body().len(), 553);
            assert_eq!(m.top_via().rport(), Some(None));
            let ps: Vec<_> = parts(m.body(), "7a9cbec02ceef655")
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(ps.len(), 2);
            assert!(ps[0].content_type().unwrap().unwrap().is("text", "plain"));
            assert_eq!(ps[0].body(), b"Hello");
            assert!(ps[1]
                .content_type()
                .unwrap()
                .unwrap()
                .is("application", "octet-stream"));
            // The binary part keeps its bare LF bytes.
            assert!(ps[1].body().contains(&b'\n'));
            assert!(ps[1].body().starts_with(&[0x30, 0x82]));
            assert_eq!(m.sdp_body().unwrap(), None);
            assert_eq!(&*m.user_agent().unwrap(), b"SIPimp.org/0.2.5 (curses)");
        }),
        accept("noreason.dat", |m| {
            assert_eq!(m.status_code(), Some(100));
            assert_eq!(m.reason_phrase(), Some(&b""[..]));
            assert_eq!(m.method(), Method::Invite);
        }),
        reject("badinv01.dat", "malformed_header"),
        reject("ncl.dat", "bad_content_length"),
        reject("scalarlg.dat", "malformed_header"),
        // REJECT*: a Request-URI in <> is refused (the liberal reading is optional).
        Case {
            file: "ltgtruri.dat",
            verdict: Verdict::RejectStar,
            check: None,
            reason: Some("bad_request_uri"),
        },
        reject_star("lwsstart.dat", |m| {
            assert_eq!(m.method(), Method::Invite);
            assert_eq!(m.request_uri().unwrap().as_str(), "sip:user@example.com");
            assert_eq!(m.max_forwards(), Some(8));
        }),
        reject_star("escruri.dat", |m| {
            let ruri = m.request_uri().unwrap();
            assert_eq!(ruri.user(), Some("user"));
            assert_eq!(ruri.host(), Some(Host::Name("example.com")));
            assert_eq!(ruri.headers(), Some("Route=%3Csip:example.com%3E"));
            // The escaped header never becomes a real one.
            assert!(m.header("Route").is_none());
        }),
        reject_star("regbadct.dat", |m| {
            let c: Vec<_> = m.contacts().collect();
            assert_eq!(c.len(), 1);
            let u = c[0].addr().unwrap().uri();
            assert_eq!(u.user(), Some("user"));
            assert_eq!(u.host(), Some(Host::Name("example.com")));
            assert_eq!(u.headers(), Some("Route=%3Csip:sip.example.com%3E"));
            assert!(m.header("Route").is_none());
        }),
        reject_star("baddn.dat", |m| {
            assert_eq!(m.from().display_name().unwrap().raw(), b"Bell, Alexander");
            assert_eq!(m.from().tag(), Some("43"));
            assert_eq!(m.to().display_name().unwrap().raw(), b"Watson, Thomas");
            assert_eq!(m.to().uri().as_str(), "sip:t.watson@example.org");
        }),
        reject("mismatch01.dat", "cseq_method_mismatch"),
        reject("bigcode.dat", "bad_status_code"),
        reject("insuf.dat", "missing_header"),
        accept("novelsc.dat", |m| {
            let ruri = m.request_uri().unwrap();
            assert_eq!(ruri.scheme(), Scheme::Other("soap.beep"));
            assert_eq!(ruri.opaque(), "//192.0.2.103:3002");
        }),
        accept("bext01.dat", |m| {
            assert_eq!(m.header("Require").unwrap().list().count(), 2);
            assert_eq!(m.header("proxy-require").unwrap().list().count(), 2);
            assert_eq!(m.top_via().transport(), Transport::Tls);
        }),
        accept("regaut01.dat", |m| {
            assert_eq!(m.method(), Method::Register);
            assert_eq!(
                m.header("Authorization").unwrap().value(),
                b"NoOneKnowsThisScheme opaque-data=here"
            );
            assert_eq!(m.content_length(), Some(0));
        }),
        reject("mcl01.dat", "conflicting_content_length"),
        accept("zeromf.dat", |m| {
            assert_eq!(m.max_forwards(), Some(0));
        }),
        accept("cparam02.dat", |m| {
            let c: Vec<_> = m.contacts().collect();
            let a = c[0].addr().unwrap();
            assert_eq!(a.uri().param("unknownparam"), Some(None));
            assert!(a.params().is_empty());
            assert_eq!(a.uri().user(), Some("+19725552222"));
        }),
        accept("sdp01.dat", |m| {
            assert_eq!(m.header("Accept").unwrap().value(), b"text/nobodyKnowsThis");
            check_common_sdp(m, "192.0.2.5");
        }),
        accept("inv2543.dat", |m| {
            assert_eq!(m.content_length(), None);
            assert_eq!(m.to().tag(), None);
            assert_eq!(m.top_via().branch(), None);
            assert_eq!(m.max_forwards(), None);
            assert_eq!(m.from().uri().param("user"), Some(Some("phone")));
            let s = sdp_of(m);
            assert_eq!(
                s.connection.unwrap().address,
                ConnAddress::Ip(ip("192.0.2.5"))
            );
            assert_eq!(s.media[0].port, 49217);
        }),
    ]
}

fn rfc5118_cases() -> Vec<Case> {
    vec![
        accept("ipv6-good.sip", |m| {
            assert_eq!(
                m.request_uri().unwrap().host(),
                Some(Host::V6("2001:db8::10".parse().unwrap()))
            );
            assert_eq!(
                m.top_via().host(),
                Host::V6("2001:db8::9:1".parse().unwrap())
            );
            let c: Vec<_> = m.contacts().collect();
            assert_eq!(
                c[0].addr().unwrap().uri().host(),
                Some(Host::V6("2001:db8::1".parse().unwrap()))
            );
        }),
        accept("port-ambiguous.sip", |m| {
            let ruri = m.request_uri().unwrap();
            assert_eq!(
                ruri.host(),
                Some(Host::V6("2001:db8::10:5070".parse().unwrap()))
            );
            assert_eq!(ruri.port(), None);
        }),
        accept("via-received-param-with-delim.sip", |m| {
            assert_eq!(m.method(), Method::Bye);
            assert_eq!(m.top_via().received(), Some(ip("2001:db8::9:255")));
            assert_eq!(m.top_via().branch(), Some("z9hG4bKas3-111"));
        }),
        accept("ipv6-in-sdp.sip", |m| {
            let s = sdp_of(m);
            assert_eq!(
                s.origin.unwrap().address,
                ConnAddress::Ip(ip("2001:db8::20"))
            );
            let ports: Vec<_> = s.media.iter().map(|x| x.port).collect();
            assert_eq!(ports, vec![6000, 6024]);
            for media in &s.media {
                assert_eq!(
                    s.connection_for(media).unwrap().address,
                    ConnAddress::Ip(ip("2001:db8::20"))
                );
            }
            assert_eq!(s.media[0].codec(2).unwrap().encoding, "G726-32");
        }),
        accept("mult-ip-in-sdp.sip", |m| {
            let s = sdp_of(m);
            assert!(s.connection.is_none());
            assert_eq!(s.media[0].port, 22334);
            assert_eq!(
                s.connection_for(&s.media[0]).unwrap().address,
                ConnAddress::Ip(ip("192.0.2.1"))
            );
            assert_eq!(s.media[1].port, 6024);
            assert_eq!(
                s.connection_for(&s.media[1]).unwrap().address,
                ConnAddress::Ip(ip("2001:db8::1"))
            );
        }),
        accept("ipv6-bug-abnf-3-colons.sip", |m| {
            let want = Host::V6("2001:db8::c000:201".parse().unwrap());
            assert_eq!(m.request_uri().unwrap().host(), Some(want));
            assert_eq!(m.to().uri().host(), Some(want));
        }),
    ]
}

/// The verdict column of an INDEX.md table, by file name.
fn index_verdicts(dir: &str) -> BTreeMap<String, Verdict> {
    let text = std::fs::read_to_string(format!("{BADINPUT}/{dir}/INDEX.md"))
        .unwrap_or_else(|e| panic!("test data {:?}: {e}", format!("{BADINPUT}/{dir}/INDEX.md")));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() < 5 || !(cols[1].ends_with(".dat") || cols[1].ends_with(".sip")) {
            continue;
        }
        let v = match cols[4] {
            "ACCEPT" => Verdict::Accept,
            "REJECT" => Verdict::Reject,
            "REJECT*" => Verdict::RejectStar,
            other => panic!("unknown verdict {other} for {}", cols[1]),
        };
        out.insert(cols[1].to_string(), v);
    }
    out
}

fn run(dir: &str, cases: Vec<Case>) {
    let index = index_verdicts(dir);
    let mut on_disk: Vec<String> = std::fs::read_dir(format!("{BADINPUT}/{dir}"))
        .unwrap_or_else(|e| panic!("test data {:?}: {e}", format!("{BADINPUT}/{dir}")))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "INDEX.md")
        .collect();
    on_disk.sort();
    let mut covered: Vec<String> = cases.iter().map(|c| c.file.to_string()).collect();
    covered.sort();
    assert_eq!(on_disk, covered, "every file of {dir} has exactly one case");
    assert_eq!(
        index.keys().cloned().collect::<Vec<_>>(),
        covered,
        "INDEX.md lists every file"
    );

    let limits = SipLimits::default();
    for case in cases {
        assert_eq!(
            index[case.file], case.verdict,
            "{}: verdict differs from INDEX.md",
            case.file
        );
        let bytes = std::fs::read(format!("{BADINPUT}/{dir}/{}", case.file)).unwrap_or_else(|e| {
            panic!(
                "test data {:?}: {e}",
                format!("{BADINPUT}/{dir}/{}", case.file)
            )
        });
        let result = parse_message(&bytes, &limits);
        match (case.verdict, result) {
            (Verdict::Accept, Ok(m)) => (case.check.unwrap())(&m),
            (Verdict::Accept, Err(e)) => panic!("{}: must be accepted, got {e:?}", case.file),
            (Verdict::Reject, Ok(_)) => panic!("{}: must be rejected", case.file),
            (Verdict::Reject | Verdict::RejectStar, Err(e)) => {
                let want = case.reason.unwrap_or_else(|| {
                    panic!(
                        "{}: rejected ({e:?}) but a liberal check was given",
                        case.file
                    )
                });
                assert_eq!(e.reason(), want, "{}: {e:?}", case.file);
            }
            (Verdict::RejectStar, Ok(m)) => match case.check {
                Some(check) => check(&m),
                None => panic!(
                    "{}: accepted but no liberal interpretation encoded",
                    case.file
                ),
            },
        }
    }
}

#[test]
fn rfc4475_torture_messages() {
    run("rfc4475", rfc4475_cases());
}

#[test]
fn rfc5118_ipv6_torture_messages() {
    run("rfc5118", rfc5118_cases());
}

/// The specific causes RFC 4475 names for the rejected messages.
#[test]
fn rfc4475_rejections_name_the_cause() {
    let limits = SipLimits::default();
    let read = |f: &str| {
        std::fs::read(format!("{BADINPUT}/rfc4475/{f}"))
            .unwrap_or_else(|e| panic!("test data {:?}: {e}", format!("{BADINPUT}/rfc4475/{f}")))
    };
    let err = |f: &str| parse_message(&read(f), &limits).unwrap_err();
    assert!(matches!(
        err("badinv01.dat"),
        SipError::MalformedHeader { name: "Via", .. }
    ));
    assert!(matches!(
        err("scalarlg.dat"),
        SipError::MalformedHeader { name: "CSeq", .. }
    ));
    assert_eq!(
        err("insuf.dat"),
        SipError::MissingHeader { name: "Call-ID" }
    );
    assert_eq!(err("ncl.dat"), SipError::BadContentLength);
    assert_eq!(err("mcl01.dat"), SipError::ConflictingContentLength);
    assert_eq!(err("bigcode.dat"), SipError::BadStatusCode);
    assert_eq!(err("mismatch01.dat"), SipError::CSeqMethodMismatch);
    // The same bytes as one TCP frame fail the same way.
    assert_eq!(
        collector::sip::frame_len(&read("ncl.dat"), &limits),
        Err(SipError::BadContentLength)
    );
    assert_eq!(
        collector::sip::frame_len(&read("mcl01.dat"), &limits),
        Err(SipError::ConflictingContentLength)
    );
}

/// A Contact `*` and a datagram with a second message after Content-Length.
#[test]
fn trailing_bytes_after_content_length_are_ignored() {
    let bytes = std::fs::read(format!("{BADINPUT}/rfc4475/zeromf.dat")).unwrap_or_else(|e| {
        panic!(
            "test data {:?}: {e}",
            format!("{BADINPUT}/rfc4475/zeromf.dat")
        )
    });
    let mut two = bytes.clone();
    two.extend_from_slice(&bytes);
    let m = parse_message(&two, &SipLimits::default()).unwrap();
    assert_eq!(m.as_bytes(), &bytes[..]);
    assert_eq!(m.body(), b"");
    let star = b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n";
    let m = parse_message(star, &SipLimits::default()).unwrap();
    assert_eq!(m.contacts().collect::<Vec<_>>(), vec![Contact::Star]);
    assert_eq!(m.expires().unwrap(), Some(0));
}
