//! PostgreSQL backend of [`Store`](super::Store): the scale-out path, where several
//! stateless collectors behind a load balancer write to one database.
//!
//! - **Partitioned by day**: `cdrs` is range-partitioned on `start_time_ms`, one partition
//!   per UTC day (`cdrs_d<days since epoch>`), created on first use. Retention folds and then
//!   drops whole partitions (cheap, no table bloat) and deletes only from the one partition
//!   the cutoff falls in, so it removes exactly what is older than the limit.
//! - **Indexes** on every party field, the Call-ID, the start time and (agent, start), so an
//!   erasure or a pseudonym query is a few index probes per partition.
//! - **Exactly once across servers**: ingest locks the agent's cursor row (`FOR UPDATE`),
//!   inserts only the sequences above it and advances it in the same transaction, so two
//!   collectors receiving the same agent's batches (a reconnect through the load balancer)
//!   serialise on that row and never store a sequence twice. The primary key
//!   (agent, sequence, start) backs this up (a unique key on a partitioned table must hold
//!   the partition key).
//! - **Migrations** are versioned in `schema_version` and applied under an advisory lock, so
//!   collectors starting together do not race; retention also runs under an advisory lock,
//!   so only one collector runs it at a time.
//!
//! Connections come from a small `deadpool-postgres` pool; statements are plain SQL through
//! `tokio-postgres` (no ORM). Given a CA ([`PgStore::connect`]'s `tls_ca`), connections use
//! TLS (rustls) and verify the database server against it; use `sslmode=require` in the
//! URL so a server without TLS is refused rather than used in clear. A committed transaction is durable (`synchronous_commit` is
//! PostgreSQL's default), so an acknowledgement follows only durable storage.
use std::{
    collections::{HashMap, HashSet},
    str::FromStr as _,
    sync::Mutex,
};

use collector_proto::v1::{Cdr, CdrRecord};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use prost::Message as _;
use tokio_postgres::{types::ToSql, NoTls};
use tokio_stream::StreamExt as _;

use super::billing::{
    billing_schema, clamp, rate_cdr, usage_days, CdrRating, RateCache, RatedRow, RatingState,
    RerateOutcome, UsageGroup, RATING_SET, RERATE_COLUMNS, USAGE_DAILY_SCHEMA, USAGE_FOLD_SQL,
    USAGE_SQL,
};
use super::{
    aggregate::{AggregateKey, FoldRow},
    codec_of, day_of, max_loss_pct, min_mos, rewrite_values, supersede, validate_batch,
    AgentCursor, AuditAction, AuditEntry, CdrFilter, DailyAggregate, Erasure, Folder,
    IngestOutcome, RetentionRun, RetentionState, RowRewrite, Store, StoreError, StoreStats,
    StoredCall, TenantStats, AGENT_CDR_ID_DROP, ALL_TENANTS, CDR_ID_SCHEMA, DAY_MS, LOSS_BUCKETS,
    MAX_CALL_LEGS, MOS_BUCKETS, REWRITE_CHUNK, REWRITE_COLUMNS, TENANCY_SCHEMA, TENANTS_SQL,
    TENANT_DELETES,
};

/// Connections kept in the pool.
pub const POOL_SIZE: usize = 16;

/// Advisory lock keys (arbitrary constants, "CDR" + purpose).
const MIGRATION_LOCK: i64 = 0x4344_5201;
const PARTITION_LOCK: i64 = 0x4344_5202;
const RETENTION_LOCK: i64 = 0x4344_5203;

/// Ordered schema migrations; migration `i` brings the schema to version `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // v1: day-partitioned CDRs with their queryable fields beside the full protobuf,
    // per-agent cursors, the audit log, anonymous daily aggregates and retention runs.
    r#"
    CREATE TABLE cdrs (
        agent_id       TEXT             NOT NULL,
        sequence       BIGINT           NOT NULL,
        cdr_id         TEXT             NOT NULL,
        call_id        TEXT             NOT NULL,
        caller_user    TEXT             NOT NULL,
        caller_domain  TEXT             NOT NULL,
        caller_display TEXT             NOT NULL,
        callee_user    TEXT             NOT NULL,
        callee_domain  TEXT             NOT NULL,
        callee_display TEXT             NOT NULL,
        start_time_ms  BIGINT           NOT NULL,
        end_time_ms    BIGINT           NOT NULL,
        duration_ms    BIGINT           NOT NULL,
        billable_ms    BIGINT           NOT NULL,
        disposition    INTEGER          NOT NULL,
        final_code     BIGINT           NOT NULL,
        max_loss_pct   DOUBLE PRECISION,
        min_mos        DOUBLE PRECISION,
        interim        BOOLEAN          NOT NULL,
        codec          TEXT             NOT NULL,
        cdr            BYTEA            NOT NULL,
        PRIMARY KEY (agent_id, sequence, start_time_ms)
    ) PARTITION BY RANGE (start_time_ms);
    CREATE INDEX cdrs_start_time ON cdrs (start_time_ms);
    CREATE INDEX cdrs_agent_start ON cdrs (agent_id, start_time_ms);
    CREATE INDEX cdrs_call_id ON cdrs (call_id);
    CREATE INDEX cdrs_caller_user ON cdrs (caller_user);
    CREATE INDEX cdrs_callee_user ON cdrs (callee_user);
    CREATE INDEX cdrs_caller_domain ON cdrs (caller_domain);
    CREATE INDEX cdrs_callee_domain ON cdrs (callee_domain);
    CREATE INDEX cdrs_caller_display ON cdrs (caller_display);
    CREATE INDEX cdrs_callee_display ON cdrs (callee_display);
    CREATE TABLE ingest_cursor (
        agent_id    TEXT   PRIMARY KEY,
        highest_seq BIGINT NOT NULL
    );
    CREATE TABLE audit_log (
        id        BIGSERIAL PRIMARY KEY,
        time_ms   BIGINT    NOT NULL,
        action    TEXT      NOT NULL,
        actor     TEXT      NOT NULL,
        subjects  TEXT[]    NOT NULL, -- the pseudonyms named by the request
        reference TEXT      NOT NULL,
        affected  BIGINT    NOT NULL
    );
    CREATE TABLE cdr_daily_aggregates (
        day         BIGINT  NOT NULL, -- days since the Unix epoch, UTC
        agent_id    TEXT    NOT NULL,
        disposition INTEGER NOT NULL,
        codec       TEXT    NOT NULL,
        calls       BIGINT  NOT NULL,
        duration_ms BIGINT  NOT NULL,
        billable_ms BIGINT  NOT NULL,
        mos_0 BIGINT NOT NULL, mos_1 BIGINT NOT NULL, mos_2 BIGINT NOT NULL,
        mos_3 BIGINT NOT NULL, mos_4 BIGINT NOT NULL, mos_5 BIGINT NOT NULL,
        mos_6 BIGINT NOT NULL, mos_7 BIGINT NOT NULL,
        loss_0 BIGINT NOT NULL, loss_1 BIGINT NOT NULL, loss_2 BIGINT NOT NULL,
        loss_3 BIGINT NOT NULL, loss_4 BIGINT NOT NULL, loss_5 BIGINT NOT NULL,
        loss_6 BIGINT NOT NULL,
        PRIMARY KEY (day, agent_id, disposition, codec)
    );
    CREATE TABLE retention_runs (
        id        BIGSERIAL PRIMARY KEY,
        time_ms   BIGINT NOT NULL,
        cutoff_ms BIGINT NOT NULL,
        deleted   BIGINT NOT NULL,
        folded    BIGINT NOT NULL
    );
    "#,
    // v2: the correlation id that links the legs of one call becomes a column, indexed on
    // every partition, so the call view fetches a call's sibling legs by index. Rows stored
    // before are filled from their stored CDR in the same transaction
    // ([`PgStore::backfill_correlation`]).
    r#"
    ALTER TABLE cdrs ADD COLUMN correlation_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX cdrs_correlation_id ON cdrs (correlation_id);
    "#,
    // v3: a call's records are found by (agent, cdr id), so a final record deletes its
    // interim records by index on every partition ([`super::supersede`]).
    r#"
    CREATE INDEX cdrs_agent_cdr_id ON cdrs (agent_id, cdr_id);
    "#,
    // v4: billing (issue 24): every imported rate-table version per tenant, and the rating
    // of each CDR at ingest beside it ([`super::billing`]).
    billing_schema!("BIGSERIAL PRIMARY KEY"),
    // v5: the daily usage aggregates retention folds final CDRs into, so usage reports
    // outlive the CDRs ([`super::billing::USAGE_DAILY_SCHEMA`]).
    USAGE_DAILY_SCHEMA,
    // v6: tenants (issue 23): agents bound to a tenant, the audit log's tenant
    // ([`super::TENANCY_SCHEMA`]).
    TENANCY_SCHEMA,
    // v7: row-level security, the second wall between tenants ([`TENANT_ROLE`]).
    ROW_SECURITY_SCHEMA,
    // v8: one CDR looked up by its own id (the web console's call page), by index on every
    // partition ([`super::CDR_ID_SCHEMA`]).
    CDR_ID_SCHEMA,
    // v9: the (agent, cdr id) index goes; the cdr id index finds a call's records
    // ([`super::AGENT_CDR_ID_DROP`]).
    AGENT_CDR_ID_DROP,
];

/// The database role a tenant's reads run as (`SET LOCAL ROLE`, with the tenant in the
/// `collector.tenant` setting): row-level security shows it the rows of that tenant only,
/// and none when no tenant is set, so a query missing its tenant condition still cannot
/// return another tenant's rows. Other roles (the collector's own) are not affected.
pub const TENANT_ROLE: &str = "collector_tenant";

/// The row-level security migration. The role is made when the collector's database user
/// may create roles; otherwise reads are confined by their queries only (the collector says
/// so at start).
const ROW_SECURITY_SCHEMA: &str = r#"
    ALTER TABLE cdrs ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_rows ON cdrs
        USING (current_user <> 'collector_tenant'
               OR tenant = current_setting('collector.tenant', true));
    ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
    CREATE POLICY tenant_rows ON usage_daily
        USING (current_user <> 'collector_tenant'
               OR tenant = current_setting('collector.tenant', true));
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'collector_tenant') THEN
            CREATE ROLE collector_tenant NOLOGIN;
        END IF;
        GRANT collector_tenant TO CURRENT_USER;
        GRANT SELECT ON cdrs, usage_daily TO collector_tenant;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'role collector_tenant not made: no row-level security wall';
    END $$;
"#;

/// The schema version whose migration adds `correlation_id`: rows stored before it get the
/// column filled from their stored CDR.
const CORRELATION_VERSION: u32 = 2;

/// The party columns a pseudonym is matched against (erasure; queries add the Call-ID).
const PARTY_COLUMNS: [&str; 6] = [
    "caller_user",
    "caller_domain",
    "caller_display",
    "callee_user",
    "callee_domain",
    "callee_display",
];

fn pg(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { what, source }
}

/// Column `i` of a row (`Row::get` would panic on a type mismatch).
fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    r: &'a tokio_postgres::Row,
    i: usize,
) -> Result<T, StoreError> {
    r.try_get(i).map_err(pg("reading a row"))
}

/// A BIGINT column holding an unsigned value.
fn col_u64(r: &tokio_postgres::Row, i: usize) -> Result<u64, StoreError> {
    Ok(col::<i64>(r, i)?.unsigned_abs())
}

/// PostgreSQL integers are signed: values above `i64::MAX` cannot be stored.
fn int(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::InvalidBatch("a value exceeds the storable range"))
}

/// Name of the partition holding `day`.
fn partition_name(day: u64) -> String {
    format!("cdrs_d{day}")
}

/// The day a partition name stands for.
fn partition_day(name: &str) -> Option<u64> {
    name.strip_prefix("cdrs_d")?.parse().ok()
}

/// PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    /// Days whose partition this process knows to exist (cleared on an insert failure,
    /// since another collector's retention may have dropped one).
    partitions: Mutex<HashSet<u64>>,
    /// The parsed newest rate table.
    rates: RateCache,
    /// Tenants' reads run as [`TENANT_ROLE`] (row-level security).
    row_security: bool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool's configuration holds the password: print nothing of it.
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (a libpq-style URL or key=value string), checks the server
    /// answers, and applies the missing migrations. With `tls_ca` (PEM certificates),
    /// connections are TLS and the server certificate must chain to one of them.
    pub async fn connect(url: &str, tls_ca: Option<&[u8]>) -> Result<Self, StoreError> {
        let scheme = url.split_once("://").map_or("", |(s, _)| s).to_string();
        let config = tokio_postgres::Config::from_str(url).map_err(|_| StoreError::Url {
            scheme,
            why: "not a valid postgresql connection url",
        })?;
        let mc = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls_ca {
            None => Manager::from_config(config, NoTls, mc()),
            Some(pem) => Manager::from_config(config, tls_connector(pem)?, mc()),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let mut store = Self {
            pool,
            partitions: Mutex::new(HashSet::new()),
            rates: RateCache::default(),
            row_security: false,
        };
        store.migrate().await?;
        let row = store
            .client()
            .await?
            .query_one(
                "SELECT COALESCE((SELECT pg_has_role(current_user, oid, 'MEMBER')
                    FROM pg_roles WHERE rolname = $1), false)",
                &[&TENANT_ROLE],
            )
            .await
            .map_err(pg("checking the tenant role"))?;
        store.row_security = col(&row, 0)?;
        if !store.row_security {
            tracing::warn!(
                role = TENANT_ROLE,
                "the database user cannot use the tenant role: tenants' reads are confined by \
                 their queries only, without row-level security"
            );
        }
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Pool(pool_error_text(e)))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        // Under the migration lock too: two collectors starting at once would otherwise both
        // run the CREATE, and `IF NOT EXISTS` does not make concurrent creation safe (the
        // loser fails on pg_type's unique index).
        {
            let tx = client.transaction().await.map_err(pg("migration"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg("taking the migration lock"))?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            )
            .await
            .map_err(pg("creating schema_version"))?;
            tx.commit().await.map_err(pg("creating schema_version"))?;
        }
        let supported = MIGRATIONS.len() as u32;
        loop {
            let tx = client.transaction().await.map_err(pg("migration"))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await
                .map_err(pg("taking the migration lock"))?;
            let row = tx
                .query_one("SELECT MAX(version) FROM schema_version", &[])
                .await
                .map_err(pg("reading schema_version"))?;
            let current: Option<i32> = col(&row, 0)?;
            let current = current.unwrap_or(0).unsigned_abs();
            if current > supported {
                return Err(StoreError::SchemaTooNew {
                    found: current,
                    supported,
                });
            }
            let Some(sql) = MIGRATIONS.get(current as usize) else {
                return Ok(());
            };
            tx.batch_execute(sql).await.map_err(pg("migration"))?;
            if current + 1 == CORRELATION_VERSION {
                Self::backfill_correlation(&tx).await?;
            }
            let version = i32::try_from(current + 1).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(pg("migration"))?;
            tx.commit().await.map_err(pg("migration"))?;
        }
    }

    /// Fills `correlation_id` of the rows stored before the column existed, from their CDR.
    async fn backfill_correlation(
        tx: &deadpool_postgres::Transaction<'_>,
    ) -> Result<(), StoreError> {
        let rows = tx
            .query(
                "SELECT agent_id, sequence, start_time_ms, cdr FROM cdrs",
                &[],
            )
            .await
            .map_err(pg("reading cdrs to backfill"))?;
        let update = tx
            .prepare(
                "UPDATE cdrs SET correlation_id = $4
                 WHERE agent_id = $1 AND sequence = $2 AND start_time_ms = $3",
            )
            .await
            .map_err(pg("preparing backfill"))?;
        for r in &rows {
            let cdr = Cdr::decode(col::<&[u8]>(r, 3)?).map_err(StoreError::Decode)?;
            if cdr.correlation_id.is_empty() {
                continue;
            }
            let (agent, seq, start): (&str, i64, i64) = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
            tx.execute(&update, &[&agent, &seq, &start, &cdr.correlation_id])
                .await
                .map_err(pg("backfilling correlation ids"))?;
        }
        Ok(())
    }

    /// Creates the partitions of `days` that this process has not seen yet.
    async fn ensure_partitions(&self, days: &[u64]) -> Result<(), StoreError> {
        let missing: Vec<u64> = {
            let known = self.partitions.lock().map_err(|_| StoreError::Poisoned)?;
            days.iter()
                .filter(|d| !known.contains(d))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        for day in missing {
            let (lo, hi) = (int(day * DAY_MS)?, int((day + 1) * DAY_MS)?);
            let tx = client.transaction().await.map_err(pg("partition"))?;
            // Collectors creating the same partition at once would otherwise collide in
            // the catalog even with IF NOT EXISTS.
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
                .await
                .map_err(pg("taking the partition lock"))?;
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF cdrs FOR VALUES FROM ({lo}) TO ({hi})",
                partition_name(day)
            ))
            .await
            .map_err(pg("creating a partition"))?;
            tx.commit().await.map_err(pg("creating a partition"))?;
            self.partitions
                .lock()
                .map_err(|_| StoreError::Poisoned)?
                .insert(day);
        }
        Ok(())
    }

    fn forget_partitions(&self) {
        if let Ok(mut known) = self.partitions.lock() {
            known.clear();
        }
    }

    /// The newest rate table of `tenant`, read in the caller's transaction.
    async fn newest_rates(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        tenant: &str,
    ) -> Result<Option<std::sync::Arc<crate::billing::RateTable>>, StoreError> {
        let row = tx
            .query_opt(
                "SELECT version, csv FROM rate_tables WHERE tenant = $1
                 ORDER BY imported_ms DESC, id DESC LIMIT 1",
                &[&tenant],
            )
            .await
            .map_err(pg("reading the rate table"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let version: String = col(&row, 0)?;
        self.rates.table(Some(&version), || col(&row, 1))
    }

    async fn ingest_tx(
        &self,
        agent_id: &str,
        tenant: &str,
        batch: &[CdrRecord],
    ) -> Result<IngestOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin"))?;
        tx.execute(
            "INSERT INTO ingest_cursor (agent_id, highest_seq, tenant) VALUES ($1, 0, $2)
             ON CONFLICT (agent_id) DO NOTHING",
            &[&agent_id, &tenant],
        )
        .await
        .map_err(pg("creating cursor"))?;
        // Serialises every collector ingesting for this agent until commit.
        let row = tx
            .query_one(
                "SELECT highest_seq, tenant FROM ingest_cursor WHERE agent_id = $1 FOR UPDATE",
                &[&agent_id],
            )
            .await
            .map_err(pg("reading cursor"))?;
        let cursor: i64 = col(&row, 0)?;
        let bound: String = col(&row, 1)?;
        if bound != tenant {
            return Err(StoreError::AgentTenant {
                agent_id: agent_id.to_owned(),
            });
        }
        let mut duplicates = 0u64;
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
            let mut cdr = cdr.clone();
            if cdr.agent_id.is_empty() {
                cdr.agent_id = agent_id.to_string();
            }
            fresh.push((seq, cdr));
        }
        // What is stored of their calls, then which records supersede which.
        let mut ids: Vec<String> = fresh
            .iter()
            .map(|(_, c)| c.cdr_id.clone())
            .filter(|id| !id.is_empty())
            .collect();
        ids.sort();
        ids.dedup();
        let mut prior: HashMap<String, StoredCall> = HashMap::new();
        if !ids.is_empty() {
            let rows = tx
                .query(
                    "SELECT cdr_id, interim, cdr FROM cdrs
                     WHERE agent_id = $1 AND cdr_id = ANY($2)",
                    &[&agent_id, &ids],
                )
                .await
                .map_err(pg("looking up calls"))?;
            for r in &rows {
                let id: String = col(r, 0)?;
                prior
                    .entry(id)
                    .or_default()
                    .add(col(r, 1)?, col::<&[u8]>(r, 2)?)?;
            }
        }
        let refs: Vec<&Cdr> = fresh.iter().map(|(_, c)| c).collect();
        let plan = supersede(&refs, &prior);
        let table = self.newest_rates(&tx, tenant).await?;
        if !plan.delete_interims.is_empty() {
            tx.execute(
                "DELETE FROM cdrs WHERE agent_id = $1 AND cdr_id = ANY($2) AND interim",
                &[&agent_id, &plan.delete_interims],
            )
            .await
            .map_err(pg("deleting superseded interim cdrs"))?;
        }
        let mut cols = Columns::default();
        for ((seq, cdr), keep) in fresh.iter().zip(&plan.keep) {
            if *keep {
                cols.push(*seq, cdr, rate_cdr(table.as_deref(), cdr))?;
            }
        }
        let highest = fresh.last().map_or(cursor, |(s, _)| *s).max(cursor);
        let stored = if cols.seq.is_empty() {
            0
        } else {
            tx.execute(
                "INSERT INTO cdrs (agent_id, sequence, cdr_id, call_id, caller_user,
                    caller_domain, caller_display, callee_user, callee_domain, callee_display,
                    start_time_ms, end_time_ms, duration_ms, billable_ms, disposition,
                    final_code, max_loss_pct, min_mos, interim, codec, cdr, correlation_id,
                    destination_prefix, rating, destination, rated_prefix, billable_secs, cost,
                    currency, rate_version, tenant)
                 SELECT $1, *, $31 FROM UNNEST($2::bigint[], $3::text[], $4::text[],
                    $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                    $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[], $15::int[],
                    $16::bigint[], $17::float8[], $18::float8[], $19::bool[], $20::text[],
                    $21::bytea[], $22::text[], $23::text[], $24::bigint[], $25::text[],
                    $26::text[], $27::bigint[], $28::bigint[], $29::text[], $30::text[])
                 ON CONFLICT DO NOTHING",
                &[
                    &agent_id,
                    &cols.seq,
                    &cols.cdr_id,
                    &cols.call_id,
                    &cols.caller_user,
                    &cols.caller_domain,
                    &cols.caller_display,
                    &cols.callee_user,
                    &cols.callee_domain,
                    &cols.callee_display,
                    &cols.start,
                    &cols.end,
                    &cols.duration,
                    &cols.billable,
                    &cols.disposition,
                    &cols.final_code,
                    &cols.max_loss,
                    &cols.min_mos,
                    &cols.interim,
                    &cols.codec,
                    &cols.blob,
                    &cols.correlation_id,
                    &cols.destination_prefix,
                    &cols.rating,
                    &cols.destination,
                    &cols.rated_prefix,
                    &cols.billable_secs,
                    &cols.cost,
                    &cols.currency,
                    &cols.rate_version,
                    &tenant,
                ],
            )
            .await
            .map_err(pg("inserting cdrs"))?
        };
        duplicates += cols.seq.len() as u64 - stored;
        tx.execute(
            "UPDATE ingest_cursor SET highest_seq = $2 WHERE agent_id = $1",
            &[&agent_id, &highest],
        )
        .await
        .map_err(pg("advancing cursor"))?;
        tx.commit().await.map_err(pg("commit"))?;
        Ok(IngestOutcome {
            highest_sequence: highest.unsigned_abs(),
            stored,
            duplicates,
            unrated: cols.unrated,
            superseded: plan.dropped(),
        })
    }

    /// Retention of every tenant (`tenant` `None`: whole days go with their partition) or of
    /// one tenant (its rows only).
    async fn retain_tx(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
        tenant: Option<&str>,
    ) -> Result<Option<RetentionRun>, StoreError> {
        let cutoff = int(cutoff_ms)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin"))?;
        let row = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK])
            .await
            .map_err(pg("taking the retention lock"))?;
        let locked: bool = col(&row, 0)?;
        if !locked {
            return Ok(None);
        }
        // The collector-wide run takes whole expired partitions; one tenant's run deletes
        // its rows only. Either way inserts, deletes and erasures in what is cut are held off
        // until commit, so every row deleted below is one that was folded.
        let partitions = match tenant {
            None => expired_partitions(&tx, cutoff_ms).await?,
            Some(_) => Vec::new(),
        };
        let locked: Vec<&str> = match tenant {
            None => partitions.iter().map(|(n, _)| n.as_str()).collect(),
            Some(_) => vec!["cdrs"],
        };
        if !locked.is_empty() {
            tx.batch_execute(&format!(
                "LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
                locked.join(", ")
            ))
            .await
            .map_err(pg("locking expired cdrs"))?;
        }
        let mut folder = Folder::default();
        {
            let rows = tx
                .query_raw(
                    "SELECT agent_id, start_time_ms, disposition, codec, duration_ms,
                        billable_ms, min_mos, max_loss_pct, interim
                     FROM cdrs WHERE start_time_ms < $1 AND ($2::TEXT IS NULL OR tenant = $2)",
                    [&cutoff as &(dyn ToSql + Sync), &tenant],
                )
                .await
                .map_err(pg("reading expired cdrs"))?;
            tokio::pin!(rows);
            while let Some(r) = rows.next().await {
                let r = r.map_err(pg("reading expired cdrs"))?;
                folder.add(FoldRow {
                    agent_id: col(&r, 0)?,
                    start_time_ms: col_u64(&r, 1)?,
                    disposition: col(&r, 2)?,
                    codec: col(&r, 3)?,
                    duration_ms: col_u64(&r, 4)?,
                    billable_ms: col_u64(&r, 5)?,
                    min_mos: col(&r, 6)?,
                    max_loss_pct: col(&r, 7)?,
                    interim: col(&r, 8)?,
                });
            }
        }
        let (deleted, folded) = (folder.seen(), folder.folded());
        upsert_aggregates(&tx, folder.into_rows()).await?;
        tx.execute(
            USAGE_FOLD_SQL
                .replace("?1", "$1")
                .replace("?2", "$2")
                .as_str(),
            &[&cutoff, &tenant],
        )
        .await
        .map_err(pg("folding usage"))?;
        if let Some(t) = tenant {
            tx.execute(
                "DELETE FROM cdrs WHERE start_time_ms < $1 AND tenant = $2",
                &[&cutoff, &t],
            )
            .await
            .map_err(pg("deleting expired cdrs"))?;
        }
        // Whole days below the cutoff go with their partition; the day the cutoff falls in
        // loses only its older rows.
        for (name, day) in &partitions {
            if (day + 1).saturating_mul(DAY_MS) <= cutoff_ms {
                tx.batch_execute(&format!("DROP TABLE {name}"))
                    .await
                    .map_err(pg("dropping a partition"))?;
            } else {
                tx.execute(
                    &format!("DELETE FROM {name} WHERE start_time_ms < $1"),
                    &[&cutoff],
                )
                .await
                .map_err(pg("deleting expired cdrs"))?;
            }
        }
        tx.execute(
            "INSERT INTO retention_runs (time_ms, cutoff_ms, deleted, folded)
             VALUES ($1, $2, $3, $4)",
            &[&int(now_ms)?, &cutoff, &int(deleted)?, &int(folded)?],
        )
        .await
        .map_err(pg("recording retention run"))?;
        tx.commit().await.map_err(pg("commit"))?;
        self.forget_partitions();
        Ok(Some(RetentionRun {
            time_ms: now_ms,
            cutoff_ms,
            deleted,
            folded,
        }))
    }
}

/// The day partitions of `cdrs` that hold rows started before `cutoff_ms`, with their day.
async fn expired_partitions(
    tx: &tokio_postgres::Transaction<'_>,
    cutoff_ms: u64,
) -> Result<Vec<(String, u64)>, StoreError> {
    let rows = tx
        .query(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = 'cdrs'",
            &[],
        )
        .await
        .map_err(pg("listing partitions"))?;
    let mut partitions = Vec::new();
    for r in &rows {
        let name: String = col(r, 0)?;
        if let Some(day) = partition_day(&name) {
            if day.saturating_mul(DAY_MS) < cutoff_ms {
                partitions.push((name, day));
            }
        }
    }
    Ok(partitions)
}

/// A rustls connector trusting the CA certificates in `pem`.
fn tls_connector(pem: &[u8]) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let bad = |why: &str| StoreError::Tls(why.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|_| bad("the database CA file is not PEM certificates"))?;
        roots
            .add(cert)
            .map_err(|e| bad(&format!("unusable database CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("the database CA file holds no certificate"));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

fn pool_error_text(e: deadpool_postgres::PoolError) -> String {
    // The backend error chain says what failed (refused, auth) without the URL.
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A batch laid out column by column for one `INSERT ... SELECT FROM UNNEST(...)`.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    cdr_id: Vec<String>,
    call_id: Vec<String>,
    caller_user: Vec<String>,
    caller_domain: Vec<String>,
    caller_display: Vec<String>,
    callee_user: Vec<String>,
    callee_domain: Vec<String>,
    callee_display: Vec<String>,
    start: Vec<i64>,
    end: Vec<i64>,
    duration: Vec<i64>,
    billable: Vec<i64>,
    disposition: Vec<i32>,
    final_code: Vec<i64>,
    max_loss: Vec<Option<f64>>,
    min_mos: Vec<Option<f64>>,
    interim: Vec<bool>,
    codec: Vec<String>,
    blob: Vec<Vec<u8>>,
    correlation_id: Vec<String>,
    destination_prefix: Vec<String>,
    rating: Vec<i64>,
    destination: Vec<String>,
    rated_prefix: Vec<String>,
    billable_secs: Vec<i64>,
    cost: Vec<i64>,
    currency: Vec<String>,
    rate_version: Vec<String>,
    unrated: u64,
}

impl Columns {
    fn push(&mut self, seq: i64, cdr: &Cdr, rating: CdrRating) -> Result<(), StoreError> {
        // A cost beyond i64::MAX minor units must not make the batch unstorable: saturate.
        if rating.state == RatingState::Unrated {
            self.unrated += 1;
        }
        self.destination_prefix.push(rating.destination_prefix);
        self.rating.push(rating.state.code());
        self.destination.push(rating.destination);
        self.rated_prefix.push(rating.rated_prefix);
        self.billable_secs.push(clamp(rating.billable_secs));
        self.cost.push(clamp(rating.cost));
        self.currency.push(rating.currency);
        self.rate_version.push(rating.rate_version);
        let caller = cdr.caller.clone().unwrap_or_default();
        let callee = cdr.callee.clone().unwrap_or_default();
        self.seq.push(seq);
        self.cdr_id.push(cdr.cdr_id.clone());
        self.call_id.push(cdr.call_id.clone());
        self.caller_user.push(caller.user);
        self.caller_domain.push(caller.domain);
        self.caller_display.push(caller.display);
        self.callee_user.push(callee.user);
        self.callee_domain.push(callee.domain);
        self.callee_display.push(callee.display);
        self.start.push(int(cdr.start_time_ms)?);
        self.end.push(int(cdr.end_time_ms)?);
        self.duration.push(int(cdr.duration_ms)?);
        self.billable.push(int(cdr.billable_ms)?);
        self.disposition.push(cdr.disposition);
        self.final_code.push(i64::from(cdr.final_code));
        self.max_loss.push(max_loss_pct(cdr));
        self.min_mos.push(min_mos(cdr));
        self.interim.push(cdr.interim);
        self.codec.push(codec_of(cdr));
        self.blob.push(cdr.encode_to_vec());
        self.correlation_id.push(cdr.correlation_id.clone());
        Ok(())
    }
}

fn histogram_columns() -> Vec<String> {
    (0..MOS_BUCKETS)
        .map(|i| format!("mos_{i}"))
        .chain((0..LOSS_BUCKETS).map(|i| format!("loss_{i}")))
        .collect()
}

async fn upsert_aggregates(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: impl Iterator<Item = DailyAggregate>,
) -> Result<(), StoreError> {
    let hist = histogram_columns();
    let placeholders: Vec<String> = (8..8 + hist.len()).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = ["calls", "duration_ms", "billable_ms"]
        .iter()
        .map(|c| c.to_string())
        .chain(hist.iter().cloned())
        .map(|c| format!("{c} = cdr_daily_aggregates.{c} + excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO cdr_daily_aggregates (day, agent_id, disposition, codec, calls,
            duration_ms, billable_ms, {})
         VALUES ($1, $2, $3, $4, $5, $6, $7, {})
         ON CONFLICT (day, agent_id, disposition, codec) DO UPDATE SET {}",
        hist.join(", "),
        placeholders.join(", "),
        updates.join(", ")
    );
    let stmt = tx.prepare(&sql).await.map_err(pg("preparing aggregates"))?;
    for a in rows {
        let mut nums: Vec<i64> = vec![
            int(a.key.day)?,
            int(a.calls)?,
            int(a.duration_ms)?,
            int(a.billable_ms)?,
        ];
        for v in a.mos_hist.iter().chain(a.loss_hist.iter()) {
            nums.push(int(*v)?);
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(nums.len() + 3);
        let (day, rest) = nums.split_at(1);
        params.extend(day.iter().map(|v| v as &(dyn ToSql + Sync)));
        params.push(&a.key.agent_id);
        params.push(&a.key.disposition);
        params.push(&a.key.codec);
        params.extend(rest.iter().map(|v| v as &(dyn ToSql + Sync)));
        tx.execute(&stmt, &params)
            .await
            .map_err(pg("writing aggregates"))?;
    }
    Ok(())
}

/// `(col = ANY($n) OR ...)` over `columns`.
fn any_of_clause(columns: &[&str], placeholder: &str) -> String {
    let ors: Vec<String> = columns
        .iter()
        .map(|c| format!("{c} = ANY({placeholder})"))
        .collect();
    format!("({})", ors.join(" OR "))
}

/// A query parameter.
type Param = Box<dyn ToSql + Sync + Send>;

/// The `WHERE ...` clause of a filter (empty when nothing is filtered) and its parameters,
/// numbered from `$1`.
fn filter_clause(f: &CdrFilter) -> Result<(String, Vec<Param>), StoreError> {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    if let Some(t) = &f.tenant {
        params.push(Box::new(t.clone()));
        clauses.push(format!("tenant = ${}", params.len()));
    }
    if let Some(v) = f.start_from_ms {
        params.push(Box::new(int(v)?));
        clauses.push(format!("start_time_ms >= ${}", params.len()));
    }
    if let Some(v) = f.start_to_ms {
        params.push(Box::new(int(v)?));
        clauses.push(format!("start_time_ms < ${}", params.len()));
    }
    if !f.pseudonyms.is_empty() {
        params.push(Box::new(f.pseudonyms.clone()));
        let mut columns = PARTY_COLUMNS.to_vec();
        columns.push("call_id");
        clauses.push(any_of_clause(&columns, &format!("${}", params.len())));
    }
    if let Some(d) = f.disposition {
        params.push(Box::new(d as i32));
        clauses.push(format!("disposition = ${}", params.len()));
    }
    if let Some(a) = &f.agent_id {
        params.push(Box::new(a.clone()));
        clauses.push(format!("agent_id = ${}", params.len()));
    }
    if let Some(id) = &f.cdr_id {
        params.push(Box::new(id.clone()));
        clauses.push(format!("cdr_id = ${}", params.len()));
    }
    if let Some(v) = f.min_loss_pct {
        params.push(Box::new(v));
        clauses.push(format!("max_loss_pct >= ${}", params.len()));
    }
    if let Some(v) = f.max_mos {
        params.push(Box::new(v));
        clauses.push(format!("min_mos <= ${}", params.len()));
    }
    let wheres = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    Ok((wheres, params))
}

impl PgStore {
    /// Runs `sql` (its first column the stored CDR) and decodes the rows; a read of one
    /// `tenant` runs as [`TENANT_ROLE`] with that tenant set, so row-level security hides
    /// every other tenant's rows whatever the query says.
    async fn select_cdrs(
        &self,
        sql: &str,
        params: &[Param],
        tenant: Option<&str>,
    ) -> Result<Vec<Cdr>, StoreError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let mut client = self.client().await?;
        let rows = match tenant.filter(|_| self.row_security) {
            // Every tenant (the provider), or no tenant role: one statement.
            None => client.query(sql, &refs).await.map_err(pg("querying"))?,
            Some(t) => {
                let tx = client.transaction().await.map_err(pg("begin"))?;
                tx.batch_execute(&format!("SET LOCAL ROLE {TENANT_ROLE}"))
                    .await
                    .map_err(pg("taking the tenant role"))?;
                tx.execute("SELECT set_config('collector.tenant', $1, true)", &[&t])
                    .await
                    .map_err(pg("setting the tenant"))?;
                let rows = tx.query(sql, &refs).await.map_err(pg("querying"))?;
                // The role and the setting end with the transaction.
                tx.commit().await.map_err(pg("commit"))?;
                rows
            }
        };
        rows.iter()
            .map(|r| Cdr::decode(col::<&[u8]>(r, 0)?).map_err(StoreError::Decode))
            .collect()
    }
}

fn insert_audit_sql() -> &'static str {
    "INSERT INTO audit_log (time_ms, action, actor, subjects, reference, affected, tenant)
     VALUES ($1, $2, $3, $4, $5, $6, $7)"
}

/// Appends `e` to the audit log through `c` (a connection or a transaction).
async fn insert_audit(
    c: &impl tokio_postgres::GenericClient,
    e: &AuditEntry,
) -> Result<(), StoreError> {
    c.execute(
        insert_audit_sql(),
        &[
            &int(e.time_ms)?,
            &e.action.as_str(),
            &e.actor,
            &e.subjects,
            &e.reference,
            &int(e.affected)?,
            &e.tenant.as_deref().unwrap_or(ALL_TENANTS),
        ],
    )
    .await
    .map_err(pg("writing audit log"))?;
    Ok(())
}

#[tonic::async_trait]
impl Store for PgStore {
    async fn ingest_into(
        &self,
        agent_id: &str,
        tenant: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError> {
        validate_batch(&batch)?;
        let mut days: Vec<u64> = batch
            .iter()
            .filter_map(|r| r.cdr.as_ref())
            .map(|c| day_of(c.start_time_ms))
            .collect();
        days.sort_unstable();
        days.dedup();
        self.ensure_partitions(&days).await?;
        let out = self.ingest_tx(agent_id, tenant, &batch).await;
        if out.is_err() {
            // A partition may have been dropped by retention meanwhile: look again next time
            // (the agent resends the batch).
            self.forget_partitions();
        }
        out
    }

    async fn cursor(&self, agent_id: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT highest_seq FROM ingest_cursor WHERE agent_id = $1",
                &[&agent_id],
            )
            .await
            .map_err(pg("reading cursor"))?;
        row.map_or(Ok(0), |r| col_u64(&r, 0))
    }

    async fn query(&self, f: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        let (wheres, mut params) = filter_clause(&f)?;
        params.push(Box::new(i64::from(f.limit)));
        let sql = format!(
            "SELECT cdr FROM cdrs {wheres}
             ORDER BY start_time_ms DESC, agent_id DESC, sequence DESC LIMIT ${}",
            params.len()
        );
        self.select_cdrs(&sql, &params, f.tenant.as_deref()).await
    }

    async fn query_call_legs(&self, f: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        // As the SQLite backend: a call is a correlation id, or one row (agent, sequence,
        // start) when the id is empty; NULLs group together, so every non-empty id is one
        // group.
        let (wheres, mut params) = filter_clause(&f)?;
        params.push(Box::new(i64::from(f.limit)));
        let limit = params.len();
        params.push(Box::new(i64::from(MAX_CALL_LEGS)));
        let max_legs = params.len();
        // Siblings come from the caller's tenant only: correlation ids are made by agents,
        // and two customers' agents may make the same one.
        let same_tenant = match &f.tenant {
            Some(t) => {
                params.push(Box::new(t.clone()));
                format!("AND c.tenant = ${}", params.len())
            }
            None => String::new(),
        };
        let sql = format!(
            "WITH calls AS (
                SELECT correlation_id AS cid,
                    CASE WHEN correlation_id = '' THEN agent_id END AS lone_agent,
                    CASE WHEN correlation_id = '' THEN sequence END AS lone_seq,
                    CASE WHEN correlation_id = '' THEN start_time_ms END AS lone_start,
                    MAX(start_time_ms) AS newest
                FROM cdrs {wheres}
                GROUP BY 1, 2, 3, 4
                ORDER BY newest DESC, 2 DESC, 3 DESC, 1 DESC LIMIT ${limit}
            ),
            siblings AS (
                SELECT c.cdr, ROW_NUMBER() OVER (
                    PARTITION BY c.correlation_id
                    ORDER BY c.start_time_ms, c.agent_id, c.sequence) AS n
                FROM calls JOIN cdrs c ON c.correlation_id = calls.cid
                WHERE calls.lone_agent IS NULL {same_tenant}
            )
            SELECT cdr FROM siblings WHERE n <= ${max_legs}
            UNION ALL
            SELECT c.cdr FROM calls JOIN cdrs c ON c.agent_id = calls.lone_agent
                AND c.sequence = calls.lone_seq AND c.start_time_ms = calls.lone_start"
        );
        self.select_cdrs(&sql, &params, f.tenant.as_deref()).await
    }

    async fn erase(&self, e: Erasure) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin"))?;
        let deleted = tx
            .execute(
                &format!(
                    "DELETE FROM cdrs WHERE {} AND ($2::TEXT IS NULL OR tenant = $2)",
                    any_of_clause(&PARTY_COLUMNS, "$1")
                ),
                &[&e.pseudonyms, &e.tenant],
            )
            .await
            .map_err(pg("erasing"))?;
        tx.execute(
            insert_audit_sql(),
            &[
                &int(e.now_ms)?,
                &AuditAction::Erase.as_str(),
                &e.actor,
                e.audited.as_ref().unwrap_or(&e.pseudonyms),
                &e.reference,
                &int(deleted)?,
                &e.tenant.as_deref().unwrap_or(ALL_TENANTS),
            ],
        )
        .await
        .map_err(pg("writing audit log"))?;
        tx.commit().await.map_err(pg("commit"))?;
        Ok(deleted)
    }

    async fn audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        let client = self.client().await?;
        insert_audit(&**client, &e).await
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT time_ms, action, actor, subjects, reference, affected, tenant
                 FROM audit_log ORDER BY id DESC LIMIT $1",
                &[&i64::from(limit)],
            )
            .await
            .map_err(pg("reading audit log"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let Some(action) = AuditAction::from_name(col(r, 1)?) else {
                continue;
            };
            out.push(AuditEntry {
                time_ms: col_u64(r, 0)?,
                action,
                actor: col(r, 2)?,
                subjects: col(r, 3)?,
                reference: col(r, 4)?,
                affected: col_u64(r, 5)?,
                tenant: Some(col::<String>(r, 6)?).filter(|t| t != ALL_TENANTS),
            });
        }
        Ok(out)
    }

    async fn retain(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        self.retain_tx(cutoff_ms, now_ms, None).await
    }

    async fn retain_tenant(
        &self,
        tenant: &str,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        self.retain_tx(cutoff_ms, now_ms, Some(tenant)).await
    }

    async fn retention_state(&self) -> Result<RetentionState, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT MIN(start_time_ms) FROM cdrs", &[])
            .await
            .map_err(pg("reading oldest cdr"))?;
        let oldest: Option<i64> = col(&row, 0)?;
        let last_run = client
            .query_opt(
                "SELECT time_ms, cutoff_ms, deleted, folded FROM retention_runs
                 ORDER BY id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(pg("reading retention runs"))?
            .map(|r| -> Result<RetentionRun, StoreError> {
                Ok(RetentionRun {
                    time_ms: col_u64(&r, 0)?,
                    cutoff_ms: col_u64(&r, 1)?,
                    deleted: col_u64(&r, 2)?,
                    folded: col_u64(&r, 3)?,
                })
            })
            .transpose()?;
        Ok(RetentionState {
            oldest_start_time_ms: oldest.map(i64::unsigned_abs),
            last_run,
        })
    }

    async fn aggregates(
        &self,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<DailyAggregate>, StoreError> {
        let hist = histogram_columns();
        let client = self.client().await?;
        let from = int(from_day.min(i64::MAX as u64))?;
        let to = int(to_day.min(i64::MAX as u64))?;
        let rows = client
            .query(
                &format!(
                    "SELECT day, agent_id, disposition, codec, calls, duration_ms, billable_ms, {}
                     FROM cdr_daily_aggregates WHERE day >= $1 AND day < $2
                     ORDER BY day, agent_id, disposition, codec",
                    hist.join(", ")
                ),
                &[&from, &to],
            )
            .await
            .map_err(pg("reading aggregates"))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut a = DailyAggregate::new(AggregateKey {
                day: col_u64(r, 0)?,
                agent_id: col(r, 1)?,
                disposition: col(r, 2)?,
                codec: col(r, 3)?,
            });
            a.calls = col_u64(r, 4)?;
            a.duration_ms = col_u64(r, 5)?;
            a.billable_ms = col_u64(r, 6)?;
            for (i, slot) in a
                .mos_hist
                .iter_mut()
                .chain(a.loss_hist.iter_mut())
                .enumerate()
            {
                *slot = col_u64(r, 7 + i)?;
            }
            out.push(a);
        }
        Ok(out)
    }

    async fn store_rates(
        &self,
        tenant: &str,
        version: &str,
        csv: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let now = int(now_ms)?;
        let inserted = client
            .execute(
                "INSERT INTO rate_tables (tenant, version, csv, imported_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, version) DO NOTHING",
                &[&tenant, &version, &csv, &now],
            )
            .await
            .map_err(pg("storing the rate table"))?;
        if inserted == 0 {
            // Re-importing an older version makes it the newest again.
            client
                .execute(
                    "UPDATE rate_tables SET imported_ms = $3 WHERE tenant = $1 AND version = $2",
                    &[&tenant, &version, &now],
                )
                .await
                .map_err(pg("storing the rate table"))?;
        }
        Ok(inserted == 1)
    }

    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        let client = self.client().await?;
        let sql = (1..=5).fold(USAGE_SQL.to_owned(), |q, i| {
            q.replace(&format!("?{i}"), &format!("${i}"))
        });
        let (from_day, to_day) = usage_days(from_ms, to_ms);
        let rows = client
            .query(
                sql.as_str(),
                &[
                    &tenant,
                    &int(from_ms)?,
                    &int(to_ms)?,
                    &int(from_day)?,
                    &int(to_day)?,
                ],
            )
            .await
            .map_err(pg("usage query"))?;
        let u = |v: Option<i64>| v.map_or(0, i64::unsigned_abs);
        rows.iter()
            .map(|r| {
                Ok(UsageGroup {
                    destination: col(r, 0)?,
                    currency: col(r, 1)?,
                    rating: col(r, 2)?,
                    destination_prefix: col(r, 3)?,
                    answered: col(r, 4)?,
                    calls: col_u64(r, 5)?,
                    answered_ms: u(col(r, 6)?),
                    billable_secs: u(col(r, 7)?),
                    cost: u(col(r, 8)?),
                })
            })
            .collect()
    }

    async fn rerate(
        &self,
        tenant: &str,
        since_ms: u64,
        mut audit: AuditEntry,
    ) -> Result<RerateOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin"))?;
        let table = self.newest_rates(&tx, tenant).await?;
        let mut out = RerateOutcome {
            version: table.as_ref().map(|t| t.version().to_owned()),
            ..Default::default()
        };
        let rows = tx
            .query(
                &format!(
                    "SELECT agent_id, sequence, {RERATE_COLUMNS} FROM cdrs
                     WHERE tenant = $1 AND start_time_ms >= $2 AND NOT interim FOR UPDATE"
                ),
                &[&tenant, &int(since_ms)?],
            )
            .await
            .map_err(pg("reading cdrs to re-rate"))?;
        let set = (1..=7).fold(RATING_SET.to_owned(), |q, i| {
            q.replace(&format!("?{i}"), &format!("${i}"))
        });
        let update = format!("UPDATE cdrs SET {set} WHERE agent_id = $8 AND sequence = $9");
        for r in &rows {
            let row = RatedRow {
                destination_prefix: col(r, 2)?,
                disposition: col(r, 3)?,
                billable_ms: col_u64(r, 4)?,
                start_time_ms: col_u64(r, 5)?,
                current: CdrRating {
                    state: RatingState::from_code(col(r, 6)?),
                    destination_prefix: col(r, 2)?,
                    destination: col(r, 7)?,
                    rated_prefix: col(r, 8)?,
                    billable_secs: col_u64(r, 9)?,
                    cost: col_u64(r, 10)?,
                    currency: col(r, 11)?,
                    rate_version: col(r, 12)?,
                },
            };
            out.cdrs += 1;
            let new = row.rerated(table.as_deref());
            let state = new.as_ref().map_or(row.current.state, |n| n.state);
            if state == RatingState::Unrated {
                out.unrated += 1;
            }
            let Some(n) = new else { continue };
            let agent: String = col(r, 0)?;
            let sequence: i64 = col(r, 1)?;
            tx.execute(
                update.as_str(),
                &[
                    &n.state.code(),
                    &n.destination,
                    &n.rated_prefix,
                    &clamp(n.billable_secs),
                    &clamp(n.cost),
                    &n.currency,
                    &n.rate_version,
                    &agent,
                    &sequence,
                ],
            )
            .await
            .map_err(pg("re-rating"))?;
            out.changed += 1;
        }
        audit.affected = out.changed;
        insert_audit(&*tx, &audit).await?;
        tx.commit().await.map_err(pg("commit"))?;
        Ok(out)
    }

    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT COUNT(*) FROM cdrs WHERE $1::TEXT IS NULL OR tenant = $1",
                &[&tenant],
            )
            .await
            .map_err(pg("counting cdrs"))?;
        let cdrs = col_u64(&row, 0)?;
        let agents = client
            .query(
                "SELECT agent_id, highest_seq FROM ingest_cursor
                 WHERE $1::TEXT IS NULL OR tenant = $1 ORDER BY agent_id",
                &[&tenant],
            )
            .await
            .map_err(pg("reading cursors"))?
            .iter()
            .map(|r| {
                Ok(AgentCursor {
                    agent_id: col(r, 0)?,
                    highest_sequence: col_u64(r, 1)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(StoreStats {
            cdrs_stored: cdrs,
            agents,
        })
    }

    async fn rewrite(&self, tenant: &str, f: RowRewrite) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin"))?;
        let sets: Vec<String> = REWRITE_COLUMNS
            .iter()
            .zip(1..)
            .map(|(c, i)| format!("{c} = ${i}"))
            .collect();
        let update = format!(
            "UPDATE cdrs SET {}, cdr = $9
             WHERE agent_id = $10 AND sequence = $11 AND start_time_ms = $12",
            sets.join(", ")
        );
        let mut last = (String::new(), i64::MIN, i64::MIN);
        let mut changed = 0u64;
        loop {
            let rows = tx
                .query(
                    "SELECT agent_id, sequence, start_time_ms, cdr FROM cdrs
                     WHERE tenant = $1 AND (agent_id, sequence, start_time_ms) > ($2, $3, $4)
                     ORDER BY agent_id, sequence, start_time_ms LIMIT $5",
                    &[&tenant, &last.0, &last.1, &last.2, &REWRITE_CHUNK],
                )
                .await
                .map_err(pg("reading cdrs to rewrite"))?;
            if rows.is_empty() {
                break;
            }
            for r in &rows {
                let key: (String, i64, i64) = (col(r, 0)?, col(r, 1)?, col(r, 2)?);
                let stored = Cdr::decode(col::<&[u8]>(r, 3)?).map_err(StoreError::Decode)?;
                if let Some(new) = f(&stored)? {
                    let v = rewrite_values(&new);
                    let blob = new.encode_to_vec();
                    let mut params: Vec<&(dyn ToSql + Sync)> =
                        v.iter().map(|s| s as &(dyn ToSql + Sync)).collect();
                    params.extend([&blob as &(dyn ToSql + Sync), &key.0, &key.1, &key.2]);
                    tx.execute(update.as_str(), &params)
                        .await
                        .map_err(pg("rewriting cdrs"))?;
                    changed += 1;
                }
                last = key;
            }
        }
        tx.commit().await.map_err(pg("commit"))?;
        Ok(changed)
    }

    async fn delete_tenant(&self, tenant: &str, mut audit: AuditEntry) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg("begin"))?;
        let deleted = tx
            .execute("DELETE FROM cdrs WHERE tenant = $1", &[&tenant])
            .await
            .map_err(pg("deleting a tenant's cdrs"))?;
        for sql in TENANT_DELETES {
            tx.execute(sql.replace("?1", "$1").as_str(), &[&tenant])
                .await
                .map_err(pg("deleting a tenant's rows"))?;
        }
        audit.affected = deleted;
        insert_audit(&*tx, &audit).await?;
        tx.commit().await.map_err(pg("commit"))?;
        Ok(deleted)
    }

    async fn tenants(&self) -> Result<Vec<TenantStats>, StoreError> {
        let client = self.client().await?;
        client
            .query(TENANTS_SQL, &[])
            .await
            .map_err(pg("listing tenants"))?
            .iter()
            .map(|r| {
                Ok(TenantStats {
                    tenant: col(r, 0)?,
                    cdrs_stored: col_u64(r, 1)?,
                    agents: u32::try_from(col_u64(r, 2)?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip_and_reject_others() {
        assert_eq!(partition_name(20_000), "cdrs_d20000");
        assert_eq!(partition_day("cdrs_d20000"), Some(20_000));
        assert_eq!(partition_day("cdrs_default"), None);
        assert_eq!(partition_day("audit_log"), None);
    }

    #[test]
    fn erase_clause_covers_every_party_field() {
        let c = any_of_clause(&PARTY_COLUMNS, "$1");
        for col in PARTY_COLUMNS {
            assert!(c.contains(&format!("{col} = ANY($1)")), "{c}");
        }
        assert_eq!(c.matches(" OR ").count(), 5);
    }
}
