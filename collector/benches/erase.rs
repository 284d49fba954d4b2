//! Erasure on a large store: loads N CDRs (default 1 000 000, spread over 90 days and
//! several agents, with a subject present under two keys among 20 000 other callers) into
//! each backend, then times `Store::erase` of that subject (and a pseudonym query) and
//! checks what was deleted. A measurement, not a test: it prints the times.
//!
//! `cargo bench -p collector --bench erase [-- --rows N --backend sqlite|postgres|both]`
//! (PostgreSQL runs in a throwaway cluster, as in the tests; it needs Debian's
//! `postgresql` package, installed by `cargo xtask setup`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[allow(dead_code, reason = "the bench uses the cluster, not its client")]
#[path = "../tests/integration/support/pg.rs"]
mod pg;

use std::{sync::Arc, time::Instant};

use collector::server::store::{self, CdrFilter, Erasure, Store, DAY_MS};
use collector_proto::v1::{Cdr, CdrRecord, Disposition, MediaLeg, Party};

const SUBJECT_OLD: &str = "n_k1_subjectsubjectsubjectsu";
const SUBJECT_NEW: &str = "n_k2_subjectsubjectsubjectsu";
const SUBJECT_CDRS: u64 = 60;
const AGENTS: u64 = 10;
const BATCH: u64 = 10_000;

fn cdr(i: u64, start: u64) -> Cdr {
    // Every `rows / SUBJECT_CDRS`-th CDR is the subject's, alternating keys and sides.
    let caller = format!("n_k2_caller{:020}", i % 20_000);
    let callee = format!("n_k2_callee{:020}", (i * 7) % 20_000);
    Cdr {
        cdr_id: format!("c{i}"),
        call_id: format!("cid_k2_{i:022}"),
        caller: Some(Party {
            user: caller,
            domain: "d_k2_exampleexampleexample".into(),
            display: String::new(),
        }),
        callee: Some(Party {
            user: callee,
            domain: "d_k2_exampleexampleexample".into(),
            display: String::new(),
        }),
        start_time_ms: start,
        end_time_ms: start + 60_000,
        duration_ms: 60_000,
        billable_ms: 55_000,
        disposition: Disposition::Answered as i32,
        final_code: 200,
        codecs: vec!["PCMU".into()],
        media: vec![MediaLeg {
            codec: "PCMU".into(),
            loss_pct: 0.3,
            mos: 4.2,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn load(s: &Arc<dyn Store>, rows: u64, now: u64) -> u64 {
    let every = rows / SUBJECT_CDRS;
    let per_agent = rows / AGENTS;
    let mut subject = 0u64;
    let t = Instant::now();
    for a in 0..AGENTS {
        let agent = format!("sbc{a}");
        let mut seq = 1;
        while seq <= per_agent {
            let last = (seq + BATCH - 1).min(per_agent);
            let batch: Vec<CdrRecord> = (seq..=last)
                .map(|sq| {
                    let i = a * per_agent + sq;
                    let start = now - (i % (89 * 24)) * (DAY_MS / 24);
                    let mut c = cdr(i, start);
                    if i.is_multiple_of(every) {
                        subject += 1;
                        let p = if subject.is_multiple_of(2) {
                            SUBJECT_NEW
                        } else {
                            SUBJECT_OLD
                        };
                        if subject.is_multiple_of(3) {
                            c.callee.as_mut().unwrap().user = p.into();
                        } else {
                            c.caller.as_mut().unwrap().user = p.into();
                        }
                    }
                    CdrRecord {
                        sequence: sq,
                        cdr: Some(c),
                    }
                })
                .collect();
            s.ingest(&agent, batch).await.unwrap();
            seq = last + 1;
        }
    }
    println!(
        "  loaded {rows} CDRs in {:.1} s ({subject} of the subject)",
        t.elapsed().as_secs_f64()
    );
    subject
}

async fn bench(name: &str, url: &str, rows: u64) {
    println!("{name}:");
    let s = store::open(url).await.unwrap();
    let now = 20_000 * DAY_MS;
    let subject = load(&s, rows, now).await;
    let pseudonyms = vec![SUBJECT_NEW.to_string(), SUBJECT_OLD.to_string()];
    let t = Instant::now();
    let found = s
        .query(CdrFilter {
            pseudonyms: pseudonyms.clone(),
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    println!(
        "  query by 2 pseudonyms: {} CDRs in {:.1} ms",
        found.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    let deleted = s
        .erase(Erasure {
            pseudonyms: pseudonyms.clone(),
            reference: "bench".into(),
            actor: "bench".into(),
            now_ms: now,
            tenant: None,
            audited: None,
        })
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(
        deleted, subject,
        "erasure must delete exactly the subject's CDRs"
    );
    let left = s.stats(None).await.unwrap().cdrs_stored;
    assert_eq!(left, rows - subject);
    println!(
        "  ERASE of 2 pseudonyms over {rows} CDRs: deleted {deleted} in {:.1} ms ({})",
        took.as_secs_f64() * 1e3,
        if took.as_secs_f64() < 1.0 {
            "under 1 s"
        } else {
            "OVER 1 s"
        }
    );
}

fn main() {
    let mut rows = 1_000_000u64;
    let mut backend = "both".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => rows = args.next().and_then(|v| v.parse().ok()).unwrap_or(rows),
            "--backend" => backend = args.next().unwrap_or(backend),
            _ => {} // `cargo bench` passes `--bench`
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if backend == "sqlite" || backend == "both" {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        rt.block_on(bench("sqlite", &url, rows));
    }
    if backend == "postgres" || backend == "both" {
        let cluster = pg::PgCluster::start();
        rt.block_on(bench("postgres", &cluster.url(), rows));
    }
}
