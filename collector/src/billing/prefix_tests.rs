#![allow(clippy::unwrap_used, reason = "tests")]

use proptest::prelude::*;

use super::*;

const TABLE: &str = "\
prefix,destination,price_per_minute,currency,increments,minimum_secs,connection_fee,valid_from
+44,United Kingdom,10,EUR,60/60,0,0,2026-01-01
+4420,United Kingdom London,8,EUR,60/60,0,0,2026-01-01
+447,United Kingdom mobile,20,EUR,60/60,0,0,2026-01-01
+447700,United Kingdom mobile range,30,EUR,60/60,0,0,2026-03-01
";

fn set() -> PrefixSet {
    PrefixSet::parse(TABLE).unwrap()
}

#[test]
fn longest_listed_prefix() {
    let s = set();
    assert_eq!(s.len(), 4);
    assert!(s.contains("+447") && !s.contains("447") && !s.contains("+49"));
    // +447700 beats +447 beats +44.
    assert_eq!(destination_prefix("+447700900123", &s), "+447700");
    assert_eq!(destination_prefix("+447800900123", &s), "+447");
    assert_eq!(destination_prefix("+443069990000", &s), "+44");
    assert_eq!(destination_prefix("+442079460000", &s), "+4420");
    // A number no longer than a prefix is that prefix.
    assert_eq!(destination_prefix("+447700", &s), "+447700");
    assert_eq!(destination_prefix("+4477", &s), "+447");
}

#[test]
fn no_prefix_keeps_the_country_code() {
    let s = set();
    // No German rows: 49 is Germany's two-digit code.
    assert_eq!(destination_prefix("+4930123", &s), "+49");
    // NANP, one digit.
    assert_eq!(destination_prefix("+12125550100", &s), "+1");
    // Ireland, three digits.
    assert_eq!(destination_prefix("+35312345678", &s), "+353");
    // An empty set keeps the country code of every number, the UK's too.
    assert_eq!(
        destination_prefix("+447700900123", &PrefixSet::default()),
        "+44"
    );
}

#[test]
fn unparseable_or_unassigned_gives_nothing() {
    let s = set();
    for n in [
        "",
        "+",
        "447700900123",
        "00447700900123",
        "+44 7700 900123",
        "+44-7700",
        "+4477009001230000", // 16 digits: longer than E.164 allows
        "+٤٤٧٧",             // Arabic-Indic digits are not ASCII digits
        "sip:+447700900123@example.com",
    ] {
        assert_eq!(destination_prefix(n, &s), "", "{n:?}");
    }
    // 28x is a spare country code: nothing to keep.
    assert_eq!(destination_prefix("+2801234567", &s), "");
}

#[test]
fn agent_and_collector_agree() {
    // The collector rates the prefix the agent kept exactly as it would rate the number, on
    // any date: before +447700's rows start (2026-03-01) the prefix +447700 falls back to +447.
    let table = RateTable::parse("v1", TABLE).unwrap();
    let s = PrefixSet::from_table(&table);
    let feb_15 = 1_771_113_600_000; // 2026-02-15: 20 499 days × 86 400 s
    let mar_15 = 1_773_532_800_000; // 2026-03-15: 20 527 days × 86 400 s
    for n in [
        "+447700900123",
        "+447800900123",
        "+442079460000",
        "+4930123",
    ] {
        for at in [feb_15, mar_15] {
            let kept = destination_prefix(n, &s);
            assert_eq!(
                table.rate_for(&kept, at),
                table.rate_for(n, at),
                "{n} at {at}"
            );
        }
    }
    assert_eq!(table.rate_for("+447700", feb_15).unwrap().prefix, "+447");
    assert_eq!(table.rate_for("+447700", mar_15).unwrap().prefix, "+447700");
}

#[test]
fn a_bad_table_is_refused_by_the_agent_too() {
    let bad = TABLE.replace("+447,", "447,");
    let err = PrefixSet::parse(&bad).unwrap_err();
    assert_eq!(err.line(), Some(4));
}

proptest! {
    #[test]
    fn never_more_than_the_matched_prefix(n in "\\+?[0-9]{0,18}|\\PC{0,20}") {
        let s = set();
        let kept = destination_prefix(&n, &s);
        if !kept.is_empty() {
            // `+` and a prefix of the number's digits, either listed or a country code, so
            // never longer than the longest listed prefix (6 digits) or a code (3 digits).
            prop_assert!(n.starts_with(&kept));
            prop_assert!(s.contains(&kept) || kept.len() <= 4);
            prop_assert!(kept.len() <= 7);
        }
    }
}
