//! A SIP call between two IPv4 hosts written as raw frames (INVITE with an SDP offer, 200
//! with an answer, ACK; BYE and its 200), for tests that put exact packets on a veth.
use crate::wire::{eth, ipv4, udp};

/// One call: caller `a` (requests), callee `b` (responses), both on port 5060.
#[derive(Clone, Debug)]
pub struct RawCall {
    /// The caller's address.
    pub a: [u8; 4],
    /// The callee's address.
    pub b: [u8; 4],
    /// Number of the call: in the tags, branch and user parts.
    pub i: usize,
    /// The Call-ID.
    pub call_id: String,
    /// RTP ports of the caller's offer and of the callee's answer.
    pub rtp_ports: (u16, u16),
}

fn dotted(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// An SDP body announcing G.711 µ-law audio on `addr:port`.
pub fn sdp(addr: [u8; 4], port: u16) -> String {
    let ip = dotted(addr);
    format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
}

/// A UDP 5060 → 5060 datagram from `src` to `dst` as an Ethernet frame.
pub fn sip_frame(src: [u8; 4], dst: [u8; 4], text: &str) -> Vec<u8> {
    eth(
        0x0800,
        &ipv4(17, src, dst, &[], 1, 0, &udp(5060, 5060, text.as_bytes())),
    )
}

impl RawCall {
    /// Call `i` of several run side by side between `a` and `b`: Call-ID
    /// `{tag}{i}@{a}`, RTP ports `first_ports` + 10·i (even; RTCP on the next odd one).
    pub fn nth(a: [u8; 4], b: [u8; 4], i: u16, tag: &str, first_ports: (u16, u16)) -> Self {
        Self {
            a,
            b,
            i: usize::from(i),
            call_id: format!("{tag}{i}@{}", dotted(a)),
            rtp_ports: (first_ports.0 + 10 * i, first_ports.1 + 10 * i),
        }
    }

    /// A request (`from_a`) or response of this call as a frame.
    pub fn frame(&self, from_a: bool, text: &str) -> Vec<u8> {
        let (src, dst) = if from_a {
            (self.a, self.b)
        } else {
            (self.b, self.a)
        };
        sip_frame(src, dst, text)
    }

    /// One message: `start` line, `cseq`, the To tag once the dialog exists, and an
    /// optional SDP body.
    pub fn msg(&self, start: &str, cseq: &str, to_tag: bool, body: Option<String>) -> String {
        let i = self.i;
        let (a, b) = (dotted(self.a), dotted(self.b));
        let tag = if to_tag {
            format!(";tag=b{i}")
        } else {
            String::new()
        };
        let body = body.unwrap_or_default();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{start}\r\nVia: SIP/2.0/UDP {a}:5060;branch=z9hG4bK{i}{}\r\nMax-Forwards: 70\r\nFrom: <sip:alice{i}@{a}>;tag=a{i}\r\nTo: <sip:bob{i}@{b}>{tag}\r\nCall-ID: {}\r\nCSeq: {cseq}\r\nContact: <sip:alice{i}@{a}:5060>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            cseq.replace(' ', ""),
            self.call_id,
            body.len()
        )
    }

    fn ruri(&self) -> String {
        format!("sip:bob{}@{}", self.i, dotted(self.b))
    }

    /// The INVITE with the offer, alone (a half-open call when nothing follows).
    pub fn invite(&self, offer: bool) -> Vec<u8> {
        let body = offer.then(|| sdp(self.a, self.rtp_ports.0));
        let start = format!("INVITE {} SIP/2.0", self.ruri());
        self.frame(true, &self.msg(&start, "1 INVITE", false, body))
    }

    /// INVITE with an offer, 200 with an answer, ACK: the call is up.
    pub fn setup(&self) -> Vec<Vec<u8>> {
        let answer = sdp(self.b, self.rtp_ports.1);
        let ack = format!("ACK {} SIP/2.0", self.ruri());
        vec![
            self.invite(true),
            self.frame(
                false,
                &self.msg("SIP/2.0 200 OK", "1 INVITE", true, Some(answer)),
            ),
            self.frame(true, &self.msg(&ack, "1 ACK", true, None)),
        ]
    }

    /// One G.711 µ-law RTP packet (20 ms, 160 bytes of payload) of this call's media, from
    /// the caller's RTP port to the callee's (`from_a`) or back.
    pub fn rtp(&self, from_a: bool, ssrc: u32, seq: u16, ts: u32) -> Vec<u8> {
        let mut b = vec![0x80, 0];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ssrc.to_be_bytes());
        b.extend_from_slice(&[0xff; 160]);
        let (pa, pb) = self.rtp_ports;
        let (src, dst, sp, dp) = if from_a {
            (self.a, self.b, pa, pb)
        } else {
            (self.b, self.a, pb, pa)
        };
        eth(0x0800, &ipv4(17, src, dst, &[], 7, 0, &udp(sp, dp, &b)))
    }

    /// BYE and its 200: the call is over.
    pub fn teardown(&self) -> Vec<Vec<u8>> {
        let bye = format!("BYE {} SIP/2.0", self.ruri());
        vec![
            self.frame(true, &self.msg(&bye, "2 BYE", true, None)),
            self.frame(false, &self.msg("SIP/2.0 200 OK", "2 BYE", true, None)),
        ]
    }
}
