//! Header fields as views into the message (RFC 3261 §7.3): case-insensitive names with
//! their compact forms (§7.3.3 and the IANA SIP header registry), folding (§7.3.1), and the
//! line splitter shared by messages, stream framing and multipart parts.
use std::borrow::Cow;

use memchr::memchr;

use super::error::SipError;
use super::lex::{is_wsp, sub, token_end, trim_lws, unfold, ListIter};

macro_rules! header_names {
    ($( $(#[$doc:meta])* $var:ident = $canon:literal $(, $compact:literal)? ;)*) => {
        /// A header field name this parser knows, matched case-insensitively in its long
        /// and (where one exists) compact form.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum HeaderName {
            $( $(#[$doc])* $var, )*
        }

        impl HeaderName {
            /// The canonical spelling, as in the defining RFC.
            pub const fn canonical(self) -> &'static str {
                match self { $( HeaderName::$var => $canon, )* }
            }

            /// The compact form (RFC 3261 §7.3.3), if the header has one.
            pub const fn compact(self) -> Option<u8> {
                match self { $( HeaderName::$var => header_names!(@c $($compact)?), )* }
            }
        }

        #[cfg(test)]
        const ALL_NAMES: &[(&str, HeaderName)] = &[ $( ($canon, HeaderName::$var), )* ];
    };
    (@c $c:literal) => { Some($c) };
    (@c) => { None };
}

header_names! {
    /// Accept.
    Accept = "Accept";
    /// Accept-Contact (RFC 3841), compact `a`.
    AcceptContact = "Accept-Contact", b'a';
    /// Accept-Encoding.
    AcceptEncoding = "Accept-Encoding";
    /// Accept-Language.
    AcceptLanguage = "Accept-Language";
    /// Alert-Info.
    AlertInfo = "Alert-Info";
    /// Allow.
    Allow = "Allow";
    /// Allow-Events (RFC 6665), compact `u`.
    AllowEvents = "Allow-Events", b'u';
    /// Authentication-Info.
    AuthenticationInfo = "Authentication-Info";
    /// Authorization.
    Authorization = "Authorization";
    /// Call-ID, compact `i`.
    CallId = "Call-ID", b'i';
    /// Call-Info.
    CallInfo = "Call-Info";
    /// Contact, compact `m`.
    Contact = "Contact", b'm';
    /// Content-Disposition.
    ContentDisposition = "Content-Disposition";
    /// Content-Encoding, compact `e`.
    ContentEncoding = "Content-Encoding", b'e';
    /// Content-Language.
    ContentLanguage = "Content-Language";
    /// Content-Length, compact `l`.
    ContentLength = "Content-Length", b'l';
    /// Content-Type, compact `c`.
    ContentType = "Content-Type", b'c';
    /// CSeq.
    CSeq = "CSeq";
    /// Date.
    Date = "Date";
    /// Diversion (RFC 5806).
    Diversion = "Diversion";
    /// Error-Info.
    ErrorInfo = "Error-Info";
    /// Event (RFC 6665), compact `o`.
    Event = "Event", b'o';
    /// Expires.
    Expires = "Expires";
    /// From, compact `f`.
    From = "From", b'f';
    /// History-Info (RFC 7044).
    HistoryInfo = "History-Info";
    /// Identity (RFC 8224), compact `y`.
    Identity = "Identity", b'y';
    /// Identity-Info (RFC 4474), compact `n`.
    IdentityInfo = "Identity-Info", b'n';
    /// In-Reply-To.
    InReplyTo = "In-Reply-To";
    /// Max-Forwards.
    MaxForwards = "Max-Forwards";
    /// MIME-Version.
    MimeVersion = "MIME-Version";
    /// Min-Expires.
    MinExpires = "Min-Expires";
    /// Min-SE (RFC 4028).
    MinSe = "Min-SE";
    /// Organization.
    Organization = "Organization";
    /// P-Access-Network-Info (RFC 7315).
    PAccessNetworkInfo = "P-Access-Network-Info";
    /// P-Asserted-Identity (RFC 3325).
    PAssertedIdentity = "P-Asserted-Identity";
    /// P-Called-Party-ID (RFC 7315).
    PCalledPartyId = "P-Called-Party-ID";
    /// P-Charging-Vector (RFC 7315).
    PChargingVector = "P-Charging-Vector";
    /// P-Preferred-Identity (RFC 3325).
    PPreferredIdentity = "P-Preferred-Identity";
    /// Priority.
    Priority = "Priority";
    /// Privacy (RFC 3323).
    Privacy = "Privacy";
    /// Proxy-Authenticate.
    ProxyAuthenticate = "Proxy-Authenticate";
    /// Proxy-Authorization.
    ProxyAuthorization = "Proxy-Authorization";
    /// Proxy-Require.
    ProxyRequire = "Proxy-Require";
    /// RAck (RFC 3262).
    RAck = "RAck";
    /// Reason (RFC 3326).
    Reason = "Reason";
    /// Record-Route.
    RecordRoute = "Record-Route";
    /// Refer-To (RFC 3515), compact `r`.
    ReferTo = "Refer-To", b'r';
    /// Referred-By (RFC 3892), compact `b`.
    ReferredBy = "Referred-By", b'b';
    /// Reject-Contact (RFC 3841), compact `j`.
    RejectContact = "Reject-Contact", b'j';
    /// Remote-Party-ID (draft, widely deployed).
    RemotePartyId = "Remote-Party-ID";
    /// Replaces (RFC 3891).
    Replaces = "Replaces";
    /// Reply-To.
    ReplyTo = "Reply-To";
    /// Request-Disposition (RFC 3841), compact `d`.
    RequestDisposition = "Request-Disposition", b'd';
    /// Require.
    Require = "Require";
    /// Retry-After.
    RetryAfter = "Retry-After";
    /// Route.
    Route = "Route";
    /// RSeq (RFC 3262).
    RSeq = "RSeq";
    /// Server.
    Server = "Server";
    /// Session-Expires (RFC 4028), compact `x`.
    SessionExpires = "Session-Expires", b'x';
    /// Session-ID (RFC 7989).
    SessionId = "Session-ID";
    /// Subject, compact `s`.
    Subject = "Subject", b's';
    /// Subscription-State (RFC 6665).
    SubscriptionState = "Subscription-State";
    /// Supported, compact `k`.
    Supported = "Supported", b'k';
    /// Timestamp.
    Timestamp = "Timestamp";
    /// To, compact `t`.
    To = "To", b't';
    /// Unsupported.
    Unsupported = "Unsupported";
    /// User-Agent.
    UserAgent = "User-Agent";
    /// Via, compact `v`.
    Via = "Via", b'v';
    /// Warning.
    Warning = "Warning";
    /// WWW-Authenticate.
    WwwAuthenticate = "WWW-Authenticate";
}

impl HeaderName {
    /// Recognises a header name in long or compact form, ignoring ASCII case.
    pub fn from_bytes(name: &[u8]) -> Option<HeaderName> {
        use HeaderName as H;
        let first = name.first()?.to_ascii_lowercase();
        if name.len() == 1 {
            return match first {
                b'a' => Some(H::AcceptContact),
                b'b' => Some(H::ReferredBy),
                b'c' => Some(H::ContentType),
                b'd' => Some(H::RequestDisposition),
                b'e' => Some(H::ContentEncoding),
                b'f' => Some(H::From),
                b'i' => Some(H::CallId),
                b'j' => Some(H::RejectContact),
                b'k' => Some(H::Supported),
                b'l' => Some(H::ContentLength),
                b'm' => Some(H::Contact),
                b'n' => Some(H::IdentityInfo),
                b'o' => Some(H::Event),
                b'r' => Some(H::ReferTo),
                b's' => Some(H::Subject),
                b't' => Some(H::To),
                b'u' => Some(H::AllowEvents),
                b'v' => Some(H::Via),
                b'x' => Some(H::SessionExpires),
                b'y' => Some(H::Identity),
                _ => None,
            };
        }
        // Dispatch on (length, first letter): at most three names share a slot, so a lookup
        // is one jump and one or two case-insensitive compares on the hot path.
        let candidates: &[(&str, HeaderName)] = match (name.len(), first) {
            (2, b't') => &[("To", H::To)],
            (3, b'v') => &[("Via", H::Via)],
            (4, b'c') => &[("CSeq", H::CSeq)],
            (4, b'd') => &[("Date", H::Date)],
            (4, b'f') => &[("From", H::From)],
            (4, b'r') => &[("RAck", H::RAck), ("RSeq", H::RSeq)],
            (5, b'a') => &[("Allow", H::Allow)],
            (5, b'e') => &[("Event", H::Event)],
            (5, b'r') => &[("Route", H::Route)],
            (6, b'a') => &[("Accept", H::Accept)],
            (6, b'm') => &[("Min-SE", H::MinSe)],
            (6, b'r') => &[("Reason", H::Reason)],
            (6, b's') => &[("Server", H::Server)],
            (7, b'c') => &[("Call-ID", H::CallId), ("Contact", H::Contact)],
            (7, b'e') => &[("Expires", H::Expires)],
            (7, b'p') => &[("Privacy", H::Privacy)],
            (7, b'r') => &[("Require", H::Require)],
            (7, b's') => &[("Subject", H::Subject)],
            (7, b'w') => &[("Warning", H::Warning)],
            (8, b'i') => &[("Identity", H::Identity)],
            (8, b'p') => &[("Priority", H::Priority)],
            (8, b'r') => &[
                ("Refer-To", H::ReferTo),
                ("Replaces", H::Replaces),
                ("Reply-To", H::ReplyTo),
            ],
            (9, b'c') => &[("Call-Info", H::CallInfo)],
            (9, b'd') => &[("Diversion", H::Diversion)],
            (9, b's') => &[("Supported", H::Supported)],
            (9, b't') => &[("Timestamp", H::Timestamp)],
            (10, b'a') => &[("Alert-Info", H::AlertInfo)],
            (10, b'e') => &[("Error-Info", H::ErrorInfo)],
            (10, b's') => &[("Session-ID", H::SessionId)],
            (10, b'u') => &[("User-Agent", H::UserAgent)],
            (11, b'i') => &[("In-Reply-To", H::InReplyTo)],
            (11, b'm') => &[("Min-Expires", H::MinExpires)],
            (11, b'r') => &[
                ("Referred-By", H::ReferredBy),
                ("Retry-After", H::RetryAfter),
            ],
            (11, b'u') => &[("Unsupported", H::Unsupported)],
            (12, b'a') => &[("Allow-Events", H::AllowEvents)],
            (12, b'c') => &[("Content-Type", H::ContentType)],
            (12, b'h') => &[("History-Info", H::HistoryInfo)],
            (12, b'm') => &[
                ("Max-Forwards", H::MaxForwards),
                ("MIME-Version", H::MimeVersion),
            ],
            (12, b'o') => &[("Organization", H::Organization)],
            (12, b'r') => &[("Record-Route", H::RecordRoute)],
            (13, b'a') => &[("Authorization", H::Authorization)],
            (13, b'i') => &[("Identity-Info", H::IdentityInfo)],
            (13, b'p') => &[("Proxy-Require", H::ProxyRequire)],
            (14, b'a') => &[("Accept-Contact", H::AcceptContact)],
            (14, b'c') => &[("Content-Length", H::ContentLength)],
            (14, b'r') => &[("Reject-Contact", H::RejectContact)],
            (15, b'a') => &[
                ("Accept-Encoding", H::AcceptEncoding),
                ("Accept-Language", H::AcceptLanguage),
            ],
            (15, b'r') => &[("Remote-Party-ID", H::RemotePartyId)],
            (15, b's') => &[("Session-Expires", H::SessionExpires)],
            (16, b'c') => &[
                ("Content-Encoding", H::ContentEncoding),
                ("Content-Language", H::ContentLanguage),
            ],
            (16, b'w') => &[("WWW-Authenticate", H::WwwAuthenticate)],
            (17, b'p') => &[
                ("P-Called-Party-ID", H::PCalledPartyId),
                ("P-Charging-Vector", H::PChargingVector),
            ],
            (18, b'p') => &[("Proxy-Authenticate", H::ProxyAuthenticate)],
            (18, b's') => &[("Subscription-State", H::SubscriptionState)],
            (19, b'a') => &[("Authentication-Info", H::AuthenticationInfo)],
            (19, b'c') => &[("Content-Disposition", H::ContentDisposition)],
            (19, b'p') => &[
                ("P-Asserted-Identity", H::PAssertedIdentity),
                ("Proxy-Authorization", H::ProxyAuthorization),
            ],
            (19, b'r') => &[("Request-Disposition", H::RequestDisposition)],
            (20, b'p') => &[("P-Preferred-Identity", H::PPreferredIdentity)],
            (21, b'p') => &[("P-Access-Network-Info", H::PAccessNetworkInfo)],
            _ => return None,
        };
        candidates
            .iter()
            .find(|(canon, _)| canon.as_bytes().eq_ignore_ascii_case(name))
            .map(|&(_, h)| h)
    }

    /// True for headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so one
    /// header line may hold several values.
    pub fn is_list(self) -> bool {
        use HeaderName as H;
        matches!(
            self,
            H::Accept
                | H::AcceptContact
                | H::AcceptEncoding
                | H::AcceptLanguage
                | H::AlertInfo
                | H::Allow
                | H::AllowEvents
                | H::CallInfo
                | H::Contact
                | H::ContentEncoding
                | H::ContentLanguage
                | H::Diversion
                | H::ErrorInfo
                | H::HistoryInfo
                | H::InReplyTo
                | H::PAssertedIdentity
                | H::PPreferredIdentity
                | H::Privacy
                | H::ProxyRequire
                | H::Reason
                | H::RecordRoute
                | H::RejectContact
                | H::RemotePartyId
                | H::RequestDisposition
                | H::Require
                | H::Route
                | H::Supported
                | H::Unsupported
                | H::Via
                | H::Warning
        )
    }
}

/// One header field: its name as written and its value as a view into the message.
///
/// The value is trimmed of surrounding whitespace but otherwise raw: a folded value keeps
/// its CRLF and continuation whitespace (see [`Header::unfolded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    name: &'a [u8],
    known: Option<HeaderName>,
    value: &'a [u8],
}

impl<'a> Header<'a> {
    pub(crate) fn new(name: &'a [u8], value: &'a [u8]) -> Self {
        Header {
            name,
            known: HeaderName::from_bytes(name),
            value,
        }
    }

    /// The name exactly as written (long or compact form, any case).
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// The recognised header, if the name is one this parser knows.
    pub fn known(&self) -> Option<HeaderName> {
        self.known
    }

    /// The raw value (trimmed; folds kept).
    pub fn value(&self) -> &'a [u8] {
        self.value
    }

    /// The raw value as text, when it is UTF-8.
    pub fn value_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.value).ok()
    }

    /// The value with each fold replaced by a single SP (RFC 3261 §7.3.1); borrows unless
    /// the value was folded.
    pub fn unfolded(&self) -> Cow<'a, [u8]> {
        unfold(self.value)
    }

    /// The elements of a comma-separated value (commas inside quotes or `<>` do not split).
    pub fn list(&self) -> ListIter<'a> {
        ListIter::new(self.value)
    }

    /// True when this header has the given name (long or compact form, any case).
    pub fn is(&self, name: &str) -> bool {
        match (self.known, HeaderName::from_bytes(name.as_bytes())) {
            (Some(a), Some(b)) => a == b,
            (None, None) => self.name.eq_ignore_ascii_case(name.as_bytes()),
            _ => false,
        }
    }
}

/// A parsed header line: name and trimmed value.
pub(crate) struct RawLine<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// The end of the line starting at `pos`: (end of content without CR/LF, start of next line),
/// or `None` when the buffer holds no LF from `pos` on. A bare LF is accepted as line end.
#[inline]
pub(crate) fn line_at(buf: &[u8], pos: usize) -> Option<(usize, usize)> {
    let nl = pos + memchr(b'\n', buf.get(pos..)?)?;
    let end = if nl > pos && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    Some((end, nl + 1))
}

/// Splits a header section into logical header lines, joining continuation lines.
pub(crate) struct HeaderLines<'a> {
    buf: &'a [u8],
    pos: usize,
    max_line: usize,
    body_start: Option<usize>,
}

impl<'a> HeaderLines<'a> {
    /// Reads header lines of `buf` from `pos` (the first byte after the start line).
    pub(crate) fn new(buf: &'a [u8], pos: usize, max_line: usize) -> Self {
        HeaderLines {
            buf,
            pos,
            max_line,
            body_start: None,
        }
    }

    /// Offset of the body, known once [`Self::next_line`] returned `Ok(None)`.
    pub(crate) fn body_start(&self) -> Option<usize> {
        self.body_start
    }

    /// The next header line; `Ok(None)` at the empty line ending the section.
    pub(crate) fn next_line(&mut self) -> Result<Option<RawLine<'a>>, SipError> {
        if self.body_start.is_some() {
            return Ok(None);
        }
        let buf = self.buf;
        let start = self.pos;
        let (end, mut next) = line_at(buf, start).ok_or(SipError::UnterminatedHeaders)?;
        if end == start {
            self.body_start = Some(next);
            return Ok(None);
        }
        let name_end = token_end(buf, start);
        if name_end == start {
            // Either junk or a continuation line with no header before it.
            return Err(SipError::BadHeaderLine);
        }
        let mut value_end = end;
        while buf.get(next).is_some_and(|&b| is_wsp(b)) {
            let (e, n) = line_at(buf, next).ok_or(SipError::UnterminatedHeaders)?;
            value_end = e;
            next = n;
            if value_end - start > self.max_line {
                break;
            }
        }
        if value_end - start > self.max_line {
            return Err(SipError::HeaderLineTooLong { max: self.max_line });
        }
        let mut colon = name_end;
        while buf.get(colon).is_some_and(|&b| is_wsp(b)) {
            colon += 1;
        }
        if buf.get(colon) != Some(&b':') {
            return Err(SipError::BadHeaderLine);
        }
        self.pos = next;
        Ok(Some(RawLine {
            name: sub(buf, start, name_end),
            value: trim_lws(sub(buf, colon + 1, value_end)),
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn names_match_long_and_compact_forms() {
        assert_eq!(HeaderName::from_bytes(b"vIa"), Some(HeaderName::Via));
        assert_eq!(HeaderName::from_bytes(b"V"), Some(HeaderName::Via));
        assert_eq!(HeaderName::from_bytes(b"i"), Some(HeaderName::CallId));
        assert_eq!(HeaderName::from_bytes(b"call-id"), Some(HeaderName::CallId));
        assert_eq!(
            HeaderName::from_bytes(b"l"),
            Some(HeaderName::ContentLength)
        );
        assert_eq!(
            HeaderName::from_bytes(b"x"),
            Some(HeaderName::SessionExpires)
        );
        assert_eq!(HeaderName::from_bytes(b"u"), Some(HeaderName::AllowEvents));
        assert_eq!(
            HeaderName::from_bytes(b"WWW-AUTHENTICATE"),
            Some(HeaderName::WwwAuthenticate)
        );
        assert_eq!(
            HeaderName::from_bytes(b"session-id"),
            Some(HeaderName::SessionId)
        );
        // RFC 4475 §3.1.1.5: an escaped name is a different, unknown header.
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), None);
        assert_eq!(HeaderName::from_bytes(b"q"), None);
        assert_eq!(HeaderName::from_bytes(b""), None);
        for &(canon, h) in ALL_NAMES {
            assert_eq!(HeaderName::from_bytes(canon.as_bytes()), Some(h), "{canon}");
            assert_eq!(h.canonical(), canon);
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), Some(h));
            }
        }
    }

    #[test]
    fn folding_and_line_ends() {
        let buf = b"A: 1\r\nB :\r\n  two\r\n\tthree\nC:x\r\n\r\nbody";
        let mut it = HeaderLines::new(buf, 0, 1024);
        let a = it.next_line().unwrap().unwrap();
        assert_eq!((a.name, a.value), (&b"A"[..], &b"1"[..]));
        let b = it.next_line().unwrap().unwrap();
        assert_eq!(b.name, b"B");
        assert_eq!(b.value, b"two\r\n\tthree");
        let c = it.next_line().unwrap().unwrap();
        assert_eq!((c.name, c.value), (&b"C"[..], &b"x"[..]));
        assert!(it.next_line().unwrap().is_none());
        assert_eq!(&buf[it.body_start().unwrap()..], b"body");
    }

    #[test]
    fn bad_lines() {
        assert_eq!(
            HeaderLines::new(b" cont\r\n\r\n", 0, 100).next_line().err(),
            Some(SipError::BadHeaderLine)
        );
        assert_eq!(
            HeaderLines::new(b"NoColon\r\n\r\n", 0, 100)
                .next_line()
                .err(),
            Some(SipError::BadHeaderLine)
        );
        let mut it = HeaderLines::new(b"A: 1\r\n", 0, 100);
        assert!(it.next_line().unwrap().is_some());
        assert_eq!(it.next_line().err(), Some(SipError::UnterminatedHeaders));
        assert_eq!(
            HeaderLines::new(b"A: 0123456789\r\n\r\n", 0, 8)
                .next_line()
                .err(),
            Some(SipError::HeaderLineTooLong { max: 8 })
        );
    }
}
