//! The `collector.v1.Watch` gRPC service over a [`Hub`]: `Flows` for operators (on the
//! agent and on the collector) and `Publish` for agents feeding the collector's relay.
//!
//! Every request is validated and compiled before any work is spawned; a streaming handler
//! feeds a small bounded channel and stops as soon as the client is gone.
use std::{
    pin::Pin,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use collector_proto::v1::{
    watch_server::Watch, FlowEvent, PublishAck, PublishRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, Stream};
use tonic::{Request, Response, Status, Streaming};

use super::{
    filter::{Resolve, Selector},
    hub::{Hub, Item, Window},
    mask::FieldMask,
    WatchError,
};
use crate::{
    privacy::NumberKeys,
    server::auth::{Caller, StreamAgent},
};

/// Events buffered between a handler and the gRPC transport; the real buffer is the
/// subscriber's hub queue, where a slow client's losses are counted.
const STREAM_BUFFER: usize = 16;
/// Most events in one `Publish` message.
pub const MAX_PUBLISH_BATCH: usize = 4_096;

/// Where the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// On an agent: serves `Flows` from the local hub; `Publish` is refused.
    Agent,
    /// On the collector: also accepts agents' `Publish` streams into the relay hub.
    Collector,
}

/// A validated `WatchRequest`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Keep streaming new events.
    pub follow: bool,
    /// Which buffered events to start with.
    pub window: Window,
    /// The filters.
    pub selector: Arc<Selector>,
    /// The field mask (`None` = every field).
    pub mask: Option<FieldMask>,
}

impl Plan {
    /// Validates `req` (see the proto for the rules); `numbers` resolves number filters
    /// under the key rings of `tenant`, and `last_n` is capped at the `history` the hub
    /// keeps. Only `tenant`'s events are selected when it is set (the caller's token's
    /// tenant).
    pub fn validate(
        req: &WatchRequest,
        numbers: &NumberKeys,
        history: usize,
        tenant: Option<String>,
    ) -> Result<Self, WatchError> {
        if req.follow && req.until_ms != 0 {
            return Err(WatchError::Invalid(
                "until_ms cannot be combined with follow".into(),
            ));
        }
        if req.until_ms != 0 && req.since_ms >= req.until_ms {
            return Err(WatchError::Invalid(
                "since_ms must be before until_ms".into(),
            ));
        }
        let t = tenant.as_deref();
        let resolve = |n: &[u8]| numbers.pseudonyms_for(t, n).unwrap_or_default();
        let resolve: Option<Resolve<'_>> = numbers.available(t).then_some(&resolve);
        let selector = Selector::compile(&req.allow, &req.deny, resolve)?.confine(tenant);
        let mask = FieldMask::compile(&req.field_mask)?;
        let last_n = usize::try_from(req.last_n)
            .unwrap_or(usize::MAX)
            .min(history);
        Ok(Plan {
            follow: req.follow,
            window: Window {
                since_ms: req.since_ms,
                until_ms: req.until_ms,
                last_n,
            },
            selector: Arc::new(selector),
            mask,
        })
    }

    /// The event sent to the client for `item`, masked.
    pub fn render(&self, item: &Item, now_ms: u64) -> FlowEvent {
        match (item, &self.mask) {
            (Item::Event(s), Some(mask)) => mask.apply(&s.event),
            (item, _) => item.to_event(now_ms),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The Watch service.
#[derive(Debug, Clone)]
pub struct WatchService {
    hub: Arc<Hub>,
    role: Role,
    numbers: NumberKeys,
}

impl WatchService {
    /// The agent's service over its hub.
    pub fn agent(hub: Arc<Hub>) -> Self {
        WatchService {
            hub,
            role: Role::Agent,
            numbers: NumberKeys::default(),
        }
    }

    /// The collector's service over its relay hub.
    pub fn collector(hub: Arc<Hub>) -> Self {
        WatchService {
            hub,
            role: Role::Collector,
            numbers: NumberKeys::default(),
        }
    }

    /// Resolves `number` filters under `numbers`, the caller's tenant's ring (without one
    /// they are refused with `FAILED_PRECONDITION`).
    pub fn with_number_keys(mut self, numbers: NumberKeys) -> Self {
        self.numbers = numbers;
        self
    }

    /// The hub served.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Starts streaming `req`'s events into a channel, after validating it; only `tenant`'s
    /// events when it is set (the caller's token's tenant).
    pub fn start(
        &self,
        req: &WatchRequest,
        tenant: Option<String>,
    ) -> Result<mpsc::Receiver<Result<FlowEvent, Status>>, WatchError> {
        let plan = Plan::validate(req, &self.numbers, self.hub.config().history, tenant)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if plan.follow {
            let mut sub = self
                .hub
                .subscribe(Arc::clone(&plan.selector), plan.window)?;
            tokio::spawn(async move {
                loop {
                    let item = tokio::select! {
                        () = tx.closed() => break,
                        item = sub.next() => item,
                    };
                    let Some(item) = item else { break };
                    if tx.send(Ok(plan.render(&item, now_ms()))).await.is_err() {
                        break;
                    }
                }
            });
        } else {
            let events = self.hub.history(&plan.selector, plan.window);
            tokio::spawn(async move {
                for s in events {
                    if tx
                        .send(Ok(plan.render(&Item::Event(s), now_ms())))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        Ok(rx)
    }
}

fn check_agent(req: &PublishRequest, agent: &mut StreamAgent) -> Result<(), Status> {
    agent.check(&req.agent_id)?;
    if req.events.len() > MAX_PUBLISH_BATCH {
        return Err(WatchError::Invalid(format!(
            "a publish message holds at most {MAX_PUBLISH_BATCH} events"
        ))
        .into());
    }
    Ok(())
}

#[tonic::async_trait]
impl Watch for WatchService {
    type FlowsStream = Pin<Box<dyn Stream<Item = Result<FlowEvent, Status>> + Send + 'static>>;

    async fn flows(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::FlowsStream>, Status> {
        let tenant = Caller::of(&request).tenant;
        let rx = self.start(request.get_ref(), tenant)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn publish(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<PublishAck>, Status> {
        if self.role == Role::Agent {
            return Err(WatchError::NotRelay.into());
        }
        let caller = Caller::of(&request);
        // Tenancy comes from the credential, never from the payload.
        let tenant = caller.ingest_tenant().to_owned();
        let mut agent = StreamAgent::new(caller);
        let mut stream = request.into_inner();
        let mut accepted = 0u64;
        loop {
            let msg = tokio::select! {
                () = self.hub.closed() => break,
                m = stream.message() => m?,
            };
            let Some(req) = msg else { break };
            check_agent(&req, &mut agent)?;
            for mut e in req.events {
                e.agent_id.clone_from(&req.agent_id);
                e.tenant.clone_from(&tenant);
                self.hub.publish(e);
                accepted = accepted.saturating_add(1);
            }
        }
        Ok(Response::new(PublishAck { accepted }))
    }
}
