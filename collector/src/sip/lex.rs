//! Lexical rules shared by the SIP header parsers (RFC 3261 §25.1: token, LWS, quoted-string,
//! comma-separated lists).
//!
//! Header values are views into the message, so a folded value still holds its CRLF and the
//! leading whitespace of the continuation line. RFC 3261 §7.3.1 makes a fold equal to one SP;
//! here CR and LF simply count as whitespace inside a value, which has the same effect
//! without copying.
use std::borrow::Cow;

/// SP or HTAB.
#[inline]
pub(crate) fn is_wsp(b: u8) -> bool {
    matches!(b, b' ' | b'\t')
}

/// Whitespace inside a (possibly folded) header value.
#[inline]
pub(crate) fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// RFC 3261 `token` characters, as a table: header names and parameters are scanned with
/// it byte by byte on the hot path.
#[expect(
    clippy::indexing_slicing,
    reason = "const initialiser, i < 256 indexes a [bool; 256]"
)]
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    t
};

/// RFC 3261 `token` character.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    // A u8 always indexes a 256-entry table; the optimiser drops the check.
    TOKEN.get(usize::from(b)).copied().unwrap_or(false)
}

/// The sub-slice `s[a..b]`, or empty when out of range.
#[inline]
pub(crate) fn sub(s: &[u8], a: usize, b: usize) -> &[u8] {
    s.get(a..b).unwrap_or(&[])
}

/// The sub-slice `s[a..]`, or empty when out of range.
#[inline]
pub(crate) fn tail(s: &[u8], a: usize) -> &[u8] {
    s.get(a..).unwrap_or(&[])
}

/// The sub-string `s[a..b]`, or empty when out of range or not on a char boundary.
#[inline]
pub(crate) fn sub_str(s: &str, a: usize, b: usize) -> &str {
    s.get(a..b).unwrap_or("")
}

/// The byte at `i`, or 0 past the end (0 is never a delimiter we look for).
#[inline]
pub(crate) fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

/// Index of the first non-LWS byte at or after `i`.
#[inline]
pub(crate) fn skip_lws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_lws(b)) {
        i += 1;
    }
    i
}

/// Index just past the run of token characters starting at `i`.
#[inline]
pub(crate) fn token_end(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_token(b)) {
        i += 1;
    }
    i
}

/// `s` without leading and trailing LWS.
pub(crate) fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |p| p + 1);
    sub(s, start, end)
}

/// True when the whole slice is non-empty and made of token characters.
pub(crate) fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Given `s[i] == '"'`, the index just past the closing quote of the quoted-string
/// (RFC 3261 `quoted-string`, with `\` quoted-pairs), or `None` when it is unterminated.
pub(crate) fn quoted_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match *s.get(j)? {
            b'"' => return Some(j + 1),
            b'\\' => {
                // A quoted-pair may escape any octet except CR and LF.
                if matches!(s.get(j + 1)?, b'\r' | b'\n') {
                    return None;
                }
                j += 2;
            }
            _ => j += 1,
        }
    }
}

/// Resolves `\` quoted-pairs of the inside of a quoted-string.
pub(crate) fn unescape_quoted(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(b);
        }
    }
    Cow::Owned(out)
}

/// Collapses folded whitespace (any LWS run containing CR or LF) into one SP, as
/// RFC 3261 §7.3.1 says a receiver may.
pub(crate) fn unfold(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if is_lws(b) {
            let end = skip_lws(raw, i);
            let run = sub(raw, i, end);
            if run.iter().any(|&c| c == b'\r' || c == b'\n') {
                out.push(b' ');
            } else {
                out.extend_from_slice(run);
            }
            i = end;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// Parses an unsigned decimal number made only of ASCII digits (leading zeros allowed, as in
/// RFC 4475 §3.1.1.1), refusing empty input and overflow.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Distinguishes "not a number" from "a number too large for its field".
pub(crate) enum NumError {
    /// Empty or not all digits.
    Bad,
    /// All digits, but larger than the target type.
    Range,
}

/// Parses digits into `u32`, telling syntax errors from overflow.
pub(crate) fn parse_u32_checked(s: &[u8]) -> Result<u32, NumError> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(NumError::Bad);
    }
    parse_u64(s)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(NumError::Range)
}

/// Parses a port number (1 to 5 digits, at most 65535).
pub(crate) fn parse_port(s: &[u8]) -> Option<u16> {
    if s.len() > 5 {
        return None;
    }
    parse_u64(s).and_then(|v| u16::try_from(v).ok())
}

/// Splits a header value into the elements of a comma-separated list (RFC 3261 §7.3.1),
/// ignoring commas inside quoted strings and inside `<...>`. Elements are LWS-trimmed; an
/// empty element (as in `a,,b`) is yielded as an empty slice so callers can reject it.
#[derive(Debug, Clone)]
pub struct ListIter<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> ListIter<'a> {
    /// Iterates the elements of `value`.
    pub fn new(value: &'a [u8]) -> Self {
        ListIter {
            s: value,
            pos: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let start = self.pos;
        let mut i = start;
        // Jump between the only bytes that matter: quotes, '<' and commas.
        while let Some(off) = memchr::memchr3(b'"', b'<', b',', tail(self.s, i)) {
            let j = i + off;
            match at(self.s, j) {
                b'"' => {
                    // An unterminated quote swallows the rest; the element parser reports it.
                    i = quoted_end(self.s, j).unwrap_or(self.s.len());
                }
                b'<' => {
                    i = memchr::memchr(b'>', tail(self.s, j)).map_or(self.s.len(), |p| j + p + 1);
                }
                _ => {
                    self.pos = j + 1;
                    return Some(trim_lws(sub(self.s, start, j)));
                }
            }
        }
        self.done = true;
        Some(trim_lws(tail(self.s, start)))
    }
}

/// Decodes RFC 3986 `%HH` escapes. Invalid escapes (such as `%Z%45` in RFC 4475 §3.1.1.5)
/// are kept literally.
pub fn pct_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b == b'%' {
            if let (Some(h), Some(l)) = (hex_val(at(s, i + 1)), hex_val(at(s, i + 2))) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Walks the decoded bytes of a %-escaped string without allocating.
struct PctBytes<'a> {
    s: &'a [u8],
    i: usize,
}

impl Iterator for PctBytes<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let b = *self.s.get(self.i)?;
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                hex_val(at(self.s, self.i + 1)),
                hex_val(at(self.s, self.i + 2)),
            ) {
                self.i += 3;
                return Some(h << 4 | l);
            }
        }
        self.i += 1;
        Some(b)
    }
}

/// Compares two %-escaped strings after decoding (RFC 3261 §19.1.4: `sip:%61lice` equals
/// `sip:alice`), case-sensitively.
pub fn pct_eq(a: &[u8], b: &[u8]) -> bool {
    PctBytes { s: a, i: 0 }.eq(PctBytes { s: b, i: 0 })
}

/// Compares two %-escaped strings after decoding, ignoring ASCII case (for URI parameter
/// names and host names).
pub fn pct_eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    PctBytes { s: a, i: 0 }
        .map(|c| c.to_ascii_lowercase())
        .eq(PctBytes { s: b, i: 0 }.map(|c| c.to_ascii_lowercase()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v = br#""a,b" <sip:x@y;p=1,2>;q=1 , <sip:z> ,, last"#;
        let parts: Vec<&[u8]> = ListIter::new(v).collect();
        assert_eq!(
            parts,
            vec![
                &br#""a,b" <sip:x@y;p=1,2>;q=1"#[..],
                &b"<sip:z>"[..],
                &b""[..],
                &b"last"[..]
            ]
        );
    }

    #[test]
    fn quoted_strings_with_escapes() {
        // RFC 4475 §3.1.1.1: "J Rosenberg \\\"" ends after the escaped quote.
        let s = br#""J Rosenberg \\\""   <sip:x>"#;
        let end = quoted_end(s, 0).unwrap();
        assert_eq!(&s[..end], br#""J Rosenberg \\\"""#);
        assert_eq!(&*unescape_quoted(&s[1..end - 1]), br#"J Rosenberg \""#);
        assert_eq!(quoted_end(br#""open"#, 0), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(&*pct_decode(b"%75se%72"), b"user");
        assert_eq!(&*pct_decode(b"%Z%45"), b"%ZE");
        assert!(pct_eq(b"%75se%72", b"user"));
        assert!(!pct_eq(b"%75se%72", b"User"));
        assert!(pct_eq_ignore_case(b"%6C%72", b"LR"));
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"0068"), Some(68));
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
        assert_eq!(parse_port(b"65535"), Some(65535));
        assert_eq!(parse_port(b"65536"), None);
        assert_eq!(parse_port(b""), None);
        assert!(matches!(
            parse_u32_checked(b"4294967296"),
            Err(NumError::Range)
        ));
        assert!(matches!(parse_u32_checked(b"12a"), Err(NumError::Bad)));
    }

    #[test]
    fn unfolding() {
        assert_eq!(&*unfold(b"a\r\n  b c"), b"a b c");
        assert_eq!(&*unfold(b"a  b"), b"a  b");
    }
}
