//! Typed forms of the single-valued headers a call tracker reads: CSeq (RFC 3261 §20.16),
//! Content-Type (§20.15, RFC 2045 §5.1), Reason (RFC 3326), Session-ID (RFC 7989),
//! P-Charging-Vector (RFC 7315 §4.6), Session-Expires (RFC 4028 §4), and the numeric
//! headers (Max-Forwards, Expires, Content-Length).
use std::borrow::Cow;

use super::error::ValueError;
use super::lex::{
    is_lws, is_token_str, parse_u32_checked, parse_u64, skip_lws, sub, sub_str, token_end,
    trim_lws, NumError,
};
use super::params::Params;

/// A request method (RFC 3261 §7.1; methods are case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method<'a> {
    /// INVITE (RFC 3261)
    Invite,
    /// ACK (RFC 3261)
    Ack,
    /// BYE (RFC 3261)
    Bye,
    /// CANCEL (RFC 3261)
    Cancel,
    /// REGISTER (RFC 3261)
    Register,
    /// OPTIONS (RFC 3261)
    Options,
    /// INFO (RFC 6086)
    Info,
    /// PRACK (RFC 3262)
    Prack,
    /// UPDATE (RFC 3311)
    Update,
    /// SUBSCRIBE (RFC 6665)
    Subscribe,
    /// NOTIFY (RFC 6665)
    Notify,
    /// REFER (RFC 3515)
    Refer,
    /// MESSAGE (RFC 3428)
    Message,
    /// PUBLISH (RFC 3903)
    Publish,
    /// Any other token, as written (RFC 4475 §3.1.1.5: `RE%47IST%45R` is not REGISTER).
    Other(&'a str),
}

impl<'a> Method<'a> {
    /// Parses a method token; `None` when it is empty or has non-token characters.
    pub fn parse(b: &'a [u8]) -> Option<Method<'a>> {
        if !is_token_str(b) {
            return None;
        }
        Some(match b {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"REGISTER" => Method::Register,
            b"OPTIONS" => Method::Options,
            b"INFO" => Method::Info,
            b"PRACK" => Method::Prack,
            b"UPDATE" => Method::Update,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            // Token characters are ASCII, so this cannot fail.
            other => Method::Other(std::str::from_utf8(other).ok()?),
        })
    }

    /// The method as written on the wire.
    pub fn as_str(&self) -> &'a str {
        match self {
            Method::Other(s) => s,
            standard => standard.standard_name().unwrap_or_default(),
        }
    }

    /// The method as an owned name that outlives the message (a borrowed constant for the
    /// standard methods, a copy of the token for any other).
    pub fn to_name(&self) -> Cow<'static, str> {
        match self {
            Method::Other(s) => Cow::Owned((*s).to_owned()),
            standard => Cow::Borrowed(standard.standard_name().unwrap_or_default()),
        }
    }

    /// The name of a method this module knows; `None` for [`Method::Other`].
    fn standard_name(&self) -> Option<&'static str> {
        Some(match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Prack => "PRACK",
            Method::Update => "UPDATE",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(_) => return None,
        })
    }
}

impl std::fmt::Display for Method<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CSeq header: sequence number and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number (RFC 3261 §8.1.1.5: a 32-bit unsigned integer).
    pub seq: u32,
    /// The method.
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    /// Parses `1*DIGIT LWS Method` (leading zeros and folding allowed, RFC 4475 §3.1.1.1;
    /// overlarge numbers refused, §3.1.2.5).
    pub fn parse(v: &'a [u8]) -> Result<CSeq<'a>, ValueError> {
        let v = trim_lws(v);
        let digits_end = v
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(v.len());
        let seq = num_u32(sub(v, 0, digits_end))?;
        let m = skip_lws(v, digits_end);
        if m == digits_end {
            return Err(if m == v.len() {
                ValueError::BadToken
            } else {
                ValueError::BadNumber
            });
        }
        let method = Method::parse(sub(v, m, v.len())).ok_or(ValueError::BadToken)?;
        Ok(CSeq { seq, method })
    }
}

fn num_u32(b: &[u8]) -> Result<u32, ValueError> {
    parse_u32_checked(b).map_err(|e| match e {
        NumError::Bad => ValueError::BadNumber,
        NumError::Range => ValueError::NumberOutOfRange,
    })
}

/// Parses a header whose whole value is a decimal `u32` (Expires, RSeq, ...).
pub fn parse_u32_value(v: &[u8]) -> Result<u32, ValueError> {
    num_u32(trim_lws(v))
}

/// Parses Max-Forwards: a number 0..=255 (RFC 4475 §3.1.2.4 treats 300 as invalid).
pub fn parse_max_forwards(v: &[u8]) -> Result<u8, ValueError> {
    let n = parse_u32_value(v)?;
    u8::try_from(n).map_err(|_| ValueError::NumberOutOfRange)
}

/// Parses Content-Length: a non-negative decimal number (never a signed cast, RFC 4475
/// §3.1.2.3).
pub fn parse_content_length(v: &[u8]) -> Option<usize> {
    parse_u64(trim_lws(v)).and_then(|n| usize::try_from(n).ok())
}

/// A media type such as the Content-Type value (RFC 3261 §20.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    ty: &'a str,
    subtype: &'a str,
    params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// Parses `type SLASH subtype *(SEMI param)`.
    pub fn parse(v: &'a [u8]) -> Result<MediaType<'a>, ValueError> {
        let s = std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)?;
        let b = s.as_bytes();
        let i = skip_lws(b, 0);
        let te = token_end(b, i);
        let j = skip_lws(b, te);
        if te == i || b.get(j) != Some(&b'/') {
            return Err(ValueError::BadMediaType);
        }
        let k = skip_lws(b, j + 1);
        let se = token_end(b, k);
        if se == k {
            return Err(ValueError::BadMediaType);
        }
        Ok(MediaType {
            ty: sub_str(s, i, te),
            subtype: sub_str(s, k, se),
            params: Params::parse(s.get(se..).unwrap_or(""))?,
        })
    }

    /// The top-level type, as written.
    pub fn ty(&self) -> &'a str {
        self.ty
    }

    /// The subtype, as written.
    pub fn subtype(&self) -> &'a str {
        self.subtype
    }

    /// The parameters.
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// True for `ty/subtype`, ignoring ASCII case.
    pub fn is(&self, ty: &str, subtype: &str) -> bool {
        self.ty.eq_ignore_ascii_case(ty) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// True for any `multipart/*` type.
    pub fn is_multipart(&self) -> bool {
        self.ty.eq_ignore_ascii_case("multipart")
    }

    /// The multipart `boundary` parameter (quoted or token form).
    pub fn boundary(&self) -> Option<&'a str> {
        self.params.value("boundary").filter(|b| !b.is_empty())
    }
}

/// The protocol of a Reason value (RFC 3326 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonProtocol<'a> {
    /// `SIP`: the cause is a SIP status code.
    Sip,
    /// `Q.850`: the cause is an ISDN cause value.
    Q850,
    /// Any other protocol token.
    Other(&'a str),
}

/// One Reason value (RFC 3326).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason<'a> {
    /// The protocol.
    pub protocol: ReasonProtocol<'a>,
    /// The `cause` parameter.
    pub cause: Option<u16>,
    /// The `text` parameter (quoted-string inside, escapes unresolved).
    pub text: Option<&'a str>,
    /// All parameters.
    pub params: Params<'a>,
}

impl<'a> Reason<'a> {
    /// Parses `protocol *(SEMI reason-params)`.
    pub fn parse(v: &'a [u8]) -> Result<Reason<'a>, ValueError> {
        let s = std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)?;
        let b = s.as_bytes();
        let i = skip_lws(b, 0);
        let e = token_end(b, i);
        if e == i {
            return Err(ValueError::BadToken);
        }
        let proto = sub_str(s, i, e);
        let protocol = if proto.eq_ignore_ascii_case("SIP") {
            ReasonProtocol::Sip
        } else if proto.eq_ignore_ascii_case("Q.850") {
            ReasonProtocol::Q850
        } else {
            ReasonProtocol::Other(proto)
        };
        let params = Params::parse(s.get(e..).unwrap_or(""))?;
        let cause = match params.get("cause") {
            Some(p) => {
                let n = num_u32(p.value.ok_or(ValueError::BadNumber)?.as_bytes())?;
                Some(u16::try_from(n).map_err(|_| ValueError::NumberOutOfRange)?)
            }
            None => None,
        };
        Ok(Reason {
            protocol,
            cause,
            text: params.value("text"),
            params,
        })
    }
}

/// The Session-ID header (RFC 7989 §4): the local and remote UUIDs of an end-to-end session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionId<'a> {
    /// The sender's UUID (32 hexadecimal digits).
    pub local: &'a str,
    /// The `remote` parameter, when the peer's UUID is known.
    pub remote: Option<&'a str>,
    /// All parameters.
    pub params: Params<'a>,
}

impl<'a> SessionId<'a> {
    /// Parses `sess-uuid *(SEMI sess-id-param)`; UUIDs are compared ignoring case.
    pub fn parse(v: &'a [u8]) -> Result<SessionId<'a>, ValueError> {
        let s = std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)?;
        let b = s.as_bytes();
        let i = skip_lws(b, 0);
        let mut e = i;
        while b.get(e).is_some_and(|&c| !is_lws(c) && c != b';') {
            e += 1;
        }
        let local = sub_str(s, i, e);
        if !is_uuid(local) {
            return Err(ValueError::BadSessionId);
        }
        let params = Params::parse(s.get(e..).unwrap_or(""))?;
        let remote = params.value("remote");
        if remote.is_some_and(|r| !is_uuid(r)) {
            return Err(ValueError::BadSessionId);
        }
        Ok(SessionId {
            local,
            remote,
            params,
        })
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The P-Charging-Vector header (RFC 7315 §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PChargingVector<'a> {
    /// The IMS charging identifier (`icid-value`, token or quoted-string inside).
    pub icid_value: &'a str,
    /// All parameters, including `icid-value`, `icid-generated-at`, `orig-ioi`, `term-ioi`.
    pub params: Params<'a>,
}

impl<'a> PChargingVector<'a> {
    /// Parses `icid-value *(SEMI charge-params)`.
    pub fn parse(v: &'a [u8]) -> Result<PChargingVector<'a>, ValueError> {
        let s = std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)?;
        let params = Params::parse_leading(s)?;
        let first = params.iter().next().ok_or(ValueError::MissingParam)?;
        if !first.name.eq_ignore_ascii_case("icid-value") {
            return Err(ValueError::MissingParam);
        }
        let icid_value = first.value.ok_or(ValueError::MissingParam)?;
        Ok(PChargingVector { icid_value, params })
    }
}

/// Who refreshes a session timer (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller refreshes.
    Uac,
    /// The callee refreshes.
    Uas,
}

/// The Session-Expires header (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires<'a> {
    /// The session interval in seconds.
    pub delta_seconds: u32,
    /// The `refresher` parameter.
    pub refresher: Option<Refresher>,
    /// All parameters.
    pub params: Params<'a>,
}

impl<'a> SessionExpires<'a> {
    /// Parses `delta-seconds *(SEMI se-params)`.
    pub fn parse(v: &'a [u8]) -> Result<SessionExpires<'a>, ValueError> {
        let s = std::str::from_utf8(v).map_err(|_| ValueError::NotUtf8)?;
        let b = s.as_bytes();
        let i = skip_lws(b, 0);
        let e = b
            .iter()
            .skip(i)
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |p| p + i);
        let delta_seconds = num_u32(sub(b, i, e))?;
        let params = Params::parse(s.get(e..).unwrap_or(""))?;
        let refresher = match params.get("refresher") {
            Some(p) => Some(match p.value {
                Some(r) if r.eq_ignore_ascii_case("uac") => Refresher::Uac,
                Some(r) if r.eq_ignore_ascii_case("uas") => Refresher::Uas,
                _ => return Err(ValueError::BadToken),
            }),
            None => None,
        };
        Ok(SessionExpires {
            delta_seconds,
            refresher,
            params,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn cseq() {
        assert_eq!(
            CSeq::parse(b"0009\r\n  INVITE").unwrap(),
            CSeq {
                seq: 9,
                method: Method::Invite
            }
        );
        assert_eq!(
            CSeq::parse(b"29344 RE%47IST%45R").unwrap().method,
            Method::Other("RE%47IST%45R")
        );
        // RFC 4475 §3.1.2.5 (scalarlg): larger than 2^32-1.
        assert_eq!(
            CSeq::parse(b"9292394834772304023312 OPTIONS"),
            Err(ValueError::NumberOutOfRange)
        );
        assert_eq!(CSeq::parse(b"12"), Err(ValueError::BadToken));
        assert_eq!(CSeq::parse(b"INVITE"), Err(ValueError::BadNumber));
        assert_eq!(CSeq::parse(b"1INVITE"), Err(ValueError::BadNumber));
        assert_eq!(CSeq::parse(b"1 INV ITE"), Err(ValueError::BadToken));
        assert_eq!(CSeq::parse(b"-1 INVITE"), Err(ValueError::BadNumber));
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::parse(b"INVITE"), Some(Method::Invite));
        assert_eq!(Method::parse(b"invite"), Some(Method::Other("invite")));
        assert_eq!(Method::parse(b"IN VITE"), None);
        assert_eq!(Method::parse(b""), None);
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_max_forwards(b"0068"), Ok(68));
        assert_eq!(
            parse_max_forwards(b"300"),
            Err(ValueError::NumberOutOfRange)
        );
        assert_eq!(parse_content_length(b" 150 "), Some(150));
        assert_eq!(parse_content_length(b"-999"), None);
        assert_eq!(parse_u32_value(b"3600"), Ok(3600));
    }

    #[test]
    fn media_type() {
        let m = MediaType::parse(b"multipart/mixed;boundary=7a9cbec02ceef655").unwrap();
        assert!(m.is("Multipart", "MIXED"));
        assert!(m.is_multipart());
        assert_eq!(m.boundary(), Some("7a9cbec02ceef655"));
        let m = MediaType::parse(b"multipart/alternative; boundary=\"a b\"").unwrap();
        assert_eq!(m.boundary(), Some("a b"));
        assert!(MediaType::parse(b"application sdp").is_err());
        assert!(MediaType::parse(b"application/").is_err());
    }

    #[test]
    fn reason() {
        // RFC 3326 §2 examples.
        let r = Reason::parse(br#"SIP ;cause=200 ;text="Call completed elsewhere""#).unwrap();
        assert_eq!(r.protocol, ReasonProtocol::Sip);
        assert_eq!(r.cause, Some(200));
        assert_eq!(r.text, Some("Call completed elsewhere"));
        let r = Reason::parse(br#"Q.850 ;cause=16 ;text="Terminated""#).unwrap();
        assert_eq!(r.protocol, ReasonProtocol::Q850);
        assert_eq!(r.cause, Some(16));
        assert_eq!(
            Reason::parse(b"Q.850;cause=99999"),
            Err(ValueError::NumberOutOfRange)
        );
    }

    #[test]
    fn session_id() {
        // RFC 7989 §9 example values.
        let s = SessionId::parse(
            b"ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2",
        )
        .unwrap();
        assert_eq!(s.local, "ab30317f1a784dc48ff824d0d3715d86");
        assert_eq!(s.remote, Some("47755a9de7794ba387653f2099600ef2"));
        assert_eq!(SessionId::parse(b"xyz"), Err(ValueError::BadSessionId));
    }

    #[test]
    fn p_charging_vector() {
        // RFC 7315 §4.6 example.
        let p = PChargingVector::parse(
            b"icid-value=1234bc9876e; icid-generated-at=192.0.6.8; orig-ioi=home1.net",
        )
        .unwrap();
        assert_eq!(p.icid_value, "1234bc9876e");
        assert_eq!(p.params.value("icid-generated-at"), Some("192.0.6.8"));
        assert_eq!(
            PChargingVector::parse(b"orig-ioi=x"),
            Err(ValueError::MissingParam)
        );
    }

    #[test]
    fn session_expires() {
        let s = SessionExpires::parse(b"4000;refresher=uac").unwrap();
        assert_eq!(s.delta_seconds, 4000);
        assert_eq!(s.refresher, Some(Refresher::Uac));
        assert_eq!(SessionExpires::parse(b"1800").unwrap().refresher, None);
        assert!(SessionExpires::parse(b"x").is_err());
        assert!(SessionExpires::parse(b"90;refresher=me").is_err());
    }
}
