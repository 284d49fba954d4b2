//! SIP, SIPS and tel URIs as views (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118 for IPv6
//! references). Other schemes (RFC 4475 §3.3.2, §3.3.4) are kept opaque.
//!
//! Escapes are not decoded while parsing: the parts are views of the original text, and
//! [`pct_eq`](super::lex::pct_eq) / [`Uri::user_decoded`] compare or decode on demand.
use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::UriError;
use super::lex::{pct_decode, pct_eq_ignore_case, sub_str};

/// The URI scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme<'a> {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
    /// `tel:` (RFC 3966)
    Tel,
    /// Any other scheme, as written.
    Other(&'a str),
}

/// A host: a domain name or an IP literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name, as written (compare ignoring ASCII case).
    Name(&'a str),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (`[...]` in SIP).
    V6(Ipv6Addr),
}

impl<'a> Host<'a> {
    /// Parses a host: `[IPv6]`, dotted IPv4, or a domain name (letters, digits, `-`, `.`,
    /// and `_`, which real deployments use although RFC 3261 does not allow it).
    pub fn parse(s: &'a str) -> Option<Host<'a>> {
        if let Some(inner) = s.strip_prefix('[') {
            return parse_ipv6_lenient(inner.strip_suffix(']')?).map(Host::V6);
        }
        if s.is_empty() {
            return None;
        }
        if s.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            if let Ok(v4) = s.parse::<Ipv4Addr>() {
                return Some(Host::V4(v4));
            }
        }
        let ok = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        ok.then_some(Host::Name(s))
    }

    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Name(_) => None,
            Host::V4(a) => Some(IpAddr::V4(a)),
            Host::V6(a) => Some(IpAddr::V6(a)),
        }
    }
}

/// Parses an IPv6 address, also accepting the `:::` form RFC 3261's ABNF wrongly allowed
/// before an embedded IPv4 part (RFC 5118 §4.10: tolerate both; fixed by RFC 5954).
pub fn parse_ipv6_lenient(s: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Some(a);
    }
    let at = s.find(":::")?;
    // One colon fewer; the longest valid IPv6 text is 45 bytes, so a small stack buffer does.
    let mut tmp = [0u8; 64];
    let head = s.get(..at)?;
    let rest = s.get(at + 1..)?;
    let len = head.len() + rest.len();
    tmp.get_mut(..head.len())?.copy_from_slice(head.as_bytes());
    tmp.get_mut(head.len()..len)?
        .copy_from_slice(rest.as_bytes());
    std::str::from_utf8(tmp.get(..len)?).ok()?.parse().ok()
}

/// Parses an IP address written bare or as an IPv6 reference in brackets (as in the Via
/// `received` parameter of RFC 5118 §4.5).
pub fn parse_ip_lenient(s: &str) -> Option<IpAddr> {
    if let Some(inner) = s.strip_prefix('[') {
        return parse_ipv6_lenient(inner.strip_suffix(']')?).map(IpAddr::V6);
    }
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    parse_ipv6_lenient(s).map(IpAddr::V6)
}

/// A URI as a view into the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a str,
    scheme: Scheme<'a>,
    user: Option<&'a str>,
    password: Option<&'a str>,
    host: Option<Host<'a>>,
    port: Option<u16>,
    params: &'a str,
    headers: Option<&'a str>,
}

impl<'a> Uri<'a> {
    /// Parses a URI. It must not contain whitespace or control characters (a Request-URI
    /// with embedded LWS is invalid, RFC 4475 §3.1.2.8).
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, UriError> {
        if s.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(UriError::BadChar);
        }
        let s = std::str::from_utf8(s).map_err(|_| UriError::NotUtf8)?;
        Self::parse_str(s)
    }

    fn parse_str(raw: &'a str) -> Result<Uri<'a>, UriError> {
        let colon = find(raw, b':').ok_or(UriError::BadScheme)?;
        let scheme_str = sub_str(raw, 0, colon);
        let mut sb = scheme_str.bytes();
        if !sb.next().is_some_and(|b| b.is_ascii_alphabetic())
            || !sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        {
            return Err(UriError::BadScheme);
        }
        let rest = raw.get(colon + 1..).unwrap_or("");
        let scheme = if scheme_str.eq_ignore_ascii_case("sip") {
            Scheme::Sip
        } else if scheme_str.eq_ignore_ascii_case("sips") {
            Scheme::Sips
        } else if scheme_str.eq_ignore_ascii_case("tel") {
            Scheme::Tel
        } else {
            Scheme::Other(scheme_str)
        };
        let mut uri = Uri {
            raw,
            scheme,
            user: None,
            password: None,
            host: None,
            port: None,
            params: "",
            headers: None,
        };
        match scheme {
            Scheme::Sip | Scheme::Sips => uri.parse_sip(rest)?,
            Scheme::Tel => uri.parse_tel(rest)?,
            Scheme::Other(_) => {
                if rest.is_empty() {
                    return Err(UriError::BadScheme);
                }
            }
        }
        Ok(uri)
    }

    fn parse_sip(&mut self, rest: &'a str) -> Result<(), UriError> {
        // userinfo cannot hold an unescaped '@', so the first one ends it; the user part
        // may hold ';' and '?' (RFC 4475 §3.1.1.9, §3.1.1.2).
        let hostpart = match find(rest, b'@') {
            Some(at) => {
                let userinfo = sub_str(rest, 0, at);
                let (user, password) = match find(userinfo, b':') {
                    Some(c) => (sub_str(userinfo, 0, c), userinfo.get(c + 1..)),
                    None => (userinfo, None),
                };
                if user.is_empty() {
                    return Err(UriError::EmptyUser);
                }
                self.user = Some(user);
                self.password = password;
                rest.get(at + 1..).unwrap_or("")
            }
            None => rest,
        };
        let (before_headers, headers) = match find(hostpart, b'?') {
            Some(q) => (sub_str(hostpart, 0, q), hostpart.get(q + 1..)),
            None => (hostpart, None),
        };
        self.headers = headers;
        let (hostport, params) = match find(before_headers, b';') {
            Some(p) => (
                sub_str(before_headers, 0, p),
                Some(before_headers.get(p + 1..).unwrap_or("")),
            ),
            None => (before_headers, None),
        };
        let (host, port) = split_hostport(hostport)?;
        self.host = Some(host);
        self.port = port;
        self.params = check_params(params)?;
        Ok(())
    }

    fn parse_tel(&mut self, rest: &'a str) -> Result<(), UriError> {
        let (number, params) = match find(rest, b';') {
            Some(p) => (sub_str(rest, 0, p), Some(rest.get(p + 1..).unwrap_or(""))),
            None => (rest, None),
        };
        if number.is_empty() {
            return Err(UriError::MissingHost);
        }
        self.params = check_params(params)?;
        self.user = Some(number);
        Ok(())
    }

    /// The whole URI as written.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme<'a> {
        self.scheme
    }

    /// The user part (still %-escaped) of a SIP/SIPS URI, or the number of a tel URI.
    pub fn user(&self) -> Option<&'a str> {
        self.user
    }

    /// The user part with %-escapes decoded (RFC 3261 §19.1.4 compares this form).
    pub fn user_decoded(&self) -> Option<Cow<'a, [u8]>> {
        self.user.map(|u| pct_decode(u.as_bytes()))
    }

    /// The password of a SIP/SIPS URI (deprecated but legal).
    pub fn password(&self) -> Option<&'a str> {
        self.password
    }

    /// The host of a SIP/SIPS URI.
    pub fn host(&self) -> Option<Host<'a>> {
        self.host
    }

    /// The explicit port of a SIP/SIPS URI.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The raw parameter section, without the leading `;`.
    pub fn params_str(&self) -> &'a str {
        self.params
    }

    /// The URI parameters (`;name[=value]`).
    pub fn params(&self) -> UriParams<'a> {
        UriParams { rest: self.params }
    }

    /// The first parameter with this name (decoded and case-insensitive comparison):
    /// `Some(None)` for a flag such as `;lr`, `Some(Some(v))` for `;name=v`.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params()
            .find(|(n, _)| pct_eq_ignore_case(n.as_bytes(), name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The raw header section after `?`, if any. Headers in a URI are never turned into
    /// message headers (RFC 4475 §3.1.2.11).
    pub fn headers(&self) -> Option<&'a str> {
        self.headers
    }

    /// Everything after `scheme:` (the opaque part of an unknown scheme).
    pub fn opaque(&self) -> &'a str {
        split_once(self.raw, b':').map_or("", |(_, r)| r)
    }
}

/// Byte offset of the first `b` in `s` (ASCII delimiters only, so the offset is a char
/// boundary).
fn find(s: &str, b: u8) -> Option<usize> {
    memchr::memchr(b, s.as_bytes())
}

/// `s` split around the first `b`.
fn split_once(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = find(s, b)?;
    Some((sub_str(s, 0, i), s.get(i + 1..).unwrap_or("")))
}

/// Splits `host[:port]`, where host may be an `[IPv6]` reference.
///
/// An IPv6 address must be bracketed (RFC 3261 §19.1.1; RFC 5118 §4.2 rejects `sip:2001:db8::10`).
/// Devices nevertheless send bare ones (a Valid8 capture of the shared corpus does), so a
/// bare address is accepted when it cannot be misread: all eight groups written out, with
/// no `::`, optionally followed by `:port` as a ninth group. Anything compressed stays an
/// error, because there the port cannot be told from the last group.
pub(crate) fn split_hostport(s: &str) -> Result<(Host<'_>, Option<u16>), UriError> {
    if s.is_empty() {
        return Err(UriError::MissingHost);
    }
    if !s.starts_with('[') && s.bytes().filter(|&b| b == b':').count() > 1 {
        return split_bare_ipv6(s);
    }
    let (host, port) = if s.starts_with('[') {
        let close = find(s, b']').ok_or(UriError::BadHost)?;
        let after = s.get(close + 1..).unwrap_or("");
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError::BadHost),
        };
        (sub_str(s, 0, close + 1), port)
    } else {
        match split_once(s, b':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let host = Host::parse(host).ok_or(UriError::BadHost)?;
    let port = match port {
        Some(p) => Some(super::lex::parse_port(p.as_bytes()).ok_or(UriError::BadPort)?),
        None => None,
    };
    Ok((host, port))
}

/// `h:h:h:h:h:h:h:h[:port]` with every group written out.
fn split_bare_ipv6(s: &str) -> Result<(Host<'_>, Option<u16>), UriError> {
    let mut parts = s.split(':');
    let full_groups = parts
        .by_ref()
        .take(8)
        .filter(|g| !g.is_empty() && g.len() <= 4 && g.bytes().all(|b| b.is_ascii_hexdigit()))
        .count();
    let port = parts.next();
    if full_groups != 8 || parts.next().is_some() {
        return Err(UriError::BadHost);
    }
    let addr_len = s.len() - port.map_or(0, |p| p.len() + 1);
    let ip = sub_str(s, 0, addr_len)
        .parse::<Ipv6Addr>()
        .map_err(|_| UriError::BadHost)?;
    let port = match port {
        Some(p) => Some(super::lex::parse_port(p.as_bytes()).ok_or(UriError::BadPort)?),
        None => None,
    };
    Ok((Host::V6(ip), port))
}

/// Validates the text after the first `;` (if there was one) and returns it: every `;`
/// must be followed by a parameter name (no `;;`, no trailing `;`, no `;=v`).
fn check_params(params: Option<&str>) -> Result<&str, UriError> {
    let Some(params) = params else {
        return Ok("");
    };
    let b = params.as_bytes();
    let bad = b.first().is_none_or(|&c| c == b'=' || c == b';')
        || b.last() == Some(&b';')
        || b.windows(2)
            .any(|w| w.first() == Some(&b';') && matches!(w.get(1), Some(b';' | b'=')));
    if bad {
        return Err(UriError::EmptyParam);
    }
    Ok(params)
}

/// Iterator over URI parameters as `(name, value)`; names and values are still %-escaped.
#[derive(Debug, Clone)]
pub struct UriParams<'a> {
    rest: &'a str,
}

impl<'a> Iterator for UriParams<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let (p, rest) = split_once(self.rest, b';').unwrap_or((self.rest, ""));
        self.rest = rest;
        Some(match split_once(p, b'=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_parts() {
        let u = Uri::parse(b"sip:alice:secret@atlanta.example.com:5061;transport=tcp;lr?subject=x")
            .unwrap();
        assert_eq!(u.scheme(), Scheme::Sip);
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password(), Some("secret"));
        assert_eq!(u.host(), Some(Host::Name("atlanta.example.com")));
        assert_eq!(u.port(), Some(5061));
        assert_eq!(u.param("transport"), Some(Some("tcp")));
        assert_eq!(u.param("LR"), Some(None));
        assert_eq!(u.param("maddr"), None);
        assert_eq!(u.headers(), Some("subject=x"));
    }

    #[test]
    fn semicolon_in_userinfo() {
        // RFC 4475 §3.1.1.9
        let u = Uri::parse(b"sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user(), Some("user;par=u%40example.net"));
        assert_eq!(u.host(), Some(Host::Name("example.com")));
        assert_eq!(u.params().count(), 0);
        assert_eq!(&*u.user_decoded().unwrap(), b"user;par=u@example.net");
    }

    #[test]
    fn ipv6_references() {
        // RFC 5118 §4.3: eight groups, no port.
        let u = Uri::parse(b"sip:[2001:db8::10:5070]").unwrap();
        assert_eq!(
            u.host(),
            Some(Host::V6("2001:db8::10:5070".parse().unwrap()))
        );
        assert_eq!(u.port(), None);
        // §4.4: port outside the brackets.
        let u = Uri::parse(b"sip:[2001:db8::10]:5070").unwrap();
        assert_eq!(u.host(), Some(Host::V6("2001:db8::10".parse().unwrap())));
        assert_eq!(u.port(), Some(5070));
        // §4.10: three colons tolerated.
        let u = Uri::parse(b"sip:user@[2001:db8:::192.0.2.1]").unwrap();
        assert_eq!(
            u.host(),
            Some(Host::V6("2001:db8::c000:201".parse().unwrap()))
        );
        // §4.2: an unbracketed IPv6 address is invalid...
        assert_eq!(Uri::parse(b"sip:2001:db8::10"), Err(UriError::BadHost));
        assert_eq!(
            Uri::parse(b"sip:user@2001:db8::10:5060"),
            Err(UriError::BadHost)
        );
        // ... but a bare one written out in full cannot be misread (corpus, Valid8 UA).
        let u = Uri::parse(b"sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060").unwrap();
        assert_eq!(
            u.host(),
            Some(Host::V6("fec0::216:d3ff:fe0d:22c".parse().unwrap()))
        );
        assert_eq!(u.port(), Some(5060));
        let u = Uri::parse(b"sip:9876@fe80:0:0:0:21a:a0ff:fe07:32e0").unwrap();
        assert_eq!(
            u.host(),
            Some(Host::V6("fe80::21a:a0ff:fe07:32e0".parse().unwrap()))
        );
        assert_eq!(u.port(), None);
        assert_eq!(
            Uri::parse(b"sip:a@1:2:3:4:5:6:7:8:9:10"),
            Err(UriError::BadHost)
        );
        assert_eq!(
            Uri::parse(b"sip:a@1:2:3:4:5:6:7:8:99999"),
            Err(UriError::BadPort)
        );
        assert_eq!(
            Uri::parse(b"sip:a@1:2:3:4:5:6:7:xyz"),
            Err(UriError::BadHost)
        );
    }

    #[test]
    fn tel_and_other_schemes() {
        let u = Uri::parse(b"tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.scheme(), Scheme::Tel);
        assert_eq!(u.user(), Some("+1-201-555-0123"));
        assert_eq!(u.param("phone-context"), Some(Some("example.com")));
        let u = Uri::parse(b"soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme(), Scheme::Other("soap.beep"));
        assert_eq!(u.opaque(), "//192.0.2.103:3002");
        assert_eq!(u.host(), None);
    }

    #[test]
    fn invalid_uris() {
        assert_eq!(
            Uri::parse(b"<sip:user@example.com>"),
            Err(UriError::BadScheme)
        );
        assert_eq!(
            Uri::parse(b"sip:user@example.com; lr"),
            Err(UriError::BadChar)
        );
        assert_eq!(Uri::parse(b"sip:@example.com"), Err(UriError::EmptyUser));
        assert_eq!(Uri::parse(b"sip:example.com:99999"), Err(UriError::BadPort));
        assert_eq!(Uri::parse(b"sip:example.com:"), Err(UriError::BadPort));
        assert_eq!(Uri::parse(b"sip:exa mple.com"), Err(UriError::BadChar));
        assert_eq!(
            Uri::parse(b"sip:example.com;;lr"),
            Err(UriError::EmptyParam)
        );
        assert_eq!(Uri::parse(b"sip:"), Err(UriError::MissingHost));
        assert_eq!(Uri::parse(b"sip:host/x"), Err(UriError::BadHost));
    }

    #[test]
    fn escaped_param_names_compare_decoded() {
        // RFC 4475 §3.1.1.3: ;%6C%72 is the lr parameter.
        let u =
            Uri::parse(b"sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31").unwrap();
        assert_eq!(u.param("lr"), Some(None));
        assert_eq!(u.param("name"), Some(Some("v%61lue%25%34%31")));
        assert_eq!(&*u.user_decoded().unwrap(), b"caller");
    }
}
