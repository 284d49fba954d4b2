//! Keyed pseudonyms: HMAC-SHA256 (RFC 2104, SHA-256 per FIPS 180-4, test vectors RFC 4231)
//! over a scoped, kind-separated identifier, printed in a stable text form.
//!
//! # Format (a stable contract: stored CDRs, erasure and filters depend on it)
//!
//! ```text
//! mac       = HMAC-SHA256(secret, scope || 0x00 || kind || 0x00 || identifier)
//! pseudonym = <prefix> "_" <key id> "_" base32(mac[0..16])
//! ```
//!
//! - `secret` is the 256-bit key named by `key id` in the key file ([`super::keys`]).
//! - `scope` is the tenant or instance id ([`Scope`]): the same subscriber seen by two
//!   tenants gets two unrelated pseudonyms, so tenants cannot link their data.
//! - `kind` is the identifier class label ([`Kind::label`], e.g. `number`, `uri-user`) so a
//!   number and, say, a Call-ID with the same bytes never share a pseudonym.
//! - `identifier` is the normalised identifier ([`super::normalize`]) as raw bytes: it is
//!   last, so NUL bytes or invalid UTF-8 in it cannot make two inputs collide.
//! - `base32` is RFC 4648 §6 base32, lowercase, without padding: 16 bytes (128 bits) give
//!   26 characters.
//! - `prefix` is [`Kind::prefix`]: `n` number, `u` URI user, `d` domain, `ip` IP address,
//!   `cid` Call-ID, `dn` display name, `ua` User-Agent.
//!
//! Example: `n_k1_` followed by 26 base32 characters.
#![deny(clippy::indexing_slicing, clippy::panic)]

use hmac::{Mac, SimpleHmac};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::keys::Key;

/// SHA-256 block size: HMAC pads or hashes the key to this length (RFC 2104 §2).
const BLOCK: usize = 64;
/// Bytes of the MAC kept in a pseudonym (128 bits).
pub const PSEUDONYM_MAC_BYTES: usize = 16;
/// Longest scope accepted, in bytes.
pub const SCOPE_MAX: usize = 64;

/// The class of an identifier: part of the MAC input and of the printed prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A telephone number (normalised to `+<digits>` where the prefix is known).
    Number,
    /// A SIP URI user part that is not a telephone number.
    UriUser,
    /// A SIP URI host name (lowercased).
    Domain,
    /// An IPv4 or IPv6 address (4 or 16 bytes).
    Ip,
    /// A SIP Call-ID.
    CallId,
    /// A display name.
    DisplayName,
    /// A User-Agent or Server header value.
    UserAgent,
}

impl Kind {
    /// Every kind, in a fixed order.
    pub const ALL: [Kind; 7] = [
        Kind::Number,
        Kind::UriUser,
        Kind::Domain,
        Kind::Ip,
        Kind::CallId,
        Kind::DisplayName,
        Kind::UserAgent,
    ];

    /// The label hashed into the MAC input.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Number => "number",
            Kind::UriUser => "uri-user",
            Kind::Domain => "domain",
            Kind::Ip => "ip",
            Kind::CallId => "call-id",
            Kind::DisplayName => "display-name",
            Kind::UserAgent => "user-agent",
        }
    }

    /// The prefix of the printed pseudonym.
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Number => "n",
            Kind::UriUser => "u",
            Kind::Domain => "d",
            Kind::Ip => "ip",
            Kind::CallId => "cid",
            Kind::DisplayName => "dn",
            Kind::UserAgent => "ua",
        }
    }

    /// The kind a printed prefix stands for.
    pub fn from_prefix(prefix: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.prefix() == prefix)
    }
}

/// A validated scope (tenant or instance id): 1 to [`SCOPE_MAX`] bytes of ASCII letters,
/// digits, `.`, `-`, `_` or `:`. The restriction keeps the value printable in configs and
/// logs and free of the 0x00 separator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(String);

/// A scope that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope {0:?} is invalid: use 1 to 64 ASCII letters, digits, '.', '-', '_' or ':'")]
pub struct ScopeError(pub String);

impl Scope {
    /// Validates a scope.
    pub fn try_new(scope: &str) -> Result<Self, ScopeError> {
        let ok = !scope.is_empty()
            && scope.len() <= SCOPE_MAX
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        if ok {
            Ok(Scope(scope.to_owned()))
        } else {
            Err(ScopeError(scope.to_owned()))
        }
    }

    /// The scope text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `parts` under `key`, any key length.
///
/// The key block is built here (hashed when longer than the 64-byte block, zero-padded
/// otherwise, as RFC 2104 §2 says), which makes keying infallible and lets the block be
/// zeroized after use.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        let mut digest = Sha256::digest(key);
        for (dst, src) in block.iter_mut().zip(digest.iter()) {
            *dst = *src;
        }
        digest.as_mut_slice().zeroize();
    } else {
        for (dst, src) in block.iter_mut().zip(key.iter()) {
            *dst = *src;
        }
    }
    let mut mac = <SimpleHmac<Sha256> as Mac>::new(&block.into());
    block.zeroize();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The truncated MAC of one identifier under one secret (the core of [`pseudonym`]).
pub fn pseudonym_mac(
    secret: &[u8],
    scope: &Scope,
    kind: Kind,
    identifier: &[u8],
) -> [u8; PSEUDONYM_MAC_BYTES] {
    let full = hmac_sha256(
        secret,
        &[
            scope.as_str().as_bytes(),
            &[0],
            kind.label().as_bytes(),
            &[0],
            identifier,
        ],
    );
    let mut out = [0u8; PSEUDONYM_MAC_BYTES];
    for (dst, src) in out.iter_mut().zip(full.iter()) {
        *dst = *src;
    }
    out
}

/// The printed pseudonym of a normalised identifier under `key` (see the module docs).
pub fn pseudonym(key: &Key, scope: &Scope, kind: Kind, identifier: &[u8]) -> String {
    let mac = pseudonym_mac(key.secret().expose(), scope, kind, identifier);
    format_pseudonym(kind, key.id().as_str(), &mac)
}

type MemoMap = std::collections::HashMap<Box<[u8]>, Vec<(Kind, String)>>;

/// Pseudonyms computed lately, by identifier class and normalised identifier: the same
/// parties and Call-ID come back in every flow event and the CDR of a call, and an HMAC
/// with its formatting costs a few microseconds each time. Bounded: emptied when full.
/// The identifiers it holds never leave the process (as everywhere before the boundary).
#[derive(Debug, Default)]
pub struct Memo {
    /// By identifier, then class (an identifier is seen as very few classes).
    map: std::sync::Mutex<MemoMap>,
}

impl Memo {
    /// Most pseudonyms remembered.
    pub const CAPACITY: usize = 16_384;

    /// The pseudonym of (`kind`, `identifier`), computed by `make` when not remembered.
    pub fn get_or(&self, kind: Kind, identifier: &[u8], make: impl FnOnce() -> String) -> String {
        let Ok(mut map) = self.map.lock() else {
            return make();
        };
        if let Some((_, p)) = map
            .get(identifier)
            .and_then(|v| v.iter().find(|(k, _)| *k == kind))
        {
            return p.clone();
        }
        let p = make();
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.entry(identifier.into())
            .or_default()
            .push((kind, p.clone()));
        p
    }
}

/// Prints a pseudonym from its parts.
pub fn format_pseudonym(kind: Kind, key_id: &str, mac: &[u8; PSEUDONYM_MAC_BYTES]) -> String {
    let b32 = data_encoding::BASE32_NOPAD.encode(mac).to_ascii_lowercase();
    format!("{}_{}_{}", kind.prefix(), key_id, b32)
}

/// A pseudonym read back from its text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedPseudonym<'a> {
    /// The identifier class.
    pub kind: Kind,
    /// The key id.
    pub key_id: &'a str,
    /// The 128-bit truncated MAC.
    pub mac: [u8; PSEUDONYM_MAC_BYTES],
}

/// Reads a pseudonym in the text form of the module docs; `None` when `text` is not one
/// (for example to validate an erasure request before sending it).
pub fn parse_pseudonym(text: &str) -> Option<ParsedPseudonym<'_>> {
    let mut parts = text.splitn(3, '_');
    let kind = Kind::from_prefix(parts.next()?)?;
    let key_id = parts.next()?;
    let b32 = parts.next()?;
    if !super::keys::KeyId::is_valid(key_id) || b32.len() != 26 {
        return None;
    }
    if b32.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let decoded = data_encoding::BASE32_NOPAD
        .decode(b32.to_ascii_uppercase().as_bytes())
        .ok()?;
    let mac: [u8; PSEUDONYM_MAC_BYTES] = decoded.as_slice().try_into().ok()?;
    Some(ParsedPseudonym { kind, key_id, mac })
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

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .unwrap()
    }

    fn check(key: &[u8], data: &[u8], expected_hex: &str) {
        let mac = hmac_sha256(key, &[data]);
        assert_eq!(data_encoding::HEXLOWER.encode(&mac), expected_hex);
        // The same message split across parts must give the same MAC.
        let (a, b) = data.split_at(data.len() / 2);
        assert_eq!(hmac_sha256(key, &[a, &[], b]), mac);
    }

    // RFC 4231 §4.2..§4.8, HMAC-SHA-256 results (test case 5 is omitted: it checks a
    // 128-bit truncation, which the RFC itself presents separately).
    #[test]
    fn rfc4231_case_1() {
        check(
            &[0x0b; 20],
            b"Hi There",
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        );
    }

    #[test]
    fn rfc4231_case_2() {
        check(
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        );
    }

    #[test]
    fn rfc4231_case_3() {
        check(
            &[0xaa; 20],
            &[0xdd; 50],
            "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        );
    }

    #[test]
    fn rfc4231_case_4() {
        check(
            &hex("0102030405060708090a0b0c0d0e0f10111213141516171819"),
            &[0xcd; 50],
            "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        );
    }

    #[test]
    fn rfc4231_case_6_key_longer_than_block() {
        check(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        );
    }

    #[test]
    fn rfc4231_case_7_key_and_data_longer_than_block() {
        check(
            &[0xaa; 131],
            b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        );
    }

    #[test]
    fn key_of_exactly_one_block_is_not_hashed() {
        // Independent reference: python3 -c 'import hmac,hashlib;
        //   print(hmac.new(bytes(range(64)), b"block", hashlib.sha256).hexdigest())'
        check(
            &(0u8..64).collect::<Vec<_>>(),
            b"block",
            "0c4195064dd4ca79599d2b8508c3f4c5f3805080dd6b451ca30e7d2da73a2c3d",
        );
    }

    #[test]
    fn prefixes_round_trip_and_are_distinct() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_prefix(k.prefix()), Some(k));
        }
        assert_eq!(Kind::from_prefix("x"), None);
    }

    #[test]
    fn scope_validation() {
        assert!(Scope::try_new("tenant-a").is_ok());
        assert!(Scope::try_new("acme:eu-west.1_b").is_ok());
        assert!(Scope::try_new("").is_err());
        assert!(Scope::try_new("a\0b").is_err());
        assert!(Scope::try_new("two words").is_err());
        assert!(Scope::try_new(&"a".repeat(65)).is_err());
    }

    #[test]
    fn parse_reads_back_format() {
        let mac = [0xffu8; 16];
        let text = format_pseudonym(Kind::CallId, "k7", &mac);
        // RFC 4648 §6: 16 bytes of 0xff = 25 x '7' (31) then '4' (0b11100, zero-filled).
        // python3 -c 'import base64; print(base64.b32encode(b"\xff"*16).decode().lower())'
        assert_eq!(text, format!("cid_k7_{}4", "7".repeat(25)));
        let p = parse_pseudonym(&text).unwrap();
        assert_eq!((p.kind, p.key_id, p.mac), (Kind::CallId, "k7", mac));
        assert!(parse_pseudonym("n_k1_short").is_none());
        assert!(parse_pseudonym(&format!("zz_k1_{}", "a".repeat(26))).is_none());
        assert!(parse_pseudonym(&format!("n_k1_{}", "A".repeat(26))).is_none());
        assert!(parse_pseudonym(&format!("n__{}", "a".repeat(26))).is_none());
    }

    /// The memo gives what it was given for the same (class, identifier), tells classes
    /// apart, computes each once, and stays within its capacity.
    #[test]
    fn the_memo_computes_each_pseudonym_once_within_its_bound() {
        let memo = Memo::default();
        let mut made = 0;
        let mut get = |kind, id: &[u8]| {
            memo.get_or(kind, id, || {
                made += 1;
                format!("{kind:?}:{}", String::from_utf8_lossy(id))
            })
        };
        assert_eq!(get(Kind::Number, b"+4420"), "Number:+4420");
        assert_eq!(get(Kind::Number, b"+4420"), "Number:+4420");
        assert_eq!(get(Kind::UriUser, b"+4420"), "UriUser:+4420");
        assert_eq!(made, 2);
        for i in 0..Memo::CAPACITY + 10 {
            memo.get_or(Kind::CallId, i.to_string().as_bytes(), String::new);
        }
        assert!(memo.map.lock().unwrap().len() <= Memo::CAPACITY);
    }
}
