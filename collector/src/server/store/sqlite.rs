//! SQLite backend of [`Store`](super::Store): one file, WAL journal, `synchronous=FULL` so a
//! committed batch survives power loss before it is acknowledged, `secure_delete` so erased
//! CDRs are overwritten rather than left in free pages.
//!
//! rusqlite is blocking: every call runs on `tokio::task::spawn_blocking` with one writer
//! connection and one reader connection (WAL lets queries run beside a commit).
//!
//! The schema is versioned: `schema_version` holds the applied version and [`MIGRATIONS`]
//! are applied in order, each in its own transaction. Add a migration, never edit one.
//!
//! Every party field (and the Call-ID and the start time) has its own index, so an erasure
//! or a pseudonym query is a handful of index lookups whatever the table size.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    collections::HashMap,
    fs::OpenOptions,
    os::unix::fs::OpenOptionsExt,
    sync::{
        mpsc::{sync_channel, SyncSender},
        Arc, Mutex,
    },
};

use collector_proto::v1::{Cdr, CdrRecord};
use prost::Message as _;
use rusqlite::{
    params, params_from_iter, types::Value, Connection, OptionalExtension, TransactionBehavior,
};
use tokio::sync::oneshot;

use super::billing::{
    billing_schema, clamp, rate_cdr, usage_days, CdrRating, RateCache, RatedRow, RatingState,
    RerateOutcome, UsageGroup, RATING_SET, RERATE_COLUMNS, USAGE_DAILY_SCHEMA, USAGE_FOLD_SQL,
    USAGE_SQL,
};
use super::{
    aggregate::{AggregateKey, FoldRow},
    codec_of, max_loss_pct, min_mos, rewrite_values, supersede, validate_batch, AgentCursor,
    AuditAction, AuditEntry, CdrFilter, DailyAggregate, Erasure, Folder, IngestOutcome,
    RetentionRun, RetentionState, RowRewrite, Store, StoreError, StoreStats, StoredCall,
    TenantStats, AGENT_CDR_ID_DROP, ALL_TENANTS, CDR_ID_SCHEMA, LOSS_BUCKETS, MAX_CALL_LEGS,
    MOS_BUCKETS, REWRITE_CHUNK, REWRITE_COLUMNS, TENANCY_SCHEMA, TENANTS_SQL, TENANT_DELETES,
};

/// Ordered schema migrations; migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: CDRs with their queryable fields beside the full protobuf, per-agent cursors,
    // the audit log and daily aggregates (counts only, no identifiers).
    r#"
    CREATE TABLE cdrs (
        id             INTEGER PRIMARY KEY,
        agent_id       TEXT    NOT NULL,
        sequence       INTEGER NOT NULL,
        cdr_id         TEXT    NOT NULL,
        call_id        TEXT    NOT NULL,
        caller_user    TEXT    NOT NULL,
        caller_domain  TEXT    NOT NULL,
        caller_display TEXT    NOT NULL,
        callee_user    TEXT    NOT NULL,
        callee_domain  TEXT    NOT NULL,
        callee_display TEXT    NOT NULL,
        start_time_ms  INTEGER NOT NULL,
        end_time_ms    INTEGER NOT NULL,
        duration_ms    INTEGER NOT NULL,
        billable_ms    INTEGER NOT NULL,
        disposition    INTEGER NOT NULL,
        final_code     INTEGER NOT NULL,
        max_loss_pct   REAL,
        min_mos        REAL,
        interim        INTEGER NOT NULL,
        cdr            BLOB    NOT NULL,
        UNIQUE (agent_id, sequence)
    );
    CREATE INDEX cdrs_start_time ON cdrs (start_time_ms);
    CREATE INDEX cdrs_caller_user ON cdrs (caller_user);
    CREATE INDEX cdrs_callee_user ON cdrs (callee_user);
    CREATE INDEX cdrs_caller_domain ON cdrs (caller_domain);
    CREATE INDEX cdrs_callee_domain ON cdrs (callee_domain);
    CREATE INDEX cdrs_caller_display ON cdrs (caller_display);
    CREATE INDEX cdrs_callee_display ON cdrs (callee_display);
    CREATE TABLE ingest_cursor (
        agent_id    TEXT    PRIMARY KEY,
        highest_seq INTEGER NOT NULL
    );
    CREATE TABLE audit_log (
        id        INTEGER PRIMARY KEY,
        time_ms   INTEGER NOT NULL,
        action    TEXT    NOT NULL,
        subjects  TEXT    NOT NULL, -- JSON array of the pseudonyms named by the request
        reference TEXT    NOT NULL,
        affected  INTEGER NOT NULL
    );
    CREATE TABLE daily_aggregates (
        day         INTEGER NOT NULL, -- days since the Unix epoch, UTC
        agent_id    TEXT    NOT NULL,
        disposition INTEGER NOT NULL,
        calls       INTEGER NOT NULL,
        billable_ms INTEGER NOT NULL,
        PRIMARY KEY (day, agent_id, disposition)
    );
    "#,
    // v2: retention folds CDRs into aggregates per (day, agent, disposition, codec) with
    // duration sums and MOS/loss histograms when it deletes them (v1 counted at ingest;
    // every CDR it counted is still stored, so dropping its table loses nothing); the codec
    // becomes a column (NULL for older rows: retention reads it from the stored CDR); the
    // audit log names the actor; retention runs are recorded.
    r#"
    ALTER TABLE cdrs ADD COLUMN codec TEXT;
    CREATE INDEX cdrs_call_id ON cdrs (call_id);
    CREATE INDEX cdrs_agent_start ON cdrs (agent_id, start_time_ms);
    ALTER TABLE audit_log ADD COLUMN actor TEXT NOT NULL DEFAULT '';
    DROP TABLE daily_aggregates;
    CREATE TABLE cdr_daily_aggregates (
        day         INTEGER NOT NULL, -- days since the Unix epoch, UTC
        agent_id    TEXT    NOT NULL,
        disposition INTEGER NOT NULL,
        codec       TEXT    NOT NULL,
        calls       INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        billable_ms INTEGER NOT NULL,
        mos_0 INTEGER NOT NULL, mos_1 INTEGER NOT NULL, mos_2 INTEGER NOT NULL,
        mos_3 INTEGER NOT NULL, mos_4 INTEGER NOT NULL, mos_5 INTEGER NOT NULL,
        mos_6 INTEGER NOT NULL, mos_7 INTEGER NOT NULL,
        loss_0 INTEGER NOT NULL, loss_1 INTEGER NOT NULL, loss_2 INTEGER NOT NULL,
        loss_3 INTEGER NOT NULL, loss_4 INTEGER NOT NULL, loss_5 INTEGER NOT NULL,
        loss_6 INTEGER NOT NULL,
        PRIMARY KEY (day, agent_id, disposition, codec)
    );
    CREATE TABLE retention_runs (
        id        INTEGER PRIMARY KEY,
        time_ms   INTEGER NOT NULL,
        cutoff_ms INTEGER NOT NULL,
        deleted   INTEGER NOT NULL,
        folded    INTEGER NOT NULL
    );
    "#,
    // v3: the correlation id that links the legs of one call becomes a column, indexed, so
    // the call view fetches a call's sibling legs by index. Rows stored before are filled
    // from their stored CDR in the same transaction ([`backfill_correlation`]).
    r#"
    ALTER TABLE cdrs ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX cdrs_correlation_id ON cdrs (correlation_id);
    "#,
    // v4: a call's records are found by (agent, cdr id), so a final record deletes its
    // interim records by index ([`super::supersede`]).
    r#"
    CREATE INDEX cdrs_agent_cdr_id ON cdrs (agent_id, cdr_id);
    "#,
    // v5: billing (issue 24): every imported rate-table version per tenant, and the rating
    // of each CDR at ingest beside it ([`super::billing`]).
    billing_schema!("INTEGER PRIMARY KEY"),
    // v6: the daily usage aggregates retention folds final CDRs into, so usage reports
    // outlive the CDRs ([`super::billing::USAGE_DAILY_SCHEMA`]).
    USAGE_DAILY_SCHEMA,
    // v7: tenants (issue 23). Each agent is bound to the tenant of its first batch (the
    // cursor row); the audit log names the tenant an action was confined to ('*' = all).
    // Reads of one tenant go through the (tenant, start time) index of v5. Rows stored
    // before belong to the default tenant.
    TENANCY_SCHEMA,
    // v8: one CDR looked up by its own id (the web console's call page), by index.
    CDR_ID_SCHEMA,
    // v9: the (agent, cdr id) index of v4 goes: the cdr id index of v8 finds a call's
    // records as well (ids are unique per call), and every ingested record paid for both.
    AGENT_CDR_ID_DROP,
];

/// A call's stored records, by the cdr id index (the planner, without statistics, could
/// otherwise take the (agent, start time) index and read the agent's every record).
const FIND_CALL_SQL: &str =
    "SELECT interim, cdr FROM cdrs INDEXED BY cdrs_cdr_id WHERE agent_id = ?1 AND cdr_id = ?2";

/// The interim records a final or newer record supersedes, by the same index.
const DELETE_INTERIMS_SQL: &str =
    "DELETE FROM cdrs INDEXED BY cdrs_cdr_id WHERE agent_id = ?1 AND cdr_id = ?2 AND interim";

/// The schema version whose migration adds `correlation_id`: rows stored before it get the
/// column filled from their stored CDR.
const CORRELATION_VERSION: u32 = 3;

/// The party columns a pseudonym is matched against (erasure; queries add the Call-ID).
pub const PARTY_COLUMNS: [&str; 6] = [
    "caller_user",
    "caller_domain",
    "caller_display",
    "callee_user",
    "callee_domain",
    "callee_display",
];

/// The histogram columns of `cdr_daily_aggregates`, MOS buckets then loss buckets.
pub fn histogram_columns() -> Vec<String> {
    (0..MOS_BUCKETS)
        .map(|i| format!("mos_{i}"))
        .chain((0..LOSS_BUCKETS).map(|i| format!("loss_{i}")))
        .collect()
}

fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Database { what, source }
}

/// SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    rates: Arc<RateCache>,
    /// Batches waiting for the writer, stored a group at a time ([`ingest_pending`]).
    pending: Arc<Mutex<Vec<IngestJob>>>,
    /// Wakes the checkpointer after a commit ([`spawn_checkpointer`]).
    checkpoint: SyncSender<()>,
    /// Held by whoever checkpoints: the truncating checkpoint after an erasure must not
    /// find the checkpointer at work (SQLite would skip it, leaving erased pages in the WAL).
    checkpoint_lock: Arc<Mutex<()>>,
}

/// Frames in the WAL (4 KiB pages) above which the checkpointer restarts it, making the
/// writer wait for the checkpoint once, so that the WAL stays bounded under steady ingest.
/// 16 MiB: at 16,384 frames the first erasure after a 1M-CDR load waited 2 s for its
/// truncating checkpoint; at 4,096, 1.5 s (ingest 15.3k → 17.6k CDRs/s, same bench).
const WAL_RESTART_FRAMES: i64 = 4_096;

/// The writer's automatic checkpoint threshold (pages): a backstop, above
/// [`WAL_RESTART_FRAMES`], for when the checkpointer cannot keep up or has stopped.
const WAL_BACKSTOP_PAGES: i64 = 65_536;

/// The writer's page cache, in KiB (SQLite's negative `cache_size`): 64 MiB.
const WRITER_CACHE_KIB: i64 = -65_536;

/// Starts the thread that copies the WAL into the database file after commits, on its own
/// connection, so that ingest does not wait for it: with the writer checkpointing after
/// each commit (SQLite's default), every group of batches paid once for its WAL frames and
/// again, synchronously, for copying and syncing the same pages into the database. Apart,
/// one checkpoint covers the commits made while the previous one ran, and a page changed by
/// several of them is copied once. Durability does not change: a commit is durable once
/// its WAL frames are synced (`synchronous=FULL`), whoever checkpoints them later.
///
/// The thread ends when the store is dropped (its last sender goes).
fn spawn_checkpointer(
    conn: Connection,
    lock: Arc<Mutex<()>>,
) -> Result<SyncSender<()>, StoreError> {
    // One slot: wakes coalesce while a checkpoint runs.
    let (wake, woken) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut mode = "PASSIVE";
            while woken.recv().is_ok() {
                let Ok(_held) = lock.lock() else {
                    return;
                };
                // Columns: blocked, frames in the WAL, frames checkpointed.
                match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                    r.get::<_, i64>(1)
                }) {
                    Ok(frames) if frames > WAL_RESTART_FRAMES => mode = "RESTART",
                    Ok(_) => mode = "PASSIVE",
                    Err(e) => tracing::warn!(error = %e, "checkpointing the sqlite wal failed"),
                }
            }
        })
        .map_err(StoreError::File)?;
    Ok(wake)
}

impl SqliteStore {
    /// Opens (creating with mode 0600) the database at `path` and migrates it.
    pub fn open(path: &str) -> Result<Self, StoreError> {
        // SQLite gives the -wal and -shm files the main file's permissions.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::File)?;
        let mut writer = connect(path)?;
        migrate(&mut writer)?;
        // The checkpointer copies the WAL into the database beside the writer; the writer
        // checkpoints itself only past this backstop (the checkpointer fell behind or died).
        writer
            .pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)
            .map_err(db("setting the automatic checkpoint"))?;
        // Every batch updates a dozen indexes at scattered places (party and time columns):
        // a cache that holds their inner pages saves a read per index and record.
        writer
            .pragma_update(None, "cache_size", WRITER_CACHE_KIB)
            .map_err(db("setting the page cache size"))?;
        let reader = connect(path)?;
        let checkpoint_lock = Arc::new(Mutex::new(()));
        let checkpoint = spawn_checkpointer(connect(path)?, Arc::clone(&checkpoint_lock))?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            rates: Arc::new(RateCache::default()),
            pending: Arc::new(Mutex::new(Vec::new())),
            checkpoint,
            checkpoint_lock,
        })
    }
}

fn connect(path: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db("open"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(db("setting busy timeout"))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db("enabling WAL"))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db("setting synchronous=FULL"))?;
    conn.pragma_update(None, "secure_delete", "ON")
        .map_err(db("enabling secure_delete"))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db("enabling foreign keys"))?;
    Ok(conn)
}

/// Applies the missing migrations; refuses a database from a newer release.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db("creating schema_version"))?;
    let current: u32 = conn
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| {
            r.get::<_, Option<u32>>(0)
        })
        .map_err(db("reading schema_version"))?
        .unwrap_or(0);
    let supported = MIGRATIONS.len() as u32;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (version, sql) in (1u32..).zip(MIGRATIONS).skip(current as usize) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)
            .map_err(db("migration"))?;
        tx.execute_batch(sql).map_err(db("migration"))?;
        if version == CORRELATION_VERSION {
            backfill_correlation(&tx)?;
        }
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )
        .map_err(db("migration"))?;
        tx.commit().map_err(db("migration"))?;
    }
    Ok(())
}

/// Fills `correlation_id` of the rows stored before the column existed, from their CDR.
fn backfill_correlation(tx: &Connection) -> Result<(), StoreError> {
    let mut read = tx
        .prepare("SELECT id, cdr FROM cdrs")
        .map_err(db("reading cdrs to backfill"))?;
    let mut write = tx
        .prepare("UPDATE cdrs SET correlation_id = ?2 WHERE id = ?1")
        .map_err(db("preparing backfill"))?;
    let mut rows = read.query([]).map_err(db("reading cdrs to backfill"))?;
    while let Some(r) = rows.next().map_err(db("reading cdrs to backfill"))? {
        let id: i64 = r.get(0).map_err(db("reading cdrs to backfill"))?;
        let blob: Vec<u8> = r.get(1).map_err(db("reading cdrs to backfill"))?;
        let cdr = Cdr::decode(blob.as_slice()).map_err(StoreError::Decode)?;
        if !cdr.correlation_id.is_empty() {
            write
                .execute(params![id, cdr.correlation_id])
                .map_err(db("backfilling correlation ids"))?;
        }
    }
    Ok(())
}

async fn run<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let mut c = conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut c)
    })
    .await
    .map_err(StoreError::Worker)?
}

/// SQLite integers are signed: values above `i64::MAX` cannot be stored.
fn int(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::InvalidBatch("a value exceeds the storable range"))
}

/// The newest rate table of `tenant`, read in the caller's transaction.
fn newest_rates(
    tx: &Connection,
    cache: &RateCache,
    tenant: &str,
) -> Result<Option<Arc<crate::billing::RateTable>>, StoreError> {
    let version: Option<String> = tx
        .query_row(
            "SELECT version FROM rate_tables WHERE tenant = ?1 ORDER BY imported_ms DESC, id DESC
             LIMIT 1",
            [tenant],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("reading the rate table version"))?;
    cache.table(version.as_deref(), || {
        tx.query_row(
            "SELECT csv FROM rate_tables WHERE tenant = ?1 AND version = ?2",
            params![tenant, version],
            |r| r.get(0),
        )
        .map_err(db("reading the rate table"))
    })
}

fn store_rates_blocking(
    conn: &mut Connection,
    tenant: &str,
    version: &str,
    csv: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let now = int(now_ms)?;
    let new = tx
        .execute(
            "INSERT INTO rate_tables (tenant, version, csv, imported_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, version) DO NOTHING",
            params![tenant, version, csv, now],
        )
        .map_err(db("storing the rate table"))?
        == 1;
    if !new {
        // Re-importing an older version makes it the newest again.
        tx.execute(
            "UPDATE rate_tables SET imported_ms = ?3 WHERE tenant = ?1 AND version = ?2",
            params![tenant, version, now],
        )
        .map_err(db("storing the rate table"))?;
    }
    tx.commit().map_err(db("commit"))?;
    Ok(new)
}

fn usage_blocking(
    conn: &mut Connection,
    tenant: &str,
    from_ms: u64,
    to_ms: u64,
) -> Result<Vec<UsageGroup>, StoreError> {
    let mut stmt = conn
        .prepare_cached(USAGE_SQL)
        .map_err(db("preparing the usage query"))?;
    let mut rows = stmt
        .query(params![
            tenant,
            int(from_ms)?,
            int(to_ms)?,
            int(usage_days(from_ms, to_ms).0)?,
            int(usage_days(from_ms, to_ms).1)?
        ])
        .map_err(db("usage query"))?;
    let mut out = Vec::new();
    let u = |v: Option<i64>| v.map_or(0, i64::unsigned_abs);
    while let Some(r) = rows.next().map_err(db("usage query"))? {
        let get = |i| r.get::<_, Option<i64>>(i).map_err(db("usage query"));
        out.push(UsageGroup {
            destination: r.get(0).map_err(db("usage query"))?,
            currency: r.get(1).map_err(db("usage query"))?,
            rating: r.get(2).map_err(db("usage query"))?,
            destination_prefix: r.get(3).map_err(db("usage query"))?,
            answered: r.get(4).map_err(db("usage query"))?,
            calls: u(get(5)?),
            answered_ms: u(get(6)?),
            billable_secs: u(get(7)?),
            cost: u(get(8)?),
        });
    }
    Ok(out)
}

/// One agent's batch waiting for the writer ([`SqliteStore::ingest_into`]).
#[derive(Debug)]
struct IngestJob {
    agent_id: String,
    tenant: String,
    batch: Vec<CdrRecord>,
    /// Told the outcome once the group holding the batch is committed (or failed).
    done: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

/// Most records one group commit stores: bounds the transaction (its WAL growth and the
/// time the reader waits for it) when many agents send large batches at once.
const GROUP_RECORDS: usize = 20_000;

/// Stores every batch waiting in `pending`, a group at a time, until none waits.
///
/// Group commit: while one transaction commits (its fsync), the agents' next batches queue
/// up, and whoever holds the writer next stores all of them in one transaction. The fsync
/// and the index pages a batch dirties are then shared by the group instead of paid per
/// batch; that cost grows with the table, as each secondary index spreads over more pages.
/// Each batch is acknowledged only after the commit of its group returns, so an
/// acknowledged batch is as durable as before; each runs in its own savepoint, so a batch
/// refused (say, of an agent bound to another tenant) fails alone.
fn ingest_pending(
    conn: &mut Connection,
    rates: &RateCache,
    pending: &Mutex<Vec<IngestJob>>,
    checkpoint: &SyncSender<()>,
) -> Result<(), StoreError> {
    loop {
        let group: Vec<IngestJob> = {
            let mut queue = pending.lock().map_err(|_| StoreError::Poisoned)?;
            let (mut n, mut records) = (0, 0);
            for job in queue.iter() {
                if n > 0 && records + job.batch.len() > GROUP_RECORDS {
                    break;
                }
                n += 1;
                records += job.batch.len();
            }
            queue.drain(..n).collect()
        };
        if group.is_empty() {
            return Ok(());
        }
        ingest_group(conn, rates, group);
        // Full: a checkpoint is pending already. Gone: the writer's backstop checkpoints.
        let _ = checkpoint.try_send(());
    }
}

/// Stores `group` in one transaction and tells each batch its outcome: its own error when
/// it was refused, the transaction's error when the commit failed, else what was stored.
fn ingest_group(conn: &mut Connection, rates: &RateCache, group: Vec<IngestJob>) {
    let mut outcomes: Vec<Result<IngestOutcome, StoreError>> = Vec::with_capacity(group.len());
    let committed = (|| {
        let mut tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("begin"))?;
        for job in &group {
            let sp = tx.savepoint().map_err(db("savepoint"))?;
            match ingest_batch(&sp, rates, &job.agent_id, &job.tenant, &job.batch) {
                Ok(o) => {
                    sp.commit().map_err(db("releasing a savepoint"))?;
                    outcomes.push(Ok(o));
                }
                Err(e) => {
                    sp.finish().map_err(db("rolling back a savepoint"))?;
                    // Some errors (I/O, disk full) make SQLite roll the whole transaction
                    // back: the batches before this one are gone too.
                    if tx.is_autocommit() {
                        return Err(e);
                    }
                    outcomes.push(Err(e));
                }
            }
        }
        tx.commit().map_err(db("commit"))
    })();
    let failure = committed.err();
    let mut outcomes = outcomes.into_iter();
    for job in group {
        let outcome = match outcomes.next() {
            // Refused alone: the batch's own error, whatever became of the group.
            Some(Err(e)) => Err(e),
            Some(Ok(o)) if failure.is_none() => Ok(o),
            _ => Err(group_failure(failure.as_ref())),
        };
        // The receiver is gone when the client went away: the batch is stored all the
        // same, and its resend is skipped by the cursor.
        let _ = job.done.send(outcome);
    }
}

/// A copy, for each batch of a group, of the failure of the group's transaction (rusqlite's
/// error is not `Clone`).
fn group_failure(failure: Option<&StoreError>) -> StoreError {
    let source = match failure {
        Some(StoreError::Database {
            source: rusqlite::Error::SqliteFailure(code, message),
            ..
        }) => rusqlite::Error::SqliteFailure(*code, message.clone()),
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            other.map(ToString::to_string),
        ),
    };
    StoreError::Database {
        what: "storing a group of batches",
        source,
    }
}

/// Stores one agent's batch in the caller's transaction (see [`Store::ingest_into`]).
fn ingest_batch(
    tx: &Connection,
    rates: &RateCache,
    agent_id: &str,
    tenant: &str,
    batch: &[CdrRecord],
) -> Result<IngestOutcome, StoreError> {
    let bound: Option<(i64, String)> = tx
        .prepare_cached("SELECT highest_seq, tenant FROM ingest_cursor WHERE agent_id = ?1")
        .map_err(db("reading cursor"))?
        .query_row([agent_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(db("reading cursor"))?;
    if bound.as_ref().is_some_and(|(_, t)| t != tenant) {
        return Err(StoreError::AgentTenant {
            agent_id: agent_id.to_owned(),
        });
    }
    let cursor = bound.map_or(0, |(c, _)| c);
    let table = newest_rates(tx, rates, tenant)?;
    let mut unrated = 0u64;
    let mut highest = cursor;
    let (mut stored, mut duplicates) = (0u64, 0u64);
    // The records above the cursor.
    let mut fresh: Vec<(i64, Cdr)> = Vec::with_capacity(batch.len());
    for rec in batch {
        let seq = int(rec.sequence)?;
        let Some(cdr) = rec.cdr.as_ref() else {
            return Err(StoreError::InvalidBatch("a record carries no cdr"));
        };
        if seq <= cursor {
            duplicates += 1;
            continue;
        }
        highest = highest.max(seq);
        let mut cdr = cdr.clone();
        if cdr.agent_id.is_empty() {
            cdr.agent_id = agent_id.to_string();
        }
        fresh.push((seq, cdr));
    }
    // What is stored of their calls, then which records supersede which.
    let mut prior: HashMap<String, StoredCall> = HashMap::new();
    {
        let mut find = tx
            .prepare_cached(FIND_CALL_SQL)
            .map_err(db("preparing call lookup"))?;
        for (_, cdr) in &fresh {
            if cdr.cdr_id.is_empty() || prior.contains_key(&cdr.cdr_id) {
                continue;
            }
            let mut call = StoredCall::default();
            let mut rows = find
                .query(params![agent_id, cdr.cdr_id])
                .map_err(db("looking up a call"))?;
            while let Some(r) = rows.next().map_err(db("looking up a call"))? {
                let interim: bool = r.get(0).map_err(db("looking up a call"))?;
                let blob: Vec<u8> = r.get(1).map_err(db("looking up a call"))?;
                call.add(interim, &blob)?;
            }
            prior.insert(cdr.cdr_id.clone(), call);
        }
    }
    let refs: Vec<&Cdr> = fresh.iter().map(|(_, c)| c).collect();
    let plan = supersede(&refs, &prior);
    {
        let mut del = tx
            .prepare_cached(DELETE_INTERIMS_SQL)
            .map_err(db("preparing supersession"))?;
        for id in &plan.delete_interims {
            del.execute(params![agent_id, id])
                .map_err(db("deleting superseded interim cdrs"))?;
        }
    }
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO cdrs (agent_id, sequence, cdr_id, call_id, caller_user, caller_domain,
                    caller_display, callee_user, callee_domain, callee_display, start_time_ms,
                    end_time_ms, duration_ms, billable_ms, disposition, final_code, max_loss_pct,
                    min_mos, interim, cdr, codec, correlation_id, tenant, destination_prefix,
                    rating, destination, rated_prefix, billable_secs, cost, currency,
                    rate_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)
                 ON CONFLICT (agent_id, sequence) DO NOTHING",
            )
            .map_err(db("preparing insert"))?;
        for ((seq, cdr), keep) in fresh.iter().zip(&plan.keep) {
            if !keep {
                continue;
            }
            let caller = cdr.caller.clone().unwrap_or_default();
            let callee = cdr.callee.clone().unwrap_or_default();
            let rating = rate_cdr(table.as_deref(), cdr);
            let changed = insert
                .execute(params![
                    agent_id,
                    seq,
                    cdr.cdr_id,
                    cdr.call_id,
                    caller.user,
                    caller.domain,
                    caller.display,
                    callee.user,
                    callee.domain,
                    callee.display,
                    int(cdr.start_time_ms)?,
                    int(cdr.end_time_ms)?,
                    int(cdr.duration_ms)?,
                    int(cdr.billable_ms)?,
                    cdr.disposition,
                    cdr.final_code,
                    max_loss_pct(cdr),
                    min_mos(cdr),
                    cdr.interim,
                    cdr.encode_to_vec(),
                    codec_of(cdr),
                    cdr.correlation_id,
                    tenant,
                    rating.destination_prefix,
                    rating.state.code(),
                    rating.destination,
                    rating.rated_prefix,
                    clamp(rating.billable_secs),
                    clamp(rating.cost),
                    rating.currency,
                    rating.rate_version,
                ])
                .map_err(db("inserting cdr"))?;
            if changed == 0 {
                duplicates += 1;
                continue;
            }
            stored += 1;
            if rating.state == RatingState::Unrated {
                unrated += 1;
            }
        }
    }
    tx.prepare_cached(
        "INSERT INTO ingest_cursor (agent_id, highest_seq, tenant) VALUES (?1, ?2, ?3)
         ON CONFLICT (agent_id) DO UPDATE SET highest_seq = MAX(highest_seq, excluded.highest_seq)",
    )
    .map_err(db("advancing cursor"))?
    .execute(params![agent_id, highest, tenant])
    .map_err(db("advancing cursor"))?;
    Ok(IngestOutcome {
        highest_sequence: highest.unsigned_abs(),
        stored,
        duplicates,
        unrated,
        superseded: plan.dropped(),
    })
}

/// `(col = ?a OR col = ?b ...)` over `columns` for the placeholders given.
fn any_of_clause(columns: &[&str], placeholders: &[String]) -> String {
    let ors: Vec<String> = columns
        .iter()
        .flat_map(|c| placeholders.iter().map(move |p| format!("{c} = {p}")))
        .collect();
    format!("({})", ors.join(" OR "))
}

/// The `WHERE ...` clause of a filter (empty when nothing is filtered) and its arguments,
/// numbered from `?1`.
fn filter_clause(f: &CdrFilter) -> Result<(String, Vec<Value>), StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    if let Some(t) = &f.tenant {
        args.push(Value::Text(t.clone()));
        clauses.push(format!("tenant = ?{}", args.len()));
    }
    if let Some(v) = f.start_from_ms {
        args.push(Value::Integer(int(v)?));
        clauses.push(format!("start_time_ms >= ?{}", args.len()));
    }
    if let Some(v) = f.start_to_ms {
        args.push(Value::Integer(int(v)?));
        clauses.push(format!("start_time_ms < ?{}", args.len()));
    }
    if !f.pseudonyms.is_empty() {
        let mut placeholders = Vec::new();
        for p in &f.pseudonyms {
            args.push(Value::Text(p.clone()));
            placeholders.push(format!("?{}", args.len()));
        }
        let mut columns = PARTY_COLUMNS.to_vec();
        columns.push("call_id");
        clauses.push(any_of_clause(&columns, &placeholders));
    }
    if let Some(d) = f.disposition {
        args.push(Value::Integer(i64::from(d as i32)));
        clauses.push(format!("disposition = ?{}", args.len()));
    }
    if let Some(a) = &f.agent_id {
        args.push(Value::Text(a.clone()));
        clauses.push(format!("agent_id = ?{}", args.len()));
    }
    if let Some(id) = &f.cdr_id {
        args.push(Value::Text(id.clone()));
        clauses.push(format!("cdr_id = ?{}", args.len()));
    }
    if let Some(v) = f.min_loss_pct {
        args.push(Value::Real(v));
        clauses.push(format!("max_loss_pct >= ?{}", args.len()));
    }
    if let Some(v) = f.max_mos {
        args.push(Value::Real(v));
        clauses.push(format!("min_mos <= ?{}", args.len()));
    }
    let wheres = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    Ok((wheres, args))
}

/// Runs `sql` (its first column the stored CDR) and decodes the rows.
fn select_cdrs(conn: &Connection, sql: &str, args: Vec<Value>) -> Result<Vec<Cdr>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(db("preparing query"))?;
    let rows = stmt
        .query_map(params_from_iter(args), |r| r.get::<_, Vec<u8>>(0))
        .map_err(db("querying"))?;
    let mut out = Vec::new();
    for blob in rows {
        let blob = blob.map_err(db("reading row"))?;
        out.push(Cdr::decode(blob.as_slice()).map_err(StoreError::Decode)?);
    }
    Ok(out)
}

fn query_blocking(conn: &mut Connection, f: &CdrFilter) -> Result<Vec<Cdr>, StoreError> {
    let (wheres, mut args) = filter_clause(f)?;
    args.push(Value::Integer(i64::from(f.limit)));
    let sql = format!(
        "SELECT cdr FROM cdrs {wheres} ORDER BY start_time_ms DESC, id DESC LIMIT ?{}",
        args.len()
    );
    select_cdrs(conn, &sql, args)
}

/// The legs of the newest `f.limit` calls with a matching leg. A call is a correlation id,
/// or one row when its correlation id is empty (`lone`: NULL groups with NULL, so every
/// non-empty id is one group); calls are ranked by their newest matching leg. Siblings are
/// fetched by the correlation id index whatever the filter, at most [`MAX_CALL_LEGS`] per
/// call (the earliest).
fn query_call_legs_blocking(conn: &mut Connection, f: &CdrFilter) -> Result<Vec<Cdr>, StoreError> {
    let (wheres, mut args) = filter_clause(f)?;
    args.push(Value::Integer(i64::from(f.limit)));
    let limit = args.len();
    args.push(Value::Integer(i64::from(MAX_CALL_LEGS)));
    let max_legs = args.len();
    // Siblings come from the caller's tenant only: correlation ids are made by agents, and
    // two customers' agents may make the same one.
    let same_tenant = match &f.tenant {
        Some(t) => {
            args.push(Value::Text(t.clone()));
            format!("AND c.tenant = ?{}", args.len())
        }
        None => String::new(),
    };
    let sql = format!(
        "WITH calls AS (
            SELECT correlation_id AS cid,
                CASE WHEN correlation_id = '' THEN id END AS lone,
                MAX(start_time_ms) AS newest, MAX(id) AS top
            FROM cdrs {wheres}
            GROUP BY cid, lone
            ORDER BY newest DESC, top DESC LIMIT ?{limit}
        ),
        siblings AS (
            SELECT c.cdr, ROW_NUMBER() OVER (
                PARTITION BY c.correlation_id ORDER BY c.start_time_ms, c.id) AS n
            FROM calls JOIN cdrs c ON c.correlation_id = calls.cid
            WHERE calls.lone IS NULL {same_tenant}
        )
        SELECT cdr FROM siblings WHERE n <= ?{max_legs}
        UNION ALL
        SELECT c.cdr FROM calls JOIN cdrs c ON c.id = calls.lone"
    );
    select_cdrs(conn, &sql, args)
}

fn insert_audit(conn: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    let subjects = serde_json::to_string(&e.subjects).unwrap_or_else(|_| "[]".into());
    conn.execute(
        "INSERT INTO audit_log (time_ms, action, actor, subjects, reference, affected, tenant)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            int(e.time_ms)?,
            e.action.as_str(),
            e.actor,
            subjects,
            e.reference,
            int(e.affected)?,
            e.tenant.as_deref().unwrap_or(ALL_TENANTS),
        ],
    )
    .map_err(db("writing audit log"))?;
    Ok(())
}

/// Checkpoints the whole WAL and empties it, with the checkpointer kept out meanwhile (a
/// checkpoint that finds another at work is skipped by SQLite).
fn truncate_wal(
    conn: &Connection,
    checkpoint_lock: &Mutex<()>,
    what: &'static str,
) -> Result<(), StoreError> {
    let _held = checkpoint_lock.lock().map_err(|_| StoreError::Poisoned)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(db(what))
}

fn erase_blocking(
    conn: &mut Connection,
    e: &Erasure,
    checkpoint_lock: &Mutex<()>,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let mut deleted = 0u64;
    {
        // One statement per pseudonym keeps each an index lookup per party column.
        // `?2` NULL: every tenant.
        let mut del = tx
            .prepare(&format!(
                "DELETE FROM cdrs WHERE {} AND (?2 IS NULL OR tenant = ?2)",
                any_of_clause(&PARTY_COLUMNS, &["?1".to_string()])
            ))
            .map_err(db("preparing erase"))?;
        for p in &e.pseudonyms {
            deleted += del.execute(params![p, e.tenant]).map_err(db("erasing"))? as u64;
        }
    }
    insert_audit(
        &tx,
        &AuditEntry {
            time_ms: e.now_ms,
            action: AuditAction::Erase,
            actor: e.actor.clone(),
            subjects: e.audited.clone().unwrap_or_else(|| e.pseudonyms.clone()),
            reference: e.reference.clone(),
            affected: deleted,
            tenant: e.tenant.clone(),
        },
    )?;
    tx.commit().map_err(db("commit"))?;
    // Move the overwritten pages out of the WAL into the main file and empty the WAL, so
    // erased records do not linger in the journal.
    truncate_wal(conn, checkpoint_lock, "checkpoint after erase")?;
    Ok(deleted)
}

fn audit_log_blocking(conn: &mut Connection, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT time_ms, action, actor, subjects, reference, affected, tenant FROM audit_log
             ORDER BY id DESC LIMIT ?1",
        )
        .map_err(db("reading audit log"))?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .map_err(db("reading audit log"))?;
    let mut out = Vec::new();
    for row in rows {
        let (time, action, actor, subjects, reference, affected, tenant) =
            row.map_err(db("reading audit log"))?;
        let Some(action) = AuditAction::from_name(&action) else {
            continue;
        };
        out.push(AuditEntry {
            time_ms: time.unsigned_abs(),
            action,
            actor,
            subjects: serde_json::from_str(&subjects).unwrap_or_default(),
            reference,
            affected: affected.unsigned_abs(),
            tenant: (tenant != ALL_TENANTS).then_some(tenant),
        });
    }
    Ok(out)
}

/// Adds `rows` to the stored aggregates (a row already there for the key is summed).
fn upsert_aggregates(
    tx: &Connection,
    rows: impl Iterator<Item = DailyAggregate>,
) -> Result<(), StoreError> {
    let hist = histogram_columns();
    let cols = hist.join(", ");
    let placeholders: Vec<String> = (8..8 + hist.len()).map(|i| format!("?{i}")).collect();
    let updates: Vec<String> = ["calls", "duration_ms", "billable_ms"]
        .iter()
        .map(|c| c.to_string())
        .chain(hist.iter().cloned())
        .map(|c| format!("{c} = {c} + excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO cdr_daily_aggregates (day, agent_id, disposition, codec, calls, duration_ms,
            billable_ms, {cols})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, {})
         ON CONFLICT (day, agent_id, disposition, codec) DO UPDATE SET {}",
        placeholders.join(", "),
        updates.join(", ")
    );
    let mut stmt = tx.prepare(&sql).map_err(db("preparing aggregates"))?;
    for a in rows {
        let mut values: Vec<Value> = vec![
            Value::Integer(int(a.key.day)?),
            Value::Text(a.key.agent_id.clone()),
            Value::Integer(i64::from(a.key.disposition)),
            Value::Text(a.key.codec.clone()),
            Value::Integer(int(a.calls)?),
            Value::Integer(int(a.duration_ms)?),
            Value::Integer(int(a.billable_ms)?),
        ];
        for v in a.mos_hist.iter().chain(a.loss_hist.iter()) {
            values.push(Value::Integer(int(*v)?));
        }
        stmt.execute(params_from_iter(values))
            .map_err(db("writing aggregates"))?;
    }
    Ok(())
}

fn retain_blocking(
    conn: &mut Connection,
    cutoff_ms: u64,
    now_ms: u64,
    tenant: Option<&str>,
) -> Result<RetentionRun, StoreError> {
    let cutoff = int(cutoff_ms)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let mut folder = Folder::default();
    {
        let mut stmt = tx
            .prepare(
                "SELECT agent_id, start_time_ms, disposition, codec,
                    CASE WHEN codec IS NULL THEN cdr END,
                    duration_ms, billable_ms, min_mos, max_loss_pct, interim
                 FROM cdrs WHERE start_time_ms < ?1 AND (?2 IS NULL OR tenant = ?2)",
            )
            .map_err(db("reading expired cdrs"))?;
        let mut rows = stmt
            .query(params![cutoff, tenant])
            .map_err(db("reading expired cdrs"))?;
        while let Some(r) = rows.next().map_err(db("reading expired cdrs"))? {
            let codec = match r.get::<_, Option<String>>(3).map_err(db("reading codec"))? {
                Some(c) => c,
                None => {
                    let blob: Vec<u8> = r.get(4).map_err(db("reading cdr"))?;
                    codec_of(&Cdr::decode(blob.as_slice()).map_err(StoreError::Decode)?)
                }
            };
            let get_u = |i: usize| -> Result<u64, StoreError> {
                Ok(r.get::<_, i64>(i)
                    .map_err(db("reading row"))?
                    .unsigned_abs())
            };
            folder.add(FoldRow {
                agent_id: r.get(0).map_err(db("reading row"))?,
                start_time_ms: get_u(1)?,
                disposition: r.get(2).map_err(db("reading row"))?,
                codec,
                duration_ms: get_u(5)?,
                billable_ms: get_u(6)?,
                min_mos: r.get(7).map_err(db("reading row"))?,
                max_loss_pct: r.get(8).map_err(db("reading row"))?,
                interim: r.get(9).map_err(db("reading row"))?,
            });
        }
    }
    let folded = folder.folded();
    upsert_aggregates(&tx, folder.into_rows())?;
    tx.execute(USAGE_FOLD_SQL, params![cutoff, tenant])
        .map_err(db("folding usage"))?;
    let deleted = tx
        .execute(
            "DELETE FROM cdrs WHERE start_time_ms < ?1 AND (?2 IS NULL OR tenant = ?2)",
            params![cutoff, tenant],
        )
        .map_err(db("deleting expired cdrs"))? as u64;
    let run = RetentionRun {
        time_ms: now_ms,
        cutoff_ms,
        deleted,
        folded,
    };
    tx.execute(
        "INSERT INTO retention_runs (time_ms, cutoff_ms, deleted, folded) VALUES (?1, ?2, ?3, ?4)",
        params![int(now_ms)?, cutoff, int(deleted)?, int(folded)?],
    )
    .map_err(db("recording retention run"))?;
    tx.commit().map_err(db("commit"))?;
    Ok(run)
}

fn rerate_blocking(
    conn: &mut Connection,
    rates: &RateCache,
    tenant: &str,
    since_ms: u64,
    mut audit: AuditEntry,
) -> Result<RerateOutcome, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let table = newest_rates(&tx, rates, tenant)?;
    let mut out = RerateOutcome {
        version: table.as_ref().map(|t| t.version().to_owned()),
        ..Default::default()
    };
    let mut changes: Vec<(i64, CdrRating)> = Vec::new();
    {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT id, {RERATE_COLUMNS} FROM cdrs
                 WHERE tenant = ?1 AND start_time_ms >= ?2 AND NOT interim"
            ))
            .map_err(db("reading cdrs to re-rate"))?;
        let mut rows = stmt
            .query(params![tenant, int(since_ms)?])
            .map_err(db("reading cdrs to re-rate"))?;
        while let Some(r) = rows.next().map_err(db("reading cdrs to re-rate"))? {
            let e = |source| StoreError::Database {
                what: "reading cdrs to re-rate",
                source,
            };
            let u = |i: usize| r.get::<_, i64>(i).map(i64::unsigned_abs);
            let row = RatedRow {
                destination_prefix: r.get(1).map_err(e)?,
                disposition: r.get(2).map_err(e)?,
                billable_ms: u(3).map_err(e)?,
                start_time_ms: u(4).map_err(e)?,
                current: CdrRating {
                    state: RatingState::from_code(r.get(5).map_err(e)?),
                    destination_prefix: r.get(1).map_err(e)?,
                    destination: r.get(6).map_err(e)?,
                    rated_prefix: r.get(7).map_err(e)?,
                    billable_secs: u(8).map_err(e)?,
                    cost: u(9).map_err(e)?,
                    currency: r.get(10).map_err(e)?,
                    rate_version: r.get(11).map_err(e)?,
                },
            };
            out.cdrs += 1;
            let new = row.rerated(table.as_deref());
            let state = new.as_ref().map_or(row.current.state, |n| n.state);
            if state == RatingState::Unrated {
                out.unrated += 1;
            }
            if let Some(new) = new {
                changes.push((r.get(0).map_err(e)?, new));
            }
        }
    }
    {
        let mut upd = tx
            .prepare(&format!("UPDATE cdrs SET {RATING_SET} WHERE id = ?8"))
            .map_err(db("re-rating"))?;
        for (id, n) in &changes {
            upd.execute(params![
                n.state.code(),
                n.destination,
                n.rated_prefix,
                clamp(n.billable_secs),
                clamp(n.cost),
                n.currency,
                n.rate_version,
                id
            ])
            .map_err(db("re-rating"))?;
        }
    }
    out.changed = changes.len() as u64;
    audit.affected = out.changed;
    insert_audit(&tx, &audit)?;
    tx.commit().map_err(db("commit"))?;
    Ok(out)
}

fn retention_state_blocking(conn: &mut Connection) -> Result<RetentionState, StoreError> {
    let oldest: Option<i64> = conn
        .query_row("SELECT MIN(start_time_ms) FROM cdrs", [], |r| r.get(0))
        .map_err(db("reading oldest cdr"))?;
    let last_run = conn
        .query_row(
            "SELECT time_ms, cutoff_ms, deleted, folded FROM retention_runs ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                Ok(RetentionRun {
                    time_ms: r.get::<_, i64>(0)?.unsigned_abs(),
                    cutoff_ms: r.get::<_, i64>(1)?.unsigned_abs(),
                    deleted: r.get::<_, i64>(2)?.unsigned_abs(),
                    folded: r.get::<_, i64>(3)?.unsigned_abs(),
                })
            },
        )
        .optional()
        .map_err(db("reading retention runs"))?;
    Ok(RetentionState {
        oldest_start_time_ms: oldest.map(i64::unsigned_abs),
        last_run,
    })
}

fn aggregates_blocking(
    conn: &mut Connection,
    from_day: u64,
    to_day: u64,
) -> Result<Vec<DailyAggregate>, StoreError> {
    let hist = histogram_columns();
    let sql = format!(
        "SELECT day, agent_id, disposition, codec, calls, duration_ms, billable_ms, {}
         FROM cdr_daily_aggregates WHERE day >= ?1 AND day < ?2
         ORDER BY day, agent_id, disposition, codec",
        hist.join(", ")
    );
    let mut stmt = conn.prepare(&sql).map_err(db("reading aggregates"))?;
    let mut rows = stmt
        .query(params![
            int(from_day.min(i64::MAX as u64))?,
            int(to_day.min(i64::MAX as u64))?
        ])
        .map_err(db("reading aggregates"))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(db("reading aggregates"))? {
        let u = |i: usize| -> Result<u64, StoreError> {
            Ok(r.get::<_, i64>(i)
                .map_err(db("reading aggregates"))?
                .unsigned_abs())
        };
        let mut a = DailyAggregate::new(AggregateKey {
            day: u(0)?,
            agent_id: r.get(1).map_err(db("reading aggregates"))?,
            disposition: r.get(2).map_err(db("reading aggregates"))?,
            codec: r.get(3).map_err(db("reading aggregates"))?,
        });
        a.calls = u(4)?;
        a.duration_ms = u(5)?;
        a.billable_ms = u(6)?;
        for (i, slot) in a
            .mos_hist
            .iter_mut()
            .chain(a.loss_hist.iter_mut())
            .enumerate()
        {
            *slot = u(7 + i)?;
        }
        out.push(a);
    }
    Ok(out)
}
fn stats_blocking(conn: &mut Connection, tenant: Option<&str>) -> Result<StoreStats, StoreError> {
    // `?1` NULL: every tenant.
    let cdrs: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM cdrs WHERE ?1 IS NULL OR tenant = ?1",
            [tenant],
            |r| r.get(0),
        )
        .map_err(db("counting cdrs"))?;
    let mut stmt = conn
        .prepare(
            "SELECT agent_id, highest_seq FROM ingest_cursor WHERE ?1 IS NULL OR tenant = ?1
             ORDER BY agent_id",
        )
        .map_err(db("reading cursors"))?;
    let agents = stmt
        .query_map([tenant], |r| {
            Ok(AgentCursor {
                agent_id: r.get(0)?,
                highest_sequence: r.get::<_, i64>(1)?.unsigned_abs(),
            })
        })
        .map_err(db("reading cursors"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db("reading cursors"))?;
    Ok(StoreStats {
        cdrs_stored: cdrs.unsigned_abs(),
        agents,
    })
}

fn rewrite_blocking(
    conn: &mut Connection,
    tenant: &str,
    f: &RowRewrite,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let sets: Vec<String> = REWRITE_COLUMNS
        .iter()
        .zip(1..)
        .map(|(c, i)| format!("{c} = ?{i}"))
        .collect();
    let update = format!(
        "UPDATE cdrs SET {}, cdr = ?9 WHERE id = ?10",
        sets.join(", ")
    );
    let (mut last, mut changed) = (i64::MIN, 0u64);
    loop {
        let chunk: Vec<(i64, Vec<u8>)> = tx
            .prepare_cached(
                "SELECT id, cdr FROM cdrs WHERE tenant = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .map_err(db("reading cdrs to rewrite"))?
            .query_map(params![tenant, last, REWRITE_CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(db("reading cdrs to rewrite"))?
            .collect::<Result<_, _>>()
            .map_err(db("reading cdrs to rewrite"))?;
        let Some((end, _)) = chunk.last() else {
            break;
        };
        last = *end;
        for (id, blob) in chunk {
            let stored = Cdr::decode(blob.as_slice()).map_err(StoreError::Decode)?;
            let Some(new) = f(&stored)? else {
                continue;
            };
            let [a, b, c, d, e, g, h, i] = rewrite_values(&new);
            tx.prepare_cached(&update)
                .map_err(db("rewriting cdrs"))?
                .execute(params![a, b, c, d, e, g, h, i, new.encode_to_vec(), id])
                .map_err(db("rewriting cdrs"))?;
            changed += 1;
        }
    }
    tx.commit().map_err(db("commit"))?;
    Ok(changed)
}

fn delete_tenant_blocking(
    conn: &mut Connection,
    tenant: &str,
    mut audit: AuditEntry,
    checkpoint_lock: &Mutex<()>,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let deleted = tx
        .execute("DELETE FROM cdrs WHERE tenant = ?1", [tenant])
        .map_err(db("deleting a tenant's cdrs"))? as u64;
    for sql in TENANT_DELETES {
        tx.execute(sql, [tenant])
            .map_err(db("deleting a tenant's rows"))?;
    }
    audit.affected = deleted;
    insert_audit(&tx, &audit)?;
    tx.commit().map_err(db("commit"))?;
    truncate_wal(conn, checkpoint_lock, "checkpoint after deleting a tenant")?;
    Ok(deleted)
}

fn tenants_blocking(conn: &mut Connection) -> Result<Vec<TenantStats>, StoreError> {
    let mut stmt = conn.prepare(TENANTS_SQL).map_err(db("listing tenants"))?;
    let rows = stmt
        .query_map([], |r| {
            Ok(TenantStats {
                tenant: r.get(0)?,
                cdrs_stored: r.get::<_, i64>(1)?.unsigned_abs(),
                agents: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
            })
        })
        .map_err(db("listing tenants"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(db("listing tenants"))
}

#[tonic::async_trait]
impl Store for SqliteStore {
    async fn ingest_into(
        &self,
        agent_id: &str,
        tenant: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError> {
        validate_batch(&batch)?;
        let (done, outcome) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .push(IngestJob {
                agent_id: agent_id.to_owned(),
                tenant: tenant.to_owned(),
                batch,
                done,
            });
        // This worker stores the batch unless one that took the writer before it already
        // did, in its group ([`ingest_pending`]); either way the batch is stored when it
        // returns.
        let (rates, pending) = (Arc::clone(&self.rates), Arc::clone(&self.pending));
        let checkpoint = self.checkpoint.clone();
        run(&self.writer, move |c| {
            ingest_pending(c, &rates, &pending, &checkpoint)
        })
        .await?;
        // The sender is dropped unsent only if the worker storing it panicked.
        outcome.await.map_err(|_| StoreError::Poisoned)?
    }

    async fn cursor(&self, agent_id: &str) -> Result<u64, StoreError> {
        let agent = agent_id.to_string();
        run(&self.reader, move |c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT highest_seq FROM ingest_cursor WHERE agent_id = ?1",
                    [agent],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db("reading cursor"))?;
            Ok(v.unwrap_or(0).unsigned_abs())
        })
        .await
    }

    async fn query(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        run(&self.reader, move |c| query_blocking(c, &filter)).await
    }

    async fn query_call_legs(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        run(&self.reader, move |c| query_call_legs_blocking(c, &filter)).await
    }

    async fn erase(&self, erasure: Erasure) -> Result<u64, StoreError> {
        let lock = Arc::clone(&self.checkpoint_lock);
        run(&self.writer, move |c| erase_blocking(c, &erasure, &lock)).await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        run(&self.writer, move |c| insert_audit(c, &entry)).await
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        run(&self.reader, move |c| audit_log_blocking(c, limit)).await
    }

    async fn retain(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        run(&self.writer, move |c| {
            retain_blocking(c, cutoff_ms, now_ms, None)
        })
        .await
        .map(Some)
    }

    async fn retain_tenant(
        &self,
        tenant: &str,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        let tenant = tenant.to_owned();
        run(&self.writer, move |c| {
            retain_blocking(c, cutoff_ms, now_ms, Some(&tenant))
        })
        .await
        .map(Some)
    }

    async fn retention_state(&self) -> Result<RetentionState, StoreError> {
        run(&self.reader, retention_state_blocking).await
    }

    async fn aggregates(
        &self,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<DailyAggregate>, StoreError> {
        run(&self.reader, move |c| {
            aggregates_blocking(c, from_day, to_day)
        })
        .await
    }

    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats, StoreError> {
        let tenant = tenant.map(str::to_owned);
        run(&self.reader, move |c| stats_blocking(c, tenant.as_deref())).await
    }

    async fn tenants(&self) -> Result<Vec<TenantStats>, StoreError> {
        run(&self.reader, tenants_blocking).await
    }

    async fn rewrite(&self, tenant: &str, f: RowRewrite) -> Result<u64, StoreError> {
        let tenant = tenant.to_owned();
        run(&self.writer, move |c| rewrite_blocking(c, &tenant, &f)).await
    }

    async fn delete_tenant(&self, tenant: &str, audit: AuditEntry) -> Result<u64, StoreError> {
        let (tenant, lock) = (tenant.to_owned(), Arc::clone(&self.checkpoint_lock));
        run(&self.writer, move |c| {
            delete_tenant_blocking(c, &tenant, audit, &lock)
        })
        .await
    }

    async fn store_rates(
        &self,
        tenant: &str,
        version: &str,
        csv: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let (tenant, version, csv) = (tenant.to_owned(), version.to_owned(), csv.to_owned());
        run(&self.writer, move |c| {
            store_rates_blocking(c, &tenant, &version, &csv, now_ms)
        })
        .await
    }

    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        let tenant = tenant.to_owned();
        run(&self.reader, move |c| {
            usage_blocking(c, &tenant, from_ms, to_ms)
        })
        .await
    }

    async fn rerate(
        &self,
        tenant: &str,
        since_ms: u64,
        audit: AuditEntry,
    ) -> Result<RerateOutcome, StoreError> {
        let tenant = tenant.to_owned();
        let rates = Arc::clone(&self.rates);
        run(&self.writer, move |c| {
            rerate_blocking(c, &rates, &tenant, since_ms, audit)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    /// What SQLite's planner does with `sql`: the detail column of EXPLAIN QUERY PLAN.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut st = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain");
        st.query_map(params!["agent", "id"], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("plan rows")
    }

    #[test]
    fn supersession_finds_a_call_by_the_cdr_id_index() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(path.to_str().expect("utf-8")).expect("open");
        drop(store);
        let conn = Connection::open(&path).expect("reopen");
        for sql in [FIND_CALL_SQL, DELETE_INTERIMS_SQL] {
            let p = plan(&conn, sql);
            assert!(
                p.iter()
                    .any(|d| d.contains("USING INDEX cdrs_cdr_id (cdr_id=?)")),
                "{sql}: {p:?}"
            );
        }
    }
}
