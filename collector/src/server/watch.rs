//! `collector.v1.Watch` on the collector: the relay of every agent's live flows is later
//! work; until then the service answers `UNIMPLEMENTED` so clients get a clear answer.
use std::pin::Pin;

use collector_proto::v1::{watch_server::Watch, FlowEvent, WatchRequest};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::ServerError;

/// The Watch service placeholder.
#[derive(Debug, Default)]
pub struct WatchService;

#[tonic::async_trait]
impl Watch for WatchService {
    type FlowsStream = Pin<Box<dyn Stream<Item = Result<FlowEvent, Status>> + Send + 'static>>;

    async fn flows(
        &self,
        _request: Request<WatchRequest>,
    ) -> Result<Response<Self::FlowsStream>, Status> {
        Err(ServerError::Unimplemented("Watch.Flows").into())
    }
}
