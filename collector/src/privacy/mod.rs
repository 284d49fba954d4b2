//! Privacy at the edge: identifiers are pseudonymized, truncated or dropped in the agent,
//! before anything leaves the process (GDPR Art. 25 and 32; pseudonyms are keyed
//! HMAC-SHA256, RFC 2104, so returning callers stay recognisable and erasure can find them).
//!
//! - [`keys`]: the key file (mode 0600), rotation, `collector keygen`.
//! - [`normalize`]: one subscriber, one byte string (SIP/tel URIs, E.164 numbers).
//! - [`pseudonym`]: the HMAC and the stable pseudonym text format.
//! - [`policy`]: the `[privacy]` configuration and the [`Pseudonymizer`], the one place the
//!   agent applies the policy.
//! - [`inventory`]: the register of every CDR field and its protection.
//! - [`seal`]: encryption at rest (deterministic fields, records, wrapped data keys).
//!
//! Nothing here logs: identifiers in clear must never reach a log line.
#![forbid(unsafe_code)]

pub mod apply;
pub mod inventory;
pub mod keys;
pub mod normalize;
pub mod numbers;
pub mod policy;
pub mod pseudonym;
pub mod seal;

pub use keys::{KeyError, KeyRing};
pub use numbers::{NumberKeys, NumberKeysError};
pub use policy::{CallPrivacy, ConfigError, Consent, FieldPolicy, PrivacyConfig, Pseudonymizer};
pub use pseudonym::Kind;
