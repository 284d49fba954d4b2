//! Bearer tokens of the collector: JSON Web Tokens (RFC 7519) signed with HMAC-SHA256 as a
//! JWS in compact serialisation (RFC 7515 §7.1, algorithm `HS256` of RFC 7518 §3.2), with
//! a subject, a role and an expiry, issued by `collector token` from the server's secret
//! file.
//!
//! Written by hand over `hmac`/`sha2` rather than through a JWT library: the collector
//! needs one algorithm, and accepting only `HS256` (never `none`, never an algorithm named
//! by the token) is then a single comparison. The signature is checked in constant time
//! before any claim is read.
//!
//! The secret file holds 32 random bytes as 64 hex digits; like the pseudonymization keys it
//! must not be readable by group or others.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    fs::OpenOptions,
    io::{Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use data_encoding::BASE64URL_NOPAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use thiserror::Error;
use zeroize::Zeroizing;

/// Bytes of a token secret (256 bits, the HMAC-SHA256 output size RFC 7518 §3.2 asks for
/// at least).
pub const SECRET_BYTES: usize = 32;
/// Longest token accepted, in bytes (a real one is about 200).
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest subject accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 128;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Agents: stream CDRs into `Ingest`.
    Ingest,
    /// Operators and reports: query CDRs, statistics and retention state.
    Read,
    /// Administrators: everything `read` may, plus erasure.
    Admin,
    /// The provider's own operators: everything `admin` may, for every tenant at once, and
    /// the tenant list. A provider token names no tenant.
    Provider,
}

impl Role {
    /// The role's name in tokens and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
            Role::Provider => "provider",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            "provider" => Ok(Role::Provider),
            _ => Err(TokenError::UnknownRole(s.to_string())),
        }
    }
}

/// The claims the collector issues and checks (RFC 7519 §4.1 names plus `role`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who holds the token (an agent id or an operator name); written to the audit log.
    pub sub: String,
    /// What the holder may do.
    pub role: Role,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expiry, Unix seconds: the token is refused at and after this instant.
    pub exp: u64,
    /// The tenant (customer) the holder belongs to; absent in tokens issued before tenants
    /// existed, which belong to [`DEFAULT_TENANT`]. A provider token carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The tenant of tokens and agents that name none.
pub const DEFAULT_TENANT: &str = "default";
/// Longest tenant name, in bytes.
pub const MAX_TENANT_LEN: usize = 64;

/// A tenant name is 1..=[`MAX_TENANT_LEN`] ASCII letters, digits, `-`, `_` or `.`.
pub fn valid_tenant(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TENANT_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Claims {
    /// The tenant the token confines its holder to: `None` for a provider token (every
    /// tenant), else the token's tenant or [`DEFAULT_TENANT`].
    pub fn scope(&self) -> Option<String> {
        match self.role {
            Role::Provider => None,
            _ => Some(
                self.tenant
                    .clone()
                    .unwrap_or_else(|| DEFAULT_TENANT.to_owned()),
            ),
        }
    }
}

/// Why a token or a secret cannot be used.
#[derive(Debug, Error)]
pub enum TokenError {
    /// Not three base64url parts, or a part does not decode.
    #[error("malformed token")]
    Malformed,
    /// The header names another algorithm than HS256 (including `none`).
    #[error("unsupported token algorithm (only HS256 is accepted)")]
    Algorithm,
    /// The signature does not verify under the server's secret.
    #[error("bad token signature")]
    Signature,
    /// The claims are not the collector's.
    #[error("token claims are invalid")]
    Claims,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// A role name that does not exist.
    #[error("unknown role {0:?}: use ingest, read, admin or provider")]
    UnknownRole(String),
    /// The subject is empty or too long.
    #[error("token subject must be 1..={MAX_SUBJECT_LEN} bytes")]
    Subject,
    /// The tenant name is not valid, or a provider token was given one.
    #[error("tenant must be 1..={MAX_TENANT_LEN} letters, digits, '-', '_' or '.' (and a provider token names none)")]
    Tenant,
    /// The secret file cannot be read or written.
    #[error("token secret file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The secret file is readable or writable by group or others.
    #[error("token secret file {path} has mode {mode:04o}: group and others must have no access (chmod 600)")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret file does not hold 64 hex digits.
    #[error("token secret file {0} must hold {n} hex digits", n = 2 * SECRET_BYTES)]
    SecretFormat(PathBuf),
    /// No randomness for a new secret.
    #[error("no randomness for a new secret: {0}")]
    Random(String),
}

/// The server's signing secret (zeroized on drop; never printed).
#[derive(Clone)]
pub struct TokenSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

impl TokenSecret {
    /// A secret from raw bytes (tests, tools).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// Loads the secret file (mode must keep group and others out).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = std::fs::File::open(path).map_err(io)?;
        let mode = f.metadata().map_err(io)?.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = Zeroizing::new(String::new());
        std::io::Read::take(&mut f, 4 * SECRET_BYTES as u64)
            .read_to_string(&mut text)
            .map_err(io)?;
        let bytes = data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.trim().as_bytes())
            .map_err(|_| TokenError::SecretFormat(path.to_path_buf()))?;
        if bytes.len() != SECRET_BYTES {
            return Err(TokenError::SecretFormat(path.to_path_buf()));
        }
        Ok(Self(Zeroizing::new(bytes)))
    }

    /// Writes a new random secret to `path` (mode 0600); refuses to overwrite a file, since
    /// that would invalidate every token issued.
    pub fn generate(path: &Path) -> Result<Self, TokenError> {
        let mut bytes = Zeroizing::new(vec![0u8; SECRET_BYTES]);
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        let hex = Zeroizing::new(data_encoding::HEXLOWER.encode(&bytes));
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(hex.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        Ok(Self(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length (RFC 2104 §2): this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()))
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// Signs `payload` as an HS256 JWS in compact serialisation (RFC 7515 §7.1) with the
/// header `header`.
pub fn jws_sign(secret: &TokenSecret, header: &[u8], payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(header),
        BASE64URL_NOPAD.encode(payload)
    );
    let mut mac = secret.mac();
    mac.update(input.as_bytes());
    let sig = mac.finalize().into_bytes();
    format!("{input}.{}", BASE64URL_NOPAD.encode(&sig))
}

/// Verifies an HS256 JWS in compact serialisation and returns its payload. The header
/// must name `HS256`; the signature is compared in constant time.
pub fn jws_verify(secret: &TokenSecret, token: &str) -> Result<Vec<u8>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| {
        BASE64URL_NOPAD
            .decode(part.as_bytes())
            .map_err(|_| TokenError::Malformed)
    };
    let header: Header = serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm);
    }
    let sig = decode(s)?;
    let mut mac = secret.mac();
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
    decode(p)
}

/// Issues a token for `sub` with `role` in the default tenant, valid from `now_s` for
/// `ttl_s` seconds.
pub fn issue(
    secret: &TokenSecret,
    sub: &str,
    role: Role,
    now_s: u64,
    ttl_s: u64,
) -> Result<String, TokenError> {
    issue_for(secret, sub, role, None, now_s, ttl_s)
}

/// Issues a token for `sub` with `role` in `tenant` (`None`: the default tenant; must be
/// `None` for a provider token), valid from `now_s` for `ttl_s` seconds.
pub fn issue_for(
    secret: &TokenSecret,
    sub: &str,
    role: Role,
    tenant: Option<&str>,
    now_s: u64,
    ttl_s: u64,
) -> Result<String, TokenError> {
    if sub.is_empty() || sub.len() > MAX_SUBJECT_LEN {
        return Err(TokenError::Subject);
    }
    if tenant.is_some_and(|t| !valid_tenant(t) || role == Role::Provider) {
        return Err(TokenError::Tenant);
    }
    let claims = Claims {
        sub: sub.to_string(),
        role,
        iat: now_s,
        exp: now_s.saturating_add(ttl_s),
        tenant: tenant.map(str::to_owned),
    };
    let header = serde_json::to_vec(&Header {
        alg: "HS256".into(),
        typ: Some("JWT".into()),
    })
    .map_err(|_| TokenError::Claims)?;
    let payload = serde_json::to_vec(&claims).map_err(|_| TokenError::Claims)?;
    Ok(jws_sign(secret, &header, &payload))
}

/// Verifies a token at `now_s` and returns its claims.
pub fn verify(secret: &TokenSecret, token: &str, now_s: u64) -> Result<Claims, TokenError> {
    let payload = jws_verify(secret, token)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Claims)?;
    if claims.sub.is_empty() || claims.sub.len() > MAX_SUBJECT_LEN {
        return Err(TokenError::Claims);
    }
    if claims
        .tenant
        .as_deref()
        .is_some_and(|t| !valid_tenant(t) || claims.role == Role::Provider)
    {
        return Err(TokenError::Claims);
    }
    if now_s >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
mod tests {
    use super::*;

    /// RFC 7515 Appendix A.1: the HS256 example, key and expected serialisation.
    const RFC7515_KEY: &str =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    const RFC7515_JWS: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
        eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
        dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn rfc_key() -> TokenSecret {
        TokenSecret::from_bytes(&BASE64URL_NOPAD.decode(RFC7515_KEY.as_bytes()).unwrap())
    }

    #[test]
    fn rfc7515_a1_signs_and_verifies() {
        let header = b"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}";
        let payload =
            b"{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";
        assert_eq!(jws_sign(&rfc_key(), header, payload), RFC7515_JWS);
        assert_eq!(jws_verify(&rfc_key(), RFC7515_JWS).unwrap(), payload);
        // A flipped signature character, another key, or a changed payload fail.
        let mut bad = RFC7515_JWS.to_string();
        bad.pop();
        bad.push('Y');
        assert!(matches!(
            jws_verify(&rfc_key(), &bad),
            Err(TokenError::Signature)
        ));
        let other = TokenSecret::from_bytes(&[7; 32]);
        assert!(matches!(
            jws_verify(&other, RFC7515_JWS),
            Err(TokenError::Signature)
        ));
        // But it is not a collector token: no role, no subject.
        assert!(matches!(
            verify(&rfc_key(), RFC7515_JWS, 0),
            Err(TokenError::Claims)
        ));
    }

    #[test]
    fn issued_tokens_carry_role_and_expire() {
        let s = TokenSecret::from_bytes(&[1; 32]);
        let t = issue(&s, "sbc-1", Role::Ingest, 1_000, 60).unwrap();
        let c = verify(&s, &t, 1_059).unwrap();
        assert_eq!(
            c,
            Claims {
                sub: "sbc-1".into(),
                role: Role::Ingest,
                iat: 1_000,
                exp: 1_060,
                tenant: None,
            }
        );
        assert_eq!(c.scope().as_deref(), Some(DEFAULT_TENANT));
        assert!(matches!(verify(&s, &t, 1_060), Err(TokenError::Expired)));
        assert!(issue(&s, "", Role::Read, 0, 1).is_err());
    }

    #[test]
    fn tokens_name_their_tenant_and_a_provider_token_names_none() {
        let s = TokenSecret::from_bytes(&[1; 32]);
        let t = issue_for(&s, "ops", Role::Read, Some("acme"), 0, 60).unwrap();
        let c = verify(&s, &t, 1).unwrap();
        assert_eq!(c.tenant.as_deref(), Some("acme"));
        assert_eq!(c.scope().as_deref(), Some("acme"));
        let p = issue_for(&s, "noc", Role::Provider, None, 0, 60).unwrap();
        assert_eq!(verify(&s, &p, 1).unwrap().scope(), None);
        assert!(matches!(
            issue_for(&s, "noc", Role::Provider, Some("acme"), 0, 60),
            Err(TokenError::Tenant)
        ));
        for bad in ["", "a b", "x/y", &"t".repeat(MAX_TENANT_LEN + 1)] {
            assert!(matches!(
                issue_for(&s, "ops", Role::Read, Some(bad), 0, 60),
                Err(TokenError::Tenant)
            ));
        }
        // A signed token whose tenant claim is not a valid name is refused.
        let header = br#"{"alg":"HS256","typ":"JWT"}"#;
        let forged = jws_sign(
            &s,
            header,
            br#"{"sub":"x","role":"read","iat":0,"exp":99,"tenant":"a'b"}"#,
        );
        assert!(matches!(verify(&s, &forged, 1), Err(TokenError::Claims)));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let s = TokenSecret::from_bytes(&[1; 32]);
        let claims = br#"{"sub":"x","role":"admin","iat":0,"exp":99999999999}"#;
        for alg in ["none", "HS512", "RS256"] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            // Even correctly MACed, the algorithm is refused before anything else.
            let t = jws_sign(&s, header.as_bytes(), claims);
            assert!(
                matches!(verify(&s, &t, 0), Err(TokenError::Algorithm)),
                "{alg}"
            );
        }
        let unsigned = format!(
            "{}.{}.",
            BASE64URL_NOPAD.encode(br#"{"alg":"none"}"#),
            BASE64URL_NOPAD.encode(claims)
        );
        assert!(verify(&s, &unsigned, 0).is_err());
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(
                matches!(verify(&s, junk, 0), Err(TokenError::Malformed)),
                "{junk}"
            );
        }
    }

    #[test]
    fn secret_files_are_private_and_not_overwritten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let made = TokenSecret::generate(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = TokenSecret::load(&path).unwrap();
        assert_eq!(*made.0, *loaded.0);
        assert!(TokenSecret::generate(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            TokenSecret::load(&path),
            Err(TokenError::Permissions { mode: 0o640, .. })
        ));
    }
}
