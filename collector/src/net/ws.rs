//! SIP over WebSocket (RFC 7118): the HTTP Upgrade handshake (RFC 6455 §4.1, §4.2.2), the
//! base framing (RFC 6455 §5.2: FIN, opcode, masking, 7/16/64-bit lengths), fragmentation
//! (§5.4) and control frames (§5.5). Each complete text or binary message carries one SIP
//! message (RFC 7118 §5).
//!
//! Pure functions over bytes: the stream reassembler ([`super::tcp`]) feeds the in-order bytes
//! of one direction and drains what each step consumed.
#![deny(clippy::indexing_slicing, clippy::panic)]

use thiserror::Error;

use super::framer::looks_like_sip;

/// Continuation frame (RFC 6455 §5.2).
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Connection close (control).
pub const OP_CLOSE: u8 = 0x8;
/// Ping (control).
pub const OP_PING: u8 = 0x9;
/// Pong (control).
pub const OP_PONG: u8 = 0xa;

/// Longest frame header: 2 bytes, 8 bytes of extended length, 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Limits of the WebSocket decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsConfig {
    /// Largest frame payload accepted (bytes).
    pub max_frame: usize,
    /// Largest reassembled message (bytes).
    pub max_message: usize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            max_frame: 256 * 1024,
            max_message: 256 * 1024,
        }
    }
}

/// Why WebSocket bytes could not be decoded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum WsError {
    /// RSV1..3 set although no extension is decoded (RSV1 is permessage-deflate, RFC 7692).
    #[error("reserved bits {0:#x} set (extension not supported)")]
    ReservedBits(u8),
    /// An opcode RFC 6455 reserves.
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame without FIN (§5.5: control frames are never fragmented).
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A control frame longer than 125 bytes (§5.5).
    #[error("control frame of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    /// The most significant bit of a 64-bit length is set (§5.2).
    #[error("64-bit payload length has its high bit set")]
    LengthHighBit,
    /// A frame payload is longer than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooBig {
        /// Declared payload length.
        len: u64,
        /// Configured limit.
        max: usize,
    },
    /// A reassembled message would exceed the configured limit.
    #[error("message exceeds the limit of {max} bytes")]
    MessageTooBig {
        /// Configured limit.
        max: usize,
    },
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress (§5.4).
    #[error("new data frame while a fragmented message is in progress")]
    InterleavedMessage,
}

/// A decoded frame header (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    /// Opcode.
    pub opcode: u8,
    /// Masking key (client-to-server frames are masked, §5.3).
    pub mask: Option<[u8; 4]>,
    /// Bytes of header (2 to 14).
    pub header_len: usize,
    /// Payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Control frame (close, ping, pong and the reserved 0xb..0xf).
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

fn be_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x))
}

/// Parses the frame header at the start of `buf`: `Ok(None)` when more bytes are needed.
/// Checks only the header's own rules (reserved opcodes, control frame limits, the 64-bit
/// length's high bit); RSV bits are reported, not judged.
pub fn parse_header(buf: &[u8]) -> Result<Option<FrameHeader>, WsError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    let opcode = b0 & 0x0f;
    if matches!(opcode, 0x3..=0x7 | 0xb..=0xf) {
        return Err(WsError::ReservedOpcode(opcode));
    }
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    let (ext, payload_len) = match len7 {
        126 => match buf.get(2..4) {
            Some(b) => (2, be_u64(b)),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let v = be_u64(b);
                if v >> 63 != 0 {
                    return Err(WsError::LengthHighBit);
                }
                (8, v)
            }
            None => return Ok(None),
        },
        n => (0, u64::from(n)),
    };
    let header = FrameHeader {
        fin,
        rsv,
        opcode,
        mask: None,
        header_len: 2 + ext + if masked { 4 } else { 0 },
        payload_len,
    };
    if header.is_control() {
        if !fin {
            return Err(WsError::FragmentedControl);
        }
        if payload_len > 125 {
            return Err(WsError::ControlTooLong(payload_len));
        }
    }
    if !masked {
        return Ok(Some(header));
    }
    let Some(key) = buf.get(2 + ext..6 + ext) else {
        return Ok(None);
    };
    let mut mask = [0u8; 4];
    mask.copy_from_slice(key);
    Ok(Some(FrameHeader {
        mask: Some(mask),
        ..header
    }))
}

/// Applies (or removes: XOR is its own inverse) the masking of RFC 6455 §5.3 to `data`, whose
/// first byte is payload byte `offset`.
pub fn unmask(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (b, k) in data.iter_mut().zip(key.iter().cycle().skip(offset % 4)) {
        *b ^= k;
    }
}

/// What one decoding step consumed and produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WsStep {
    /// Bytes of input consumed (one whole frame).
    pub consumed: usize,
    /// A complete data message, when this frame finished one.
    pub message: Option<Vec<u8>>,
    /// The frame was a control frame (ignored).
    pub control: bool,
}

/// Decodes one direction of a WebSocket connection, reassembling fragmented messages.
#[derive(Clone, Debug, Default)]
pub struct WsDecoder {
    cfg: WsConfig,
    partial: Option<Vec<u8>>,
}

impl WsDecoder {
    /// A decoder with the given limits.
    pub fn new(cfg: WsConfig) -> Self {
        Self { cfg, partial: None }
    }

    /// Forgets a partly received message (after a gap in the stream).
    pub fn reset(&mut self) {
        self.partial = None;
    }

    /// Decodes the frame at the start of `buf`: `Ok(None)` when the frame is not complete
    /// yet. On error the caller must resynchronise (the frame boundary is lost).
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<WsStep>, WsError> {
        let Some(h) = parse_header(buf)? else {
            return Ok(None);
        };
        if h.rsv != 0 {
            return Err(WsError::ReservedBits(h.rsv));
        }
        let max = self.cfg.max_frame;
        let len = usize::try_from(h.payload_len)
            .ok()
            .filter(|&l| l <= max)
            .ok_or(WsError::FrameTooBig {
                len: h.payload_len,
                max,
            })?;
        let end = h.header_len + len;
        let Some(payload) = buf.get(h.header_len..end) else {
            return Ok(None);
        };
        if h.is_control() {
            return Ok(Some(WsStep {
                consumed: end,
                message: None,
                control: true,
            }));
        }
        let mut msg = match (h.opcode, self.partial.take()) {
            (OP_CONTINUATION, Some(p)) => p,
            (OP_CONTINUATION, None) => return Err(WsError::UnexpectedContinuation),
            (_, Some(_)) => return Err(WsError::InterleavedMessage),
            (_, None) => Vec::new(),
        };
        if msg.len() + len > self.cfg.max_message {
            return Err(WsError::MessageTooBig {
                max: self.cfg.max_message,
            });
        }
        let start = msg.len();
        msg.extend_from_slice(payload);
        if let (Some(key), Some(tail)) = (h.mask, msg.get_mut(start..)) {
            unmask(tail, key, 0);
        }
        if h.fin {
            Ok(Some(WsStep {
                consumed: end,
                message: Some(msg),
                control: false,
            }))
        } else {
            self.partial = Some(msg);
            Ok(Some(WsStep {
                consumed: end,
                message: None,
                control: false,
            }))
        }
    }
}

/// Outcome of [`find_resync`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// A frame that carries the start of a SIP message begins here.
    Found(usize),
    /// A candidate begins here but more bytes are needed to judge it.
    NeedMore(usize),
    /// No candidate: every byte can be dropped.
    NotFound,
}

/// Looks for the start of an unfragmented text or binary frame whose payload begins like a
/// SIP message, to recover frame boundaries after bytes of the stream were lost.
pub fn find_resync(buf: &[u8]) -> Resync {
    for (pos, &b0) in buf.iter().enumerate() {
        if b0 != 0x80 | OP_TEXT && b0 != 0x80 | OP_BINARY {
            continue;
        }
        let rest = buf.get(pos..).unwrap_or_default();
        let h = match parse_header(rest) {
            Ok(Some(h)) => h,
            Ok(None) => return Resync::NeedMore(pos),
            Err(_) => continue,
        };
        if h.payload_len < 8 {
            continue;
        }
        let Some(mut head) = rest
            .get(h.header_len..h.header_len + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
        else {
            return Resync::NeedMore(pos);
        };
        if let Some(key) = h.mask {
            unmask(&mut head, key, 0);
        }
        if looks_like_sip(&head) {
            return Resync::Found(pos);
        }
    }
    Resync::NotFound
}

/// Which side of the handshake a header block is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeSide {
    /// The client's `GET` with `Upgrade: websocket` (RFC 6455 §4.1).
    Request,
    /// The server's `101 Switching Protocols` (§4.2.2).
    Response,
}

/// A recognised opening handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Request or response.
    pub side: HandshakeSide,
    /// `Sec-WebSocket-Protocol` names the `sip` subprotocol (RFC 7118 §4).
    pub sip_protocol: bool,
    /// Bytes of the header block, up to and including the empty line.
    pub len: usize,
}

/// Why a header block is not a WebSocket opening handshake.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// HTTP, but not an upgrade to WebSocket.
    #[error("http message is not a websocket upgrade")]
    NotUpgrade,
    /// Not HTTP at all.
    #[error("not an http message")]
    NotHttp,
}

fn header_values<'a>(head: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    head.split(|&b| b == b'\n').skip(1).filter_map(move |line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let n = line.get(..colon)?;
        n.trim_ascii()
            .eq_ignore_ascii_case(name)
            .then(|| line.get(colon + 1..).unwrap_or_default().trim_ascii())
    })
}

fn has_token(values: impl Iterator<Item = impl AsRef<[u8]>>, token: &[u8]) -> bool {
    values.into_iter().any(|v| {
        v.as_ref()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    })
}

/// Recognises the opening handshake at the start of `buf`: `Ok(None)` until the header block
/// is complete.
pub fn parse_handshake(buf: &[u8]) -> Result<Option<Handshake>, HandshakeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= 5 && !buf.starts_with(b"GET ") && !buf.starts_with(b"HTTP/") {
            return Err(HandshakeError::NotHttp);
        }
        return Ok(None);
    };
    let head = buf.get(..end).unwrap_or_default();
    let first = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let side = if first.starts_with(b"GET ") {
        HandshakeSide::Request
    } else if first.starts_with(b"HTTP/1.1 101") || first.starts_with(b"HTTP/1.0 101") {
        HandshakeSide::Response
    } else if first.starts_with(b"HTTP/") || first.windows(6).any(|w| w == b" HTTP/") {
        return Err(HandshakeError::NotUpgrade);
    } else {
        return Err(HandshakeError::NotHttp);
    };
    if !has_token(header_values(head, b"upgrade"), b"websocket") {
        return Err(HandshakeError::NotUpgrade);
    }
    Ok(Some(Handshake {
        side,
        sip_protocol: has_token(header_values(head, b"sec-websocket-protocol"), b"sip"),
        len: end + 4,
    }))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// Builds a frame per RFC 6455 §5.2 by hand.
    fn frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        let n = payload.len();
        if n < 126 {
            f.push(m | n as u8);
        } else if n <= 0xffff {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        match mask {
            Some(k) => {
                f.extend_from_slice(&k);
                f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => f.extend_from_slice(payload),
        }
        f
    }

    #[test]
    fn rfc6455_examples() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        let mut d = WsDecoder::default();
        let s = d
            .next(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
            .unwrap()
            .unwrap();
        assert_eq!((s.consumed, s.message.as_deref()), (7, Some(&b"Hello"[..])));
        // A single-frame masked text message "Hello".
        let masked = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let s = d.next(&masked).unwrap().unwrap();
        assert_eq!(s.message.as_deref(), Some(&b"Hello"[..]));
        // A fragmented unmasked text message: "Hel" then "lo".
        let s = d.next(&[0x01, 0x03, 0x48, 0x65, 0x6c]).unwrap().unwrap();
        assert_eq!((s.consumed, s.message), (5, None));
        let s = d.next(&[0x80, 0x02, 0x6c, 0x6f]).unwrap().unwrap();
        assert_eq!(s.message.as_deref(), Some(&b"Hello"[..]));
        // Unmasked ping "Hello": a control frame, ignored.
        let s = d
            .next(&[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f])
            .unwrap()
            .unwrap();
        assert!(s.control && s.message.is_none());
        // 256 bytes binary message in a single unmasked frame: 16-bit length 0x0100.
        let mut big = vec![0x82, 0x7e, 0x01, 0x00];
        big.extend(std::iter::repeat_n(0xab, 256));
        assert_eq!(d.next(&big[..259]).unwrap(), None);
        let s = d.next(&big).unwrap().unwrap();
        assert_eq!(s.consumed, 260);
        assert_eq!(s.message.unwrap(), vec![0xab; 256]);
    }

    #[test]
    fn masked_fragmented_sip_with_interleaved_ping() {
        let sip = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let key = [1, 2, 3, 4];
        let mut bytes = frame(false, OP_TEXT, Some(key), &sip[..10]);
        bytes.extend(frame(true, OP_PING, Some(key), b"p"));
        bytes.extend(frame(true, OP_CONTINUATION, Some([9, 8, 7, 6]), &sip[10..]));
        let mut d = WsDecoder::default();
        let mut pos = 0;
        let mut out = Vec::new();
        while let Some(s) = d.next(&bytes[pos..]).unwrap() {
            pos += s.consumed;
            out.extend(s.message);
        }
        assert_eq!(pos, bytes.len());
        assert_eq!(out, vec![sip.to_vec()]);
    }

    #[test]
    fn sixty_four_bit_length_and_limits() {
        let payload = vec![b'x'; 70_000];
        let f = frame(true, OP_BINARY, None, &payload);
        assert_eq!(&f[..2], &[0x82, 0x7f]);
        assert_eq!(parse_header(&f).unwrap().unwrap().payload_len, 70_000);
        let mut d = WsDecoder::default();
        assert_eq!(d.next(&f).unwrap().unwrap().message.unwrap().len(), 70_000);
        let mut small = WsDecoder::new(WsConfig {
            max_frame: 1000,
            max_message: 1500,
        });
        assert_eq!(
            small.next(&f),
            Err(WsError::FrameTooBig {
                len: 70_000,
                max: 1000
            })
        );
        let a = frame(false, OP_TEXT, None, &[b'a'; 1000]);
        let b = frame(true, OP_CONTINUATION, None, &[b'b'; 1000]);
        assert!(small.next(&a).unwrap().is_some());
        assert_eq!(small.next(&b), Err(WsError::MessageTooBig { max: 1500 }));
        let mut hb = [0x82u8, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse_header(&hb), Err(WsError::LengthHighBit));
        hb[2] = 0;
        assert!(parse_header(&hb[..9]).unwrap().is_none());
    }

    #[test]
    fn protocol_errors() {
        let mut d = WsDecoder::default();
        assert_eq!(d.next(&[0xc1, 0x00]), Err(WsError::ReservedBits(4)));
        assert_eq!(d.next(&[0x83, 0x00]), Err(WsError::ReservedOpcode(3)));
        assert_eq!(d.next(&[0x09, 0x00]), Err(WsError::FragmentedControl));
        assert_eq!(
            d.next(&[0x89, 0x7e, 0, 126]),
            Err(WsError::ControlTooLong(126))
        );
        assert_eq!(d.next(&[0x80, 0x00]), Err(WsError::UnexpectedContinuation));
        assert!(d.next(&[0x01, 0x01, b'a']).unwrap().is_some());
        assert_eq!(d.next(&[0x81, 0x00]), Err(WsError::InterleavedMessage));
    }

    #[test]
    fn handshake_rfc6455_sample() {
        // The sample handshake of RFC 6455 §1.2, with the `sip` subprotocol of RFC 7118 §4.
        let req = b"GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Protocol: sip\r\nSec-WebSocket-Version: 13\r\n\r\n\x81";
        let h = parse_handshake(req).unwrap().unwrap();
        assert_eq!(h.side, HandshakeSide::Request);
        assert!(h.sip_protocol);
        assert_eq!(h.len, req.len() - 1);
        let resp =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let h = parse_handshake(resp).unwrap().unwrap();
        assert_eq!((h.side, h.sip_protocol), (HandshakeSide::Response, false));
        assert_eq!(parse_handshake(b"GET / HTTP/1.1\r\nHost"), Ok(None));
        assert_eq!(
            parse_handshake(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Err(HandshakeError::NotUpgrade)
        );
        assert_eq!(
            parse_handshake(b"\x16\x03\x01\x02\x00"),
            Err(HandshakeError::NotHttp)
        );
    }

    #[test]
    fn resync_finds_masked_sip_frame() {
        let sip = b"BYE sip:a@b SIP/2.0\r\n\r\n";
        let mut bytes = vec![0x81, 0x05, b'x', 0x82, 0x01];
        let at = bytes.len();
        bytes.extend(frame(true, OP_TEXT, Some([0x55, 0x66, 0x77, 0x88]), sip));
        assert_eq!(find_resync(&bytes), Resync::Found(at));
        assert_eq!(find_resync(&bytes[..at + 8]), Resync::NeedMore(at));
        assert_eq!(find_resync(b"\x81\x05hello world"), Resync::NotFound);
    }
}
