//! The retention job: deletes CDRs older than the configured period (default 90 days, the
//! storage limitation of GDPR Art. 5(1)(e) as declared in the data inventory) after folding
//! them into anonymous daily aggregates ([`super::store::DailyAggregate`]).
//!
//! The cutoff is `now - days × 24 h`, to the millisecond: a CDR is deleted when it started
//! strictly before it. The job runs once at start-up and then at a fixed interval; several
//! collectors sharing a PostgreSQL database may all run it, the store lets one at a time
//! through.
use std::{
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// CDRs older than this many days are deleted; 0 keeps them forever.
    pub days: u32,
    /// Time between runs.
    pub interval: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            days: DEFAULT_DAYS,
            interval: DEFAULT_INTERVAL,
        }
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

/// One run at `now_ms`: `Ok(None)` when retention is off or another collector is running it.
pub async fn run_once(
    store: &dyn Store,
    policy: RetentionPolicy,
    now_ms: u64,
) -> Result<Option<RetentionRun>, StoreError> {
    let Some(cutoff) = cutoff_ms(now_ms, policy.days) else {
        return Ok(None);
    };
    store.retain(cutoff, now_ms).await
}

/// Runs the job until `shutdown` completes. Failures are logged and retried at the next
/// interval: a database hiccup must not stop retention for good.
pub async fn run_job<F: Future<Output = ()>>(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
    shutdown: F,
) {
    if policy.days == 0 {
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
        match run_once(store.as_ref(), policy, now_ms()).await {
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
