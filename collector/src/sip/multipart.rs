//! Multipart bodies (RFC 2046 §5.1: multipart/mixed, multipart/alternative, ...) as lazy
//! views, and extraction of the `application/sdp` part (RFC 5621 §3).
//!
//! Delimiters are searched as bytes (`LF "--" boundary`), never by splitting lines, so a
//! binary part holding bare LF bytes is left intact (RFC 4475 §3.1.1.11).
use memchr::memmem;

use super::error::SipError;
use super::header::{HeaderLines, HeaderName};
use super::lex::{at, is_wsp, sub, tail};
use super::typed::MediaType;

/// Header lines of a body part are bounded like message header lines.
const PART_MAX_LINE: usize = 8 * 1024;

/// One body part: its MIME header block and its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPart<'a> {
    headers: &'a [u8],
    body: &'a [u8],
}

impl<'a> BodyPart<'a> {
    /// The raw header block of the part (without the empty line).
    pub fn raw_headers(&self) -> &'a [u8] {
        self.headers
    }

    /// The part content.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The first value of a header of this part (names case-insensitive, compact forms
    /// known).
    pub fn header(&self, name: HeaderName) -> Result<Option<&'a [u8]>, SipError> {
        if self.headers.is_empty() {
            return Ok(None);
        }
        // The block still ends with its empty line, so the scan stops there.
        let mut lines = HeaderLines::new(self.headers, 0, PART_MAX_LINE);
        loop {
            match lines.next_line() {
                Ok(Some(l)) if HeaderName::from_bytes(l.name) == Some(name) => {
                    return Ok(Some(l.value))
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(SipError::UnterminatedHeaders) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// The part's Content-Type (RFC 2046 default `text/plain` is reported as `None`).
    pub fn content_type(&self) -> Result<Option<MediaType<'a>>, SipError> {
        match self.header(HeaderName::ContentType)? {
            None => Ok(None),
            Some(v) => MediaType::parse(v)
                .map(Some)
                .map_err(|e| SipError::malformed("Content-Type", e)),
        }
    }
}

/// Iterator over the parts of a multipart body.
#[derive(Debug, Clone)]
pub struct Parts<'a> {
    body: &'a [u8],
    boundary: &'a [u8],
    /// Offset just past the current `--boundary`; `None` before the first one was found.
    pos: Option<usize>,
    done: bool,
}

/// Iterates the parts of `body` delimited by `boundary` (the Content-Type parameter).
pub fn parts<'a>(body: &'a [u8], boundary: &'a str) -> Parts<'a> {
    Parts {
        body,
        boundary: boundary.as_bytes(),
        pos: None,
        done: boundary.is_empty(),
    }
}

impl<'a> Parts<'a> {
    /// Offset of the next `LF--boundary` at or after `from`, returning (LF offset, offset
    /// past the boundary).
    fn find_delimiter(&self, from: usize) -> Option<(usize, usize)> {
        let hay = tail(self.body, from);
        let mut search = 0;
        let finder_len = 3 + self.boundary.len();
        loop {
            let p = memmem::find(tail(hay, search), b"\n--")? + search;
            let b_start = p + 3;
            if sub(hay, b_start, b_start + self.boundary.len()) == self.boundary {
                return Some((from + p, from + p + finder_len));
            }
            search = p + 1;
        }
    }

    fn step(&mut self) -> Result<Option<BodyPart<'a>>, SipError> {
        let body = self.body;
        let start = match self.pos {
            Some(p) => p,
            None => {
                let blen = self.boundary.len();
                if body.starts_with(b"--") && sub(body, 2, 2 + blen) == self.boundary {
                    2 + blen
                } else {
                    self.find_delimiter(0).ok_or(SipError::BadMultipart)?.1
                }
            }
        };
        // After a delimiter: "--" closes; otherwise optional padding then a line end.
        if sub(body, start, start + 2) == b"--" {
            return Ok(None);
        }
        let mut i = start;
        while body.get(i).is_some_and(|&b| is_wsp(b)) {
            i += 1;
        }
        if at(body, i) == b'\r' {
            i += 1;
        }
        if at(body, i) != b'\n' {
            return Err(SipError::BadMultipart);
        }
        let part_start = i + 1;
        // Search from the LF just consumed, so an empty part (delimiter right after the
        // previous one) is found too.
        let (lf, next) = self
            .find_delimiter(part_start - 1)
            .ok_or(SipError::BadMultipart)?;
        // The CRLF before the delimiter belongs to the delimiter, not to the content.
        let mut part_end = lf;
        if part_end > part_start && at(body, part_end - 1) == b'\r' {
            part_end -= 1;
        }
        let part = sub(body, part_start, part_end.max(part_start));
        self.pos = Some(next);
        Ok(Some(split_part(part)?))
    }
}

/// Splits a part into its header block and content.
fn split_part(part: &[u8]) -> Result<BodyPart<'_>, SipError> {
    // No headers: the part starts with its empty line.
    if part.first() == Some(&b'\n') {
        return Ok(BodyPart {
            headers: &[],
            body: tail(part, 1),
        });
    }
    if part.starts_with(b"\r\n") {
        return Ok(BodyPart {
            headers: &[],
            body: tail(part, 2),
        });
    }
    if part.is_empty() {
        return Ok(BodyPart {
            headers: &[],
            body: &[],
        });
    }
    let mut lines = HeaderLines::new(part, 0, PART_MAX_LINE);
    while lines
        .next_line()
        .map_err(|_| SipError::BadMultipart)?
        .is_some()
    {}
    let body_start = lines.body_start().ok_or(SipError::BadMultipart)?;
    Ok(BodyPart {
        headers: sub(part, 0, body_start),
        body: tail(part, body_start),
    })
}

impl<'a> Iterator for Parts<'a> {
    type Item = Result<BodyPart<'a>, SipError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(p)) => Some(Ok(p)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Finds the SDP in a body of the given type: the body itself for `application/sdp`, or
/// the first `application/sdp` part of a multipart body, descending at most `max_depth`
/// multipart levels.
pub fn find_sdp<'a>(
    content_type: Option<&MediaType<'a>>,
    body: &'a [u8],
    max_depth: usize,
) -> Result<Option<&'a [u8]>, SipError> {
    find_sdp_at(content_type, body, 0, max_depth)
}

fn find_sdp_at<'a>(
    content_type: Option<&MediaType<'a>>,
    body: &'a [u8],
    depth: usize,
    max_depth: usize,
) -> Result<Option<&'a [u8]>, SipError> {
    let Some(ct) = content_type else {
        return Ok(None);
    };
    if ct.is("application", "sdp") {
        return Ok(Some(body));
    }
    if !ct.is_multipart() {
        return Ok(None);
    }
    if depth >= max_depth {
        return Err(SipError::MultipartTooDeep { max: max_depth });
    }
    let boundary = ct.boundary().ok_or(SipError::BadMultipart)?;
    for part in parts(body, boundary) {
        let part = part?;
        let pct = part.content_type()?;
        if let Some(sdp) = find_sdp_at(pct.as_ref(), part.body(), depth + 1, max_depth)? {
            return Ok(Some(sdp));
        }
    }
    Ok(None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    const SDP: &[u8] = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn mixed(inner: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(
            b"preamble\r\n--outer\r\nContent-Type: text/plain\r\n\r\nhello\nstill\r\n--outer\r\n",
        );
        b.extend_from_slice(inner);
        b.extend_from_slice(b"\r\n--outer--\r\nepilogue");
        b
    }

    #[test]
    fn finds_sdp_part() {
        let mut inner = b"Content-Type: application/sdp\r\n\r\n".to_vec();
        inner.extend_from_slice(SDP);
        let body = mixed(&inner);
        let ct = MediaType::parse(b"multipart/mixed; boundary=outer").unwrap();
        let all: Vec<_> = parts(&body, "outer").collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].body(), b"hello\nstill");
        assert_eq!(find_sdp(Some(&ct), &body, 3).unwrap(), Some(SDP));
        let other = MediaType::parse(b"text/plain").unwrap();
        assert_eq!(find_sdp(Some(&other), &body, 3).unwrap(), None);
        assert_eq!(find_sdp(None, &body, 3).unwrap(), None);
    }

    #[test]
    fn nested_alternative_and_depth_limit() {
        let mut alt = b"Content-Type: multipart/alternative;boundary=\"in ner\"\r\n\r\n--in ner\r\nContent-Type: application/sdp\r\n\r\n".to_vec();
        alt.extend_from_slice(SDP);
        alt.extend_from_slice(b"\r\n--in ner--");
        let body = mixed(&alt);
        let ct = MediaType::parse(b"multipart/mixed;boundary=outer").unwrap();
        assert_eq!(find_sdp(Some(&ct), &body, 2).unwrap(), Some(SDP));
        assert_eq!(
            find_sdp(Some(&ct), &body, 1),
            Err(SipError::MultipartTooDeep { max: 1 })
        );
    }

    #[test]
    fn broken_multipart() {
        let ct = MediaType::parse(b"multipart/mixed").unwrap();
        assert_eq!(
            find_sdp(Some(&ct), b"--x\r\n\r\n", 3),
            Err(SipError::BadMultipart)
        );
        let ct = MediaType::parse(b"multipart/mixed;boundary=x").unwrap();
        // No closing delimiter after the part.
        assert_eq!(
            find_sdp(Some(&ct), b"--x\r\nContent-Type: text/plain\r\n\r\nabc", 3),
            Err(SipError::BadMultipart)
        );
        assert_eq!(
            find_sdp(Some(&ct), b"no delimiter at all", 3),
            Err(SipError::BadMultipart)
        );
    }
}
