//! SIP message parsing (RFC 3261 §7 message format, §20 header fields, §25 grammar) and SDP
//! parsing (RFC 8866, in [`sdp`]): pure functions over bytes, no I/O, no clock, no logging.
//!
//! Modelled on ezk `sip-types`: a [`SipMessage`] keeps borrowing the buffer it was parsed
//! from; header values are views; names match case-insensitively and know their compact
//! forms; typed headers are parsed lazily, except the few every message must carry, which
//! [`parse_message`] validates up front so that a message that returns `Ok` can be
//! attributed to a call. Missing and malformed headers are different errors.
//!
//! Transports: [`parse_message`] takes one datagram (bytes after Content-Length are
//! ignored); [`frame_stream`]/[`frame_len`] cut messages out of a TCP/TLS/WebSocket byte
//! stream for the reassembler. Every bound is a [`SipLimits`] field and every violation its
//! own [`SipError`] variant with a static [`SipError::reason`] for metrics.
//!
//! Liberal readings follow RFC 4475 where it allows them (see the module docs of
//! [`name_addr`] and the start-line parser); everything RFC 4475 says to reject is rejected.
//! One reading goes beyond the RFCs because deployed devices need it: a bare IPv6 host
//! written out in all eight groups (`sip:u@fe80:0:0:0:21a:a0ff:fe07:32e0:5060`) is accepted,
//! while a compressed one (`sip:2001:db8::10`, RFC 5118 §4.2) stays an error.
#![deny(clippy::indexing_slicing, clippy::panic)]

mod error;
mod framing;
mod header;
pub mod lex;
mod message;
pub mod multipart;
pub mod name_addr;
mod params;
pub mod sdp;
mod typed;
pub mod uri;
mod via;

pub use error::{SipError, UriError, ValueError};
pub use framing::{frame_len, frame_stream, stream_framer, StreamFrame};
pub use header::{Header, HeaderName};
pub use lex::{pct_decode, pct_eq, ListIter};
pub use message::{parse_message, RequestLine, SipMessage, StartLine, StatusLine};
pub use name_addr::{Contact, DisplayName, NameAddr};
pub use params::{Param, ParamIter, Params};
pub use typed::{
    parse_content_length, parse_max_forwards, parse_u32_value, CSeq, MediaType, Method,
    PChargingVector, Reason, ReasonProtocol, Refresher, SessionExpires, SessionId,
};
pub use uri::{Host, Scheme, Uri, UriParams};
pub use via::{Transport, Via};

/// Bounds on what one message may make the parser read or hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipLimits {
    /// Largest message (datagram, or stream frame) in bytes; default 64 KiB, the UDP limit.
    pub max_message_size: usize,
    /// Most header fields in one message; default 256.
    pub max_headers: usize,
    /// Longest start line or header field (including its continuation lines) in bytes;
    /// default 8 KiB.
    pub max_header_line_len: usize,
    /// Deepest multipart nesting searched for SDP; default 3.
    pub max_multipart_depth: usize,
}

impl Default for SipLimits {
    fn default() -> Self {
        SipLimits {
            max_message_size: 64 * 1024,
            max_headers: 256,
            max_header_line_len: 8 * 1024,
            max_multipart_depth: 3,
        }
    }
}
