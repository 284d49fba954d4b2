//! The data inventory: every CDR field, what kind of personal data it is, how it is
//! protected under the active policy, where it is stored, who can read it and for how long
//! (the record of processing of GDPR Art. 30, and the Art. 13/14 transparency text).
//!
//! [`CDR_FIELDS`] is one array in CDR field order so it can be compared field by field with
//! the CDR message of the proto. Every direct or indirect identifier is governed by a
//! [`PolicyField`], so the register always tells the policy actually applied.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::fmt::Write as _;

use serde::Serialize;

use super::policy::{FieldPolicy, PolicyField, PrivacyConfig};
use Category::{DirectIdentifier as Direct, IndirectIdentifier as Indirect, Quality, Technical};

/// What kind of data a field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Identifies a person by itself (number, URI user, display name).
    DirectIdentifier,
    /// Identifies a person combined with other data (IP address, Call-ID, domain, device).
    IndirectIdentifier,
    /// About the call's handling, not the person.
    Technical,
    /// Media or signalling quality measurements.
    Quality,
}

impl Category {
    /// Human label.
    pub const fn label(self) -> &'static str {
        match self {
            Category::DirectIdentifier => "direct identifier",
            Category::IndirectIdentifier => "indirect identifier",
            Category::Technical => "technical",
            Category::Quality => "quality",
        }
    }
}

/// How a field's protection is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Governed {
    /// By the configured policy of this field (and dropped when consent is declined).
    Policy(PolicyField),
    /// Fixed: the text says what is done.
    Fixed(&'static str),
    /// Written only when `field` has `policy`, from that field's value, with `protection`
    /// (the words of the register); empty under any other policy and when the subscriber
    /// declined.
    Derived {
        /// The field it is derived from.
        field: PolicyField,
        /// The policy under which it is written.
        policy: FieldPolicy,
        /// What is kept, in words.
        protection: &'static str,
    },
}

/// One CDR field of the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpec {
    /// Field name in the CDR.
    pub name: &'static str,
    /// What kind of data it is.
    pub category: Category,
    /// What it holds.
    pub description: &'static str,
    /// How its protection is decided.
    pub governed: Governed,
}

const KEPT: Governed = Governed::Fixed("kept");

const fn field(
    name: &'static str,
    category: Category,
    description: &'static str,
    governed: Governed,
) -> FieldSpec {
    FieldSpec {
        name,
        category,
        description,
        governed,
    }
}

/// Every CDR field, in CDR order.
pub static CDR_FIELDS: [FieldSpec; 55] = [
    field(
        "agent_id",
        Technical,
        "agent (host) that observed the call",
        KEPT,
    ),
    field(
        "cdr_id",
        Technical,
        "id of this record, assigned by the agent",
        KEPT,
    ),
    field(
        "call_id",
        Indirect,
        "SIP Call-ID (RFC 3261 §20.8); often embeds a host name or address",
        Governed::Policy(PolicyField::CallId),
    ),
    field(
        "correlation_id",
        Indirect,
        "links the legs of one call: a Session-ID, charging id or the first leg's Call-ID",
        Governed::Policy(PolicyField::CallId),
    ),
    field(
        "caller_user",
        Direct,
        "caller's telephone number or SIP URI user",
        Governed::Policy(PolicyField::CallerUser),
    ),
    field(
        "caller_domain",
        Indirect,
        "caller's SIP URI host (an IP literal follows the ip policy)",
        Governed::Policy(PolicyField::Domain),
    ),
    field(
        "callee_user",
        Direct,
        "callee's telephone number or SIP URI user",
        Governed::Policy(PolicyField::CalleeUser),
    ),
    field(
        "callee_domain",
        Indirect,
        "callee's SIP URI host (an IP literal follows the ip policy)",
        Governed::Policy(PolicyField::Domain),
    ),
    field(
        "caller_display",
        Direct,
        "caller's display name",
        Governed::Policy(PolicyField::DisplayName),
    ),
    field(
        "callee_display",
        Direct,
        "callee's display name",
        Governed::Policy(PolicyField::DisplayName),
    ),
    field(
        "src_ip",
        Indirect,
        "signalling source IP address",
        Governed::Policy(PolicyField::Ip),
    ),
    field("src_port", Technical, "signalling source port", KEPT),
    field(
        "dst_ip",
        Indirect,
        "signalling destination IP address",
        Governed::Policy(PolicyField::Ip),
    ),
    field("dst_port", Technical, "signalling destination port", KEPT),
    field("transport", Technical, "UDP, TCP or TLS", KEPT),
    field(
        "start_time_ms",
        Technical,
        "time of the initial INVITE",
        KEPT,
    ),
    field("ring_time_ms", Technical, "time of the first 180/183", KEPT),
    field("answer_time_ms", Technical, "time of the 2xx answer", KEPT),
    field(
        "end_time_ms",
        Technical,
        "time of the BYE, CANCEL or final failure",
        KEPT,
    ),
    field(
        "post_dial_delay_ms",
        Quality,
        "INVITE to first ringing or answer, milliseconds",
        KEPT,
    ),
    field("duration_ms", Technical, "start to end, milliseconds", KEPT),
    field(
        "billable_ms",
        Technical,
        "answer to end, milliseconds",
        KEPT,
    ),
    field(
        "disposition",
        Technical,
        "answered, busy, no answer, failed, cancelled",
        KEPT,
    ),
    field("final_code", Technical, "final SIP response code", KEPT),
    field(
        "reason_protocol",
        Technical,
        "Reason header protocol (RFC 3326): SIP or Q.850",
        KEPT,
    ),
    field("reason_cause", Technical, "Reason header cause code", KEPT),
    field("reason_text", Technical, "Reason header text", KEPT),
    field("hangup_side", Technical, "which side ended the call", KEPT),
    field("codecs", Technical, "negotiated codecs (SDP)", KEPT),
    field(
        "media",
        Quality,
        "per direction: packets, bytes, lost, jitter, MOS; the same per 10-second interval",
        KEPT,
    ),
    field(
        "media_src_ip",
        Indirect,
        "source IP address of each media stream",
        Governed::Policy(PolicyField::Ip),
    ),
    field(
        "media_dst_ip",
        Indirect,
        "destination IP address of each media stream",
        Governed::Policy(PolicyField::Ip),
    ),
    field("media_codec", Technical, "codec of each media stream", KEPT),
    field(
        "media_quality_model",
        Technical,
        "model that scored each media stream",
        KEPT,
    ),
    field(
        "media_delay_source",
        Technical,
        "where the E-model's network delay came from (RTCP round trip or none)",
        KEPT,
    ),
    field(
        "media_discard_methods",
        Technical,
        "how each jitter buffer's discards were obtained (exact, estimated or simulated)",
        KEPT,
    ),
    field(
        "media_far_end_disagreement_reason",
        Technical,
        "which of the receiver's RTCP figures disagree with ours (loss, jitter)",
        KEPT,
    ),
    field(
        "user_agent_caller",
        Indirect,
        "caller's User-Agent (device and software)",
        Governed::Policy(PolicyField::UserAgent),
    ),
    field(
        "user_agent_callee",
        Indirect,
        "callee's User-Agent or Server (device and software)",
        Governed::Policy(PolicyField::UserAgent),
    ),
    field(
        "coverage",
        Technical,
        "how much of the call the agent observed",
        KEPT,
    ),
    field(
        "consent",
        Technical,
        "whether the subscriber declined; if so every identifier field is empty",
        KEPT,
    ),
    field(
        "legs_hops",
        Technical,
        "hops of the call's signalling seen by the agent",
        KEPT,
    ),
    field(
        "interim",
        Technical,
        "record of a call still in progress",
        KEPT,
    ),
    field("sip_messages", Technical, "SIP messages of the call", KEPT),
    field(
        "correlation_method",
        Technical,
        "how the legs of the call were linked",
        KEPT,
    ),
    field(
        "interim_seq",
        Technical,
        "order of an interim record within its call",
        KEPT,
    ),
    field(
        "destination_prefix",
        Indirect,
        "callee number's destination for rating: its longest rate-table prefix or country code",
        Governed::Derived {
            field: PolicyField::CalleeUser,
            policy: FieldPolicy::Billing,
            protection: "longest prefix in the billing_rates table (or the country code), \
                         never more",
        },
    ),
    field(
        "sealed",
        Technical,
        "the whole record sealed by the collector's store (at rest only, never sent)",
        Governed::Fixed("empty on the wire; AES-256-GCM-SIV under the tenant's data key at rest"),
    ),
    field(
        "ladder",
        Technical,
        "the call's SIP messages as captured: time, CSeq, interface direction, SDP or not",
        KEPT,
    ),
    field(
        "ladder_message_method_or_status",
        Technical,
        "each message's method or status code",
        KEPT,
    ),
    field(
        "ladder_message_cseq_method",
        Technical,
        "each message's CSeq method",
        KEPT,
    ),
    field(
        "ladder_message_from",
        Indirect,
        "each message's source IP address",
        Governed::Policy(PolicyField::Ip),
    ),
    field(
        "ladder_message_to",
        Indirect,
        "each message's destination IP address",
        Governed::Policy(PolicyField::Ip),
    ),
    field(
        "ladder_message_transport",
        Technical,
        "each message's transport",
        KEPT,
    ),
    field(
        "ladder_omitted",
        Technical,
        "messages left out of the ladder between its first 48 and last 16",
        KEPT,
    ),
];

/// Where stored fields live.
pub const STORAGE: &str = "agent spool, central DB";
/// Who can read stored fields.
pub const READERS: &str = "roles read, admin";

/// One row of the register under a given configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InventoryRow {
    /// Field name.
    pub name: &'static str,
    /// Category.
    pub category: Category,
    /// What it holds.
    pub description: &'static str,
    /// The configured policy, for fields governed by one.
    pub policy: Option<FieldPolicy>,
    /// The `[privacy.fields]` key of that policy.
    pub policy_field: Option<&'static str>,
    /// Protection applied, in words.
    pub protection: String,
    /// What happens when the subscriber declined: `dropped` or `kept`.
    pub when_declined: &'static str,
    /// Where it is stored (empty when the agent drops it).
    pub storage: &'static str,
    /// Who can read it.
    pub readers: &'static str,
    /// Days kept in the central DB (`None` when never stored).
    pub retention_days: Option<u32>,
    /// Retention, in words.
    pub retention: String,
}

/// The register under `config`.
pub fn inventory(config: &PrivacyConfig) -> Vec<InventoryRow> {
    CDR_FIELDS
        .iter()
        .map(|spec| {
            let (policy, protection, when_declined, dropped) = match spec.governed {
                Governed::Policy(pf) => {
                    let p = pf.of(&config.fields);
                    (
                        Some((pf, p)),
                        p.to_string(),
                        "dropped",
                        p == FieldPolicy::Drop,
                    )
                }
                Governed::Fixed(text) => (None, text.to_owned(), "kept", false),
                Governed::Derived {
                    field,
                    policy,
                    protection,
                } => {
                    let p = field.of(&config.fields);
                    if p == policy {
                        (Some((field, p)), protection.to_owned(), "dropped", false)
                    } else {
                        let not_written = format!(
                            "not written (only under {} = \"{}\")",
                            field.name(),
                            policy.name()
                        );
                        (Some((field, p)), not_written, "dropped", true)
                    }
                }
            };
            InventoryRow {
                name: spec.name,
                category: spec.category,
                description: spec.description,
                policy: policy.map(|(_, p)| p),
                policy_field: policy.map(|(pf, _)| pf.name()),
                protection,
                when_declined,
                storage: if dropped { "" } else { STORAGE },
                readers: if dropped { "" } else { READERS },
                retention_days: (!dropped).then_some(config.retention_days),
                retention: if dropped {
                    "never stored".to_owned()
                } else {
                    format!(
                        "spool until acknowledged; central DB {} days",
                        config.retention_days
                    )
                },
            }
        })
        .collect()
}

#[derive(Serialize)]
struct PolicySummary<'a> {
    scope: Option<&'a str>,
    key_file: Option<String>,
    national: Option<&'a super::normalize::NationalRule>,
    consent: Option<&'a super::policy::ConsentConfig>,
    retention_days: u32,
    billing_rates: Option<String>,
    pseudonym_format: &'static str,
}

#[derive(Serialize)]
struct Register<'a> {
    policy: PolicySummary<'a>,
    fields: Vec<InventoryRow>,
}

const PSEUDONYM_FORMAT: &str =
    "<kind>_<key id>_<base32(HMAC-SHA256(key, scope 0x00 kind 0x00 identifier))[..128 bits]>";

/// The register as one JSON document: `{ "policy": {...}, "fields": [...] }`.
pub fn render_json(config: &PrivacyConfig) -> Result<String, serde_json::Error> {
    let register = Register {
        policy: PolicySummary {
            scope: config.scope.as_deref(),
            key_file: config.key_file.as_ref().map(|p| p.display().to_string()),
            national: config.national.as_ref(),
            consent: config.consent.as_ref(),
            retention_days: config.retention_days,
            billing_rates: config
                .billing_rates
                .as_ref()
                .map(|p| p.display().to_string()),
            pseudonym_format: PSEUDONYM_FORMAT,
        },
        fields: inventory(config),
    };
    serde_json::to_string_pretty(&register)
}

/// The register as a human-readable table.
pub fn render_text(config: &PrivacyConfig) -> String {
    let rows = inventory(config);
    let mut out = String::new();
    let _ = writeln!(out, "Data inventory of the VoIP collector (CDR fields)");
    let _ = writeln!(
        out,
        "scope: {}   key file: {}   retention: {} days",
        config.scope.as_deref().unwrap_or("(not set)"),
        config
            .key_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "(not set)".to_owned()),
        config.retention_days
    );
    match &config.national {
        Some(n) => {
            let _ = writeln!(
                out,
                "numbers: international prefix {}, trunk prefix {} -> +{}",
                n.international_prefix, n.trunk_prefix, n.country_code
            );
        }
        None => {
            let _ = writeln!(out, "numbers: international prefix 00, no national rule");
        }
    }
    match &config.consent {
        Some(c) => {
            let _ = writeln!(
                out,
                "consent: header {} with {} = declined: every identifier dropped",
                c.header,
                c.declined.join("|")
            );
        }
        None => {
            let _ = writeln!(out, "consent: no consent header configured");
        }
    }
    if let Some(rates) = &config.billing_rates {
        let _ = writeln!(
            out,
            "billing: destination prefixes from the rate table {}",
            rates.display()
        );
    }
    let _ = writeln!(out, "pseudonyms: {PSEUDONYM_FORMAT}");
    let _ = writeln!(out);
    let header = [
        "FIELD",
        "CATEGORY",
        "PROTECTION",
        "IF DECLINED",
        "STORED IN",
        "READERS",
        "RETENTION",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.name.to_owned(),
                r.category.label().to_owned(),
                r.protection.clone(),
                r.when_declined.to_owned(),
                if r.storage.is_empty() {
                    "-".to_owned()
                } else {
                    r.storage.to_owned()
                },
                if r.readers.is_empty() {
                    "-".to_owned()
                } else {
                    r.readers.to_owned()
                },
                r.retention.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cols: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (c, w) in cols.zip(widths.iter()) {
            let _ = write!(text, "{c:<w$}  ");
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut header.iter().copied());
    for row in &cells {
        line(&mut row.iter().map(String::as_str));
    }
    let _ = writeln!(out);
    let name_width = widths.first().copied().unwrap_or(0);
    for r in &rows {
        let _ = writeln!(out, "{:<name_width$}  {}", r.name, r.description);
    }
    out
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

    /// The field list, in order (the comparison with the proto itself is in
    /// `privacy::apply`'s tests).
    const EXPECTED: [&str; 55] = [
        "agent_id",
        "cdr_id",
        "call_id",
        "correlation_id",
        "caller_user",
        "caller_domain",
        "callee_user",
        "callee_domain",
        "caller_display",
        "callee_display",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "transport",
        "start_time_ms",
        "ring_time_ms",
        "answer_time_ms",
        "end_time_ms",
        "post_dial_delay_ms",
        "duration_ms",
        "billable_ms",
        "disposition",
        "final_code",
        "reason_protocol",
        "reason_cause",
        "reason_text",
        "hangup_side",
        "codecs",
        "media",
        "media_src_ip",
        "media_dst_ip",
        "media_codec",
        "media_quality_model",
        "media_delay_source",
        "media_discard_methods",
        "media_far_end_disagreement_reason",
        "user_agent_caller",
        "user_agent_callee",
        "coverage",
        "consent",
        "legs_hops",
        "interim",
        "sip_messages",
        "correlation_method",
        "interim_seq",
        "destination_prefix",
        "sealed",
        "ladder",
        "ladder_message_method_or_status",
        "ladder_message_cseq_method",
        "ladder_message_from",
        "ladder_message_to",
        "ladder_message_transport",
        "ladder_omitted",
    ];

    #[test]
    fn table_lists_exactly_the_cdr_fields() {
        let names: Vec<&str> = CDR_FIELDS.iter().map(|f| f.name).collect();
        assert_eq!(names, EXPECTED);
    }

    #[test]
    fn every_identifier_is_governed_by_a_policy() {
        for f in &CDR_FIELDS {
            let identifier = matches!(
                f.category,
                Category::DirectIdentifier | Category::IndirectIdentifier
            );
            assert_eq!(
                identifier,
                matches!(f.governed, Governed::Policy(_) | Governed::Derived { .. }),
                "{}",
                f.name
            );
        }
    }

    #[test]
    fn default_policy_keeps_no_direct_identifier_in_clear() {
        let rows = inventory(&PrivacyConfig::default());
        let by_name = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(
            by_name("caller_user").policy,
            Some(FieldPolicy::Pseudonymize)
        );
        assert_eq!(
            by_name("callee_user").policy,
            Some(FieldPolicy::Pseudonymize)
        );
        assert_eq!(by_name("caller_display").policy, Some(FieldPolicy::Drop));
        assert_eq!(by_name("caller_display").storage, "");
        assert_eq!(by_name("caller_display").retention_days, None);
        assert_eq!(by_name("call_id").policy, Some(FieldPolicy::Pseudonymize));
        assert_eq!(
            by_name("src_ip").protection,
            "truncated to /24 (IPv4), /48 (IPv6)"
        );
        assert_eq!(by_name("user_agent_caller").policy, Some(FieldPolicy::Keep));
        assert_eq!(by_name("media").when_declined, "kept");
        assert_eq!(by_name("dst_ip").when_declined, "dropped");
        for r in &rows {
            if r.category == Category::DirectIdentifier {
                assert_ne!(r.policy, Some(FieldPolicy::Keep), "{}", r.name);
            }
        }
    }

    #[test]
    fn destination_prefix_is_written_only_under_billing() {
        let by_name = |rows: &[InventoryRow], n: &str| rows.iter().find(|r| r.name == n).cloned();
        let default = inventory(&PrivacyConfig::default());
        let row = by_name(&default, "destination_prefix").unwrap();
        assert_eq!(row.category, Category::IndirectIdentifier);
        assert_eq!(row.policy_field, Some("callee_user"));
        assert_eq!(
            row.protection,
            "not written (only under callee_user = \"billing\")"
        );
        assert_eq!((row.storage, row.retention_days), ("", None));
        let billing = PrivacyConfig::from_agent_toml(
            "[privacy]\nbilling_rates = \"rates.csv\"\n\
             [privacy.fields]\ncallee_user = \"billing\"\n",
        )
        .unwrap();
        let rows = inventory(&billing);
        let row = by_name(&rows, "destination_prefix").unwrap();
        assert!(row.protection.contains("never more"), "{}", row.protection);
        assert_eq!(row.when_declined, "dropped");
        assert_eq!(
            row.retention_days,
            Some(crate::privacy::policy::DEFAULT_RETENTION_DAYS)
        );
        let callee = by_name(&rows, "callee_user").unwrap();
        assert_eq!(callee.policy, Some(FieldPolicy::Billing));
        assert!(callee.protection.starts_with("pseudonymized"));
        assert!(render_text(&billing).contains("rate table rates.csv"));
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&billing).unwrap()).unwrap();
        assert_eq!(json["policy"]["billing_rates"], "rates.csv");
    }

    #[test]
    fn renders_follow_the_configuration() {
        let config = PrivacyConfig::from_agent_toml(
            "[privacy]\nscope = \"t1\"\nretention_days = 30\n\
             [privacy.fields]\ncallee_user = { keep_prefix = { digits = 5 } }\n",
        )
        .unwrap();
        let json: serde_json::Value = serde_json::from_str(&render_json(&config).unwrap()).unwrap();
        assert_eq!(json["policy"]["scope"], "t1");
        let fields = json["fields"].as_array().unwrap();
        assert_eq!(fields.len(), EXPECTED.len());
        let callee = fields.iter().find(|f| f["name"] == "callee_user").unwrap();
        assert_eq!(callee["policy"]["keep_prefix"]["digits"], 5);
        assert_eq!(callee["category"], "direct_identifier");
        assert_eq!(callee["retention_days"], 30);
        let text = render_text(&config);
        assert!(text.contains("first 5 digits in clear"), "{text}");
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("callee_user "))
                .count(),
            2
        );
        assert!(text.contains("central DB 30 days"));
    }
}
