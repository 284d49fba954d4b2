//! `collector agent`: attach the kernel programs, read the ring buffer every 10 ms, run the
//! pipeline (SIP reassembly and parsing, call tracking, media binding in the kernel's MEDIA
//! maps, CDRs), apply the privacy policy and print one CDR per JSON line; detach on
//! SIGTERM/SIGINT after printing the final counters.
//!
//! `--print-events` is the debugging mode: one metadata line per ring event (kind,
//! direction, interface, lengths and FNV-1a digests; never an address or a payload), no
//! call tracking.
//!
//! `--metrics-listen ADDR` serves Prometheus metrics ([`crate::metrics`]) at `/metrics`,
//! refreshed once a second from the kernel counters, the pipeline, the spool and the
//! shipper.
//!
//! Kernel timestamps are `CLOCK_MONOTONIC`; they are turned into Unix time with one offset
//! measured at start, for events and for the RTP times read back from the maps alike.
#![deny(clippy::indexing_slicing, clippy::panic)]
use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use collector_common::{
    media::{EndpointKey, EndpointValue},
    Direction, EventHeader, EventKind, MediaKey, MediaValue,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::calls::{
    media::{MediaError, MediaTable, UdpVerdict},
    tracker::CdrIds,
    CallsConfig, CdrOut, FlowOut, Tracker,
};
use crate::capture::{self, drain_ring, Capture, CaptureOptions, RawEvent};
use crate::metrics::{CdrStage, Metrics};
use crate::net::{frag::FragConfig, DecoderConfig};
use crate::pipeline::{looks_like_rtcp, MediaBackend, Pipeline, Privacy, Schedule};
use crate::privacy::{
    keys::{Key, KeyId, Secret},
    KeyRing, PrivacyConfig, Pseudonymizer,
};
use crate::ship::{ShipStats, Shipper};
use crate::spool::{SharedSpool, Spool, SpoolOptions};
use crate::watch::{forward::ForwardConfig, Hub, HubConfig};
use collector_proto::v1::Cdr;

/// Scope used for pseudonyms when the configuration names none.
const DEFAULT_SCOPE: &str = "local";
/// Agent id when the configuration names none.
const DEFAULT_AGENT_ID: &str = "agent";
/// Reads in a poll from which the whole MEDIA map is read at once.
const BULK_READ_MIN: usize = 16;
/// Queued map writes at which they are applied before the round's end (after the message
/// that reached it): a round after a burst carries thousands of calls' setups, and each
/// queued stream holds its ~560-byte value twice (queued, then in the batch), in buffers
/// that would keep their largest size.
const MAX_QUEUED: usize = 1024;
/// Spool batches whose append time is remembered for the age of the oldest unacknowledged
/// CDR; beyond it new batches share the newest mark (the age is then an upper bound).
const MAX_AGE_MARKS: usize = 1024;

/// The kernel's MEDIA maps as the binder's table, with times moved to Unix time.
///
/// Writes are queued, last one per key, and reach the kernel in batches at
/// [`MediaTable::flush`] (the agent flushes after every round of ring records, and within
/// a round once [`MAX_QUEUED`] writes are queued, between two messages): a call's
/// setup and teardown write about a dozen entries, and one system call per entry was most
/// of the agent's time at high call rates. Reads of a queued key answer from the queue, so
/// the tracker sees its own writes. During a poll the whole MEDIA map is read with batch
/// lookups and reads answer from that copy.
pub struct KernelMedia {
    cap: Capture,
    offset_ns: u64,
    /// Keys installed in MEDIA and the call each belongs to. Only userspace inserts and
    /// removes (the map is a plain hash, the kernel never evicts), so this is the map's
    /// content; it is bounded by the map.
    installed: HashMap<MediaKey, u64>,
    /// How many of `installed` are pending entries.
    pending: usize,
    /// MEDIA_EP as written: the kernel only reads it, so reads cost no system call.
    endpoints: HashMap<EndpointKey, EndpointValue>,
    /// MEDIA installs not applied yet.
    queued: HashMap<MediaKey, MediaValue>,
    /// MEDIA removals not applied yet (never a key of `queued`): apart, so that a removal
    /// holds a key and not a value's room (a poll settles thousands of calls at once).
    queued_gone: HashSet<MediaKey>,
    /// MEDIA_EP writes not applied yet.
    queued_ep: HashMap<EndpointKey, Option<EndpointValue>>,
    /// The batches of one flush (kept for their allocations).
    changes: capture::MediaChanges,
    /// Every MEDIA entry, read at the start of a bulk read: a vector of exactly the
    /// entries (a copy of the whole map, in the peak of the agent's memory), not a hash
    /// table with up to twice their room.
    bulk: Vec<(MediaKey, MediaValue)>,
    /// Where each key is in `bulk`.
    bulk_at: HashMap<MediaKey, usize>,
    /// Reads answer from `bulk`.
    bulk_on: bool,
}

fn kerr(e: capture::CaptureError) -> MediaError {
    MediaError::Kernel(Box::new(e))
}

impl KernelMedia {
    /// The maps of `cap`; `offset_ns` turns `CLOCK_MONOTONIC` into Unix time.
    pub fn new(cap: Capture, offset_ns: u64) -> Self {
        Self {
            cap,
            offset_ns,
            installed: HashMap::new(),
            pending: 0,
            endpoints: HashMap::new(),
            queued: HashMap::new(),
            queued_gone: HashSet::new(),
            queued_ep: HashMap::new(),
            changes: capture::MediaChanges::default(),
            bulk: Vec::new(),
            bulk_at: HashMap::new(),
            bulk_on: false,
        }
    }

    /// Stream directions bound in the kernel's MEDIA map: its entries but the pending ones
    /// (what is sent to an offerer before its answer is bound, or before the bound stream's
    /// first packet moves the pending counts).
    pub fn streams(&self) -> usize {
        self.installed.len().saturating_sub(self.pending)
    }

    /// The loaded programs.
    pub fn capture(&self) -> &Capture {
        &self.cap
    }

    /// Map writes queued (applied at [`MediaTable::flush`]).
    pub fn queued(&self) -> usize {
        let streams = self.queued.len().saturating_add(self.queued_gone.len());
        streams.saturating_add(self.queued_ep.len())
    }

    /// The bulk copy's entry of `key`.
    fn bulk_stream(&self, key: &MediaKey) -> Option<MediaValue> {
        let i = self.bulk_at.get(key)?;
        self.bulk.get(*i).map(|(_, v)| *v)
    }

    /// `v` with its times in Unix time.
    fn unix_times(&self, mut v: MediaValue) -> MediaValue {
        for s in &mut v.slots {
            if s.packets > 0 {
                s.first_ns = s.first_ns.saturating_add(self.offset_ns);
                s.last_ns = s.last_ns.saturating_add(self.offset_ns);
            }
        }
        v
    }
}

impl MediaTable for KernelMedia {
    fn insert_stream(&mut self, key: MediaKey, value: MediaValue) -> Result<(), MediaError> {
        self.queued_gone.remove(&key);
        self.queued.insert(key, value);
        if self.installed.insert(key, value.cookie).is_none() && key.is_pending() {
            self.pending += 1;
        }
        Ok(())
    }

    fn stream(&mut self, key: &MediaKey) -> Result<Option<MediaValue>, MediaError> {
        // Written but not applied: as it reads right after the write.
        let v = match self.queued.get(key) {
            Some(q) => Some(*q),
            None if self.queued_gone.contains(key) => None,
            None if self.bulk_on => self.bulk_stream(key),
            None => self.cap.stream(key).map_err(kerr)?,
        };
        Ok(v.map(|v| self.unix_times(v)))
    }

    fn stream_cookie(&mut self, key: &MediaKey) -> Result<Option<u64>, MediaError> {
        Ok(self.installed.get(key).copied())
    }

    fn remove_stream(&mut self, key: &MediaKey) -> Result<(), MediaError> {
        self.queued.remove(key);
        self.queued_gone.insert(*key);
        if self.installed.remove(key).is_some() && key.is_pending() {
            self.pending = self.pending.saturating_sub(1);
        }
        Ok(())
    }

    fn insert_endpoint(
        &mut self,
        key: EndpointKey,
        value: EndpointValue,
    ) -> Result<(), MediaError> {
        self.queued_ep.insert(key, Some(value));
        self.endpoints.insert(key, value);
        Ok(())
    }

    fn endpoint(&mut self, key: &EndpointKey) -> Result<Option<EndpointValue>, MediaError> {
        Ok(self.endpoints.get(key).copied())
    }

    fn remove_endpoint(&mut self, key: &EndpointKey) -> Result<(), MediaError> {
        self.queued_ep.insert(*key, None);
        self.endpoints.remove(key);
        Ok(())
    }

    fn flush(&mut self) -> Vec<u64> {
        if self.queued() == 0 {
            return Vec::new();
        }
        let c = &mut self.changes;
        c.clear();
        for (k, v) in self.queued.drain() {
            c.push_stream(k, v);
        }
        c.streams_gone.extend(self.queued_gone.drain());
        for (k, v) in self.queued_ep.drain() {
            match v {
                Some(v) => c.push_endpoint(k, v),
                None => c.endpoints_gone.push(k),
            }
        }
        let refused = self.cap.apply(&self.changes);
        // A burst (or a poll settling thousands of calls) queues many writes at once: the
        // buffers go back to a round's size instead of keeping their largest.
        self.changes.clear_to(MAX_QUEUED);
        self.queued.shrink_to(MAX_QUEUED);
        self.queued_gone.shrink_to(MAX_QUEUED);
        self.queued_ep.shrink_to(MAX_QUEUED);
        if let Some(e) = &refused.first {
            tracing::debug!(error = %e, "a media map write failed");
        }
        // What the kernel refused is not there: the mirrors say so.
        for (k, cookie) in &refused.streams {
            if self.installed.get(k) == Some(cookie) {
                self.installed.remove(k);
                if k.is_pending() {
                    self.pending = self.pending.saturating_sub(1);
                }
            }
        }
        for (k, cookie) in &refused.endpoints {
            if self.endpoints.get(k).is_some_and(|v| v.cookie == *cookie) {
                self.endpoints.remove(k);
            }
        }
        let streams = refused.streams.iter().map(|(_, c)| *c);
        streams
            .chain(refused.endpoints.iter().map(|(_, c)| *c))
            .collect()
    }

    fn begin_bulk_read(&mut self, reads: usize) {
        // Worth it when most entries are read: copying the whole map costs a few
        // microseconds per thousand entries and their memory for the poll's length, a
        // single lookup a system call. Ended calls (lingering) are not polled, so at high
        // call rates most entries are not read.
        if reads < BULK_READ_MIN || reads.saturating_mul(2) < self.installed.len() {
            return;
        }
        // Sized for the map's content, which userspace alone changes: no doubling slack.
        self.bulk = Vec::with_capacity(self.installed.len());
        // A failed bulk read leaves the reads to single lookups.
        self.bulk_on = match self.cap.read_streams(&mut self.bulk) {
            Ok(()) => {
                let at = self.bulk.iter().enumerate().map(|(i, (k, _))| (*k, i));
                self.bulk_at = at.collect();
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "batch read of MEDIA failed");
                false
            }
        };
    }

    fn end_bulk_read(&mut self) {
        self.bulk_on = false;
        // Its memory goes too: the copy is as large as the map.
        self.bulk = Vec::new();
        self.bulk_at = HashMap::new();
    }
}

impl MediaBackend for KernelMedia {
    fn on_udp(
        &mut self,
        _ts_ns: u64,
        _src: SocketAddr,
        _dst: SocketAddr,
        payload: &[u8],
    ) -> UdpVerdict {
        // The kernel counted RTP already; what reaches userspace is RTCP of bound streams
        // (and RTP header samples, which the tracker does not need).
        if looks_like_rtcp(payload) {
            UdpVerdict::Rtcp
        } else {
            UdpVerdict::NoMatch
        }
    }
}

/// The agent's settings from its configuration file.
struct AgentConfig {
    agent_id: String,
    /// `[agent] fragment_timeout_ms`: how long an IP datagram whose fragments are not all
    /// there is waited for, ns.
    frag_max_age_ns: u64,
    calls: CallsConfig,
    privacy: PrivacyConfig,
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<AgentConfig> {
    let Some(path) = path else {
        return Ok(AgentConfig {
            agent_id: DEFAULT_AGENT_ID.to_owned(),
            frag_max_age_ns: FragConfig::default().max_age_ns,
            calls: CallsConfig::default(),
            privacy: PrivacyConfig::default(),
        });
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).context("parsing the configuration")?;
    let agent_id = table
        .get("agent")
        .and_then(|a| a.get("id"))
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_AGENT_ID)
        .to_owned();
    let frag_max_age_ns = match table
        .get("agent")
        .and_then(|a| a.get("fragment_timeout_ms"))
    {
        None => FragConfig::default().max_age_ns,
        Some(v) => {
            let ms = v
                .as_integer()
                .filter(|ms| (100..=120_000).contains(ms))
                .context("agent.fragment_timeout_ms: a whole number of ms from 100 to 120000")?;
            u64::try_from(ms).unwrap_or(0) * 1_000_000
        }
    };
    Ok(AgentConfig {
        agent_id,
        frag_max_age_ns,
        calls: CallsConfig::from_agent_toml(&text)?,
        privacy: PrivacyConfig::from_agent_toml(&text)?,
    })
}

/// The pseudonymizer of the policy; with no key file, an in-memory key made now (said on
/// stderr: pseudonyms then change with every start).
fn pseudonymizer(cfg: &PrivacyConfig) -> anyhow::Result<Pseudonymizer> {
    let mut cfg = cfg.clone();
    if cfg.scope.is_none() {
        cfg.scope = Some(DEFAULT_SCOPE.to_owned());
    }
    if cfg.key_file.is_some() {
        return Pseudonymizer::from_config(&cfg).context("privacy policy");
    }
    eprintln!(
        "collector: no privacy.key_file configured: identifiers are pseudonymized with an \
         ephemeral in-memory key, so pseudonyms are not stable across restarts (create a key \
         file with `collector keygen`)"
    );
    let key = Key::new(
        KeyId::try_new("ephemeral")?,
        Secret::generate()?,
        OffsetDateTime::now_utc(),
        true,
    );
    Ok(Pseudonymizer::try_new(&cfg, KeyRing::try_new(vec![key])?)?)
}

/// What the agent reports to [`Metrics`]: read once a second from the kernel counters and
/// the pipeline (the ring thread), the spool and the shipper (the output thread,
/// [`SpoolMetrics`]).
struct AgentMetrics {
    metrics: Arc<Metrics>,
}

/// The spool's part of the agent's metrics: the append times of spooled CDRs (for the age
/// of the oldest unacknowledged one), kept by the output thread that appends them.
struct SpoolMetrics {
    metrics: Arc<Metrics>,
    /// (last sequence of a spooled batch, when it was appended), oldest first; at most
    /// [`MAX_AGE_MARKS`].
    marks: VecDeque<(u64, Instant)>,
    /// The spool's ack cursor when the agent started: acknowledgements count from there.
    acked_at_start: u64,
    /// The shipper's counters, with a collector.
    ship: Option<Arc<ShipStats>>,
}

impl AgentMetrics {
    fn new() -> Self {
        Self {
            metrics: Arc::new(Metrics::new()),
        }
    }

    /// The kernel's cumulative counters and the ring reader's undecodable records.
    fn kernel(&self, counters: &BTreeMap<&'static str, u64>, undecodable: u64) {
        for (&reason, &total) in counters {
            self.metrics.set_kernel_total(reason, total);
        }
        let lost = counters.get("ring_full").copied().unwrap_or(0);
        self.metrics.set_ring_lost_total(lost);
        self.metrics.set_ring_undecodable_total(undecodable);
    }

    /// Dialogs, media streams, CDRs produced and SIP parse errors of the pipeline.
    fn pipeline(&self, pipe: &Pipeline<KernelMedia>) {
        let tracker = pipe.tracker();
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.metrics
            .set_active_dialogs(count(tracker.active_calls()));
        self.metrics
            .set_active_media_streams(count(pipe.media().streams()));
        self.metrics
            .set_cdrs_total(CdrStage::Produced, tracker.stats().cdrs);
        for (&reason, &total) in pipe.sip_errors() {
            self.metrics.set_sip_parse_errors_total(reason, total);
        }
        for (reason, total) in pipe.net_stats().counters() {
            self.metrics.set_decoder_total(reason, total);
        }
        self.metrics
            .set_rtcp_parse_errors_total(tracker.stats().rtcp_errors);
    }
}

/// `collector agent`: attach, read events until SIGINT/SIGTERM, detach.
impl SpoolMetrics {
    /// Starts following `spool`: CDRs left unacknowledged by an earlier run count as
    /// appended now (their age is a lower bound).
    fn new(metrics: Arc<Metrics>, spool: &crate::spool::Spool, ship: Arc<ShipStats>) -> Self {
        let stats = spool.stats();
        let mut marks = VecDeque::new();
        if stats.pending > 0 {
            marks.push_back((spool.last_seq(), Instant::now()));
        }
        Self {
            metrics,
            marks,
            acked_at_start: stats.acked,
            ship: Some(ship),
        }
    }

    /// Notes `n` CDRs appended to the spool, the last with sequence `last`.
    fn spooled(&mut self, n: u64, last: u64) {
        self.metrics.cdrs(CdrStage::Spooled, n);
        if self.marks.len() < MAX_AGE_MARKS {
            self.marks.push_back((last, Instant::now()));
        } else if let Some(newest) = self.marks.back_mut() {
            newest.0 = last;
        }
    }

    /// Spool depth and age, acknowledgements, and the shipper's counters.
    fn spool(&mut self, spool: &SharedSpool) {
        let Ok(stats) = crate::spool::lock(spool).map(|s| s.stats()) else {
            return;
        };
        while self
            .marks
            .front()
            .is_some_and(|(seq, _)| *seq <= stats.acked)
        {
            self.marks.pop_front();
        }
        let age = self
            .marks
            .front()
            .map_or(Duration::ZERO, |(_, at)| at.elapsed());
        self.metrics.set_spool_unacked(stats.pending, age);
        self.metrics.set_spool_bytes(stats.bytes_used);
        self.metrics.set_cdrs_total(
            CdrStage::Acknowledged,
            stats.acked.saturating_sub(self.acked_at_start),
        );
        if let Some(ship) = &self.ship {
            use std::sync::atomic::Ordering::Relaxed;
            self.metrics
                .set_ship_reconnects_total(ship.retries.load(Relaxed));
            self.metrics
                .set_cdrs_total(CdrStage::Sent, ship.records_sent.load(Relaxed));
        }
    }
}

pub fn run(args: super::AgentArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(agent_loop(args))
}

/// What ends one wait of the agent loop: the 10 ms poll, the ring's own wakeup (the kernel
/// forces one when the backlog crosses its threshold), or a stop signal.
struct Wake {
    sigterm: tokio::signal::unix::Signal,
    sigint: tokio::signal::unix::Signal,
    tick: tokio::time::Interval,
}

impl Wake {
    /// Waits for the next round; `false` when SIGTERM or SIGINT asks the agent to stop.
    async fn next(
        &mut self,
        ring: &mut tokio::io::unix::AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>,
    ) -> bool {
        tokio::select! {
            _ = self.sigterm.recv() => false,
            _ = self.sigint.recv() => false,
            _ = self.tick.tick() => true,
            guard = ring.readable_mut() => {
                if let Ok(mut g) = guard {
                    g.clear_ready();
                }
                true
            }
        }
    }
}

fn direction_of(header: &EventHeader) -> Direction {
    if header.direction == Direction::Egress as u8 {
        Direction::Egress
    } else {
        Direction::Ingress
    }
}

async fn agent_loop(args: super::AgentArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let config = load_config(args.config.as_deref())?;
    // Built before attaching, so a bad policy fails before anything touches the host.
    let privacy = if args.print_events {
        None
    } else {
        // Records kept centrally must keep their pseudonyms across restarts, or one number
        // becomes many in the store: an ephemeral key is for a look at stdout only.
        if args.ship.server.is_some() && config.privacy.key_file.is_none() {
            anyhow::bail!(
                "--server needs a stable pseudonymization key: set privacy.key_file in the \
                 configuration (create one with `collector keygen`)"
            );
        }
        let mut calls = config.calls.clone();
        calls.consent_header = config.privacy.consent.as_ref().map(|c| c.header.clone());
        Some((pseudonymizer(&config.privacy)?, calls))
    };
    let metrics = AgentMetrics::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    if let Some(addr) = &args.metrics_listen {
        // Bound before attaching (a bad address fails before anything touches the host) and
        // before privileges are dropped. Metrics carry no identifiers (see
        // `crate::metrics`), so any address may serve them, as Prometheus scrapes from
        // elsewhere.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics address {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics at /metrics");
        tasks.push(tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&metrics.metrics),
            stopped(),
        )));
    }
    let opts = CaptureOptions {
        sip_ports: args.sip_ports.clone(),
        snap_len: args.snap_len,
        rtp_sample_every: args.rtp_sample_every,
        ring_bytes: args.ring_bytes,
    };
    let mut cap = Capture::load(&opts)?;
    for iface in &args.ifaces {
        cap.attach(iface, args.xdp_mode)?;
    }
    tracing::info!(attachments = ?cap.attachments(), "attached");
    // Attached: from here on the agent needs CAP_BPF only (map access).
    let dropped = crate::harden::drop_privileges()?;
    tracing::info!(
        dropped = dropped.len(),
        "capabilities dropped, no_new_privs set"
    );
    // Tests and supervisors wait for this line before sending traffic.
    println!(
        "{}",
        serde_json::json!({ "ready": true, "attachments": cap.attachments() })
    );
    let mut ring = cap.take_ring()?;
    let mut wake = Wake {
        sigterm: signal(SignalKind::terminate())?,
        sigint: signal(SignalKind::interrupt())?,
        // The kernel submits without waking us (cheaper per packet); poll on a short timer.
        tick: tokio::time::interval(Duration::from_millis(10)),
    };
    let mut events = Vec::new();
    let mut bad = 0u64;
    let mut last_stats = Instant::now();
    let mut last_counters = Instant::now();

    let Some((pz, calls)) = privacy else {
        // --print-events: metadata only.
        loop {
            if !wake.next(&mut ring).await {
                break;
            }
            drain_ring(ring.get_mut(), &mut events, &mut bad);
            metrics
                .metrics
                .ring_records(u64::try_from(events.len()).unwrap_or(u64::MAX));
            for ev in events.drain(..) {
                print_event(&ev);
            }
            if last_counters.elapsed() >= Duration::from_secs(1) {
                last_counters = Instant::now();
                metrics.kernel(&cap.counters()?, bad);
            }
            if args.stats_every > 0 && last_stats.elapsed() >= Duration::from_secs(args.stats_every)
            {
                last_stats = Instant::now();
                println!("{}", serde_json::json!({ "counters": cap.counters()? }));
            }
        }
        drain_ring(ring.get_mut(), &mut events, &mut bad);
        for ev in events.drain(..) {
            print_event(&ev);
        }
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        print_final(&cap, bad)?;
        drop(ring);
        drop(cap);
        tracing::info!("detached");
        return Ok(());
    };

    let offset = capture::monotonic_to_unix_offset_ns().context("reading the clocks")?;
    let consent_header = calls.consent_header.clone();
    let decoder = DecoderConfig {
        sip_ports: args.sip_ports.clone(),
        frag: FragConfig {
            max_age_ns: config.frag_max_age_ns,
            ..FragConfig::default()
        },
        ..DecoderConfig::default()
    };
    let tracker = Tracker::new(calls, config.agent_id.clone(), CdrIds::Random);
    let mut pipe = Pipeline::new(
        decoder,
        tracker,
        KernelMedia::new(cap, offset),
        // The output thread applies the policy: identifiers stay in this process.
        None,
        // Timers and the kernel's stream statistics every second (a map read per direction
        // per hop of each call with media): the live view's per-second `MediaStats`.
        Schedule {
            tick_ns: 1_000_000_000,
            poll_ns: 1_000_000_000,
        },
    );
    // Live flows go to a bounded hub (never blocking the pipeline); CDRs either to stdout
    // or, with a collector, through the durable spool to the shipper.
    let hub = Arc::new(Hub::with_metrics(
        HubConfig::default(),
        Arc::clone(&metrics.metrics),
    ));
    if let Some(addr) = &args.watch_listen {
        let exposure = crate::rpc::listen::Exposure {
            tls: false,
            auth: false,
            insecure: args.insecure,
        };
        let listener = crate::rpc::listen::bind(addr, exposure).await?;
        tracing::info!(addr = %listener.local_addr()?, "watch api listening");
        tasks.push(tokio::spawn({
            let (hub, stop) = (Arc::clone(&hub), stopped());
            async move {
                if let Err(e) = crate::watch::serve_agent(listener, hub, stop).await {
                    tracing::warn!(error = %e, "watch api stopped");
                }
            }
        }));
    }
    let spool = match args.ship.connect_args() {
        Some(conn) => {
            let server = &conn.server;
            let key_path = (!args.spool_unsealed).then_some(args.spool_key.as_path());
            let spool: SharedSpool = Arc::new(std::sync::Mutex::new(
                Spool::open_with_key_file(&args.spool_dir, SpoolOptions::default(), key_path)
                    .with_context(|| format!("opening the spool {}", args.spool_dir.display()))?,
            ));
            let security = conn.security()?;
            let shipper = Shipper::new(Arc::clone(&spool), server.clone(), config.agent_id.clone())
                .with_security(security.clone());
            let spool_metrics = SpoolMetrics::new(
                Arc::clone(&metrics.metrics),
                &*crate::spool::lock(&spool)?,
                shipper.stats(),
            );
            tasks.push(tokio::spawn({
                let stop = stopped();
                async move {
                    if let Err(e) = shipper.run(stop).await {
                        tracing::error!(error = %e, "shipping stopped");
                    }
                }
            }));
            tasks.push(tokio::spawn({
                let fwd = ForwardConfig::new(server.clone(), config.agent_id.clone())
                    .with_security(security);
                let (hub, stop) = (Arc::clone(&hub), stopped());
                async move {
                    if let Err(e) = crate::watch::forward::forward(hub, fwd, stop).await {
                        tracing::warn!(error = %e, "flow forwarding stopped");
                    }
                }
            }));
            Some((spool, spool_metrics))
        }
        None => None,
    };
    let spool_handle = spool.as_ref().map(|(s, _)| Arc::clone(s));
    // Privacy, CDR output (JSON lines or the fsynced spool) and flow events run on their
    // own thread, so the ring is read while they work.
    let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<Round>(OUTPUT_ROUNDS);
    let output = std::thread::Builder::new()
        .name("output".into())
        .spawn({
            let privacy = Privacy { pz, consent_header };
            let hub = Arc::clone(&hub);
            move || output_thread(&out_rx, &privacy, spool, &hub)
        })
        .context("starting the output thread")?;
    let round = move |pipe: &mut Pipeline<KernelMedia>| {
        let r = Round {
            cdrs: pipe.tracker_mut().drain_cdr_outs(),
            flows: pipe.tracker_mut().drain_flows(),
        };
        // Only a failed output thread hangs up (its error is reported when it is joined).
        r.is_empty() || out_tx.send(r).is_ok()
    };
    loop {
        if !wake.next(&mut ring).await {
            break;
        }
        let records = capture::drain_ring_with(ring.get_mut(), &mut bad, |header, data| {
            feed(&mut pipe, header, data, offset);
        });
        metrics.metrics.ring_records(records);
        if let Some(now) = capture::monotonic_ns() {
            pipe.advance(now.saturating_add(offset));
        }
        pipe.flush_media();
        if last_counters.elapsed() >= Duration::from_secs(1) {
            last_counters = Instant::now();
            let counters = pipe.media().capture().counters()?;
            let lost = counters.get("ring_full").copied().unwrap_or(0);
            pipe.tracker_mut().set_ring_lost(lost);
            metrics.kernel(&counters, bad);
            metrics.pipeline(&pipe);
        }
        if !round(&mut pipe) {
            break;
        }
        if args.stats_every > 0 && last_stats.elapsed() >= Duration::from_secs(args.stats_every) {
            last_stats = Instant::now();
            println!(
                "{}",
                serde_json::json!({ "counters": pipe.media().capture().counters()? })
            );
        }
    }
    // Read what is left, close every call, then report the final counters.
    capture::drain_ring_with(ring.get_mut(), &mut bad, |header, data| {
        feed(&mut pipe, header, data, offset);
    });
    let now = capture::monotonic_ns().map_or(0, |n| n.saturating_add(offset));
    pipe.finish(now);
    round(&mut pipe);
    // Hanging up (the sender is the closure's) lets the output thread finish.
    drop(round);
    output
        .join()
        .map_err(|_| anyhow::anyhow!("the output thread panicked"))??;
    tracing::info!(calls = pipe.tracker().stats().calls, "stopping");
    // Give the shipper a bounded moment to get the last CDRs acknowledged; whatever is
    // left stays in the spool and goes out after the next start.
    if let Some(spool) = &spool_handle {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let done = crate::spool::lock(spool).map_or(true, |s| s.acked() >= s.last_seq());
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let _ = stop_tx.send(true);
    hub.close();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    print_final(pipe.media().capture(), bad)?;
    drop(ring);
    drop(pipe);
    tracing::info!("detached");
    Ok(())
}

/// Feeds one ring record (read in place) to the pipeline.
fn feed(pipe: &mut Pipeline<KernelMedia>, header: &EventHeader, data: &[u8], offset: u64) {
    // RTP header samples are for quality debugging; the kernel already counted them.
    if header.kind == EventKind::RtpSample as u8 {
        return;
    }
    let ts = header.ts_ns.saturating_add(offset);
    pipe.feed_frame(ts, data, Some(direction_of(header)));
    if pipe.media().queued() >= MAX_QUEUED {
        pipe.flush_media();
    }
}

/// Rounds of output the ring thread may be ahead of the output thread; beyond them it
/// waits (the ring then fills, and what the kernel cannot write is counted).
const OUTPUT_ROUNDS: usize = 256;

/// What one round of ring records produced, identifiers in clear.
struct Round {
    /// Final records are made on the output thread.
    cdrs: Vec<CdrOut>,
    flows: Vec<FlowOut>,
}

impl Round {
    fn is_empty(&self) -> bool {
        self.cdrs.is_empty() && self.flows.is_empty()
    }
}

/// The output thread: applies the privacy policy to every round, writes its CDRs (JSON
/// lines on stdout, or the spool) and publishes its flow events, until the ring thread
/// hangs up. A failed write to stdout ends it with the error.
fn output_thread(
    rounds: &std::sync::mpsc::Receiver<Round>,
    privacy: &Privacy,
    mut spool: Option<(SharedSpool, SpoolMetrics)>,
    hub: &Hub,
) -> anyhow::Result<()> {
    use std::sync::mpsc::RecvTimeoutError;
    let mut last_metrics = Instant::now();
    loop {
        // Woken at least once a second, for the spool's metrics while nothing happens.
        match rounds.recv_timeout(Duration::from_secs(1)) {
            Ok(Round { cdrs, flows }) => {
                let mut cdrs: Vec<Cdr> = cdrs.into_iter().map(CdrOut::build).collect();
                privacy.cdrs(&mut cdrs);
                emit_cdrs(cdrs, spool.as_mut())?;
                for f in flows {
                    hub.publish(privacy.flow(f));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_metrics.elapsed() >= Duration::from_secs(1) {
            last_metrics = Instant::now();
            if let Some((spool, m)) = &mut spool {
                m.spool(spool);
            }
        }
    }
    Ok(())
}

/// Prints the finished CDRs as JSON lines, or appends them to the spool (fsynced: from
/// then on they survive any crash and are resent until acknowledged).
fn emit_cdrs(
    cdrs: Vec<Cdr>,
    spool: Option<&mut (SharedSpool, SpoolMetrics)>,
) -> anyhow::Result<()> {
    if cdrs.is_empty() {
        return Ok(());
    }
    match spool {
        None => {
            // One write for the batch (stdout alone writes each line on its own).
            use std::io::Write;
            let mut out = Vec::with_capacity(cdrs.len() * 1024);
            for c in cdrs {
                serde_json::to_writer(&mut out, &c)?;
                out.push(b'\n');
            }
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&out)?;
            stdout.flush()?;
        }
        Some((spool, metrics)) => {
            let payloads: Vec<Vec<u8>> = cdrs.iter().map(prost::Message::encode_to_vec).collect();
            let mut s = crate::spool::lock(spool)?;
            match s.append_batch(payloads.iter().map(Vec::as_slice)) {
                Ok((_, last)) => {
                    metrics.spooled(u64::try_from(payloads.len()).unwrap_or(u64::MAX), last);
                }
                Err(e) => {
                    // Full or failing spool: the CDRs are refused and counted, never dropped
                    // silently (see the spool's policy).
                    tracing::error!(error = %e, cdrs = payloads.len(), "spooling CDRs failed");
                }
            }
        }
    }
    Ok(())
}

fn print_final(cap: &Capture, bad: u64) -> anyhow::Result<()> {
    let counters = cap.counters()?;
    println!(
        "{}",
        serde_json::json!({ "final": true, "counters": counters, "undecodable_events": bad })
    );
    Ok(())
}

/// Summary of one ring event that carries no identifier (no address, no payload).
#[derive(Serialize)]
struct EventLine<'a> {
    kind: &'a str,
    direction: &'a str,
    ifindex: u32,
    orig_len: u32,
    cap_len: u32,
    /// FNV-1a of the captured L4 payload (of the whole copy for a later fragment): lets a
    /// test compare packets with what it sent without anything being printed.
    digest: String,
    /// FNV-1a of the whole captured frame (from the Ethernet header).
    frame_digest: String,
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn print_event(ev: &RawEvent) {
    let kind = match EventKind::from_u8(ev.header.kind) {
        Some(EventKind::Sip) => "sip",
        Some(EventKind::Fragment) => "fragment",
        Some(EventKind::Rtcp) => "rtcp",
        Some(EventKind::RtpSample) => "rtp_sample",
        None => "unknown",
    };
    let direction = if ev.header.direction == 0 {
        "ingress"
    } else {
        "egress"
    };
    let line = EventLine {
        kind,
        direction,
        ifindex: ev.header.ifindex,
        orig_len: ev.header.orig_len,
        cap_len: ev.header.cap_len,
        digest: format!(
            "{:016x}",
            fnv1a(
                ev.data
                    .get(usize::from(ev.header.l7_off)..)
                    .unwrap_or_default()
            )
        ),
        frame_digest: format!("{:016x}", fnv1a(&ev.data)),
    };
    if let Ok(s) = serde_json::to_string(&line) {
        println!("{s}");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(text: &str) -> anyhow::Result<AgentConfig> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text)?;
        load_config(Some(&path))
    }

    #[test]
    fn fragment_timeout_is_read_and_bounded() {
        let c = config("[agent]\nid = \"a\"\nfragment_timeout_ms = 2000\n").unwrap();
        assert_eq!(c.frag_max_age_ns, 2_000_000_000);
        // Absent: the reassembler's default of 30 s.
        let c = config("[agent]\nid = \"a\"\n").unwrap();
        assert_eq!(c.frag_max_age_ns, 30_000_000_000);
        for bad in ["0", "99", "120001", "\"2s\"", "-5"] {
            let e = config(&format!("[agent]\nfragment_timeout_ms = {bad}\n"))
                .err()
                .unwrap();
            assert!(
                format!("{e:#}").contains("agent.fragment_timeout_ms"),
                "{bad}: {e:#}"
            );
        }
    }
}
