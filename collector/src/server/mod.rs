//! The central collector: gRPC `Ingest` (exactly-once storage keyed on agent id and
//! sequence), `Query`, `Admin` (erasure with audit), the standard `grpc.health.v1` health
//! service, and `Watch` (not implemented yet), over a [`store::Store`].
//!
//! Transport security: TLS is not built yet, so [`check_listen`] refuses a plaintext
//! listener on anything but a loopback address unless the operator explicitly passes
//! `--insecure`: CDRs (even pseudonymized) and the erase API must not cross a network
//! unencrypted and unauthenticated by accident.

pub mod admin;
pub mod ingest;
pub mod query;
pub mod status;
pub mod store;
pub mod watch;

#[cfg(test)]
pub(crate) mod tests;

use std::{future::Future, net::SocketAddr, sync::Arc};

use collector_proto::v1::{
    admin_server::AdminServer, ingest_server::IngestServer, query_server::QueryServer,
    watch_server::WatchServer,
};
use thiserror::Error;
use tokio::net::TcpListener;
use tonic::transport::{server::TcpIncoming, Server};

use store::{Store, StoreError};

/// Largest gRPC message accepted, in bytes (a batch of CDRs).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

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
    /// A plaintext listener on a non-loopback address without `--insecure`.
    #[error(
        "refusing to listen on {addr} without TLS: plaintext gRPC would carry CDRs and the \
         erase API over the network unencrypted and unauthenticated (TLS is not built yet); \
         listen on a loopback address (127.0.0.1 or ::1), or pass --insecure on a network \
         you trust"
    )]
    PlaintextNonLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The listen address could not be bound.
    #[error("binding {addr} failed")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("grpc transport failed")]
    Transport(#[from] tonic::transport::Error),
}

/// Refuses a plaintext listener on a non-loopback address unless `insecure` (see the
/// module docs for why).
pub fn check_listen(addr: SocketAddr, insecure: bool) -> Result<(), ServerError> {
    if addr.ip().is_loopback() || insecure {
        Ok(())
    } else {
        Err(ServerError::PlaintextNonLoopback { addr })
    }
}

/// Binds `addr` after [`check_listen`].
pub async fn bind(addr: &str, insecure: bool) -> Result<TcpListener, ServerError> {
    let bind_err = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(bind_err)?
        .collect();
    if resolved.is_empty() {
        return Err(bind_err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address",
        )));
    }
    for a in &resolved {
        check_listen(*a, insecure)?;
    }
    TcpListener::bind(resolved.as_slice())
        .await
        .map_err(bind_err)
}

/// Serves every collector service on `listener` until `shutdown` completes.
pub async fn serve<F>(
    listener: TcpListener,
    store: Arc<dyn Store>,
    shutdown: F,
) -> Result<(), ServerError>
where
    F: Future<Output = ()> + Send,
{
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
    let admin = AdminServer::new(admin::AdminService::new(store));
    Server::builder()
        .add_service(health_service)
        .add_service(ingest)
        .add_service(query)
        .add_service(admin)
        .add_service(WatchServer::new(watch::WatchService))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}
