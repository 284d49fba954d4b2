//! Hand-written SIP messages (RFC 3261 §7 syntax, RFC 8866 SDP) for the tracker tests.
use std::net::SocketAddr;

use crate::net::{SipPacket, Transport};

pub const CALLER: &str = "192.0.2.10:5060";
pub const CALLEE: &str = "198.51.100.20:5060";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An SDP body announcing audio at `ip:port` with PCMU, PCMA and telephone-event 101.
pub fn sdp(ip: &str, port: u16, extra: &str) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n{extra}"
    )
}

/// One message: start line, headers, optional SDP body.
#[derive(Clone, Debug)]
pub struct Msg {
    pub start: String,
    pub call_id: String,
    pub cseq: u32,
    pub cseq_method: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub branch: String,
    pub extra: Vec<String>,
    pub body: Option<String>,
}

impl Msg {
    pub fn request(method: &str, call_id: &str, cseq: u32, branch: &str) -> Self {
        Self {
            start: format!("{method} sip:bob@example.net SIP/2.0"),
            call_id: call_id.to_owned(),
            cseq,
            cseq_method: method.to_owned(),
            from_tag: "alice-tag".to_owned(),
            to_tag: None,
            branch: branch.to_owned(),
            extra: Vec::new(),
            body: None,
        }
    }

    pub fn response(code: u16, of: &Msg) -> Self {
        Self {
            start: format!("SIP/2.0 {code} Reason"),
            ..of.clone()
        }
        .no_body()
    }

    pub fn with_to_tag(mut self, t: &str) -> Self {
        self.to_tag = Some(t.to_owned());
        self
    }

    pub fn with_from_tag(mut self, t: &str) -> Self {
        self.from_tag = t.to_owned();
        self
    }

    pub fn header(mut self, h: &str) -> Self {
        self.extra.push(h.to_owned());
        self
    }

    pub fn body(mut self, b: String) -> Self {
        self.body = Some(b);
        self
    }

    pub fn no_body(mut self) -> Self {
        self.body = None;
        self.extra.clear();
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "{}\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
             From: \"Alice\" <sip:+441632960001@example.com>;tag={}\r\n\
             To: <sip:+441632960002@example.net>{}\r\nCall-ID: {}\r\nCSeq: {} {}\r\n",
            self.start,
            self.branch,
            self.from_tag,
            self.to_tag
                .as_ref()
                .map(|t| format!(";tag={t}"))
                .unwrap_or_default(),
            self.call_id,
            self.cseq,
            self.cseq_method,
        );
        for h in &self.extra {
            s.push_str(h);
            s.push_str("\r\n");
        }
        match &self.body {
            Some(b) => {
                s.push_str(&format!(
                    "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                ));
            }
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s.into_bytes()
    }

    /// The packet from `src` to `dst` at `ts_ns`.
    pub fn packet(&self, ts_ns: u64, src: &str, dst: &str) -> SipPacket {
        SipPacket {
            ts_ns,
            src: addr(src),
            dst: addr(dst),
            transport: Transport::Udp,
            direction: None,
            truncated: false,
            bytes: self.bytes(),
        }
    }
}

/// An RTP packet (RFC 3550 §5.1) of 160 bytes of payload.
pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut v = vec![0x80, pt];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&ts.to_be_bytes());
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&[0xd5; 160]);
    v
}

/// A receiver report (RFC 3550 §6.4.2) from `ssrc` with one block about `about`.
pub fn rtcp_rr(ssrc: u32, about: u32) -> Vec<u8> {
    rtcp_rr_with(ssrc, about, 0, 100, 16)
}

/// An RR without report blocks and an XR with one VoIP Metrics block about `about`
/// (RFC 3611 §4.7), loss rate `loss` and R factor `r`, the other fields 0.
pub fn rtcp_rr_xr(sender: u32, about: u32, loss: u8, r: u8) -> Vec<u8> {
    let mut p = vec![0x80, 201, 0, 1];
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&[0x80, 207, 0, 10]);
    p.extend_from_slice(&sender.to_be_bytes());
    p.extend_from_slice(&[7, 0, 0, 8]);
    p.extend_from_slice(&about.to_be_bytes());
    let mut words = [0u8; 28];
    words[0] = loss;
    words[16] = r;
    p.extend_from_slice(&words);
    p
}

/// A receiver report from `ssrc` about `about` saying `lost` packets lost in all (fraction
/// 0), `ext_highest` received at most, `jitter` timestamp units.
pub fn rtcp_rr_with(ssrc: u32, about: u32, lost: u32, ext_highest: u32, jitter: u32) -> Vec<u8> {
    let mut v = vec![0x81, 201, 0, 7];
    v.extend_from_slice(&ssrc.to_be_bytes());
    v.extend_from_slice(&about.to_be_bytes());
    v.extend_from_slice(&(lost & 0x00ff_ffff).to_be_bytes()); // fraction 0, cumulative lost
    v.extend_from_slice(&ext_highest.to_be_bytes());
    v.extend_from_slice(&jitter.to_be_bytes());
    v.extend_from_slice(&[0; 8]); // LSR, DLSR
    v
}
