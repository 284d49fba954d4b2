//! Identifier normalisation before pseudonymization, so one subscriber gets one pseudonym.
//!
//! Implements the parts of RFC 3261 §19.1.1 (SIP/SIPS URI: userinfo, hostport, parameters,
//! headers) and §19.1.4 (escaped characters compare equal to their unescaped form), and of
//! RFC 3966 §3 and §5.1.1 (tel URI, visual separators), needed to reduce a URI or a dialled
//! string to the user part or host alone. Telephone numbers follow ITU-T E.164/E.123: `+`
//! and the international prefix (`00` unless configured) both mean "international" and
//! become `+<digits>`; a configured national rule turns the trunk prefix (`0`) into the
//! country code (`020 7946 0000` with country code 44 becomes `+442079460000`).
//!
//! Everything works on `&[u8]` and returns bytes: NUL bytes and invalid UTF-8 are kept as
//! they are, so they can neither truncate an identifier nor make two identifiers collide.
//! Pure functions: no I/O, no logging.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::net::IpAddr;

use super::pseudonym::Kind;

/// Longest country code, trunk prefix or international prefix accepted, in digits.
const PREFIX_MAX_DIGITS: usize = 4;

/// How dialled numbers of one country map to international form.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct NationalRule {
    /// Country calling code without `+`, e.g. `44`.
    pub country_code: String,
    /// National trunk prefix replaced by the country code, e.g. `0`.
    pub trunk_prefix: String,
    /// International call prefix, e.g. `00` (the default) or `011`.
    #[serde(default = "default_international_prefix")]
    pub international_prefix: String,
}

fn default_international_prefix() -> String {
    "00".to_owned()
}

/// A national rule that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NationalRuleError {
    /// A prefix is empty, too long or not made of digits.
    #[error("national rule: {field} must be 1 to 4 digits, got {value:?}")]
    BadDigits {
        /// Which setting.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The trunk prefix equals the international prefix, so a national number could not be
    /// told from an international one.
    #[error("national rule: trunk prefix {trunk:?} must not be the international prefix {international:?}")]
    TrunkIsInternational {
        /// The trunk prefix.
        trunk: String,
        /// The international prefix.
        international: String,
    },
}

/// Number rules in force: the international prefix, and the national rule if configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberRules {
    international_prefix: Vec<u8>,
    national: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for NumberRules {
    /// `00` means international; no national rule.
    fn default() -> Self {
        NumberRules {
            international_prefix: b"00".to_vec(),
            national: None,
        }
    }
}

fn digits_setting(field: &'static str, value: &str) -> Result<Vec<u8>, NationalRuleError> {
    if value.is_empty()
        || value.len() > PREFIX_MAX_DIGITS
        || !value.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(NationalRuleError::BadDigits {
            field,
            value: value.to_owned(),
        });
    }
    Ok(value.as_bytes().to_vec())
}

impl NumberRules {
    /// Rules from an optional national rule, validated.
    pub fn try_new(national: Option<&NationalRule>) -> Result<Self, NationalRuleError> {
        let Some(rule) = national else {
            return Ok(NumberRules::default());
        };
        let cc = digits_setting("country_code", &rule.country_code)?;
        let trunk = digits_setting("trunk_prefix", &rule.trunk_prefix)?;
        let intl = digits_setting("international_prefix", &rule.international_prefix)?;
        if intl == trunk {
            return Err(NationalRuleError::TrunkIsInternational {
                trunk: rule.trunk_prefix.clone(),
                international: rule.international_prefix.clone(),
            });
        }
        Ok(NumberRules {
            international_prefix: intl,
            national: Some((cc, trunk)),
        })
    }
}

fn trim(input: &[u8]) -> &[u8] {
    input.trim_ascii()
}

fn starts_with_ci(input: &[u8], prefix: &[u8]) -> bool {
    input
        .get(..prefix.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
}

fn cut_at<'a>(input: &'a [u8], stops: &[u8]) -> &'a [u8] {
    match input.iter().position(|b| stops.contains(b)) {
        Some(i) => input.get(..i).unwrap_or(input),
        None => input,
    }
}

/// The URI scheme of an input, after angle brackets are removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Sip,
    Tel,
    None,
}

/// Removes a name-addr wrapper (`"Name" <uri>` or `<uri>`) and the scheme.
fn strip_scheme(input: &[u8]) -> (Scheme, &[u8]) {
    let mut s = trim(input);
    // The last `<` opens the URI: a quoted display name before it may contain one too.
    if let Some(open) = s.iter().rposition(|&b| b == b'<') {
        let inner = s.get(open + 1..).unwrap_or_default();
        s = cut_at(inner, b">");
        s = trim(s);
    }
    for (prefix, scheme) in [
        (&b"sips:"[..], Scheme::Sip),
        (b"sip:", Scheme::Sip),
        (b"tel:", Scheme::Tel),
    ] {
        if starts_with_ci(s, prefix) {
            return (scheme, s.get(prefix.len()..).unwrap_or_default());
        }
    }
    (Scheme::None, s)
}

/// The user part of a SIP/SIPS/tel URI, a name-addr, `user@host`, or a bare user or
/// number, without scheme, password, parameters or headers; still percent-encoded.
/// `None` when the input names a host only (`sip:example.com`).
pub fn user_part(input: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = strip_scheme(input);
    match scheme {
        // RFC 3966 §3: the number ends at the first parameter.
        Scheme::Tel => Some(cut_at(rest, b";?")),
        Scheme::Sip | Scheme::None => match rest.iter().position(|&b| b == b'@') {
            // RFC 3261 §19.1.1: user may carry telephone-subscriber parameters (`;`)
            // and is followed by an optional `:password`.
            Some(at) => Some(cut_at(rest.get(..at).unwrap_or_default(), b":;")),
            None if scheme == Scheme::None => Some(cut_at(rest, b";?")),
            None => None,
        },
    }
}

/// A host name or IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IP address literal (IPv6 without its brackets), canonical (IPv4-mapped IPv6 is
    /// IPv4).
    Ip(IpAddr),
    /// A host name, ASCII-lowercased, without a trailing dot.
    Name(Vec<u8>),
}

/// The host of a SIP/SIPS URI, a name-addr, `user@host`, or a bare host, without port,
/// parameters or headers. `None` for tel URIs and empty hosts.
pub fn host_part(input: &[u8]) -> Option<Host> {
    let (scheme, rest) = strip_scheme(input);
    if scheme == Scheme::Tel {
        return None;
    }
    let hostport = match rest.iter().position(|&b| b == b'@') {
        Some(at) => rest.get(at + 1..).unwrap_or_default(),
        None => rest,
    };
    let hostport = cut_at(hostport, b";?");
    let host = if let Some(inner) = hostport.strip_prefix(b"[") {
        cut_at(inner, b"]")
    } else {
        match hostport.iter().filter(|&&b| b == b':').count() {
            // A bare IPv6 address has several colons and no port.
            0 | 1 => cut_at(hostport, b":"),
            _ => hostport,
        }
    };
    let host = trim(host);
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    if let Some(ip) = std::str::from_utf8(host)
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok())
    {
        return Some(Host::Ip(ip.to_canonical()));
    }
    Some(Host::Name(host.to_ascii_lowercase()))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%HH` escapes (RFC 3261 §19.1.4: `%2B` and `+` are the same user); a `%` not
/// followed by two hex digits is kept as it is.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = input.get(i + 1).copied().and_then(hex_value);
            let lo = input.get(i + 2).copied().and_then(hex_value);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

/// RFC 3966 §5.1.1 visual separators, plus the space people type.
fn is_visual_separator(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b'(' | b')' | b' ')
}

/// A normalised user: a telephone number or another URI user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// [`Kind::Number`] or [`Kind::UriUser`].
    pub kind: Kind,
    /// The normalised bytes: `+<digits>`, or digits when no prefix rule applies, for a
    /// number; the unescaped user bytes, untouched, for any other user.
    pub bytes: Vec<u8>,
}

/// Normalises an already extracted and unescaped user part.
///
/// After dropping visual separators, a user is a telephone number when it is `+` then
/// digits, or digits only. Anything else (`*21#`, `alice`, `john.doe`, bytes that are not
/// ASCII) is a URI user and is returned as given, separators included.
pub fn normalize_user(user: &[u8], rules: &NumberRules) -> Subscriber {
    let compact: Vec<u8> = user
        .iter()
        .copied()
        .filter(|&b| !is_visual_separator(b))
        .collect();
    let (plus, digits) = match compact.split_first() {
        Some((b'+', rest)) => (true, rest),
        _ => (false, compact.as_slice()),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Subscriber {
            kind: Kind::UriUser,
            bytes: user.to_vec(),
        };
    }
    let international = |national_digits: &[u8], cc: &[u8]| {
        let mut out = Vec::with_capacity(1 + cc.len() + national_digits.len());
        out.push(b'+');
        out.extend_from_slice(cc);
        out.extend_from_slice(national_digits);
        out
    };
    let bytes = if plus {
        international(digits, b"")
    } else if let Some(rest) = digits
        .strip_prefix(rules.international_prefix.as_slice())
        .filter(|r| !r.is_empty())
    {
        international(rest, b"")
    } else if let Some((cc, rest)) = rules.national.as_ref().and_then(|(cc, trunk)| {
        digits
            .strip_prefix(trunk.as_slice())
            .filter(|r| !r.is_empty())
            .map(|r| (cc, r))
    }) {
        international(rest, cc)
    } else {
        digits.to_vec()
    };
    Subscriber {
        kind: Kind::Number,
        bytes,
    }
}

/// The normalised subscriber behind a URI, name-addr, `user@host` or bare number/user;
/// `None` when there is no user or it is empty.
pub fn subscriber(input: &[u8], rules: &NumberRules) -> Option<Subscriber> {
    let user = percent_decode(user_part(input)?);
    let user = trim(&user);
    if user.is_empty() {
        return None;
    }
    Some(normalize_user(user, rules))
}

/// A display name without surrounding whitespace and one pair of surrounding quotes
/// (RFC 3261 §25.1 quoted-string); `None` when empty.
pub fn display_name(input: &[u8]) -> Option<&[u8]> {
    let t = trim(input);
    let t = match t.strip_prefix(b"\"").and_then(|s| s.strip_suffix(b"\"")) {
        Some(inner) => trim(inner),
        None => t,
    };
    (!t.is_empty()).then_some(t)
}

/// A Call-ID without surrounding whitespace; `None` when empty. No case folding: RFC 3261
/// §20.8 compares Call-IDs byte by byte.
pub fn call_id(input: &[u8]) -> Option<&[u8]> {
    let t = trim(input);
    (!t.is_empty()).then_some(t)
}

/// The bytes an IP address is pseudonymized over: 4 for IPv4 (including IPv4-mapped IPv6),
/// 16 for IPv6.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;

    fn uk() -> NumberRules {
        NumberRules::try_new(Some(&NationalRule {
            country_code: "44".into(),
            trunk_prefix: "0".into(),
            international_prefix: "00".into(),
        }))
        .unwrap()
    }

    fn num(input: &[u8], rules: &NumberRules) -> (Kind, Vec<u8>) {
        let s = subscriber(input, rules).unwrap();
        (s.kind, s.bytes)
    }

    #[test]
    fn one_uk_number_many_spellings() {
        let rules = uk();
        for input in [
            &b"+44 20 7946 0000"[..],
            b"0044 20 7946 0000",
            b"tel:+44-20-7946-0000",
            b"sip:+442079460000@example.com;user=phone",
            b"020 7946 0000",
            b"(020) 7946.0000",
            b"<sips:%2B442079460000@Example.COM:5061;transport=tls>",
            b"\"Bob\" <sip:+44-20-7946-0000;isub=1@example.com>;tag=abc",
            b"tel:+442079460000;phone-context=example.com",
        ] {
            assert_eq!(
                num(input, &rules),
                (Kind::Number, b"+442079460000".to_vec()),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn without_national_rule_national_numbers_stay_digits() {
        let rules = NumberRules::default();
        assert_eq!(
            num(b"020 7946 0000", &rules),
            (Kind::Number, b"02079460000".to_vec())
        );
        assert_eq!(
            num(b"0044 20 7946 0000", &rules),
            (Kind::Number, b"+442079460000".to_vec())
        );
    }

    #[test]
    fn configured_international_prefix() {
        let rules = NumberRules::try_new(Some(&NationalRule {
            country_code: "1".into(),
            trunk_prefix: "1".into(),
            international_prefix: "011".into(),
        }))
        .unwrap();
        assert_eq!(
            num(b"011 44 20 7946 0000", &rules),
            (Kind::Number, b"+442079460000".to_vec())
        );
        assert_eq!(
            num(b"1 (212) 555-0100", &rules),
            (Kind::Number, b"+12125550100".to_vec())
        );
    }

    #[test]
    fn non_numbers_are_uri_users_kept_verbatim() {
        let rules = uk();
        assert_eq!(
            num(b"sip:*21#@pbx", &rules),
            (Kind::UriUser, b"*21#".to_vec())
        );
        assert_eq!(
            num(b"sip:john.doe@example.com", &rules),
            (Kind::UriUser, b"john.doe".to_vec())
        );
        assert_eq!(num(b"+", &rules), (Kind::UriUser, b"+".to_vec()));
        assert_eq!(num(b"44+1", &rules), (Kind::UriUser, b"44+1".to_vec()));
        // Case is significant in a SIP user (RFC 3261 §19.1.4).
        assert_eq!(
            num(b"sip:Alice@x", &rules),
            (Kind::UriUser, b"Alice".to_vec())
        );
        assert_eq!(
            num(b"sip:alice:secret@x", &rules),
            (Kind::UriUser, b"alice".to_vec())
        );
    }

    #[test]
    fn nul_and_invalid_utf8_are_kept_as_bytes() {
        let rules = uk();
        assert_eq!(num(b"a\0b", &rules).1, b"a\0b".to_vec());
        assert_eq!(num(b"sip:a%00b@x", &rules).1, b"a\0b".to_vec());
        assert_eq!(num(b"\xff\xfe", &rules).1, b"\xff\xfe".to_vec());
        assert_ne!(num(b"\xff", &rules).1, num(b"\xfe", &rules).1);
    }

    #[test]
    fn empty_or_host_only_has_no_subscriber() {
        let rules = uk();
        assert_eq!(subscriber(b"sip:example.com", &rules), None);
        assert_eq!(subscriber(b"sip:@example.com", &rules), None);
        assert_eq!(subscriber(b"  ", &rules), None);
        assert_eq!(subscriber(b"tel:", &rules), None);
    }

    #[test]
    fn hosts() {
        let name = |s: &str| Some(Host::Name(s.as_bytes().to_vec()));
        assert_eq!(
            host_part(b"sip:bob@Example.COM.:5060;transport=udp"),
            name("example.com")
        );
        assert_eq!(host_part(b"sip:example.com?Subject=x"), name("example.com"));
        assert_eq!(host_part(b"Example.com"), name("example.com"));
        assert_eq!(
            host_part(b"sip:bob@[2001:db8::1]:5060"),
            Some(Host::Ip("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            host_part(b"2001:db8::1"),
            Some(Host::Ip("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            host_part(b"sip:bob@192.0.2.7:5060"),
            Some(Host::Ip("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(
            host_part(b"[::ffff:192.0.2.7]"),
            Some(Host::Ip("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(host_part(b"tel:+442079460000"), None);
        assert_eq!(host_part(b"sip:bob@"), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_normalising_is_idempotent(
            input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)
        ) {
            let rules = uk();
            let _ = host_part(&input);
            let _ = display_name(&input);
            let _ = call_id(&input);
            if let Some(s) = subscriber(&input, &rules) {
                // A normalised user normalises to itself, with the same kind.
                proptest::prop_assert_eq!(normalize_user(&s.bytes, &rules), s.clone());
                if s.kind == Kind::Number {
                    let digits = s.bytes.strip_prefix(b"+").unwrap_or(&s.bytes);
                    proptest::prop_assert!(digits.iter().all(u8::is_ascii_digit));
                }
            }
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode(b"%2b%2B%zz%4"), b"++%zz%4".to_vec());
    }

    #[test]
    fn rule_validation() {
        let rule = |cc: &str, trunk: &str, intl: &str| NationalRule {
            country_code: cc.into(),
            trunk_prefix: trunk.into(),
            international_prefix: intl.into(),
        };
        assert!(NumberRules::try_new(Some(&rule("44", "0", "00"))).is_ok());
        assert!(NumberRules::try_new(Some(&rule("", "0", "00"))).is_err());
        assert!(NumberRules::try_new(Some(&rule("4a", "0", "00"))).is_err());
        assert!(NumberRules::try_new(Some(&rule("44", "00", "00"))).is_err());
    }

    #[test]
    fn display_names_and_call_ids() {
        assert_eq!(display_name(b" \"Bob Smith\" "), Some(&b"Bob Smith"[..]));
        assert_eq!(display_name(b"\"\""), None);
        assert_eq!(
            call_id(b" a84b4c76e66710@pc33 \r"),
            Some(&b"a84b4c76e66710@pc33"[..])
        );
        assert_eq!(
            ip_bytes("::ffff:10.0.0.1".parse().unwrap()),
            vec![10, 0, 0, 1]
        );
    }
}
