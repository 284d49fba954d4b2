#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::*;

const HEAD: &str =
    "prefix,destination,price_per_minute,currency,increments,minimum_secs,connection_fee,valid_from";

/// 2026-01-01T00:00:00Z: 56 years after 1970 with 14 leap days (1972, 1976, ..., 2024),
/// 56 × 365 + 14 = 20 454 days, × 86 400 s = 1 767 225 600 s.
const JAN_1_2026_MS: i64 = 1_767_225_600_000;
/// 2026-02-01T00:00:00Z: 31 days later, 20 485 days × 86 400 s = 1 769 904 000 s.
const FEB_1_2026_MS: i64 = 1_769_904_000_000;

fn table(rows: &str) -> RateTable {
    RateTable::parse("v7", &format!("{HEAD}\n{rows}")).unwrap()
}

fn parse_err(text: &str) -> RatesError {
    RateTable::parse("v", text).unwrap_err()
}

fn date(y: i32, m: Month, d: u8) -> Date {
    Date::from_calendar_date(y, m, d).unwrap()
}

#[test]
fn parses_every_column() {
    let t = RateTable::parse(
        "2026-11-a",
        "\u{feff}# UK rates\r\n\r\n\
         Prefix, Destination ,PRICE_PER_MINUTE,currency,increments,minimum_secs,connection_fee,valid_from\r\n\
         # mobiles next\r\n\
         +447700 , \"United Kingdom, \"\"mobile\"\"\" ,30,EUR,30/6,45,5,2026-01-15\r\n",
    )
    .unwrap();
    assert_eq!(t.version(), "2026-11-a");
    assert_eq!(t.currency().as_str(), "EUR");
    assert_eq!(t.len(), 1);
    let r = &t.rows()[0];
    assert_eq!(r.prefix, "+447700");
    assert_eq!(r.destination, "United Kingdom, \"mobile\"");
    assert_eq!(r.price_per_minute, 30);
    assert_eq!(r.increments.to_string(), "30/6");
    assert_eq!(r.minimum_secs, 45);
    assert_eq!(r.connection_fee, 5);
    assert_eq!(r.valid_from, date(2026, Month::January, 15));
    // BOM line 1 (comment), blank line 2, header line 3, comment line 4, the row is line 5.
    assert_eq!(r.line, 5);
    assert_eq!(&*r.table_version, "2026-11-a");
}

#[test]
fn longest_prefix_wins() {
    let t = table(
        "+44,UK,10,EUR,60/60,0,0,2026-01-01\n\
         +447,UK mobile,20,EUR,60/60,0,0,2026-01-01\n\
         +447700,UK mobile (Ofcom drama range),30,EUR,60/60,0,0,2026-01-01\n",
    );
    let at = JAN_1_2026_MS;
    assert_eq!(t.rate_for("+447700900123", at).unwrap().prefix, "+447700");
    assert_eq!(t.rate_for("+447800900123", at).unwrap().prefix, "+447");
    assert_eq!(t.rate_for("+442079460000", at).unwrap().prefix, "+44");
    // A prefix as the agent keeps it is looked up like a number.
    assert_eq!(t.rate_for("+447700", at).unwrap().prefix, "+447700");
    assert_eq!(t.rate_for("+44", at).unwrap().prefix, "+44");
    // Under no prefix, or not `+<digits>`: unrated.
    assert!(t.rate_for("+4930123", at).is_none());
    assert!(t.rate_for("+4", at).is_none());
    assert!(t.rate_for("447700900123", at).is_none());
    assert!(t.rate_for("+44 7700", at).is_none());
    assert!(t.rate_for("", at).is_none());
}

#[test]
fn rated_by_the_start_date() {
    let t = table(
        "+44,UK,10,EUR,60/60,0,0,2026-01-01\n\
         +44,UK,20,EUR,60/60,0,0,2026-02-01\n\
         +447700,UK mobile,30,EUR,60/60,0,0,2026-02-01\n",
    );
    // 30 s before midnight into February: January's row and price, and +447700 not valid
    // yet, so the number falls back to +44.
    let jan = t.rate_for("+447700900123", FEB_1_2026_MS - 30_000).unwrap();
    assert_eq!((jan.prefix.as_str(), jan.price_per_minute), ("+44", 10));
    // From midnight, February's rows.
    let feb = t.rate_for("+447700900123", FEB_1_2026_MS).unwrap();
    assert_eq!((feb.prefix.as_str(), feb.price_per_minute), ("+447700", 30));
    let feb = t.rate_for("+442079460000", FEB_1_2026_MS).unwrap();
    assert_eq!(feb.price_per_minute, 20);
    // Years later the latest row still applies.
    let later = t
        .rate_for("+442079460000", FEB_1_2026_MS + 400 * 86_400_000)
        .unwrap();
    assert_eq!(later.price_per_minute, 20);
    // Before the first valid-from, nothing applies.
    assert!(t.rate_for("+442079460000", JAN_1_2026_MS - 1).is_none());
    assert!(t.rate_for("+442079460000", i64::MIN).is_none());
    assert!(t.rate_for("+442079460000", i64::MAX).is_none());
}

#[test]
fn a_call_across_the_boundary_is_rated_by_its_start() {
    let t = table(
        "+44,UK,10,EUR,60/60,0,0,2026-01-01\n\
         +44,UK,20,EUR,60/60,0,0,2026-02-01\n",
    );
    // Starts 2026-01-31T23:59:30Z and lasts 90 s, ending in February: January's 10/min.
    // 90 s under 60/60 is 120 s; 120 × 10 / 60 = 20.
    let rate = t.rate_for("+442079460000", FEB_1_2026_MS - 30_000).unwrap();
    let rated = super::super::rate_call(rate, 90_000);
    assert_eq!(rated.billable_secs, 120);
    assert_eq!(rated.cost, 20);
    assert_eq!(rated.valid_from, date(2026, Month::January, 1));
    assert_eq!(rated.table_version, "v7");
}

#[test]
fn lookup_over_100k_rows() {
    // 100 000 prefixes +3000000 ..= +3099999, each priced at its own index, and a catch-all +3.
    let mut csv = format!("{HEAD}\n+3,zone 3,1,EUR,1/1,0,0,2026-01-01\n");
    for i in 0..100_000u32 {
        csv.push_str(&format!("+30{i:05},d{i},{i},EUR,1/1,0,0,2026-01-01\n"));
    }
    let t = RateTable::parse("big", &csv).unwrap();
    assert_eq!(t.len(), 100_001);
    for i in (0..100_000u32).step_by(997) {
        let r = t.rate_for(&format!("+30{i:05}123"), JAN_1_2026_MS).unwrap();
        assert_eq!(r.price_per_minute, u64::from(i));
    }
    assert_eq!(t.rate_for("+3112345", JAN_1_2026_MS).unwrap().prefix, "+3");
}

#[test]
fn errors_name_the_line() {
    // Line 1 comment, line 2 header, line 3 a good row, line 4 the row at fault.
    let at_line_4 = |row: &str| {
        let text = format!("# table\n{HEAD}\n+44,UK,10,EUR,60/60,0,0,2026-01-01\n{row}\n");
        let err = RateTable::parse("v", &text).unwrap_err();
        assert_eq!(err.line(), Some(4), "{err}");
        assert!(err.to_string().starts_with("line 4: "), "{err}");
        err
    };
    let r = at_line_4("4420,London,10,EUR,60/60,0,0,2026-01-01");
    assert!(matches!(
        r,
        RatesError::BadPrefix {
            reason: "must start with '+'",
            ..
        }
    ));
    let r = at_line_4("+44-20,London,10,EUR,60/60,0,0,2026-01-01");
    assert!(matches!(r, RatesError::BadPrefix { .. }));
    let r = at_line_4("+,London,10,EUR,60/60,0,0,2026-01-01");
    assert!(matches!(r, RatesError::BadPrefix { .. }));
    let r = at_line_4("+0044,London,10,EUR,60/60,0,0,2026-01-01");
    assert!(matches!(r, RatesError::BadPrefix { .. }));
    let r = at_line_4("+4412345678901234,London,10,EUR,60/60,0,0,2026-01-01");
    assert!(matches!(
        r,
        RatesError::BadPrefix {
            reason: "longer than 15 digits",
            ..
        }
    ));
    let r = at_line_4("+4420, ,10,EUR,60/60,0,0,2026-01-01");
    assert_eq!(r, RatesError::EmptyDestination { line: 4 });
    for price in ["0.12", "-1", "+1", "", "12c", "18446744073709551616"] {
        let r = at_line_4(&format!("+4420,London,{price},EUR,60/60,0,0,2026-01-01"));
        assert!(matches!(r, RatesError::BadPrice { .. }), "{price}: {r}");
    }
    let r = at_line_4("+4420,London,10,EUR,60/60,0,1.5,2026-01-01");
    assert!(matches!(r, RatesError::BadFee { .. }));
    for cur in ["eur", "EURO", "E1R", ""] {
        let r = at_line_4(&format!("+4420,London,10,{cur},60/60,0,0,2026-01-01"));
        assert!(matches!(r, RatesError::BadCurrency { .. }), "{cur}: {r}");
    }
    let r = at_line_4("+4420,London,10,GBP,60/60,0,0,2026-01-01");
    assert!(matches!(
        r,
        RatesError::MixedCurrencies { first_line: 3, .. }
    ));
    assert!(
        r.to_string().contains("GBP") && r.to_string().contains("EUR"),
        "{r}"
    );
    for inc in ["60", "60/", "/60", "60/60/60", "a/b", "-1/1"] {
        let r = at_line_4(&format!("+4420,London,10,EUR,{inc},0,0,2026-01-01"));
        assert!(matches!(r, RatesError::BadIncrements { .. }), "{inc}: {r}");
    }
    for inc in ["0/60", "60/0", "0/0"] {
        let r = at_line_4(&format!("+4420,London,10,EUR,{inc},0,0,2026-01-01"));
        assert!(matches!(r, RatesError::ZeroIncrement { .. }), "{inc}: {r}");
    }
    let r = at_line_4("+4420,London,10,EUR,86401/1,0,0,2026-01-01");
    assert!(matches!(r, RatesError::TooLong { value: 86_401, .. }));
    let r = at_line_4("+4420,London,10,EUR,60/60,-5,0,2026-01-01");
    assert!(matches!(r, RatesError::BadMinimum { .. }));
    let r = at_line_4("+4420,London,10,EUR,60/60,99999999999,0,2026-01-01");
    assert!(matches!(r, RatesError::TooLong { .. }));
    for d in [
        "2026-02-30",
        "2026-1-01",
        "26-01-01",
        "2026/01/01",
        "2026-01-01T00:00",
        "",
    ] {
        let r = at_line_4(&format!("+4420,London,10,EUR,60/60,0,0,{d}"));
        assert!(matches!(r, RatesError::BadDate { .. }), "{d}: {r}");
    }
    let r = at_line_4("+44,UK again,12,EUR,60/60,0,0,2026-01-01");
    assert_eq!(
        r,
        RatesError::Duplicate {
            line: 4,
            prefix: "+44".into(),
            valid_from: date(2026, Month::January, 1),
            first_line: 3,
        }
    );
    let r = at_line_4("+4420,London,10,EUR,60/60,0,0");
    assert_eq!(r, RatesError::ColumnCount { line: 4, found: 7 });
    let r = at_line_4("+4420,London,10,EUR,60/60,0,0,2026-01-01,extra");
    assert_eq!(r, RatesError::ColumnCount { line: 4, found: 9 });
    let r = at_line_4("+4420,\"London,10,EUR,60/60,0,0,2026-01-01");
    assert_eq!(r, RatesError::BadQuoting { line: 4 });
    let r = at_line_4("+4420,\"London\" x,10,EUR,60/60,0,0,2026-01-01");
    assert_eq!(r, RatesError::BadQuoting { line: 4 });
    // The same prefix on another date is no duplicate.
    table("+44,UK,10,EUR,60/60,0,0,2026-01-01\n+44,UK,12,EUR,60/60,0,0,2026-03-01");
}

#[test]
fn header_and_empty_tables() {
    assert_eq!(parse_err(""), RatesError::NoHeader);
    assert_eq!(parse_err("# only\n\n  # comments\n"), RatesError::NoHeader);
    assert_eq!(
        parse_err(&format!("{HEAD}\n# no rows\n")),
        RatesError::NoRows
    );
    // A row where the header should be: line 2 after a comment.
    let r = parse_err("# x\n+44,UK,10,EUR,60/60,0,0,2026-01-01\n");
    assert!(matches!(r, RatesError::BadHeader { line: 2, .. }), "{r}");
    // Columns in another order would misprice silently: refused.
    let swapped = HEAD.replace("price_per_minute,currency", "currency,price_per_minute");
    assert!(matches!(
        parse_err(&swapped),
        RatesError::BadHeader { line: 1, .. }
    ));
}

#[test]
fn currency_shape() {
    assert_eq!(Currency::try_new("EUR").unwrap().to_string(), "EUR");
    assert!(Currency::try_new("Eur").is_none());
    assert!(Currency::try_new("€").is_none());
    assert!(Currency::try_new("").is_none());
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}", n in "\\PC{0,20}", at in proptest::prelude::any::<i64>()) {
        let _ = RateTable::parse("p", &text);
        let t = table("+44,UK,10,EUR,60/60,0,0,2026-01-01");
        let _ = t.rate_for(&n, at);
    }

    #[test]
    fn arbitrary_rows_never_panic(row in "[+0-9a-z,\"/ -]{0,80}") {
        let _ = RateTable::parse("p", &format!("{HEAD}\n{row}\n"));
    }
}
