//! Error types of the SIP parser (RFC 3261 §7, §20, §25).
//!
//! Three layers: [`UriError`] says what is wrong inside a URI, [`ValueError`] what is wrong
//! inside one header value, and [`SipError`] what is wrong with the message as a whole.
//! Every [`SipError`] variant has a short static [`SipError::reason`] usable as a metrics
//! label. No error carries message bytes: identifiers must not leak through error text.
use thiserror::Error;

use super::sdp::SdpError;

/// What is wrong inside a URI (RFC 3261 §19.1, §25.1; RFC 3966 for `tel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme:` prefix, or the scheme has characters outside RFC 3986 §3.1.
    #[error("missing or invalid uri scheme")]
    BadScheme,
    /// Whitespace or a control character inside the URI.
    #[error("uri contains whitespace or a control character")]
    BadChar,
    /// The URI bytes are not UTF-8.
    #[error("uri is not valid utf-8")]
    NotUtf8,
    /// A `sip`/`sips` URI has an empty userinfo before `@`.
    #[error("empty user part in uri")]
    EmptyUser,
    /// A `sip`/`sips` URI without host, or a `tel` URI without number.
    #[error("uri has no host")]
    MissingHost,
    /// The host is neither a domain name nor an IP literal.
    #[error("invalid host in uri")]
    BadHost,
    /// The port is empty, not a number or larger than 65535.
    #[error("invalid port in uri")]
    BadPort,
    /// A `;` not followed by a parameter name.
    #[error("empty uri parameter")]
    EmptyParam,
}

/// What is wrong inside one header value (RFC 3261 §25.1 grammar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is empty where a value is required.
    #[error("empty value")]
    Empty,
    /// A part that must be text is not UTF-8.
    #[error("value is not valid utf-8")]
    NotUtf8,
    /// The URI inside the value is invalid.
    #[error("invalid uri")]
    Uri(#[from] UriError),
    /// A quoted string has no closing quote.
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    /// A `<` has no matching `>`.
    #[error("missing '>' after uri")]
    UnterminatedAngle,
    /// A quoted display name is not followed by `<uri>`.
    #[error("display name not followed by '<'")]
    BadDisplayName,
    /// `;` not followed by a parameter name.
    #[error("empty parameter name")]
    EmptyParamName,
    /// `name=` without a value.
    #[error("parameter without value after '='")]
    EmptyParamValue,
    /// Characters left over after the grammar ended.
    #[error("unexpected characters in value")]
    Trailing,
    /// A number has non-digit characters or is empty.
    #[error("invalid number")]
    BadNumber,
    /// A number does not fit its field.
    #[error("number out of range")]
    NumberOutOfRange,
    /// A token has characters outside RFC 3261 `token`.
    #[error("invalid token")]
    BadToken,
    /// The Via sent-protocol is not `name/version/transport`.
    #[error("invalid via sent-protocol")]
    BadProtocol,
    /// A host (Via sent-by, parameter) is invalid.
    #[error("invalid host")]
    BadHost,
    /// A port is empty, not a number or larger than 65535.
    #[error("invalid port")]
    BadPort,
    /// An address parameter (such as Via `received`) is not an IP address.
    #[error("invalid ip address")]
    BadAddress,
    /// A comma-separated list has an empty element.
    #[error("empty list element")]
    EmptyElement,
    /// A media type is not `type/subtype`.
    #[error("invalid media type")]
    BadMediaType,
    /// A Session-ID is not 32 hexadecimal digits (RFC 7989 §4).
    #[error("invalid session identifier")]
    BadSessionId,
    /// A required parameter is missing (such as P-Charging-Vector `icid-value`).
    #[error("missing required parameter")]
    MissingParam,
}

/// Why a SIP message, or a part of it, could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SipError {
    /// The buffer holds nothing but CR/LF (a keepalive, RFC 5626 §3.5.1) or nothing at all.
    #[error("empty message")]
    Empty,
    /// The message (or stream frame) is larger than [`super::SipLimits::max_message_size`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size seen so far, in bytes.
        len: usize,
        /// The configured limit, in bytes.
        max: usize,
    },
    /// More header fields than [`super::SipLimits::max_headers`].
    #[error("more than {max} header fields")]
    TooManyHeaders {
        /// The configured limit.
        max: usize,
    },
    /// A start line or header field (with its continuation lines) longer than
    /// [`super::SipLimits::max_header_line_len`].
    #[error("header line longer than {max} bytes")]
    HeaderLineTooLong {
        /// The configured limit, in bytes.
        max: usize,
    },
    /// Multipart bodies nested deeper than [`super::SipLimits::max_multipart_depth`].
    #[error("multipart nesting deeper than {max}")]
    MultipartTooDeep {
        /// The configured limit.
        max: usize,
    },
    /// The header section does not end with an empty line inside the datagram.
    #[error("header section not terminated by an empty line")]
    UnterminatedHeaders,
    /// The start line is neither a Request-Line nor a Status-Line (RFC 3261 §7.1, §7.2).
    #[error("malformed start line")]
    BadStartLine,
    /// The start line names a SIP version other than 2.0 (answered with 505).
    #[error("unsupported sip version")]
    UnsupportedVersion,
    /// The status code is not three digits in 100..=699.
    #[error("invalid status code")]
    BadStatusCode,
    /// The method is not a token.
    #[error("invalid method")]
    BadMethod,
    /// The Request-URI is invalid.
    #[error("invalid request-uri")]
    BadRequestUri(#[source] UriError),
    /// A header line has no name or no colon, or a continuation line has no header.
    #[error("malformed header line")]
    BadHeaderLine,
    /// A header the message must carry is absent.
    #[error("missing {name} header")]
    MissingHeader {
        /// Canonical header name.
        name: &'static str,
    },
    /// A header is present but its value does not follow its grammar.
    #[error("malformed {name} header")]
    MalformedHeader {
        /// Canonical header name.
        name: &'static str,
        /// What is wrong with the value.
        #[source]
        source: ValueError,
    },
    /// A header that must appear once appears several times (RFC 4475 §3.3.8).
    #[error("{name} header appears more than once")]
    DuplicateHeader {
        /// Canonical header name.
        name: &'static str,
    },
    /// The CSeq method differs from the request method (RFC 3261 §8.1.1.5).
    #[error("cseq method does not match the request method")]
    CSeqMethodMismatch,
    /// Content-Length is not a non-negative decimal number.
    #[error("invalid content-length")]
    BadContentLength,
    /// Several Content-Length headers with different values.
    #[error("conflicting content-length values")]
    ConflictingContentLength,
    /// Content-Length promises more bytes than the datagram holds (RFC 3261 §18.3).
    #[error("content-length {declared} exceeds the {available} bytes available")]
    BodyTruncated {
        /// The Content-Length value.
        declared: usize,
        /// Bytes present after the header section.
        available: usize,
    },
    /// A multipart body without boundary, or whose delimiters are broken (RFC 2046 §5.1.1).
    #[error("malformed multipart body")]
    BadMultipart,
    /// The SDP body is invalid.
    #[error("invalid sdp body")]
    Sdp(#[source] SdpError),
}

impl SipError {
    /// A short, stable label for metrics (for example `sip_parse_errors_total{reason=...}`).
    pub fn reason(&self) -> &'static str {
        match self {
            SipError::Empty => "empty",
            SipError::TooLarge { .. } => "too_large",
            SipError::TooManyHeaders { .. } => "too_many_headers",
            SipError::HeaderLineTooLong { .. } => "header_line_too_long",
            SipError::MultipartTooDeep { .. } => "multipart_too_deep",
            SipError::UnterminatedHeaders => "unterminated_headers",
            SipError::BadStartLine => "bad_start_line",
            SipError::UnsupportedVersion => "unsupported_version",
            SipError::BadStatusCode => "bad_status_code",
            SipError::BadMethod => "bad_method",
            SipError::BadRequestUri(_) => "bad_request_uri",
            SipError::BadHeaderLine => "bad_header_line",
            SipError::MissingHeader { .. } => "missing_header",
            SipError::MalformedHeader { .. } => "malformed_header",
            SipError::DuplicateHeader { .. } => "duplicate_header",
            SipError::CSeqMethodMismatch => "cseq_method_mismatch",
            SipError::BadContentLength => "bad_content_length",
            SipError::ConflictingContentLength => "conflicting_content_length",
            SipError::BodyTruncated { .. } => "body_truncated",
            SipError::BadMultipart => "bad_multipart",
            SipError::Sdp(e) => e.reason(),
        }
    }

    /// The canonical name of the header the error is about, if any.
    pub fn header(&self) -> Option<&'static str> {
        match self {
            SipError::MissingHeader { name }
            | SipError::MalformedHeader { name, .. }
            | SipError::DuplicateHeader { name } => Some(name),
            SipError::BadContentLength
            | SipError::ConflictingContentLength
            | SipError::BodyTruncated { .. } => Some("Content-Length"),
            SipError::CSeqMethodMismatch => Some("CSeq"),
            _ => None,
        }
    }

    pub(crate) fn malformed(name: &'static str, source: ValueError) -> Self {
        SipError::MalformedHeader { name, source }
    }
}
