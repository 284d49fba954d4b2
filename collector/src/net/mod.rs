//! From raw frames to complete SIP messages with their transport metadata: capture files
//! ([`pcap`]), IP fragment reassembly ([`frag`], RFC 791 / RFC 8200 §4.5), SIP over TCP
//! ([`tcp`], RFC 3261 §18.3) and over WebSocket ([`ws`], RFC 7118), behind one facade,
//! [`Decoder`], used by the live agent (frames from the kernel ring buffer) and by replay.
//!
//! The decoder also hands out the non-SIP UDP datagrams, so replay can run RTP and RTCP
//! through the same path. Everything is bounded, and every packet not fully handled is
//! counted in [`NetStats`]. Time is injected with each frame.
#![deny(clippy::indexing_slicing, clippy::panic)]

pub mod frag;
pub mod framer;
pub mod pcap;
pub mod tcp;
pub mod ws;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use collector_common::{
    parse::{self, Fragment, ParseError, Parsed, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
    Direction,
};

use self::{
    frag::{FragConfig, FragStats, Reassembler},
    framer::{local_framer, looks_like_sip, Framer, FramingError},
    tcp::{
        FlowKey, Segment, StreamKind, StreamMessage, TcpConfig, TcpFlags, TcpReassembler, TcpStats,
    },
};

/// Reads a big-endian `u16` at `off`.
pub(crate) fn be16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_be_bytes(s.try_into().ok()?))
}

/// Reads a big-endian `u32` at `off`.
pub(crate) fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes(s.try_into().ok()?))
}

/// The address of a [`Parsed`] field (IPv4 is stored mapped into IPv6).
pub(crate) fn ip_addr(version: u8, a: [u8; 16]) -> IpAddr {
    if version == 4 {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(a))
    }
}

/// The transport a SIP message arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (RFC 3261 §18): one message per datagram.
    Udp,
    /// TCP (RFC 3261 §18.3): framed by `Content-Length`.
    Tcp,
    /// WebSocket (RFC 7118): one message per WebSocket message.
    Ws,
}

/// One complete SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipPacket {
    /// Capture time of the packet that completed the message (ns; epoch for files,
    /// the kernel's monotonic clock for the live agent).
    pub ts_ns: u64,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Transport.
    pub transport: Transport,
    /// Which hook saw it (live capture), if known.
    pub direction: Option<Direction>,
    /// The capture cut the datagram short (UDP only; the message is incomplete).
    pub truncated: bool,
    /// The message bytes.
    pub bytes: Vec<u8>,
}

/// A UDP datagram that is not SIP (RTP, RTCP, anything else).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpPacket {
    /// Capture time (ns).
    pub ts_ns: u64,
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
    /// Which hook saw it (live capture), if known.
    pub direction: Option<Direction>,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// What [`Decoder::feed`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// A complete SIP message.
    Sip(SipPacket),
    /// A non-SIP UDP datagram.
    Udp(UdpPacket),
}

/// Configuration of the [`Decoder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Ports of SIP over UDP and TCP.
    pub sip_ports: Vec<u16>,
    /// Ports of SIP over WebSocket (plain `ws:`; `wss:` is encrypted and cannot be read).
    /// Defaults: FreeSWITCH (5066), Asterisk (8088) and the common 8080.
    pub ws_ports: Vec<u16>,
    /// Recognise SIP on other ports by the payload (UDP datagrams and the first segment of
    /// a TCP stream starting with a SIP method or `SIP/2.0`, or a WebSocket upgrade for the
    /// `sip` subprotocol).
    pub heuristic: bool,
    /// Fragment reassembly limits.
    pub frag: FragConfig,
    /// TCP stream limits.
    pub tcp: TcpConfig,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            sip_ports: vec![5060, 5080],
            ws_ports: vec![5066, 8080, 8088],
            heuristic: true,
            frag: FragConfig::default(),
            tcp: TcpConfig::default(),
        }
    }
}

/// Decoder-level counters, plus those of the reassemblers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Frames fed.
    pub frames: u64,
    /// Frames cut before the end of a header.
    pub parse_truncated: u64,
    /// Frames that are not IPv4 or IPv6.
    pub parse_not_ip: u64,
    /// Frames with more VLAN tags or IPv6 extension headers than the parser walks.
    pub parse_unsupported: u64,
    /// Frames with impossible header fields.
    pub parse_malformed: u64,
    /// UDP datagrams yielded as SIP.
    pub udp_sip: u64,
    /// UDP datagrams yielded as non-SIP.
    pub udp_other: u64,
    /// UDP datagrams on a SIP port that do not start like SIP (keepalives, STUN, ...):
    /// yielded as non-SIP, as the kernel does not copy them either.
    pub sip_port_not_sip: u64,
    /// UDP datagrams the capture cut short.
    pub udp_truncated: u64,
    /// SCTP packets: SIP over SCTP (RFC 4168) is not supported.
    pub sctp_unsupported: u64,
    /// Packets of other IP protocols (ICMP, ESP, ...).
    pub other_proto: u64,
    /// Fragment reassembly.
    pub frag: FragStats,
    /// TCP and WebSocket streams.
    pub tcp: TcpStats,
}

impl NetStats {
    /// Every counter with its metric name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let f = &self.frag;
        let t = &self.tcp;
        vec![
            ("frames", self.frames),
            ("parse_truncated", self.parse_truncated),
            ("parse_not_ip", self.parse_not_ip),
            ("parse_unsupported", self.parse_unsupported),
            ("parse_malformed", self.parse_malformed),
            ("udp_sip", self.udp_sip),
            ("udp_other", self.udp_other),
            ("sip_port_not_sip", self.sip_port_not_sip),
            ("udp_truncated", self.udp_truncated),
            ("sctp_unsupported", self.sctp_unsupported),
            ("other_proto", self.other_proto),
            ("frag_fragments", f.frag_fragments),
            ("frag_reassembled", f.frag_reassembled),
            ("frag_overlap", f.frag_overlap),
            ("frag_duplicate", f.frag_duplicate),
            ("frag_timeout", f.frag_timeout),
            ("frag_table_full", f.frag_table_full),
            ("frag_too_many", f.frag_too_many),
            ("frag_too_big", f.frag_too_big),
            ("frag_malformed", f.frag_malformed),
            ("frag_truncated", f.frag_truncated),
            ("frag_discarded", f.frag_discarded),
            ("tcp_segments", t.tcp_segments),
            ("tcp_not_sip", t.tcp_not_sip),
            ("tcp_streams", t.tcp_streams),
            ("tcp_messages", t.tcp_messages),
            ("tcp_retransmissions", t.tcp_retransmissions),
            ("tcp_overlaps", t.tcp_overlaps),
            ("tcp_out_of_order", t.tcp_out_of_order),
            ("tcp_gaps", t.tcp_gaps),
            ("tcp_truncated", t.tcp_truncated),
            ("tcp_resyncs", t.tcp_resyncs),
            ("tcp_resync_bytes", t.tcp_resync_bytes),
            ("tcp_framing_errors", t.tcp_framing_errors),
            ("tcp_buffer_overflow", t.tcp_buffer_overflow),
            ("tcp_table_full", t.tcp_table_full),
            ("tcp_idle_timeouts", t.tcp_idle_timeouts),
            ("tcp_closed", t.tcp_closed),
            ("tcp_unfinished", t.tcp_unfinished),
            ("tcp_keepalive_bytes", t.tcp_keepalive_bytes),
            ("ws_handshakes", t.ws_handshakes),
            ("ws_not_upgrade", t.ws_not_upgrade),
            ("ws_messages", t.ws_messages),
            ("ws_control_frames", t.ws_control_frames),
            ("ws_empty_messages", t.ws_empty_messages),
            ("ws_errors", t.ws_errors),
            ("ws_unsupported_extension", t.ws_unsupported_extension),
            ("ws_too_big", t.ws_too_big),
        ]
    }
}

/// Frames in, SIP messages and non-SIP UDP datagrams out.
pub struct Decoder<E = FramingError> {
    cfg: DecoderConfig,
    frag: Reassembler,
    tcp: TcpReassembler<E>,
    stats: NetStats,
    msgs: Vec<StreamMessage>,
}

impl Decoder<FramingError> {
    /// A decoder framing SIP over TCP with the local framer (to be replaced by the SIP
    /// parser's).
    pub fn new(cfg: DecoderConfig) -> Self {
        Self::with_framer(cfg, local_framer)
    }
}

/// Where the layers of an IP packet that is not a fragment lie in its frame.
struct L4<'a> {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    /// The L4 header and payload captured.
    bytes: &'a [u8],
    /// Bytes of L4 header and payload on the wire, per the IP header.
    wire_len: usize,
}

impl<E> Decoder<E> {
    /// A decoder framing SIP over TCP with `framer`.
    pub fn with_framer(cfg: DecoderConfig, framer: Framer<E>) -> Self {
        let mut tcp_cfg = cfg.tcp;
        tcp_cfg.heuristic = cfg.heuristic;
        Self {
            frag: Reassembler::new(cfg.frag),
            tcp: TcpReassembler::new(tcp_cfg, framer),
            cfg,
            stats: NetStats::default(),
            msgs: Vec::new(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        NetStats {
            frag: *self.frag.stats(),
            tcp: *self.tcp.stats(),
            ..self.stats
        }
    }

    /// Drops fragments and streams that aged out (also done as frames arrive).
    pub fn expire(&mut self, now_ns: u64) {
        self.frag.expire(now_ns);
        self.tcp.expire(now_ns);
    }

    /// Decodes one frame (starting at its Ethernet header) captured at `ts_ns`, appending
    /// what it completes to `out`.
    pub fn feed(
        &mut self,
        ts_ns: u64,
        frame: &[u8],
        direction: Option<Direction>,
        out: &mut Vec<NetEvent>,
    ) {
        self.stats.frames += 1;
        let p = match parse::parse_slice(frame) {
            Ok(p) => p,
            Err(e) => {
                match e {
                    ParseError::Truncated => self.stats.parse_truncated += 1,
                    ParseError::NotIp => self.stats.parse_not_ip += 1,
                    ParseError::Unsupported => self.stats.parse_unsupported += 1,
                    ParseError::Malformed => self.stats.parse_malformed += 1,
                }
                return;
            }
        };
        if p.fragment != Fragment::None {
            // Errors are counted by the reassembler.
            if let Ok(Some(d)) = self.frag.push(ts_ns, frame, &p) {
                let len = d.payload.len();
                let l4 = L4 {
                    src: d.src,
                    dst: d.dst,
                    proto: d.proto,
                    bytes: &d.payload,
                    wire_len: len,
                };
                self.l4(ts_ns, &l4, direction, out);
            }
            return;
        }
        match l4_of(frame, &p) {
            Some(l4) => self.l4(ts_ns, &l4, direction, out),
            None => self.stats.parse_truncated += 1,
        }
    }

    fn port_kind(&self, a: u16, b: u16) -> Option<StreamKind> {
        let has = |ports: &[u16]| ports.contains(&a) || ports.contains(&b);
        if has(&self.cfg.ws_ports) {
            Some(StreamKind::WebSocket)
        } else if has(&self.cfg.sip_ports) {
            Some(StreamKind::Sip)
        } else {
            None
        }
    }

    fn l4(
        &mut self,
        ts_ns: u64,
        l4: &L4<'_>,
        direction: Option<Direction>,
        out: &mut Vec<NetEvent>,
    ) {
        match l4.proto {
            IPPROTO_UDP => self.udp(ts_ns, l4, direction, out),
            IPPROTO_TCP => self.tcp(ts_ns, l4, direction, out),
            IPPROTO_SCTP => self.stats.sctp_unsupported += 1,
            _ => self.stats.other_proto += 1,
        }
    }

    fn udp(
        &mut self,
        ts_ns: u64,
        l4: &L4<'_>,
        direction: Option<Direction>,
        out: &mut Vec<NetEvent>,
    ) {
        let (Some(sport), Some(dport), Some(ulen)) =
            (be16(l4.bytes, 0), be16(l4.bytes, 2), be16(l4.bytes, 4))
        else {
            self.stats.parse_truncated += 1;
            return;
        };
        let ulen = usize::from(ulen);
        if ulen < 8 {
            self.stats.parse_malformed += 1;
            return;
        }
        let end = ulen.min(l4.bytes.len());
        let payload = l4.bytes.get(8..end).unwrap_or_default();
        let truncated = ulen > l4.bytes.len();
        if truncated {
            self.stats.udp_truncated += 1;
        }
        let src = SocketAddr::new(l4.src, sport);
        let dst = SocketAddr::new(l4.dst, dport);
        let on_sip_port = self.cfg.sip_ports.iter().any(|&p| p == sport || p == dport);
        let sip = looks_like_sip(payload) && (on_sip_port || self.cfg.heuristic);
        if on_sip_port && !sip {
            self.stats.sip_port_not_sip += 1;
        }
        if sip {
            self.stats.udp_sip += 1;
            out.push(NetEvent::Sip(SipPacket {
                ts_ns,
                src,
                dst,
                transport: Transport::Udp,
                direction,
                truncated,
                bytes: payload.to_vec(),
            }));
        } else {
            self.stats.udp_other += 1;
            out.push(NetEvent::Udp(UdpPacket {
                ts_ns,
                src,
                dst,
                direction,
                payload: payload.to_vec(),
            }));
        }
    }

    fn tcp(
        &mut self,
        ts_ns: u64,
        l4: &L4<'_>,
        direction: Option<Direction>,
        out: &mut Vec<NetEvent>,
    ) {
        let b = l4.bytes;
        let (Some(sport), Some(dport), Some(seq), Some(&doff), Some(&flags)) =
            (be16(b, 0), be16(b, 2), be32(b, 4), b.get(12), b.get(13))
        else {
            self.stats.parse_truncated += 1;
            return;
        };
        let thl = usize::from(doff >> 4) * 4;
        if thl < 20 {
            self.stats.parse_malformed += 1;
            return;
        }
        let Some(payload) = b.get(thl..) else {
            self.stats.parse_truncated += 1;
            return;
        };
        let key = FlowKey {
            src: SocketAddr::new(l4.src, sport),
            dst: SocketAddr::new(l4.dst, dport),
        };
        let seg = Segment {
            seq,
            flags: TcpFlags {
                fin: flags & 0x01 != 0,
                syn: flags & 0x02 != 0,
                rst: flags & 0x04 != 0,
            },
            payload,
            wire_len: l4.wire_len.saturating_sub(thl).max(payload.len()),
        };
        let kind = self.port_kind(sport, dport);
        self.tcp.push(ts_ns, key, seg, kind, &mut self.msgs);
        for m in self.msgs.drain(..) {
            out.push(NetEvent::Sip(SipPacket {
                ts_ns: m.ts_ns,
                src: m.key.src,
                dst: m.key.dst,
                transport: m.transport,
                direction,
                truncated: false,
                bytes: m.bytes,
            }));
        }
    }
}

/// The L4 bytes of a packet that is not a fragment, bounded by the IP header's length
/// (Ethernet padding excluded) and by what was captured.
fn l4_of<'a>(frame: &'a [u8], p: &Parsed) -> Option<L4<'a>> {
    let l3 = usize::from(p.l3_off);
    let ip_end = match p.ip_version {
        4 => l3 + usize::from(be16(frame, l3 + 2)?),
        _ => l3 + 40 + usize::from(be16(frame, l3 + 4)?),
    };
    let l4 = usize::from(p.l4_off);
    let (bytes, wire_len) = if l4 == 0 {
        // A protocol the parser does not walk into: only its number matters.
        (&[][..], 0)
    } else {
        let end = ip_end.min(frame.len());
        (frame.get(l4..end)?, ip_end.checked_sub(l4)?)
    };
    Some(L4 {
        src: ip_addr(p.ip_version, p.src),
        dst: ip_addr(p.ip_version, p.dst),
        proto: p.proto,
        bytes,
        wire_len,
    })
}
