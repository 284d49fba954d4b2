//! Rating one answered call: billable seconds from the increments, cost in integer minor units.
//!
//! The rules, in order:
//! 1. The duration is rounded up to whole seconds (1 ms is 1 s; 61.001 s is 62 s).
//! 2. The minimum duration applies: billable = max(seconds, `minimum_secs`).
//! 3. The increments apply to a non-zero result: up to `first` seconds bill as `first`, beyond
//!    it every started block of `next` seconds bills whole (`30/6`: 31 s bills 36 s).
//! 4. Cost = connection fee + ceil(billable × price per minute / 60): the per-second share is
//!    rounded **up** to the next minor unit, once per call (never per increment), so a call is
//!    never under-charged by a fraction of a cent and rounding adds at most one minor unit.
//!
//! A zero-duration answered call (0 ms, e.g. answered and hung up at once): step 3 does not
//! round 0 s up to a first increment, so such a call pays the connection fee plus the
//! minimum duration, i.e. something only if the row has `connection_fee > 0` or
//! `minimum_secs > 0`, and exactly 0 otherwise. Whether to rate it at all (answered or not) is
//! the caller's decision; this module only rates answered calls it is given.
//!
//! Arithmetic is in `u128`, where no intermediate can overflow (a `u64` of seconds times a `u64`
//! price fits); a cost beyond `u64::MAX` minor units, possible only for a call of millions of
//! years, saturates.

use super::rates::{Currency, Increments, Rate};
use time::Date;

/// The rating of one call: what is billed, at which rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rated {
    /// Billable duration after rounding, the minimum and the increments, in seconds.
    pub billable_secs: u64,
    /// Connection fee plus the duration's price, in minor units of `currency`.
    pub cost: u64,
    /// The currency of `cost`.
    pub currency: Currency,
    /// The rate's prefix, e.g. `+447700`.
    pub prefix: String,
    /// The rate's destination name.
    pub destination: String,
    /// The first date of the rate row used (with `prefix`, it names the row within the table).
    pub valid_from: Date,
    /// The version of the rate table used.
    pub table_version: String,
}

/// Rates an answered call of `duration_ms` at `rate` (see the module docs for the rules).
pub fn rate_call(rate: &Rate, duration_ms: u64) -> Rated {
    let secs = u128::from(duration_ms.div_ceil(1000));
    let billable = billable_secs(secs, u128::from(rate.minimum_secs), rate.increments);
    let priced = (billable * u128::from(rate.price_per_minute)).div_ceil(60);
    let cost = u128::from(rate.connection_fee) + priced;
    Rated {
        billable_secs: saturate(billable),
        cost: saturate(cost),
        currency: rate.currency,
        prefix: rate.prefix.clone(),
        destination: rate.destination.clone(),
        valid_from: rate.valid_from,
        table_version: rate.table_version.to_string(),
    }
}

/// Steps 2 and 3 of the module docs.
fn billable_secs(secs: u128, minimum: u128, increments: Increments) -> u128 {
    let secs = secs.max(minimum);
    let first = u128::from(increments.first.get());
    let next = u128::from(increments.next.get());
    if secs == 0 {
        0
    } else if secs <= first {
        first
    } else {
        // `next` is a NonZeroU32, so the division is defined.
        first + (secs - first).div_ceil(next) * next
    }
}

fn saturate(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "rating_tests.rs"]
mod tests;
