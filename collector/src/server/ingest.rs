//! `collector.v1.Ingest`: agents stream batches of sequenced CDRs; each batch is committed
//! (records and the agent's cursor in one durable transaction) before it is acknowledged
//! with the agent's highest stored sequence. An empty batch just asks for that cursor.
use std::{pin::Pin, sync::Arc};

use collector_proto::v1::{ingest_server::Ingest, IngestAck, IngestRequest};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::{store::Store, ServerError};

/// Largest batch accepted, in records.
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// Longest agent identifier accepted, in bytes.
pub const MAX_AGENT_ID_LEN: usize = 128;
/// Acks buffered towards a slow client before the handler stops reading its batches.
const ACK_QUEUE: usize = 16;

/// The Ingest service.
pub struct IngestService {
    store: Arc<dyn Store>,
}

impl IngestService {
    /// Serves ingestion into `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// Validates one request of an Ingest stream (`agent` is the stream's agent id, fixed by its
/// first request) before any work is done for it.
pub fn validate_request(
    req: &IngestRequest,
    agent: &mut Option<String>,
) -> Result<(), ServerError> {
    if req.agent_id.is_empty() || req.agent_id.len() > MAX_AGENT_ID_LEN {
        return Err(ServerError::Invalid(format!(
            "agent_id must be 1..={MAX_AGENT_ID_LEN} bytes"
        )));
    }
    if req.batch.len() > MAX_BATCH_RECORDS {
        return Err(ServerError::Invalid(format!(
            "a batch holds at most {MAX_BATCH_RECORDS} records"
        )));
    }
    match agent {
        Some(a) if *a != req.agent_id => Err(ServerError::Invalid(
            "agent_id changed within a stream".into(),
        )),
        Some(_) => Ok(()),
        None => {
            *agent = Some(req.agent_id.clone());
            Ok(())
        }
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<IngestAck, Status>> + Send + 'static>>;

    async fn stream(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let mut inbound = request.into_inner();
        let store = Arc::clone(&self.store);
        let (tx, rx) = mpsc::channel(ACK_QUEUE);
        tokio::spawn(async move {
            let mut agent = None;
            while let Some(msg) = inbound.next().await {
                let result = match msg {
                    Ok(req) => match validate_request(&req, &mut agent) {
                        Ok(()) => store
                            .ingest(&req.agent_id, req.batch)
                            .await
                            .map(|o| IngestAck {
                                highest_sequence: o.highest_sequence,
                            })
                            .map_err(|e| Status::from(ServerError::from(e))),
                        Err(e) => Err(Status::from(e)),
                    },
                    // The client went away or sent garbage: nothing more to do.
                    Err(_) => break,
                };
                let failed = result.is_err();
                // A closed channel means the client is gone; stop reading its batches.
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
