//! Billing in the store (issue 24): rate-table versions, the rating of each CDR at ingest and
//! the usage report's rows, shared by both backends so they rate and report alike.
//!
//! A rate table is stored per tenant as its CSV, keyed by its version (a hash of the CSV), and
//! every imported version is kept. Ingest rates each final CDR with the newest version of the
//! default tenant's table (multi-tenancy, mapping a CDR to its tenant, comes later): the rate
//! row is found by the CDR's `destination_prefix` on its start date; an answered call gets
//! billable seconds and a cost, an answered call with no prefix, no table or no matching row is
//! marked [`RatingState::Unrated`] (listed and counted, never priced as free).
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use collector_proto::v1::{Cdr, Disposition};
use sha2::{Digest as _, Sha256};

use super::StoreError;
use crate::billing::{rate_call, RateTable};

/// The billing migration both backends run, given the SQL of the `rate_tables` key column
/// (each backend's auto-increment): every rate-table version per tenant, and the rating
/// columns of a stored CDR.
macro_rules! billing_schema {
    ($id:literal) => {
        concat!(
            "CREATE TABLE rate_tables (id ",
            $id,
            r#",
        tenant      TEXT   NOT NULL,
        version     TEXT   NOT NULL,
        csv         TEXT   NOT NULL,
        imported_ms BIGINT NOT NULL,
        UNIQUE (tenant, version)
    );
    ALTER TABLE cdrs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE cdrs ADD COLUMN destination_prefix TEXT NOT NULL DEFAULT '';
    ALTER TABLE cdrs ADD COLUMN rating BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE cdrs ADD COLUMN destination TEXT NOT NULL DEFAULT '';
    ALTER TABLE cdrs ADD COLUMN rated_prefix TEXT NOT NULL DEFAULT '';
    ALTER TABLE cdrs ADD COLUMN billable_secs BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE cdrs ADD COLUMN cost BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE cdrs ADD COLUMN currency TEXT NOT NULL DEFAULT '';
    ALTER TABLE cdrs ADD COLUMN rate_version TEXT NOT NULL DEFAULT '';
    CREATE INDEX cdrs_tenant_start ON cdrs (tenant, start_time_ms);
    "#
        )
    };
}
pub(crate) use billing_schema;

pub use crate::server::token::{valid_tenant, DEFAULT_TENANT, MAX_TENANT_LEN};

/// A billing amount as a database integer, saturating (a cost beyond `i64::MAX` minor units
/// needs a call of millions of years; it must not make the batch unstorable).
pub fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The version of a rate table: the first 16 bytes of the SHA-256 of its CSV, in hex.
pub fn table_version(csv: &str) -> String {
    let digest = Sha256::digest(csv.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// How a stored CDR was rated (the `rating` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatingState {
    /// Not a billable event: an interim record or an unanswered call.
    NotBillable,
    /// Answered and priced.
    Rated,
    /// Answered, but no prefix, no table or no rate row matched: to be fixed, never free.
    Unrated,
}

impl RatingState {
    /// The stored value.
    pub const fn code(self) -> i64 {
        match self {
            RatingState::NotBillable => 0,
            RatingState::Rated => 1,
            RatingState::Unrated => 2,
        }
    }

    /// The state of a stored `rating` value (an unknown value reads as unrated: it must be
    /// looked at, never billed as free).
    pub const fn from_code(code: i64) -> Self {
        match code {
            0 => RatingState::NotBillable,
            1 => RatingState::Rated,
            _ => RatingState::Unrated,
        }
    }
}

/// The rating columns of one stored CDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrRating {
    /// Rated, unrated or not billable.
    pub state: RatingState,
    /// The CDR's destination prefix as the agent sent it.
    pub destination_prefix: String,
    /// The matched rate row's destination name (also for unanswered calls, for ASR), or empty.
    pub destination: String,
    /// The matched rate row's prefix, or empty.
    pub rated_prefix: String,
    /// Billable seconds (rated calls only).
    pub billable_secs: u64,
    /// Cost in minor units of `currency` (rated calls only).
    pub cost: u64,
    /// The rate row's currency, or empty.
    pub currency: String,
    /// The rate table's version used, or empty.
    pub rate_version: String,
}

/// Rates one CDR with `table` (the newest version of its tenant's table, if any).
pub fn rate_cdr(table: Option<&RateTable>, cdr: &Cdr) -> CdrRating {
    let answered = !cdr.interim && cdr.disposition() == Disposition::Answered;
    let rate = match (cdr.interim, cdr.destination_prefix.is_empty(), table) {
        (false, false, Some(t)) => {
            let start = i64::try_from(cdr.start_time_ms).unwrap_or(i64::MAX);
            t.rate_for(&cdr.destination_prefix, start)
        }
        _ => None,
    };
    let mut out = CdrRating {
        state: RatingState::NotBillable,
        destination_prefix: cdr.destination_prefix.clone(),
        destination: String::new(),
        rated_prefix: String::new(),
        billable_secs: 0,
        cost: 0,
        currency: String::new(),
        rate_version: String::new(),
    };
    match rate {
        Some(rate) => {
            out.destination = rate.destination.clone();
            out.rated_prefix = rate.prefix.clone();
            out.currency = rate.currency.as_str().to_owned();
            out.rate_version = rate.table_version.to_string();
            if answered {
                let rated = rate_call(rate, cdr.billable_ms);
                out.state = RatingState::Rated;
                out.billable_secs = rated.billable_secs;
                out.cost = rated.cost;
            }
        }
        None if answered => out.state = RatingState::Unrated,
        None => {}
    }
    out
}

/// Most parsed rate tables kept (one per tenant's newest version in use; when more are
/// needed the cache starts over, which costs a re-parse, never a wrong rate).
pub const RATE_CACHE_TABLES: usize = 256;

/// The parsed rate tables in use, by version (a hash of the CSV, so tenants with the same
/// table share it), re-parsed only when a tenant's newest version changes.
#[derive(Debug, Default)]
pub struct RateCache {
    tables: Mutex<HashMap<String, Arc<RateTable>>>,
}

impl RateCache {
    /// The table of `version`: the cached one, else `load()` parsed. `None` when no table is
    /// stored.
    pub fn table<F>(
        &self,
        version: Option<&str>,
        load: F,
    ) -> Result<Option<Arc<RateTable>>, StoreError>
    where
        F: FnOnce() -> Result<String, StoreError>,
    {
        let Some(version) = version else {
            return Ok(None);
        };
        let mut tables = self.tables.lock().map_err(|_| StoreError::Poisoned)?;
        if let Some(t) = tables.get(version) {
            return Ok(Some(Arc::clone(t)));
        }
        let csv = load()?;
        let table = Arc::new(
            RateTable::parse(version, &csv).map_err(|e| StoreError::StoredRates(e.to_string()))?,
        );
        if tables.len() >= RATE_CACHE_TABLES {
            tables.clear();
        }
        tables.insert(version.to_owned(), Arc::clone(&table));
        Ok(Some(table))
    }
}

/// Result of importing a rate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRates {
    /// The table's version.
    pub version: String,
    /// Its rate rows.
    pub rows: u64,
    /// False when this version was already stored.
    pub new_version: bool,
}

/// One group of the usage query (`GROUP BY` in the backends): final CDRs of one destination,
/// currency, rating state and answered flag (unrated and unknown destinations also by prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGroup {
    /// Destination name, or empty.
    pub destination: String,
    /// Currency, or empty.
    pub currency: String,
    /// Rating state code ([`RatingState::code`]).
    pub rating: i64,
    /// The CDRs' destination prefix when `destination` is empty, else empty.
    pub destination_prefix: String,
    /// Answered calls.
    pub answered: bool,
    /// CDRs in the group.
    pub calls: u64,
    /// Summed billable (answered) milliseconds.
    pub answered_ms: u64,
    /// Summed billable seconds.
    pub billable_secs: u64,
    /// Summed cost.
    pub cost: u64,
}

/// The migration of the daily usage aggregates (both backends): what the usage report needs
/// of the final CDRs that retention deletes, per tenant, day and usage group. Destination
/// names, rate-table prefixes and currencies only: nothing that identifies a party.
pub const USAGE_DAILY_SCHEMA: &str = "
    CREATE TABLE usage_daily (
        tenant        TEXT    NOT NULL,
        day           BIGINT  NOT NULL, -- days since the Unix epoch (UTC) of the calls' start
        destination   TEXT    NOT NULL,
        currency      TEXT    NOT NULL,
        rating        BIGINT  NOT NULL,
        dp            TEXT    NOT NULL, -- the destination prefix, when no destination matched
        answered      BOOLEAN NOT NULL,
        calls         BIGINT  NOT NULL,
        answered_ms   BIGINT  NOT NULL,
        billable_secs BIGINT  NOT NULL,
        cost          BIGINT  NOT NULL,
        PRIMARY KEY (tenant, day, destination, currency, rating, dp, answered)
    );
";

/// Folds the final CDRs that started before the cutoff (placeholder 1) into `usage_daily`,
/// in retention's transaction before it deletes them (both backends; PostgreSQL writes `$1`).
pub const USAGE_FOLD_SQL: &str = "INSERT INTO usage_daily (tenant, day, destination, currency,
        rating, dp, answered, calls, answered_ms, billable_secs, cost)
    SELECT tenant, start_time_ms / 86400000, destination, currency, rating,
        CASE WHEN destination = '' THEN destination_prefix ELSE '' END, disposition = 1,
        COUNT(*), CAST(SUM(billable_ms) AS BIGINT), CAST(SUM(billable_secs) AS BIGINT),
        CAST(SUM(cost) AS BIGINT)
    FROM cdrs WHERE start_time_ms < ?1 AND NOT interim
        AND (CAST(?2 AS TEXT) IS NULL OR tenant = ?2)
    GROUP BY 1, 2, 3, 4, 5, 6, 7
    ON CONFLICT (tenant, day, destination, currency, rating, dp, answered) DO UPDATE SET
        calls = usage_daily.calls + excluded.calls,
        answered_ms = usage_daily.answered_ms + excluded.answered_ms,
        billable_secs = usage_daily.billable_secs + excluded.billable_secs,
        cost = usage_daily.cost + excluded.cost";

/// The usage query both backends run: the final CDRs still stored and the daily usage
/// aggregates of those retention deleted, summed per group. Placeholders 1 to 5: tenant,
/// from and to (Unix ms), and the same range in days ([`usage_days`]); written `?N`,
/// PostgreSQL swaps them for `$N`.
pub const USAGE_SQL: &str = "SELECT destination, currency, rating, dp, answered,
        CAST(SUM(calls) AS BIGINT), CAST(SUM(answered_ms) AS BIGINT),
        CAST(SUM(billable_secs) AS BIGINT), CAST(SUM(cost) AS BIGINT)
    FROM (
        SELECT destination, currency, rating,
            CASE WHEN destination = '' THEN destination_prefix ELSE '' END AS dp,
            disposition = 1 AS answered, 1 AS calls, billable_ms AS answered_ms,
            billable_secs, cost
        FROM cdrs
        WHERE tenant = ?1 AND start_time_ms >= ?2 AND start_time_ms < ?3 AND NOT interim
        UNION ALL
        SELECT destination, currency, rating, dp, answered, calls, answered_ms, billable_secs,
            cost
        FROM usage_daily WHERE tenant = ?1 AND day >= ?4 AND day < ?5
    ) AS u
    GROUP BY destination, currency, rating, dp, answered";

/// The days `from..to` of a usage query over `from_ms..to_ms`: the days that start in the
/// range (a month's range is whole days, so its folded days are exactly its own).
pub fn usage_days(from_ms: u64, to_ms: u64) -> (u64, u64) {
    (
        from_ms.div_ceil(super::DAY_MS),
        to_ms.div_ceil(super::DAY_MS),
    )
}

/// The final CDRs a re-rating reads (placeholders: tenant, since in Unix ms), with the key
/// the backend updates them by first (SQLite `id`; PostgreSQL `agent_id, sequence`).
pub const RERATE_COLUMNS: &str = "destination_prefix, disposition, billable_ms, start_time_ms,
    rating, destination, rated_prefix, billable_secs, cost, currency, rate_version";

/// The rating columns a re-rating writes, in [`CdrRating::values`]' order.
pub const RATING_SET: &str = "rating = ?1, destination = ?2, rated_prefix = ?3,
    billable_secs = ?4, cost = ?5, currency = ?6, rate_version = ?7";

/// The stored fields of one final CDR that rating reads, and its current rating.
#[derive(Debug, Clone)]
pub struct RatedRow {
    /// Destination prefix from the agent.
    pub destination_prefix: String,
    /// Disposition value.
    pub disposition: i32,
    /// Billable ms.
    pub billable_ms: u64,
    /// Start, Unix ms.
    pub start_time_ms: u64,
    /// The rating stored now.
    pub current: CdrRating,
}

impl RatedRow {
    /// Its rating with `table`, when that differs from the stored one.
    pub fn rerated(&self, table: Option<&RateTable>) -> Option<CdrRating> {
        let cdr = Cdr {
            destination_prefix: self.destination_prefix.clone(),
            disposition: self.disposition,
            billable_ms: self.billable_ms,
            start_time_ms: self.start_time_ms,
            ..Default::default()
        };
        let new = rate_cdr(table, &cdr);
        (new != self.current).then_some(new)
    }
}

/// What a re-rating did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RerateOutcome {
    /// The rate-table version applied (`None`: the tenant has no table; every answered CDR
    /// of the period is then unrated).
    pub version: Option<String>,
    /// Final CDRs of the period read.
    pub cdrs: u64,
    /// Of those, CDRs whose rating changed.
    pub changed: u64,
    /// Answered CDRs of the period left unrated.
    pub unrated: u64,
}

/// Folds the usage groups into the report: destinations ordered by name then currency, the
/// unrated answered calls by prefix.
pub fn usage_report(groups: &[UsageGroup]) -> collector_proto::v1::UsageReport {
    use collector_proto::v1::{DestinationUsage, UnratedUsage};
    use std::collections::BTreeMap;
    let mut dest: BTreeMap<(String, String), DestinationUsage> = BTreeMap::new();
    let mut unrated: BTreeMap<String, UnratedUsage> = BTreeMap::new();
    for g in groups {
        if g.rating == RatingState::Unrated.code() {
            let u = unrated
                .entry(g.destination_prefix.clone())
                .or_insert_with(|| UnratedUsage {
                    destination_prefix: g.destination_prefix.clone(),
                    ..Default::default()
                });
            u.calls = u.calls.saturating_add(g.calls);
            u.answered_ms = u.answered_ms.saturating_add(g.answered_ms);
            // Listed apart, never in a destination's row (where it would look free).
            continue;
        }
        let d = dest
            .entry((g.destination.clone(), g.currency.clone()))
            .or_insert_with(|| DestinationUsage {
                destination: g.destination.clone(),
                currency: g.currency.clone(),
                ..Default::default()
            });
        d.calls = d.calls.saturating_add(g.calls);
        if g.answered {
            d.answered = d.answered.saturating_add(g.calls);
            d.answered_ms = d.answered_ms.saturating_add(g.answered_ms);
        }
        d.billable_secs = d.billable_secs.saturating_add(g.billable_secs);
        d.cost = d.cost.saturating_add(g.cost);
    }
    collector_proto::v1::UsageReport {
        destinations: dest.into_values().collect(),
        unrated: unrated.into_values().collect(),
    }
}
