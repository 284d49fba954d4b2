//! The collector's rows of `cargo xtask bench`: loads N CDRs (default 1 000 000, spread over
//! 90 days) into each backend from ten agents ingesting at once, in three timed rounds;
//! then erases three subjects, each present under two keys among 20 000 other callers, one
//! at a time, checking that exactly their CDRs go. Progress goes to stderr, the table
//! (medians of the three rounds and the three erasures, goals met or not) to stdout.
//!
//! `cargo bench -p collector --bench erase [-- --rows N --backend sqlite|postgres|both]`
//! (PostgreSQL runs in a throwaway cluster, as in the tests; it needs Debian's
//! `postgresql` package, installed by `cargo xtask setup`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[allow(dead_code, reason = "the bench uses the cluster, not its client")]
#[path = "../tests/integration/support/pg.rs"]
mod pg;

use std::{sync::Arc, time::Instant};

use collector::server::store::{self, CdrFilter, Erasure, Store, DAY_MS};
use collector_proto::v1::{Cdr, CdrRecord, Disposition, MediaLeg, Party};

/// Subjects erased one by one (three timings); each holds [`SUBJECT_CDRS`] CDRs under two
/// keys (old and new), as a caller or a callee.
const SUBJECTS: u64 = 3;
const SUBJECT_CDRS: u64 = 20;
/// Agents streaming at once.
const AGENTS: u64 = 10;
/// Rounds of the load, each timed: the ingest rate is their median.
const ROUNDS: u64 = 3;
const BATCH: u64 = 1_000;

/// The two pseudonyms (old key, new key) of subject `s`.
fn subject(s: u64) -> [String; 2] {
    [
        format!("n_k1_subject{s:016}"),
        format!("n_k2_subject{s:016}"),
    ]
}

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

/// Which subject CDR `i` belongs to, if any: every `rows / (SUBJECTS * SUBJECT_CDRS)`-th.
fn subject_of(i: u64, rows: u64) -> Option<u64> {
    let every = (rows / (SUBJECTS * SUBJECT_CDRS)).max(1);
    let nth = i / every;
    (i.is_multiple_of(every) && (1..=SUBJECTS * SUBJECT_CDRS).contains(&nth))
        .then(|| (nth - 1) % SUBJECTS)
}

/// The CDRs one agent sends in one round, in batches.
fn batches(a: u64, round: u64, rows: u64, now: u64) -> Vec<Vec<CdrRecord>> {
    let per_agent = rows / AGENTS;
    let per_round = per_agent / ROUNDS;
    let first = round * per_round + 1;
    let last = if round + 1 == ROUNDS {
        per_agent
    } else {
        first + per_round - 1
    };
    let records: Vec<CdrRecord> = (first..=last)
        .map(|sq| {
            let i = a * per_agent + sq;
            let start = now - (i % (89 * 24)) * (DAY_MS / 24);
            let mut c = cdr(i, start);
            if let Some(s) = subject_of(i, rows) {
                let [old, new] = subject(s);
                let p = if i.is_multiple_of(2) { new } else { old };
                if i.is_multiple_of(3) {
                    c.callee.as_mut().unwrap().user = p;
                } else {
                    c.caller.as_mut().unwrap().user = p;
                }
            }
            CdrRecord {
                sequence: sq,
                cdr: Some(c),
            }
        })
        .collect();
    records
        .chunks(BATCH as usize)
        .map(<[CdrRecord]>::to_vec)
        .collect()
}

/// Loads `rows` CDRs in [`ROUNDS`] rounds, [`AGENTS`] agents ingesting at once in each;
/// the rate of each round (CDRs/s).
async fn load(s: &Arc<dyn Store>, rows: u64, now: u64) -> Vec<f64> {
    let mut rates = Vec::new();
    for round in 0..ROUNDS {
        let work: Vec<_> = (0..AGENTS)
            .map(|a| (a, batches(a, round, rows, now)))
            .collect();
        let n: u64 = work
            .iter()
            .map(|(_, b)| b.iter().map(|b| b.len() as u64).sum::<u64>())
            .sum();
        let t = Instant::now();
        let tasks: Vec<_> = work
            .into_iter()
            .map(|(a, batches)| {
                let s = Arc::clone(s);
                tokio::spawn(async move {
                    for b in batches {
                        s.ingest(&format!("sbc{a}"), b).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let rate = n as f64 / t.elapsed().as_secs_f64();
        eprintln!("  round {round}: {n} CDRs from {AGENTS} agents at once, {rate:.0} CDRs/s");
        rates.push(rate);
    }
    rates
}

/// Median, min and max.
fn spread(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    [v[v.len() / 2], v[0], v[v.len() - 1]]
}

/// One backend's figures.
struct Figures {
    backend: &'static str,
    ingest: [f64; 3],
    erase_ms: [f64; 3],
}

async fn bench(backend: &'static str, url: &str, rows: u64) -> Figures {
    eprintln!("{backend}:");
    let s = store::open(url).await.unwrap();
    let now = 20_000 * DAY_MS;
    let ingest = load(&s, rows, now).await;
    let mut erase_ms = Vec::new();
    let mut erased = 0;
    for subj in 0..SUBJECTS {
        let pseudonyms = subject(subj).to_vec();
        let found = s
            .query(CdrFilter {
                pseudonyms: pseudonyms.clone(),
                limit: 1_000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            found.len() as u64,
            SUBJECT_CDRS,
            "the subject's CDRs, by construction"
        );
        let t = Instant::now();
        let deleted = s
            .erase(Erasure {
                pseudonyms,
                reference: "bench".into(),
                actor: "bench".into(),
                now_ms: now,
                tenant: None,
                audited: None,
            })
            .await
            .unwrap();
        let took = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(
            deleted, SUBJECT_CDRS,
            "erasure deletes exactly the subject's CDRs"
        );
        erased += deleted;
        eprintln!("  erased subject {subj}: {deleted} of {rows} CDRs in {took:.1} ms");
        erase_ms.push(took);
    }
    let left = s.stats(None).await.unwrap().cdrs_stored;
    assert_eq!(left, rows - erased);
    Figures {
        backend,
        ingest: spread(ingest),
        erase_ms: spread(erase_ms),
    }
}

/// The collector rows of `cargo xtask bench` (markdown).
fn table(rows: u64, figs: &[Figures]) {
    println!("\n## Collector ({rows} CDRs per backend, {AGENTS} agents ingesting at once)\n");
    println!("| backend | what | median | min–max | goal | met |");
    println!("|---|---|---:|---:|---:|---|");
    for f in figs {
        let [m, lo, hi] = f.ingest;
        let (goal, met) = if f.backend == "sqlite" {
            ("≥ 20000", if m >= 20_000.0 { "yes" } else { "**no**" })
        } else {
            ("–", "–")
        };
        println!(
            "| {} | ingest, CDRs/s ({ROUNDS} rounds) | {m:.0} | {lo:.0}–{hi:.0} | {goal} | {met} |",
            f.backend
        );
        let [m, lo, hi] = f.erase_ms;
        let met = if m < 1_000.0 { "yes" } else { "**no**" };
        println!(
            "| {} | erase one subject ({SUBJECT_CDRS} CDRs), ms ({SUBJECTS} subjects) | {m:.1} | {lo:.1}–{hi:.1} | < 1000 | {met} |",
            f.backend
        );
    }
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
    let mut figs = Vec::new();
    if backend == "sqlite" || backend == "both" {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        figs.push(rt.block_on(bench("sqlite", &url, rows)));
    }
    if backend == "postgres" || backend == "both" {
        let cluster = pg::PgCluster::start();
        figs.push(rt.block_on(bench("postgres", &cluster.url(), rows)));
    }
    table(rows, &figs);
}
