//! `name-addr` / `addr-spec` values of From, To, Contact, Route and the identity headers
//! (RFC 3261 §20.10, §20.20, §20.39, §25.1).
//!
//! Liberal where RFC 4475 allows it: an unquoted display name with non-token characters
//! is taken as written (§3.1.2.15, "Bell, Alexander"), LWS just inside `<...>` is ignored
//! (§3.1.2.14), and a bare URI with `?headers` is read as if bracketed (§3.1.2.13).
use std::borrow::Cow;

use memchr::memchr;

use super::error::ValueError;
use super::lex::{at, is_lws, quoted_end, skip_lws, sub, tail, trim_lws, unescape_quoted};
use super::params::Params;
use super::uri::Uri;

/// A display name as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayName<'a> {
    raw: &'a [u8],
    quoted: bool,
}

impl<'a> DisplayName<'a> {
    /// The raw bytes: the inside of the quotes (escapes unresolved) or the unquoted tokens.
    /// Not necessarily UTF-8.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// True when the name was a quoted-string.
    pub fn is_quoted(&self) -> bool {
        self.quoted
    }

    /// The name with quoted-pair escapes resolved.
    pub fn unescaped(&self) -> Cow<'a, [u8]> {
        if self.quoted {
            unescape_quoted(self.raw)
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// The unescaped name as text, replacing invalid UTF-8.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.unescaped()).into_owned()
    }
}

/// An address with optional display name and header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    display_name: Option<DisplayName<'a>>,
    uri: Uri<'a>,
    params: Params<'a>,
    tag: Option<&'a str>,
    bracketed: bool,
}

impl<'a> NameAddr<'a> {
    /// Parses one `(name-addr / addr-spec) *(SEMI param)` element.
    pub fn parse(v: &'a [u8]) -> Result<NameAddr<'a>, ValueError> {
        let v = trim_lws(v);
        if v.is_empty() {
            return Err(ValueError::Empty);
        }
        let mut display_name = None;
        let angle = if at(v, 0) == b'"' {
            let end = quoted_end(v, 0).ok_or(ValueError::UnterminatedQuote)?;
            display_name = Some(DisplayName {
                raw: sub(v, 1, end - 1),
                quoted: true,
            });
            let i = skip_lws(v, end);
            if at(v, i) != b'<' {
                return Err(ValueError::BadDisplayName);
            }
            Some(i)
        } else {
            let lt = memchr(b'<', v);
            if let Some(lt) = lt {
                let dn = trim_lws(sub(v, 0, lt));
                if dn.contains(&b'"') {
                    return Err(ValueError::BadDisplayName);
                }
                if !dn.is_empty() {
                    display_name = Some(DisplayName {
                        raw: dn,
                        quoted: false,
                    });
                }
            }
            lt
        };
        let (uri_bytes, rest, bracketed) = match angle {
            Some(lt) => {
                let gt = memchr(b'>', tail(v, lt + 1))
                    .map(|p| p + lt + 1)
                    .ok_or(ValueError::UnterminatedAngle)?;
                (trim_lws(sub(v, lt + 1, gt)), tail(v, gt + 1), true)
            }
            None => {
                // addr-spec: the URI ends at the first ';' or whitespace, so its ';' starts
                // header parameters (RFC 3261 §20.10).
                let end = v
                    .iter()
                    .position(|&b| b == b';' || is_lws(b))
                    .unwrap_or(v.len());
                (sub(v, 0, end), tail(v, end), false)
            }
        };
        let uri = Uri::parse(uri_bytes)?;
        let rest = std::str::from_utf8(rest).map_err(|_| ValueError::NotUtf8)?;
        let mut tag = None;
        let params = Params::parse_visit(rest, |p| {
            if p.name.eq_ignore_ascii_case("tag") {
                tag = tag.or(Some(p.value));
            }
            Ok(())
        })?;
        Ok(NameAddr {
            display_name,
            uri,
            params,
            tag: tag.flatten(),
            bracketed,
        })
    }

    /// The display name, if any.
    pub fn display_name(&self) -> Option<DisplayName<'a>> {
        self.display_name
    }

    /// The address.
    pub fn uri(&self) -> &Uri<'a> {
        &self.uri
    }

    /// The header parameters after the address (such as `tag`, `q`, `expires`).
    pub fn params(&self) -> Params<'a> {
        self.params
    }

    /// The `tag` parameter (RFC 3261 §19.3), used to identify dialogs.
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }

    /// True when the address was written in `<...>`.
    pub fn is_bracketed(&self) -> bool {
        self.bracketed
    }
}

/// One Contact value (RFC 3261 §20.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `*`, meaning all bindings (REGISTER with Expires: 0).
    Star,
    /// An address with contact parameters (`q`, `expires`, ...).
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact list element.
    pub fn parse(v: &'a [u8]) -> Result<Contact<'a>, ValueError> {
        if trim_lws(v) == b"*" {
            return Ok(Contact::Star);
        }
        NameAddr::parse(v).map(Contact::Addr)
    }

    /// The address, unless this is `*`.
    pub fn addr(&self) -> Option<&NameAddr<'a>> {
        match self {
            Contact::Star => None,
            Contact::Addr(a) => Some(a),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;
    use crate::sip::uri::{Host, Scheme};

    #[test]
    fn name_addr_forms() {
        let a = NameAddr::parse(b"Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl").unwrap();
        assert_eq!(a.display_name().unwrap().raw(), b"Alice");
        assert_eq!(a.uri().user(), Some("alice"));
        assert_eq!(a.tag(), Some("9fxced76sl"));
        assert!(a.is_bracketed());

        let a = NameAddr::parse(b"sip:caller@example.net;tag=134161461246").unwrap();
        assert!(a.display_name().is_none());
        assert_eq!(a.uri().host(), Some(Host::Name("example.net")));
        assert_eq!(a.tag(), Some("134161461246"));
        assert_eq!(a.uri().params().count(), 0);

        // RFC 4475 §3.1.1.6 (lwsdisp): no LWS between display name and '<'.
        let a = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(a.display_name().unwrap().raw(), b"caller");
        assert_eq!(a.tag(), Some("323"));
    }

    #[test]
    fn quoted_display_names() {
        // RFC 4475 §3.1.1.1 (wsinv).
        let a = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        let dn = a.display_name().unwrap();
        assert!(dn.is_quoted());
        assert_eq!(&*dn.unescaped(), b"J Rosenberg \\\"");
        assert_eq!(a.tag(), Some("98asjd8"));
        // RFC 4475 §3.1.2.6 (quotbal): unterminated quote.
        assert_eq!(
            NameAddr::parse(b"\"Mr. J. User <sip:j.user@example.com>"),
            Err(ValueError::UnterminatedQuote)
        );
        assert_eq!(
            NameAddr::parse(b"\"Joe\" sip:joe@example.org"),
            Err(ValueError::BadDisplayName)
        );
    }

    #[test]
    fn liberal_forms() {
        // RFC 4475 §3.1.2.15 (baddn): unquoted name with a comma, quotes inferred.
        let a = NameAddr::parse(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").unwrap();
        assert_eq!(a.display_name().unwrap().raw(), b"Bell, Alexander");
        // RFC 4475 §3.1.2.14 (badaspec): spaces inside the brackets ignored.
        let a = NameAddr::parse(b"\"Watson, Thomas\" < sip:t.watson@example.org >").unwrap();
        assert_eq!(a.uri().as_str(), "sip:t.watson@example.org");
        // RFC 4475 §3.3.4 (unksm2): unknown schemes are addresses too.
        let a = NameAddr::parse(b"isbn:2983792873").unwrap();
        assert_eq!(a.uri().scheme(), Scheme::Other("isbn"));
    }

    #[test]
    fn broken_values() {
        assert_eq!(NameAddr::parse(b""), Err(ValueError::Empty));
        assert_eq!(
            NameAddr::parse(b"<sip:x@y"),
            Err(ValueError::UnterminatedAngle)
        );
        // RFC 4475 §3.1.2.1 (badinv01): empty parameters.
        assert_eq!(
            NameAddr::parse(b"\"Joe\" <sip:joe@example.org>;;;;"),
            Err(ValueError::EmptyParamName)
        );
        assert!(matches!(
            NameAddr::parse(b"Alice sip:alice@x"),
            Err(ValueError::Uri(_))
        ));
        assert_eq!(Contact::parse(b" * ").unwrap(), Contact::Star);
    }
}
