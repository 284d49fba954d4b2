//! A SIP message as a validated view over its bytes (RFC 3261 §7): start line, header
//! fields, body framed by Content-Length (§18.3, §20.14).
//!
//! [`parse_message`] splits the header section once into a small vector of (name, value)
//! views and eagerly checks only what every message must have right (RFC 3261 §8.1.1:
//! To, From, CSeq, Call-ID, Via, and Max-Forwards, Contact, Content-Type, Content-Length
//! when present). Everything else is typed lazily by the accessors.
use std::borrow::Cow;

use super::error::{SipError, ValueError};
use super::header::{line_at, Header, HeaderLines, HeaderName};
use super::lex::{is_wsp, sub, tail, ListIter};
use super::multipart;
use super::name_addr::{Contact, NameAddr};
use super::sdp::{self, Sdp, SdpLimits};
use super::typed::{
    parse_content_length, parse_max_forwards, parse_u32_value, CSeq, MediaType, Method,
    PChargingVector, Reason, SessionExpires, SessionId,
};
use super::uri::Uri;
use super::via::Via;
use super::SipLimits;

/// A Request-Line (RFC 3261 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLine<'a> {
    /// The method.
    pub method: Method<'a>,
    /// The Request-URI.
    pub uri: Uri<'a>,
}

/// A Status-Line (RFC 3261 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusLine<'a> {
    /// The status code, 100..=699.
    pub code: u16,
    /// The reason phrase as written (may be empty, may be any UTF-8, RFC 4475 §3.1.1.12).
    pub reason: &'a [u8],
}

/// The first line of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// A request.
    Request(RequestLine<'a>),
    /// A response.
    Response(StatusLine<'a>),
}

/// A parsed and validated SIP message. Everything borrows from the parsed buffer.
#[derive(Debug, Clone)]
pub struct SipMessage<'a> {
    bytes: &'a [u8],
    start: StartLine<'a>,
    headers: Vec<Header<'a>>,
    body: &'a [u8],
    call_id: &'a str,
    cseq: CSeq<'a>,
    from: NameAddr<'a>,
    to: NameAddr<'a>,
    via: Via<'a>,
    max_forwards: Option<u8>,
    content_length: Option<usize>,
    content_type: Option<MediaType<'a>>,
    multipart_depth: usize,
}

/// Parses one SIP message from a datagram (UDP, or one frame cut by [`super::frame_len`]).
///
/// CR/LF before the start line is skipped (RFC 3261 §7.5). With Content-Length, the body is
/// that many bytes and anything after it is ignored (§18.3; RFC 4475 §3.1.1.8); a
/// Content-Length larger than what follows the headers is [`SipError::BodyTruncated`].
/// Without Content-Length the body is the rest of the datagram.
pub fn parse_message<'a>(buf: &'a [u8], limits: &SipLimits) -> Result<SipMessage<'a>, SipError> {
    if buf.len() > limits.max_message_size {
        return Err(SipError::TooLarge {
            len: buf.len(),
            max: limits.max_message_size,
        });
    }
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(SipError::Empty)?;
    let (sl_end, hdr_start) = line_at(buf, start).ok_or(SipError::UnterminatedHeaders)?;
    if sl_end - start > limits.max_header_line_len {
        return Err(SipError::HeaderLineTooLong {
            max: limits.max_header_line_len,
        });
    }
    let start_line = parse_start_line(sub(buf, start, sl_end))?;

    let mut headers = Vec::with_capacity(24);
    let mut lines = HeaderLines::new(buf, hdr_start, limits.max_header_line_len);
    while let Some(line) = lines.next_line()? {
        if headers.len() >= limits.max_headers {
            return Err(SipError::TooManyHeaders {
                max: limits.max_headers,
            });
        }
        headers.push(Header::new(line.name, line.value));
    }
    let body_start = lines.body_start().ok_or(SipError::UnterminatedHeaders)?;

    let core = validate(&start_line, &headers)?;

    let available = buf.len().saturating_sub(body_start);
    let body_len = match core.content_length {
        Some(declared) if declared > available => {
            return Err(SipError::BodyTruncated {
                declared,
                available,
            })
        }
        Some(declared) => declared,
        None => available,
    };
    let end = body_start + body_len;
    Ok(SipMessage {
        bytes: sub(buf, start, end),
        start: start_line,
        body: sub(buf, body_start, end),
        headers,
        call_id: core.call_id,
        cseq: core.cseq,
        from: core.from,
        to: core.to,
        via: core.via,
        max_forwards: core.max_forwards,
        content_length: core.content_length,
        content_type: core.content_type,
        multipart_depth: limits.max_multipart_depth,
    })
}

fn parse_start_line(line: &[u8]) -> Result<StartLine<'_>, SipError> {
    // Trailing whitespace is ignored (liberal reading of RFC 4475 §3.1.2.10).
    let end = line.iter().rposition(|&b| !is_wsp(b)).map_or(0, |p| p + 1);
    let line = sub(line, 0, end);
    let first_sp = line
        .iter()
        .position(|&b| is_wsp(b))
        .ok_or(SipError::BadStartLine)?;
    let first = sub(line, 0, first_sp);
    if first.contains(&b'/') {
        return parse_status_line(first, tail(line, first_sp + 1));
    }
    let method = Method::parse(first).ok_or(SipError::BadMethod)?;
    // Several SP between the elements are tolerated (RFC 4475 §3.1.2.9 allows a liberal
    // element to ignore them); the Request-URI itself may hold no whitespace (§3.1.2.8).
    let last_sp = line.iter().rposition(|&b| is_wsp(b)).unwrap_or(first_sp);
    if last_sp == first_sp {
        return Err(SipError::BadStartLine);
    }
    check_version(tail(line, last_sp + 1))?;
    let uri_start = first_sp
        + sub(line, first_sp, last_sp)
            .iter()
            .take_while(|&&b| is_wsp(b))
            .count();
    let uri_end = sub(line, 0, last_sp)
        .iter()
        .rposition(|&b| !is_wsp(b))
        .map_or(uri_start, |p| p + 1);
    let uri = Uri::parse(sub(line, uri_start, uri_end)).map_err(SipError::BadRequestUri)?;
    Ok(StartLine::Request(RequestLine { method, uri }))
}

fn check_version(v: &[u8]) -> Result<(), SipError> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    // "SIP/" 1*DIGIT "." 1*DIGIT is a version we do not speak (505); anything else is junk.
    let is_sip_version = v.len() > 4
        && sub(v, 0, 4).eq_ignore_ascii_case(b"SIP/")
        && tail(v, 4)
            .split(|&b| b == b'.')
            .map(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
            .fold((0, true), |(n, ok), p| (n + 1, ok && p))
            == (2, true);
    Err(if is_sip_version {
        SipError::UnsupportedVersion
    } else {
        SipError::BadStartLine
    })
}

fn parse_status_line<'a>(version: &[u8], rest: &'a [u8]) -> Result<StartLine<'a>, SipError> {
    check_version(version)?;
    let code_end = rest.iter().position(|&b| is_wsp(b)).unwrap_or(rest.len());
    let code_bytes = sub(rest, 0, code_end);
    if code_bytes.len() != 3 || !code_bytes.iter().all(u8::is_ascii_digit) {
        return Err(SipError::BadStatusCode);
    }
    let code = code_bytes
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&code) {
        return Err(SipError::BadStatusCode);
    }
    Ok(StartLine::Response(StatusLine {
        code,
        reason: tail(rest, code_end + 1),
    }))
}

struct Core<'a> {
    call_id: &'a str,
    cseq: CSeq<'a>,
    from: NameAddr<'a>,
    to: NameAddr<'a>,
    via: Via<'a>,
    max_forwards: Option<u8>,
    content_length: Option<usize>,
    content_type: Option<MediaType<'a>>,
}

/// Stores `v` in `slot`, refusing a second occurrence of a single-valued header
/// (RFC 4475 §3.3.8).
fn once<T>(slot: &mut Option<T>, name: HeaderName, v: T) -> Result<(), SipError> {
    if slot.is_some() {
        return Err(SipError::DuplicateHeader {
            name: name.canonical(),
        });
    }
    *slot = Some(v);
    Ok(())
}

fn validate<'a>(start: &StartLine<'a>, headers: &[Header<'a>]) -> Result<Core<'a>, SipError> {
    use HeaderName as H;
    let mut call_id = None;
    let mut cseq = None;
    let mut from = None;
    let mut to = None;
    let mut via = None;
    let mut max_forwards = None;
    let mut content_length: Option<usize> = None;
    let mut content_type = None;
    for h in headers {
        let Some(name) = h.known() else { continue };
        let bad = |e: ValueError| SipError::malformed(name.canonical(), e);
        let v = h.value();
        match name {
            H::CallId => once(&mut call_id, name, parse_call_id(v).map_err(bad)?)?,
            H::CSeq => once(&mut cseq, name, CSeq::parse(v).map_err(bad)?)?,
            H::From => once(&mut from, name, NameAddr::parse(v).map_err(bad)?)?,
            H::To => once(&mut to, name, NameAddr::parse(v).map_err(bad)?)?,
            H::MaxForwards => {
                once(&mut max_forwards, name, parse_max_forwards(v).map_err(bad)?)?;
            }
            H::ContentType => once(&mut content_type, name, MediaType::parse(v).map_err(bad)?)?,
            H::ContentLength => {
                let n = parse_content_length(v).ok_or(SipError::BadContentLength)?;
                match content_length {
                    Some(prev) if prev != n => return Err(SipError::ConflictingContentLength),
                    _ => content_length = Some(n),
                }
            }
            H::Via => {
                for el in ListIter::new(v) {
                    if el.is_empty() {
                        return Err(bad(ValueError::EmptyElement));
                    }
                    let parsed = Via::parse(el).map_err(bad)?;
                    via.get_or_insert(parsed);
                }
            }
            // An empty Contact carries nothing to check; real devices send it, and it breaks
            // no call attribution, so it is tolerated rather than failing the message.
            H::Contact if v.is_empty() => {}
            H::Contact => {
                for el in ListIter::new(v) {
                    if el.is_empty() {
                        return Err(bad(ValueError::EmptyElement));
                    }
                    Contact::parse(el).map_err(bad)?;
                }
            }
            _ => {}
        }
    }
    let missing = |n: HeaderName| SipError::MissingHeader {
        name: n.canonical(),
    };
    let cseq = cseq.ok_or(missing(H::CSeq))?;
    if let StartLine::Request(r) = start {
        if r.method != cseq.method {
            return Err(SipError::CSeqMethodMismatch);
        }
    }
    Ok(Core {
        call_id: call_id.ok_or(missing(H::CallId))?,
        cseq,
        from: from.ok_or(missing(H::From))?,
        to: to.ok_or(missing(H::To))?,
        via: via.ok_or(missing(H::Via))?,
        max_forwards,
        content_length,
        content_type,
    })
}

/// Call-ID is an opaque word (RFC 3261 §25.1 `callid`): taken whole, it must be non-empty
/// text without whitespace (RFC 4475 §3.1.1.2 shows how much else it may contain).
fn parse_call_id(v: &[u8]) -> Result<&str, ValueError> {
    if v.is_empty() {
        return Err(ValueError::Empty);
    }
    if v.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(ValueError::Trailing);
    }
    std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)
}

impl<'a> SipMessage<'a> {
    /// The message bytes, from the start line to the end of the body.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The start line.
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request(_))
    }

    /// The request method, or for a response the method of its CSeq.
    pub fn method(&self) -> Method<'a> {
        match &self.start {
            StartLine::Request(r) => r.method,
            StartLine::Response(_) => self.cseq.method,
        }
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&Uri<'a>> {
        match &self.start {
            StartLine::Request(r) => Some(&r.uri),
            StartLine::Response(_) => None,
        }
    }

    /// The status code of a response.
    pub fn status_code(&self) -> Option<u16> {
        match &self.start {
            StartLine::Request(_) => None,
            StartLine::Response(s) => Some(s.code),
        }
    }

    /// The reason phrase of a response.
    pub fn reason_phrase(&self) -> Option<&'a [u8]> {
        match &self.start {
            StartLine::Request(_) => None,
            StartLine::Response(s) => Some(s.reason),
        }
    }

    /// All header fields in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// The body (exactly Content-Length bytes when the header is present).
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &'a str {
        self.call_id
    }

    /// The CSeq.
    pub fn cseq(&self) -> CSeq<'a> {
        self.cseq
    }

    /// The From address.
    pub fn from(&self) -> &NameAddr<'a> {
        &self.from
    }

    /// The To address.
    pub fn to(&self) -> &NameAddr<'a> {
        &self.to
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> &Via<'a> {
        &self.via
    }

    /// All Via values, top first (every one was validated by the parser).
    pub fn vias(&self) -> impl Iterator<Item = Via<'a>> + '_ {
        self.list(HeaderName::Via)
            .filter_map(|v| Via::parse(v).ok())
    }

    /// All Contact values (every one was validated by the parser).
    pub fn contacts(&self) -> impl Iterator<Item = Contact<'a>> + '_ {
        self.list(HeaderName::Contact)
            .filter_map(|v| Contact::parse(v).ok())
    }

    /// Max-Forwards, if present.
    pub fn max_forwards(&self) -> Option<u8> {
        self.max_forwards
    }

    /// Content-Length, if present.
    pub fn content_length(&self) -> Option<usize> {
        self.content_length
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Option<&MediaType<'a>> {
        self.content_type.as_ref()
    }

    /// The first header with this name (long or compact form, any case).
    pub fn header(&self, name: &str) -> Option<&Header<'a>> {
        self.headers.iter().find(|h| h.is(name))
    }

    /// All headers with this name (long or compact form, any case).
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Header<'a>> + 's {
        self.headers.iter().filter(move |h| h.is(name))
    }

    /// The first header that is the given known header.
    pub fn first(&self, name: HeaderName) -> Option<&Header<'a>> {
        self.headers.iter().find(|h| h.known() == Some(name))
    }

    /// All values of a known header, with comma-separated lists flattened.
    pub fn list(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.known() == Some(name))
            .flat_map(|h| h.list())
    }

    fn typed<T>(
        &self,
        name: HeaderName,
        parse: impl FnOnce(&'a [u8]) -> Result<T, ValueError>,
    ) -> Result<Option<T>, SipError> {
        match self.first(name) {
            None => Ok(None),
            Some(h) => parse(h.value())
                .map(Some)
                .map_err(|e| SipError::malformed(name.canonical(), e)),
        }
    }

    /// Expires (RFC 3261 §20.19), if present.
    pub fn expires(&self) -> Result<Option<u32>, SipError> {
        self.typed(HeaderName::Expires, parse_u32_value)
    }

    /// The first Reason value (RFC 3326), if present.
    pub fn reason(&self) -> Result<Option<Reason<'a>>, SipError> {
        self.reasons().next().transpose()
    }

    /// All Reason values (a BYE may carry one per protocol, RFC 3326 §2).
    pub fn reasons(&self) -> impl Iterator<Item = Result<Reason<'a>, SipError>> + '_ {
        self.list(HeaderName::Reason)
            .map(|v| Reason::parse(v).map_err(|e| SipError::malformed("Reason", e)))
    }

    /// Session-ID (RFC 7989), if present.
    pub fn session_id(&self) -> Result<Option<SessionId<'a>>, SipError> {
        self.typed(HeaderName::SessionId, SessionId::parse)
    }

    /// P-Charging-Vector (RFC 7315), if present.
    pub fn p_charging_vector(&self) -> Result<Option<PChargingVector<'a>>, SipError> {
        self.typed(HeaderName::PChargingVector, PChargingVector::parse)
    }

    /// Session-Expires (RFC 4028), if present.
    pub fn session_expires(&self) -> Result<Option<SessionExpires<'a>>, SipError> {
        self.typed(HeaderName::SessionExpires, SessionExpires::parse)
    }

    /// User-Agent, raw (folds collapsed), if present.
    pub fn user_agent(&self) -> Option<Cow<'a, [u8]>> {
        self.first(HeaderName::UserAgent).map(|h| h.unfolded())
    }

    /// Server, raw (folds collapsed), if present.
    pub fn server(&self) -> Option<Cow<'a, [u8]>> {
        self.first(HeaderName::Server).map(|h| h.unfolded())
    }

    /// The first name-addr header of this kind (P-Asserted-Identity, Refer-To, ...).
    pub fn name_addr(&self, name: HeaderName) -> Result<Option<NameAddr<'a>>, SipError> {
        match self.list(name).next() {
            None => Ok(None),
            Some(v) => NameAddr::parse(v)
                .map(Some)
                .map_err(|e| SipError::malformed(name.canonical(), e)),
        }
    }

    /// The SDP body: the body itself when Content-Type is `application/sdp`, or the first
    /// `application/sdp` part of a multipart body (RFC 2046 §5.1; RFC 5621), searched to
    /// [`SipLimits::max_multipart_depth`] levels.
    pub fn sdp_body(&self) -> Result<Option<&'a [u8]>, SipError> {
        multipart::find_sdp(self.content_type.as_ref(), self.body, self.multipart_depth)
    }

    /// The parsed SDP body (see [`SipMessage::sdp_body`]), if the message carries one.
    pub fn sdp(&self, limits: &SdpLimits) -> Result<Option<Sdp<'a>>, SipError> {
        match self.sdp_body()? {
            None => Ok(None),
            Some(body) => sdp::parse(body, limits).map(Some).map_err(SipError::Sdp),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn limits() -> SipLimits {
        SipLimits::default()
    }

    #[test]
    fn start_lines() {
        assert_eq!(
            parse_start_line(b"SIP/2.0 100 "),
            Ok(StartLine::Response(StatusLine {
                code: 100,
                reason: b""
            }))
        );
        assert_eq!(
            parse_start_line(b"SIP/2.0 180 Ringing"),
            Ok(StartLine::Response(StatusLine {
                code: 180,
                reason: b"Ringing"
            }))
        );
        assert_eq!(
            parse_start_line(b"SIP/2.0 4294967301 x"),
            Err(SipError::BadStatusCode)
        );
        assert_eq!(
            parse_start_line(b"SIP/2.0 099 x"),
            Err(SipError::BadStatusCode)
        );
        assert_eq!(
            parse_start_line(b"SIP/2.0 700 x"),
            Err(SipError::BadStatusCode)
        );
        assert_eq!(
            parse_start_line(b"SIP/3.0 200 OK"),
            Err(SipError::UnsupportedVersion)
        );
        assert_eq!(
            parse_start_line(b"HTTP/1.1 200 OK"),
            Err(SipError::BadStartLine)
        );
        assert_eq!(
            parse_start_line(b"OPTIONS sip:t.watson@example.org SIP/7.0"),
            Err(SipError::UnsupportedVersion)
        );
        assert_eq!(parse_start_line(b"INVITE"), Err(SipError::BadStartLine));
        assert_eq!(
            parse_start_line(b"INVITE sip:x@y"),
            Err(SipError::BadStartLine)
        );
        assert!(matches!(
            parse_start_line(b"INVITE sip:user@example.com; lr SIP/2.0"),
            Err(SipError::BadRequestUri(_))
        ));
        match parse_start_line(b"INVITE  sip:user@example.com  SIP/2.0  ").unwrap() {
            StartLine::Request(r) => {
                assert_eq!(r.method, Method::Invite);
                assert_eq!(r.uri.as_str(), "sip:user@example.com");
            }
            StartLine::Response(_) => panic!("request expected"),
        }
    }

    #[test]
    fn datagram_framing() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>;tag=1\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nbodyTRAILING";
        let m = parse_message(msg, &limits()).unwrap();
        assert_eq!(m.body(), b"body");
        assert!(m.as_bytes().ends_with(b"\r\n\r\nbody"));
        let short = &msg[..msg.len() - 10];
        assert_eq!(
            parse_message(short, &limits()).err(),
            Some(SipError::BodyTruncated {
                declared: 4,
                available: 2
            })
        );
        assert_eq!(
            parse_message(b"\r\n\r\n", &limits()).err(),
            Some(SipError::Empty)
        );
    }

    #[test]
    fn sdp_errors_surface_as_sip_errors() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContact:\r\nContent-Type: application/sdp\r\n\r\nm=audio 1 RTP/AVP 0\r\n";
        let m = parse_message(msg, &limits()).unwrap();
        assert_eq!(m.contacts().count(), 0);
        let e = m.sdp(&SdpLimits::default()).unwrap_err();
        assert_eq!(e, SipError::Sdp(sdp::SdpError::MissingVersion));
        assert_eq!(e.reason(), "sdp_missing_version");
    }

    #[test]
    fn limits_are_enforced() {
        let msg = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nTo: <sip:a@b>\r\nFrom: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let l = SipLimits {
            max_headers: 4,
            ..SipLimits::default()
        };
        assert_eq!(
            parse_message(msg, &l).err(),
            Some(SipError::TooManyHeaders { max: 4 })
        );
        let l = SipLimits {
            max_message_size: 20,
            ..SipLimits::default()
        };
        assert!(matches!(
            parse_message(msg, &l),
            Err(SipError::TooLarge { .. })
        ));
        let l = SipLimits {
            max_header_line_len: 16,
            ..SipLimits::default()
        };
        assert_eq!(
            parse_message(msg, &l).err(),
            Some(SipError::HeaderLineTooLong { max: 16 })
        );
        assert!(parse_message(msg, &limits()).is_ok());
    }
}
