//! `collector server`: runs the central collector (see [`crate::server`]) until SIGINT or
//! SIGTERM, with the live-flow relay and, with `--metrics-listen`, Prometheus metrics.
use std::sync::Arc;

use anyhow::Context as _;

use super::ServerArgs;
use crate::{
    metrics::Metrics,
    privacy::{PrivacyConfig, Pseudonymizer},
    server::{
        metered::MeteredStore,
        watch::{relay, RelayOptions},
    },
    watch::HubConfig,
};

/// Runs the verb.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = crate::server::bind(&args.listen, args.insecure).await?;
        let store = crate::server::store::open(&args.db).context("opening the CDR store")?;
        let pseudonymizer = match &args.privacy_config {
            Some(path) => {
                let config = PrivacyConfig::load_agent_config(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Some(Arc::new(Pseudonymizer::from_config(&config)?))
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let store = MeteredStore::wrap(store, Arc::clone(&metrics));
        let relay = relay(RelayOptions {
            hub: HubConfig {
                history: args.watch_history,
                ..HubConfig::default()
            },
            pseudonymizer,
            metrics: Some(Arc::clone(&metrics)),
        });
        if let Some(addr) = &args.metrics_listen {
            // Metrics carry no identifiers (see `crate::metrics`), so any address may serve
            // them, as Prometheus scrapes from elsewhere.
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics at /metrics");
            tokio::spawn(crate::metrics::serve(
                l,
                Arc::clone(&metrics),
                shutdown_signal(),
            ));
        }
        tracing::info!(addr = %listener.local_addr()?, "collector listening");
        crate::server::serve_with_relay(listener, store, relay, shutdown_signal()).await?;
        tracing::info!("collector stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM (or at once if the handlers cannot be installed, so the
/// server never runs without a way to stop it cleanly).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tracing::error!("cannot install the SIGTERM handler");
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
