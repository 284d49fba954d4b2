//! Every SIP message of the shared capture corpus, cut out by the `net` decoder (with this
//! parser's stream framer for TCP), parses, and its fields equal what tshark 4.0.17 read
//! (`testdata/corpus/*.oracle.txt`): Call-ID, method or status, CSeq, From/To user and
//! tag, and the SDP c= addresses, m= ports and media-level attributes. SIP over SCTP is
//! left out: the decoder does not reassemble SCTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use collector::net::pcap::PcapSource;
use collector::net::{Decoder, DecoderConfig, NetEvent};
use collector::sip::sdp::{ConnAddress, SdpLimits};
use collector::sip::{parse_message, stream_framer, SipLimits, SipMessage};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/corpus/");

/// The oracle columns this test compares, as tshark printed them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Fields {
    call_id: String,
    method: String,
    status: String,
    cseq_seq: String,
    cseq_method: String,
    from_user: String,
    to_user: String,
    from_tag: String,
    to_tag: String,
    conn: String,
    ports: String,
    attrs: String,
}

struct Oracle {
    decode_as_ports: Vec<u16>,
    rows: Vec<(String, Fields)>,
}

fn oracle(file: &str) -> Oracle {
    let text = std::fs::read_to_string(format!("{CORPUS}{file}.oracle.txt"))
        .unwrap_or_else(|e| panic!("test data {CORPUS}{file}.oracle.txt: {e}"));
    let mut decode_as_ports = Vec::new();
    let mut rows = Vec::new();
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
            f.get(i).copied().unwrap_or("").to_owned()
        };
        let fields = Fields {
            call_id: get("sip.Call-ID"),
            method: get("sip.Method"),
            status: get("sip.Status-Code"),
            cseq_seq: get("sip.CSeq.seq"),
            cseq_method: get("sip.CSeq.method"),
            from_user: get("sip.from.user"),
            to_user: get("sip.to.user"),
            from_tag: get("sip.from.tag"),
            to_tag: get("sip.to.tag"),
            // tshark prints addresses as written; compare them as addresses.
            conn: get("sdp.connection_info.address")
                .split('~')
                .map(|a| {
                    a.parse::<std::net::IpAddr>()
                        .map_or(a.to_owned(), |ip| ip.to_string())
                })
                .collect::<Vec<_>>()
                .join("~"),
            ports: get("sdp.media.port"),
            attrs: get("sdp.media_attr"),
        };
        // Rows without method and status are decode-as "continuations", not messages.
        if fields.method.is_empty() && fields.status.is_empty() {
            continue;
        }
        assert!(!fields.method.contains('~') && !fields.status.contains('~'));
        rows.push((get("frame.number"), fields));
    }
    Oracle {
        decode_as_ports,
        rows,
    }
}

fn addr_text(a: &ConnAddress<'_>) -> String {
    match a {
        ConnAddress::Ip(ip) => ip.to_string(),
        ConnAddress::Fqdn(n) => (*n).to_owned(),
    }
}

/// The same columns, read by this parser.
fn fields(m: &SipMessage<'_>) -> Fields {
    let (method, status) = match m.status_code() {
        Some(code) => (String::new(), code.to_string()),
        None => (m.method().as_str().to_owned(), String::new()),
    };
    let mut f = Fields {
        call_id: m.call_id().to_owned(),
        method,
        status,
        cseq_seq: m.cseq().seq.to_string(),
        cseq_method: m.cseq().method.as_str().to_owned(),
        from_user: m.from().uri().user().unwrap_or("").to_owned(),
        to_user: m.to().uri().user().unwrap_or("").to_owned(),
        from_tag: m.from().tag().unwrap_or("").to_owned(),
        to_tag: m.to().tag().unwrap_or("").to_owned(),
        ..Fields::default()
    };
    if let Some(s) = m.sdp(&SdpLimits::default()).unwrap() {
        let mut conns: Vec<String> = s.connection.iter().map(|c| addr_text(&c.address)).collect();
        conns.extend(
            s.media
                .iter()
                .filter_map(|x| x.connection.as_ref())
                .map(|c| addr_text(&c.address)),
        );
        f.conn = conns.join("~");
        f.ports = s
            .media
            .iter()
            .map(|x| x.port.to_string())
            .collect::<Vec<_>>()
            .join("~");
        f.attrs = s
            .media
            .iter()
            .flat_map(|x| x.attributes.iter())
            .map(|a| match a.value {
                Some(v) => format!("{}:{}", a.name, String::from_utf8_lossy(v)),
                None => a.name.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("~");
    }
    f
}

fn check(file: &str) -> usize {
    let o = oracle(file);
    let mut cfg = DecoderConfig::default();
    cfg.sip_ports.extend(&o.decode_as_ports);
    let mut dec = Decoder::with_framer(cfg, stream_framer);
    let mut events = Vec::new();
    for frame in &mut PcapSource::open(format!("{CORPUS}{file}"))
        .unwrap_or_else(|e| panic!("test data {CORPUS}{file}: {e}"))
    {
        let frame = frame.unwrap();
        dec.feed(frame.ts_ns, &frame.data, None, &mut events);
    }
    let msgs: Vec<Vec<u8>> = events
        .into_iter()
        .filter_map(|e| match e {
            NetEvent::Sip(p) => Some(p.bytes),
            NetEvent::Udp(_) => None,
        })
        .collect();
    assert_eq!(msgs.len(), o.rows.len(), "{file}: message count");
    for (bytes, (frame, want)) in msgs.iter().zip(&o.rows) {
        let m = parse_message(bytes, &SipLimits::default())
            .unwrap_or_else(|e| panic!("{file} frame {frame}: {e:?}"));
        assert_eq!(&fields(&m), want, "{file} frame {frame}");
    }
    o.rows.len()
}

#[test]
fn corpus_messages_match_tshark() {
    let mut files: Vec<String> = std::fs::read_dir(CORPUS)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".pcap"))
        // SIP over SCTP is not decoded by `net` (counted as unsupported there).
        .filter(|n| !n.contains("sctp"))
        .collect();
    files.sort();
    let mut total = 0;
    for f in &files {
        total += check(f);
    }
    // 81 messages in sngrep_aaa alone; the corpus has several hundred.
    assert!(total > 200, "only {total} messages checked");
}
