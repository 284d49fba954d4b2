//! SDP session descriptions (RFC 8866, formerly RFC 4566 §5): the v/o/s/c/t/m/a lines a
//! media binder needs, with rtpmap/fmtp/ptime (RFC 8866 §6), direction attributes
//! (§6.7, session-level default and media-level override), a=rtcp (RFC 3605) and
//! a=rtcp-mux (RFC 5761), and the static payload types of RFC 3551 tables 4 and 5.
//!
//! Lines may end in CRLF or a bare LF (RFC 8866 §5). Free-text fields stay bytes (they may
//! be in another charset); structured lines must be UTF-8. Unknown line types and
//! attributes are kept or skipped, never an error (§5). Ports outside 0..=65535 are
//! errors, never wrapped.
use std::net::IpAddr;

use memchr::memchr;
use thiserror::Error;

use super::lex::{sub, tail};
use super::uri::{parse_ipv6_lenient, Host};

/// Bounds on what one SDP body may make the parser hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpLimits {
    /// Most m= sections; default 16.
    pub max_media: usize,
    /// Most formats (payload types) on one m= line; default 32.
    pub max_payload_types: usize,
    /// Most a= lines in one section (session or one media); default 128.
    pub max_attributes: usize,
}

impl Default for SdpLimits {
    fn default() -> Self {
        SdpLimits {
            max_media: 16,
            max_payload_types: 32,
            max_attributes: 128,
        }
    }
}

/// Why an SDP body could not be parsed. `line` is the 1-based line number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is empty or only whitespace.
    #[error("empty sdp")]
    Empty,
    /// The first line is not `v=`.
    #[error("sdp does not start with v=")]
    MissingVersion,
    /// `v=` is not 0.
    #[error("unsupported sdp version on line {line}")]
    UnsupportedVersion {
        /// Line number.
        line: usize,
    },
    /// A structured line is not UTF-8.
    #[error("line {line} is not valid utf-8")]
    NotUtf8 {
        /// Line number.
        line: usize,
    },
    /// A line is not `<letter>=<value>`, or a line appears where it may not.
    #[error("malformed line {line}")]
    MalformedLine {
        /// Line number.
        line: usize,
    },
    /// An o= line is not six fields.
    #[error("malformed o= line {line}")]
    MalformedOrigin {
        /// Line number.
        line: usize,
    },
    /// A c= line (or the address of a=rtcp) is invalid.
    #[error("malformed connection on line {line}")]
    MalformedConnection {
        /// Line number.
        line: usize,
    },
    /// A t= line is not two numbers.
    #[error("malformed t= line {line}")]
    MalformedTiming {
        /// Line number.
        line: usize,
    },
    /// An m= line lacks fields or has a non-numeric port.
    #[error("malformed m= line {line}")]
    MalformedMedia {
        /// Line number.
        line: usize,
    },
    /// A port is larger than 65535.
    #[error("port out of range on line {line}")]
    PortOutOfRange {
        /// Line number.
        line: usize,
    },
    /// An RTP format or rtpmap payload type is not 0..=127.
    #[error("invalid payload type on line {line}")]
    BadPayloadType {
        /// Line number.
        line: usize,
    },
    /// An a=rtpmap value is invalid.
    #[error("malformed a=rtpmap on line {line}")]
    MalformedRtpmap {
        /// Line number.
        line: usize,
    },
    /// An a=fmtp value is invalid.
    #[error("malformed a=fmtp on line {line}")]
    MalformedFmtp {
        /// Line number.
        line: usize,
    },
    /// An a=rtcp value is invalid.
    #[error("malformed a=rtcp on line {line}")]
    MalformedRtcp {
        /// Line number.
        line: usize,
    },
    /// An a=ptime value is invalid.
    #[error("malformed a=ptime on line {line}")]
    MalformedPtime {
        /// Line number.
        line: usize,
    },
    /// More m= sections than [`SdpLimits::max_media`].
    #[error("more than {max} media sections")]
    TooManyMedia {
        /// The configured limit.
        max: usize,
    },
    /// More formats on one m= line than [`SdpLimits::max_payload_types`].
    #[error("more than {max} formats on one m= line")]
    TooManyPayloadTypes {
        /// The configured limit.
        max: usize,
    },
    /// More a= lines in one section than [`SdpLimits::max_attributes`].
    #[error("more than {max} attributes in one section")]
    TooManyAttributes {
        /// The configured limit.
        max: usize,
    },
}

impl SdpError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            SdpError::Empty => "sdp_empty",
            SdpError::MissingVersion => "sdp_missing_version",
            SdpError::UnsupportedVersion { .. } => "sdp_unsupported_version",
            SdpError::NotUtf8 { .. } => "sdp_not_utf8",
            SdpError::MalformedLine { .. } => "sdp_malformed_line",
            SdpError::MalformedOrigin { .. } => "sdp_malformed_origin",
            SdpError::MalformedConnection { .. } => "sdp_malformed_connection",
            SdpError::MalformedTiming { .. } => "sdp_malformed_timing",
            SdpError::MalformedMedia { .. } => "sdp_malformed_media",
            SdpError::PortOutOfRange { .. } => "sdp_port_out_of_range",
            SdpError::BadPayloadType { .. } => "sdp_bad_payload_type",
            SdpError::MalformedRtpmap { .. } => "sdp_malformed_rtpmap",
            SdpError::MalformedFmtp { .. } => "sdp_malformed_fmtp",
            SdpError::MalformedRtcp { .. } => "sdp_malformed_rtcp",
            SdpError::MalformedPtime { .. } => "sdp_malformed_ptime",
            SdpError::TooManyMedia { .. } => "sdp_too_many_media",
            SdpError::TooManyPayloadTypes { .. } => "sdp_too_many_payload_types",
            SdpError::TooManyAttributes { .. } => "sdp_too_many_attributes",
        }
    }
}

/// The address type of a connection (RFC 8866 §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrType {
    /// `IP4`
    Ip4,
    /// `IP6`
    Ip6,
}

/// A connection address: an IP address or, rarely, a domain name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAddress<'a> {
    /// An IP address.
    Ip(IpAddr),
    /// A fully qualified domain name.
    Fqdn(&'a str),
}

impl ConnAddress<'_> {
    /// The address, when it is an IP address.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            ConnAddress::Ip(a) => Some(a),
            ConnAddress::Fqdn(_) => None,
        }
    }
}

/// A c= line (RFC 8866 §5.7), network type `IN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    /// IP4 or IP6.
    pub addr_type: AddrType,
    /// The (base) address.
    pub address: ConnAddress<'a>,
    /// The multicast TTL of an IP4 multicast address (`/ttl`).
    pub ttl: Option<u8>,
    /// The number of consecutive multicast addresses (`/count`).
    pub count: Option<u32>,
}

/// An o= line (RFC 8866 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The user name (`-` when none).
    pub username: &'a str,
    /// The session id, as written (numeric in RFC 8866, but kept as text).
    pub session_id: &'a str,
    /// The session version, as written.
    pub session_version: &'a str,
    /// The address type.
    pub addr_type: AddrType,
    /// The unicast address of the originator.
    pub address: ConnAddress<'a>,
}

/// The first t= line (RFC 8866 §5.9), NTP seconds; 0 means unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Start time.
    pub start: u64,
    /// Stop time.
    pub stop: u64,
}

/// Media direction (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

/// One a= line: name and optional value (raw bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute name.
    pub name: &'a str,
    /// The value after `:`, if any.
    pub value: Option<&'a [u8]>,
}

/// An a=rtpmap line (RFC 8866 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpMap<'a> {
    /// The payload type, 0..=127.
    pub payload_type: u8,
    /// The encoding name, as written.
    pub encoding: &'a str,
    /// The RTP clock rate in Hz; absent in some legacy SDP (`a=rtpmap:31 LPC`, RFC 4475).
    pub clock_rate: Option<u32>,
    /// The encoding parameters (audio channels).
    pub channels: Option<u16>,
}

/// An a=fmtp line (RFC 8866 §6.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fmtp<'a> {
    /// The format it applies to.
    pub format: &'a str,
    /// The format-specific parameters, as written.
    pub params: &'a str,
}

/// An a=rtcp line (RFC 3605).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtcp<'a> {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when given.
    pub connection: Option<Connection<'a>>,
}

/// The media type of an m= line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind<'a> {
    /// `audio`
    Audio,
    /// `video`
    Video,
    /// `text`
    Text,
    /// `application`
    Application,
    /// `message`
    Message,
    /// `image` (T.38 fax)
    Image,
    /// Any other media type, as written.
    Other(&'a str),
}

impl<'a> MediaKind<'a> {
    fn parse(s: &'a str) -> MediaKind<'a> {
        match s {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            "text" => MediaKind::Text,
            "application" => MediaKind::Application,
            "message" => MediaKind::Message,
            "image" => MediaKind::Image,
            other => MediaKind::Other(other),
        }
    }
}

/// A codec: what a payload type means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec<'a> {
    /// The encoding name (as in rtpmap, or the RFC 3551 name for static types).
    pub encoding: &'a str,
    /// The RTP clock rate in Hz.
    pub clock_rate: Option<u32>,
    /// Audio channels, where defined.
    pub channels: Option<u16>,
}

/// The static payload types of RFC 3551 tables 4 and 5. G722 has an RTP clock of 8000 Hz
/// although it samples at 16 kHz (RFC 3551 §4.5.2).
pub fn static_codec(pt: u8) -> Option<Codec<'static>> {
    let (encoding, clock, channels) = match pt {
        0 => ("PCMU", 8000, Some(1)),
        3 => ("GSM", 8000, Some(1)),
        4 => ("G723", 8000, Some(1)),
        5 => ("DVI4", 8000, Some(1)),
        6 => ("DVI4", 16000, Some(1)),
        7 => ("LPC", 8000, Some(1)),
        8 => ("PCMA", 8000, Some(1)),
        9 => ("G722", 8000, Some(1)),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, Some(1)),
        12 => ("QCELP", 8000, Some(1)),
        13 => ("CN", 8000, Some(1)),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, Some(1)),
        16 => ("DVI4", 11025, Some(1)),
        17 => ("DVI4", 22050, Some(1)),
        18 => ("G729", 8000, Some(1)),
        25 => ("CelB", 90000, None),
        26 => ("JPEG", 90000, None),
        28 => ("nv", 90000, None),
        31 => ("H261", 90000, None),
        32 => ("MPV", 90000, None),
        33 => ("MP2T", 90000, None),
        34 => ("H263", 90000, None),
        _ => return None,
    };
    Some(Codec {
        encoding,
        clock_rate: Some(clock),
        channels,
    })
}

/// One m= section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media<'a> {
    /// The media type.
    pub kind: MediaKind<'a>,
    /// The transport port; 0 disables the stream.
    pub port: u16,
    /// The number of ports (`port/count`), when given.
    pub port_count: Option<u16>,
    /// The transport protocol, such as `RTP/AVP` or `UDP/TLS/RTP/SAVPF`.
    pub proto: &'a str,
    /// The formats (payload types for RTP protocols).
    pub formats: Vec<&'a str>,
    /// The first media-level c= line.
    pub connection: Option<Connection<'a>>,
    /// The media-level direction attribute.
    pub direction: Option<Direction>,
    /// The a=rtpmap lines.
    pub rtpmaps: Vec<RtpMap<'a>>,
    /// The a=fmtp lines.
    pub fmtps: Vec<Fmtp<'a>>,
    /// The a=rtcp line.
    pub rtcp: Option<Rtcp<'a>>,
    /// True when a=rtcp-mux is present.
    pub rtcp_mux: bool,
    /// The a=ptime value in milliseconds (fractions dropped).
    pub ptime: Option<u32>,
    /// Every a= line of the section, in order.
    pub attributes: Vec<Attribute<'a>>,
}

impl<'a> Media<'a> {
    /// True when the protocol is an RTP profile (RTP/AVP, RTP/SAVP, UDP/TLS/RTP/SAVPF, ...).
    pub fn is_rtp(&self) -> bool {
        is_rtp_proto(self.proto)
    }

    /// True when the port is 0 (stream rejected or disabled, RFC 3264 §5.1).
    pub fn is_disabled(&self) -> bool {
        self.port == 0
    }

    /// The payload types of an RTP m= line.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse::<u8>().ok())
    }

    /// What a payload type means: its rtpmap, else its RFC 3551 static assignment.
    pub fn codec(&self, pt: u8) -> Option<Codec<'a>> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.payload_type == pt) {
            return Some(Codec {
                encoding: m.encoding,
                clock_rate: m.clock_rate,
                channels: m.channels,
            });
        }
        if self.is_rtp() {
            static_codec(pt)
        } else {
            None
        }
    }

    /// The payload type of `telephone-event` (RFC 4733 DTMF), if offered.
    pub fn telephone_event_pt(&self) -> Option<u8> {
        self.rtpmaps
            .iter()
            .find(|m| m.encoding.eq_ignore_ascii_case("telephone-event"))
            .map(|m| m.payload_type)
    }

    /// The RTCP port: a=rtcp, else the RTP port with a=rtcp-mux, else RTP port + 1
    /// (RFC 3550 §11). `None` for a disabled stream or when port + 1 would pass 65535.
    pub fn rtcp_port(&self) -> Option<u16> {
        if self.port == 0 {
            return None;
        }
        if let Some(r) = &self.rtcp {
            return Some(r.port);
        }
        if self.rtcp_mux {
            return Some(self.port);
        }
        self.port.checked_add(1)
    }

    /// The first attribute with this name.
    pub fn attribute(&self, name: &str) -> Option<&Attribute<'a>> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdp<'a> {
    /// The o= line.
    pub origin: Option<Origin<'a>>,
    /// The s= text (bytes; may be `-` or a single space).
    pub session_name: &'a [u8],
    /// The session-level c= line.
    pub connection: Option<Connection<'a>>,
    /// The first t= line.
    pub timing: Option<Timing>,
    /// The session-level direction attribute (default for every media section).
    pub direction: Option<Direction>,
    /// Every session-level a= line, in order.
    pub attributes: Vec<Attribute<'a>>,
    /// The m= sections, in order.
    pub media: Vec<Media<'a>>,
}

impl<'a> Sdp<'a> {
    /// The connection that applies to a media section: its own c=, else the session's.
    pub fn connection_for<'s>(&'s self, m: &'s Media<'a>) -> Option<&'s Connection<'a>> {
        m.connection.as_ref().or(self.connection.as_ref())
    }

    /// The direction of a media section: its own attribute, else the session-level one,
    /// else sendrecv.
    pub fn direction_for(&self, m: &Media<'a>) -> Direction {
        m.direction
            .or(self.direction)
            .unwrap_or(Direction::SendRecv)
    }

    /// Where RTCP for a media section goes: the a=rtcp address, else the connection address.
    pub fn rtcp_address_for(&self, m: &Media<'a>) -> Option<ConnAddress<'a>> {
        m.rtcp
            .and_then(|r| r.connection)
            .map(|c| c.address)
            .or_else(|| self.connection_for(m).map(|c| c.address))
    }

    /// The first session-level attribute with this name.
    pub fn attribute(&self, name: &str) -> Option<&Attribute<'a>> {
        self.attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

fn is_rtp_proto(proto: &str) -> bool {
    proto.split('/').any(|p| p.eq_ignore_ascii_case("RTP"))
}

/// Parses an SDP body.
pub fn parse<'a>(body: &'a [u8], limits: &SdpLimits) -> Result<Sdp<'a>, SdpError> {
    let mut sdp = Sdp {
        origin: None,
        session_name: &[],
        connection: None,
        timing: None,
        direction: None,
        attributes: Vec::new(),
        media: Vec::new(),
    };
    let mut seen_version = false;
    let mut line_no = 0usize;
    let mut pos = 0usize;
    while pos < body.len() {
        let (raw_end, next) = match memchr(b'\n', tail(body, pos)) {
            Some(p) => (pos + p, pos + p + 1),
            None => (body.len(), body.len()),
        };
        let mut end = raw_end;
        if end > pos && body.get(end - 1) == Some(&b'\r') {
            end -= 1;
        }
        let line = sub(body, pos, end);
        pos = next;
        line_no += 1;
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let ln = line_no;
        let ty = line.first().copied().unwrap_or(0);
        if line.get(1) != Some(&b'=') || !ty.is_ascii_alphabetic() {
            return Err(SdpError::MalformedLine { line: ln });
        }
        let value = tail(line, 2);
        if !seen_version {
            if ty != b'v' {
                return Err(SdpError::MissingVersion);
            }
            if value != b"0" {
                return Err(SdpError::UnsupportedVersion { line: ln });
            }
            seen_version = true;
            continue;
        }
        let text = || std::str::from_utf8(value).map_err(|_| SdpError::NotUtf8 { line: ln });
        let in_media = !sdp.media.is_empty();
        match ty {
            b'v' => return Err(SdpError::MalformedLine { line: ln }),
            b'o' if !in_media => sdp.origin = Some(parse_origin(text()?, ln)?),
            b's' if !in_media => sdp.session_name = value,
            b't' if !in_media => {
                let t = parse_timing(text()?, ln)?;
                sdp.timing.get_or_insert(t);
            }
            b'c' => {
                let c = parse_connection(text()?, ln)?;
                match sdp.media.last_mut() {
                    Some(m) => {
                        m.connection.get_or_insert(c);
                    }
                    None => sdp.connection = Some(c),
                }
            }
            b'm' => {
                if sdp.media.len() >= limits.max_media {
                    return Err(SdpError::TooManyMedia {
                        max: limits.max_media,
                    });
                }
                sdp.media.push(parse_media(text()?, ln, limits)?);
            }
            b'a' => {
                let attr = parse_attribute(value, ln)?;
                match sdp.media.last_mut() {
                    Some(m) => {
                        if m.attributes.len() >= limits.max_attributes {
                            return Err(SdpError::TooManyAttributes {
                                max: limits.max_attributes,
                            });
                        }
                        m.attributes.push(attr);
                        apply_media_attribute(m, attr, ln)?;
                    }
                    None => {
                        if sdp.attributes.len() >= limits.max_attributes {
                            return Err(SdpError::TooManyAttributes {
                                max: limits.max_attributes,
                            });
                        }
                        sdp.attributes.push(attr);
                        if let Some(d) = direction_of(attr.name) {
                            sdp.direction = Some(d);
                        }
                    }
                }
            }
            b'o' | b's' | b't' => return Err(SdpError::MalformedLine { line: ln }),
            // i, u, e, p, b, r, z, k and unknown types carry nothing a media binder needs.
            _ => {}
        }
    }
    if !seen_version {
        return Err(SdpError::Empty);
    }
    Ok(sdp)
}

fn fields(s: &str) -> std::str::SplitAsciiWhitespace<'_> {
    s.split_ascii_whitespace()
}

fn parse_addr_type(s: &str) -> Option<AddrType> {
    if s.eq_ignore_ascii_case("IP4") {
        Some(AddrType::Ip4)
    } else if s.eq_ignore_ascii_case("IP6") {
        Some(AddrType::Ip6)
    } else {
        None
    }
}

fn parse_address(t: AddrType, s: &str) -> Option<ConnAddress<'_>> {
    match t {
        AddrType::Ip4 => {
            if let Ok(a) = s.parse::<std::net::Ipv4Addr>() {
                return Some(ConnAddress::Ip(IpAddr::V4(a)));
            }
        }
        AddrType::Ip6 => {
            if let Some(a) = parse_ipv6_lenient(s) {
                return Some(ConnAddress::Ip(IpAddr::V6(a)));
            }
        }
    }
    // A name must look like one: not an address of the wrong family, not a bad dotted quad.
    let looks_numeric = s.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    match Host::parse(s) {
        Some(Host::Name(n)) if !looks_numeric => Some(ConnAddress::Fqdn(n)),
        _ => None,
    }
}

fn parse_connection(s: &str, ln: usize) -> Result<Connection<'_>, SdpError> {
    let err = SdpError::MalformedConnection { line: ln };
    let mut f = fields(s);
    let (Some(net), Some(at), Some(addr), None) = (f.next(), f.next(), f.next(), f.next()) else {
        return Err(err);
    };
    if !net.eq_ignore_ascii_case("IN") {
        return Err(err);
    }
    let addr_type = parse_addr_type(at).ok_or(err)?;
    let mut parts = addr.split('/');
    let base = parts.next().unwrap_or("");
    let address = parse_address(addr_type, base).ok_or(err)?;
    let first = parts.next();
    let second = parts.next();
    if parts.next().is_some() {
        return Err(err);
    }
    // Digits only: `str::parse` would also take a leading '+'.
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    let num = |p: &str| p.parse::<u32>().ok().filter(|_| digits(p));
    let (ttl, count) = match addr_type {
        // IP4 multicast: addr/ttl[/count] (RFC 8866 §5.7).
        AddrType::Ip4 => {
            let ttl = match first {
                Some(t) if digits(t) => Some(t.parse::<u8>().map_err(|_| err)?),
                Some(_) => return Err(err),
                None => None,
            };
            let count = match second {
                Some(c) => Some(num(c).filter(|&n| n > 0).ok_or(err)?),
                None => None,
            };
            (ttl, count)
        }
        // IP6 multicast has no TTL: addr[/count].
        AddrType::Ip6 => {
            if second.is_some() {
                return Err(err);
            }
            let count = match first {
                Some(c) => Some(num(c).filter(|&n| n > 0).ok_or(err)?),
                None => None,
            };
            (None, count)
        }
    };
    Ok(Connection {
        addr_type,
        address,
        ttl,
        count,
    })
}

fn parse_origin(s: &str, ln: usize) -> Result<Origin<'_>, SdpError> {
    let err = SdpError::MalformedOrigin { line: ln };
    let mut f = fields(s);
    let (
        Some(username),
        Some(session_id),
        Some(session_version),
        Some(net),
        Some(at),
        Some(addr),
        None,
    ) = (
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
        f.next(),
    )
    else {
        return Err(err);
    };
    if !net.eq_ignore_ascii_case("IN") {
        return Err(err);
    }
    let addr_type = parse_addr_type(at).ok_or(err)?;
    let address = parse_address(addr_type, addr).ok_or(err)?;
    Ok(Origin {
        username,
        session_id,
        session_version,
        addr_type,
        address,
    })
}

fn parse_timing(s: &str, ln: usize) -> Result<Timing, SdpError> {
    let err = SdpError::MalformedTiming { line: ln };
    let mut f = fields(s);
    let (Some(a), Some(b), None) = (f.next(), f.next(), f.next()) else {
        return Err(err);
    };
    let num = |x: &str| {
        if x.bytes().all(|c| c.is_ascii_digit()) {
            x.parse::<u64>().map_err(|_| err)
        } else {
            Err(err)
        }
    };
    Ok(Timing {
        start: num(a)?,
        stop: num(b)?,
    })
}

/// Parses a port field: digits only; above 65535 is out of range, never wrapped.
fn parse_port_field(s: &str, ln: usize) -> Result<u16, SdpError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SdpError::MalformedMedia { line: ln });
    }
    let n = super::lex::parse_u64(s.as_bytes()).ok_or(SdpError::PortOutOfRange { line: ln })?;
    u16::try_from(n).map_err(|_| SdpError::PortOutOfRange { line: ln })
}

fn parse_media<'a>(s: &'a str, ln: usize, limits: &SdpLimits) -> Result<Media<'a>, SdpError> {
    let err = SdpError::MalformedMedia { line: ln };
    let mut f = fields(s);
    let (Some(kind), Some(port_field), Some(proto)) = (f.next(), f.next(), f.next()) else {
        return Err(err);
    };
    let (port, port_count) = match port_field.split_once('/') {
        Some((p, n)) => {
            let n = parse_port_field(n, ln)?;
            if n == 0 {
                return Err(err);
            }
            (parse_port_field(p, ln)?, Some(n))
        }
        None => (parse_port_field(port_field, ln)?, None),
    };
    let rtp = is_rtp_proto(proto);
    let mut formats = Vec::new();
    for fmt in f {
        if formats.len() >= limits.max_payload_types {
            return Err(SdpError::TooManyPayloadTypes {
                max: limits.max_payload_types,
            });
        }
        if rtp && parse_pt(fmt).is_none() {
            return Err(SdpError::BadPayloadType { line: ln });
        }
        formats.push(fmt);
    }
    Ok(Media {
        kind: MediaKind::parse(kind),
        port,
        port_count,
        proto,
        formats,
        connection: None,
        direction: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        rtcp: None,
        rtcp_mux: false,
        ptime: None,
        attributes: Vec::new(),
    })
}

/// An RTP payload type: 0..=127 in decimal.
fn parse_pt(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u8>().ok().filter(|&p| p <= 127)
}

fn parse_attribute(value: &[u8], ln: usize) -> Result<Attribute<'_>, SdpError> {
    let (name, val) = match memchr(b':', value) {
        Some(p) => (sub(value, 0, p), Some(tail(value, p + 1))),
        None => (value, None),
    };
    let name = std::str::from_utf8(name).map_err(|_| SdpError::NotUtf8 { line: ln })?;
    if name.is_empty()
        || name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(SdpError::MalformedLine { line: ln });
    }
    Ok(Attribute { name, value: val })
}

fn direction_of(name: &str) -> Option<Direction> {
    match name {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

fn apply_media_attribute<'a>(
    m: &mut Media<'a>,
    a: Attribute<'a>,
    ln: usize,
) -> Result<(), SdpError> {
    if let Some(d) = direction_of(a.name) {
        m.direction = Some(d);
        return Ok(());
    }
    let text = |e: SdpError| -> Result<&'a str, SdpError> {
        let v = a.value.ok_or(e)?;
        std::str::from_utf8(v).map_err(|_| SdpError::NotUtf8 { line: ln })
    };
    match a.name {
        "rtpmap" => m.rtpmaps.push(parse_rtpmap(
            text(SdpError::MalformedRtpmap { line: ln })?,
            ln,
        )?),
        "fmtp" => {
            let v = text(SdpError::MalformedFmtp { line: ln })?.trim();
            let (format, params) = v.split_once(' ').unwrap_or((v, ""));
            if format.is_empty() {
                return Err(SdpError::MalformedFmtp { line: ln });
            }
            m.fmtps.push(Fmtp {
                format,
                params: params.trim(),
            });
        }
        "rtcp" => m.rtcp = Some(parse_rtcp(text(SdpError::MalformedRtcp { line: ln })?, ln)?),
        "rtcp-mux" => m.rtcp_mux = true,
        "ptime" => {
            m.ptime = Some(parse_ptime(
                text(SdpError::MalformedPtime { line: ln })?,
                ln,
            )?)
        }
        _ => {}
    }
    Ok(())
}

fn parse_rtpmap(v: &str, ln: usize) -> Result<RtpMap<'_>, SdpError> {
    let err = SdpError::MalformedRtpmap { line: ln };
    let v = v.trim();
    let (pt, rest) = v.split_once(' ').ok_or(err)?;
    let payload_type = parse_pt(pt).ok_or(SdpError::BadPayloadType { line: ln })?;
    let rest = rest.trim();
    let mut parts = rest.split('/');
    let encoding = parts.next().unwrap_or("");
    if encoding.is_empty() || encoding.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(err);
    }
    let clock_rate = match parts.next() {
        Some(c) => Some(c.parse::<u32>().map_err(|_| err)?),
        None => None,
    };
    let channels = match parts.next() {
        Some(c) => Some(c.parse::<u16>().map_err(|_| err)?),
        None => None,
    };
    if parts.next().is_some() {
        return Err(err);
    }
    Ok(RtpMap {
        payload_type,
        encoding,
        clock_rate,
        channels,
    })
}

fn parse_rtcp(v: &str, ln: usize) -> Result<Rtcp<'_>, SdpError> {
    let err = SdpError::MalformedRtcp { line: ln };
    let v = v.trim();
    let (port_s, rest) = match v.split_once(' ') {
        Some((p, r)) => (p, Some(r.trim())),
        None => (v, None),
    };
    let port = match parse_port_field(port_s, ln) {
        Ok(p) => p,
        Err(SdpError::PortOutOfRange { line }) => return Err(SdpError::PortOutOfRange { line }),
        Err(_) => return Err(err),
    };
    let connection = match rest {
        Some(r) if !r.is_empty() => Some(parse_connection(r, ln).map_err(|_| err)?),
        _ => None,
    };
    Ok(Rtcp { port, connection })
}

fn parse_ptime(v: &str, ln: usize) -> Result<u32, SdpError> {
    let err = SdpError::MalformedPtime { line: ln };
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(err);
    }
    int.parse::<u32>().map_err(|_| err)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Sdp<'_>, SdpError> {
        parse(s.as_bytes(), &SdpLimits::default())
    }

    fn ip(s: &str) -> ConnAddress<'static> {
        ConnAddress::Ip(s.parse().unwrap())
    }

    /// RFC 4566 §5 example session description.
    const RFC4566: &str = "v=0\r\n\
o=jdoe 2890844526 2890842807 IN IP4 10.47.16.5\r\n\
s=SDP Seminar\r\n\
i=A Seminar on the session description protocol\r\n\
u=http://www.example.com/seminars/sdp.pdf\r\n\
e=j.doe@example.com (Jane Doe)\r\n\
c=IN IP4 224.2.17.12/127\r\n\
t=2873397496 2873404696\r\n\
a=recvonly\r\n\
m=audio 49170 RTP/AVP 0\r\n\
m=video 51372 RTP/AVP 99\r\n\
a=rtpmap:99 h263-1998/90000\r\n";

    #[test]
    fn rfc4566_example() {
        let s = p(RFC4566).unwrap();
        let o = s.origin.unwrap();
        assert_eq!(o.username, "jdoe");
        assert_eq!(o.session_id, "2890844526");
        assert_eq!(o.session_version, "2890842807");
        assert_eq!(o.address, ip("10.47.16.5"));
        assert_eq!(s.session_name, b"SDP Seminar");
        let c = s.connection.unwrap();
        assert_eq!(c.address, ip("224.2.17.12"));
        assert_eq!(c.ttl, Some(127));
        assert_eq!(c.count, None);
        assert_eq!(
            s.timing,
            Some(Timing {
                start: 2873397496,
                stop: 2873404696
            })
        );
        assert_eq!(s.direction, Some(Direction::RecvOnly));
        assert_eq!(s.media.len(), 2);
        let a = &s.media[0];
        assert_eq!(a.kind, MediaKind::Audio);
        assert_eq!(a.port, 49170);
        assert_eq!(a.proto, "RTP/AVP");
        assert_eq!(a.formats, vec!["0"]);
        assert_eq!(
            a.codec(0),
            Some(Codec {
                encoding: "PCMU",
                clock_rate: Some(8000),
                channels: Some(1)
            })
        );
        assert_eq!(s.direction_for(a), Direction::RecvOnly);
        assert_eq!(s.connection_for(a).unwrap().address, ip("224.2.17.12"));
        assert_eq!(a.rtcp_port(), Some(49171));
        let v = &s.media[1];
        assert_eq!(v.kind, MediaKind::Video);
        assert_eq!(v.port, 51372);
        assert_eq!(
            v.codec(99),
            Some(Codec {
                encoding: "h263-1998",
                clock_rate: Some(90000),
                channels: None
            })
        );
        assert_eq!(v.codec(98), None);
    }

    /// RFC 8866 §5 example (documentation addresses, IPv6 media).
    #[test]
    fn rfc8866_example() {
        let s = p("v=0\n\
o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\n\
s=Call to John Smith\n\
i=SDP Offer #1\n\
u=http://www.jdoe.example.com/home.html\n\
e=Jane Doe <jane@jdoe.example.com>\n\
p=+1 617 555-6011\n\
c=IN IP4 198.51.100.1\n\
t=0 0\n\
m=audio 49170 RTP/AVP 0\n\
m=audio 49180 RTP/AVP 0\n\
m=video 51372 RTP/AVP 99\n\
c=IN IP6 2001:db8::2\n\
a=rtpmap:99 h263-1998/90000\n")
        .unwrap();
        assert_eq!(s.media.len(), 3);
        assert_eq!(
            s.connection_for(&s.media[1]).unwrap().address,
            ip("198.51.100.1")
        );
        assert_eq!(
            s.connection_for(&s.media[2]).unwrap().address,
            ip("2001:db8::2")
        );
        assert_eq!(s.media[2].connection.unwrap().addr_type, AddrType::Ip6);
    }

    #[test]
    fn attributes_and_helpers() {
        let s = p("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=sendonly\r\n\
m=audio 5004 RTP/SAVP 8 9 18 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n\
a=rtcp:5010 IN IP6 2001:db8::5\r\na=ptime:20.0\r\na=inactive\r\n\
m=audio 6000 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\n\
m=video 0 RTP/AVP 31\r\n")
        .unwrap();
        let a = &s.media[0];
        assert_eq!(a.payload_types().collect::<Vec<_>>(), vec![8, 9, 18, 101]);
        assert_eq!(
            a.codec(9),
            Some(Codec {
                encoding: "G722",
                clock_rate: Some(8000),
                channels: Some(1)
            })
        );
        assert_eq!(a.codec(18).unwrap().encoding, "G729");
        assert_eq!(a.telephone_event_pt(), Some(101));
        assert_eq!(
            a.fmtps,
            vec![Fmtp {
                format: "101",
                params: "0-15"
            }]
        );
        assert_eq!(a.rtcp_port(), Some(5010));
        assert_eq!(s.rtcp_address_for(a), Some(ip("2001:db8::5")));
        assert_eq!(a.ptime, Some(20));
        assert_eq!(s.direction_for(a), Direction::Inactive);
        let b = &s.media[1];
        assert_eq!(b.proto, "UDP/TLS/RTP/SAVPF");
        assert!(b.is_rtp());
        assert_eq!(
            b.codec(111),
            Some(Codec {
                encoding: "opus",
                clock_rate: Some(48000),
                channels: Some(2)
            })
        );
        assert_eq!(b.rtcp_port(), Some(6000));
        assert_eq!(s.direction_for(b), Direction::SendOnly);
        assert_eq!(s.rtcp_address_for(b), Some(ip("192.0.2.1")));
        let v = &s.media[2];
        assert!(v.is_disabled());
        assert_eq!(v.rtcp_port(), None);
    }

    #[test]
    fn connection_forms() {
        let c = parse_connection("IN IP4 224.2.1.1/127/3", 1).unwrap();
        assert_eq!((c.ttl, c.count), (Some(127), Some(3)));
        let c = parse_connection("IN IP6 ff15::101/3", 1).unwrap();
        assert_eq!((c.ttl, c.count), (None, Some(3)));
        let c = parse_connection("IN IP4 host.example.com", 1).unwrap();
        assert_eq!(c.address, ConnAddress::Fqdn("host.example.com"));
        for bad in [
            "IN IP4 2001:db8::1",
            "IN IP6 192.0.2.1",
            "IN IP4 256.1.1.1",
            "ATM NSAP x",
            "IN IP4",
            "IN IP4 1.2.3.4/300",
            "IN IP6 ff15::1/3/4",
            "IN IP4 1.2.3.4 extra",
        ] {
            assert_eq!(
                parse_connection(bad, 7),
                Err(SdpError::MalformedConnection { line: 7 }),
                "{bad}"
            );
        }
    }

    #[test]
    fn ports_never_wrap() {
        assert_eq!(
            p("v=0\r\nm=audio 65536 RTP/AVP 0\r\n"),
            Err(SdpError::PortOutOfRange { line: 2 })
        );
        assert_eq!(
            p("v=0\r\nm=audio 99999999999999999999999 RTP/AVP 0\r\n"),
            Err(SdpError::PortOutOfRange { line: 2 })
        );
        assert_eq!(
            p("v=0\r\nm=audio -1 RTP/AVP 0\r\n"),
            Err(SdpError::MalformedMedia { line: 2 })
        );
        assert_eq!(
            p("v=0\r\nm=audio 65535 RTP/AVP 0\r\n").unwrap().media[0].rtcp_port(),
            None
        );
        assert_eq!(
            p("v=0\r\nm=audio 4000 RTP/AVP 0\r\na=rtcp:70000\r\n"),
            Err(SdpError::PortOutOfRange { line: 3 })
        );
        let s = p("v=0\r\nm=video 49170/2 RTP/AVP 31\r\n").unwrap();
        assert_eq!((s.media[0].port, s.media[0].port_count), (49170, Some(2)));
    }

    #[test]
    fn malformed_and_limits() {
        assert_eq!(p(""), Err(SdpError::Empty));
        assert_eq!(p("o=x\r\n"), Err(SdpError::MissingVersion));
        assert_eq!(p("v=1\r\n"), Err(SdpError::UnsupportedVersion { line: 1 }));
        assert_eq!(
            p("v=0\r\nbogus\r\n"),
            Err(SdpError::MalformedLine { line: 2 })
        );
        assert_eq!(
            p("v=0\r\nm=audio 1 RTP/AVP 128\r\n"),
            Err(SdpError::BadPayloadType { line: 2 })
        );
        assert_eq!(
            p("v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0\r\n"),
            Err(SdpError::MalformedRtpmap { line: 3 })
        );
        assert_eq!(
            p("v=0\r\nm=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU/x\r\n"),
            Err(SdpError::MalformedRtpmap { line: 3 })
        );
        assert_eq!(
            p("v=0\r\nm=audio 1 RTP/AVP 0\r\na=ptime:x\r\n"),
            Err(SdpError::MalformedPtime { line: 3 })
        );
        assert_eq!(
            p("v=0\r\nt=a b\r\n"),
            Err(SdpError::MalformedTiming { line: 2 })
        );
        assert_eq!(
            p("v=0\r\no=a b c\r\n"),
            Err(SdpError::MalformedOrigin { line: 2 })
        );
        assert_eq!(
            p("v=0\r\nm=audio\r\n"),
            Err(SdpError::MalformedMedia { line: 2 })
        );
        // Non-RTP formats are free tokens.
        assert_eq!(
            p("v=0\r\nm=application 9 UDP/BFCP *\r\n").unwrap().media[0].formats,
            vec!["*"]
        );
        let l = SdpLimits {
            max_media: 1,
            max_payload_types: 2,
            max_attributes: 1,
        };
        assert_eq!(
            parse(b"v=0\nm=audio 1 RTP/AVP 0\nm=audio 2 RTP/AVP 0\n", &l),
            Err(SdpError::TooManyMedia { max: 1 })
        );
        assert_eq!(
            parse(b"v=0\nm=audio 1 RTP/AVP 0 8 9\n", &l),
            Err(SdpError::TooManyPayloadTypes { max: 2 })
        );
        assert_eq!(
            parse(b"v=0\na=x\na=y\n", &l),
            Err(SdpError::TooManyAttributes { max: 1 })
        );
        // Latin-1 in free text is fine.
        assert_eq!(
            p("v=0\r\ns=\u{e9}\r\n").unwrap().session_name,
            "\u{e9}".as_bytes()
        );
        assert!(parse(b"v=0\r\ns=\xe9\r\n", &SdpLimits::default()).is_ok());
    }

    #[test]
    fn static_table() {
        assert_eq!(static_codec(0).unwrap().encoding, "PCMU");
        assert_eq!(static_codec(3).unwrap().encoding, "GSM");
        assert_eq!(static_codec(4).unwrap().encoding, "G723");
        assert_eq!(static_codec(8).unwrap().encoding, "PCMA");
        assert_eq!(static_codec(9).unwrap().clock_rate, Some(8000));
        assert_eq!(static_codec(18).unwrap().encoding, "G729");
        assert_eq!(static_codec(34).unwrap().clock_rate, Some(90000));
        assert_eq!(static_codec(2), None);
        assert_eq!(static_codec(96), None);
    }
}
