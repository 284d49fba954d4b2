//! The retention job: deletes CDRs older than the configured period (default 90 days, the
//! storage limitation of GDPR Art. 5(1)(e) as declared in the data inventory) after folding
//! them into anonymous daily aggregates ([`super::store::DailyAggregate`]).
//!
//! The cutoff is `now - days × 24 h`, to the millisecond: a CDR is deleted when it started
//! strictly before it. The job runs once at start-up and then at a fixed interval; several
//! collectors sharing a PostgreSQL database may all run it, the store lets one at a time
//! through.
use std::{
    collections::BTreeMap,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use super::store::{RetentionRun, Store, StoreError, DAY_MS};

/// Default retention period, in days.
pub const DEFAULT_DAYS: u32 = crate::privacy::policy::DEFAULT_RETENTION_DAYS;
/// Default interval between runs.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// How long CDRs are kept and how often the job runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// CDRs older than this many days are deleted; 0 keeps them forever.
    pub days: u32,
    /// Time between runs.
    pub interval: Duration,
    /// Tenants whose CDRs are kept fewer days than `days` ([`RetentionPolicy::validate`]).
    pub tenants: BTreeMap<String, u32>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            days: DEFAULT_DAYS,
            interval: DEFAULT_INTERVAL,
            tenants: BTreeMap::new(),
        }
    }
}

/// Why a retention policy cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A tenant's period is not shorter than the collector's: the collector's own run
    /// deletes every tenant's CDRs at its period (PostgreSQL drops whole days).
    #[error("tenant {tenant}: its retention ({days} days) must be 1 day or more and shorter than the collector's ({global} days)")]
    TenantLonger {
        /// The tenant.
        tenant: String,
        /// Its period.
        days: u32,
        /// The collector's period (0: forever).
        global: u32,
    },
}

impl RetentionPolicy {
    /// Checks every tenant's period: at least one day, and shorter than `days` unless the
    /// collector keeps CDRs forever.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (tenant, &days) in &self.tenants {
            if days == 0 || (self.days > 0 && days >= self.days) {
                return Err(PolicyError::TenantLonger {
                    tenant: tenant.clone(),
                    days,
                    global: self.days,
                });
            }
        }
        Ok(())
    }

    /// The period of `tenant`'s CDRs, in days (0: forever).
    pub fn days_of(&self, tenant: &str) -> u32 {
        self.tenants.get(tenant).copied().unwrap_or(self.days)
    }
}

/// The cutoff at `now_ms` (`None` when retention is off).
pub fn cutoff_ms(now_ms: u64, days: u32) -> Option<u64> {
    (days > 0).then(|| now_ms.saturating_sub(u64::from(days) * DAY_MS))
}

/// The current time, Unix ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One run at `now_ms`: the collector's period over every tenant, then each tenant with a
/// shorter one. The collector's run (`Ok(None)` when it is off or another collector is
/// running it).
pub async fn run_once(
    store: &dyn Store,
    policy: &RetentionPolicy,
    now_ms: u64,
) -> Result<Option<RetentionRun>, StoreError> {
    let run = match cutoff_ms(now_ms, policy.days) {
        Some(cutoff) => store.retain(cutoff, now_ms).await?,
        None => None,
    };
    for (tenant, &days) in &policy.tenants {
        if let Some(cutoff) = cutoff_ms(now_ms, days) {
            if let Some(r) = store.retain_tenant(tenant, cutoff, now_ms).await? {
                tracing::info!(
                    tenant,
                    deleted = r.deleted,
                    folded = r.folded,
                    "tenant retention run"
                );
            }
        }
    }
    Ok(run)
}

/// Runs the job until `shutdown` completes. Failures are logged and retried at the next
/// interval: a database hiccup must not stop retention for good.
pub async fn run_job<F: Future<Output = ()>>(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
    shutdown: F,
) {
    if policy.days == 0 && policy.tenants.is_empty() {
        tracing::info!("retention is off: CDRs are kept until erased");
        return;
    }
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(policy.interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        match run_once(store.as_ref(), &policy, now_ms()).await {
            Ok(Some(run)) => tracing::info!(
                deleted = run.deleted,
                folded = run.folded,
                cutoff_ms = run.cutoff_ms,
                "retention run"
            ),
            Ok(None) => tracing::debug!("retention is running on another collector"),
            Err(e) => tracing::error!(error = %e, "retention run failed; retrying later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_exactly_days_before_now() {
        assert_eq!(cutoff_ms(100 * DAY_MS + 7, 90), Some(10 * DAY_MS + 7));
        assert_eq!(cutoff_ms(5, 90), Some(0));
        assert_eq!(cutoff_ms(100 * DAY_MS, 0), None);
    }
}
