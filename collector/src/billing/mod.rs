//! Billing: rate tables, call rating and destination prefixes (issue 24), pure functions only.
//!
//! A VoIP provider charges by destination and duration, but billing must never see a full
//! callee number. The agent therefore keeps only the number's destination prefix
//! ([`destination_prefix`], over a [`PrefixSet`] built from the same rate-table CSV the
//! collector rates with), and the collector rates each answered call by that prefix on the
//! call's start date ([`RateTable::rate_for`], then [`rate_call`]).
//!
//! - [`rates`]: the rate-table CSV format, its validation (errors name the line) and the
//!   longest-prefix, date-aware lookup.
//! - [`rating`]: billable seconds from the increments and minimum, cost in integer minor units.
//! - [`prefix`]: the agent's prefix policy, falling back to the ITU-T E.164 country code
//!   ([`country`]).
//!
//! Money is integer minor units end to end (no floating point); no I/O, no clock, no logging.

pub mod country;
pub mod prefix;
pub mod rates;
pub mod rating;

pub use prefix::{destination_prefix, PrefixSet};
pub use rates::{Currency, Increments, Rate, RateTable, RatesError, HEADER, MAX_ROWS, MAX_SECS};
pub use rating::{rate_call, Rated};

/// Longest E.164 number, in digits (ITU-T E.164 §6.1: at most 15 digits after the `+`).
pub const E164_MAX_DIGITS: usize = 15;

/// The digits of an E.164 number written `+<digits>` (1 to [`E164_MAX_DIGITS`] ASCII digits),
/// or `None` for anything else: callers normalise dialled strings first
/// ([`crate::privacy::normalize`]), so a missing `+` means the number could not be normalised.
pub(crate) fn e164_digits(number: &str) -> Option<&str> {
    let digits = number.strip_prefix('+')?;
    let ok = !digits.is_empty()
        && digits.len() <= E164_MAX_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(digits)
}
