//! `collector.v1.Watch` on the collector: the relay. Agents stream their live events in
//! over `Watch.Publish`; the relay hub ([`crate::watch::Hub`]) tags each with its agent,
//! keeps a bounded history and serves every agent's events to `Watch.Flows` clients with
//! the same filters, history and field masks as an agent (see [`crate::watch`]).
use std::sync::Arc;

use crate::{
    metrics::Metrics,
    privacy::NumberKeys,
    watch::{Hub, HubConfig, WatchService},
};

/// How the collector's relay is set up.
#[derive(Debug, Clone, Default)]
pub struct RelayOptions {
    /// Sizes of the relay hub.
    pub hub: HubConfig,
    /// Resolves `number` filters under the caller's tenant's key ring (without one they
    /// are refused).
    pub numbers: NumberKeys,
    /// Metrics to report to.
    pub metrics: Option<Arc<Metrics>>,
}

/// The collector's Watch service over a new relay hub.
pub fn relay(options: RelayOptions) -> WatchService {
    let hub = match options.metrics {
        Some(m) => Hub::with_metrics(options.hub, m),
        None => Hub::new(options.hub),
    };
    WatchService::collector(Arc::new(hub)).with_number_keys(options.numbers)
}
