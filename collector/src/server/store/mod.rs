//! CDR storage behind the collector's gRPC services: the [`Store`] trait and its backends.
//!
//! Callers (the ingest, query, admin and retention code) see only [`Store`] and [`open`]; a
//! backend is chosen by the URL scheme: SQLite ([`sqlite`], the embedded default) or
//! PostgreSQL ([`postgres`], the scale-out path: several stateless collectors writing to one
//! database, CDRs partitioned by day).
//!
//! Exactly-once storage: each agent numbers its CDRs with a strictly increasing sequence.
//! [`Store::ingest`] commits a batch and advances that agent's cursor in one transaction
//! and skips sequences at or below the cursor, so a batch resent after a lost ack or a
//! restart is never stored twice. It returns only after the commit is durable.
//!
//! Interim records (`Cdr.interim`, a call still in progress) are superseded at ingest
//! ([`supersede`]): a final record deletes the stored interim records of its
//! (agent, `cdr_id`) in the same transaction, a newer interim replaces the older one, and an
//! interim arriving after its final (a replayed spool) or after a newer interim is not
//! stored. So the store holds one row per call: the final one, or while the call runs its
//! latest interim, and queries need no filter for it.
//!
//! Retention ([`Store::retain`]) folds the CDRs it is about to delete into anonymous daily
//! aggregates ([`DailyAggregate`]: counts, durations, MOS and loss histograms per agent,
//! disposition and codec) in the same transaction, so long-term reports survive the
//! deletion and nothing is counted twice or lost if the job is interrupted.
pub mod aggregate;
pub mod billing;
pub mod postgres;
pub mod sealed;
pub mod sqlite;

use std::{collections::HashMap, sync::Arc};

use collector_proto::v1::{Cdr, CdrRecord, Disposition};
use thiserror::Error;

pub use aggregate::{AggregateKey, DailyAggregate, Folder, LOSS_BUCKETS, MOS_BUCKETS};

/// Default number of CDRs a query returns when the request does not say.
pub const DEFAULT_QUERY_LIMIT: u32 = 1_000;
/// Most CDRs one query may return.
pub const MAX_QUERY_LIMIT: u32 = 100_000;
/// Most legs of one call the call view returns (the earliest): a correlation id shared by
/// more dialogs than any real call has must not make one query unbounded.
pub const MAX_CALL_LEGS: u32 = 64;
/// One day in milliseconds: the unit of partitions, aggregates and retention.
pub const DAY_MS: u64 = 86_400_000;

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
    /// SQLite refused an operation.
    #[error("database {what} failed")]
    Database {
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// PostgreSQL refused an operation.
    #[error("postgresql {what} failed")]
    Postgres {
        /// What was attempted.
        what: &'static str,
        /// The cause.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The TLS settings for the database are unusable.
    #[error("database tls: {0}")]
    Tls(String),
    /// No PostgreSQL connection could be had from the pool.
    #[error("postgresql connection pool failed: {0}")]
    Pool(String),
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
    /// A stored rate table no longer parses (it was validated at import).
    #[error("stored rate table unusable: {0}")]
    StoredRates(String),
    /// A thread panicked while holding the connection.
    #[error("database connection lock poisoned")]
    Poisoned,
    /// The agent already streams into another tenant: an agent id belongs to exactly one
    /// tenant, so one customer's token cannot write into (or supersede the records of)
    /// another customer's agent.
    #[error("agent {agent_id:?} belongs to another tenant")]
    AgentTenant {
        /// The agent.
        agent_id: String,
    },
    /// A sealed record or identifier cannot be opened: its tenant's data key is gone
    /// (the tenant was deleted: crypto-shredding) or the data was altered.
    #[error("sealed data cannot be opened")]
    Sealed(#[source] crate::privacy::seal::SealError),
    /// The tenant keys cannot be read or written.
    #[error("tenant key store {path}")]
    KeyStore {
        /// The key store file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The operation needs encryption at rest, which this collector runs without.
    #[error("encryption at rest is off on this collector")]
    NotSealed,
}

/// A rewrite of stored rows ([`Store::rewrite`]): the record to store instead of a row's,
/// or `None` to leave the row.
pub type RowRewrite = Arc<dyn Fn(&Cdr) -> Result<Option<Cdr>, StoreError> + Send + Sync>;

/// Rows [`Store::rewrite`] reads at a time.
pub const REWRITE_CHUNK: i64 = 500;

/// The columns [`Store::rewrite`] sets from a record, besides the stored record itself
/// (numbered from 1 in this order, the record last).
pub const REWRITE_COLUMNS: [&str; 8] = [
    "call_id",
    "correlation_id",
    "caller_user",
    "caller_domain",
    "caller_display",
    "callee_user",
    "callee_domain",
    "callee_display",
];

/// The values of [`REWRITE_COLUMNS`] of a record.
pub fn rewrite_values(c: &Cdr) -> [String; 8] {
    let caller = c.caller.clone().unwrap_or_default();
    let callee = c.callee.clone().unwrap_or_default();
    [
        c.call_id.clone(),
        c.correlation_id.clone(),
        caller.user,
        caller.domain,
        caller.display,
        callee.user,
        callee.domain,
        callee.display,
    ]
}

/// The audit log's name for an entry made by a caller who sees every tenant.
pub const ALL_TENANTS: &str = "*";

/// What `delete_tenant` deletes of a tenant besides its CDRs, in order (both backends; the
/// tenant is `?1`): the daily aggregates of its agents (they carry the agent, bound to one
/// tenant), its agents, usage aggregates and rate tables.
pub const TENANT_DELETES: [&str; 4] = [
    "DELETE FROM cdr_daily_aggregates
     WHERE agent_id IN (SELECT agent_id FROM ingest_cursor WHERE tenant = ?1)",
    "DELETE FROM ingest_cursor WHERE tenant = ?1",
    "DELETE FROM usage_daily WHERE tenant = ?1",
    "DELETE FROM rate_tables WHERE tenant = ?1",
];

/// The tenancy migration (both backends): each agent is bound to the tenant of
/// its first batch (its cursor row); the audit log names the tenant an action was confined to
/// (`*` = all). Rows stored before belong to the default tenant..
pub const TENANCY_SCHEMA: &str = r#"
    ALTER TABLE ingest_cursor ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    ALTER TABLE audit_log ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
"#;

/// The migration (both backends) that indexes the record's own id alone, for the look-up
/// of one CDR by id ([`CdrFilter::cdr_id`]): the (agent, cdr id) index of the supersession
/// cannot serve it without the agent.
pub const CDR_ID_SCHEMA: &str = "CREATE INDEX cdrs_cdr_id ON cdrs (cdr_id);";

/// The migration (both backends) that drops the (agent, cdr id) index: once the cdr id has an
/// index of its own ([`CDR_ID_SCHEMA`]), a call's records are found through it (a cdr id is
/// unique to one call of one agent, so the agent only filters what the index found), and
/// every stored record no longer pays for a second index on a random key.
pub const AGENT_CDR_ID_DROP: &str = "DROP INDEX cdrs_agent_cdr_id;";

/// Every tenant with its stored CDRs and bound agents, by name (both backends).
pub const TENANTS_SQL: &str = "
    SELECT tenant, CAST(SUM(cdrs) AS BIGINT), CAST(SUM(agents) AS BIGINT) FROM (
        SELECT tenant, COUNT(*) AS cdrs, 0 AS agents FROM cdrs GROUP BY tenant
        UNION ALL
        SELECT tenant, 0, COUNT(*) FROM ingest_cursor GROUP BY tenant
    ) t GROUP BY tenant ORDER BY tenant";

/// Filters of a CDR query (every set filter must match). Mirrors `collector.v1.CdrQuery`
/// after validation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CdrFilter {
    /// `start_time_ms >= start_from_ms`.
    pub start_from_ms: Option<u64>,
    /// `start_time_ms < start_to_ms`.
    pub start_to_ms: Option<u64>,
    /// Any of these pseudonyms appears in a party field (user, domain or display of caller
    /// or callee) or as the Call-ID; empty = no filter.
    pub pseudonyms: Vec<String>,
    /// Disposition equals.
    pub disposition: Option<Disposition>,
    /// Agent equals.
    pub agent_id: Option<String>,
    /// The record's own id (`Cdr.cdr_id`, chosen by its agent) equals: one call's page
    /// looks its leg up by it ([`CDR_ID_SCHEMA`] indexes it).
    pub cdr_id: Option<String>,
    /// Some media leg lost at least this many percent.
    pub min_loss_pct: Option<f64>,
    /// Some media leg with a MOS has a MOS at most this.
    pub max_mos: Option<f64>,
    /// At most this many CDRs, newest first.
    pub limit: u32,
    /// Tenant equals (`None`: every tenant, for the provider's operators only). The server
    /// sets it from the caller's token on every read.
    pub tenant: Option<String>,
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
    /// Answered CDRs stored unrated (no prefix, no table or no matching rate row).
    pub unrated: u64,
    /// Interim records not stored because a later record of the same call is stored or
    /// in the batch (its final one, or a newer interim).
    pub superseded: u64,
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

/// An erasure request as the store executes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    /// Pseudonyms of the subject (one per key); a CDR is erased when any of them is one of
    /// its party fields.
    pub pseudonyms: Vec<String>,
    /// The requester's free-text reference (ticket number).
    pub reference: String,
    /// Who asked (the token subject).
    pub actor: String,
    /// When (Unix ms).
    pub now_ms: u64,
    /// Only this tenant's CDRs are erased (`None`: every tenant's, for the provider).
    pub tenant: Option<String>,
    /// What the audit entry names as the subjects, when not `pseudonyms` themselves (the
    /// store layer that seals identifiers names their sealed form).
    pub audited: Option<Vec<String>>,
}

/// One tenant as the provider sees it ([`Store::tenants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStats {
    /// The tenant.
    pub tenant: String,
    /// CDRs stored for it.
    pub cdrs_stored: u64,
    /// Agents bound to it (those that streamed into it).
    pub agents: u32,
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// CDRs were erased.
    Erase,
    /// CDRs were read.
    Query,
    /// A tenant's CDRs were re-rated with its newest rate table.
    Rerate,
    /// A tenant was deleted: its keys destroyed, its rows deleted.
    TenantDelete,
    /// A tenant's data key was rotated.
    KeyRotate,
}

impl AuditAction {
    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::Erase => "erase",
            AuditAction::Query => "query",
            AuditAction::Rerate => "rerate",
            AuditAction::TenantDelete => "tenant-delete",
            AuditAction::KeyRotate => "key-rotate",
        }
    }

    /// The action a stored name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "erase" => Some(AuditAction::Erase),
            "query" => Some(AuditAction::Query),
            "rerate" => Some(AuditAction::Rerate),
            "tenant-delete" => Some(AuditAction::TenantDelete),
            "key-rotate" => Some(AuditAction::KeyRotate),
            _ => None,
        }
    }
}

/// One entry of the audit log. It names pseudonyms only: the collector never sees a
/// number in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (Unix ms).
    pub time_ms: u64,
    /// What happened.
    pub action: AuditAction,
    /// Who did it (the token subject, or `anonymous` when authentication is off).
    pub actor: String,
    /// The pseudonyms the request named.
    pub subjects: Vec<String>,
    /// Erase: the requester's reference; query: the other filters, as JSON.
    pub reference: String,
    /// CDRs erased or returned.
    pub affected: u64,
    /// The tenant the action was confined to (`None`: every tenant, a provider's action;
    /// stored as [`ALL_TENANTS`]).
    pub tenant: Option<String>,
}

/// Result of one retention run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRun {
    /// When it ran (Unix ms).
    pub time_ms: u64,
    /// CDRs that started before this were deleted (Unix ms).
    pub cutoff_ms: u64,
    /// CDRs deleted.
    pub deleted: u64,
    /// Final (non-interim) CDRs folded into the daily aggregates.
    pub folded: u64,
}

/// State reported by `Admin.RetentionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionState {
    /// Start time of the oldest stored CDR (`None` when none is stored).
    pub oldest_start_time_ms: Option<u64>,
    /// The last completed run, by any collector sharing the database.
    pub last_run: Option<RetentionRun>,
}

/// A CDR store. Implementations must make [`Store::ingest`] durable before returning and
/// atomic per batch (records and cursor together).
#[tonic::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores the records above the agent's cursor under `tenant` and advances the cursor,
    /// in one durable transaction. Records must have strictly increasing sequences. The
    /// agent's first batch binds it to `tenant`; a batch of the same agent id for another
    /// tenant is refused ([`StoreError::AgentTenant`]). Answered CDRs are rated with the
    /// tenant's newest rate table.
    async fn ingest_into(
        &self,
        agent_id: &str,
        tenant: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError>;

    /// [`Store::ingest_into`] the default tenant.
    async fn ingest(
        &self,
        agent_id: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError> {
        self.ingest_into(agent_id, billing::DEFAULT_TENANT, batch)
            .await
    }

    /// The agent's cursor (0 if it never sent anything).
    async fn cursor(&self, agent_id: &str) -> Result<u64, StoreError>;

    /// CDRs matching the filter, newest first, at most `filter.limit`.
    async fn query(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError>;

    /// The legs of the calls that have a leg matching the filter (the call view): at most
    /// `filter.limit` calls, those whose newest matching leg is newest, each with all its
    /// legs whatever the filter (its siblings by correlation id, at most [`MAX_CALL_LEGS`],
    /// the earliest). A leg with an empty correlation id is a call of its own. The legs come
    /// in no particular order: [`crate::callview::group`] makes the calls.
    async fn query_call_legs(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError>;

    /// Deletes every CDR (of `erasure.tenant`, or of every tenant) in which any of the
    /// pseudonyms is a party field, and records the request (pseudonyms, reference, actor,
    /// tenant, count) in the audit log in the same transaction. Returns the number of CDRs
    /// deleted.
    async fn erase(&self, erasure: Erasure) -> Result<u64, StoreError>;

    /// Appends an entry to the audit log.
    async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError>;

    /// The newest `limit` audit entries, newest first.
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;

    /// Folds every CDR that started before `cutoff_ms` into the daily aggregates and
    /// deletes it, in one transaction, and records the run. Returns `None` when another
    /// collector sharing the database is running retention at this moment.
    async fn retain(&self, cutoff_ms: u64, now_ms: u64)
        -> Result<Option<RetentionRun>, StoreError>;

    /// [`Store::retain`] for `tenant`'s CDRs only (a tenant whose retention is shorter than
    /// the collector's).
    async fn retain_tenant(
        &self,
        tenant: &str,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError>;

    /// The oldest stored CDR and the last retention run.
    async fn retention_state(&self) -> Result<RetentionState, StoreError>;

    /// The daily aggregates of days `from_day..to_day` (days since the Unix epoch), ordered
    /// by day, agent, disposition and codec.
    async fn aggregates(
        &self,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<DailyAggregate>, StoreError>;

    /// Counts and cursors, of `tenant` (its CDRs and the agents bound to it) or of every
    /// tenant.
    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats, StoreError>;

    /// Every tenant with an agent bound to it or a CDR stored, by name.
    async fn tenants(&self) -> Result<Vec<TenantStats>, StoreError>;

    /// Deletes every row of `tenant` (CDRs, agent bindings, usage aggregates, rate tables)
    /// and records `audit` (its `affected` set to the CDRs deleted) in the same transaction.
    /// With encryption at rest the tenant's data keys are destroyed first, so its rows in
    /// any copy of the database can no longer be read. Returns the CDRs deleted.
    async fn delete_tenant(&self, tenant: &str, audit: AuditEntry) -> Result<u64, StoreError>;

    /// Rewrites `tenant`'s stored CDRs with `f`: the identifier columns and the stored record
    /// of every row `f` returns a record for, in one transaction. Returns the rows changed.
    async fn rewrite(&self, tenant: &str, f: RowRewrite) -> Result<u64, StoreError>;

    /// Re-seals `tenant`'s rows under its newest data key (and seals rows stored in clear
    /// before encryption was on). Returns the rows changed ([`StoreError::NotSealed`]
    /// without encryption).
    async fn reseal(&self, tenant: &str) -> Result<u64, StoreError> {
        let _ = tenant;
        Err(StoreError::NotSealed)
    }

    /// Starts a new data key for `tenant`: new rows are sealed with it, older ones stay
    /// readable and searchable. Returns its id ([`StoreError::NotSealed`] without encryption).
    async fn rotate_key(&self, tenant: &str) -> Result<u32, StoreError> {
        let _ = tenant;
        Err(StoreError::NotSealed)
    }

    /// Stores a validated rate table (`csv`, whose hash is `version`) as the newest version of
    /// `tenant`'s table; every version is kept. Returns false when that version was already
    /// stored (it then becomes the newest again).
    async fn store_rates(
        &self,
        tenant: &str,
        version: &str,
        csv: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The usage groups of `tenant`'s final CDRs that started in `from_ms..to_ms`, those
    /// still stored and those retention folded into the daily usage aggregates
    /// ([`billing::USAGE_SQL`]; [`billing::usage_report`] makes the report).
    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<billing::UsageGroup>, StoreError>;

    /// Re-rates `tenant`'s final CDRs that started at or after `since_ms` with the tenant's
    /// newest rate table (each by the rate valid on its start date), and records `audit`
    /// (its `affected` set to the CDRs changed) in the same transaction. CDRs that retention
    /// already folded into the daily usage aggregates keep the rating they had.
    async fn rerate(
        &self,
        tenant: &str,
        since_ms: u64,
        audit: AuditEntry,
    ) -> Result<billing::RerateOutcome, StoreError>;
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing, mode 0600) or
/// `postgres://...` / `postgresql://...` (any libpq-style URL tokio-postgres accepts; the
/// schema is created or migrated).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, None).await
}

/// [`open`], with the PEM CA certificates that a PostgreSQL server's TLS certificate must
/// chain to (turns TLS to the database on; ignored for SQLite).
pub async fn open_with(url: &str, pg_tls_ca: Option<&[u8]>) -> Result<Arc<dyn Store>, StoreError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let bad = |why| StoreError::Url {
        scheme: scheme.to_string(),
        why,
    };
    match scheme {
        "sqlite" if rest.is_empty() => Err(bad("the sqlite path is empty")),
        "sqlite" => {
            let path = rest.to_string();
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open(&path))
                .await
                .map_err(StoreError::Worker)??;
            Ok(Arc::new(store))
        }
        "postgres" | "postgresql" => {
            Ok(Arc::new(postgres::PgStore::connect(url, pg_tls_ca).await?))
        }
        _ => Err(bad("expected sqlite://PATH or postgres://...")),
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

/// What the store holds of one call (one agent's `cdr_id`) before a batch is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredCall {
    /// A final record is stored.
    pub has_final: bool,
    /// The highest `interim_seq` of the interim records stored (None: none).
    pub interim_seq: Option<u32>,
}

impl StoredCall {
    /// Adds one stored row: its `interim` column and its encoded CDR (decoded only for an
    /// interim row, whose sequence number lives in the CDR).
    pub fn add(&mut self, interim: bool, blob: &[u8]) -> Result<(), StoreError> {
        use prost::Message as _;
        if interim {
            let seq = Cdr::decode(blob).map_err(StoreError::Decode)?.interim_seq;
            self.interim_seq = Some(self.interim_seq.map_or(seq, |s| s.max(seq)));
        } else {
            self.has_final = true;
        }
        Ok(())
    }
}

/// Which records of a batch are stored and which calls lose their stored interim records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supersession {
    /// One per record of the batch: store it.
    pub keep: Vec<bool>,
    /// The `cdr_id`s whose stored interim records are deleted (before the batch's rows are
    /// inserted, in the same transaction).
    pub delete_interims: Vec<String>,
}

impl Supersession {
    /// Records of the batch not stored.
    pub fn dropped(&self) -> u64 {
        self.keep.iter().filter(|k| !**k).count() as u64
    }
}

/// Decides the supersession of interim records for `batch` (one agent's new records, in
/// order) given what `stored` holds of their calls (by `cdr_id`; absent = nothing):
/// - a final record is always stored, and deletes the call's stored interims;
/// - an interim record is stored only when its call has no final record (stored or in the
///   batch) and its `interim_seq` is the highest of its call (batch and store); the call's
///   stored interims are then deleted;
/// - a record without `cdr_id` cannot be matched to its call and is stored as is.
pub fn supersede(batch: &[&Cdr], stored: &HashMap<String, StoredCall>) -> Supersession {
    /// Per call of the batch: a final record in it, and its best interim (seq, index).
    type InBatch = (bool, Option<(u32, usize)>);
    let mut calls: HashMap<&str, InBatch> = HashMap::new();
    for (i, c) in batch.iter().enumerate() {
        if c.cdr_id.is_empty() {
            continue;
        }
        let e = calls.entry(c.cdr_id.as_str()).or_default();
        if !c.interim {
            e.0 = true;
        } else if e.1.is_none_or(|(s, _)| c.interim_seq > s) {
            e.1 = Some((c.interim_seq, i));
        }
    }
    let mut keep: Vec<bool> = batch
        .iter()
        .map(|c| !c.interim || c.cdr_id.is_empty())
        .collect();
    let mut delete_interims = Vec::new();
    for (id, (batch_final, best)) in calls {
        let prior = stored.get(id).copied().unwrap_or_default();
        if batch_final {
            if prior.interim_seq.is_some() {
                delete_interims.push(id.to_owned());
            }
            continue;
        }
        if prior.has_final {
            continue;
        }
        if let Some((seq, i)) = best {
            if prior.interim_seq.is_none_or(|p| seq > p) {
                if let Some(k) = keep.get_mut(i) {
                    *k = true;
                }
                if prior.interim_seq.is_some() {
                    delete_interims.push(id.to_owned());
                }
            }
        }
    }
    delete_interims.sort();
    Supersession {
        keep,
        delete_interims,
    }
}

/// Days since the Unix epoch (UTC) of a Unix-ms time: the key of partitions and aggregates.
pub fn day_of(unix_ms: u64) -> u64 {
    unix_ms / DAY_MS
}

/// The codec a CDR is aggregated under: the first negotiated codec, else the first media
/// leg's, else empty.
pub fn codec_of(cdr: &Cdr) -> String {
    cdr.codecs
        .first()
        .cloned()
        .or_else(|| {
            cdr.media
                .iter()
                .map(|m| m.codec.clone())
                .find(|c| !c.is_empty())
        })
        .unwrap_or_default()
}

/// Worst loss over a CDR's media legs (the value the loss filter and histograms use).
pub fn max_loss_pct(cdr: &Cdr) -> Option<f64> {
    cdr.media.iter().map(|m| m.loss_pct).reduce(f64::max)
}

/// Worst MOS over the legs that have one.
pub fn min_mos(cdr: &Cdr) -> Option<f64> {
    cdr.media
        .iter()
        .map(|m| m.mos)
        .filter(|m| *m > 0.0)
        .reduce(f64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, interim: bool, seq: u32) -> Cdr {
        Cdr {
            cdr_id: id.into(),
            interim,
            interim_seq: seq,
            ..Default::default()
        }
    }

    fn run(batch: &[Cdr], stored: &[(&str, StoredCall)]) -> (Vec<bool>, Vec<String>) {
        let refs: Vec<&Cdr> = batch.iter().collect();
        let stored = stored.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
        let s = supersede(&refs, &stored);
        (s.keep, s.delete_interims)
    }

    const INTERIM_2: StoredCall = StoredCall {
        has_final: false,
        interim_seq: Some(2),
    };
    const FINAL: StoredCall = StoredCall {
        has_final: true,
        interim_seq: None,
    };

    #[test]
    fn a_batch_of_interims_then_the_final_keeps_the_final() {
        let b = [rec("a", true, 1), rec("a", true, 2), rec("a", false, 2)];
        assert_eq!(run(&b, &[]), (vec![false, false, true], vec![]));
    }

    #[test]
    fn the_final_deletes_the_stored_interim() {
        assert_eq!(
            run(&[rec("a", false, 2)], &[("a", INTERIM_2)]),
            (vec![true], vec!["a".to_owned()])
        );
    }

    #[test]
    fn a_newer_interim_replaces_the_stored_one_an_older_or_same_is_dropped() {
        assert_eq!(
            run(&[rec("a", true, 3)], &[("a", INTERIM_2)]),
            (vec![true], vec!["a".to_owned()])
        );
        assert_eq!(
            run(&[rec("a", true, 2), rec("a", true, 1)], &[("a", INTERIM_2)]),
            (vec![false, false], vec![])
        );
    }

    #[test]
    fn an_interim_after_its_final_is_dropped() {
        assert_eq!(
            run(&[rec("a", true, 1)], &[("a", FINAL)]),
            (vec![false], vec![])
        );
        // In the same batch, in either order.
        let b = [rec("a", false, 0), rec("a", true, 1)];
        assert_eq!(run(&b, &[]), (vec![true, false], vec![]));
    }

    #[test]
    fn calls_are_apart_and_records_without_id_are_kept() {
        let b = [rec("a", true, 1), rec("b", true, 1), rec("", true, 1)];
        assert_eq!(run(&b, &[("b", FINAL)]), (vec![true, false, true], vec![]));
    }
}
