//! The privacy policy and the [`Pseudonymizer`], the one place the agent applies it.
//!
//! Every identifier of a CDR or a live event goes through a [`CallPrivacy`] method, which
//! returns what may leave the process (`None` = dropped). GDPR Art. 25 (data protection by
//! default): unless the operator's `[privacy]` table says otherwise, numbers, URI users,
//! domains and Call-IDs are pseudonymized ([`super::pseudonym`]), display names dropped,
//! IP addresses truncated (IPv4 /24, IPv6 /48) and only the User-Agent kept.
//!
//! ```toml
//! [privacy]
//! scope = "acme-eu"                      # tenant or instance id: scopes never link
//! key_file = "/etc/collector/keys.toml"  # from `collector keygen`
//! retention_days = 90                    # declared in the data inventory
//! national = { country_code = "44", trunk_prefix = "0" }  # international_prefix = "00"
//! consent = { header = "X-Consent", declined = ["no", "declined"] }
//! billing_rates = "/etc/collector/rates.csv"  # prefixes for callee_user = "billing"
//!
//! [privacy.fields]                       # overrides; unnamed fields keep the defaults
//! callee_user = { keep_prefix = { digits = 4 } }   # "+4420…n_k1_..."
//! # or: callee_user = "billing"  # pseudonym + CDR destination_prefix "+4420" (issue 24)
//! ip = { truncate = { v4_prefix = 24, v6_prefix = 56 } }
//! user_agent = "drop"
//! ```
//!
//! Under `billing` the callee number is pseudonymized as under `pseudonymize`, and the CDR's
//! `destination_prefix` gets the longest prefix of the normalised number that the rate table
//! named by `billing_rates` lists, or its country code alone
//! ([`crate::billing::destination_prefix`]): what the collector rates by, never the number.
//! The table is read once, by [`Pseudonymizer::try_new`], with the collector's validation.
//!
//! A call whose consent header carries a declined value ([`Consent::Declined`]) has every
//! identifier dropped, whatever the field policies say; only technical and quality fields
//! remain.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::keys::{KeyError, KeyRing};
use super::normalize::{self, Host, NationalRule, NationalRuleError, NumberRules};
use super::pseudonym::{self, Kind, Scope, ScopeError};
use crate::billing::{self, PrefixSet, RatesError};

/// Default retention declared in the inventory, in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// Default IPv4 truncation prefix length.
pub const DEFAULT_V4_PREFIX: u8 = 24;
/// Default IPv6 truncation prefix length.
pub const DEFAULT_V6_PREFIX: u8 = 48;
/// Under `keep_prefix`, a number keeps its prefix only if at least this many digits stay
/// hidden; shorter numbers get the pseudonym alone, so a prefix never spells a whole
/// extension or short code.
pub const MIN_HIDDEN_DIGITS: usize = 4;
/// Joins the clear prefix and the pseudonym under `keep_prefix` (`+4420…n_k1_...`).
pub const PREFIX_SEPARATOR: char = '…';
/// Most digits `keep_prefix` may keep (an E.164 number has at most 15).
pub const KEEP_PREFIX_MAX_DIGITS: u8 = 11;

/// What to do with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldPolicy {
    /// Replace by its keyed pseudonym.
    Pseudonymize,
    /// Numbers only: keep the first `digits` digits in clear, then the pseudonym of the
    /// whole number; other users are pseudonymized.
    KeepPrefix {
        /// Digits kept in clear (after the `+`).
        digits: u8,
    },
    /// IP addresses only: keep the network part.
    Truncate {
        /// IPv4 prefix length kept (0..=32).
        v4_prefix: u8,
        /// IPv6 prefix length kept (0..=128).
        v6_prefix: u8,
    },
    /// Never leaves the agent.
    Drop,
    /// Leaves the agent in clear.
    Keep,
    /// Callee number only: pseudonymized as under [`FieldPolicy::Pseudonymize`], and the
    /// CDR's `destination_prefix` holds the number's longest prefix in the rate table of
    /// `billing_rates` (or its country code alone), so calls can be rated (issue 24).
    Billing,
}

impl FieldPolicy {
    /// The policy's name in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            FieldPolicy::Pseudonymize => "pseudonymize",
            FieldPolicy::KeepPrefix { .. } => "keep_prefix",
            FieldPolicy::Truncate { .. } => "truncate",
            FieldPolicy::Drop => "drop",
            FieldPolicy::Keep => "keep",
            FieldPolicy::Billing => "billing",
        }
    }
}

impl fmt::Display for FieldPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPolicy::Pseudonymize => f.write_str("pseudonymized (keyed HMAC-SHA256)"),
            FieldPolicy::KeepPrefix { digits } => write!(
                f,
                "first {digits} digits in clear + pseudonym (keyed HMAC-SHA256)"
            ),
            FieldPolicy::Truncate {
                v4_prefix,
                v6_prefix,
            } => write!(f, "truncated to /{v4_prefix} (IPv4), /{v6_prefix} (IPv6)"),
            FieldPolicy::Drop => f.write_str("dropped in the agent"),
            FieldPolicy::Keep => f.write_str("kept in clear"),
            FieldPolicy::Billing => f.write_str(
                "pseudonymized (keyed HMAC-SHA256); rate-table prefix in destination_prefix",
            ),
        }
    }
}

/// The table forms of a policy.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum TaggedPolicy {
    KeepPrefix {
        digits: u8,
    },
    Truncate {
        #[serde(default = "default_v4")]
        v4_prefix: u8,
        #[serde(default = "default_v6")]
        v6_prefix: u8,
    },
}

fn default_v4() -> u8 {
    DEFAULT_V4_PREFIX
}

fn default_v6() -> u8 {
    DEFAULT_V6_PREFIX
}

const POLICY_NAMES: &[&str] = &[
    "pseudonymize",
    "keep_prefix",
    "truncate",
    "drop",
    "keep",
    "billing",
];

impl<'de> Deserialize<'de> for FieldPolicy {
    /// A name (`"pseudonymize"`, `"truncate"`, `"drop"`, `"keep"`, `"billing"`) or a table
    /// (`{ keep_prefix = { digits = 4 } }`, `{ truncate = { v4_prefix = 24 } }`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PolicyVisitor;
        impl<'de> Visitor<'de> for PolicyVisitor {
            type Value = FieldPolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"pseudonymize\", \"truncate\", \"drop\", \"keep\", \"billing\", \
                     { keep_prefix = { digits = N } } or { truncate = { v4_prefix = N, v6_prefix = N } }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldPolicy, E> {
                match v {
                    "pseudonymize" => Ok(FieldPolicy::Pseudonymize),
                    "truncate" => Ok(FieldPolicy::Truncate {
                        v4_prefix: DEFAULT_V4_PREFIX,
                        v6_prefix: DEFAULT_V6_PREFIX,
                    }),
                    "drop" => Ok(FieldPolicy::Drop),
                    "keep" => Ok(FieldPolicy::Keep),
                    "billing" => Ok(FieldPolicy::Billing),
                    "keep_prefix" => Err(E::custom(
                        "keep_prefix needs a digit count: { keep_prefix = { digits = N } }",
                    )),
                    other => Err(E::unknown_variant(other, POLICY_NAMES)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldPolicy, A::Error> {
                let tagged = TaggedPolicy::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match tagged {
                    TaggedPolicy::KeepPrefix { digits } => FieldPolicy::KeepPrefix { digits },
                    TaggedPolicy::Truncate {
                        v4_prefix,
                        v6_prefix,
                    } => FieldPolicy::Truncate {
                        v4_prefix,
                        v6_prefix,
                    },
                })
            }
        }
        d.deserialize_any(PolicyVisitor)
    }
}

/// The policy of every identifier field; see [`PolicyField`] for what each governs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldPolicies {
    /// Caller's URI user or number (From / P-Asserted-Identity). Default: pseudonymize.
    pub caller_user: FieldPolicy,
    /// Callee's URI user or number (To / Request-URI). Default: pseudonymize.
    pub callee_user: FieldPolicy,
    /// URI host names of both parties (IP literals follow `ip`). Default: pseudonymize.
    pub domain: FieldPolicy,
    /// Display names of both parties. Default: drop.
    pub display_name: FieldPolicy,
    /// Signalling and media IP addresses. Default: truncate to /24 and /48.
    pub ip: FieldPolicy,
    /// SIP Call-ID. Default: pseudonymize.
    pub call_id: FieldPolicy,
    /// User-Agent and Server header values. Default: keep.
    pub user_agent: FieldPolicy,
}

impl Default for FieldPolicies {
    fn default() -> Self {
        FieldPolicies {
            caller_user: FieldPolicy::Pseudonymize,
            callee_user: FieldPolicy::Pseudonymize,
            domain: FieldPolicy::Pseudonymize,
            display_name: FieldPolicy::Drop,
            ip: FieldPolicy::Truncate {
                v4_prefix: DEFAULT_V4_PREFIX,
                v6_prefix: DEFAULT_V6_PREFIX,
            },
            call_id: FieldPolicy::Pseudonymize,
            user_agent: FieldPolicy::Keep,
        }
    }
}

/// One configurable field of [`FieldPolicies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyField {
    /// `caller_user`.
    CallerUser,
    /// `callee_user`.
    CalleeUser,
    /// `domain`.
    Domain,
    /// `display_name`.
    DisplayName,
    /// `ip`.
    Ip,
    /// `call_id`.
    CallId,
    /// `user_agent`.
    UserAgent,
}

impl PolicyField {
    /// Every field.
    pub const ALL: [PolicyField; 7] = [
        PolicyField::CallerUser,
        PolicyField::CalleeUser,
        PolicyField::Domain,
        PolicyField::DisplayName,
        PolicyField::Ip,
        PolicyField::CallId,
        PolicyField::UserAgent,
    ];

    /// The key in `[privacy.fields]`.
    pub const fn name(self) -> &'static str {
        match self {
            PolicyField::CallerUser => "caller_user",
            PolicyField::CalleeUser => "callee_user",
            PolicyField::Domain => "domain",
            PolicyField::DisplayName => "display_name",
            PolicyField::Ip => "ip",
            PolicyField::CallId => "call_id",
            PolicyField::UserAgent => "user_agent",
        }
    }

    /// This field's policy in `policies`.
    pub fn of(self, policies: &FieldPolicies) -> FieldPolicy {
        match self {
            PolicyField::CallerUser => policies.caller_user,
            PolicyField::CalleeUser => policies.callee_user,
            PolicyField::Domain => policies.domain,
            PolicyField::DisplayName => policies.display_name,
            PolicyField::Ip => policies.ip,
            PolicyField::CallId => policies.call_id,
            PolicyField::UserAgent => policies.user_agent,
        }
    }

    /// Whether `policy` means something for this field.
    pub fn accepts(self, policy: FieldPolicy) -> bool {
        match policy {
            FieldPolicy::Pseudonymize | FieldPolicy::Drop | FieldPolicy::Keep => true,
            FieldPolicy::KeepPrefix { .. } => {
                matches!(self, PolicyField::CallerUser | PolicyField::CalleeUser)
            }
            FieldPolicy::Truncate { .. } => self == PolicyField::Ip,
            // The destination prefix is the called number's: a caller's prefix would say
            // where the subscriber lives, not what the call costs.
            FieldPolicy::Billing => self == PolicyField::CalleeUser,
        }
    }
}

/// Which SIP header value means the subscriber declined recording of their identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    /// Header name, matched case-insensitively (e.g. `X-Consent`).
    pub header: String,
    /// Values meaning "declined", matched case-insensitively against each comma-separated
    /// element of the header value, parameters (`;...`) removed.
    pub declined: Vec<String>,
}

/// Whether a call's subscriber declined (see [`ConsentConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// No declined value was seen: field policies apply.
    NotDeclined,
    /// Declined: every identifier is dropped.
    Declined,
}

/// The `[privacy]` table of the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Tenant or instance id hashed into every pseudonym (required to pseudonymize).
    #[serde(default)]
    pub scope: Option<String>,
    /// Key file written by `collector keygen` (required to pseudonymize).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// National numbering rule, e.g. country code 44 with trunk prefix 0.
    #[serde(default)]
    pub national: Option<NationalRule>,
    /// Consent header; none configured means no call is treated as declined.
    #[serde(default)]
    pub consent: Option<ConsentConfig>,
    /// Retention of stored CDRs declared in the inventory, in days.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Rate-table CSV (the collector's format, [`crate::billing::rates`]) whose prefixes the
    /// `billing` policy keeps; required by, and only allowed with, that policy.
    #[serde(default)]
    pub billing_rates: Option<PathBuf>,
    /// Per-field overrides of the default policy.
    #[serde(default)]
    pub fields: FieldPolicies,
}

fn default_retention_days() -> u32 {
    DEFAULT_RETENTION_DAYS
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        PrivacyConfig {
            scope: None,
            key_file: None,
            national: None,
            consent: None,
            retention_days: DEFAULT_RETENTION_DAYS,
            billing_rates: None,
            fields: FieldPolicies::default(),
        }
    }
}

/// Why a privacy configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file cannot be read.
    #[error("cannot read configuration {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid TOML of the expected shape.
    #[error("invalid privacy configuration")]
    Syntax(#[source] toml::de::Error),
    /// A field was given a policy it cannot have.
    #[error("privacy.fields.{field}: `{policy}` does not apply to this field")]
    NotApplicable {
        /// The field.
        field: &'static str,
        /// The policy.
        policy: &'static str,
    },
    /// A truncation prefix length is out of range.
    #[error("privacy.fields.{field}: {family} prefix /{got} is longer than /{max}")]
    PrefixLength {
        /// The field.
        field: &'static str,
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The configured length.
        got: u8,
        /// The address length.
        max: u8,
    },
    /// A `keep_prefix` digit count is out of range.
    #[error("privacy.fields.{field}: keep_prefix digits must be 1 to {max}, got {got}")]
    KeepPrefixDigits {
        /// The field.
        field: &'static str,
        /// The configured count.
        got: u8,
        /// The limit.
        max: u8,
    },
    /// The `billing` policy is configured without a rate table to take prefixes from.
    #[error(
        "privacy.fields.{field} = \"billing\" needs privacy.billing_rates, the rate-table CSV \
         whose prefixes are kept"
    )]
    BillingWithoutRates {
        /// The field.
        field: &'static str,
    },
    /// A rate table is configured but no field has the `billing` policy (it would be read
    /// and never used: most likely the policy was forgotten).
    #[error("privacy.billing_rates is set but no field has the \"billing\" policy (set privacy.fields.callee_user = \"billing\")")]
    RatesWithoutBilling,
    /// The rate table cannot be read.
    #[error("privacy.billing_rates: cannot read {path}")]
    BillingRatesRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The rate table is not a valid rate table (the cause names the line).
    #[error("privacy.billing_rates: invalid rate table {path}")]
    BillingRates {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        #[source]
        source: RatesError,
    },
    /// The consent header setting is unusable.
    #[error("privacy.consent: {0}")]
    Consent(&'static str),
    /// The configuration has a table or key this version does not know (a misspelled
    /// `[privacy]` would otherwise leave the agent on defaults without a word).
    #[error("unknown {0} in the agent configuration (known tables: agent, calls, privacy; [agent] keys: id)")]
    Unknown(String),
    /// No scope is configured.
    #[error("privacy.scope is required to pseudonymize (the tenant or instance id)")]
    MissingScope,
    /// No key file is configured.
    #[error("privacy.key_file is required to pseudonymize (create one with `collector keygen`)")]
    MissingKeyFile,
    /// The scope is invalid.
    #[error("privacy.scope")]
    Scope(#[from] ScopeError),
    /// The national rule is invalid.
    #[error("privacy.national")]
    National(#[from] NationalRuleError),
    /// The key file cannot be used.
    #[error("privacy.key_file")]
    Keys(#[from] KeyError),
}

/// The top-level tables an agent configuration may have, and the keys of its `[agent]`
/// table: anything else is refused, so that a misspelled table is an error and not a
/// silently ignored setting (`[privacy]`, `[calls]` themselves refuse unknown keys).
pub const AGENT_TABLES: [&str; 3] = ["agent", "calls", "privacy"];
/// The keys of the `[agent]` table.
pub const AGENT_KEYS: [&str; 2] = ["id", "fragment_timeout_ms"];

/// Refuses a table or `[agent]` key of an agent configuration that is not known.
fn check_agent_tables(table: &toml::Table) -> Result<(), ConfigError> {
    for (name, value) in table {
        if !AGENT_TABLES.contains(&name.as_str()) {
            return Err(ConfigError::Unknown(format!("table or key `{name}`")));
        }
        if name == "agent" {
            let Some(agent) = value.as_table() else {
                return Err(ConfigError::Unknown(
                    "`agent` that is not a table".to_owned(),
                ));
            };
            if let Some(key) = agent.keys().find(|k| !AGENT_KEYS.contains(&k.as_str())) {
                return Err(ConfigError::Unknown(format!("key `agent.{key}`")));
            }
        }
    }
    Ok(())
}

impl PrivacyConfig {
    /// The `[privacy]` table of an agent configuration text (defaults when absent).
    pub fn from_agent_toml(text: &str) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(ConfigError::Syntax)?;
        check_agent_tables(&table)?;
        let config = match table.remove("privacy") {
            Some(value) => value.try_into().map_err(ConfigError::Syntax)?,
            None => PrivacyConfig::default(),
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads the `[privacy]` table of an agent configuration file.
    pub fn load_agent_config(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_agent_toml(&text)
    }

    /// Whether a field has the `billing` policy (the rate table is then read at start).
    pub fn uses_billing(&self) -> bool {
        PolicyField::ALL
            .iter()
            .any(|f| f.of(&self.fields) == FieldPolicy::Billing)
    }

    /// The prefixes of the `billing_rates` table, read and validated as the collector
    /// validates rate tables (errors name the line); empty when no field uses `billing`.
    pub fn load_billing_prefixes(&self) -> Result<PrefixSet, ConfigError> {
        let Some(path) = self
            .billing_rates
            .as_deref()
            .filter(|_| self.uses_billing())
        else {
            return Ok(PrefixSet::default());
        };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::BillingRatesRead {
                path: path.to_owned(),
                source,
            })?;
        PrefixSet::parse(&text).map_err(|source| ConfigError::BillingRates {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks every setting that does not need the key file or the rate table.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for field in PolicyField::ALL {
            let policy = field.of(&self.fields);
            if !field.accepts(policy) {
                return Err(ConfigError::NotApplicable {
                    field: field.name(),
                    policy: policy.name(),
                });
            }
            match policy {
                FieldPolicy::KeepPrefix { digits } => {
                    if digits == 0 || digits > KEEP_PREFIX_MAX_DIGITS {
                        return Err(ConfigError::KeepPrefixDigits {
                            field: field.name(),
                            got: digits,
                            max: KEEP_PREFIX_MAX_DIGITS,
                        });
                    }
                }
                FieldPolicy::Truncate {
                    v4_prefix,
                    v6_prefix,
                } => {
                    for (family, got, max) in [("IPv4", v4_prefix, 32), ("IPv6", v6_prefix, 128)] {
                        if got > max {
                            return Err(ConfigError::PrefixLength {
                                field: field.name(),
                                family,
                                got,
                                max,
                            });
                        }
                    }
                }
                FieldPolicy::Billing => {
                    if self.billing_rates.is_none() {
                        return Err(ConfigError::BillingWithoutRates {
                            field: field.name(),
                        });
                    }
                }
                FieldPolicy::Pseudonymize | FieldPolicy::Drop | FieldPolicy::Keep => {}
            }
        }
        if self.billing_rates.is_some() && !self.uses_billing() {
            return Err(ConfigError::RatesWithoutBilling);
        }
        if let Some(c) = &self.consent {
            let token = |b: u8| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b);
            if c.header.is_empty() || !c.header.bytes().all(token) {
                return Err(ConfigError::Consent(
                    "header must be a SIP header name (RFC 3261 token)",
                ));
            }
            if c.declined.is_empty() || c.declined.iter().any(|v| v.trim().is_empty()) {
                return Err(ConfigError::Consent(
                    "declined must list at least one non-empty value",
                ));
            }
        }
        if let Some(scope) = &self.scope {
            Scope::try_new(scope)?;
        }
        NumberRules::try_new(self.national.as_ref())?;
        Ok(())
    }
}

/// Applies the privacy policy: the only place identifiers are turned into what may leave
/// the agent.
#[derive(Debug)]
pub struct Pseudonymizer {
    scope: Scope,
    keys: KeyRing,
    rules: NumberRules,
    fields: FieldPolicies,
    consent: Option<ConsentConfig>,
    memo: pseudonym::Memo,
    /// Prefixes kept under the `billing` policy (empty without it).
    prefixes: PrefixSet,
}

impl Pseudonymizer {
    /// A pseudonymizer from a configuration and an already loaded key ring; reads the
    /// `billing_rates` table when a field has the `billing` policy.
    pub fn try_new(config: &PrivacyConfig, keys: KeyRing) -> Result<Self, ConfigError> {
        config.validate()?;
        let scope = Scope::try_new(config.scope.as_deref().ok_or(ConfigError::MissingScope)?)?;
        Ok(Pseudonymizer {
            scope,
            keys,
            rules: NumberRules::try_new(config.national.as_ref())?,
            fields: config.fields.clone(),
            consent: config.consent.clone(),
            memo: pseudonym::Memo::default(),
            prefixes: config.load_billing_prefixes()?,
        })
    }

    /// A pseudonymizer from a configuration, loading its key file.
    pub fn from_config(config: &PrivacyConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        if config.scope.is_none() {
            return Err(ConfigError::MissingScope);
        }
        let path = config
            .key_file
            .as_deref()
            .ok_or(ConfigError::MissingKeyFile)?;
        Self::try_new(config, KeyRing::load(path)?)
    }

    /// The scope hashed into every pseudonym.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// The field policies in force.
    pub fn policies(&self) -> &FieldPolicies {
        &self.fields
    }

    /// The consent of a call from its SIP headers (name, value): declined when the
    /// configured header carries a configured value.
    pub fn consent<'h>(&self, headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>) -> Consent {
        let Some(cfg) = &self.consent else {
            return Consent::NotDeclined;
        };
        let declined = headers
            .into_iter()
            .filter(|(name, _)| {
                name.trim_ascii()
                    .eq_ignore_ascii_case(cfg.header.as_bytes())
            })
            .flat_map(|(_, value)| value.split(|&b| b == b','))
            .map(|element| {
                let v = element.split(|&b| b == b';').next().unwrap_or_default();
                v.trim_ascii()
            })
            .any(|v| {
                cfg.declined
                    .iter()
                    .any(|d| d.trim().as_bytes().eq_ignore_ascii_case(v))
            });
        if declined {
            Consent::Declined
        } else {
            Consent::NotDeclined
        }
    }

    /// The per-call view through which a call's fields are protected.
    pub fn call(&self, consent: Consent) -> CallPrivacy<'_> {
        CallPrivacy { pz: self, consent }
    }

    /// The pseudonym of a normalised identifier under the active key.
    fn pseudonym(&self, kind: Kind, bytes: &[u8]) -> String {
        self.memo.get_or(kind, bytes, || {
            pseudonym::pseudonym(self.keys.active(), &self.scope, kind, bytes)
        })
    }

    /// Normalises `input` read as `kind`; number and URI-user inputs are classified by
    /// their content, domains may turn out to be IP addresses.
    fn normalized<'i>(&self, kind: Kind, input: &'i [u8]) -> Option<(Kind, Cow<'i, [u8]>)> {
        match kind {
            Kind::Number | Kind::UriUser => {
                let s = normalize::subscriber(input, &self.rules)?;
                Some((s.kind, Cow::Owned(s.bytes)))
            }
            Kind::Domain | Kind::Ip => match normalize::host_part(input)? {
                Host::Ip(ip) => Some((Kind::Ip, Cow::Owned(normalize::ip_bytes(ip)))),
                Host::Name(_) if kind == Kind::Ip => None,
                Host::Name(name) => Some((Kind::Domain, Cow::Owned(name))),
            },
            Kind::CallId => Some((Kind::CallId, Cow::Borrowed(normalize::call_id(input)?))),
            Kind::DisplayName => Some((
                Kind::DisplayName,
                Cow::Borrowed(normalize::display_name(input)?),
            )),
            Kind::UserAgent => {
                let t = input.trim_ascii();
                (!t.is_empty()).then_some((Kind::UserAgent, Cow::Borrowed(t)))
            }
        }
    }

    /// Every pseudonym a subscriber (number, URI or URI user) has under the keys of the key
    /// file, active key first: what erasure and filters look for.
    pub fn pseudonyms_for(&self, identifier: &[u8]) -> Vec<String> {
        self.pseudonyms_for_kind(Kind::Number, identifier)
    }

    /// Every pseudonym `identifier`, read as `kind`, has under the keys of the key file,
    /// active key first. Numbers and URI users are classified by content, and a domain
    /// that is an IP literal is looked up as an IP; empty when nothing is left after
    /// normalisation.
    pub fn pseudonyms_for_kind(&self, kind: Kind, identifier: &[u8]) -> Vec<String> {
        let Some((kind, bytes)) = self.normalized(kind, identifier) else {
            return Vec::new();
        };
        self.keys
            .lookup_order()
            .map(|key| pseudonym::pseudonym(key, &self.scope, kind, &bytes))
            .collect()
    }
}

/// The policy applied to one call: each method returns what may leave the agent for one
/// field (`None` = dropped, also for empty input).
#[derive(Debug, Clone, Copy)]
pub struct CallPrivacy<'a> {
    pz: &'a Pseudonymizer,
    consent: Consent,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `+4420` for `+442079460000` and 4 digits; `None` when fewer than
/// [`MIN_HIDDEN_DIGITS`] would stay hidden.
fn clear_prefix(number: &[u8], digits: u8) -> Option<String> {
    let (plus, rest) = match number.split_first() {
        Some((b'+', rest)) => ("+", rest),
        _ => ("", number),
    };
    let keep = usize::from(digits);
    if rest.len() < keep.saturating_add(MIN_HIDDEN_DIGITS) {
        return None;
    }
    Some(format!("{plus}{}", lossy(rest.get(..keep)?)))
}

/// The network part of `ip` and its prefix length, as `192.0.2.0/24`.
pub fn truncate_ip(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let len = v4_prefix.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            format!("{}/{len}", Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let len = v6_prefix.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            format!("{}/{len}", Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

impl CallPrivacy<'_> {
    /// The consent this view applies.
    pub fn consent(&self) -> Consent {
        self.consent
    }

    fn declined(&self) -> bool {
        self.consent == Consent::Declined
    }

    fn user(&self, policy: FieldPolicy, input: &[u8]) -> Option<String> {
        if self.declined() {
            return None;
        }
        let s = normalize::subscriber(input, &self.pz.rules)?;
        match policy {
            // `billing` keeps the prefix in its own field ([`Self::destination_prefix`]).
            FieldPolicy::Pseudonymize | FieldPolicy::Billing => {
                Some(self.pz.pseudonym(s.kind, &s.bytes))
            }
            FieldPolicy::KeepPrefix { digits } => {
                let p = self.pz.pseudonym(s.kind, &s.bytes);
                match (s.kind, clear_prefix(&s.bytes, digits)) {
                    (Kind::Number, Some(prefix)) => Some(format!("{prefix}{PREFIX_SEPARATOR}{p}")),
                    _ => Some(p),
                }
            }
            FieldPolicy::Keep => Some(lossy(&s.bytes)),
            // Fail closed on a policy that validation refuses for users.
            FieldPolicy::Truncate { .. } | FieldPolicy::Drop => None,
        }
    }

    /// The caller's user or number (a URI, name-addr, tel URI, or bare user/number).
    pub fn caller_user(&self, input: &[u8]) -> Option<String> {
        self.user(self.pz.fields.caller_user, input)
    }

    /// The callee's user or number (a URI, name-addr, tel URI, or bare user/number).
    pub fn callee_user(&self, input: &[u8]) -> Option<String> {
        self.user(self.pz.fields.callee_user, input)
    }

    /// The destination prefix of the callee (a URI, name-addr, tel URI, or bare number) under
    /// the `billing` policy: the longest prefix of the normalised number in the rate table,
    /// or its country code alone ([`billing::destination_prefix`]). `None` when the callee's
    /// policy is not `billing`, the subscriber declined, or the callee is no E.164 number
    /// (a URI user, or a national number without a national rule).
    pub fn destination_prefix(&self, callee: &[u8]) -> Option<String> {
        if self.declined() || self.pz.fields.callee_user != FieldPolicy::Billing {
            return None;
        }
        let s = normalize::subscriber(callee, &self.pz.rules)?;
        if s.kind != Kind::Number {
            return None;
        }
        let number = std::str::from_utf8(&s.bytes).ok()?;
        let prefix = billing::destination_prefix(number, &self.pz.prefixes);
        (!prefix.is_empty()).then_some(prefix)
    }

    /// A URI host (a URI, `user@host` or bare host); an IP literal follows the `ip` policy.
    pub fn domain(&self, input: &[u8]) -> Option<String> {
        if self.declined() {
            return None;
        }
        match normalize::host_part(input)? {
            Host::Ip(ip) => self.ip(ip),
            Host::Name(name) => self.simple(self.pz.fields.domain, Kind::Domain, &name),
        }
    }

    /// A display name.
    pub fn display_name(&self, input: &[u8]) -> Option<String> {
        let name = normalize::display_name(input)?;
        self.simple(self.pz.fields.display_name, Kind::DisplayName, name)
    }

    /// A signalling or media IP address.
    pub fn ip(&self, ip: IpAddr) -> Option<String> {
        if self.declined() {
            return None;
        }
        let ip = ip.to_canonical();
        match self.pz.fields.ip {
            FieldPolicy::Truncate {
                v4_prefix,
                v6_prefix,
            } => Some(truncate_ip(ip, v4_prefix, v6_prefix)),
            FieldPolicy::Pseudonymize => {
                Some(self.pz.pseudonym(Kind::Ip, &normalize::ip_bytes(ip)))
            }
            FieldPolicy::Keep => Some(ip.to_string()),
            FieldPolicy::KeepPrefix { .. } | FieldPolicy::Billing | FieldPolicy::Drop => None,
        }
    }

    /// A SIP Call-ID.
    pub fn call_id(&self, input: &[u8]) -> Option<String> {
        let id = normalize::call_id(input)?;
        self.simple(self.pz.fields.call_id, Kind::CallId, id)
    }

    /// A User-Agent or Server header value.
    pub fn user_agent(&self, input: &[u8]) -> Option<String> {
        let ua = input.trim_ascii();
        if ua.is_empty() {
            return None;
        }
        self.simple(self.pz.fields.user_agent, Kind::UserAgent, ua)
    }

    fn simple(&self, policy: FieldPolicy, kind: Kind, bytes: &[u8]) -> Option<String> {
        if self.declined() {
            return None;
        }
        match policy {
            FieldPolicy::Pseudonymize => Some(self.pz.pseudonym(kind, bytes)),
            FieldPolicy::Keep => Some(lossy(bytes)),
            FieldPolicy::KeepPrefix { .. }
            | FieldPolicy::Truncate { .. }
            | FieldPolicy::Billing
            | FieldPolicy::Drop => None,
        }
    }
}

#[cfg(test)]
#[path = "policy_billing_tests.rs"]
mod billing_tests;

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::privacy::keys::{Key, KeyId, Secret};
    use time::OffsetDateTime;

    fn key(id: &str, byte: u8, active: bool) -> Key {
        Key::new(
            KeyId::try_new(id).unwrap(),
            Secret::from_bytes([byte; 32]),
            OffsetDateTime::UNIX_EPOCH,
            active,
        )
    }

    fn pz(config_toml: &str) -> Pseudonymizer {
        let config = PrivacyConfig::from_agent_toml(config_toml).unwrap();
        let ring = KeyRing::try_new(vec![key("k1", 0x11, true)]).unwrap();
        Pseudonymizer::try_new(&config, ring).unwrap()
    }

    const UK: &str = "[privacy]\nscope = \"tenant-a\"\n\
        national = { country_code = \"44\", trunk_prefix = \"0\" }\n";

    #[test]
    fn defaults_protect_every_identifier() {
        let f = FieldPolicies::default();
        assert_eq!(f.caller_user, FieldPolicy::Pseudonymize);
        assert_eq!(f.callee_user, FieldPolicy::Pseudonymize);
        assert_eq!(f.domain, FieldPolicy::Pseudonymize);
        assert_eq!(f.display_name, FieldPolicy::Drop);
        assert_eq!(
            f.ip,
            FieldPolicy::Truncate {
                v4_prefix: 24,
                v6_prefix: 48
            }
        );
        assert_eq!(f.call_id, FieldPolicy::Pseudonymize);
        assert_eq!(f.user_agent, FieldPolicy::Keep);
        // An agent config without [privacy] gets exactly these.
        let c = PrivacyConfig::from_agent_toml("[agent]\nid = \"sbc-1\"\n").unwrap();
        assert_eq!(c.fields, f);
        assert_eq!(c.consent, None);
    }

    #[test]
    fn a_misspelled_table_or_key_is_refused() {
        // A typo must not leave the agent on default privacy settings.
        for (text, what) in [
            ("[privacyy]\nscope = \"t\"\n", "`privacyy`"),
            ("[Privacy]\nscope = \"t\"\n", "`Privacy`"),
            ("scope = \"t\"\n", "`scope`"),
            (
                "[agent]\nid = \"a\"\nkey_file = \"k\"\n",
                "`agent.key_file`",
            ),
            ("agent = 3\n", "`agent` that is not a table"),
        ] {
            let e = PrivacyConfig::from_agent_toml(text).unwrap_err();
            assert!(matches!(e, ConfigError::Unknown(_)), "{text}: {e:?}");
            assert!(e.to_string().contains(what), "{text}: {e}");
        }
        // And unknown keys inside [privacy] (serde's deny_unknown_fields).
        assert!(PrivacyConfig::from_agent_toml("[privacy]\nscop = \"t\"\n").is_err());
        // Every known table is accepted.
        PrivacyConfig::from_agent_toml("[agent]\nid = \"a\"\n[calls]\n[privacy]\nscope = \"t\"\n")
            .unwrap();
    }

    #[test]
    fn default_outputs() {
        let p = pz(UK);
        let call = p.call(Consent::NotDeclined);
        let user = call.caller_user(b"sip:+442079460000@example.com").unwrap();
        assert!(user.starts_with("n_k1_") && user.len() == 5 + 26, "{user}");
        assert!(call
            .callee_user(b"sip:alice@example.com")
            .unwrap()
            .starts_with("u_k1_"));
        assert!(call
            .domain(b"sip:alice@Example.com")
            .unwrap()
            .starts_with("d_k1_"));
        assert_eq!(
            call.domain(b"sip:alice@192.0.2.77:5060").unwrap(),
            "192.0.2.0/24"
        );
        assert_eq!(call.display_name(b"\"Alice\""), None);
        assert!(call
            .call_id(b"a84b4c76e66710@pc33")
            .unwrap()
            .starts_with("cid_k1_"));
        assert_eq!(
            call.user_agent(b"Asterisk PBX 20.1 ").unwrap(),
            "Asterisk PBX 20.1"
        );
        assert_eq!(
            call.ip("198.51.100.200".parse().unwrap()).unwrap(),
            "198.51.100.0/24"
        );
        assert_eq!(call.caller_user(b""), None);
    }

    /// Fixed vectors of the pseudonym format, computed once outside this code with:
    /// ```text
    /// python3 -c 'import hmac,hashlib,base64
    /// def p(scope,kind,prefix,ident,key=bytes(range(32)),kid="k1"):
    ///     mac=hmac.new(key,scope+b"\0"+kind+b"\0"+ident,hashlib.sha256).digest()[:16]
    ///     return f"{prefix}_{kid}_"+base64.b32encode(mac).decode().rstrip("=").lower()
    /// print(p(b"tenant-a",b"number","n",b"+442079460000"))   # and so on for each line
    /// '
    /// ```
    #[test]
    fn pseudonym_format_fixed_vectors() {
        let ring = |scope: &str| {
            let config = PrivacyConfig::from_agent_toml(&format!(
                "{}[privacy.fields]\ndisplay_name = \"pseudonymize\"\nip = \"pseudonymize\"\n",
                UK.replace("tenant-a", scope)
            ))
            .unwrap();
            let key = Key::new(
                KeyId::try_new("k1").unwrap(),
                Secret::from_bytes(core::array::from_fn(|i| i as u8)),
                OffsetDateTime::UNIX_EPOCH,
                true,
            );
            Pseudonymizer::try_new(&config, KeyRing::try_new(vec![key]).unwrap()).unwrap()
        };
        let a = ring("tenant-a");
        let call = a.call(Consent::NotDeclined);
        // +442079460000 (number), from its national spelling under the UK rule.
        assert_eq!(
            call.caller_user(b"020 7946 0000").unwrap(),
            "n_k1_lnbnqvjd5pj4wjxg7bkvf2gove"
        );
        assert_eq!(
            ring("tenant-b")
                .call(Consent::NotDeclined)
                .caller_user(b"+442079460000")
                .unwrap(),
            "n_k1_njrscb6cupzdla7dcjvrf6gvtq"
        );
        assert_eq!(
            call.callee_user(b"sip:alice@example.com").unwrap(),
            "u_k1_eo3ewccl4ibt3homiup2rzdaom"
        );
        assert_eq!(
            call.callee_user(b"a\0b").unwrap(),
            "u_k1_5m2brlwrt4ygbvd4cr3f7dz6ca"
        );
        assert_eq!(
            call.callee_user(b"\xff").unwrap(),
            "u_k1_2ky2b2h4e2yx5y7kahak5drnu4"
        );
        assert_eq!(
            call.domain(b"sip:alice@EXAMPLE.com.").unwrap(),
            "d_k1_zqgigddpvuckmmvthdbcpwudh4"
        );
        assert_eq!(
            call.ip("192.0.2.1".parse().unwrap()).unwrap(),
            "ip_k1_nwleafw4jfgtfovsl7n27qeb2e"
        );
        assert_eq!(
            call.call_id(b"a84b4c76e66710@pc33.atlanta.com").unwrap(),
            "cid_k1_csjjt3zphr2xzwbjk62cjxzgbe"
        );
        assert_eq!(
            call.display_name(b"\"Bob\"").unwrap(),
            "dn_k1_k5g4bzeufdsdhl5gr6xrdsj7ke"
        );
        // A rotated ring: the active key k2 (0x22 x 32) first, then k1.
        let config = PrivacyConfig::from_agent_toml(UK).unwrap();
        let k1 = Key::new(
            KeyId::try_new("k1").unwrap(),
            Secret::from_bytes(core::array::from_fn(|i| i as u8)),
            OffsetDateTime::UNIX_EPOCH,
            false,
        );
        let rotated = Pseudonymizer::try_new(
            &config,
            KeyRing::try_new(vec![k1, key("k2", 0x22, true)]).unwrap(),
        )
        .unwrap();
        assert_eq!(
            rotated.pseudonyms_for(b"tel:+44-20-7946-0000"),
            [
                "n_k2_ysc75kywc3ccg7zvx6gxssn46a",
                "n_k1_lnbnqvjd5pj4wjxg7bkvf2gove"
            ]
        );
    }

    #[test]
    fn truncation() {
        let v4 = |s: &str, n| truncate_ip(s.parse().unwrap(), n, 48);
        let v6 = |s: &str, n| truncate_ip(s.parse().unwrap(), 24, n);
        assert_eq!(v4("192.0.2.255", 24), "192.0.2.0/24");
        assert_eq!(v4("192.0.2.255", 16), "192.0.0.0/16");
        assert_eq!(v4("192.0.2.255", 25), "192.0.2.128/25");
        assert_eq!(v4("192.0.2.255", 32), "192.0.2.255/32");
        assert_eq!(v4("192.0.2.255", 0), "0.0.0.0/0");
        assert_eq!(v6("2001:db8:abcd:1234::1", 48), "2001:db8:abcd::/48");
        assert_eq!(v6("2001:db8:abcd:1234::1", 56), "2001:db8:abcd:1200::/56");
        assert_eq!(v6("2001:db8:abcd:1234::1", 0), "::/0");
        assert_eq!(v6("2001:db8::1", 128), "2001:db8::1/128");
        // IPv4-mapped IPv6 is treated as IPv4.
        assert_eq!(v6("::ffff:192.0.2.9", 48), "192.0.2.0/24");
    }

    #[test]
    fn keep_prefix_and_overrides() {
        let p = pz(&format!(
            "{UK}[privacy.fields]\ncallee_user = {{ keep_prefix = {{ digits = 4 }} }}\n\
             ip = {{ truncate = {{ v4_prefix = 16 }} }}\ndisplay_name = \"keep\"\n\
             user_agent = \"drop\"\ncall_id = \"drop\"\n"
        ));
        let call = p.call(Consent::NotDeclined);
        let whole = call.caller_user(b"020 7946 0000").unwrap();
        let out = call.callee_user(b"020 7946 0000").unwrap();
        assert_eq!(out, format!("+4420…{whole}"));
        // Too short for 4 digits in clear and 4 hidden: pseudonym only.
        let short = call.callee_user(b"1234567").unwrap();
        assert!(short.starts_with("n_k1_"), "{short}");
        assert!(call.callee_user(b"alice").unwrap().starts_with("u_k1_"));
        assert_eq!(call.ip("10.1.2.3".parse().unwrap()).unwrap(), "10.1.0.0/16");
        assert_eq!(
            call.ip("2001:db8:1:2::3".parse().unwrap()).unwrap(),
            "2001:db8:1::/48"
        );
        assert_eq!(call.display_name(b" \"Alice A.\" ").unwrap(), "Alice A.");
        assert_eq!(call.user_agent(b"x"), None);
        assert_eq!(call.call_id(b"x"), None);
    }

    #[test]
    fn invalid_policies_refused() {
        for (fields, want) in [
            (
                "display_name = { keep_prefix = { digits = 3 } }",
                "does not apply",
            ),
            ("caller_user = \"truncate\"", "does not apply"),
            ("ip = { truncate = { v4_prefix = 33 } }", "IPv4 prefix /33"),
            (
                "ip = { truncate = { v6_prefix = 129 } }",
                "IPv6 prefix /129",
            ),
            (
                "callee_user = { keep_prefix = { digits = 0 } }",
                "digits must be",
            ),
        ] {
            let err = PrivacyConfig::from_agent_toml(&format!("[privacy.fields]\n{fields}\n"))
                .unwrap_err();
            assert!(err.to_string().contains(want), "{fields}: {err}");
        }
        for bad in [
            "[privacy.fields]\nip = \"mask\"\n",
            "[privacy.fields]\ncallee_user = \"keep_prefix\"\n",
            "[privacy.fields]\ncalle_user = \"keep\"\n",
            "[privacy]\nscope = \"two words\"\n",
            "[privacy]\nnational = { country_code = \"+44\", trunk_prefix = \"0\" }\n",
            "[privacy]\nconsent = { header = \"X Consent\", declined = [\"no\"] }\n",
            "[privacy]\nconsent = { header = \"X-Consent\", declined = [] }\n",
        ] {
            assert!(PrivacyConfig::from_agent_toml(bad).is_err(), "{bad}");
        }
        let no_scope = PrivacyConfig::from_agent_toml("").unwrap();
        let ring = KeyRing::try_new(vec![key("k1", 1, true)]).unwrap();
        assert!(matches!(
            Pseudonymizer::try_new(&no_scope, ring),
            Err(ConfigError::MissingScope)
        ));
    }

    #[test]
    fn consent_declined_drops_every_identifier() {
        let p = pz(&format!(
            "{UK}consent = {{ header = \"X-Consent\", declined = [\"no\", \"Declined\"] }}\n\
             [privacy.fields]\nuser_agent = \"keep\"\nip = \"keep\"\n"
        ));
        let hdrs: [(&[u8], &[u8]); 2] = [
            (b"From", b"<sip:a@b>"),
            (b"x-consent", b" yes;x=1, declined "),
        ];
        assert_eq!(p.consent(hdrs), Consent::Declined);
        assert_eq!(
            p.consent([(&b"X-Consent"[..], &b"yes"[..])]),
            Consent::NotDeclined
        );
        assert_eq!(
            p.consent([(&b"X-Other"[..], &b"no"[..])]),
            Consent::NotDeclined
        );
        let call = p.call(Consent::Declined);
        assert_eq!(call.caller_user(b"+442079460000"), None);
        assert_eq!(call.callee_user(b"sip:bob@x"), None);
        assert_eq!(call.domain(b"example.com"), None);
        assert_eq!(call.display_name(b"Bob"), None);
        assert_eq!(call.ip("192.0.2.1".parse().unwrap()), None);
        assert_eq!(call.call_id(b"abc@host"), None);
        assert_eq!(call.user_agent(b"UA/1"), None);
        // Without a consent header configured, nothing is declined.
        assert_eq!(
            pz(UK).consent([(&b"X-Consent"[..], &b"no"[..])]),
            Consent::NotDeclined
        );
    }

    #[test]
    fn one_subscriber_one_pseudonym_across_spellings() {
        let p = pz(UK);
        let call = p.call(Consent::NotDeclined);
        let spellings: [&[u8]; 5] = [
            b"+44 20 7946 0000",
            b"0044 20 7946 0000",
            b"tel:+44-20-7946-0000",
            b"sip:+442079460000@example.com;user=phone",
            b"020 7946 0000",
        ];
        let first = call.caller_user(spellings[0]).unwrap();
        for s in spellings {
            assert_eq!(call.caller_user(s).unwrap(), first);
            assert_eq!(call.callee_user(s).unwrap(), first);
            assert_eq!(p.pseudonyms_for(s), vec![first.clone()]);
        }
    }

    #[test]
    fn scopes_never_link() {
        let a = pz(UK);
        let b = pz(&UK.replace("tenant-a", "tenant-b"));
        let n = b"+442079460000";
        assert_ne!(
            a.call(Consent::NotDeclined).caller_user(n),
            b.call(Consent::NotDeclined).caller_user(n)
        );
    }

    #[test]
    fn nul_and_invalid_utf8_stay_distinct() {
        let p = pz(UK);
        let call = p.call(Consent::NotDeclined);
        let inputs: [&[u8]; 6] = [
            b"alice",
            b"alice\0",
            b"alice\0x",
            b"\xff",
            b"\xfe",
            b"\xef\xbf\xbd",
        ];
        let outs: Vec<String> = inputs
            .iter()
            .map(|i| call.caller_user(i).unwrap())
            .collect();
        for (i, a) in outs.iter().enumerate() {
            for b in outs.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
        assert_ne!(call.call_id(b"a\0b"), call.call_id(b"a\0c"));
    }

    #[test]
    fn lookups_cover_every_key_active_first() {
        let config = PrivacyConfig::from_agent_toml(UK).unwrap();
        let old = Pseudonymizer::try_new(
            &config,
            KeyRing::try_new(vec![key("k1", 0x11, true)]).unwrap(),
        )
        .unwrap();
        let rotated = Pseudonymizer::try_new(
            &config,
            KeyRing::try_new(vec![key("k1", 0x11, false), key("k2", 0x22, true)]).unwrap(),
        )
        .unwrap();
        let before = old
            .call(Consent::NotDeclined)
            .caller_user(b"+442079460000")
            .unwrap();
        let after = rotated
            .call(Consent::NotDeclined)
            .caller_user(b"020 7946 0000")
            .unwrap();
        assert!(after.starts_with("n_k2_"));
        assert_eq!(
            rotated.pseudonyms_for(b"+44 20 7946 0000"),
            vec![after, before]
        );
        let cid = rotated.pseudonyms_for_kind(Kind::CallId, b"abc@h");
        assert_eq!(cid.len(), 2);
        assert!(cid[0].starts_with("cid_k2_") && cid[1].starts_with("cid_k1_"));
        assert!(rotated.pseudonyms_for_kind(Kind::Ip, b"192.0.2.1")[0].starts_with("ip_k2_"));
        assert!(rotated
            .pseudonyms_for_kind(Kind::Ip, b"example.com")
            .is_empty());
        assert!(rotated.pseudonyms_for(b"").is_empty());
    }
}
