//! `collector.v1.Ingest`: agents stream batches of sequenced CDRs; each batch is committed
//! (records and the agent's cursor in one durable transaction) before it is acknowledged
//! with the agent's highest stored sequence. An empty batch just asks for that cursor.
use std::{pin::Pin, sync::Arc};

use collector_proto::v1::{ingest_server::Ingest, CdrRecord, IngestAck, IngestRequest};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use super::{
    auth::{Caller, StreamAgent},
    store::Store,
    ServerError,
};

/// Largest batch accepted, in records.
pub const MAX_BATCH_RECORDS: usize = 10_000;
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

/// Validates one request of an Ingest stream (`agent` is the stream's agent, fixed by its
/// first request and bound to an ingest token's subject) before any work is done for it.
pub fn validate_request(req: &IngestRequest, agent: &mut StreamAgent) -> Result<(), Status> {
    agent.check(&req.agent_id)?;
    if req.batch.len() > MAX_BATCH_RECORDS {
        return Err(ServerError::Invalid(format!(
            "a batch holds at most {MAX_BATCH_RECORDS} records"
        ))
        .into());
    }
    Ok(())
}

/// The batch with [`Cdr::sealed`](collector_proto::v1::Cdr::sealed) cleared: it is the store
/// layer's own field, never an agent's.
fn at_rest_only_cleared(mut batch: Vec<CdrRecord>) -> Vec<CdrRecord> {
    for r in &mut batch {
        if let Some(c) = r.cdr.as_mut() {
            c.sealed.clear();
        }
    }
    batch
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = Pin<Box<dyn Stream<Item = Result<IngestAck, Status>> + Send + 'static>>;

    async fn stream(
        &self,
        request: Request<Streaming<IngestRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let caller = Caller::of(&request);
        // Tenancy comes from the credential, never from the payload.
        let tenant = caller.ingest_tenant().to_owned();
        let mut agent = StreamAgent::new(caller);
        let mut inbound = request.into_inner();
        let store = Arc::clone(&self.store);
        let (tx, rx) = mpsc::channel(ACK_QUEUE);
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                let result = match msg {
                    Ok(req) => match validate_request(&req, &mut agent) {
                        Ok(()) => store
                            .ingest_into(&req.agent_id, &tenant, at_rest_only_cleared(req.batch))
                            .await
                            .map(|o| IngestAck {
                                highest_sequence: o.highest_sequence,
                            })
                            .map_err(|e| Status::from(ServerError::from(e))),
                        Err(status) => Err(status),
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
