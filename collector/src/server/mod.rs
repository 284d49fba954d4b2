//! The central collector: gRPC `Ingest` (exactly-once storage keyed on agent id and
//! sequence), `Query` (audited reads), `Admin` (erasure with audit, retention status,
//! statistics), the standard `grpc.health.v1` health service, and `Watch` (the relay of every
//! agent's live flows, [`watch`]), over a [`store::Store`], with the [`retention`] job
//! running beside them; with `--web-listen`, the read-only web console ([`web`]) over the
//! same store reads, tokens and TLS files.
//!
//! Transport security: TLS ([`tls`], rustls) on the listener, optionally mutual; bearer
//! tokens with roles checked on every call ([`auth`], [`token`]).
//! [`crate::rpc::listen::check_listen`] refuses
//! to expose a listener without TLS or without tokens on anything but a loopback address
//! unless the operator explicitly passes `--insecure`: CDRs (even pseudonymized) and the
//! erase API must not cross a network unencrypted or unauthenticated by accident.

pub mod admin;
pub mod auth;
pub mod ingest;
pub mod metered;
pub mod query;
pub mod retention;
pub mod status;
pub mod store;
pub mod tls;
pub mod token;
pub mod watch;
pub mod web;

#[cfg(test)]
pub(crate) mod tests;

use std::{future::Future, path::PathBuf, sync::Arc};

use collector_proto::v1::{
    admin_server::AdminServer, ingest_server::IngestServer, query_server::QueryServer,
    watch_server::WatchServer,
};
use thiserror::Error;
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};

use store::{Store, StoreError};

use crate::rpc::{listen::ListenError, MAX_MESSAGE_BYTES};

/// Errors of the collector server.
#[derive(Debug, Error)]
pub enum ServerError {
    /// A request breaks the API's rules.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The storage failed.
    #[error("storage failed")]
    Store(#[from] StoreError),
    /// The method is not implemented yet.
    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),
    /// The listener was refused or could not be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// A TLS file could not be read.
    #[error("reading TLS file {path}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("grpc transport failed")]
    Transport(#[from] tonic::transport::Error),
}

/// How the collector serves.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Token signing secret; `None` turns authentication off (every call is anonymous).
    pub token_secret: Option<token::TokenSecret>,
    /// TLS configuration; `None` serves plaintext.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// Retention policy of the job run beside the services.
    pub retention: retention::RetentionPolicy,
}

/// Serves every collector service on `listener` until `shutdown` completes, with a relay
/// of default sizes and no number filters, and runs the retention job meanwhile.
pub async fn serve<F>(
    listener: TcpListener,
    store: Arc<dyn Store>,
    opts: ServeOptions,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send,
{
    let relay = watch::relay(watch::RelayOptions::default());
    serve_with_relay(listener, store, opts, relay, shutdown).await
}

/// [`serve`] with the given live-flow relay (its hub is closed at shutdown, which ends
/// every following Watch stream).
pub async fn serve_with_relay<F>(
    listener: TcpListener,
    store: Arc<dyn Store>,
    opts: ServeOptions,
    relay: crate::watch::WatchService,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send,
{
    let relay_hub = Arc::clone(relay.hub());
    let shutdown = async move {
        shutdown.await;
        relay_hub.close();
    };
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<IngestServer<ingest::IngestService>>()
        .await;
    health
        .set_serving::<QueryServer<query::QueryService>>()
        .await;
    health
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    let ingest = IngestServer::new(ingest::IngestService::new(Arc::clone(&store)))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let query = QueryServer::new(query::QueryService::new(Arc::clone(&store)));
    let admin = AdminServer::new(admin::AdminService::new(
        Arc::clone(&store),
        opts.retention.clone(),
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let job = tokio::spawn(retention::run_job(
        Arc::clone(&store),
        opts.retention,
        async move {
            let mut rx = stop_rx;
            let _ = rx.wait_for(|stop| *stop).await;
        },
    ));
    let mut builder = Server::builder();
    if let Some(tls) = opts.tls {
        builder = builder.tls_config(tls)?;
    }
    let result = builder
        .layer(auth::AuthLayer::new(opts.token_secret))
        .add_service(health_service)
        .add_service(ingest)
        .add_service(query)
        .add_service(admin)
        .add_service(WatchServer::new(relay))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await;
    let _ = stop_tx.send(true);
    let _ = job.await;
    result?;
    Ok(())
}
