//! Header parameters `*( SEMI generic-param )` (RFC 3261 §25.1 `generic-param`), with the
//! LWS RFC 3261 allows around `;` and `=` (RFC 4475 §3.1.1.1).
//!
//! A [`Params`] is validated once when its header is parsed and then iterated lazily over
//! the original bytes, so parsing a header allocates nothing.
use super::error::ValueError;
use super::lex::{at, is_lws, quoted_end, skip_lws, sub_str, token_end, unescape_quoted};

/// One header parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// The name, as written (compare ignoring ASCII case).
    pub name: &'a str,
    /// The value: `None` for a flag such as `;rport`; for a quoted value, the text between
    /// the quotes with escapes unresolved (see [`Param::value_unescaped`]).
    pub value: Option<&'a str>,
    /// True when the value was a quoted-string.
    pub quoted: bool,
}

impl<'a> Param<'a> {
    /// The value with quoted-pair escapes resolved.
    pub fn value_unescaped(&self) -> Option<std::borrow::Cow<'a, [u8]>> {
        self.value.map(|v| {
            if self.quoted {
                unescape_quoted(v.as_bytes())
            } else {
                std::borrow::Cow::Borrowed(v.as_bytes())
            }
        })
    }
}

/// Validated header parameters, as a view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a str,
}

impl<'a> Params<'a> {
    /// Validates `s`, which must be nothing but LWS and `;name[=value]` parameters.
    pub fn parse(s: &'a str) -> Result<Params<'a>, ValueError> {
        Self::parse_visit(s, |_| Ok(()))
    }

    /// Validates `s` like [`Params::parse`], showing each parameter to `visit` on the way,
    /// so a header parser picks out what it needs (branch, tag, ...) in the same pass.
    pub(crate) fn parse_visit(
        s: &'a str,
        mut visit: impl FnMut(Param<'a>) -> Result<(), ValueError>,
    ) -> Result<Params<'a>, ValueError> {
        let mut i = 0;
        while let Some((p, next)) = next_param(s, i)? {
            visit(p)?;
            i = next;
        }
        Ok(Params { raw: s })
    }

    /// Parses `s` as parameters, tolerating the missing leading `;` (as in the
    /// `icid-value=...;...` list of P-Charging-Vector).
    pub(crate) fn parse_leading(s: &'a str) -> Result<Params<'a>, ValueError> {
        let start = skip_lws(s.as_bytes(), 0);
        if at(s.as_bytes(), start) == b';' {
            return Self::parse(s);
        }
        // Validate as if a ';' preceded the first parameter, keeping the view unchanged.
        let mut i = match parse_one(s, start)? {
            Some((_, next)) => next,
            None => return Err(ValueError::Empty),
        };
        while let Some((_, next)) = next_param(s, i)? {
            i = next;
        }
        Ok(Params { raw: s })
    }

    /// The raw text of the parameters.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Iterates the parameters in order.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter {
            s: self.raw,
            pos: 0,
            first: true,
        }
    }

    /// The first parameter with this name (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<Param<'a>> {
        self.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The value of the first parameter with this name; `None` when absent or a flag.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).and_then(|p| p.value)
    }

    /// True when a parameter with this name is present (with or without value).
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl<'a> IntoIterator for &Params<'a> {
    type Item = Param<'a>;
    type IntoIter = ParamIter<'a>;

    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

/// Iterator over validated parameters.
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    s: &'a str,
    pos: usize,
    first: bool,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        let r = if self.first {
            self.first = false;
            let start = skip_lws(self.s.as_bytes(), self.pos);
            if at(self.s.as_bytes(), start) == b';' {
                next_param(self.s, self.pos)
            } else {
                parse_one(self.s, start)
            }
        } else {
            next_param(self.s, self.pos)
        };
        let (p, next) = r.ok()??;
        self.pos = next;
        Some(p)
    }
}

/// Parses `LWS ";" LWS name [LWS "=" LWS value]` from `i`; `Ok(None)` at the end.
fn next_param(s: &str, i: usize) -> Result<Option<(Param<'_>, usize)>, ValueError> {
    let b = s.as_bytes();
    let i = skip_lws(b, i);
    if i >= b.len() {
        return Ok(None);
    }
    if at(b, i) != b';' {
        return Err(ValueError::Trailing);
    }
    match parse_one(s, skip_lws(b, i + 1))? {
        Some(r) => Ok(Some(r)),
        None => Err(ValueError::EmptyParamName),
    }
}

/// Parses `name [LWS "=" LWS value]` at `i`; `Ok(None)` when no name starts there.
fn parse_one(s: &str, i: usize) -> Result<Option<(Param<'_>, usize)>, ValueError> {
    let b = s.as_bytes();
    let name_end = token_end(b, i);
    if name_end == i {
        return if i >= b.len() || matches!(at(b, i), b';' | b',') {
            Ok(None)
        } else {
            Err(ValueError::BadToken)
        };
    }
    let name = sub_str(s, i, name_end);
    let j = skip_lws(b, name_end);
    if at(b, j) != b'=' {
        return Ok(Some((
            Param {
                name,
                value: None,
                quoted: false,
            },
            name_end,
        )));
    }
    let k = skip_lws(b, j + 1);
    if at(b, k) == b'"' {
        let end = quoted_end(b, k).ok_or(ValueError::UnterminatedQuote)?;
        let value = sub_str(s, k + 1, end - 1);
        return Ok(Some((
            Param {
                name,
                value: Some(value),
                quoted: true,
            },
            end,
        )));
    }
    // gen-value = token / host / quoted-string; a host may be an IPv6 reference with ':'
    // and brackets (RFC 5118 §4.5), so anything up to a delimiter is taken.
    let mut e = k;
    while b
        .get(e)
        .is_some_and(|&c| !is_lws(c) && !matches!(c, b';' | b',' | b'"'))
    {
        e += 1;
    }
    if e == k {
        return Err(ValueError::EmptyParamValue);
    }
    Ok(Some((
        Param {
            name,
            value: Some(sub_str(s, k, e)),
            quoted: false,
        },
        e,
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lws_around_separators() {
        // RFC 4475 §3.1.1.1 (wsinv): To params with LWS and folds.
        let p = Params::parse(" ;   tag    = 1918181833n").unwrap();
        assert_eq!(p.value("TAG"), Some("1918181833n"));
        let p = Params::parse("\r\n  ;\r\n  tag = 98asjd8").unwrap();
        assert_eq!(p.value("tag"), Some("98asjd8"));
        let p =
            Params::parse(" ; newparam =\r\n      newvalue ;\r\n  secondparam ; q = 0.33").unwrap();
        let all: Vec<_> = p.iter().map(|p| (p.name, p.value)).collect();
        assert_eq!(
            all,
            vec![
                ("newparam", Some("newvalue")),
                ("secondparam", None),
                ("q", Some("0.33"))
            ]
        );
    }

    #[test]
    fn quoted_and_ipv6_values() {
        let p = Params::parse(r#";text="Call \"done\"";received=[2001:db8::9:255];rport"#).unwrap();
        let t = p.get("text").unwrap();
        assert!(t.quoted);
        assert_eq!(t.value, Some(r#"Call \"done\""#));
        assert_eq!(&*t.value_unescaped().unwrap(), br#"Call "done""#);
        assert_eq!(p.value("received"), Some("[2001:db8::9:255]"));
        assert!(p.has("rport"));
        assert_eq!(p.value("rport"), None);
    }

    #[test]
    fn rejects_empty_names_values_and_junk() {
        // RFC 4475 §3.1.2.1 (badinv01): ";;" has an empty parameter.
        assert_eq!(Params::parse(";;"), Err(ValueError::EmptyParamName));
        assert_eq!(Params::parse(";a;;b"), Err(ValueError::EmptyParamName));
        assert_eq!(Params::parse(";a="), Err(ValueError::EmptyParamValue));
        assert_eq!(Params::parse(";a=\"x"), Err(ValueError::UnterminatedQuote));
        assert_eq!(Params::parse(" junk"), Err(ValueError::Trailing));
        assert_eq!(Params::parse(";a b"), Err(ValueError::Trailing));
        assert!(Params::parse("").unwrap().is_empty());
    }

    #[test]
    fn leading_form() {
        let p = Params::parse_leading(
            "icid-value=1234bc9876e; icid-generated-at=192.0.6.8; orig-ioi=home1.net",
        )
        .unwrap();
        assert_eq!(p.value("icid-value"), Some("1234bc9876e"));
        assert_eq!(p.value("orig-ioi"), Some("home1.net"));
        assert_eq!(p.iter().count(), 3);
    }
}
