//! Message framing on stream transports (RFC 3261 §18.3: TCP, TLS; RFC 7118 for
//! WebSocket frames carrying partial messages): where one message ends in a byte stream.
//!
//! On a stream, the header section ends at the first empty line and the body is exactly
//! Content-Length bytes. CRLF runs between messages are keepalives (RFC 5626 §3.5.1) and
//! are reported separately so the reassembler can drop them without ever buffering them.
use super::error::SipError;
use super::header::{line_at, HeaderLines, HeaderName};
use super::typed::parse_content_length;
use super::SipLimits;

/// What the front of a stream buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFrame {
    /// The buffer holds the start of a message but not all of it yet.
    NeedMore,
    /// The first `len` bytes are CR/LF keepalive bytes; drop them.
    Keepalive {
        /// Number of CR/LF bytes.
        len: usize,
    },
    /// The first `len` bytes are one complete message; pass them to
    /// [`parse_message`](super::parse_message).
    Message {
        /// Message length in bytes (header section plus Content-Length body).
        len: usize,
    },
}

/// Tells where the first message of a stream buffer ends.
///
/// A missing Content-Length is read as 0 (RFC 3261 §18.3 makes it mandatory on streams;
/// a message without it and without body is still framed right, and one with a body fails
/// to parse as the next message instead of stalling the stream). A buffer that grows past
/// [`SipLimits::max_message_size`] without completing a message is an error, so a peer
/// cannot make the reassembler buffer without bound.
pub fn frame_stream(buf: &[u8], limits: &SipLimits) -> Result<StreamFrame, SipError> {
    let lead = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if lead > 0 {
        return Ok(StreamFrame::Keepalive { len: lead });
    }
    if buf.is_empty() {
        return Ok(StreamFrame::NeedMore);
    }
    let too_large = |len| SipError::TooLarge {
        len,
        max: limits.max_message_size,
    };
    let incomplete = || {
        if buf.len() > limits.max_message_size {
            Err(too_large(buf.len()))
        } else {
            Ok(StreamFrame::NeedMore)
        }
    };
    let Some((sl_end, hdr_start)) = line_at(buf, 0) else {
        return incomplete();
    };
    if sl_end > limits.max_header_line_len {
        return Err(SipError::HeaderLineTooLong {
            max: limits.max_header_line_len,
        });
    }
    let mut lines = HeaderLines::new(buf, hdr_start, limits.max_header_line_len);
    let mut content_length: Option<usize> = None;
    let mut count = 0usize;
    loop {
        match lines.next_line() {
            Ok(Some(line)) => {
                count += 1;
                if count > limits.max_headers {
                    return Err(SipError::TooManyHeaders {
                        max: limits.max_headers,
                    });
                }
                if HeaderName::from_bytes(line.name) == Some(HeaderName::ContentLength) {
                    let n = parse_content_length(line.value).ok_or(SipError::BadContentLength)?;
                    match content_length {
                        Some(prev) if prev != n => return Err(SipError::ConflictingContentLength),
                        _ => content_length = Some(n),
                    }
                }
            }
            Ok(None) => break,
            Err(SipError::UnterminatedHeaders) => return incomplete(),
            Err(e) => return Err(e),
        }
    }
    let body_start = lines.body_start().ok_or(SipError::UnterminatedHeaders)?;
    let total = body_start
        .checked_add(content_length.unwrap_or(0))
        .ok_or(SipError::BadContentLength)?;
    if total > limits.max_message_size {
        return Err(too_large(total));
    }
    if buf.len() < total {
        return Ok(StreamFrame::NeedMore);
    }
    Ok(StreamFrame::Message { len: total })
}

/// The length of the first frame of a stream buffer, or `None` while more bytes are needed.
///
/// A frame is either one complete message or a run of CR/LF keepalive bytes (for which
/// [`parse_message`](super::parse_message) returns [`SipError::Empty`]); consume the
/// returned length either way. [`frame_stream`] tells the two apart.
pub fn frame_len(buf: &[u8], limits: &SipLimits) -> Result<Option<usize>, SipError> {
    Ok(match frame_stream(buf, limits)? {
        StreamFrame::NeedMore => None,
        StreamFrame::Keepalive { len } | StreamFrame::Message { len } => Some(len),
    })
}

/// [`frame_len`] with the default [`SipLimits`], in the shape of the stream reassembler's
/// `Framer` (`fn(&[u8]) -> Result<Option<usize>, E>`).
pub fn stream_framer(buf: &[u8]) -> Result<Option<usize>, SipError> {
    frame_len(buf, &SipLimits::default())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\nTo: <sip:bob@example.com>\r\n\r\nhello";

    #[test]
    fn frames_each_prefix() {
        let l = SipLimits::default();
        for n in 1..MSG.len() {
            assert_eq!(
                frame_stream(&MSG[..n], &l).unwrap(),
                StreamFrame::NeedMore,
                "prefix {n}"
            );
        }
        assert_eq!(
            frame_stream(MSG, &l).unwrap(),
            StreamFrame::Message { len: MSG.len() }
        );
        let mut two = MSG.to_vec();
        two.extend_from_slice(b"\r\n\r\n");
        two.extend_from_slice(MSG);
        assert_eq!(frame_len(&two, &l).unwrap(), Some(MSG.len()));
        assert_eq!(
            frame_stream(&two[MSG.len()..], &l).unwrap(),
            StreamFrame::Keepalive { len: 4 }
        );
        assert_eq!(
            frame_len(&two[MSG.len() + 4..], &l).unwrap(),
            Some(MSG.len())
        );
    }

    #[test]
    fn stream_errors() {
        let l = SipLimits::default();
        assert_eq!(
            frame_stream(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n", &l),
            Err(SipError::BadContentLength)
        );
        assert_eq!(
            frame_stream(
                b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nContent-Length: 2\r\n\r\nab",
                &l
            ),
            Err(SipError::ConflictingContentLength)
        );
        let small = SipLimits {
            max_message_size: 64,
            ..SipLimits::default()
        };
        assert!(matches!(
            frame_stream(
                b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 1000\r\n\r\n",
                &small
            ),
            Err(SipError::TooLarge { .. })
        ));
        assert!(matches!(
            frame_stream(&[b'A'; 100], &small),
            Err(SipError::TooLarge { .. })
        ));
        assert_eq!(
            frame_stream(b"OPTIONS sip:a SIP/2.0\r\n\r\n", &l).unwrap(),
            StreamFrame::Message { len: 25 }
        );
    }
}
