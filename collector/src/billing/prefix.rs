//! The agent's prefix policy: what is kept of a callee number for billing.
//!
//! The agent keeps the longest prefix of the number that the rate table knows (country code
//! plus area or mobile-network prefix, e.g. `+4420`, `+447700`), so the collector can rate the
//! call without ever seeing the subscriber part. The [`PrefixSet`] is built from the same CSV
//! the collector rates with, so the agent keeps exactly the prefixes the collector looks up;
//! it holds every prefix of the table whatever its `valid_from`, so a prefix that only later
//! gets a rate is still kept, and the collector's date-aware lookup falls back to a shorter
//! prefix of it when needed ([`super::RateTable::rate_for`] takes a prefix as well as a number).
//!
//! A number under no prefix of the table keeps its ITU-T E.164 country code alone
//! ([`super::country`]): enough to count the unrated call by country, never the subscriber.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::collections::HashSet;

use super::country::country_code;
use super::e164_digits;
use super::rates::{RateTable, RatesError};

/// The prefixes of a rate table, for [`destination_prefix`]. The default set is empty: every
/// number then keeps its country code only.
#[derive(Debug, Clone, Default)]
pub struct PrefixSet {
    /// Prefix digits, without `+`.
    digits: HashSet<Box<str>>,
    /// Digits of the longest prefix.
    longest: usize,
}

impl PrefixSet {
    /// The prefixes of `table`, whatever their dates.
    pub fn from_table(table: &RateTable) -> Self {
        let mut set = Self::default();
        for rate in table.rows() {
            let digits = rate.prefix.strip_prefix('+').unwrap_or(&rate.prefix);
            set.longest = set.longest.max(digits.len());
            set.digits.insert(Box::from(digits));
        }
        set
    }

    /// Reads a rate-table CSV with the collector's validation (the agent refuses a table the
    /// collector would refuse, so the two cannot disagree) and keeps its prefixes.
    pub fn parse(csv: &str) -> Result<Self, RatesError> {
        RateTable::parse("", csv).map(|table| Self::from_table(&table))
    }

    /// Whether `prefix` (`+<digits>`) is in the set.
    pub fn contains(&self, prefix: &str) -> bool {
        prefix
            .strip_prefix('+')
            .is_some_and(|digits| self.digits.contains(digits))
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.digits.len()
    }

    /// Whether the set holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.digits.is_empty()
    }
}

/// What the agent keeps of a normalised callee number (`+<digits>`): its longest prefix in
/// `prefixes`; failing that, its E.164 country code (`+4930123` gives `+49` when no German
/// prefix is listed); failing that (spare code), or if the number is not `+` and 1 to 15
/// digits, an empty string. The result is always `+` and a prefix of the number's digits, and
/// never longer than the prefix matched. A table row whose prefix is a whole number keeps that
/// number: the rate table, not this function, decides how much of a number billing sees.
pub fn destination_prefix(number_e164: &str, prefixes: &PrefixSet) -> String {
    let Some(digits) = e164_digits(number_e164) else {
        return String::new();
    };
    let longest = digits.len().min(prefixes.longest);
    let listed = (1..=longest)
        .rev()
        .filter_map(|len| digits.get(..len))
        .find(|head| prefixes.digits.contains(*head));
    match listed.or_else(|| country_code(digits)) {
        Some(head) => format!("+{head}"),
        None => String::new(),
    }
}

#[cfg(test)]
#[path = "prefix_tests.rs"]
mod tests;
