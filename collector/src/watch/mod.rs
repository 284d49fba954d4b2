//! Live flow events, modelled on Hubble (`hubble observe` and Hubble Relay): the agent's
//! event hub and Watch service, the agent → collector forwarder, and the collector's relay.
//!
//! ```text
//!  call tracker ──hub.publish(event)──► Hub (history ring + per-subscriber queues)
//!                                        ├─► Watch.Flows on the agent (serve_agent)
//!                                        └─► forward() ──Watch.Publish──► collector Hub
//!                                                                          └─► Watch.Flows
//! ```
//!
//! - [`hub`]: bounded history and broadcast; publishing never waits, a slow subscriber
//!   loses events and is told in-band (`LostEvents`, CLIENT_QUEUE).
//! - [`filter`]: allow/deny `FlowFilter`s (agent, kind, call state, disposition, pseudonym
//!   or number, address prefix, MOS and loss thresholds).
//! - [`mask`]: field masks, applied by clearing unlisted fields before sending.
//! - [`service`]: the gRPC service (`Flows`, and `Publish` on the collector).
//! - [`forward`]: the agent's `Publish` client.
//!
//! Events are pseudonymized by the producer (the call tracker applies the privacy policy);
//! nothing here sees, logs or stores a clear identifier, except the `number` filter value,
//! which is turned into pseudonyms at once and never logged.
//!
//! # Wiring on the agent
//!
//! The call tracker gets an `Arc<Hub>` and calls `hub.publish(event)` (and
//! `hub.publish_lost(LostEventsSource::KernelRing, n, now_ms)` for ring-buffer losses). In
//! the agent's run loop (`--watch-listen ADDR`, `--server URL`):
//!
//! ```text
//! let hub = Arc::new(watch::Hub::with_metrics(watch::HubConfig::default(), metrics.clone()));
//! tokio::spawn(watch::serve_agent(crate::rpc::listen::bind(&watch_listen, insecure).await?, hub.clone(), shutdown.clone()));
//! tokio::spawn(watch::forward::forward(hub.clone(), watch::forward::ForwardConfig::new(server_url, agent_id), shutdown.clone()));
//! ```
//!
//! and `hub.close()` at shutdown, which ends every open `--follow` stream.

pub mod filter;
pub mod forward;
pub mod hub;
pub mod mask;
pub mod service;

#[cfg(test)]
mod tests;

use std::{future::Future, sync::Arc};

use collector_proto::v1::watch_server::WatchServer;
use thiserror::Error;
use tokio::net::TcpListener;
use tonic::{
    transport::{server::TcpIncoming, Server},
    Status,
};

pub use filter::Selector;
pub use hub::{Hub, HubConfig, HubError, HubStats, Item, Stored, Subscription, Window};
pub use mask::FieldMask;
pub use service::{Role, WatchService};

/// Errors of the watch service.
#[derive(Debug, Error)]
pub enum WatchError {
    /// A request breaks the API's rules.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A number filter on a service without a key file.
    #[error(
        "this service has no pseudonymization keys, so it cannot filter by number; filter by \
         pseudonym instead (see `collector pseudonym`)"
    )]
    NoKeys,
    /// `Publish` on an agent.
    #[error("only the collector accepts published events")]
    NotRelay,
    /// The hub refused a subscription.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The collector refused the forwarder's events for good.
    #[error("the collector refused the published events: {0}")]
    Refused(String),
    /// The gRPC transport failed.
    #[error("grpc transport failed")]
    Transport(#[from] tonic::transport::Error),
}

impl From<WatchError> for Status {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Invalid(why) => Status::invalid_argument(why),
            e @ WatchError::NoKeys => Status::failed_precondition(e.to_string()),
            e @ WatchError::NotRelay => Status::unimplemented(e.to_string()),
            WatchError::Hub(e @ HubError::TooManySubscribers(_)) => {
                Status::resource_exhausted(e.to_string())
            }
            WatchError::Hub(e @ HubError::Closed) => Status::unavailable(e.to_string()),
            e @ (WatchError::Refused(_) | WatchError::Transport(_)) => {
                Status::internal(e.to_string())
            }
        }
    }
}

/// Serves the agent's Watch service on `listener` until `shutdown` completes, then closes
/// the hub so open `--follow` streams end.
pub async fn serve_agent<F>(
    listener: TcpListener,
    hub: Arc<Hub>,
    shutdown: F,
) -> Result<(), WatchError>
where
    F: Future<Output = ()> + Send,
{
    serve_service(listener, WatchService::agent(hub), shutdown).await
}

/// Serves `service` on `listener` until `shutdown` completes, then closes its hub.
pub async fn serve_service<F>(
    listener: TcpListener,
    service: WatchService,
    shutdown: F,
) -> Result<(), WatchError>
where
    F: Future<Output = ()> + Send,
{
    let hub = Arc::clone(service.hub());
    Server::builder()
        .add_service(WatchServer::new(service))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
            shutdown.await;
            hub.close();
        })
        .await?;
    Ok(())
}
