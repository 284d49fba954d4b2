//! Every expected value is worked out by hand in the comment above it, from the module's rules:
//! seconds = ceil(ms / 1000); billable = increments(max(seconds, minimum));
//! cost = fee + ceil(billable × price / 60).
#![allow(clippy::unwrap_used, reason = "tests")]

use std::num::NonZeroU32;
use std::sync::Arc;

use proptest::prelude::*;
use time::{Date, Month};

use super::*;

fn rate(price: u64, first: u32, next: u32, minimum_secs: u32, fee: u64) -> Rate {
    Rate {
        prefix: "+447700".into(),
        destination: "UK mobile".into(),
        price_per_minute: price,
        currency: Currency::try_new("EUR").unwrap(),
        increments: Increments {
            first: NonZeroU32::new(first).unwrap(),
            next: NonZeroU32::new(next).unwrap(),
        },
        minimum_secs,
        connection_fee: fee,
        valid_from: Date::from_calendar_date(2026, Month::January, 1).unwrap(),
        line: 2,
        table_version: Arc::from("v3"),
    }
}

/// (billable seconds, cost) of a call of `ms` at `r`.
fn rated(r: &Rate, ms: u64) -> (u64, u64) {
    let x = rate_call(r, ms);
    (x.billable_secs, x.cost)
}

#[test]
fn increments_60_60() {
    let r = rate(10, 60, 60, 0, 0);
    // 61 s: first block 60 s, 1 s left starts one 60 s block: 60 + 60 = 120 s;
    // 120 × 10 / 60 = 20.
    assert_eq!(rated(&r, 61_000), (120, 20));
    // 60 s: exactly the first block; 60 × 10 / 60 = 10.
    assert_eq!(rated(&r, 60_000), (60, 10));
    // 1 ms rounds up to 1 s, which starts the first block: 60 s, 10.
    assert_eq!(rated(&r, 1), (60, 10));
    // 60.001 s rounds up to 61 s: 120 s again.
    assert_eq!(rated(&r, 60_001), (120, 20));
    // 180 s: 60 + 2 × 60 = 180 s; 180 × 10 / 60 = 30.
    assert_eq!(rated(&r, 180_000), (180, 30));
}

#[test]
fn increments_30_6() {
    let r = rate(7, 30, 6, 0, 0);
    // 31 s: 30 + one started 6 s block = 36 s; 36 × 7 = 252, / 60 = 4.2, rounded up to 5.
    assert_eq!(rated(&r, 31_000), (36, 5));
    // 5 s: inside the first block, billed whole: 30 s; 30 × 7 = 210, / 60 = 3.5, up to 4.
    assert_eq!(rated(&r, 5_000), (30, 4));
    // 36 s: 30 + exactly one block = 36 s, 5 as above.
    assert_eq!(rated(&r, 36_000), (36, 5));
    // 37 s: 30 + two started blocks (7 s) = 42 s; 42 × 7 = 294, / 60 = 4.9, up to 5.
    assert_eq!(rated(&r, 37_000), (42, 5));
}

#[test]
fn increments_1_1_are_exact() {
    let r = rate(7, 1, 1, 0, 0);
    // 61 s billed 61 s; 61 × 7 = 427, / 60 = 7.116..., up to 8.
    assert_eq!(rated(&r, 61_000), (61, 8));
    // 61.001 s rounds up to 62 s; 62 × 7 = 434, / 60 = 7.23..., up to 8.
    assert_eq!(rated(&r, 61_001), (62, 8));
    // At 60 per minute a second costs exactly 1: 61 s costs 61.
    assert_eq!(rated(&rate(60, 1, 1, 0, 0), 61_000), (61, 61));
    // 30 s at 1 per minute: 30 / 60 = 0.5, rounded up to 1 (never down to a free call).
    assert_eq!(rated(&rate(1, 1, 1, 0, 0), 30_000), (30, 1));
    // A price of 0 costs 0 whatever the duration.
    assert_eq!(rated(&rate(0, 1, 1, 0, 0), 3_600_000), (3_600, 0));
}

#[test]
fn minimum_duration() {
    // 1/1 with a 60 s minimum: 10 s is billed 60 s; 60 × 12 / 60 = 12.
    assert_eq!(rated(&rate(12, 1, 1, 60, 0), 10_000), (60, 12));
    // Above the minimum the duration counts: 100 s; 100 × 12 / 60 = 20.
    assert_eq!(rated(&rate(12, 1, 1, 60, 0), 100_000), (100, 20));
    // The minimum comes before the increments: 30/6 with a 45 s minimum bills 10 s as
    // 45 s, then 30 + ceil(15 / 6) × 6 = 30 + 18 = 48 s; 48 × 10 / 60 = 8.
    assert_eq!(rated(&rate(10, 30, 6, 45, 0), 10_000), (48, 8));
}

#[test]
fn connection_fee_once() {
    // 60/60, 12 per minute, fee 15; 125 s: 60 + 2 × 60 = 180 s; 180 × 12 / 60 = 36;
    // 36 + 15 = 51 (the fee once, not once per block: that would be 36 + 3 × 15 = 81).
    assert_eq!(rated(&rate(12, 60, 60, 0, 15), 125_000), (180, 51));
    // 61 s: 120 s; 120 × 12 / 60 = 24; 24 + 15 = 39.
    assert_eq!(rated(&rate(12, 60, 60, 0, 15), 61_000), (120, 39));
}

#[test]
fn zero_duration() {
    // No second to bill and no minimum: the fee alone, 15.
    assert_eq!(rated(&rate(12, 60, 60, 0, 15), 0), (0, 15));
    // No fee and no minimum: nothing at all.
    assert_eq!(rated(&rate(12, 60, 60, 0, 0), 0), (0, 0));
    // A 30 s minimum under 1/1: 30 s; 30 × 12 / 60 = 6; plus the fee 15 = 21.
    assert_eq!(rated(&rate(12, 1, 1, 30, 15), 0), (30, 21));
    // A 10 s minimum under 60/60: 10 s is inside the first block, billed 60 s; 60 × 12 / 60 = 12.
    assert_eq!(rated(&rate(12, 60, 60, 10, 0), 0), (60, 12));
}

#[test]
fn rated_names_its_rate() {
    let x = rate_call(&rate(10, 60, 60, 0, 0), 61_000);
    assert_eq!(x.currency.as_str(), "EUR");
    assert_eq!(x.prefix, "+447700");
    assert_eq!(x.destination, "UK mobile");
    assert_eq!(x.table_version, "v3");
    assert_eq!(
        x.valid_from,
        Date::from_calendar_date(2026, Month::January, 1).unwrap()
    );
}

#[test]
fn extremes_saturate_without_panicking() {
    // u64::MAX ms = 18 446 744 073 709 551 615 ms, rounded up to 18 446 744 073 709 552 s; at
    // u64::MAX per minute the cost is far beyond u64, so it saturates.
    let x = rate_call(&rate(u64::MAX, 1, 1, 0, u64::MAX), u64::MAX);
    assert_eq!(x.billable_secs, 18_446_744_073_709_552);
    assert_eq!(x.cost, u64::MAX);
    // A day-long first increment and minimum on a 1 ms call: 86 400 s.
    let x = rate_call(&rate(1, 86_400, 86_400, 86_400, 0), 1);
    assert_eq!(x.billable_secs, 86_400);
    // 86 400 × 1 / 60 = 1 440.
    assert_eq!(x.cost, 1_440);
}

proptest! {
    #[test]
    fn never_under_billed(
        ms in 0u64..10_000_000,
        extra in 0u64..10_000_000,
        price in 0u64..100_000,
        first in 1u32..=3_600,
        next in 1u32..=3_600,
        minimum in 0u32..=3_600,
        fee in 0u64..1_000,
    ) {
        let r = rate(price, first, next, minimum, fee);
        let a = rate_call(&r, ms);
        let b = rate_call(&r, ms + extra);
        // Billable covers the duration and the minimum, a longer call never costs less,
        // and the fee is always in the cost.
        prop_assert!(a.billable_secs >= ms.div_ceil(1000));
        prop_assert!(a.billable_secs >= u64::from(minimum));
        prop_assert!(b.billable_secs >= a.billable_secs);
        prop_assert!(b.cost >= a.cost);
        prop_assert!(a.cost >= fee);
        // Rounding adds less than one minor unit to the exact price.
        let exact = u128::from(a.billable_secs) * u128::from(price);
        let charged = u128::from(a.cost - fee) * 60;
        prop_assert!(charged >= exact && charged < exact + 60);
    }
}
