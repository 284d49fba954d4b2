//! `collector server`: runs the central collector (see [`crate::server`]) until SIGINT or
//! SIGTERM.
use anyhow::Context as _;

use super::ServerArgs;

/// Runs the verb.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = crate::server::bind(&args.listen, args.insecure).await?;
        let store = crate::server::store::open(&args.db).context("opening the CDR store")?;
        tracing::info!(addr = %listener.local_addr()?, "collector listening");
        crate::server::serve(listener, store, shutdown_signal()).await?;
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
