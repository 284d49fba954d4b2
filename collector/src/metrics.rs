//! Prometheus metrics of the agent and the collector: one [`Metrics`] registry with the
//! counters and gauges both sides report, encoded in the Prometheus text exposition format
//! (version 0.0.4) and served at `GET /metrics` by a tiny HTTP/1.1 responder
//! ([`serve`], `--metrics-listen ADDR`).
//!
//! Labels never carry identifiers: every label value is either a `&'static str` chosen by
//! the code (a reason, a stage), a bounded normalisation of protocol data (a SIP method
//! outside the registered set is counted as `OTHER`, a status code only by its class), or
//! an interface or program name from the configuration. No number, URI, address, Call-ID
//! or agent-supplied text can become a label, so neither privacy nor cardinality depends on
//! the traffic.
#![forbid(unsafe_code)]

use std::{
    future::Future,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use collector_proto::v1::LostEventsSource;
use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
    registry::{Registry, Unit},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

/// Content type of the text exposition format.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// Longest HTTP request head read from a scraper, in bytes.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait for a slot.
const MAX_CONCURRENT_SCRAPES: usize = 16;

/// SIP methods counted by name (RFC 3261 §27.4 and the registered extensions); any other
/// method is counted as `OTHER`.
const SIP_METHODS: [&str; 14] = [
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    program: String,
    iface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SipLabels {
    method: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: &'static str,
}

/// A step in a CDR's life from the call tracker to the collector's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdrStage {
    /// Built by the call tracker.
    Produced,
    /// Durably written to the agent's spool.
    Spooled,
    /// Sent to the collector.
    Sent,
    /// Acknowledged by the collector (durably stored there).
    Acknowledged,
}

impl CdrStage {
    fn label(self) -> &'static str {
        match self {
            CdrStage::Produced => "produced",
            CdrStage::Spooled => "spooled",
            CdrStage::Sent => "sent",
            CdrStage::Acknowledged => "acknowledged",
        }
    }
}

/// A storage operation whose latency is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    /// Storing an ingested batch.
    Ingest,
    /// Answering a query.
    Query,
    /// Erasing a subject.
    Erase,
    /// Re-rating a tenant's CDRs.
    Rerate,
}

impl StorageOp {
    fn label(self) -> &'static str {
        match self {
            StorageOp::Ingest => "ingest",
            StorageOp::Query => "query",
            StorageOp::Erase => "erase",
            StorageOp::Rerate => "rerate",
        }
    }
}

fn lost_source_label(source: LostEventsSource) -> &'static str {
    match source {
        LostEventsSource::Unspecified => "unspecified",
        LostEventsSource::KernelRing => "kernel_ring",
        LostEventsSource::AgentQueue => "agent_queue",
        LostEventsSource::Relay => "relay",
        LostEventsSource::ClientQueue => "client_queue",
    }
}

/// The method label of a SIP method: itself when registered, else `OTHER`.
pub fn sip_method_label(method: &str) -> &'static str {
    SIP_METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or("OTHER")
}

/// The class label of a status code (`1xx` .. `6xx`), `request` for none, `invalid` for a
/// code outside 100..=699.
pub fn status_class_label(status: Option<u16>) -> &'static str {
    match status {
        None => "request",
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(600..=699) => "6xx",
        Some(_) => "invalid",
    }
}

/// The metrics of one process (agent or collector); cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    packets: Family<PacketLabels, Counter>,
    sip_messages: Family<SipLabels, Counter>,
    sip_parse_errors: Family<ReasonLabel, Counter>,
    kernel_packets: Family<ReasonLabel, Counter>,
    decoder_packets: Family<ReasonLabel, Counter>,
    rtcp_parse_errors: Counter,
    ring_records: Counter,
    ring_undecodable: Counter,
    ring_lost: Counter,
    active_dialogs: Gauge,
    active_media_streams: Gauge,
    cdrs: Family<StageLabel, Counter>,
    spool_bytes: Gauge,
    spool_unacked: Gauge,
    spool_oldest_age: Gauge<f64, AtomicU64>,
    ship_reconnects: Counter,
    ingest_batches: Counter,
    ingest_cdrs: Counter,
    unrated_cdrs: Counter,
    storage_latency: Family<OpLabel, Histogram>,
    flow_events_published: Counter,
    flow_events_lost: Family<SourceLabel, Counter>,
    watch_subscribers: Gauge,
    watch_history: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero, names prefixed `collector_`.
    pub fn new() -> Self {
        let mut root = Registry::with_prefix("collector");
        let packets = Family::<PacketLabels, Counter>::default();
        let sip_messages = Family::<SipLabels, Counter>::default();
        let sip_parse_errors = Family::<ReasonLabel, Counter>::default();
        let kernel_packets = Family::<ReasonLabel, Counter>::default();
        let decoder_packets = Family::<ReasonLabel, Counter>::default();
        let rtcp_parse_errors = Counter::default();
        let ring_records = Counter::default();
        let ring_undecodable = Counter::default();
        let ring_lost = Counter::default();
        let active_dialogs = Gauge::default();
        let active_media_streams = Gauge::default();
        let cdrs = Family::<StageLabel, Counter>::default();
        let spool_bytes = Gauge::default();
        let spool_unacked = Gauge::default();
        let spool_oldest_age = Gauge::<f64, AtomicU64>::default();
        let ship_reconnects = Counter::default();
        let ingest_batches = Counter::default();
        let ingest_cdrs = Counter::default();
        let unrated_cdrs = Counter::default();
        let storage_latency = Family::<OpLabel, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_5, 2.0, 14))) as fn() -> Histogram,
        );
        let flow_events_published = Counter::default();
        let flow_events_lost = Family::<SourceLabel, Counter>::default();
        let watch_subscribers = Gauge::default();
        let watch_history = Gauge::default();
        let r = &mut root;
        r.register(
            "packets",
            "Packets seen by the kernel programs, per program and interface",
            packets.clone(),
        );
        r.register(
            "sip_messages",
            "SIP messages parsed, by method (CSeq method for responses) and status class",
            sip_messages.clone(),
        );
        r.register(
            "sip_parse_errors",
            "SIP messages (or their SDP bodies) that failed to parse, by reason",
            sip_parse_errors.clone(),
        );
        r.register(
            "kernel_packets",
            "Packets counted by the kernel programs (summed over CPUs), by reason: seen per \
             program (xdp_packets, tc_packets), handled (sip_copied, rtp_matched, ...) or \
             not fully handled (malformed, ring_full, ...)",
            kernel_packets.clone(),
        );
        r.register(
            "decoder_packets",
            "Frames the userspace decoder took from the ring, by reason: how they parsed \
             (udp_sip, parse_malformed, ...), IP fragment reassembly (frag_fragments, \
             frag_overlap, frag_timeout, ...) and TCP streams (tcp_segments, ...)",
            decoder_packets.clone(),
        );
        r.register(
            "rtcp_parse_errors",
            "RTCP datagrams of a known call that failed to parse (RFC 3550 §6.4 lengths, \
             versions, report counts); they change nothing in the call's record",
            rtcp_parse_errors.clone(),
        );
        r.register(
            "ring_records",
            "Records read from the kernel ring buffer and decoded",
            ring_records.clone(),
        );
        r.register(
            "ring_undecodable",
            "Records read from the kernel ring buffer that did not decode",
            ring_undecodable.clone(),
        );
        r.register(
            "ring_lost",
            "Records the kernel could not write because the ring buffer was full",
            ring_lost.clone(),
        );
        r.register(
            "active_dialogs",
            "Dialogs (calls) being tracked, ended ones still absorbing late messages included",
            active_dialogs.clone(),
        );
        r.register(
            "active_media_streams",
            "Media stream directions bound in the kernel's MEDIA map (pending entries for offers not yet answered are not counted)",
            active_media_streams.clone(),
        );
        r.register("cdrs", "CDRs by life-cycle stage", cdrs.clone());
        r.register(
            "spool_bytes",
            "Bytes in the agent's spool",
            spool_bytes.clone(),
        );
        r.register(
            "spool_unacked_cdrs",
            "CDRs in the agent's spool not yet acknowledged by the collector",
            spool_unacked.clone(),
        );
        r.register_with_unit(
            "spool_oldest_unacked_age",
            "Age of the oldest CDR in the agent's spool not yet acknowledged (0 when none)",
            Unit::Seconds,
            spool_oldest_age.clone(),
        );
        r.register(
            "ship_reconnects",
            "Shipping streams to the collector that failed and were retried",
            ship_reconnects.clone(),
        );
        r.register(
            "ingest_batches",
            "CDR batches ingested by the collector",
            ingest_batches.clone(),
        );
        r.register(
            "ingest_cdrs",
            "CDRs newly stored by the collector",
            ingest_cdrs.clone(),
        );
        r.register(
            "unrated_cdrs",
            "Answered CDRs stored unrated (no destination prefix, no rate table or no matching \
             rate row): fix the rate table, then re-rate",
            unrated_cdrs.clone(),
        );
        r.register(
            "storage_latency_seconds",
            "Latency of storage operations",
            storage_latency.clone(),
        );
        r.register(
            "flow_events_published",
            "Live flow events published to the watch hub",
            flow_events_published.clone(),
        );
        r.register(
            "flow_events_lost",
            "Live flow events lost, by where they were lost",
            flow_events_lost.clone(),
        );
        r.register(
            "watch_subscribers",
            "Watch clients streaming live flows",
            watch_subscribers.clone(),
        );
        r.register(
            "watch_history_events",
            "Live flow events held in the history ring for --last/--since (bounded by --watch-history)",
            watch_history.clone(),
        );
        Metrics {
            registry: root,
            packets,
            sip_messages,
            sip_parse_errors,
            kernel_packets,
            decoder_packets,
            rtcp_parse_errors,
            ring_records,
            ring_undecodable,
            ring_lost,
            active_dialogs,
            active_media_streams,
            cdrs,
            spool_bytes,
            spool_unacked,
            spool_oldest_age,
            ship_reconnects,
            ingest_batches,
            ingest_cdrs,
            unrated_cdrs,
            storage_latency,
            flow_events_published,
            flow_events_lost,
            watch_subscribers,
            watch_history,
        }
    }

    /// Adds `n` packets seen by `program` on `iface`.
    pub fn packets(&self, program: &str, iface: &str, n: u64) {
        self.packet_counter(program, iface).inc_by(n);
    }

    /// Raises the packet counter of `program` on `iface` to `total` (for totals summed from
    /// the kernel's per-CPU counters); a lower total (the programs were reloaded) is
    /// ignored, so the counter never goes backwards.
    pub fn set_packets_total(&self, program: &str, iface: &str, total: u64) {
        raise(&self.packet_counter(program, iface), total);
    }

    fn packet_counter(&self, program: &str, iface: &str) -> Counter {
        self.packets
            .get_or_create(&PacketLabels {
                program: program.to_string(),
                iface: iface.to_string(),
            })
            .clone()
    }

    /// Counts a SIP request (`status` = `None`) or response (`method` = its CSeq method).
    pub fn sip_message(&self, method: &str, status: Option<u16>) {
        self.sip_messages
            .get_or_create(&SipLabels {
                method: sip_method_label(method),
                status_class: status_class_label(status),
            })
            .inc();
    }

    /// Raises the SIP parse error counter of `reason` (a fixed name such as
    /// [`crate::sip::SipError::reason`]) to `total`, never lowering it.
    pub fn set_sip_parse_errors_total(&self, reason: &'static str, total: u64) {
        raise(
            &self.sip_parse_errors.get_or_create(&ReasonLabel { reason }),
            total,
        );
    }

    /// Raises the kernel counter `reason` (a `collector_common::Counter` name) to `total`,
    /// the sum over CPUs; a lower total (the programs were reloaded) is ignored.
    pub fn set_kernel_total(&self, reason: &'static str, total: u64) {
        raise(
            &self.kernel_packets.get_or_create(&ReasonLabel { reason }),
            total,
        );
    }

    /// Raises the decoder counter `reason` (a [`crate::net::NetStats::counters`] name) to
    /// `total`, never lowering it.
    pub fn set_decoder_total(&self, reason: &'static str, total: u64) {
        raise(
            &self.decoder_packets.get_or_create(&ReasonLabel { reason }),
            total,
        );
    }

    /// Raises the count of RTCP datagrams that failed to parse to `total`.
    pub fn set_rtcp_parse_errors_total(&self, total: u64) {
        raise(&self.rtcp_parse_errors, total);
    }

    /// Adds `n` records read from the ring buffer and decoded.
    pub fn ring_records(&self, n: u64) {
        self.ring_records.inc_by(n);
    }

    /// Raises the count of undecodable ring records to `total`.
    pub fn set_ring_undecodable_total(&self, total: u64) {
        raise(&self.ring_undecodable, total);
    }

    /// Raises the count of records lost to a full ring to `total`.
    pub fn set_ring_lost_total(&self, total: u64) {
        raise(&self.ring_lost, total);
    }

    /// Sets the number of dialogs being tracked.
    pub fn set_active_dialogs(&self, n: u64) {
        self.active_dialogs
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the number of media stream directions installed in the kernel.
    pub fn set_active_media_streams(&self, n: u64) {
        self.active_media_streams
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Adds `n` CDRs that reached `stage`.
    pub fn cdrs(&self, stage: CdrStage, n: u64) {
        self.cdrs
            .get_or_create(&StageLabel {
                stage: stage.label(),
            })
            .inc_by(n);
    }

    /// Raises the count of CDRs that reached `stage` to `total`.
    pub fn set_cdrs_total(&self, stage: CdrStage, total: u64) {
        raise(
            &self.cdrs.get_or_create(&StageLabel {
                stage: stage.label(),
            }),
            total,
        );
    }

    /// Sets the spool size in bytes.
    pub fn set_spool_bytes(&self, n: u64) {
        self.spool_bytes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the spool's unacknowledged CDRs and the age of the oldest of them (zero when
    /// there is none).
    pub fn set_spool_unacked(&self, n: u64, oldest_age: Duration) {
        self.spool_unacked.set(i64::try_from(n).unwrap_or(i64::MAX));
        let age = if n == 0 {
            0.0
        } else {
            oldest_age.as_secs_f64()
        };
        self.spool_oldest_age.set(age);
    }

    /// Raises the count of shipping reconnects to `total`.
    pub fn set_ship_reconnects_total(&self, total: u64) {
        raise(&self.ship_reconnects, total);
    }

    /// Counts one ingested batch that stored `stored` new CDRs.
    pub fn ingested(&self, stored: u64) {
        self.ingest_batches.inc();
        self.ingest_cdrs.inc_by(stored);
    }

    /// Counts answered CDRs stored unrated.
    pub fn unrated(&self, count: u64) {
        self.unrated_cdrs.inc_by(count);
    }

    /// Records how long a storage operation took.
    pub fn storage_latency(&self, op: StorageOp, elapsed: Duration) {
        self.storage_latency
            .get_or_create(&OpLabel { op: op.label() })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one event published to the watch hub.
    pub fn flow_event_published(&self) {
        self.flow_events_published.inc();
    }

    /// Adds `n` flow events lost at `source`.
    pub fn flow_events_lost(&self, source: LostEventsSource, n: u64) {
        self.flow_events_lost
            .get_or_create(&SourceLabel {
                source: lost_source_label(source),
            })
            .inc_by(n);
    }

    /// Sets the number of watch clients streaming.
    pub fn set_watch_subscribers(&self, n: usize) {
        self.watch_subscribers
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the number of events held in the watch history ring.
    pub fn set_watch_history(&self, n: usize) {
        self.watch_history.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error would only come from a label encoder.
        if prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Raises a counter to a cumulative `total` read elsewhere (kernel or shipper counters):
/// adds the difference, so the counter never goes backwards.
fn raise(c: &Counter, total: u64) {
    let now = c.get();
    if total > now {
        c.inc_by(total - now);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes. Anything else gets 404
/// (other paths) or 405 (other methods); every response closes the connection.
pub async fn serve<F>(listener: TcpListener, metrics: Arc<Metrics>, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_SCRAPES));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _peer)) = accepted else {
            // Out of descriptors or a reset before accept: back off briefly, keep serving.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(stream, &metrics)).await;
        });
    }
}

async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
        if head.len() > MAX_REQUEST_HEAD {
            return write_response(&mut stream, "431 Request Header Fields Too Large", "", "")
                .await;
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => {
            let body = metrics.encode();
            write_response(&mut stream, "200 OK", CONTENT_TYPE, &body).await
        }
        (b"GET", _) => {
            write_response(&mut stream, "404 Not Found", "text/plain", "not found\n").await
        }
        _ => {
            write_response(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n",
            )
            .await
        }
    }
}

async fn write_response(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        out.push_str("Content-Type: ");
        out.push_str(content_type);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// One HTTP/1.1 GET over a raw socket, as a scraper sends it; returns (status line,
    /// body).
    async fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_string(), body.to_string())
    }

    /// The value of the sample line `name{labels} value` (labels exactly as written).
    fn sample(body: &str, series: &str) -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.trim().parse().unwrap())
    }

    #[tokio::test]
    async fn scrape_over_http_sees_counters_move() {
        let metrics = Arc::new(Metrics::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&metrics), async {
            let _ = stopped.await;
        }));

        metrics.packets("sip_xdp", "eth0", 3);
        metrics.sip_message("invite", None);
        metrics.sip_message("INVITE", Some(180));
        metrics.sip_message("X-SECRET-METHOD", None);
        metrics.flow_events_lost(LostEventsSource::ClientQueue, 2);
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            sample(
                &body,
                r#"collector_packets_total{program="sip_xdp",iface="eth0"}"#
            ),
            Some(3.0),
            "{body}"
        );
        assert_eq!(
            sample(
                &body,
                r#"collector_sip_messages_total{method="INVITE",status_class="request"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &body,
                r#"collector_sip_messages_total{method="INVITE",status_class="1xx"}"#
            ),
            Some(1.0)
        );
        // An unregistered method never becomes a label value.
        assert!(!body.contains("X-SECRET"));
        assert_eq!(
            sample(
                &body,
                r#"collector_sip_messages_total{method="OTHER",status_class="request"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &body,
                r#"collector_flow_events_lost_total{source="client_queue"}"#
            ),
            Some(2.0)
        );
        assert!(body.contains("# TYPE collector_active_dialogs gauge"));

        // The counters move between scrapes; the total setter never goes backwards.
        metrics.set_packets_total("sip_xdp", "eth0", 10);
        metrics.set_packets_total("sip_xdp", "eth0", 4);
        metrics.set_active_dialogs(7);
        metrics.storage_latency(StorageOp::Ingest, Duration::from_millis(3));
        metrics.cdrs(CdrStage::Acknowledged, 5);
        let (_, body) = get(addr, "/metrics").await;
        assert_eq!(
            sample(
                &body,
                r#"collector_packets_total{program="sip_xdp",iface="eth0"}"#
            ),
            Some(10.0)
        );
        assert_eq!(sample(&body, "collector_active_dialogs"), Some(7.0));
        assert_eq!(
            sample(&body, r#"collector_cdrs_total{stage="acknowledged"}"#),
            Some(5.0)
        );
        // 3 ms falls in the 4 ms bucket (0.5 ms · 2^3) but not the 2 ms one.
        assert_eq!(
            sample(
                &body,
                r#"collector_storage_latency_seconds_bucket{op="ingest",le="0.002"}"#
            ),
            Some(0.0),
            "{body}"
        );
        assert_eq!(
            sample(
                &body,
                r#"collector_storage_latency_seconds_bucket{op="ingest",le="0.004"}"#
            ),
            Some(1.0)
        );

        let (status, _) = get(addr, "/other").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(sip_method_label("bye"), "BYE");
        assert_eq!(sip_method_label("+4420794600"), "OTHER");
        assert_eq!(status_class_label(Some(486)), "4xx");
        assert_eq!(status_class_label(Some(99)), "invalid");
        assert_eq!(status_class_label(Some(700)), "invalid");
    }
}
