//! Rate tables: the CSV format, its validation, and the longest-prefix lookup on a call's date.
//!
//! The format, one rate per line, after one header line naming the columns in this order:
//!
//! ```text
//! # comments start with '#'; blank lines are skipped
//! prefix,destination,price_per_minute,currency,increments,minimum_secs,connection_fee,valid_from
//! +44,United Kingdom,12,EUR,60/60,0,0,2026-01-01
//! +447700,"United Kingdom, mobile",30,EUR,30/6,30,5,2026-01-01
//! ```
//!
//! - `prefix`: `+` and 1 to 15 digits (E.164, not starting with 0).
//! - `destination`: free text, non-empty; a field may be double-quoted (RFC 4180: `""` inside
//!   quotes is a quote), so names can hold commas.
//! - `price_per_minute`, `connection_fee`: non-negative integers in the currency's minor unit
//!   (cents for EUR); no sign, no decimal point: money is never floating point.
//! - `currency`: an ISO 4217 alphabetic code (three upper-case letters, shape checked only),
//!   the same on every row of a table.
//! - `increments`: `first/next` in seconds, both at least 1 and at most one day (`60/60`, `30/6`).
//! - `minimum_secs`: minimum billable duration of an answered call, 0 to one day.
//! - `valid_from`: `YYYY-MM-DD`, a UTC date; a row applies to calls starting on or after it,
//!   until a row with the same prefix and a later `valid_from` takes over.
//!
//! Lines are numbered from 1 as an editor shows them; every [`RatesError`] names its line, the
//! first error in file order is reported. A UTF-8 byte order mark (spreadsheet exports) is
//! skipped, and `\r\n` line ends are accepted.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use time::{Date, Month, OffsetDateTime};

use super::{e164_digits, E164_MAX_DIGITS};

/// The header every table starts with (after comments and blank lines), matched column by
/// column, case-insensitively, surrounding spaces ignored.
pub const HEADER: [&str; 8] = [
    "prefix",
    "destination",
    "price_per_minute",
    "currency",
    "increments",
    "minimum_secs",
    "connection_fee",
    "valid_from",
];

/// Most rows a table may hold: tables are held in memory, by the agent too.
pub const MAX_ROWS: usize = 1_000_000;

/// Longest increment or minimum duration accepted, in seconds (one day): anything longer is a
/// typing error, not a tariff.
pub const MAX_SECS: u32 = 86_400;

/// An ISO 4217 alphabetic currency code, e.g. `EUR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The code if `code` is three upper-case ASCII letters (the shape of ISO 4217 codes; the
    /// list of codes itself is not checked).
    pub fn try_new(code: &str) -> Option<Self> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Some(Self([a, b, c])),
            _ => None,
        }
    }

    /// The code, e.g. `"EUR"`.
    pub fn as_str(&self) -> &str {
        // Always ASCII by construction, so the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Billing increments: the first `first` seconds are billed as one block, then every started
/// block of `next` seconds. Both are at least 1, so rating never divides by zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Increments {
    /// The first block, in seconds (60 in `60/60`, 30 in `30/6`).
    pub first: NonZeroU32,
    /// Each following block, in seconds (60 in `60/60`, 6 in `30/6`).
    pub next: NonZeroU32,
}

impl fmt::Display for Increments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.first, self.next)
    }
}

/// One row of a rate table: the price of calls to numbers under `prefix` from `valid_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// The prefix, `+` and digits, e.g. `+4420`.
    pub prefix: String,
    /// The destination's name, e.g. `United Kingdom, London`.
    pub destination: String,
    /// Price of one minute, in minor units of `currency` (cents for EUR).
    pub price_per_minute: u64,
    /// The table's currency.
    pub currency: Currency,
    /// How the duration is rounded up.
    pub increments: Increments,
    /// Minimum billable duration of an answered call, in seconds.
    pub minimum_secs: u32,
    /// Charged once per answered call, in minor units of `currency`.
    pub connection_fee: u64,
    /// First UTC date on which the row applies.
    pub valid_from: Date,
    /// The row's line in the CSV, for operators fixing a table.
    pub line: usize,
    /// The version of the table the row belongs to, carried into every [`super::Rated`].
    pub table_version: Arc<str>,
}

/// A rate table that cannot be loaded; each variant names the (1-based) line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatesError {
    /// The text holds no header line (only comments and blank lines, or nothing).
    #[error("rate table: no header line (expected `{}`)", HEADER.join(","))]
    NoHeader,
    /// The first line that is not a comment is not the header.
    #[error("line {line}: header must be `{}`, found `{found}`", HEADER.join(","))]
    BadHeader {
        /// Line number.
        line: usize,
        /// The line as found.
        found: String,
    },
    /// A row has the wrong number of columns.
    #[error("line {line}: expected {} columns, found {found}", HEADER.len())]
    ColumnCount {
        /// Line number.
        line: usize,
        /// Columns found.
        found: usize,
    },
    /// A double-quoted field is not closed, or text follows its closing quote.
    #[error("line {line}: badly quoted field")]
    BadQuoting {
        /// Line number.
        line: usize,
    },
    /// The prefix is not `+` and 1 to 15 digits, or starts with 0.
    #[error("line {line}: bad prefix {value:?}: {reason}")]
    BadPrefix {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The destination name is empty.
    #[error("line {line}: empty destination name")]
    EmptyDestination {
        /// Line number.
        line: usize,
    },
    /// The price per minute is not a non-negative integer of minor units.
    #[error("line {line}: bad price per minute {value:?}: integer minor units expected (e.g. 12 for 0.12)")]
    BadPrice {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
    },
    /// The connection fee is not a non-negative integer of minor units.
    #[error("line {line}: bad connection fee {value:?}: integer minor units expected")]
    BadFee {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
    },
    /// The currency is not three upper-case letters.
    #[error("line {line}: bad currency {value:?}: ISO 4217 code expected (e.g. EUR)")]
    BadCurrency {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
    },
    /// The row's currency differs from the table's (the first row's).
    #[error("line {line}: currency {found} differs from the table's {expected} (line {first_line}); one currency per table")]
    MixedCurrencies {
        /// Line number.
        line: usize,
        /// This row's currency.
        found: Currency,
        /// The table's currency.
        expected: Currency,
        /// The line that set the table's currency.
        first_line: usize,
    },
    /// The increments are not `first/next` with two integers.
    #[error(
        "line {line}: bad increments {value:?}: `first/next` in seconds expected (e.g. 60/60)"
    )]
    BadIncrements {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
    },
    /// An increment is zero.
    #[error("line {line}: zero increment in {value:?}: both increments must be at least 1 second")]
    ZeroIncrement {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
    },
    /// A duration (increment or minimum) is longer than [`MAX_SECS`].
    #[error("line {line}: {field} {value} s is longer than {MAX_SECS} s")]
    TooLong {
        /// Line number.
        line: usize,
        /// Which column.
        field: &'static str,
        /// The value, in seconds.
        value: u64,
    },
    /// The minimum duration is not a non-negative integer of seconds.
    #[error("line {line}: bad minimum duration {value:?}: whole seconds expected")]
    BadMinimum {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
    },
    /// The valid-from date is not a `YYYY-MM-DD` calendar date.
    #[error("line {line}: bad valid-from date {value:?}: YYYY-MM-DD expected")]
    BadDate {
        /// Line number.
        line: usize,
        /// The field as found.
        value: String,
    },
    /// Two rows have the same prefix and valid-from date, so neither would win.
    #[error("line {line}: duplicate rate for {prefix} valid from {valid_from} (first at line {first_line})")]
    Duplicate {
        /// Line number of the second row.
        line: usize,
        /// The prefix.
        prefix: String,
        /// The date.
        valid_from: Date,
        /// Line number of the first row.
        first_line: usize,
    },
    /// The table has more than [`MAX_ROWS`] rows.
    #[error("line {line}: more than {MAX_ROWS} rows")]
    TooManyRows {
        /// Line number of the first row too many.
        line: usize,
    },
    /// The table has a header but no row, so it has no currency and rates nothing.
    #[error("rate table: header but no rows")]
    NoRows,
}

impl RatesError {
    /// The line at fault, if the error is about one line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::NoHeader | Self::NoRows => None,
            Self::BadHeader { line, .. }
            | Self::ColumnCount { line, .. }
            | Self::BadQuoting { line }
            | Self::BadPrefix { line, .. }
            | Self::EmptyDestination { line }
            | Self::BadPrice { line, .. }
            | Self::BadFee { line, .. }
            | Self::BadCurrency { line, .. }
            | Self::MixedCurrencies { line, .. }
            | Self::BadIncrements { line, .. }
            | Self::ZeroIncrement { line, .. }
            | Self::TooLong { line, .. }
            | Self::BadMinimum { line, .. }
            | Self::BadDate { line, .. }
            | Self::Duplicate { line, .. }
            | Self::TooManyRows { line } => Some(*line),
        }
    }
}

/// A validated, versioned rate table with its lookup index.
#[derive(Debug, Clone)]
pub struct RateTable {
    version: Arc<str>,
    currency: Currency,
    rows: Vec<Rate>,
    /// Prefix digits (without `+`) to the indices of its rows in `rows`, by `valid_from`
    /// ascending. A lookup probes at most [`E164_MAX_DIGITS`] keys, whatever the table's size.
    index: HashMap<Box<str>, Vec<usize>>,
    /// Digits of the longest prefix, so short tables probe fewer keys.
    longest: usize,
}

impl RateTable {
    /// Parses and validates a table in the CSV format of this module. `version` names the table
    /// in every [`super::Rated`] (the importer chooses it, e.g. a sequence number per tenant).
    pub fn parse(version: &str, csv: &str) -> Result<Self, RatesError> {
        let csv = csv.strip_prefix('\u{feff}').unwrap_or(csv);
        let version: Arc<str> = Arc::from(version);
        let mut lines = csv
            .lines()
            .enumerate()
            .map(|(i, text)| (i.saturating_add(1), text))
            .filter(|(_, text)| {
                let t = text.trim();
                !t.is_empty() && !t.starts_with('#')
            });

        let (header_line, header) = lines.next().ok_or(RatesError::NoHeader)?;
        let header_ok = split_fields(header).is_some_and(|fields| {
            fields.len() == HEADER.len()
                && fields
                    .iter()
                    .zip(HEADER)
                    .all(|(found, want)| found.trim().eq_ignore_ascii_case(want))
        });
        if !header_ok {
            return Err(RatesError::BadHeader {
                line: header_line,
                found: header.trim().to_owned(),
            });
        }

        let mut rows: Vec<Rate> = Vec::new();
        let mut table_currency: Option<(Currency, usize)> = None;
        let mut seen: HashMap<(Box<str>, Date), usize> = HashMap::new();
        for (line, text) in lines {
            if rows.len() >= MAX_ROWS {
                return Err(RatesError::TooManyRows { line });
            }
            let rate = parse_row(line, text, &version)?;
            match table_currency {
                None => table_currency = Some((rate.currency, line)),
                Some((expected, first_line)) if expected != rate.currency => {
                    return Err(RatesError::MixedCurrencies {
                        line,
                        found: rate.currency,
                        expected,
                        first_line,
                    });
                }
                Some(_) => {}
            }
            let key = (Box::from(rate.prefix.as_str()), rate.valid_from);
            if let Some(&first_line) = seen.get(&key) {
                return Err(RatesError::Duplicate {
                    line,
                    prefix: rate.prefix,
                    valid_from: rate.valid_from,
                    first_line,
                });
            }
            seen.insert(key, line);
            rows.push(rate);
        }
        let (currency, _) = table_currency.ok_or(RatesError::NoRows)?;

        let mut index: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut longest = 0;
        for (i, rate) in rows.iter().enumerate() {
            let digits = rate.prefix.strip_prefix('+').unwrap_or(&rate.prefix);
            longest = longest.max(digits.len());
            index.entry(Box::from(digits)).or_default().push(i);
        }
        for slots in index.values_mut() {
            // Dates are unique per prefix (checked above), so the order is total.
            slots.sort_by_key(|&i| rows.get(i).map(|r| r.valid_from));
        }
        Ok(Self {
            version,
            currency,
            rows,
            index,
            longest,
        })
    }

    /// The rate for a call to `number` (E.164, `+<digits>`, or a destination prefix as the
    /// agent keeps it) starting at `call_start_unix_ms`: among the prefixes of `number` that
    /// have a row valid on the call's UTC start date, the longest one, with its row of the
    /// latest `valid_from` not after that date. A prefix whose rows all start later is passed
    /// over for a shorter one. `None` if no row applies or `number` is not `+<digits>`: an
    /// unrated call, which the caller counts, never a free one.
    pub fn rate_for(&self, number: &str, call_start_unix_ms: i64) -> Option<&Rate> {
        let digits = e164_digits(number)?;
        let date = utc_date(call_start_unix_ms)?;
        let max = digits.len().min(self.longest);
        (1..=max).rev().find_map(|len| {
            let slots = self.index.get(digits.get(..len)?)?;
            // Rows valid on `date` come first in `slots` (sorted by valid_from).
            let valid =
                slots.partition_point(|&i| self.rows.get(i).is_some_and(|r| r.valid_from <= date));
            let i = *slots.get(valid.checked_sub(1)?)?;
            self.rows.get(i)
        })
    }

    /// The version the table was parsed with.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The table's currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// All rows, in file order.
    pub fn rows(&self) -> &[Rate] {
        &self.rows
    }

    /// Number of rows (never zero: a table without rows does not parse).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Always false (a table without rows does not parse); here for the `len` convention.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The UTC calendar date of a Unix time in milliseconds, `None` out of `time`'s range.
fn utc_date(unix_ms: i64) -> Option<Date> {
    OffsetDateTime::from_unix_timestamp(unix_ms.div_euclid(1000))
        .ok()
        .map(OffsetDateTime::date)
}

fn parse_row(line: usize, text: &str, version: &Arc<str>) -> Result<Rate, RatesError> {
    let fields = split_fields(text).ok_or(RatesError::BadQuoting { line })?;
    let [prefix, destination, price, currency, increments, minimum, fee, valid_from] =
        <[String; 8]>::try_from(fields).map_err(|fields| RatesError::ColumnCount {
            line,
            found: fields.len(),
        })?;
    let trimmed = |s: &str| s.trim().to_owned();

    let prefix = prefix.trim();
    check_prefix(prefix).map_err(|reason| RatesError::BadPrefix {
        line,
        value: prefix.to_owned(),
        reason,
    })?;

    let destination = destination.trim();
    if destination.is_empty() {
        return Err(RatesError::EmptyDestination { line });
    }

    let price_per_minute = parse_uint(&price).ok_or_else(|| RatesError::BadPrice {
        line,
        value: trimmed(&price),
    })?;
    let currency = Currency::try_new(currency.trim()).ok_or_else(|| RatesError::BadCurrency {
        line,
        value: trimmed(&currency),
    })?;
    let increments = parse_increments(line, &increments)?;
    let minimum_secs = parse_uint(&minimum).ok_or_else(|| RatesError::BadMinimum {
        line,
        value: trimmed(&minimum),
    })?;
    let minimum_secs = secs_at_most_a_day(line, "minimum duration", minimum_secs)?;
    let connection_fee = parse_uint(&fee).ok_or_else(|| RatesError::BadFee {
        line,
        value: trimmed(&fee),
    })?;
    let valid_from = parse_date(valid_from.trim()).ok_or_else(|| RatesError::BadDate {
        line,
        value: trimmed(&valid_from),
    })?;

    Ok(Rate {
        prefix: prefix.to_owned(),
        destination: destination.to_owned(),
        price_per_minute,
        currency,
        increments,
        minimum_secs,
        connection_fee,
        valid_from,
        line,
        table_version: Arc::clone(version),
    })
}

fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    let Some(digits) = prefix.strip_prefix('+') else {
        return Err("must start with '+'");
    };
    if digits.is_empty() {
        return Err("no digits after '+'");
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err("only digits may follow '+'");
    }
    if digits.len() > E164_MAX_DIGITS {
        return Err("longer than 15 digits");
    }
    if digits.starts_with('0') {
        return Err("no country code starts with 0");
    }
    Ok(())
}

fn parse_increments(line: usize, field: &str) -> Result<Increments, RatesError> {
    let value = field.trim();
    let bad = || RatesError::BadIncrements {
        line,
        value: value.to_owned(),
    };
    let (first, next) = value.split_once('/').ok_or_else(bad)?;
    let first = parse_uint(first).ok_or_else(bad)?;
    let next = parse_uint(next).ok_or_else(bad)?;
    let first = secs_at_most_a_day(line, "first increment", first)?;
    let next = secs_at_most_a_day(line, "next increment", next)?;
    match (NonZeroU32::new(first), NonZeroU32::new(next)) {
        (Some(first), Some(next)) => Ok(Increments { first, next }),
        _ => Err(RatesError::ZeroIncrement {
            line,
            value: value.to_owned(),
        }),
    }
}

fn secs_at_most_a_day(line: usize, field: &'static str, value: u64) -> Result<u32, RatesError> {
    u32::try_from(value)
        .ok()
        .filter(|&v| v <= MAX_SECS)
        .ok_or(RatesError::TooLong { line, field, value })
}

/// A non-negative integer written with ASCII digits only (`u64::from_str` would take a `+`).
fn parse_uint(field: &str) -> Option<u64> {
    let field = field.trim();
    if field.is_empty() || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

/// `YYYY-MM-DD`, strictly: four, two and two digits, a real calendar date.
fn parse_date(field: &str) -> Option<Date> {
    let mut parts = field.split('-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let year = i32::try_from(parse_uint(year)?).ok()?;
    let month = Month::try_from(u8::try_from(parse_uint(month)?).ok()?).ok()?;
    let day = u8::try_from(parse_uint(day)?).ok()?;
    Date::from_calendar_date(year, month, day).ok()
}

/// Splits one CSV line into fields: commas separate, a field that starts with `"` (after
/// spaces) runs to the closing `"`, and `""` inside it is one `"`. `None` if a quote is not
/// closed or text other than spaces follows a closing quote. Fields are returned untrimmed.
fn split_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        while chars.peek().is_some_and(|&c| c == ' ' || c == '\t') {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    '"' => break,
                    c => field.push(c),
                }
            }
            while chars.peek().is_some_and(|&c| c == ' ' || c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Some(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return None,
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Some(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
#[path = "rates_tests.rs"]
mod tests;
