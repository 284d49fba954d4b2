//! SIP over TCP stream reassembly (RFC 9293 sequence space; RFC 3261 §18.3 framing; RFC 5626
//! §3.5.1 CRLF keepalives) and SIP over WebSocket on top of it (RFC 7118, via [`super::ws`]).
//!
//! Each direction of a connection is a stream keyed by its addresses. In-order bytes are
//! appended to a buffer; retransmitted bytes are dropped by sequence number; segments ahead of
//! the expected sequence are held (a bounded number). When the hole in front of them cannot be
//! filled (too many held, the capture cut a segment short), the stream skips it and resyncs at
//! the next SIP start line (or, on WebSocket, the next frame that carries one). Every such event
//! is counted in [`TcpStats`]. Time is injected.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{collections::HashMap, net::SocketAddr};

use super::{
    framer::{find_start_line, leading_crlf, looks_like_sip, Framer},
    ws::{self, HandshakeSide, Resync, WsConfig, WsDecoder},
    Transport,
};

/// Longest line skipped while looking for a SIP start line before it is dropped unseen.
const MAX_RESYNC_LINE: usize = 8 * 1024;
/// Longest HTTP header block accepted as a WebSocket handshake.
const MAX_HANDSHAKE: usize = 16 * 1024;
/// How long a stream closed by FIN is remembered, to recognise late retransmissions (ns).
const CLOSED_LINGER_NS: u64 = 10_000_000_000;

/// Limits of the stream table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    /// Streams (one per direction of a connection) tracked at once.
    pub max_streams: usize,
    /// Bytes buffered per stream, in order and held out of order together.
    pub max_buffer: usize,
    /// Out-of-order segments held per stream.
    pub max_ooo_segments: usize,
    /// A stream with no segment for this long is forgotten (ns).
    pub idle_timeout_ns: u64,
    /// Start streams on unconfigured ports whose first segment looks like SIP (or like a
    /// WebSocket handshake for the `sip` subprotocol).
    pub heuristic: bool,
    /// WebSocket limits.
    pub ws: WsConfig,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            max_streams: 4096,
            max_buffer: 256 * 1024,
            max_ooo_segments: 32,
            idle_timeout_ns: 300_000_000_000,
            heuristic: true,
            ws: WsConfig::default(),
        }
    }
}

/// What the reassembler did, counted per reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Segments received.
    pub tcp_segments: u64,
    /// Segments of flows that are neither on a SIP port nor look like SIP.
    pub tcp_not_sip: u64,
    /// Streams started.
    pub tcp_streams: u64,
    /// SIP messages framed (plain TCP).
    pub tcp_messages: u64,
    /// Segments whose bytes had all been received already.
    pub tcp_retransmissions: u64,
    /// Segments partly overlapping received bytes (the overlap was dropped).
    pub tcp_overlaps: u64,
    /// Segments held because they arrived ahead of the expected sequence.
    pub tcp_out_of_order: u64,
    /// Holes in the sequence given up on (bytes lost for good).
    pub tcp_gaps: u64,
    /// Segments cut short by the capture (the rest of their bytes is a gap).
    pub tcp_truncated: u64,
    /// Times bytes were skipped to find a SIP start line.
    pub tcp_resyncs: u64,
    /// Bytes skipped while resynchronising.
    pub tcp_resync_bytes: u64,
    /// Framing errors (bad `Content-Length`).
    pub tcp_framing_errors: u64,
    /// Buffers that reached the limit without a complete message (dropped).
    pub tcp_buffer_overflow: u64,
    /// New streams refused because the table was full.
    pub tcp_table_full: u64,
    /// Streams forgotten after the idle timeout.
    pub tcp_idle_timeouts: u64,
    /// Streams closed by FIN or RST.
    pub tcp_closed: u64,
    /// Streams closed or forgotten with bytes of an incomplete message still buffered.
    pub tcp_unfinished: u64,
    /// Keepalive CRLF bytes skipped between messages.
    pub tcp_keepalive_bytes: u64,
    /// WebSocket opening handshakes seen.
    pub ws_handshakes: u64,
    /// HTTP streams on WebSocket ports that were not an upgrade (ignored).
    pub ws_not_upgrade: u64,
    /// SIP messages decoded from WebSocket messages.
    pub ws_messages: u64,
    /// WebSocket control frames (ignored).
    pub ws_control_frames: u64,
    /// WebSocket messages that were empty or only line ends (ignored).
    pub ws_empty_messages: u64,
    /// WebSocket protocol errors (the stream resyncs).
    pub ws_errors: u64,
    /// Frames with reserved bits set (a negotiated extension such as permessage-deflate,
    /// which is not decoded).
    pub ws_unsupported_extension: u64,
    /// Frames or messages beyond the size limits.
    pub ws_too_big: u64,
}

/// One direction of a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Sender.
    pub src: SocketAddr,
    /// Receiver.
    pub dst: SocketAddr,
}

impl FlowKey {
    /// The opposite direction.
    pub fn reversed(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
        }
    }
}

/// The TCP header flags that matter for reassembly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    /// SYN: a new connection; the payload starts at `seq + 1`.
    pub syn: bool,
    /// FIN: the sender has no more bytes.
    pub fin: bool,
    /// RST: the connection is gone (both directions).
    pub rst: bool,
}

/// One TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// Sequence number of the segment.
    pub seq: u32,
    /// Flags.
    pub flags: TcpFlags,
    /// Payload bytes captured.
    pub payload: &'a [u8],
    /// Payload bytes on the wire according to the IP header (more than `payload.len()` when
    /// the capture cut the segment short).
    pub wire_len: usize,
}

/// How a new stream on a configured port is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// SIP framed by `Content-Length`.
    Sip,
    /// SIP over WebSocket: an HTTP upgrade, then frames.
    WebSocket,
}

/// A SIP message taken out of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMessage {
    /// Capture time of the segment that completed the message (ns).
    pub ts_ns: u64,
    /// Direction.
    pub key: FlowKey,
    /// [`Transport::Tcp`] or [`Transport::Ws`].
    pub transport: Transport,
    /// The message.
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
enum Mode {
    Sip,
    /// WebSocket port, nothing seen yet: a handshake, SIP, or frames of a connection joined
    /// midway.
    WsStart,
    WsHandshake,
    WsFrames(WsDecoder),
    /// Not SIP after all (an HTTP exchange that was no upgrade): bytes are dropped.
    Ignored,
}

#[derive(Debug)]
struct Stream {
    kind: StreamKind,
    mode: Mode,
    next_seq: Option<u32>,
    buf: Vec<u8>,
    /// Segments ahead of `next_seq`: sequence, bytes captured, bytes on the wire.
    ooo: Vec<(u32, Vec<u8>, usize)>,
    ooo_bytes: usize,
    last_ns: u64,
    /// FIN seen and every byte before it taken: later segments are retransmissions.
    closed: bool,
    /// Bytes were lost in front of `buf`: find a frame boundary before decoding (WebSocket).
    ws_resync: bool,
}

impl Stream {
    fn new(kind: StreamKind, now_ns: u64) -> Self {
        Self {
            kind,
            mode: Self::initial_mode(kind),
            next_seq: None,
            buf: Vec::new(),
            ooo: Vec::new(),
            ooo_bytes: 0,
            last_ns: now_ns,
            closed: false,
            ws_resync: false,
        }
    }

    /// Bytes of a message that will now never complete are buffered.
    fn unfinished(&self) -> bool {
        let closed_or_ignored = matches!(self.mode, Mode::Ignored) || self.closed;
        !closed_or_ignored && (leading_crlf(&self.buf) < self.buf.len() || !self.ooo.is_empty())
    }

    fn initial_mode(kind: StreamKind) -> Mode {
        match kind {
            StreamKind::Sip => Mode::Sip,
            StreamKind::WebSocket => Mode::WsStart,
        }
    }
}

/// Signed distance from `b` to `a` in sequence space (RFC 9293 §3.4 modular comparison).
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// Output and counters shared by the per-stream steps.
struct Sink<'a, E> {
    key: FlowKey,
    now_ns: u64,
    framer: Framer<E>,
    cfg: &'a TcpConfig,
    stats: &'a mut TcpStats,
    out: &'a mut Vec<StreamMessage>,
}

/// The table of TCP streams carrying SIP.
#[derive(Debug)]
pub struct TcpReassembler<E> {
    cfg: TcpConfig,
    framer: Framer<E>,
    streams: HashMap<FlowKey, Stream>,
    stats: TcpStats,
    last_sweep_ns: u64,
}

impl<E> TcpReassembler<E> {
    /// An empty table framing SIP messages with `framer`.
    pub fn new(cfg: TcpConfig, framer: Framer<E>) -> Self {
        Self {
            cfg,
            framer,
            streams: HashMap::new(),
            stats: TcpStats::default(),
            last_sweep_ns: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// Streams tracked.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Forgets streams idle for longer than the timeout.
    pub fn expire(&mut self, now_ns: u64) {
        self.last_sweep_ns = now_ns;
        let idle = self.cfg.idle_timeout_ns;
        let stats = &mut self.stats;
        self.streams.retain(|_, s| {
            let age = now_ns.saturating_sub(s.last_ns);
            if s.closed {
                return age < CLOSED_LINGER_NS.min(idle);
            }
            let keep = age < idle;
            if !keep {
                stats.tcp_idle_timeouts += 1;
                stats.tcp_unfinished += u64::from(s.unfinished());
            }
            keep
        });
    }

    /// Decides whether a segment of an unknown flow starts a stream.
    fn classify(&self, port_kind: Option<StreamKind>, seg: &Segment<'_>) -> Option<StreamKind> {
        if port_kind.is_some() {
            return port_kind;
        }
        if !self.cfg.heuristic {
            return None;
        }
        let p = seg.payload;
        let body = p.get(leading_crlf(p)..).unwrap_or_default();
        if looks_like_sip(body) {
            return Some(StreamKind::Sip);
        }
        match ws::parse_handshake(p) {
            Ok(Some(h)) if h.sip_protocol => Some(StreamKind::WebSocket),
            _ => None,
        }
    }

    /// Adds one segment of the flow `key`. `port_kind` says whether a port of the flow is
    /// configured for SIP or SIP over WebSocket. Complete messages are appended to `out`.
    pub fn push(
        &mut self,
        now_ns: u64,
        key: FlowKey,
        seg: Segment<'_>,
        port_kind: Option<StreamKind>,
        out: &mut Vec<StreamMessage>,
    ) {
        self.stats.tcp_segments += 1;
        if now_ns.saturating_sub(self.last_sweep_ns) >= 1_000_000_000 {
            self.expire(now_ns);
        }
        if seg.flags.rst {
            for k in [key, key.reversed()] {
                if let Some(s) = self.streams.remove(&k) {
                    self.stats.tcp_closed += 1;
                    self.stats.tcp_unfinished += u64::from(s.unfinished());
                }
            }
            return;
        }
        if !self.streams.contains_key(&key) {
            if seg.payload.is_empty() && !seg.flags.syn {
                return;
            }
            let Some(kind) = self.classify(port_kind, &seg) else {
                self.stats.tcp_not_sip += 1;
                return;
            };
            if self.streams.len() >= self.cfg.max_streams {
                self.expire(now_ns);
            }
            if self.streams.len() >= self.cfg.max_streams {
                self.stats.tcp_table_full += 1;
                return;
            }
            self.stats.tcp_streams += 1;
            self.streams.insert(key, Stream::new(kind, now_ns));
        }
        let Some(st) = self.streams.get_mut(&key) else {
            return;
        };
        let mut sink = Sink {
            key,
            now_ns,
            framer: self.framer,
            cfg: &self.cfg,
            stats: &mut self.stats,
            out,
        };
        st.last_ns = now_ns;
        let mut seq = seg.seq;
        if st.closed && !seg.flags.syn {
            if !seg.payload.is_empty() {
                sink.stats.tcp_retransmissions += 1;
            }
            return;
        }
        if seg.flags.syn {
            // A new connection on this address pair: start over after the ISN.
            *st = Stream::new(st.kind, now_ns);
            seq = seq.wrapping_add(1);
            st.next_seq = Some(seq);
        }
        segment(st, seq, seg.payload, seg.wire_len, &mut sink);
        // The FIN counts only once every byte before it was taken.
        let wire = u32::try_from(seg.wire_len.max(seg.payload.len())).unwrap_or(u32::MAX);
        let fin_reached = st
            .next_seq
            .is_none_or(|n| seq_diff(seq.wrapping_add(wire), n) <= 0);
        if seg.flags.fin && fin_reached && st.ooo.is_empty() {
            // Kept a while as closed, so a retransmission of the last segments is not taken
            // for a new stream joined midway.
            st.closed = true;
            self.stats.tcp_unfinished += u64::from(st.unfinished());
            st.buf = Vec::new();
            st.mode = Mode::Ignored;
            self.stats.tcp_closed += 1;
        }
    }
}

/// Takes one segment's bytes into the stream and drains what became decodable.
fn segment<E>(st: &mut Stream, seq: u32, data: &[u8], wire_len: usize, sink: &mut Sink<'_, E>) {
    let next = *st.next_seq.get_or_insert(seq);
    let d = seq_diff(seq, next);
    if data.is_empty() {
        return;
    }
    if d > 0 {
        hold(st, seq, data, wire_len, sink);
    } else {
        let skip = usize::try_from(-d).unwrap_or(usize::MAX);
        match data.get(skip..) {
            Some(fresh) if !fresh.is_empty() => {
                if skip > 0 {
                    sink.stats.tcp_overlaps += 1;
                }
                append(st, fresh, sink);
            }
            _ => {
                sink.stats.tcp_retransmissions += 1;
                return;
            }
        }
    }
    if wire_len > data.len() && d <= 0 {
        // The capture cut this segment: the rest of it is lost for good.
        sink.stats.tcp_truncated += 1;
        let lost = u32::try_from(wire_len - data.len()).unwrap_or(u32::MAX);
        let to = st.next_seq.unwrap_or(seq).wrapping_add(lost);
        gap(st, to, sink);
    }
    drain_ooo(st, sink);
}

/// Appends in-order bytes and decodes.
fn append<E>(st: &mut Stream, fresh: &[u8], sink: &mut Sink<'_, E>) {
    st.buf.extend_from_slice(fresh);
    let len = u32::try_from(fresh.len()).unwrap_or(u32::MAX);
    st.next_seq = st.next_seq.map(|n| n.wrapping_add(len));
    decode(st, sink);
}

/// Holds a segment that arrived ahead of the expected sequence; gives up on the hole in front
/// of the held segments when they exceed the limits.
fn hold<E>(st: &mut Stream, seq: u32, data: &[u8], wire_len: usize, sink: &mut Sink<'_, E>) {
    if let Some((_, held, _)) = st.ooo.iter_mut().find(|(s, _, _)| *s == seq) {
        if held.len() >= data.len() {
            sink.stats.tcp_retransmissions += 1;
            return;
        }
        st.ooo_bytes -= held.len();
        st.ooo_bytes += data.len();
        *held = data.to_vec();
        return;
    }
    sink.stats.tcp_out_of_order += 1;
    let too_many = st.ooo.len() >= sink.cfg.max_ooo_segments;
    let too_big = st.buf.len() + st.ooo_bytes + data.len() > sink.cfg.max_buffer;
    st.ooo.push((seq, data.to_vec(), wire_len));
    st.ooo_bytes += data.len();
    if too_many || too_big {
        // The hole before the earliest held segment will not be filled in time.
        let Some(next) = st.next_seq else {
            return;
        };
        let earliest = st
            .ooo
            .iter()
            .map(|(s, _, _)| *s)
            .min_by_key(|&s| seq_diff(s, next));
        if let Some(to) = earliest {
            gap(st, to, sink);
        }
    }
}

/// Gives up on the bytes up to `to`: the partial message in the buffer cannot complete.
fn gap<E>(st: &mut Stream, to: u32, sink: &mut Sink<'_, E>) {
    sink.stats.tcp_gaps += 1;
    st.buf.clear();
    st.next_seq = Some(to);
    match &mut st.mode {
        Mode::WsFrames(dec) => {
            dec.reset();
            st.ws_resync = true;
        }
        Mode::WsHandshake => st.mode = Mode::Ignored,
        // Plain SIP resyncs at the next start line on its own; a WebSocket stream that saw
        // nothing yet decides again on what follows.
        Mode::Sip | Mode::WsStart | Mode::Ignored => {}
    }
}

/// Moves held segments that became contiguous into the buffer.
fn drain_ooo<E>(st: &mut Stream, sink: &mut Sink<'_, E>) {
    loop {
        let Some(next) = st.next_seq else {
            return;
        };
        let Some(i) = st.ooo.iter().position(|(s, _, _)| seq_diff(*s, next) <= 0) else {
            return;
        };
        let (s, data, wire_len) = st.ooo.swap_remove(i);
        st.ooo_bytes -= data.len();
        let skip = usize::try_from(seq_diff(next, s)).unwrap_or(usize::MAX);
        match data.get(skip..) {
            Some(fresh) if !fresh.is_empty() => append(st, fresh, sink),
            _ => sink.stats.tcp_retransmissions += 1,
        }
        if wire_len > data.len() {
            sink.stats.tcp_truncated += 1;
            let lost = u32::try_from(wire_len - data.len()).unwrap_or(u32::MAX);
            let end = s.wrapping_add(u32::try_from(data.len()).unwrap_or(u32::MAX));
            gap(st, end.wrapping_add(lost), sink);
        }
    }
}

fn emit<E>(sink: &mut Sink<'_, E>, transport: Transport, bytes: Vec<u8>) {
    sink.out.push(StreamMessage {
        ts_ns: sink.now_ns,
        key: sink.key,
        transport,
        bytes,
    });
}

/// Takes every complete message out of the buffer.
fn decode<E>(st: &mut Stream, sink: &mut Sink<'_, E>) {
    loop {
        let progressed = match &mut st.mode {
            Mode::Sip => decode_sip(&mut st.buf, sink),
            Mode::WsStart if st.buf.len() < 8 => false,
            Mode::WsStart => {
                let body = st.buf.get(leading_crlf(&st.buf)..).unwrap_or_default();
                st.mode = if st.buf.starts_with(b"GET ") || st.buf.starts_with(b"HTTP/") {
                    Mode::WsHandshake
                } else if looks_like_sip(body) {
                    Mode::Sip
                } else {
                    // Joined after the handshake: find a frame boundary first.
                    st.ws_resync = true;
                    Mode::WsFrames(WsDecoder::new(sink.cfg.ws))
                };
                true
            }
            Mode::WsHandshake => match ws::parse_handshake(&st.buf) {
                Ok(Some(h)) => {
                    sink.stats.ws_handshakes += 1;
                    st.buf.drain(..h.len.min(st.buf.len()));
                    // The server's frames are unmasked, the client's masked (RFC 6455 §5.1);
                    // the decoder accepts both, so the side only documents the switch.
                    let _side: HandshakeSide = h.side;
                    st.mode = Mode::WsFrames(WsDecoder::new(sink.cfg.ws));
                    true
                }
                Ok(None) if st.buf.len() <= MAX_HANDSHAKE => false,
                Ok(None) | Err(_) => {
                    sink.stats.ws_not_upgrade += 1;
                    st.mode = Mode::Ignored;
                    true
                }
            },
            Mode::WsFrames(dec) => decode_ws(dec, &mut st.buf, &mut st.ws_resync, sink),
            Mode::Ignored => {
                st.buf.clear();
                false
            }
        };
        if !progressed {
            break;
        }
    }
    if st.buf.len() > sink.cfg.max_buffer {
        sink.stats.tcp_buffer_overflow += 1;
        st.buf.clear();
        if let Mode::WsFrames(dec) = &mut st.mode {
            dec.reset();
            st.ws_resync = true;
        }
    }
}

/// One step of plain SIP framing; true when something was consumed.
fn decode_sip<E>(buf: &mut Vec<u8>, sink: &mut Sink<'_, E>) -> bool {
    let ka = leading_crlf(buf);
    if ka > 0 {
        sink.stats.tcp_keepalive_bytes += ka as u64;
        buf.drain(..ka);
        return true;
    }
    if buf.is_empty() {
        return false;
    }
    match find_start_line(buf) {
        Ok(0) => {}
        Ok(pos) => {
            skip(buf, pos, sink);
            return true;
        }
        Err(keep_from) => {
            let keep_from = if buf.len() - keep_from > MAX_RESYNC_LINE {
                buf.len()
            } else {
                keep_from
            };
            if keep_from > 0 {
                skip(buf, keep_from, sink);
            }
            return false;
        }
    }
    match (sink.framer)(buf) {
        Ok(Some(n)) if n > 0 && n <= buf.len() => {
            let msg: Vec<u8> = buf.drain(..n).collect();
            sink.stats.tcp_messages += 1;
            emit(sink, Transport::Tcp, msg);
            true
        }
        Ok(None) => false,
        Ok(Some(_)) | Err(_) => {
            // Unframeable: drop the start line, so the resync looks past this message.
            sink.stats.tcp_framing_errors += 1;
            let line = buf
                .iter()
                .position(|&b| b == b'\n')
                .map_or(buf.len(), |p| p + 1);
            skip(buf, line, sink);
            true
        }
    }
}

fn skip<E>(buf: &mut Vec<u8>, n: usize, sink: &mut Sink<'_, E>) {
    sink.stats.tcp_resyncs += 1;
    sink.stats.tcp_resync_bytes += n as u64;
    buf.drain(..n.min(buf.len()));
}

/// One step of WebSocket decoding; true when something was consumed.
fn decode_ws<E>(
    dec: &mut WsDecoder,
    buf: &mut Vec<u8>,
    resync: &mut bool,
    sink: &mut Sink<'_, E>,
) -> bool {
    if buf.is_empty() {
        return false;
    }
    if *resync {
        match ws::find_resync(buf) {
            Resync::Found(pos) => {
                *resync = false;
                if pos > 0 {
                    skip(buf, pos, sink);
                }
                return true;
            }
            Resync::NeedMore(pos) => {
                if pos > 0 {
                    skip(buf, pos, sink);
                }
                return false;
            }
            Resync::NotFound => {
                let n = buf.len();
                skip(buf, n, sink);
                return false;
            }
        }
    }
    match dec.next(buf) {
        Ok(Some(step)) => {
            buf.drain(..step.consumed.min(buf.len()));
            if step.control {
                sink.stats.ws_control_frames += 1;
            }
            if let Some(msg) = step.message {
                if leading_crlf(&msg) == msg.len() {
                    sink.stats.ws_empty_messages += 1;
                } else {
                    sink.stats.ws_messages += 1;
                    emit(sink, Transport::Ws, msg);
                }
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            match e {
                ws::WsError::ReservedBits(_) => sink.stats.ws_unsupported_extension += 1,
                ws::WsError::FrameTooBig { .. } | ws::WsError::MessageTooBig { .. } => {
                    sink.stats.ws_too_big += 1
                }
                ws::WsError::ReservedOpcode(_)
                | ws::WsError::FragmentedControl
                | ws::WsError::ControlTooLong(_)
                | ws::WsError::LengthHighBit
                | ws::WsError::UnexpectedContinuation
                | ws::WsError::InterleavedMessage => sink.stats.ws_errors += 1,
            }
            dec.reset();
            *resync = true;
            // Step past this frame's first byte so the resync finds a later boundary.
            skip(buf, 1, sink);
            true
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::net::framer::{local_framer, FramingError};

    fn key() -> FlowKey {
        FlowKey {
            src: "192.0.2.1:40000".parse().unwrap(),
            dst: "192.0.2.2:5060".parse().unwrap(),
        }
    }

    /// A SIP request with a body, framed per RFC 3261 §18.3 by its Content-Length.
    fn msg(method: &str, cseq: u32, body: &str) -> Vec<u8> {
        format!(
            "{method} sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1\r\n\
CSeq: {cseq} {method}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    struct T {
        r: TcpReassembler<FramingError>,
        out: Vec<StreamMessage>,
    }

    impl T {
        fn new(cfg: TcpConfig) -> Self {
            Self {
                r: TcpReassembler::new(cfg, local_framer),
                out: Vec::new(),
            }
        }
        fn seg(&mut self, now: u64, seq: u32, data: &[u8]) -> Vec<Vec<u8>> {
            self.seg_k(
                now,
                key(),
                seq,
                TcpFlags::default(),
                data,
                data.len(),
                Some(StreamKind::Sip),
            )
        }
        #[allow(clippy::too_many_arguments)]
        fn seg_k(
            &mut self,
            now: u64,
            k: FlowKey,
            seq: u32,
            flags: TcpFlags,
            data: &[u8],
            wire_len: usize,
            kind: Option<StreamKind>,
        ) -> Vec<Vec<u8>> {
            let seg = Segment {
                seq,
                flags,
                payload: data,
                wire_len,
            };
            self.r.push(now, k, seg, kind, &mut self.out);
            self.out.drain(..).map(|m| m.bytes).collect()
        }
    }

    const ISN: u32 = 0xffff_fff0; // wraps within the first message

    #[test]
    fn message_split_over_segments() {
        let m = msg("INVITE", 1, "v=0\r\n");
        let mut t = T::new(TcpConfig::default());
        let syn = TcpFlags {
            syn: true,
            ..TcpFlags::default()
        };
        assert!(t
            .seg_k(0, key(), ISN, syn, &[], 0, Some(StreamKind::Sip))
            .is_empty());
        let s = ISN.wrapping_add(1);
        assert!(t.seg(1, s, &m[..10]).is_empty());
        assert!(t.seg(2, s.wrapping_add(10), &m[10..60]).is_empty());
        t.r.push(
            3,
            key(),
            Segment {
                seq: s.wrapping_add(60),
                flags: TcpFlags::default(),
                payload: &m[60..],
                wire_len: m.len() - 60,
            },
            Some(StreamKind::Sip),
            &mut t.out,
        );
        assert_eq!(t.out.len(), 1);
        assert_eq!(t.out[0].bytes, m);
        assert_eq!(t.out[0].ts_ns, 3);
        assert_eq!(t.out[0].transport, Transport::Tcp);
    }

    #[test]
    fn coalesced_messages_and_keepalives() {
        let (a, b) = (msg("INVITE", 1, "abc"), msg("BYE", 2, ""));
        let mut data = b"\r\n\r\n".to_vec();
        data.extend_from_slice(&a);
        data.extend_from_slice(b"\r\n");
        data.extend_from_slice(&b);
        let mut t = T::new(TcpConfig::default());
        assert_eq!(t.seg(0, 100, &data), vec![a, b]);
        assert_eq!(t.r.stats().tcp_keepalive_bytes, 6);
        assert_eq!(t.r.stats().tcp_resyncs, 0);
    }

    #[test]
    fn out_of_order_segments_are_held() {
        let (a, b) = (msg("INVITE", 1, "body"), msg("ACK", 1, ""));
        let mut data = a.clone();
        data.extend_from_slice(&b);
        let mut t = T::new(TcpConfig::default());
        assert!(t.seg(0, 1000, &data[..20]).is_empty());
        // The third piece arrives before the second.
        assert!(t.seg(1, 1000 + 70, &data[70..]).is_empty());
        assert_eq!(t.r.stats().tcp_out_of_order, 1);
        assert_eq!(t.seg(2, 1000 + 20, &data[20..70]), vec![a, b]);
    }

    #[test]
    fn retransmissions_are_not_duplicated() {
        let (a, b) = (msg("REGISTER", 7, ""), msg("REGISTER", 8, ""));
        let mut t = T::new(TcpConfig::default());
        assert_eq!(t.seg(0, 1, &a), vec![a.clone()]);
        // Exact retransmission.
        assert!(t.seg(1, 1, &a).is_empty());
        assert_eq!(t.r.stats().tcp_retransmissions, 1);
        // A retransmission that also carries new bytes (repacketised).
        let mut both = a.clone();
        both.extend_from_slice(&b);
        assert_eq!(t.seg(2, 1, &both), vec![b]);
        assert_eq!(t.r.stats().tcp_overlaps, 1);
        assert_eq!(t.r.stats().tcp_messages, 2);
    }

    #[test]
    fn unfillable_gap_resyncs_at_next_start_line() {
        let (a, b, c) = (
            msg("INVITE", 1, "xxxxxxxx"),
            msg("CANCEL", 1, ""),
            msg("BYE", 2, ""),
        );
        let mut data = a.clone();
        data.extend_from_slice(&b);
        data.extend_from_slice(&c);
        let cfg = TcpConfig {
            max_ooo_segments: 2,
            ..TcpConfig::default()
        };
        let mut t = T::new(cfg);
        // The bytes 20..40 never arrive; three later segments are held, so the third gives
        // up the hole. The partial INVITE is lost, the rest is recovered.
        assert!(t.seg(0, 0, &data[..20]).is_empty());
        let bstart = a.len();
        assert!(t.seg(1, 40, &data[40..bstart + 5]).is_empty());
        assert!(t
            .seg(2, (bstart + 5) as u32, &data[bstart + 5..bstart + 30])
            .is_empty());
        let got = t.seg(3, (bstart + 30) as u32, &data[bstart + 30..]);
        assert_eq!(got, vec![b, c]);
        let s = t.r.stats();
        assert_eq!(s.tcp_gaps, 1);
        assert_eq!(s.tcp_resyncs, 1);
        assert_eq!(s.tcp_resync_bytes, (bstart - 40) as u64);
    }

    #[test]
    fn capture_cut_segment_is_a_gap() {
        let (a, b) = (msg("INVITE", 1, &"s".repeat(100)), msg("BYE", 2, ""));
        let mut t = T::new(TcpConfig::default());
        // The snap length kept 50 of the INVITE's bytes.
        let got = t.seg_k(
            0,
            key(),
            0,
            TcpFlags::default(),
            &a[..50],
            a.len(),
            Some(StreamKind::Sip),
        );
        assert!(got.is_empty());
        assert_eq!(t.seg(1, a.len() as u32, &b), vec![b]);
        assert_eq!(t.r.stats().tcp_truncated, 1);
        assert_eq!(t.r.stats().tcp_gaps, 1);
    }

    #[test]
    fn midstream_join_skips_to_start_line() {
        let a = msg("OPTIONS", 3, "");
        let mut data = b"tail of an earlier body\r\nmore\r\n".to_vec();
        let skipped = data.len();
        data.extend_from_slice(&a);
        let mut t = T::new(TcpConfig::default());
        assert_eq!(t.seg(0, 5, &data), vec![a]);
        assert_eq!(t.r.stats().tcp_resync_bytes, skipped as u64);
    }

    #[test]
    fn fin_closes_and_late_retransmission_is_dropped() {
        let a = msg("BYE", 2, "");
        let mut t = T::new(TcpConfig::default());
        let fin = TcpFlags {
            fin: true,
            ..TcpFlags::default()
        };
        assert_eq!(
            t.seg_k(0, key(), 9, fin, &a, a.len(), Some(StreamKind::Sip)),
            vec![a.clone()]
        );
        assert!(t.seg(1, 9, &a).is_empty());
        assert_eq!(t.r.stats().tcp_closed, 1);
        // After the linger time the stream is forgotten.
        t.r.expire(20_000_000_000);
        assert_eq!(t.r.streams(), 0);
    }

    #[test]
    fn fin_ahead_of_missing_bytes_waits_for_them() {
        let a = msg("BYE", 2, "");
        let mut t = T::new(TcpConfig::default());
        let fin = TcpFlags {
            fin: true,
            ..TcpFlags::default()
        };
        assert!(t.seg(0, 0, &a[..10]).is_empty());
        // The FIN with the last bytes overtakes the middle segment.
        let tail = &a[30..];
        assert!(t
            .seg_k(1, key(), 30, fin, tail, tail.len(), Some(StreamKind::Sip))
            .is_empty());
        assert_eq!(t.r.stats().tcp_closed, 0);
        assert_eq!(t.seg(2, 10, &a[10..30]), vec![a]);
    }

    #[test]
    fn rst_drops_both_directions() {
        let mut t = T::new(TcpConfig::default());
        let a = msg("INVITE", 1, "");
        assert!(t.seg(0, 1, &a[..10]).is_empty());
        assert!(t
            .seg_k(
                0,
                key().reversed(),
                1,
                TcpFlags::default(),
                b"SIP/2.0 1",
                9,
                Some(StreamKind::Sip)
            )
            .is_empty());
        assert_eq!(t.r.streams(), 2);
        let rst = TcpFlags {
            rst: true,
            ..TcpFlags::default()
        };
        t.seg_k(1, key(), 11, rst, &[], 0, Some(StreamKind::Sip));
        assert_eq!(t.r.streams(), 0);
        assert_eq!(t.r.stats().tcp_unfinished, 2);
    }

    #[test]
    fn limits_are_counted() {
        let cfg = TcpConfig {
            max_streams: 1,
            max_buffer: 64,
            ..TcpConfig::default()
        };
        let mut t = T::new(cfg);
        let big = msg("INVITE", 1, &"x".repeat(100));
        assert!(t.seg(0, 0, &big[..80]).is_empty());
        assert_eq!(t.r.stats().tcp_buffer_overflow, 1);
        let other = FlowKey {
            src: "192.0.2.9:1".parse().unwrap(),
            dst: "192.0.2.2:5060".parse().unwrap(),
        };
        assert!(t
            .seg_k(
                0,
                other,
                0,
                TcpFlags::default(),
                b"x",
                1,
                Some(StreamKind::Sip)
            )
            .is_empty());
        assert_eq!(t.r.stats().tcp_table_full, 1);
        // Idle streams make room.
        t.r.expire(301_000_000_000);
        assert_eq!(t.r.stats().tcp_idle_timeouts, 1);
    }

    #[test]
    fn heuristic_starts_streams_only_on_sip_looking_payload() {
        let mut t = T::new(TcpConfig::default());
        let k = FlowKey {
            src: "192.0.2.1:40000".parse().unwrap(),
            dst: "192.0.2.2:60010".parse().unwrap(),
        };
        assert!(t
            .seg_k(
                0,
                k,
                0,
                TcpFlags::default(),
                b"POST /RPC2 HTTP/1.1\r\n",
                21,
                None
            )
            .is_empty());
        assert_eq!(t.r.stats().tcp_not_sip, 1);
        let a = msg("REGISTER", 1, "");
        assert_eq!(
            t.seg_k(1, k, 100, TcpFlags::default(), &a, a.len(), None),
            vec![a]
        );
        let mut off = T::new(TcpConfig {
            heuristic: false,
            ..TcpConfig::default()
        });
        let a = msg("REGISTER", 1, "");
        assert!(off
            .seg_k(1, k, 100, TcpFlags::default(), &a, a.len(), None)
            .is_empty());
    }

    /// A WebSocket frame per RFC 6455 §5.2, masked when `mask` is given.
    fn ws_frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        if payload.len() < 126 {
            f.push(m | payload.len() as u8);
        } else {
            f.push(m | 126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        if let Some(k) = mask {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        } else {
            f.extend_from_slice(payload);
        }
        f
    }

    #[test]
    fn websocket_handshake_then_masked_fragmented_frames() {
        let ws_key = FlowKey {
            src: "192.0.2.1:43380".parse().unwrap(),
            dst: "192.0.2.2:8080".parse().unwrap(),
        };
        let hs = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n";
        let a = msg("INVITE", 2206, &"o".repeat(300)); // 16-bit length frame
        let b = msg("ACK", 2206, "");
        let mut data = hs.to_vec();
        data.extend(ws_frame(true, 1, Some([0xde, 0xad, 0xbe, 0xef]), &a));
        data.extend(ws_frame(true, 9, Some([1, 1, 1, 1]), b"ping"));
        data.extend(ws_frame(false, 1, Some([7, 7, 7, 7]), &b[..20]));
        data.extend(ws_frame(true, 0, Some([8, 9, 10, 11]), &b[20..]));
        let mut t = T::new(TcpConfig::default());
        let mut got = Vec::new();
        let mut seq = 1u32;
        for chunk in data.chunks(97) {
            t.r.push(
                0,
                ws_key,
                Segment {
                    seq,
                    flags: TcpFlags::default(),
                    payload: chunk,
                    wire_len: chunk.len(),
                },
                Some(StreamKind::WebSocket),
                &mut t.out,
            );
            seq += chunk.len() as u32;
            got.append(&mut t.out);
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].bytes, a);
        assert_eq!(got[1].bytes, b);
        assert!(got.iter().all(|m| m.transport == Transport::Ws));
        let s = t.r.stats();
        assert_eq!(
            (s.ws_handshakes, s.ws_messages, s.ws_control_frames),
            (1, 2, 1)
        );
    }

    #[test]
    fn websocket_gap_resyncs_at_next_sip_frame() {
        let ws_key = FlowKey {
            src: "192.0.2.2:8080".parse().unwrap(),
            dst: "192.0.2.1:43380".parse().unwrap(),
        };
        let a = ws_frame(true, 1, None, &msg("INVITE", 1, ""));
        let b_msg = b"SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".to_vec();
        let b = ws_frame(true, 1, None, &b_msg);
        let mut data = a.clone();
        data.extend_from_slice(&b);
        let mut t = T::new(TcpConfig::default());
        // Joined midway (no handshake seen), and the first 5 bytes are missing.
        let got = t.seg_k(
            0,
            ws_key,
            5,
            TcpFlags::default(),
            &data[5..],
            data.len() - 5,
            Some(StreamKind::WebSocket),
        );
        assert_eq!(got, vec![b_msg]);
    }

    #[test]
    fn sip_subprotocol_upgrade_is_recognised_on_any_port() {
        let k = FlowKey {
            src: "192.0.2.1:40000".parse().unwrap(),
            dst: "192.0.2.2:9443".parse().unwrap(),
        };
        let b = msg("REGISTER", 1, "");
        let mut data =
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
                .to_vec();
        data.extend(ws_frame(true, 2, Some([3, 1, 4, 1]), &b));
        let mut t = T::new(TcpConfig::default());
        assert_eq!(
            t.seg_k(0, k, 0, TcpFlags::default(), &data, data.len(), None),
            vec![b]
        );
        // Without the `sip` subprotocol, an upgrade on an unconfigured port is not SIP.
        let plain = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
        let k2 = FlowKey {
            src: "192.0.2.1:40001".parse().unwrap(),
            ..k
        };
        assert!(t
            .seg_k(0, k2, 0, TcpFlags::default(), plain, plain.len(), None)
            .is_empty());
        assert_eq!(t.r.stats().tcp_not_sip, 1);
    }

    #[test]
    fn http_that_is_not_an_upgrade_is_ignored() {
        let k = FlowKey {
            src: "192.0.2.1:5555".parse().unwrap(),
            dst: "192.0.2.2:8080".parse().unwrap(),
        };
        let mut t = T::new(TcpConfig::default());
        let req = b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n";
        assert!(t
            .seg_k(
                0,
                k,
                0,
                TcpFlags::default(),
                req,
                req.len(),
                Some(StreamKind::WebSocket)
            )
            .is_empty());
        assert_eq!(t.r.stats().ws_not_upgrade, 1);
    }
}
