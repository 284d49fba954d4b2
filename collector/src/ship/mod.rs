//! Ship client: streams the spool's unacknowledged CDRs to the central collector over
//! `collector.v1.Ingest` and advances the spool's ack cursor as the collector confirms
//! durable storage, so a CDR leaves the spool only once it is stored centrally.
//!
//! Each session opens the stream with an empty batch, which the collector answers with its
//! cursor for this agent. Shipping resumes after `max(spool ack, collector cursor)`; the
//! collector drops anything at or below its cursor, so resending is always safe. A
//! collector cursor *above* the spool's last sequence means the spool was reset or the
//! agent id is shared: new records would be taken for duplicates and silently dropped, so
//! the shipper stops with [`ShipError::SequenceConflict`] instead.
//!
//! Failures are classified by gRPC status: `UNAUTHENTICATED`, `PERMISSION_DENIED` and
//! `INVALID_ARGUMENT` cannot get better by retrying (log and stop); everything else
//! (unavailable, transport errors, a hung collector) reconnects with capped, jittered
//! exponential backoff ([`crate::rpc::backoff`]).

#[cfg(test)]
mod tests;

use std::{
    collections::VecDeque,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use collector_proto::v1::{ingest_client::IngestClient, Cdr, CdrRecord, IngestRequest};
use prost::Message as _;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::rpc::{
    backoff::Backoff,
    connect::{ClientSecurity, ConnectError},
};
use crate::spool::{self, SharedSpool, SpoolError};

/// Tuning of the shipper.
#[derive(Debug, Clone, Copy)]
pub struct ShipOptions {
    /// Most records per batch.
    pub batch_records: usize,
    /// A batch is closed once its payloads reach this many bytes.
    pub batch_bytes: usize,
    /// Batches sent and not yet acknowledged, at most.
    pub max_in_flight: usize,
    /// First reconnect delay.
    pub initial_backoff: Duration,
    /// Reconnect delay cap.
    pub max_backoff: Duration,
    /// TCP/HTTP2 connect timeout.
    pub connect_timeout: Duration,
    /// A session with batches in flight and no ack for this long is abandoned.
    pub ack_timeout: Duration,
}

impl Default for ShipOptions {
    fn default() -> Self {
        Self {
            batch_records: 256,
            batch_bytes: 1 << 20,
            max_in_flight: 8,
            initial_backoff: Duration::from_millis(250),
            max_backoff: crate::rpc::backoff::MAX_DELAY,
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(60),
        }
    }
}

/// Errors that stop the shipper.
#[derive(Debug, Error)]
pub enum ShipError {
    /// The collector refused in a way retrying cannot fix.
    #[error("collector refused the stream ({code:?}): {message}")]
    Fatal {
        /// The gRPC status code.
        code: Code,
        /// The collector's message.
        message: String,
    },
    /// The endpoint, its TLS settings or the token are not usable.
    #[error("invalid collector endpoint or credentials")]
    Endpoint(#[source] ConnectError),
    /// The collector holds sequences this spool never produced.
    #[error(
        "the collector already stored sequence {collector} for this agent but the spool has \
         only reached {spool}: the spool was reset or the agent id is used twice; refusing to \
         ship because the collector would drop new records as duplicates"
    )]
    SequenceConflict {
        /// The collector's cursor.
        collector: u64,
        /// The spool's last sequence.
        spool: u64,
    },
}

/// Counters, for metrics.
#[derive(Debug, Default)]
pub struct ShipStats {
    /// Sessions opened (stream established).
    pub sessions: AtomicU64,
    /// Sessions that ended in a retryable failure.
    pub retries: AtomicU64,
    /// Batches sent.
    pub batches_sent: AtomicU64,
    /// Records sent (resends included).
    pub records_sent: AtomicU64,
    /// Highest sequence the collector acknowledged.
    pub acked: AtomicU64,
    /// Spooled payloads that were not a valid `Cdr` and were skipped.
    pub undecodable: AtomicU64,
}

/// Why a session ended.
enum End {
    Retry(String),
    Fatal(ShipError),
}

fn classify(status: &Status) -> End {
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
            End::Fatal(ShipError::Fatal {
                code: status.code(),
                message: status.message().to_string(),
            })
        }
        code => End::Retry(format!("collector answered {code:?}: {}", status.message())),
    }
}

fn spool_retry(e: SpoolError) -> End {
    End::Retry(format!("spool: {e}"))
}

/// Records read from the spool for one batch.
struct Batch {
    records: Vec<CdrRecord>,
    /// The sequence to read from next time.
    next: u64,
}

/// The ship client (see the module docs).
pub struct Shipper {
    spool: SharedSpool,
    endpoint: String,
    agent_id: String,
    opts: ShipOptions,
    security: ClientSecurity,
    stats: Arc<ShipStats>,
}

impl Shipper {
    /// A shipper of `spool` to the collector at `endpoint` (`http://host:port`) as `agent_id`.
    pub fn new(
        spool: SharedSpool,
        endpoint: impl Into<String>,
        agent_id: impl Into<String>,
    ) -> Self {
        Self {
            spool,
            endpoint: endpoint.into(),
            agent_id: agent_id.into(),
            opts: ShipOptions::default(),
            security: ClientSecurity::default(),
            stats: Arc::default(),
        }
    }

    /// Sets TLS and the bearer token (an `ingest` token).
    pub fn with_security(mut self, security: ClientSecurity) -> Self {
        self.security = security;
        self
    }

    /// Replaces the tuning.
    pub fn with_options(mut self, opts: ShipOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The counters (shared; they keep updating while [`Shipper::run`] runs).
    pub fn stats(&self) -> Arc<ShipStats> {
        Arc::clone(&self.stats)
    }

    /// Ships until `shutdown` completes (then `Ok`) or a fatal refusal (then `Err`).
    pub async fn run<F: Future<Output = ()>>(self, shutdown: F) -> Result<(), ShipError> {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(self.opts.initial_backoff, self.opts.max_backoff);
        loop {
            let mut progressed = false;
            let end = tokio::select! {
                () = &mut shutdown => return Ok(()),
                end = self.session(&mut progressed) => end,
            };
            match end {
                End::Fatal(e) => {
                    tracing::error!(error = %e, "shipping stopped");
                    return Err(e);
                }
                End::Retry(reason) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%reason, "shipping session ended; reconnecting");
                }
            }
            if progressed {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    async fn spool_call<T, F>(&self, f: F) -> Result<T, End>
    where
        T: Send + 'static,
        F: FnOnce(&mut spool::Spool) -> Result<T, SpoolError> + Send + 'static,
    {
        let spool = Arc::clone(&self.spool);
        tokio::task::spawn_blocking(move || {
            let mut s = spool::lock(&spool)?;
            f(&mut s)
        })
        .await
        .map_err(|e| End::Retry(format!("spool worker failed: {e}")))?
        .map_err(spool_retry)
    }

    /// Reads up to one batch of records from `from`, skipping payloads that are not a CDR.
    async fn read_batch(&self, from: u64) -> Result<Batch, End> {
        let (max_records, max_bytes) = (self.opts.batch_records, self.opts.batch_bytes);
        let stats = Arc::clone(&self.stats);
        let spool = Arc::clone(&self.spool);
        tokio::task::spawn_blocking(move || {
            // The reader has its own file handles: the lock is held only to create it.
            let iter = spool::lock(&spool)?.unacked_from(from);
            let mut batch = Batch {
                records: Vec::new(),
                next: from,
            };
            let mut bytes = 0usize;
            for item in iter {
                let (seq, payload) = item?;
                batch.next = seq + 1;
                bytes += payload.len();
                match Cdr::decode(payload.as_slice()) {
                    Ok(cdr) => batch.records.push(CdrRecord {
                        sequence: seq,
                        cdr: Some(cdr),
                    }),
                    Err(_) => {
                        stats.undecodable.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(seq, "spooled record is not a CDR; skipped");
                    }
                }
                if batch.records.len() >= max_records || bytes >= max_bytes {
                    break;
                }
            }
            Ok(batch)
        })
        .await
        .map_err(|e| End::Retry(format!("spool worker failed: {e}")))?
        .map_err(spool_retry)
    }

    async fn session(&self, progressed: &mut bool) -> End {
        match self.try_session(progressed).await {
            Ok(never) => match never {},
            Err(end) => end,
        }
    }

    async fn try_session(&self, progressed: &mut bool) -> Result<std::convert::Infallible, End> {
        let interceptor = self
            .security
            .interceptor()
            .map_err(|e| End::Fatal(ShipError::Endpoint(e)))?;
        let endpoint = self
            .security
            .endpoint(&self.endpoint, self.opts.connect_timeout)
            .map_err(|e| End::Fatal(ShipError::Endpoint(e)))?;
        let channel = endpoint.connect().await.map_err(|e| {
            End::Retry(format!(
                "connecting failed: {}",
                crate::rpc::display_chain(&e)
            ))
        })?;
        let mut client = IngestClient::with_interceptor(channel, interceptor);
        let (tx, rx) = mpsc::channel::<IngestRequest>(self.opts.max_in_flight + 1);
        let probe = IngestRequest {
            agent_id: self.agent_id.clone(),
            batch: Vec::new(),
        };
        tx.send(probe)
            .await
            .map_err(|_| End::Retry("request queue closed".into()))?;
        let mut acks = client
            .stream(ReceiverStream::new(rx))
            .await
            .map_err(|s| classify(&s))?
            .into_inner();
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let closed = || End::Retry("collector closed the stream".into());
        let cursor = acks
            .message()
            .await
            .map_err(|s| classify(&s))?
            .ok_or_else(closed)?
            .highest_sequence;

        let mut notify = spool::lock(&self.spool).map_err(spool_retry)?.subscribe();
        notify.borrow_and_update();
        let (acked, last) = self.spool_call(|s| Ok((s.acked(), s.last_seq()))).await?;
        if cursor > last {
            return Err(End::Fatal(ShipError::SequenceConflict {
                collector: cursor,
                spool: last,
            }));
        }
        if cursor > acked {
            self.spool_call(move |s| s.ack(cursor)).await?;
        }
        let mut next = acked.max(cursor) + 1;
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut notify_open = true;
        loop {
            while in_flight.len() < self.opts.max_in_flight {
                let batch = self.read_batch(next).await?;
                next = batch.next;
                let Some(last_seq) = batch.records.last().map(|r| r.sequence) else {
                    break;
                };
                let count = batch.records.len() as u64;
                let req = IngestRequest {
                    agent_id: self.agent_id.clone(),
                    batch: batch.records,
                };
                tx.send(req)
                    .await
                    .map_err(|_| End::Retry("request stream closed".into()))?;
                self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                self.stats.records_sent.fetch_add(count, Ordering::Relaxed);
                in_flight.push_back(last_seq);
            }
            let ack_deadline = async {
                if in_flight.is_empty() {
                    std::future::pending::<()>().await;
                } else {
                    tokio::time::sleep(self.opts.ack_timeout).await;
                }
            };
            tokio::select! {
                msg = acks.message() => {
                    let high = msg.map_err(|s| classify(&s))?.ok_or_else(closed)?.highest_sequence;
                    let sent = in_flight.back().copied().unwrap_or(next - 1);
                    if high > sent.max(cursor) {
                        return Err(End::Fatal(ShipError::SequenceConflict { collector: high, spool: sent }));
                    }
                    self.spool_call(move |s| s.ack(high)).await?;
                    self.stats.acked.fetch_max(high, Ordering::Relaxed);
                    *progressed = true;
                    while in_flight.front().is_some_and(|s| *s <= high) {
                        in_flight.pop_front();
                    }
                }
                changed = notify.changed(), if notify_open && in_flight.len() < self.opts.max_in_flight => {
                    // The sender lives in the spool this shipper holds; if it is gone, stop
                    // waiting on it and rely on acks.
                    notify_open = changed.is_ok();
                }
                () = ack_deadline => {
                    return Err(End::Retry("no acknowledgement within the ack timeout".into()));
                }
            }
        }
    }
}
