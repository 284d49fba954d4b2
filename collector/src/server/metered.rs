//! A [`Store`] wrapper that reports to [`Metrics`]: the latency of every storage operation
//! and the ingest rate (batches, newly stored CDRs), without touching the services or the
//! backends. The collector wraps its store in it when metrics are served.
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use collector_proto::v1::{Cdr, CdrRecord};

use super::store::{
    AuditEntry, CdrFilter, DailyAggregate, Erasure, IngestOutcome, RetentionRun, RetentionState,
    RowRewrite, Store, StoreError, StoreStats, TenantStats,
};
use crate::metrics::{Metrics, StorageOp};

/// `inner`, measured.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    pub fn wrap(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Arc<dyn Store> {
        Arc::new(MeteredStore { inner, metrics })
    }

    fn took(&self, op: StorageOp, start: Instant) -> Duration {
        let d = start.elapsed();
        self.metrics.storage_latency(op, d);
        d
    }
}

#[tonic::async_trait]
impl Store for MeteredStore {
    async fn ingest_into(
        &self,
        agent_id: &str,
        tenant: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError> {
        let start = Instant::now();
        let out = self.inner.ingest_into(agent_id, tenant, batch).await;
        self.took(StorageOp::Ingest, start);
        if let Ok(o) = &out {
            self.metrics.ingested(o.stored);
            self.metrics.unrated(o.unrated);
        }
        out
    }

    async fn cursor(&self, agent_id: &str) -> Result<u64, StoreError> {
        self.inner.cursor(agent_id).await
    }

    async fn query(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        let start = Instant::now();
        let out = self.inner.query(filter).await;
        self.took(StorageOp::Query, start);
        out
    }

    async fn query_call_legs(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        // A read like `query`: the same latency series.
        let start = Instant::now();
        let out = self.inner.query_call_legs(filter).await;
        self.took(StorageOp::Query, start);
        out
    }

    async fn erase(&self, erasure: Erasure) -> Result<u64, StoreError> {
        let start = Instant::now();
        let out = self.inner.erase(erasure).await;
        self.took(StorageOp::Erase, start);
        out
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.inner.audit(entry).await
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_log(limit).await
    }

    async fn retain(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        self.inner.retain(cutoff_ms, now_ms).await
    }

    async fn retain_tenant(
        &self,
        tenant: &str,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        self.inner.retain_tenant(tenant, cutoff_ms, now_ms).await
    }

    async fn retention_state(&self) -> Result<RetentionState, StoreError> {
        self.inner.retention_state().await
    }

    async fn aggregates(
        &self,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<DailyAggregate>, StoreError> {
        self.inner.aggregates(from_day, to_day).await
    }

    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats, StoreError> {
        self.inner.stats(tenant).await
    }

    async fn tenants(&self) -> Result<Vec<TenantStats>, StoreError> {
        self.inner.tenants().await
    }

    async fn delete_tenant(&self, tenant: &str, audit: AuditEntry) -> Result<u64, StoreError> {
        self.inner.delete_tenant(tenant, audit).await
    }

    async fn rotate_key(&self, tenant: &str) -> Result<u32, StoreError> {
        self.inner.rotate_key(tenant).await
    }

    async fn rewrite(&self, tenant: &str, f: RowRewrite) -> Result<u64, StoreError> {
        self.inner.rewrite(tenant, f).await
    }

    async fn reseal(&self, tenant: &str) -> Result<u64, StoreError> {
        self.inner.reseal(tenant).await
    }

    async fn store_rates(
        &self,
        tenant: &str,
        version: &str,
        csv: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.inner.store_rates(tenant, version, csv, now_ms).await
    }

    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<super::store::billing::UsageGroup>, StoreError> {
        let start = Instant::now();
        let out = self.inner.usage(tenant, from_ms, to_ms).await;
        self.took(StorageOp::Query, start);
        out
    }

    async fn rerate(
        &self,
        tenant: &str,
        since_ms: u64,
        audit: super::store::AuditEntry,
    ) -> Result<super::store::billing::RerateOutcome, StoreError> {
        let start = Instant::now();
        let out = self.inner.rerate(tenant, since_ms, audit).await;
        self.took(StorageOp::Rerate, start);
        out
    }
}
