//! Framing of SIP messages on stream transports (RFC 3261 §18.3: the message ends
//! `Content-Length` bytes after the empty line; §20.14 and §7.3.3 for the header and its
//! compact form `l`), and the start-line checks that recognise SIP (§7.1, §7.2) and resync a
//! stream after a gap.
//!
//! The stream reassembler takes any [`Framer`]. [`local_framer`] is a minimal stand-in,
//! TO BE REPLACED by the framer of the SIP parser (`crate::sip`) once it exists: it only finds
//! the end of the header block and reads `Content-Length`.
#![deny(clippy::indexing_slicing, clippy::panic)]

use thiserror::Error;

/// Returns the length of the first complete message at the start of a buffer, `None` when
/// more bytes are needed, or an error when the bytes cannot start a well-framed message.
pub type Framer<E> = fn(&[u8]) -> Result<Option<usize>, E>;

/// Why [`local_framer`] could not frame a message.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FramingError {
    /// The `Content-Length` value is not a decimal number that fits the address space.
    #[error("content-length value is not a valid decimal number")]
    BadContentLength,
    /// Two `Content-Length` headers disagree.
    #[error("conflicting content-length headers")]
    ConflictingContentLength,
}

/// SIP methods recognised at the start of a payload (RFC 3261 and the extensions in common
/// use). Kept in step with the kernel's payload check, so replay classifies as the agent does.
const METHODS: [&[u8]; 14] = [
    b"INVITE",
    b"ACK",
    b"BYE",
    b"CANCEL",
    b"OPTIONS",
    b"REGISTER",
    b"PRACK",
    b"SUBSCRIBE",
    b"NOTIFY",
    b"PUBLISH",
    b"INFO",
    b"REFER",
    b"MESSAGE",
    b"UPDATE",
];

/// True when `payload` starts with `SIP/2.0 ` or a known method followed by a space: the
/// cheap check the kernel applies (RFC 3261 §7.1 Request-Line, §7.2 Status-Line).
pub fn looks_like_sip(payload: &[u8]) -> bool {
    if payload.starts_with(b"SIP/2.0 ") {
        return true;
    }
    METHODS
        .iter()
        .any(|m| payload.starts_with(m) && payload.get(m.len()) == Some(&b' '))
}

/// Bytes at the start of `buf` that are CR or LF: RFC 5626 §3.5.1 keepalives (`CRLFCRLF`
/// ping, `CRLF` pong) and stray line ends between messages (RFC 3261 §7.5).
pub fn leading_crlf(buf: &[u8]) -> usize {
    buf.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// True when `line` (without its line end) is a SIP Request-Line (`Method SP Request-URI SP
/// SIP-Version`, RFC 3261 §7.1) or Status-Line (`SIP-Version SP 3DIGIT SP Reason`, §7.2).
pub fn is_start_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if let Some(rest) = line.strip_prefix(b"SIP/2.0 ") {
        let code_ok = rest.len() >= 3 && rest.iter().take(3).all(u8::is_ascii_digit);
        return code_ok && matches!(rest.get(3), None | Some(b' '));
    }
    let Some(rest) = line.strip_suffix(b" SIP/2.0") else {
        return false;
    };
    let mut parts = rest.splitn(2, |&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let uri = parts.next().unwrap_or_default();
    !method.is_empty()
        && method.iter().all(|&b| is_token_char(b))
        && !uri.is_empty()
        && uri.iter().all(|&b| b.is_ascii_graphic())
}

/// Longest prefix [`looks_like_sip`] checks (`SUBSCRIBE `).
const MAX_PREFIX: usize = 10;

/// Where the SIP message at the start of `buf` begins, or where the next one does.
///
/// At a message boundary the first line must be a start line ([`is_start_line`]): then
/// `Ok(0)`. Otherwise (after a gap, or joining a stream midway) the next start line is looked
/// for at any offset where a known method or `SIP/2.0 ` begins, since the body in front of it
/// need not end with a line end. Returns `Ok(pos)` for a complete start line, or
/// `Err(keep_from)`: no complete start line yet, and the bytes before `keep_from` can be dropped.
pub fn find_start_line(buf: &[u8]) -> Result<usize, usize> {
    match buf.iter().position(|&b| b == b'\n') {
        None => return Err(0),
        Some(nl) if is_start_line(buf.get(..nl).unwrap_or_default()) => return Ok(0),
        Some(_) => {}
    }
    for p in 1..buf.len() {
        let rest = buf.get(p..).unwrap_or_default();
        if looks_like_sip(rest) {
            match rest.iter().position(|&b| b == b'\n') {
                Some(nl) if is_start_line(rest.get(..nl).unwrap_or_default()) => return Ok(p),
                Some(_) => {}
                None => return Err(p),
            }
        } else if rest.len() < MAX_PREFIX && could_become_sip(rest) {
            return Err(p);
        }
    }
    Err(buf.len())
}

/// True when more bytes after `tail` could make [`looks_like_sip`] true.
fn could_become_sip(tail: &[u8]) -> bool {
    b"SIP/2.0 ".starts_with(tail)
        || METHODS.iter().any(|m| {
            let mut with_space = m.to_vec();
            with_space.push(b' ');
            with_space.starts_with(tail)
        })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    v.get(start..end.max(start)).unwrap_or_default()
}

fn parse_len(v: &[u8]) -> Result<usize, FramingError> {
    let v = trim(v);
    if v.is_empty() {
        return Err(FramingError::BadContentLength);
    }
    v.iter().try_fold(0usize, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(FramingError::BadContentLength);
        }
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(usize::from(b - b'0')))
            .ok_or(FramingError::BadContentLength)
    })
}

/// Minimal SIP framer: the header block ends at the first `CRLFCRLF` (RFC 3261 §7), the body
/// is `Content-Length` (or compact `l`, matched case-insensitively) bytes long. A missing
/// `Content-Length` means an empty body (lenient: §18.3 makes it mandatory on TCP, the SIP
/// parser judges). PLACEHOLDER until the SIP parser provides its framer.
pub fn local_framer(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = buf.get(..head_end).unwrap_or_default();
    let mut content_length: Option<usize> = None;
    // The first line is the start line; headers follow, each on its own line. Folded
    // continuation lines start with whitespace and never carry a header name.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = trim(line.get(..colon).unwrap_or_default());
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            let n = parse_len(line.get(colon + 1..).unwrap_or_default())?;
            match content_length {
                Some(prev) if prev != n => return Err(FramingError::ConflictingContentLength),
                _ => content_length = Some(n),
            }
        }
    }
    let total = (head_end + 4)
        .checked_add(content_length.unwrap_or(0))
        .ok_or(FramingError::BadContentLength)?;
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn frames_by_content_length_and_compact_form() {
        // RFC 3261 §7.3.3: `l` is the compact form of Content-Length; names are
        // case-insensitive (§7.3.1).
        let msg = b"INVITE sip:b@x SIP/2.0\r\nL : 4\r\n\r\nbodyNEXT";
        assert_eq!(local_framer(msg), Ok(Some(msg.len() - 4)));
        let msg = b"SIP/2.0 200 OK\r\ncontent-LENGTH:\t3 \r\n\r\nab";
        assert_eq!(local_framer(msg), Ok(None));
        let msg = b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n";
        assert_eq!(local_framer(msg), Ok(Some(msg.len())));
        assert_eq!(local_framer(b"SIP/2.0 200 OK\r\nVia: x\r\n"), Ok(None));
    }

    #[test]
    fn rejects_bad_and_conflicting_lengths() {
        let bad = b"SIP/2.0 200 OK\r\nContent-Length: 1x\r\n\r\n";
        assert_eq!(local_framer(bad), Err(FramingError::BadContentLength));
        let big = b"SIP/2.0 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert_eq!(local_framer(big), Err(FramingError::BadContentLength));
        let two = b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\nab";
        assert_eq!(
            local_framer(two),
            Err(FramingError::ConflictingContentLength)
        );
    }

    #[test]
    fn start_lines() {
        assert!(is_start_line(b"INVITE sip:bob@biloxi.com SIP/2.0\r"));
        assert!(is_start_line(b"SIP/2.0 180 Ringing"));
        assert!(is_start_line(b"SIP/2.0 200"));
        assert!(!is_start_line(b"SIP/2.0 20 OK"));
        assert!(!is_start_line(b"Via: SIP/2.0/TCP host"));
        assert!(!is_start_line(b"INVITE  SIP/2.0"));
        assert!(!is_start_line(b"a=sendrecv"));
        let buf = b"junk\r\nVia: SIP/2.0/TCP x\r\nBYE sip:a@b SIP/2.0\r\nrest";
        assert_eq!(find_start_line(buf), Ok(26));
        assert_eq!(find_start_line(b"junk\r\npartial INV"), Err(14));
        // A body without a final line end runs into the next start line.
        assert_eq!(
            find_start_line(b"v=0\r\nxxxxCANCEL sip:a SIP/2.0\r\n"),
            Ok(9)
        );
        assert_eq!(find_start_line(b"SIP/2.0 200 OK\r\n"), Ok(0));
        assert_eq!(find_start_line(b"SIP/2.0 200 O"), Err(0));
        assert_eq!(find_start_line(b"abc\r\ndef"), Err(8));
    }

    #[test]
    fn payload_check_matches_kernel_list() {
        assert!(looks_like_sip(b"REGISTER sip:x SIP/2.0"));
        assert!(looks_like_sip(b"SIP/2.0 401 Unauthorized"));
        assert!(!looks_like_sip(b"INVITEX sip:x"));
        assert!(!looks_like_sip(b"\r\n\r\n"));
        assert!(!looks_like_sip(b"GET / HTTP/1.1"));
    }
}
