//! In-process shipping tests: a real spool, a real collector on 127.0.0.1, the stored rows
//! read back with a separate SQLite connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::{
    collections::BTreeSet,
    path::Path,
    sync::{atomic::AtomicUsize, Arc, Mutex},
    time::Duration,
};

use collector_proto::v1::Disposition;
use prost::Message as _;
use tonic::Code;

use super::*;
use crate::{
    server::tests::{cdr, record, rows, sqlite, AckLosingStore, TestServer},
    spool::{Spool, SpoolOptions, SpoolSealing},
};

/// A sealed spool, as the agent opens it by default: what is shipped is opened first.
fn spool_with(dir: &Path, n: u64) -> SharedSpool {
    let key = crate::privacy::seal::MasterKey::generate().unwrap();
    let sealing = SpoolSealing::Sealed(&key);
    let mut s = Spool::open(dir.join("spool"), SpoolOptions::default(), sealing).unwrap();
    append(&mut s, 1..=n);
    Arc::new(Mutex::new(s))
}

fn append(s: &mut Spool, ids: std::ops::RangeInclusive<u64>) {
    for i in ids {
        let c = cdr(
            &format!("cdr-{i}"),
            "P-a",
            "P-b",
            1_000 + i,
            Disposition::Answered,
        );
        assert_eq!(s.append(&c.encode_to_vec()).unwrap(), i);
    }
}

fn small_batches() -> ShipOptions {
    ShipOptions {
        batch_records: 7,
        max_in_flight: 3,
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..ShipOptions::default()
    }
}

/// Runs a shipper in the background; the returned sender stops it.
fn spawn(
    spool: &SharedSpool,
    url: String,
    agent: &str,
) -> (
    Arc<ShipStats>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ShipError>>,
) {
    let shipper = Shipper::new(Arc::clone(spool), url, agent).with_options(small_batches());
    let stats = shipper.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shipper.run(async move {
        let _ = rx.await;
    }));
    (stats, tx, task)
}

async fn wait_acked(spool: &SharedSpool, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while spool::lock(spool).unwrap().acked() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "spool never acked {want}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stored_ids(db: &Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT cdr_id FROM cdrs ORDER BY sequence")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn expected_ids(n: u64) -> Vec<String> {
    (1..=n).map(|i| format!("cdr-{i}")).collect()
}

#[tokio::test]
async fn every_spooled_cdr_is_stored_exactly_once_and_leaves_the_spool() {
    let t = tempfile::tempdir().unwrap();
    let spool = spool_with(t.path(), 200);
    let (db, store) = sqlite(t.path());
    let server = TestServer::start(store, 0).await;
    let (stats, stop, task) = spawn(&spool, server.url(), "agent-1");
    wait_acked(&spool, 200).await;
    // Records appended while the stream is open are shipped too.
    append(&mut spool::lock(&spool).unwrap(), 201..=230);
    wait_acked(&spool, 230).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(rows(&db, "agent-1"), (230, 230, 1, 230));
    assert_eq!(stored_ids(&db), expected_ids(230));
    let s = spool::lock(&spool).unwrap().stats();
    assert_eq!((s.acked, s.pending), (230, 0));
    // One healthy session sends each record once.
    assert_eq!(stats.records_sent.load(Ordering::Relaxed), 230);
    assert_eq!(stats.sessions.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn collector_crash_after_commit_before_ack_then_restart_stores_exactly_once() {
    let t = tempfile::tempdir().unwrap();
    let spool = spool_with(t.path(), 150);
    let (db, inner) = sqlite(t.path());
    // Server A acks 4 batches, commits the 5th without acking it, then hangs.
    let lossy: Arc<dyn crate::server::store::Store> = Arc::new(AckLosingStore {
        inner,
        allow: AtomicUsize::new(4),
    });
    let a = TestServer::start(lossy, 0).await;
    let port = a.addr.port();
    let (stats, stop, task) = spawn(&spool, a.url(), "agent-1");
    wait_acked(&spool, 28).await;
    // The 5th batch (29..=35) reaches the database, but its ack never comes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while rows(&db, "agent-1").0 < 35 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(spool::lock(&spool).unwrap().acked(), 28);
    // Crash: every task of server A dies with its runtime.
    drop(a);
    // More CDRs are produced while the collector is down.
    append(&mut spool::lock(&spool).unwrap(), 151..=170);
    let (_db, store) = sqlite(t.path());
    let b = TestServer::start(store, port).await;
    wait_acked(&spool, 170).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    drop(b);
    assert_eq!(rows(&db, "agent-1"), (170, 170, 1, 170));
    assert_eq!(stored_ids(&db), expected_ids(170));
    assert!(stats.retries.load(Ordering::Relaxed) >= 1);
    assert!(stats.sessions.load(Ordering::Relaxed) >= 2);
}

#[tokio::test]
async fn shipper_waits_for_a_collector_that_is_not_up_yet() {
    let t = tempfile::tempdir().unwrap();
    let spool = spool_with(t.path(), 20);
    // Find a free port, then leave it closed for a while.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stats, stop, task) = spawn(&spool, format!("http://127.0.0.1:{port}"), "agent-1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stats.retries.load(Ordering::Relaxed) >= 1);
    let (db, store) = sqlite(t.path());
    let _server = TestServer::start(store, port).await;
    wait_acked(&spool, 20).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(rows(&db, "agent-1"), (20, 20, 1, 20));
}

#[tokio::test]
async fn invalid_argument_is_fatal_and_stops_the_shipper() {
    let t = tempfile::tempdir().unwrap();
    let spool = spool_with(t.path(), 3);
    let (db, store) = sqlite(t.path());
    let server = TestServer::start(store, 0).await;
    // Longer than the collector's 128-byte agent id limit.
    let (_stats, _stop, task) = spawn(&spool, server.url(), &"x".repeat(200));
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    match result {
        Err(ShipError::Fatal { code, .. }) => assert_eq!(code, Code::InvalidArgument),
        other => panic!("expected a fatal InvalidArgument, got {other:?}"),
    }
    assert_eq!(
        spool::lock(&spool).unwrap().acked(),
        0,
        "nothing may be acked"
    );
    assert_eq!(rows(&db, &"x".repeat(200)).0, 0);
}

#[tokio::test]
async fn a_collector_ahead_of_the_spool_stops_shipping_instead_of_losing_records() {
    let t = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(t.path());
    // The collector already holds sequences 1..=50 of this agent (an earlier spool).
    let old = (1..=50).map(|s| {
        record(
            s,
            cdr(&format!("old-{s}"), "P-a", "P-b", s, Disposition::Answered),
        )
    });
    store.ingest("agent-1", old.collect()).await.unwrap();
    let server = TestServer::start(store, 0).await;
    // A fresh spool starts again at 1.
    let spool = spool_with(t.path(), 5);
    let (_stats, _stop, task) = spawn(&spool, server.url(), "agent-1");
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            result,
            Err(ShipError::SequenceConflict {
                collector: 50,
                spool: 5
            })
        ),
        "{result:?}"
    );
    assert_eq!(spool::lock(&spool).unwrap().acked(), 0);
    assert_eq!(rows(&db, "agent-1").0, 50);
}

#[tokio::test]
async fn collector_cursor_ahead_of_a_lost_ack_cursor_skips_what_is_stored() {
    let t = tempfile::tempdir().unwrap();
    let (db, store) = sqlite(t.path());
    let spool = spool_with(t.path(), 40);
    // The collector stored 1..=25 but the agent's ack cursor never recorded it.
    let first: Vec<_> = (1..=25)
        .map(|s| {
            record(
                s,
                cdr(
                    &format!("cdr-{s}"),
                    "P-a",
                    "P-b",
                    1_000 + s,
                    Disposition::Answered,
                ),
            )
        })
        .collect();
    store.ingest("agent-1", first).await.unwrap();
    let server = TestServer::start(store, 0).await;
    let (stats, stop, task) = spawn(&spool, server.url(), "agent-1");
    wait_acked(&spool, 40).await;
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(rows(&db, "agent-1"), (40, 40, 1, 40));
    assert_eq!(stored_ids(&db), expected_ids(40));
    assert_eq!(
        stats.records_sent.load(Ordering::Relaxed),
        15,
        "only 26..=40 needed sending"
    );
    let ids: BTreeSet<String> = stored_ids(&db).into_iter().collect();
    assert_eq!(ids.len(), 40);
}
