//! Agent → collector: streams the agent hub's events to the collector's relay over
//! `Watch.Publish`, reconnecting with jittered backoff. The forwarder is an ordinary hub
//! subscriber, so it never slows the producer: while the collector is away or slow its
//! queue fills, and what it cannot carry is reported to the collector's watchers as
//! `LostEvents { source: RELAY, count }` once the stream is back.
use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use collector_proto::v1::{
    flow_event::Event, watch_client::WatchClient, FlowEvent, LostEventsSource, PublishRequest,
};
use tokio::sync::mpsc;
use tokio_stream::{wrappers::ReceiverStream, StreamExt as _};

use super::{
    filter::Selector,
    hub::{lost_event, Hub, Item, Window},
    WatchError,
};
use crate::rpc::{backoff::Backoff, connect::ClientSecurity};

/// How the forwarder reaches the collector.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Collector URL (`https://host:port`, or `http://` on loopback).
    pub server: String,
    /// TLS and token of the agent (the same as its CDR stream's: `Publish` takes an
    /// ingest token bound to `agent_id`).
    pub security: ClientSecurity,
    /// This agent's identifier (the collector tags every event with it).
    pub agent_id: String,
    /// Most events per `Publish` message.
    pub batch: usize,
    /// First reconnect delay.
    pub initial_backoff: Duration,
    /// Longest reconnect delay.
    pub max_backoff: Duration,
}

impl ForwardConfig {
    /// Defaults for `server` and `agent_id`: batches of 256, backoff 0.5 s up to 30 s.
    pub fn new(server: impl Into<String>, agent_id: impl Into<String>) -> Self {
        ForwardConfig {
            server: server.into(),
            security: ClientSecurity::default(),
            agent_id: agent_id.into(),
            batch: 256,
            initial_backoff: Duration::from_millis(500),
            max_backoff: crate::rpc::backoff::MAX_DELAY,
        }
    }

    /// The same with TLS and token settings.
    pub fn with_security(mut self, security: ClientSecurity) -> Self {
        self.security = security;
        self
    }
}

/// The event the relay gets for `item`: events as they are, this queue's losses as RELAY
/// losses (from the watcher's point of view the relay fell behind).
fn relay_event(item: Item, now_ms: u64) -> FlowEvent {
    match item {
        Item::Event(s) => s.event.clone(),
        Item::Lost(n) => lost_event(LostEventsSource::Relay, n, now_ms),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Forwards `hub`'s live events to the collector until `shutdown` completes (or the hub
/// closes). Connection failures are retried forever; only an invalid configuration or a
/// refusal by the collector that retrying cannot fix (`INVALID_ARGUMENT`) ends it early.
pub async fn forward<F>(hub: Arc<Hub>, config: ForwardConfig, shutdown: F) -> Result<(), WatchError>
where
    F: Future<Output = ()> + Send,
{
    let endpoint = config
        .security
        .endpoint(&config.server, Duration::from_secs(10))
        .map_err(|e| WatchError::Invalid(format!("the collector endpoint: {e}")))?;
    let interceptor = config
        .security
        .interceptor()
        .map_err(|e| WatchError::Invalid(format!("the collector credentials: {e}")))?;
    let mut sub = hub.subscribe(Arc::new(Selector::all()), Window::default())?;
    let mut backoff = Backoff::new(config.initial_backoff, config.max_backoff);
    let batch_max = config.batch.max(1);
    // Events taken from the queue but not delivered (the stream broke under them).
    let mut carried_lost = 0u64;
    tokio::pin!(shutdown);
    loop {
        let channel = tokio::select! {
            () = &mut shutdown => return Ok(()),
            c = endpoint.connect() => c,
        };
        let Ok(channel) = channel else {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(backoff.next_delay()) => continue,
            }
        };
        let (tx, rx) = mpsc::channel::<PublishRequest>(4);
        // Events queued for this stream that the transport has not taken yet: lost (and
        // reported) if the stream breaks.
        let queued = Arc::new(AtomicU64::new(0));
        let taken = Arc::clone(&queued);
        let outbound = ReceiverStream::new(rx).map(move |req| {
            taken.fetch_sub(count_events(&req.events), Ordering::AcqRel);
            req
        });
        let mut client = WatchClient::with_interceptor(channel, interceptor.clone());
        let mut call = tokio::spawn(async move { client.publish(outbound).await });
        let mut sent_any = false;
        if carried_lost > 0 {
            let req = PublishRequest {
                agent_id: config.agent_id.clone(),
                events: vec![lost_event(LostEventsSource::Relay, carried_lost, now_ms())],
            };
            queued.fetch_add(carried_lost, Ordering::AcqRel);
            if tx.send(req).await.is_ok() {
                carried_lost = 0;
            } else {
                queued.fetch_sub(carried_lost, Ordering::AcqRel);
            }
        }
        let outcome = loop {
            let first = tokio::select! {
                () = &mut shutdown => {
                    drop(tx);
                    let _ = tokio::time::timeout(Duration::from_secs(2), &mut call).await;
                    return Ok(());
                }
                r = &mut call => break r,
                item = sub.next() => item,
            };
            let Some(first) = first else {
                // The hub closed: the agent is stopping.
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut call).await;
                return Ok(());
            };
            let mut events = vec![relay_event(first, now_ms())];
            while events.len() < batch_max {
                match sub.try_next() {
                    Some(item) => events.push(relay_event(item, now_ms())),
                    None => break,
                }
            }
            let n = count_events(&events);
            let req = PublishRequest {
                agent_id: config.agent_id.clone(),
                events,
            };
            queued.fetch_add(n, Ordering::AcqRel);
            if tx.send(req).await.is_err() {
                break (&mut call).await;
            }
            if !sent_any {
                sent_any = true;
                backoff.reset();
            }
        };
        drop(tx);
        carried_lost = carried_lost.saturating_add(queued.swap(0, Ordering::AcqRel));
        if let Ok(Err(status)) = &outcome {
            if status.code() == tonic::Code::InvalidArgument {
                return Err(WatchError::Refused(status.message().to_string()));
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

/// How many events a batch stands for if it is lost: its events, with RELAY notices
/// counted by the losses they carry.
fn count_events(events: &[FlowEvent]) -> u64 {
    events
        .iter()
        .map(|e| match &e.event {
            Some(Event::LostEvents(l)) if l.source() == LostEventsSource::Relay => l.count,
            _ => 1,
        })
        .fold(0u64, u64::saturating_add)
}
