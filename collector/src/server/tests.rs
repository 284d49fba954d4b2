//! In-process tests of the collector: real gRPC servers on 127.0.0.1, real SQLite files.
//! Expected values come from the fixtures written here (who called whom, when, with what
//! quality), and stored rows are checked with a separate SQLite connection, not through
//! the code under test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use collector_proto::v1::{
    admin_client::AdminClient, ingest_client::IngestClient, query_client::QueryClient,
    watch_client::WatchClient, Cdr, CdrQuery, CdrRecord, Disposition, EraseRequest, IngestRequest,
    MediaLeg, Party, RetentionStatusRequest, StatsRequest, WatchRequest,
};
use tokio::net::TcpSocket;
use tokio_stream::StreamExt as _;
use tonic::Code;

use super::store::{
    self, sqlite::SqliteStore, AuditEntry, CdrFilter, DailyAggregate, Erasure, IngestOutcome,
    RetentionRun, RetentionState, RowRewrite, Store, StoreError, StoreStats, TenantStats,
};
use super::ServeOptions;

/// A CDR between two pseudonymized users.
pub(crate) fn cdr(
    id: &str,
    caller: &str,
    callee: &str,
    start_ms: u64,
    disposition: Disposition,
) -> Cdr {
    Cdr {
        cdr_id: id.into(),
        call_id: format!("call-{id}"),
        caller: Some(Party {
            user: caller.into(),
            domain: "D-example".into(),
            display: String::new(),
        }),
        callee: Some(Party {
            user: callee.into(),
            domain: "D-example".into(),
            display: String::new(),
        }),
        start_time_ms: start_ms,
        end_time_ms: start_ms + 60_000,
        duration_ms: 60_000,
        billable_ms: if disposition == Disposition::Answered {
            50_000
        } else {
            0
        },
        disposition: disposition as i32,
        final_code: 200,
        ..Default::default()
    }
}

pub(crate) fn record(seq: u64, c: Cdr) -> CdrRecord {
    CdrRecord {
        sequence: seq,
        cdr: Some(c),
    }
}

/// A collector running on its own runtime, so dropping it kills every connection task
/// at once, like a crash.
pub(crate) struct TestServer {
    pub addr: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Starts a collector over `store` on 127.0.0.1:`port` (0 = any free port), with
    /// retention off (fixtures use times near the epoch).
    pub async fn start(store: Arc<dyn Store>, port: u16) -> Self {
        let opts = ServeOptions {
            retention: super::retention::RetentionPolicy {
                days: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        Self::start_with(store, port, opts).await
    }

    /// Same, with serving options.
    pub async fn start_with(store: Arc<dyn Store>, port: u16, opts: ServeOptions) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn(async move {
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            // The previous server's port may take a moment to free up.
            let mut tries = 0;
            let listener = loop {
                let sock = TcpSocket::new_v4().unwrap();
                sock.set_reuseaddr(true).unwrap();
                match sock.bind(addr).and_then(|()| sock.listen(128)) {
                    Ok(l) => break l,
                    Err(e) if tries < 100 => {
                        tries += 1;
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("bind {addr}: {e}"),
                }
            };
            tx.send(listener.local_addr().unwrap()).unwrap();
            super::serve(listener, store, opts, std::future::pending())
                .await
                .unwrap();
        });
        let addr = rx.await.unwrap();
        Self { addr, rt: Some(rt) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) fn sqlite(dir: &Path) -> (PathBuf, Arc<dyn Store>) {
    let path = dir.join("cdr.db");
    let store = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
    (path, store)
}

/// `(count, distinct sequences, min, max)` of an agent's rows, read directly.
pub(crate) fn rows(db: &Path, agent: &str) -> (i64, i64, i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT COUNT(*), COUNT(DISTINCT sequence), IFNULL(MIN(sequence),0), IFNULL(MAX(sequence),0)
         FROM cdrs WHERE agent_id = ?1",
        [agent],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .unwrap()
}

/// A store that lets `allow` batches through and then, for the next one, commits it but
/// never answers: the ack of a durably stored batch is lost, then the server hangs.
pub(crate) struct AckLosingStore {
    pub inner: Arc<dyn Store>,
    pub allow: AtomicUsize,
}

#[tonic::async_trait]
impl Store for AckLosingStore {
    async fn ingest_into(
        &self,
        agent_id: &str,
        tenant: &str,
        batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError> {
        let empty = batch.is_empty();
        let out = self.inner.ingest_into(agent_id, tenant, batch).await?;
        if !empty
            && self
                .allow
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |a| a.checked_sub(1))
                .is_err()
        {
            std::future::pending::<()>().await;
        }
        Ok(out)
    }
    async fn cursor(&self, agent_id: &str) -> Result<u64, StoreError> {
        self.inner.cursor(agent_id).await
    }
    async fn query(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        self.inner.query(filter).await
    }
    async fn query_call_legs(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        self.inner.query_call_legs(filter).await
    }
    async fn erase(&self, e: Erasure) -> Result<u64, StoreError> {
        self.inner.erase(e).await
    }
    async fn audit(&self, e: AuditEntry) -> Result<(), StoreError> {
        self.inner.audit(e).await
    }
    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_log(limit).await
    }
    async fn retain(&self, cutoff: u64, now: u64) -> Result<Option<RetentionRun>, StoreError> {
        self.inner.retain(cutoff, now).await
    }
    async fn retain_tenant(
        &self,
        tenant: &str,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        self.inner.retain_tenant(tenant, cutoff_ms, now_ms).await
    }

    async fn retention_state(&self) -> Result<RetentionState, StoreError> {
        self.inner.retention_state().await
    }
    async fn aggregates(&self, from: u64, to: u64) -> Result<Vec<DailyAggregate>, StoreError> {
        self.inner.aggregates(from, to).await
    }
    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats, StoreError> {
        self.inner.stats(tenant).await
    }
    async fn tenants(&self) -> Result<Vec<TenantStats>, StoreError> {
        self.inner.tenants().await
    }

    async fn delete_tenant(&self, tenant: &str, audit: AuditEntry) -> Result<u64, StoreError> {
        self.inner.delete_tenant(tenant, audit).await
    }

    async fn rotate_key(&self, tenant: &str) -> Result<u32, StoreError> {
        self.inner.rotate_key(tenant).await
    }

    async fn rewrite(&self, tenant: &str, f: RowRewrite) -> Result<u64, StoreError> {
        self.inner.rewrite(tenant, f).await
    }

    async fn reseal(&self, tenant: &str) -> Result<u64, StoreError> {
        self.inner.reseal(tenant).await
    }
    async fn store_rates(
        &self,
        tenant: &str,
        version: &str,
        csv: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.inner.store_rates(tenant, version, csv, now_ms).await
    }
    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<super::store::billing::UsageGroup>, StoreError> {
        self.inner.usage(tenant, from_ms, to_ms).await
    }
    async fn rerate(
        &self,
        tenant: &str,
        since_ms: u64,
        audit: super::store::AuditEntry,
    ) -> Result<super::store::billing::RerateOutcome, StoreError> {
        self.inner.rerate(tenant, since_ms, audit).await
    }
}

async fn send(
    client: &mut IngestClient<tonic::transport::Channel>,
    reqs: Vec<IngestRequest>,
) -> Result<Vec<u64>, tonic::Status> {
    let n = reqs.len();
    let mut acks = client.stream(tokio_stream::iter(reqs)).await?.into_inner();
    let mut out = Vec::new();
    while out.len() < n {
        match acks.message().await? {
            Some(a) => out.push(a.highest_sequence),
            None => break,
        }
    }
    Ok(out)
}

fn batch(agent: &str, seqs: std::ops::RangeInclusive<u64>) -> IngestRequest {
    IngestRequest {
        agent_id: agent.into(),
        batch: seqs
            .map(|s| {
                record(
                    s,
                    cdr(
                        &format!("c{s}"),
                        "P-a",
                        "P-b",
                        1_000 + s,
                        Disposition::Answered,
                    ),
                )
            })
            .collect(),
    }
}

#[tokio::test]
async fn resent_sequences_are_not_stored_twice() {
    let t = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(t.path());
    let server = TestServer::start(store, 0).await;
    let mut c = IngestClient::connect(server.url()).await.unwrap();
    let acks = send(&mut c, vec![batch("A", 1..=10), batch("A", 5..=15)])
        .await
        .unwrap();
    assert_eq!(acks, vec![10, 15]);
    // A new stream resending everything, then probing with an empty batch.
    let acks = send(
        &mut c,
        vec![
            batch("A", 1..=15),
            IngestRequest {
                agent_id: "A".into(),
                batch: vec![],
            },
        ],
    )
    .await
    .unwrap();
    assert_eq!(acks, vec![15, 15]);
    assert_eq!(rows(&db, "A"), (15, 15, 1, 15));
    // Another agent's sequences are independent.
    assert_eq!(
        send(&mut c, vec![batch("B", 1..=3)]).await.unwrap(),
        vec![3]
    );
    assert_eq!(rows(&db, "B"), (3, 3, 1, 3));
}

#[tokio::test]
async fn invalid_batches_are_refused_with_invalid_argument() {
    let t = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(t.path());
    let server = TestServer::start(store, 0).await;
    let mut c = IngestClient::connect(server.url()).await.unwrap();
    let mut decreasing = batch("A", 1..=3);
    decreasing.batch.swap(0, 2);
    let err = send(&mut c, vec![decreasing]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = send(&mut c, vec![batch("", 1..=1)]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = send(&mut c, vec![batch("A", 1..=1), batch("Z", 2..=2)])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "agent changed within a stream"
    );
    // Only the one valid batch (A:1) was stored.
    assert_eq!(rows(&db, "A"), (1, 1, 1, 1));
    assert_eq!(rows(&db, "Z").0, 0);
}

#[tokio::test]
async fn erase_deletes_exactly_the_subjects_cdrs_and_audits_the_pseudonym() {
    let t = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(t.path());
    let mut cdrs = vec![
        cdr("1", "P-alice", "P-bob", 1, Disposition::Answered),
        cdr("2", "P-bob", "P-alice", 2, Disposition::Busy),
        cdr("3", "P-carol", "P-bob", 3, Disposition::Answered),
        cdr("4", "P-alice", "P-carol", 4, Disposition::NoAnswer),
        cdr("5", "P-carol", "P-dave", 5, Disposition::Answered),
        cdr("6", "P-bob", "P-carol", 6, Disposition::Answered),
    ];
    // Alice appears only as a display-name pseudonym here: still her record.
    cdrs.push(cdr("7", "P-dave", "P-bob", 7, Disposition::Answered));
    cdrs[6].callee.as_mut().unwrap().display = "P-alice".into();
    // "P-alice-2" must not match "P-alice" (exact match, no prefix).
    cdrs.push(cdr("8", "P-alice-2", "P-bob", 8, Disposition::Answered));
    let recs = cdrs
        .into_iter()
        .zip(1..)
        .map(|(c, s)| record(s, c))
        .collect();
    store.ingest("A", recs).await.unwrap();

    let server = TestServer::start(store, 0).await;
    let mut q = QueryClient::connect(server.url()).await.unwrap();
    let ids = |v: Vec<Cdr>| v.into_iter().map(|c| c.cdr_id).collect::<Vec<_>>();
    let query = CdrQuery {
        pseudonym: "P-alice".into(),
        ..Default::default()
    };
    let found: Vec<Cdr> = q
        .list_cdrs(query.clone())
        .await
        .unwrap()
        .into_inner()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(ids(found), vec!["7", "4", "2", "1"]);

    let mut a = AdminClient::connect(server.url()).await.unwrap();
    let resp = a
        .erase(EraseRequest {
            tenant: String::new(),
            pseudonyms: vec!["P-alice".into()],
            reference: "ticket-42".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.deleted, 4);
    let found: Vec<Cdr> = q
        .list_cdrs(query)
        .await
        .unwrap()
        .into_inner()
        .map(Result::unwrap)
        .collect()
        .await;
    assert!(found.is_empty());
    let left: Vec<Cdr> = q
        .list_cdrs(CdrQuery::default())
        .await
        .unwrap()
        .into_inner()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(ids(left), vec!["8", "6", "5", "3"]);

    let c = rusqlite::Connection::open(&db).unwrap();
    let (action, actor, subjects, reference, affected): (String, String, String, String, i64) = c
        .query_row(
            "SELECT action, actor, subjects, reference, affected FROM audit_log
             WHERE action = 'erase'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!((action.as_str(), actor.as_str()), ("erase", "anonymous"));
    assert_eq!(
        serde_json::from_str::<Vec<String>>(&subjects).unwrap(),
        vec!["P-alice"]
    );
    assert_eq!((reference.as_str(), affected), ("ticket-42", 4));

    let err = a
        .erase(EraseRequest {
            tenant: String::new(),
            pseudonyms: vec![],
            reference: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

fn leg(loss_pct: f64, mos: f64) -> MediaLeg {
    MediaLeg {
        loss_pct,
        mos,
        ..Default::default()
    }
}

#[tokio::test]
async fn query_filters_match_the_fixture() {
    let t = tempfile::tempdir().unwrap();
    let (_db, store) = sqlite(t.path());
    let mut c1 = cdr("1", "P-a", "P-b", 1_000, Disposition::Answered);
    c1.media = vec![leg(0.5, 4.3), leg(6.0, 3.1)];
    let mut c2 = cdr("2", "P-a", "P-c", 2_000, Disposition::Busy);
    c2.media = vec![leg(0.0, 0.0)]; // no MOS computed
    let mut c3 = cdr("3", "P-c", "P-b", 3_000, Disposition::Answered);
    c3.media = vec![leg(2.0, 4.0)];
    let c4 = cdr("4", "P-d", "P-a", 4_000, Disposition::Answered);
    store
        .ingest("A", vec![record(1, c1), record(2, c2), record(3, c3)])
        .await
        .unwrap();
    store.ingest("B", vec![record(1, c4)]).await.unwrap();
    let server = TestServer::start(store, 0).await;
    let mut q = QueryClient::connect(server.url()).await.unwrap();
    let mut run = async |query: CdrQuery| -> Vec<String> {
        let s = q.list_cdrs(query).await.unwrap().into_inner();
        s.map(|c| c.unwrap().cdr_id).collect().await
    };
    assert_eq!(run(CdrQuery::default()).await, ["4", "3", "2", "1"]);
    assert_eq!(
        run(CdrQuery {
            start_from_ms: 2_000,
            start_to_ms: 4_000,
            ..Default::default()
        })
        .await,
        ["3", "2"]
    );
    assert_eq!(
        run(CdrQuery {
            pseudonym: "P-b".into(),
            ..Default::default()
        })
        .await,
        ["3", "1"]
    );
    assert_eq!(
        run(CdrQuery {
            disposition: Disposition::Answered as i32,
            ..Default::default()
        })
        .await,
        ["4", "3", "1"]
    );
    assert_eq!(
        run(CdrQuery {
            agent_id: "B".into(),
            ..Default::default()
        })
        .await,
        ["4"]
    );
    assert_eq!(
        run(CdrQuery {
            min_loss_pct: Some(2.0),
            ..Default::default()
        })
        .await,
        ["3", "1"]
    );
    assert_eq!(
        run(CdrQuery {
            min_loss_pct: Some(5.0),
            ..Default::default()
        })
        .await,
        ["1"]
    );
    assert_eq!(
        run(CdrQuery {
            max_mos: Some(3.5),
            ..Default::default()
        })
        .await,
        ["1"]
    );
    assert_eq!(
        run(CdrQuery {
            max_mos: Some(4.0),
            ..Default::default()
        })
        .await,
        ["3", "1"]
    );
    assert_eq!(
        run(CdrQuery {
            limit: 2,
            ..Default::default()
        })
        .await,
        ["4", "3"]
    );
    let err = q
        .list_cdrs(CdrQuery {
            start_from_ms: 5,
            start_to_ms: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = q
        .list_cdrs(CdrQuery {
            disposition: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A leg of a call through an SBC, linked by `cid` (empty: not linked).
fn call_leg(id: &str, cid: &str, from: &str, to: &str, start_ms: u64) -> Cdr {
    let mut c = cdr(id, from, to, start_ms, Disposition::Answered);
    c.correlation_id = cid.into();
    c.correlation_method = if cid.is_empty() { "" } else { "media" }.into();
    c
}

#[tokio::test]
async fn list_calls_groups_legs_and_audits_every_leg_read() {
    let t = tempfile::tempdir().unwrap();
    let (_db, store) = sqlite(t.path());
    // X: P-a → SBC → P-b; the egress leg answers and is stored first.
    let mut x_out = call_leg("x_out", "X", "P-sbc", "P-b", 1_040);
    x_out.final_code = 200;
    let mut x_in = call_leg("x_in", "X", "P-a", "P-sbc", 1_000);
    x_in.final_code = 183;
    x_in.billable_ms = 49_000;
    let z = call_leg("z", "", "P-a", "P-c", 2_000);
    store
        .ingest("A", vec![record(1, x_out), record(2, x_in), record(3, z)])
        .await
        .unwrap();
    let server = TestServer::start(Arc::clone(&store), 0).await;
    let mut q = QueryClient::connect(server.url()).await.unwrap();
    let mut run = async |query: CdrQuery| -> Vec<collector_proto::v1::Call> {
        let s = q.list_calls(query).await.unwrap().into_inner();
        s.map(|c| c.unwrap()).collect().await
    };
    let all = run(CdrQuery::default()).await;
    // Newest first: z (2 000), then X (1 000).
    let shape: Vec<(String, u32, Vec<String>)> = all
        .iter()
        .map(|c| {
            (
                c.correlation_id.clone(),
                c.leg_count,
                c.legs.iter().map(|l| l.cdr_id.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (String::new(), 1, vec!["z".to_string()]),
            (
                "X".to_string(),
                2,
                vec!["x_in".to_string(), "x_out".to_string()]
            ),
        ]
    );
    let x = &all[1];
    assert_eq!(x.correlation_method, "media");
    assert_eq!(x.caller.as_ref().unwrap().user, "P-a");
    assert_eq!(x.callee.as_ref().unwrap().user, "P-b");
    assert_eq!(
        (x.start_time_ms, x.final_code, x.billable_ms),
        (1_000, 183, 49_000)
    );
    // Only x_out names P-b: the call comes whole.
    let by_b = run(CdrQuery {
        pseudonym: "P-b".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(by_b.len(), 1);
    assert_eq!(by_b[0].leg_count, 2);
    // The limit counts calls.
    assert_eq!(
        run(CdrQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .len(),
        1
    );
    let err = q
        .list_calls(CdrQuery {
            disposition: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Each read is audited with the view and the number of legs it returned: newest
    // first, the limited read (z: 1 leg), the P-b read (2 legs), the first read (3 legs).
    let log = store.audit_log(10).await.unwrap();
    let got: Vec<(Vec<String>, u64)> = log
        .iter()
        .map(|e| (e.subjects.clone(), e.affected))
        .collect();
    assert_eq!(
        got,
        [(vec![], 1), (vec!["P-b".to_string()], 2), (vec![], 3)]
    );
    for e in &log {
        let r: serde_json::Value = serde_json::from_str(&e.reference).unwrap();
        assert_eq!(r["view"], "calls", "{}", e.reference);
    }
}

#[tokio::test]
async fn health_serves_watch_is_unimplemented_and_retention_status_answers() {
    let t = tempfile::tempdir().unwrap();
    let (_db, store) = sqlite(t.path());
    let start = super::retention::now_ms();
    store
        .ingest(
            "A",
            vec![record(
                1,
                cdr("1", "P-a", "P-b", start, Disposition::Answered),
            )],
        )
        .await
        .unwrap();
    let server = TestServer::start_with(store, 0, ServeOptions::default()).await;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut h = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: "collector.v1.Ingest".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut w = WatchClient::connect(server.url()).await.unwrap();
    // No follow, no history asked for: an empty stream that ends at once.
    let mut flows = w.flows(WatchRequest::default()).await.unwrap().into_inner();
    assert!(flows.next().await.is_none());
    let mut a = AdminClient::connect(server.url()).await.unwrap();
    let status = a
        .retention_status(RetentionStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    // The default policy (90 days) keeps the fixture's CDR, started now.
    assert_eq!(status.retention_days, 90);
    assert_eq!(status.oldest_start_time_ms, start);
    let stats = a.stats(StatsRequest::default()).await.unwrap().into_inner();
    assert_eq!(stats.cdrs_stored, 1);
    assert_eq!(
        (
            stats.agents[0].agent_id.as_str(),
            stats.agents[0].highest_sequence
        ),
        ("A", 1)
    );
}

#[test]
fn unprotected_listener_only_on_loopback_unless_insecure() {
    use crate::rpc::listen::{check_listen, Exposure, ListenError};
    let e = |tls, auth, insecure| Exposure {
        tls,
        auth,
        insecure,
    };
    for ok in ["127.0.0.1:1", "[::1]:1", "127.10.0.1:1"] {
        assert!(
            check_listen(ok.parse().unwrap(), e(false, false, false)).is_ok(),
            "{ok}"
        );
    }
    for refused in ["0.0.0.0:1", "[::]:1", "10.0.0.1:1", "[2001:db8::1]:1"] {
        let a: SocketAddr = refused.parse().unwrap();
        assert!(
            matches!(
                check_listen(a, e(false, true, false)),
                Err(ListenError::PlaintextNonLoopback { .. })
            ),
            "{refused}"
        );
        assert!(
            matches!(
                check_listen(a, e(true, false, false)),
                Err(ListenError::UnauthenticatedNonLoopback { .. })
            ),
            "{refused}"
        );
        assert!(check_listen(a, e(true, true, false)).is_ok());
        assert!(check_listen(a, e(false, false, true)).is_ok());
    }
}

#[test]
fn schema_is_versioned_and_a_newer_database_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("cdr.db");
    let p = path.to_str().unwrap();
    drop(SqliteStore::open(p).unwrap());
    drop(SqliteStore::open(p).unwrap()); // reopening applies nothing twice
    let c = rusqlite::Connection::open(&path).unwrap();
    let versions: Vec<u32> = c
        .prepare("SELECT version FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    c.execute("INSERT INTO schema_version (version) VALUES (99)", [])
        .unwrap();
    drop(c);
    assert!(matches!(
        SqliteStore::open(p),
        Err(StoreError::SchemaTooNew {
            found: 99,
            supported: 9
        })
    ));
}

#[tokio::test]
async fn storage_url_names_the_backend_and_never_echoes_credentials() {
    for (url, why) in [
        (
            "postgres://user:secret@db:notaport/cdr",
            "not a valid postgresql",
        ),
        ("mysql://x", "expected sqlite"),
        ("sqlite://", "empty"),
    ] {
        let e = store::open(url).await.err().unwrap().to_string();
        assert!(e.contains(why), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}

#[tokio::test]
async fn a_v1_database_migrates_and_retention_reads_the_codec_from_the_stored_cdr() {
    use prost::Message as _;
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("cdr.db");
    // A database as release v1 left it: one CDR stored before the codec column existed.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(store::sqlite::MIGRATIONS[0]).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);",
        )
        .unwrap();
        let mut old = cdr(
            "old",
            "P-a",
            "P-b",
            5 * 86_400_000 + 1,
            Disposition::Answered,
        );
        old.codecs = vec!["G722".into()];
        old.media = vec![leg(3.0, 3.2)];
        c.execute(
            "INSERT INTO cdrs (agent_id, sequence, cdr_id, call_id, caller_user, caller_domain,
                caller_display, callee_user, callee_domain, callee_display, start_time_ms,
                end_time_ms, duration_ms, billable_ms, disposition, final_code, max_loss_pct,
                min_mos, interim, cdr)
             VALUES ('A', 1, 'old', 'c', 'P-a', 'D', '', 'P-b', 'D', '', ?1, 0, 60000, 50000,
                1, 200, 3.0, 3.2, 0, ?2)",
            rusqlite::params![5 * 86_400_000i64 + 1, old.encode_to_vec()],
        )
        .unwrap();
    }
    let s = SqliteStore::open(path.to_str().unwrap()).unwrap();
    let run = s.retain(6 * 86_400_000, 7).await.unwrap().unwrap();
    assert_eq!((run.deleted, run.folded), (1, 1));
    let agg = s.aggregates(0, 100).await.unwrap();
    assert_eq!(agg.len(), 1);
    assert_eq!(
        (agg[0].key.day, agg[0].key.codec.as_str(), agg[0].calls),
        (5, "G722", 1)
    );
    // Worst MOS 3.2 is in [3.0, 3.5): bucket 4; loss 3 % in [2, 5): bucket 4.
    assert_eq!(agg[0].mos_hist[4], 1);
    assert_eq!(agg[0].loss_hist[4], 1);
}

#[tokio::test]
async fn a_v2_database_gets_correlation_ids_from_the_stored_cdrs() {
    use prost::Message as _;
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("cdr.db");
    // A database as release v2 left it: two linked legs stored before the column existed.
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(store::sqlite::MIGRATIONS[0]).unwrap();
        c.execute_batch(store::sqlite::MIGRATIONS[1]).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1), (2);",
        )
        .unwrap();
        for (seq, leg) in [
            call_leg("in", "X", "P-a", "P-sbc", 1_000),
            call_leg("out", "X", "P-sbc", "P-b", 1_040),
            call_leg("alone", "", "P-b", "P-c", 2_000),
        ]
        .into_iter()
        .enumerate()
        {
            c.execute(
                "INSERT INTO cdrs (agent_id, sequence, cdr_id, call_id, caller_user,
                    caller_domain, caller_display, callee_user, callee_domain, callee_display,
                    start_time_ms, end_time_ms, duration_ms, billable_ms, disposition,
                    final_code, max_loss_pct, min_mos, interim, cdr, codec)
                 VALUES ('A', ?1, ?2, ?3, ?4, 'D', '', ?5, 'D', '', ?6, 0, 0, 0, 1, 200, NULL,
                    NULL, 0, ?7, '')",
                rusqlite::params![
                    seq as i64 + 1,
                    leg.cdr_id,
                    leg.call_id,
                    leg.caller.as_ref().unwrap().user,
                    leg.callee.as_ref().unwrap().user,
                    leg.start_time_ms as i64,
                    leg.encode_to_vec()
                ],
            )
            .unwrap();
        }
    }
    let s = SqliteStore::open(path.to_str().unwrap()).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    let ids: Vec<(String, String)> = c
        .prepare("SELECT cdr_id, correlation_id FROM cdrs ORDER BY sequence")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want = [("in", "X"), ("out", "X"), ("alone", "")];
    assert_eq!(ids, want.map(|(a, b)| (a.to_string(), b.to_string())));
    // P-a is only in the ingress leg; the call view finds its sibling through the column.
    let mut legs: Vec<String> = s
        .query_call_legs(CdrFilter {
            pseudonyms: vec!["P-a".into()],
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cdr_id)
        .collect();
    legs.sort();
    assert_eq!(legs, ["in", "out"]);
}

/// Group commit (SQLite): batches sent at once by many agents are stored together, each
/// exactly once with its own outcome, and a batch refused (an agent bound to another
/// tenant) fails alone, without its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_are_stored_together_and_a_refused_one_fails_alone() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("cdr.db");
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_str().unwrap()).unwrap());
    let batch = |agent: u64, first: u64| -> Vec<CdrRecord> {
        (first..first + 50)
            .map(|q| {
                let id = format!("a{agent}-c{q}");
                record(q, cdr(&id, "U-a", "U-b", 1_000 + q, Disposition::Answered))
            })
            .collect()
    };
    s.ingest_into("bound", "other", batch(99, 1)).await.unwrap();
    let mut tasks = Vec::new();
    for agent in 0..8u64 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..4 {
                let b = batch(agent, 1 + round * 50);
                outcomes.push(s.ingest(&format!("sbc{agent}"), b).await.unwrap());
            }
            outcomes
        }));
    }
    let refused = {
        let s = Arc::clone(&s);
        tokio::spawn(async move { s.ingest("bound", batch(99, 51)).await })
    };
    for task in tasks {
        for (round, o) in (0u64..).zip(task.await.unwrap()) {
            assert_eq!((o.stored, o.duplicates), (50, 0));
            assert_eq!(o.highest_sequence, 50 * (round + 1));
        }
    }
    assert!(matches!(
        refused.await.unwrap(),
        Err(StoreError::AgentTenant { .. })
    ));
    let stats = s.stats(None).await.unwrap();
    assert_eq!(stats.cdrs_stored, 8 * 4 * 50 + 50);
    let bound = stats.agents.iter().find(|a| a.agent_id == "bound").unwrap();
    assert_eq!(
        bound.highest_sequence, 50,
        "the refused batch stored nothing"
    );
    // A resend of everything is skipped by the cursors.
    let again = s.ingest("sbc3", batch(3, 1)).await.unwrap();
    assert_eq!((again.stored, again.duplicates), (0, 50));
}
