//! The storage backends against the same expectations: SQLite and PostgreSQL (a throwaway
//! cluster started by each test). Expected values are written by hand from the fixtures
//! (which CDR is older than the limit, which histogram bucket a MOS falls in by the
//! documented edges, which CDR names the subject), and rows are read back with direct SQL,
//! not through the store under test. The subject's pseudonyms come from the privacy module
//! and one of them is checked against the fixed vector computed with Python's `hmac`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{path::Path, sync::Arc};

use crate::support::Backend;
use collector::{
    privacy::{PrivacyConfig, Pseudonymizer},
    server::{
        retention::{self, RetentionPolicy},
        store::{
            AggregateKey, AuditAction, CdrFilter, DailyAggregate, Erasure, DAY_MS, LOSS_BUCKETS,
            MOS_BUCKETS,
        },
    },
};
use collector_proto::v1::{Cdr, CdrRecord, Disposition, MediaLeg, Party};

const DAY: u64 = DAY_MS;
const HOUR: u64 = 3_600_000;
/// "Now" of the retention fixtures: day 20 000 (2024-10-04), 12:00 UTC.
const NOW: u64 = 20_000 * DAY + 12 * HOUR;
/// 90 days before NOW.
const CUTOFF: u64 = NOW - 90 * DAY;

fn party(user: &str) -> Option<Party> {
    Some(Party {
        user: user.into(),
        domain: "d_example".into(),
        display: String::new(),
    })
}

fn cdr(id: &str, start_ms: u64, disposition: Disposition) -> Cdr {
    Cdr {
        agent_id: "A".into(),
        cdr_id: id.into(),
        call_id: format!("cid_{id}"),
        caller: party("n_caller"),
        callee: party("n_callee"),
        start_time_ms: start_ms,
        end_time_ms: start_ms + 60_000,
        duration_ms: 60_000,
        disposition: disposition as i32,
        final_code: 200,
        ..Default::default()
    }
}

fn leg(codec: &str, loss_pct: f64, mos: f64) -> MediaLeg {
    MediaLeg {
        codec: codec.into(),
        loss_pct,
        mos,
        ..Default::default()
    }
}

fn records(cdrs: Vec<Cdr>, first_seq: u64) -> Vec<CdrRecord> {
    cdrs.into_iter()
        .zip(first_seq..)
        .map(|(c, s)| CdrRecord {
            sequence: s,
            cdr: Some(c),
        })
        .collect()
}

fn aggregate(
    day: u64,
    agent: &str,
    d: Disposition,
    codec: &str,
    (calls, duration_ms, billable_ms): (u64, u64, u64),
    mos: &[(usize, u64)],
    loss: &[(usize, u64)],
) -> DailyAggregate {
    let mut mos_hist = [0; MOS_BUCKETS];
    for (b, n) in mos {
        mos_hist[*b] = *n;
    }
    let mut loss_hist = [0; LOSS_BUCKETS];
    for (b, n) in loss {
        loss_hist[*b] = *n;
    }
    DailyAggregate {
        key: AggregateKey {
            day,
            agent_id: agent.into(),
            disposition: d as i32,
            codec: codec.into(),
        },
        calls,
        duration_ms,
        billable_ms,
        mos_hist,
        loss_hist,
    }
}

async fn ingest_is_exactly_once_per_agent_and_sequence(b: Backend) {
    let s = b.open().await;
    let batch = |from: u64, to: u64| {
        records(
            (from..=to)
                .map(|i| cdr(&format!("c{i}"), NOW + i, Disposition::Answered))
                .collect(),
            from,
        )
    };
    let o = s.ingest("A", batch(1, 10)).await.unwrap();
    assert_eq!((o.highest_sequence, o.stored, o.duplicates), (10, 10, 0));
    let o = s.ingest("A", batch(5, 15)).await.unwrap();
    assert_eq!((o.highest_sequence, o.stored, o.duplicates), (15, 5, 6));
    let o = s.ingest("A", batch(1, 15)).await.unwrap();
    assert_eq!((o.highest_sequence, o.stored, o.duplicates), (15, 0, 15));
    let o = s.ingest("B", batch(1, 3)).await.unwrap();
    assert_eq!((o.highest_sequence, o.stored), (3, 3));
    assert_eq!(s.cursor("A").await.unwrap(), 15);
    assert_eq!(s.cursor("nobody").await.unwrap(), 0);
    let stored = b.stored().await;
    let want: Vec<(String, u64, String)> = (1..=15)
        .map(|i| ("A".to_string(), i, format!("c{i}")))
        .chain((1..=3).map(|i| ("B".to_string(), i, format!("c{i}"))))
        .collect();
    assert_eq!(stored, want, "{}", b.name());
    let stats = s.stats(None).await.unwrap();
    assert_eq!(stats.cdrs_stored, 18);
    // Sequences out of order are refused before anything is stored.
    let mut bad = batch(16, 18);
    bad.swap(0, 2);
    assert!(s.ingest("A", bad).await.is_err());
    assert_eq!(s.cursor("A").await.unwrap(), 15);
}

async fn retention_deletes_exactly_what_is_older_than_the_limit_and_keeps_aggregates(b: Backend) {
    let s = b.open().await;
    let mut old1 = cdr("old1", 19_900 * DAY + HOUR, Disposition::Answered);
    old1.codecs = vec!["PCMU".into(), "PCMA".into()];
    old1.media = vec![leg("PCMU", 0.0, 4.4), leg("PCMU", 0.0, 4.35)];
    old1.billable_ms = 50_000;
    let mut old2 = cdr("old2", 19_900 * DAY + 2 * HOUR, Disposition::Answered);
    old2.codecs = vec!["PCMU".into()];
    old2.media = vec![leg("PCMU", 2.5, 3.1), leg("PCMU", 0.1, 3.9)];
    old2.duration_ms = 30_000;
    old2.billable_ms = 20_000;
    let old3 = cdr("old3", 19_900 * DAY + 3 * HOUR, Disposition::Busy);
    let mut old4 = cdr(
        "old4-interim",
        19_900 * DAY + 4 * HOUR,
        Disposition::Answered,
    );
    old4.interim = true;
    let mut old5 = cdr("old5", 19_905 * DAY, Disposition::Answered);
    old5.agent_id = "B".into();
    old5.media = vec![leg("G729", 12.0, 2.2)];
    let mut edge_before = cdr("edge-1", CUTOFF - 1, Disposition::Failed);
    edge_before.codecs = vec!["PCMA".into()];
    edge_before.media = vec![leg("PCMA", 0.5, 0.0)];
    let edge = cdr("edge0", CUTOFF, Disposition::Answered);
    let edge_after = cdr("edge+1", CUTOFF + 1, Disposition::Answered);
    let new = cdr("new", NOW - HOUR, Disposition::Answered);
    s.ingest(
        "A",
        records(
            vec![old1, old2, old3, old4, edge_before, edge, edge_after, new],
            1,
        ),
    )
    .await
    .unwrap();
    s.ingest("B", records(vec![old5], 1)).await.unwrap();

    let policy = RetentionPolicy {
        days: 90,
        ..Default::default()
    };
    let run = retention::run_once(s.as_ref(), &policy, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (run.cutoff_ms, run.deleted, run.folded),
        (CUTOFF, 6, 5),
        "{}",
        b.name()
    );
    assert_eq!(b.cdr_ids().await, ["edge+1", "edge0", "new"]);
    let expected = vec![
        // old1 + old2: worst MOS 4.35 (bucket 7: >= 4.3) and 3.1 (bucket 4: [3.0, 3.5));
        // worst loss 0 (bucket 1) and 2.5 % (bucket 4: [2, 5)).
        aggregate(
            19_900,
            "A",
            Disposition::Answered,
            "PCMU",
            (2, 90_000, 70_000),
            &[(7, 1), (4, 1)],
            &[(1, 1), (4, 1)],
        ),
        // old3: no media: bucket 0 of both.
        aggregate(
            19_900,
            "A",
            Disposition::Busy,
            "",
            (1, 60_000, 0),
            &[(0, 1)],
            &[(0, 1)],
        ),
        // old5: codec from its media leg; MOS 2.2 in [2.0, 2.5) (2), loss 12 % >= 10 (6).
        aggregate(
            19_905,
            "B",
            Disposition::Answered,
            "G729",
            (1, 60_000, 0),
            &[(2, 1)],
            &[(6, 1)],
        ),
        // edge-1: no MOS computed (0), loss 0.5 % in (0, 1) (2); its day is the cutoff's.
        aggregate(
            19_910,
            "A",
            Disposition::Failed,
            "PCMA",
            (1, 60_000, 0),
            &[(0, 1)],
            &[(2, 1)],
        ),
    ];
    assert_eq!(s.aggregates(0, u64::MAX).await.unwrap(), expected);
    if let Backend::Postgres(_) = &b {
        // Whole expired days went with their partitions; the cutoff's day stays.
        let parts = b
            .select(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'cdrs'
                 ORDER BY 1",
            )
            .await;
        assert_eq!(parts, [["cdrs_d19910"], ["cdrs_d20000"]]);
    }

    // A second run finds nothing; the aggregates stay.
    let again = retention::run_once(s.as_ref(), &policy, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.deleted, again.folded), (0, 0));
    assert_eq!(s.aggregates(0, u64::MAX).await.unwrap(), expected);

    // A late CDR of an already aggregated day is added to its row.
    let mut late = cdr("late", 19_900 * DAY + 5 * HOUR, Disposition::Answered);
    late.codecs = vec!["PCMU".into()];
    late.media = vec![leg("PCMU", 0.0, 4.0)];
    late.duration_ms = 10_000;
    late.billable_ms = 5_000;
    s.ingest("A", records(vec![late], 9)).await.unwrap();
    let run = retention::run_once(s.as_ref(), &policy, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.deleted, run.folded), (1, 1));
    let mut want = expected.clone();
    want[0].calls = 3;
    want[0].duration_ms = 100_000;
    want[0].billable_ms = 75_000;
    want[0].mos_hist[6] = 1; // 4.0 is in [4.0, 4.3)
    want[0].loss_hist[1] = 2;
    assert_eq!(s.aggregates(0, u64::MAX).await.unwrap(), want);
    assert_eq!(b.cdr_ids().await, ["edge+1", "edge0", "new"]);

    let state = s.retention_state().await.unwrap();
    assert_eq!(state.oldest_start_time_ms, Some(CUTOFF));
    let last = state.last_run.unwrap();
    assert_eq!((last.time_ms, last.deleted, last.folded), (NOW, 1, 1));
    // Retention off: nothing happens.
    let off = RetentionPolicy {
        days: 0,
        ..Default::default()
    };
    assert!(retention::run_once(s.as_ref(), &off, NOW * 2)
        .await
        .unwrap()
        .is_none());
    assert_eq!(b.cdr_ids().await.len(), 3);
}

/// A key file with `k1` (retired; the fixed vector's key) and `k2` (active).
fn pseudonymizer(dir: &Path) -> Pseudonymizer {
    use std::os::unix::fs::PermissionsExt as _;
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        "[[key]]\nid = \"k1\"\n\
         secret = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
         created = \"2025-01-01T00:00:00Z\"\nactive = false\n\
         [[key]]\nid = \"k2\"\n\
         secret = \"ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1eff\"\n\
         created = \"2025-06-01T00:00:00Z\"\nactive = true\n",
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = PrivacyConfig {
        scope: Some("tenant-a".into()),
        key_file: Some(keys),
        ..Default::default()
    };
    Pseudonymizer::from_config(&config).unwrap()
}

async fn erasure_removes_all_of_a_subjects_cdrs_and_nothing_else(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pz = pseudonymizer(dir.path());
    let subject = pz.pseudonyms_for(b"+442079460000");
    // Active key first; k1's is the fixed vector (Python hmac, see privacy::policy).
    assert_eq!(subject.len(), 2);
    assert_eq!(subject[1], "n_k1_lnbnqvjd5pj4wjxg7bkvf2gove");
    let (p_new, p_old) = (subject[0].clone(), subject[1].clone());
    let other = pz.pseudonyms_for(b"+442079460001")[0].clone();

    let mut s1 = cdr("s1", NOW, Disposition::Answered);
    s1.caller = party(&p_old); // stored before the key rotation
    let mut s2 = cdr("s2", NOW + 1, Disposition::Busy);
    s2.callee = party(&p_new);
    let mut s3 = cdr("s3", NOW + 2, Disposition::Answered);
    s3.caller.as_mut().unwrap().display = p_new.clone();
    let mut s4 = cdr("s4", NOW - 80 * DAY, Disposition::Answered);
    s4.callee.as_mut().unwrap().domain = p_old.clone();
    let mut o1 = cdr("o1", NOW + 3, Disposition::Answered);
    o1.caller = party(&other);
    let mut o2 = cdr("o2", NOW + 4, Disposition::Answered);
    o2.caller = party(&format!("{p_new}x")); // exact match only
    let mut o3 = cdr("o3", NOW + 5, Disposition::Answered);
    o3.callee = party(&other);
    let s = b.open().await;
    s.ingest("A", records(vec![s1, s2, s3, s4, o1, o2, o3], 1))
        .await
        .unwrap();

    let found = s
        .query(CdrFilter {
            pseudonyms: subject.clone(),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<String> = found.into_iter().map(|c| c.cdr_id).collect();
    assert_eq!(ids, ["s3", "s2", "s1", "s4"], "{}", b.name());

    let deleted = s
        .erase(Erasure {
            pseudonyms: subject.clone(),
            reference: "ticket-7".into(),
            actor: "dpo".into(),
            now_ms: NOW + 10,
            tenant: None,
            audited: None,
        })
        .await
        .unwrap();
    assert_eq!(deleted, 4);
    assert_eq!(b.cdr_ids().await, ["o1", "o2", "o3"]);
    let audit = b
        .select("SELECT action, actor, subjects, reference, affected, time_ms FROM audit_log")
        .await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0][0..2], ["erase", "dpo"]);
    let subjects: Vec<String> = serde_json::from_str(&audit[0][2]).unwrap();
    assert_eq!(subjects, subject);
    assert_eq!(audit[0][3..], ["ticket-7", "4", &(NOW + 10).to_string()]);
    // The number itself is nowhere in the audit log.
    for cell in &audit[0] {
        assert!(!cell.contains("2079460000"), "{cell}");
    }
    let log = s.audit_log(10).await.unwrap();
    assert_eq!(
        (log[0].action, log[0].affected, log[0].actor.as_str()),
        (AuditAction::Erase, 4, "dpo")
    );
    // Erasing again finds nothing and is audited too.
    let again = s
        .erase(Erasure {
            pseudonyms: subject,
            reference: String::new(),
            actor: "dpo".into(),
            now_ms: NOW + 11,
            tenant: None,
            audited: None,
        })
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(b.cdr_ids().await, ["o1", "o2", "o3"]);
}

async fn query_filters_select_the_fixture_rows(b: Backend) {
    let s = b.open().await;
    let mut c1 = cdr("1", NOW + 1_000, Disposition::Answered);
    c1.caller = party("P-a");
    c1.callee = party("P-b");
    c1.media = vec![leg("PCMU", 0.5, 4.3), leg("PCMU", 6.0, 3.1)];
    let mut c2 = cdr("2", NOW + 2_000, Disposition::Busy);
    c2.caller = party("P-a");
    c2.callee = party("P-c");
    c2.media = vec![leg("PCMU", 0.0, 0.0)];
    let mut c3 = cdr("3", NOW + 3_000, Disposition::Answered);
    c3.caller = party("P-c");
    c3.callee = party("P-b");
    c3.media = vec![leg("PCMU", 2.0, 4.0)];
    c3.call_id = "cid_x".into();
    let mut c4 = cdr("4", NOW + 4_000, Disposition::Answered);
    c4.caller = party("P-d");
    c4.callee = party("P-a");
    s.ingest("A", records(vec![c1, c2, c3], 1)).await.unwrap();
    s.ingest("B", records(vec![c4], 1)).await.unwrap();
    let run = |f: CdrFilter| {
        let s = Arc::clone(&s);
        async move {
            s.query(CdrFilter { limit: 100, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.cdr_id)
                .collect::<Vec<_>>()
        }
    };
    let d = CdrFilter::default;
    assert_eq!(run(d()).await, ["4", "3", "2", "1"]);
    let range = CdrFilter {
        start_from_ms: Some(NOW + 2_000),
        start_to_ms: Some(NOW + 4_000),
        ..d()
    };
    assert_eq!(run(range).await, ["3", "2"]);
    let pb = CdrFilter {
        pseudonyms: vec!["P-b".into()],
        ..d()
    };
    assert_eq!(run(pb).await, ["3", "1"]);
    let any = CdrFilter {
        pseudonyms: vec!["P-d".into(), "cid_x".into()],
        ..d()
    };
    assert_eq!(run(any).await, ["4", "3"]);
    let answered = CdrFilter {
        disposition: Some(Disposition::Answered),
        ..d()
    };
    assert_eq!(run(answered).await, ["4", "3", "1"]);
    let agent = CdrFilter {
        agent_id: Some("B".into()),
        ..d()
    };
    assert_eq!(run(agent).await, ["4"]);
    let loss = CdrFilter {
        min_loss_pct: Some(2.0),
        ..d()
    };
    assert_eq!(run(loss).await, ["3", "1"]);
    let mos = CdrFilter {
        max_mos: Some(3.5),
        ..d()
    };
    assert_eq!(run(mos).await, ["1"]);
    let both = CdrFilter {
        max_mos: Some(4.0),
        agent_id: Some("A".into()),
        ..d()
    };
    assert_eq!(run(both).await, ["3", "1"]);
    let by_id = CdrFilter {
        cdr_id: Some("3".into()),
        ..d()
    };
    assert_eq!(run(by_id).await, ["3"]);
    let unknown_id = CdrFilter {
        cdr_id: Some("9".into()),
        ..d()
    };
    assert!(run(unknown_id).await.is_empty());
    let limited = s.query(CdrFilter { limit: 2, ..d() }).await.unwrap().len();
    assert_eq!(limited, 2);
}

/// A leg of a call through an SBC: `from` → `to`, linked by `cid` (empty: not linked).
fn call_leg(id: &str, cid: &str, from: &str, to: &str, start_ms: u64) -> Cdr {
    let mut c = cdr(id, start_ms, Disposition::Answered);
    c.correlation_id = cid.into();
    c.correlation_method = if cid.is_empty() { "none" } else { "header" }.into();
    c.caller = party(from);
    c.callee = party(to);
    c
}

async fn call_view_returns_every_leg_of_the_matching_calls(b: Backend) {
    let s = b.open().await;
    // Call X: alice → SBC → bob, both legs seen by agent A. Call Y: carol → SBC (agent A),
    // SBC → dan (agent B). Two legs not linked to anything: z (alice → erin), w.
    s.ingest(
        "A",
        records(
            vec![
                call_leg("x_in", "X", "P-alice", "P-sbc", NOW + 1_000),
                call_leg("x_out", "X", "P-sbc", "P-bob", NOW + 1_040),
                call_leg("z", "", "P-alice", "P-erin", NOW + 3_000),
                call_leg("w", "", "P-frank", "P-gina", NOW + 4_000),
                call_leg("y_in", "Y", "P-carol", "P-sbc", NOW + 5_000),
            ],
            1,
        ),
    )
    .await
    .unwrap();
    s.ingest(
        "B",
        records(
            vec![call_leg("y_out", "Y", "P-sbc", "P-dan", NOW + 5_030)],
            1,
        ),
    )
    .await
    .unwrap();
    let run = |f: CdrFilter| {
        let s = Arc::clone(&s);
        async move {
            let mut ids: Vec<String> = s
                .query_call_legs(CdrFilter { limit: 100, ..f })
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.cdr_id)
                .collect();
            ids.sort();
            ids
        }
    };
    let d = CdrFilter::default;
    assert_eq!(run(d()).await, ["w", "x_in", "x_out", "y_in", "y_out", "z"]);
    // Only the egress leg names bob: the call comes with its ingress leg.
    let bob = CdrFilter {
        pseudonyms: vec!["P-bob".into()],
        ..d()
    };
    assert_eq!(run(bob).await, ["x_in", "x_out"]);
    // alice is in X's ingress leg and in z, a call of its own.
    let alice = CdrFilter {
        pseudonyms: vec!["P-alice".into()],
        ..d()
    };
    assert_eq!(run(alice).await, ["x_in", "x_out", "z"]);
    // Agent B saw only y_out; the call's other leg is agent A's.
    let agent = CdrFilter {
        agent_id: Some("B".into()),
        ..d()
    };
    assert_eq!(run(agent).await, ["y_in", "y_out"]);
    // The time range selects x_out only; x_in started before it and still comes.
    let range = CdrFilter {
        start_from_ms: Some(NOW + 1_020),
        start_to_ms: Some(NOW + 2_000),
        ..d()
    };
    assert_eq!(run(range).await, ["x_in", "x_out"]);
    // The limit counts calls, newest first: Y (newest leg NOW+5030), then w (NOW+4000).
    let mut two: Vec<String> = s
        .query_call_legs(CdrFilter { limit: 2, ..d() })
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cdr_id)
        .collect();
    two.sort();
    assert_eq!(two, ["w", "y_in", "y_out"]);
    let none = CdrFilter {
        pseudonyms: vec!["P-nobody".into()],
        ..d()
    };
    assert!(run(none).await.is_empty());
}

async fn schema_is_versioned_and_indexed(b: Backend) {
    drop(b.open().await);
    drop(b.open().await); // a second open applies nothing twice
    let versions = b
        .select("SELECT version FROM schema_version ORDER BY version")
        .await;
    let want: Vec<[String; 1]> = (1..=9).map(|v| [v.to_string()]).collect();
    assert_eq!(versions, want);
    let indexes = match &b {
        Backend::Sqlite(_) => {
            b.select("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'cdrs'")
                .await
        }
        Backend::Postgres(_) => {
            b.select("SELECT indexname::text FROM pg_indexes WHERE tablename = 'cdrs'")
                .await
        }
    };
    let names: Vec<&str> = indexes.iter().map(|r| r[0].as_str()).collect();
    for want in [
        "cdrs_start_time",
        "cdrs_tenant_start",
        "cdrs_call_id",
        "cdrs_caller_user",
        "cdrs_callee_user",
        "cdrs_caller_domain",
        "cdrs_callee_domain",
        "cdrs_caller_display",
        "cdrs_callee_display",
        "cdrs_correlation_id",
        "cdrs_cdr_id",
    ] {
        assert!(
            names.contains(&want),
            "{} lacks {want}: {names:?}",
            b.name()
        );
    }
    // Dropped in v9: the cdr id index serves the lookup of a call's records.
    assert!(
        !names.contains(&"cdrs_agent_cdr_id"),
        "{} keeps cdrs_agent_cdr_id: {names:?}",
        b.name()
    );
}

/// Interim record `seq` of call `id` (started at NOW, answered at once), made `min`
/// minutes into the call.
fn interim(id: &str, seq: u32, min: u64) -> Cdr {
    Cdr {
        interim: true,
        interim_seq: seq,
        end_time_ms: NOW + min * 60_000,
        duration_ms: min * 60_000,
        billable_ms: min * 60_000,
        ..cdr(id, NOW, Disposition::Answered)
    }
}

/// The final record of call `id` after `interims` interim records, ended at 40 min.
fn final_after(id: &str, interims: u32) -> Cdr {
    Cdr {
        interim_seq: interims,
        end_time_ms: NOW + 40 * 60_000,
        duration_ms: 40 * 60_000,
        billable_ms: 40 * 60_000,
        ..cdr(id, NOW, Disposition::Answered)
    }
}

/// (sequence, cdr_id, interim) of every stored row, read directly.
async fn rows(b: &Backend) -> Vec<(String, String, String)> {
    let interim = match b {
        Backend::Sqlite(_) => "interim",
        Backend::Postgres(_) => "CASE WHEN interim THEN 1 ELSE 0 END",
    };
    b.select(&format!(
        "SELECT sequence, cdr_id, {interim} FROM cdrs ORDER BY sequence"
    ))
    .await
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
    .collect()
}

fn row(seq: u64, id: &str, interim: bool) -> (String, String, String) {
    (
        seq.to_string(),
        id.to_owned(),
        u8::from(interim).to_string(),
    )
}

async fn the_final_record_supersedes_its_interims(b: Backend) {
    let s = b.open().await;
    // Call "x": interims at 15 and 30 min, in two batches; call "y" has one interim. While
    // "x" runs, the latest interim only is stored and listed.
    let o = s
        .ingest("A", records(vec![interim("x", 1, 15)], 1))
        .await
        .unwrap();
    assert_eq!((o.stored, o.superseded), (1, 0));
    let o = s
        .ingest(
            "A",
            records(vec![interim("y", 1, 15), interim("x", 2, 30)], 2),
        )
        .await
        .unwrap();
    assert_eq!((o.highest_sequence, o.stored, o.superseded), (3, 2, 0));
    assert_eq!(
        rows(&b).await,
        [row(2, "y", true), row(3, "x", true)],
        "{}",
        b.name()
    );
    let all = CdrFilter {
        limit: 100,
        ..Default::default()
    };
    let listed: Vec<(String, u32, u64)> = s
        .query(all.clone())
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.cdr_id, c.interim_seq, c.duration_ms))
        .collect();
    let mut listed = listed;
    listed.sort();
    assert_eq!(
        listed,
        [
            ("x".to_owned(), 2, 30 * 60_000),
            ("y".to_owned(), 1, 15 * 60_000)
        ]
    );
    // The final record of "x" (after 2 interims): its interims go, "y" stays.
    let o = s
        .ingest("A", records(vec![final_after("x", 2)], 4))
        .await
        .unwrap();
    assert_eq!((o.highest_sequence, o.stored, o.superseded), (4, 1, 0));
    assert_eq!(
        rows(&b).await,
        [row(2, "y", true), row(4, "x", false)],
        "{}",
        b.name()
    );
    for legs in [
        s.query(all.clone()).await.unwrap(),
        s.query_call_legs(all.clone()).await.unwrap(),
    ] {
        let mut got: Vec<(String, bool, u64)> = legs
            .into_iter()
            .map(|c| (c.cdr_id, c.interim, c.duration_ms))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("x".to_owned(), false, 40 * 60_000),
                ("y".to_owned(), true, 15 * 60_000)
            ]
        );
    }
    // Interims and the final in one batch: only the final is stored.
    let o = s
        .ingest(
            "A",
            records(
                vec![
                    interim("z", 1, 15),
                    interim("z", 2, 30),
                    final_after("z", 2),
                ],
                5,
            ),
        )
        .await
        .unwrap();
    assert_eq!((o.highest_sequence, o.stored, o.superseded), (7, 1, 2));
    // Another agent's record with the same cdr_id is another call.
    s.ingest("B", records(vec![interim("x", 1, 15)], 1))
        .await
        .unwrap();
    assert_eq!(
        b.select("SELECT agent_id, cdr_id FROM cdrs WHERE agent_id = 'B'")
            .await,
        [["B", "x"]]
    );
    assert_eq!(
        rows(&b).await,
        [
            row(1, "x", true),
            row(2, "y", true),
            row(4, "x", false),
            row(7, "z", false)
        ],
        "{}",
        b.name()
    );
}

async fn an_interim_after_its_final_is_not_stored(b: Backend) {
    let s = b.open().await;
    s.ingest("A", records(vec![final_after("x", 2)], 1))
        .await
        .unwrap();
    // A replayed spool sends the call's interims again, under new sequences.
    let o = s
        .ingest(
            "A",
            records(vec![interim("x", 1, 15), interim("x", 2, 30)], 2),
        )
        .await
        .unwrap();
    assert_eq!(
        (o.highest_sequence, o.stored, o.duplicates, o.superseded),
        (3, 0, 0, 2)
    );
    assert_eq!(s.cursor("A").await.unwrap(), 3);
    // An interim older than (or the same as) the stored one is not stored either.
    s.ingest("A", records(vec![interim("y", 2, 30)], 4))
        .await
        .unwrap();
    let o = s
        .ingest(
            "A",
            records(vec![interim("y", 1, 15), interim("y", 2, 30)], 5),
        )
        .await
        .unwrap();
    assert_eq!((o.stored, o.superseded), (0, 2));
    assert_eq!(
        rows(&b).await,
        [row(1, "x", false), row(4, "y", true)],
        "{}",
        b.name()
    );
}

/// A tenant kept 30 days under a collector that keeps 90: the retention run deletes that
/// tenant's CDRs older than 30 days and no other tenant's younger than 90, and the deleted
/// ones still count in the tenant's usage (folded). A tenant period not shorter than the
/// collector's is refused. Known by construction: each CDR's age and tenant.
async fn a_tenant_with_a_shorter_retention_loses_only_its_own_older_cdrs(b: Backend) {
    let s = b.open().await;
    let age = |days: u64| NOW - days * DAY;
    let answered = Disposition::Answered;
    let acme = vec![
        cdr("a10", age(10), answered),
        cdr("a40", age(40), answered),
        cdr("a100", age(100), answered),
    ];
    let globex = vec![
        cdr("g40", age(40), answered),
        cdr("g100", age(100), answered),
    ];
    s.ingest_into("sbc-a", "acme", records(acme, 1))
        .await
        .unwrap();
    s.ingest_into("sbc-g", "globex", records(globex, 1))
        .await
        .unwrap();
    let policy = RetentionPolicy {
        days: 90,
        tenants: [("acme".to_owned(), 30)].into(),
        ..Default::default()
    };
    policy.validate().unwrap();
    retention::run_once(s.as_ref(), &policy, NOW).await.unwrap();
    let mut ids = b.cdr_ids().await;
    ids.sort();
    assert_eq!(ids, ["a10", "g40"], "{}", b.name());
    let calls = |groups: Vec<collector::server::store::billing::UsageGroup>| {
        groups.iter().map(|g| g.calls).sum::<u64>()
    };
    assert_eq!(calls(s.usage("acme", 0, NOW + 1).await.unwrap()), 3);
    assert_eq!(calls(s.usage("globex", 0, NOW + 1).await.unwrap()), 2);
    // Deleting the tenant takes its agents' daily aggregates too, and no other tenant's.
    let agents = |aggs: Vec<DailyAggregate>| {
        let mut a: Vec<String> = aggs.into_iter().map(|a| a.key.agent_id).collect();
        a.sort();
        a.dedup();
        a
    };
    assert_eq!(
        agents(s.aggregates(0, u64::MAX).await.unwrap()),
        ["sbc-a", "sbc-g"]
    );
    let audit = collector::server::store::AuditEntry {
        time_ms: NOW,
        action: AuditAction::TenantDelete,
        actor: "noc".into(),
        subjects: Vec::new(),
        reference: "T-1".into(),
        affected: 0,
        tenant: Some("acme".into()),
    };
    assert_eq!(s.delete_tenant("acme", audit).await.unwrap(), 1);
    assert_eq!(
        agents(s.aggregates(0, u64::MAX).await.unwrap()),
        ["sbc-g"],
        "{}",
        b.name()
    );
    assert_eq!(calls(s.usage("acme", 0, NOW + 1).await.unwrap()), 0);
    for days in [0, 90, 120] {
        let longer = RetentionPolicy {
            days: 90,
            tenants: [("acme".to_owned(), days)].into(),
            ..Default::default()
        };
        assert!(longer.validate().is_err(), "{days} days accepted");
    }
}

both_backends!(
    a_tenant_with_a_shorter_retention_loses_only_its_own_older_cdrs,
    the_final_record_supersedes_its_interims,
    an_interim_after_its_final_is_not_stored,
    ingest_is_exactly_once_per_agent_and_sequence,
    retention_deletes_exactly_what_is_older_than_the_limit_and_keeps_aggregates,
    erasure_removes_all_of_a_subjects_cdrs_and_nothing_else,
    query_filters_select_the_fixture_rows,
    call_view_returns_every_leg_of_the_matching_calls,
    schema_is_versioned_and_indexed,
);

/// The scale-out path: two collectors (two stores, two pools) on one PostgreSQL database,
/// started at the same moment (migrations race), receiving the same agent's batches at
/// once (a reconnect through a load balancer resends to the other server): every sequence
/// is stored once, and retention runs on one of them at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_one_postgres_database() {
    let b = Backend::postgres();
    let url = b.url();
    let (s1, s2) = tokio::join!(
        collector::server::store::open(&url),
        collector::server::store::open(&url)
    );
    let (s1, s2) = (s1.unwrap(), s2.unwrap());
    const N: u64 = 400;
    let all: Vec<CdrRecord> = records(
        (1..=N)
            .map(|i| cdr(&format!("c{i}"), NOW + i * DAY / 100, Disposition::Answered))
            .collect(),
        1,
    );
    // Each server gets every batch of 20, in order, racing the other.
    let send = |s: Arc<dyn collector::server::store::Store>, recs: Vec<CdrRecord>| async move {
        for chunk in recs.chunks(20) {
            s.ingest("A", chunk.to_vec()).await.unwrap();
        }
    };
    tokio::join!(
        send(Arc::clone(&s1), all.clone()),
        send(Arc::clone(&s2), all)
    );
    let want: Vec<(String, u64, String)> = (1..=N)
        .map(|i| ("A".to_string(), i, format!("c{i}")))
        .collect();
    assert_eq!(b.stored().await, want);
    assert_eq!(s2.cursor("A").await.unwrap(), N);
    let policy = RetentionPolicy {
        days: 1,
        ..Default::default()
    };
    let later = NOW + 3 * DAY;
    let (r1, r2) = tokio::join!(
        retention::run_once(s1.as_ref(), &policy, later),
        retention::run_once(s2.as_ref(), &policy, later)
    );
    let deleted: u64 = [r1.unwrap(), r2.unwrap()]
        .iter()
        .flatten()
        .map(|r| r.deleted)
        .sum();
    // Everything before `later - 1 day` = NOW + 2 days: CDRs 1..=199 (start NOW + i/100 d).
    assert_eq!(deleted, 199);
    let calls: u64 = s1
        .aggregates(0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|a| a.calls)
        .sum();
    assert_eq!(calls, 199);
    assert_eq!(b.cdr_ids().await.len(), 201);
}

/// `SELECT cdr_id FROM cdrs` with no condition, as the tenant role with `tenant` set.
async fn unscoped(c: &mut tokio_postgres::Client, tenant: Option<&str>) -> Vec<String> {
    let tx = c.transaction().await.unwrap();
    tx.batch_execute("SET LOCAL ROLE collector_tenant")
        .await
        .unwrap();
    if let Some(t) = tenant {
        tx.execute("SELECT set_config('collector.tenant', $1, true)", &[&t])
            .await
            .unwrap();
    }
    let ids = tx
        .query("SELECT cdr_id FROM cdrs ORDER BY cdr_id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    tx.rollback().await.unwrap();
    ids
}

/// Row-level security, the second wall between tenants in PostgreSQL: an unscoped query
/// (no tenant condition at all, as a buggy query builder would send) run as the tenant
/// role with one tenant set returns that tenant's rows only, and none with no tenant set;
/// reads through the store, which run as that role, still find the tenant's rows. Known by
/// construction: which CDR went into which tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_security_confines_an_unscoped_query_to_the_tenant() {
    let b = Backend::postgres();
    let s = b.open().await;
    let acme = records(
        vec![
            cdr("a1", NOW, Disposition::Answered),
            cdr("a2", NOW + 1, Disposition::Answered),
        ],
        1,
    );
    let globex = records(vec![cdr("g1", NOW + 2, Disposition::Answered)], 1);
    s.ingest_into("sbc-a", "acme", acme).await.unwrap();
    s.ingest_into("sbc-g", "globex", globex).await.unwrap();
    let Backend::Postgres(cluster) = &b else {
        unreachable!()
    };
    let mut c = cluster.client().await;
    assert_eq!(unscoped(&mut c, Some("acme")).await, ["a1", "a2"]);
    assert_eq!(unscoped(&mut c, Some("globex")).await, ["g1"]);
    assert!(unscoped(&mut c, None).await.is_empty());
    // The collector's own role is not confined (retention, the provider's reads).
    let all: i64 = c
        .query_one("SELECT COUNT(*) FROM cdrs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(all, 3);
    // Reads of one tenant through the store run as the tenant role and still work.
    let f = CdrFilter {
        tenant: Some("globex".into()),
        limit: 10,
        ..Default::default()
    };
    let ids: Vec<String> = s
        .query(f)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cdr_id)
        .collect();
    assert_eq!(ids, ["g1"]);
}
