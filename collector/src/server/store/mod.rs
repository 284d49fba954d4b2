//! CDR storage behind the collector's gRPC services: the [`Store`] trait and its backends.
//!
//! Callers (the ingest, query and admin services) see only [`Store`] and [`open`]; a backend
//! is chosen by the URL scheme. SQLite ([`sqlite`]) is the default; a PostgreSQL backend can
//! be added as another module implementing the same trait and another arm in [`open`].
//!
//! Exactly-once storage: each agent numbers its CDRs with a strictly increasing sequence.
//! [`Store::ingest`] commits a batch and advances that agent's cursor in one transaction
//! and skips sequences at or below the cursor, so a batch resent after a lost ack or a
//! restart is never stored twice. It returns only after the commit is durable.
pub mod sqlite;

use std::sync::Arc;

use collector_proto::v1::{Cdr, CdrRecord, Disposition};
use thiserror::Error;

/// Default number of CDRs a query returns when the request does not say.
pub const DEFAULT_QUERY_LIMIT: u32 = 1_000;
/// Most CDRs one query may return.
pub const MAX_QUERY_LIMIT: u32 = 100_000;

/// Errors of a store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The storage URL is malformed or names an unknown backend. Only the scheme is kept:
    /// a database URL may carry a password.
    #[error("unsupported storage url (scheme {scheme:?}): {why}")]
    Url {
        /// The URL's scheme.
        scheme: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The database file could not be created or given private permissions.
    #[error("preparing the database file failed")]
    File(#[source] std::io::Error),
    /// The database refused an operation.
    #[error("database {what} failed")]
    Database {
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer release.
    #[error("database schema version {found} is newer than this release supports ({supported})")]
    SchemaTooNew {
        /// Version found.
        found: u32,
        /// Highest version known here.
        supported: u32,
    },
    /// A stored CDR could not be decoded.
    #[error("stored cdr could not be decoded")]
    Decode(#[source] prost::DecodeError),
    /// A batch breaks the ingest rules (sequence order, missing record).
    #[error("invalid batch: {0}")]
    InvalidBatch(&'static str),
    /// The worker running the blocking database call went away.
    #[error("database worker failed")]
    Worker(#[source] tokio::task::JoinError),
    /// A thread panicked while holding the connection.
    #[error("database connection lock poisoned")]
    Poisoned,
}

/// Filters of a CDR query (every set filter must match). Mirrors `collector.v1.CdrQuery`
/// after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CdrFilter {
    /// `start_time_ms >= start_from_ms`.
    pub start_from_ms: Option<u64>,
    /// `start_time_ms < start_to_ms`.
    pub start_to_ms: Option<u64>,
    /// The pseudonym appears in a party field (user, domain or display of caller or callee).
    pub pseudonym: Option<String>,
    /// Disposition equals.
    pub disposition: Option<Disposition>,
    /// Agent equals.
    pub agent_id: Option<String>,
    /// Some media leg lost at least this many percent.
    pub min_loss_pct: Option<f64>,
    /// Some media leg with a MOS has a MOS at most this.
    pub max_mos: Option<f64>,
    /// At most this many CDRs, newest first.
    pub limit: u32,
}

/// Result of storing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestOutcome {
    /// The agent's cursor after the commit: its highest durably stored sequence.
    pub highest_sequence: u64,
    /// Records newly stored.
    pub stored: u64,
    /// Records skipped because their sequence was already stored.
    pub duplicates: u64,
}

/// One agent's ingestion state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCursor {
    /// Agent identifier.
    pub agent_id: String,
    /// Highest sequence stored.
    pub highest_sequence: u64,
}

/// Storage statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    /// CDRs stored.
    pub cdrs_stored: u64,
    /// Every agent's cursor.
    pub agents: Vec<AgentCursor>,
}

/// A CDR store. Implementations must make [`Store::ingest`] durable before returning and
/// atomic per batch (records and cursor together).
#[tonic::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores the records above the agent's cursor and advances the cursor, in one durable
    /// transaction. Records must have strictly increasing sequences.
    async fn ingest(
        &self,
        agent_id: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError>;

    /// The agent's cursor (0 if it never sent anything).
    async fn cursor(&self, agent_id: &str) -> Result<u64, StoreError>;

    /// CDRs matching the filter, newest first, at most `filter.limit`.
    async fn query(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError>;

    /// Deletes every CDR in which any of `pseudonyms` is a party field, and records the
    /// request (pseudonyms, reference, count) in the audit log in the same transaction.
    /// Returns the number of CDRs deleted.
    async fn erase(
        &self,
        pseudonyms: Vec<String>,
        reference: String,
        now_ms: u64,
    ) -> Result<u64, StoreError>;

    /// Counts and cursors.
    async fn stats(&self) -> Result<StoreStats, StoreError>;
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing, mode 0600).
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let bad = |why| StoreError::Url {
        scheme: scheme.to_string(),
        why,
    };
    match scheme {
        "sqlite" if rest.is_empty() => Err(bad("the sqlite path is empty")),
        "sqlite" => Ok(Arc::new(sqlite::SqliteStore::open(rest)?)),
        "postgres" | "postgresql" => Err(bad("the postgresql backend is not built yet")),
        _ => Err(bad("expected sqlite://PATH")),
    }
}

/// Checks the ingest rules every backend applies before storing: each record carries a
/// CDR, sequences start at 1 and strictly increase within the batch.
pub fn validate_batch(batch: &[CdrRecord]) -> Result<(), StoreError> {
    let mut prev = 0u64;
    for r in batch {
        if r.cdr.is_none() {
            return Err(StoreError::InvalidBatch("a record carries no cdr"));
        }
        if r.sequence <= prev {
            return Err(StoreError::InvalidBatch(
                "sequences must start at 1 and strictly increase",
            ));
        }
        prev = r.sequence;
    }
    Ok(())
}

/// Days since the Unix epoch (UTC) of a Unix-ms time: the key of the daily aggregates.
pub fn day_of(unix_ms: u64) -> u64 {
    unix_ms / 86_400_000
}
