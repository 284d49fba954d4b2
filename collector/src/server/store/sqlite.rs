//! SQLite backend of [`Store`](super::Store): one file, WAL journal, `synchronous=FULL` so a
//! committed batch survives power loss before it is acknowledged, `secure_delete` so erased
//! CDRs are overwritten rather than left in free pages.
//!
//! rusqlite is blocking: every call runs on `tokio::task::spawn_blocking` with one writer
//! connection and one reader connection (WAL lets queries run beside a commit).
//!
//! The schema is versioned: `schema_version` holds the applied version and [`MIGRATIONS`]
//! are applied in order, each in its own transaction. Add a migration, never edit one.
use std::{
    fs::OpenOptions,
    os::unix::fs::OpenOptionsExt,
    sync::{Arc, Mutex},
};

use collector_proto::v1::{Cdr, CdrRecord};
use prost::Message as _;
use rusqlite::{
    params, params_from_iter, types::Value, Connection, OptionalExtension, TransactionBehavior,
};

use super::{
    day_of, validate_batch, AgentCursor, CdrFilter, IngestOutcome, Store, StoreError, StoreStats,
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
];

/// The party columns a pseudonym is matched against (query and erasure).
const PARTY_COLUMNS: [&str; 6] = [
    "caller_user",
    "caller_domain",
    "caller_display",
    "callee_user",
    "callee_domain",
    "callee_display",
];

fn db(what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Database { what, source }
}

/// SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
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
        let reader = connect(path)?;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
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
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [version],
        )
        .map_err(db("migration"))?;
        tx.commit().map_err(db("migration"))?;
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

fn ingest_blocking(
    conn: &mut Connection,
    agent_id: &str,
    batch: &[CdrRecord],
) -> Result<IngestOutcome, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let cursor: i64 = tx
        .query_row(
            "SELECT highest_seq FROM ingest_cursor WHERE agent_id = ?1",
            [agent_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(db("reading cursor"))?
        .unwrap_or(0);
    let mut highest = cursor;
    let (mut stored, mut duplicates) = (0u64, 0u64);
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO cdrs (agent_id, sequence, cdr_id, call_id, caller_user, caller_domain,
                    caller_display, callee_user, callee_domain, callee_display, start_time_ms,
                    end_time_ms, duration_ms, billable_ms, disposition, final_code, max_loss_pct,
                    min_mos, interim, cdr)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                    ?17, ?18, ?19, ?20)
                 ON CONFLICT (agent_id, sequence) DO NOTHING",
            )
            .map_err(db("preparing insert"))?;
        let mut aggregate = tx
            .prepare_cached(
                "INSERT INTO daily_aggregates (day, agent_id, disposition, calls, billable_ms)
                 VALUES (?1, ?2, ?3, 1, ?4)
                 ON CONFLICT (day, agent_id, disposition)
                 DO UPDATE SET calls = calls + 1, billable_ms = billable_ms + excluded.billable_ms",
            )
            .map_err(db("preparing aggregate"))?;
        for rec in batch {
            let seq = int(rec.sequence)?;
            let Some(cdr) = rec.cdr.as_ref() else {
                return Err(StoreError::InvalidBatch("a record carries no cdr"));
            };
            if seq <= cursor {
                duplicates += 1;
                continue;
            }
            let mut cdr = cdr.clone();
            if cdr.agent_id.is_empty() {
                cdr.agent_id = agent_id.to_string();
            }
            let caller = cdr.caller.clone().unwrap_or_default();
            let callee = cdr.callee.clone().unwrap_or_default();
            let max_loss = cdr.media.iter().map(|m| m.loss_pct).reduce(f64::max);
            let min_mos = cdr
                .media
                .iter()
                .map(|m| m.mos)
                .filter(|m| *m > 0.0)
                .reduce(f64::min);
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
                    max_loss,
                    min_mos,
                    cdr.interim,
                    cdr.encode_to_vec(),
                ])
                .map_err(db("inserting cdr"))?;
            highest = highest.max(seq);
            if changed == 0 {
                duplicates += 1;
                continue;
            }
            stored += 1;
            // Interim records are snapshots of a call whose final record follows: counting
            // them would count the call twice.
            if !cdr.interim {
                aggregate
                    .execute(params![
                        int(day_of(cdr.start_time_ms))?,
                        agent_id,
                        cdr.disposition,
                        int(cdr.billable_ms)?
                    ])
                    .map_err(db("updating aggregates"))?;
            }
        }
    }
    tx.execute(
        "INSERT INTO ingest_cursor (agent_id, highest_seq) VALUES (?1, ?2)
         ON CONFLICT (agent_id) DO UPDATE SET highest_seq = MAX(highest_seq, excluded.highest_seq)",
        params![agent_id, highest],
    )
    .map_err(db("advancing cursor"))?;
    tx.commit().map_err(db("commit"))?;
    Ok(IngestOutcome {
        highest_sequence: highest.unsigned_abs(),
        stored,
        duplicates,
    })
}

fn pseudonym_clause(placeholder: &str) -> String {
    let ors: Vec<String> = PARTY_COLUMNS
        .iter()
        .map(|c| format!("{c} = {placeholder}"))
        .collect();
    format!("({})", ors.join(" OR "))
}

fn query_blocking(conn: &mut Connection, f: &CdrFilter) -> Result<Vec<Cdr>, StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut bind = |clause: &dyn Fn(usize) -> String, v: Value| {
        args.push(v);
        clauses.push(clause(args.len()));
    };
    if let Some(v) = f.start_from_ms {
        bind(
            &|i| format!("start_time_ms >= ?{i}"),
            Value::Integer(int(v)?),
        );
    }
    if let Some(v) = f.start_to_ms {
        bind(
            &|i| format!("start_time_ms < ?{i}"),
            Value::Integer(int(v)?),
        );
    }
    if let Some(p) = &f.pseudonym {
        bind(
            &|i| pseudonym_clause(&format!("?{i}")),
            Value::Text(p.clone()),
        );
    }
    if let Some(d) = f.disposition {
        bind(
            &|i| format!("disposition = ?{i}"),
            Value::Integer(i64::from(d as i32)),
        );
    }
    if let Some(a) = &f.agent_id {
        bind(&|i| format!("agent_id = ?{i}"), Value::Text(a.clone()));
    }
    if let Some(v) = f.min_loss_pct {
        bind(&|i| format!("max_loss_pct >= ?{i}"), Value::Real(v));
    }
    if let Some(v) = f.max_mos {
        bind(&|i| format!("min_mos <= ?{i}"), Value::Real(v));
    }
    let wheres = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    args.push(Value::Integer(i64::from(f.limit)));
    let sql = format!(
        "SELECT cdr FROM cdrs {wheres} ORDER BY start_time_ms DESC, id DESC LIMIT ?{}",
        args.len()
    );
    let mut stmt = conn.prepare(&sql).map_err(db("preparing query"))?;
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

fn erase_blocking(
    conn: &mut Connection,
    pseudonyms: &[String],
    reference: &str,
    now_ms: u64,
) -> Result<u64, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("begin"))?;
    let mut deleted = 0u64;
    {
        let mut del = tx
            .prepare(&format!(
                "DELETE FROM cdrs WHERE {}",
                pseudonym_clause("?1")
            ))
            .map_err(db("preparing erase"))?;
        for p in pseudonyms {
            deleted += del.execute([p]).map_err(db("erasing"))? as u64;
        }
    }
    let subjects = serde_json::to_string(pseudonyms).unwrap_or_else(|_| "[]".into());
    tx.execute(
        "INSERT INTO audit_log (time_ms, action, subjects, reference, affected)
         VALUES (?1, 'erase', ?2, ?3, ?4)",
        params![int(now_ms)?, subjects, reference, int(deleted)?],
    )
    .map_err(db("writing audit log"))?;
    tx.commit().map_err(db("commit"))?;
    // Move the overwritten pages out of the WAL into the main file and empty the WAL, so
    // erased records do not linger in the journal.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .map_err(db("checkpoint after erase"))?;
    Ok(deleted)
}

fn stats_blocking(conn: &mut Connection) -> Result<StoreStats, StoreError> {
    let cdrs: i64 = conn
        .query_row("SELECT COUNT(*) FROM cdrs", [], |r| r.get(0))
        .map_err(db("counting cdrs"))?;
    let mut stmt = conn
        .prepare("SELECT agent_id, highest_seq FROM ingest_cursor ORDER BY agent_id")
        .map_err(db("reading cursors"))?;
    let agents = stmt
        .query_map([], |r| {
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

#[tonic::async_trait]
impl Store for SqliteStore {
    async fn ingest(
        &self,
        agent_id: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError> {
        validate_batch(&batch)?;
        let agent = agent_id.to_string();
        run(&self.writer, move |c| ingest_blocking(c, &agent, &batch)).await
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

    async fn erase(
        &self,
        pseudonyms: Vec<String>,
        reference: String,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        run(&self.writer, move |c| {
            erase_blocking(c, &pseudonyms, &reference, now_ms)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        run(&self.reader, stats_blocking).await
    }
}
