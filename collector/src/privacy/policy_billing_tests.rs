//! The `billing` policy of the callee number (issue 24): where it is accepted, what it needs,
//! and what it writes. The expected prefixes are read off `testdata/billing/rates.csv` by hand
//! (its rows: `+44`, `+4420`, `+447700`, `+4930`), never computed by the code under test.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::*;
use crate::privacy::keys::{Key, KeyId, Secret};

fn rates() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/billing/rates.csv"
    ))
}

fn ring() -> KeyRing {
    let key = Key::new(
        KeyId::try_new("k1").unwrap(),
        Secret::from_bytes([0x11; 32]),
        OffsetDateTime::UNIX_EPOCH,
        true,
    );
    KeyRing::try_new(vec![key]).unwrap()
}

/// An agent configuration (UK national rule) with `fields` under `[privacy.fields]` and
/// `billing_rates` naming `rates` when given.
fn config_text(rates: Option<&Path>, fields: &str) -> String {
    let rates = rates
        .map(|p| format!("billing_rates = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    format!(
        "[privacy]\nscope = \"tenant-a\"\n\
         national = {{ country_code = \"44\", trunk_prefix = \"0\" }}\n\
         consent = {{ header = \"X-Consent\", declined = [\"no\"] }}\n\
         {rates}[privacy.fields]\n{fields}\n"
    )
}

fn billing_pz() -> Pseudonymizer {
    let config =
        PrivacyConfig::from_agent_toml(&config_text(Some(&rates()), "callee_user = \"billing\""))
            .unwrap();
    Pseudonymizer::try_new(&config, ring()).unwrap()
}

#[test]
fn billing_parses_for_the_callee_only() {
    let config =
        PrivacyConfig::from_agent_toml(&config_text(Some(&rates()), "callee_user = \"billing\""))
            .unwrap();
    assert_eq!(config.fields.callee_user, FieldPolicy::Billing);
    assert_eq!(FieldPolicy::Billing.name(), "billing");
    assert!(config.uses_billing());
    // Every other field refuses it, naming the field and the policy.
    for field in [
        "caller_user",
        "domain",
        "display_name",
        "ip",
        "call_id",
        "user_agent",
    ] {
        let text = config_text(
            Some(&rates()),
            &format!("callee_user = \"billing\"\n{field} = \"billing\""),
        );
        let err = PrivacyConfig::from_agent_toml(&text).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::NotApplicable {
                    policy: "billing",
                    ..
                }
            ),
            "{field}: {err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("privacy.fields.{field}: `billing` does not apply to this field")
        );
    }
    // Only the name form exists; a table form is unknown.
    assert!(PrivacyConfig::from_agent_toml(&config_text(
        Some(&rates()),
        "callee_user = { billing = { digits = 4 } }"
    ))
    .is_err());
}

#[test]
fn billing_and_its_rate_table_go_together() {
    // The policy without a table: a configuration error that says what is missing.
    let err = PrivacyConfig::from_agent_toml(&config_text(None, "callee_user = \"billing\""))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::BillingWithoutRates {
                field: "callee_user"
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("privacy.billing_rates"), "{err}");
    // A table without the policy: refused too, it would be read for nothing.
    let err = PrivacyConfig::from_agent_toml(&config_text(Some(&rates()), "")).unwrap_err();
    assert!(matches!(err, ConfigError::RatesWithoutBilling), "{err:?}");
    // Without either, nothing changes: no table is read.
    let plain = PrivacyConfig::from_agent_toml(&config_text(None, "")).unwrap();
    assert!(!plain.uses_billing());
    assert!(plain.load_billing_prefixes().unwrap().is_empty());
}

#[test]
fn the_rate_table_is_read_at_start_and_its_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let start = |path: &Path| {
        let config =
            PrivacyConfig::from_agent_toml(&config_text(Some(path), "callee_user = \"billing\""))
                .unwrap();
        Pseudonymizer::try_new(&config, ring())
    };
    // A missing file.
    let missing = dir.path().join("missing.csv");
    let err = start(&missing).unwrap_err();
    assert!(
        matches!(err, ConfigError::BillingRatesRead { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.csv"), "{err}");
    // A bad row on line 4 (a comment, the header, a good row, then a prefix with a letter).
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "# rates\n\
         prefix,destination,price_per_minute,currency,increments,minimum_secs,connection_fee,valid_from\n\
         +44,United Kingdom,12,EUR,60/60,0,0,2026-01-01\n\
         +44x,Broken,12,EUR,60/60,0,0,2026-01-01\n",
    )
    .unwrap();
    let err = start(&bad).unwrap_err();
    let ConfigError::BillingRates { path, source } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(path, &bad);
    assert!(source.to_string().starts_with("line 4: "), "{source}");
    // The whole chain, as the agent prints it, names the file and the line.
    let chain = format!("{:#}", anyhow::Error::from(err));
    assert!(
        chain.contains("bad.csv") && chain.contains("line 4"),
        "{chain}"
    );
    // The test table is good.
    start(&rates()).unwrap();
}

#[test]
fn billing_keeps_the_prefix_and_pseudonymizes_the_number_as_pseudonymize_does() {
    let billing = billing_pz();
    let plain = Pseudonymizer::try_new(
        &PrivacyConfig::from_agent_toml(&config_text(None, "")).unwrap(),
        ring(),
    )
    .unwrap();
    let (b, p) = (
        billing.call(Consent::NotDeclined),
        plain.call(Consent::NotDeclined),
    );
    // (callee as dialled, destination prefix read off rates.csv by hand)
    let cases: [(&[u8], Option<&str>); 9] = [
        // London, in its national spelling under the UK rule: +4420 beats +44.
        (b"020 7946 0000", Some("+4420")),
        (b"sip:+442079460000@example.com;user=phone", Some("+4420")),
        // The mobile network: +447700 beats +44.
        (b"tel:+44-7700-900123", Some("+447700")),
        // Elsewhere in the UK: only the +44 row matches.
        (b"01632 960001", Some("+44")),
        // Berlin, dialled with the international prefix.
        (b"0049 30 12345678", Some("+4930")),
        // France is in no row: the country code alone.
        (b"+33 1 23 45 67 89", Some("+33")),
        // A spare country code: nothing is kept.
        (b"+2801234567", None),
        // Not a number: no prefix, the user is pseudonymized.
        (b"sip:alice@example.com", None),
        (b"", None),
    ];
    for (callee, want) in cases {
        let input = String::from_utf8_lossy(callee);
        assert_eq!(b.destination_prefix(callee).as_deref(), want, "{input}");
        // The number itself: exactly the pseudonym of the `pseudonymize` policy.
        assert_eq!(b.callee_user(callee), p.callee_user(callee), "{input}");
    }
    assert!(b
        .callee_user(b"020 7946 0000")
        .unwrap()
        .starts_with("n_k1_"));
    // Other fields and policies are unchanged.
    assert_eq!(
        b.caller_user(b"020 7946 0000"),
        p.caller_user(b"020 7946 0000")
    );
    assert_eq!(p.destination_prefix(b"020 7946 0000"), None);
    // A declined subscriber leaves no prefix either.
    assert_eq!(
        billing
            .call(Consent::Declined)
            .destination_prefix(b"020 7946 0000"),
        None
    );
}
