//! Encryption at rest (issue 23), over both backends: a canary scan of every byte the
//! database wrote to disk finds none of a call's pseudonyms, truncated addresses or user
//! agents when the store seals, and finds them when it is explicitly left in clear (so the
//! scan can fail); CDRs written before and after a key rotation are all readable and found
//! by pseudonym, and re-sealing moves every row (those stored in clear too) to the new key;
//! after a tenant is deleted, a copy of the database made before the deletion
//! no longer opens under the collector's keys, while the same copy with the key store as it
//! was before opens (the rows really are in it).
use std::{path::Path, sync::Arc};

use collector::{
    privacy::seal::MasterKey,
    server::store::{
        sealed::{SealedStore, TenantKeys},
        AuditAction, AuditEntry, CdrFilter, Erasure, StoreError,
    },
};
use collector_proto::v1::{Cdr, CdrRecord, Disposition, MediaLeg, Party};

use crate::support::Backend;

/// Every value of the test call that must never be on disk in clear.
const CANARIES: [&str; 10] = [
    "Pcanary-alice-7f3a",
    "Pcanary-bob-91c2",
    "Pcanary-display-55e1",
    "Pcanary-callid-0d4b",
    "Pcanary-corr-e2a9",
    "198.18.77.0/24",
    "198.18.78.0/24",
    "CanaryPhone/9.9.1",
    "CanarySBC/4.2.0",
    // Named only in an erasure request (its audit entry).
    "Pcanary-erased-3b77",
];

fn canary_cdr(id: &str) -> Cdr {
    Cdr {
        agent_id: "sbc-1".into(),
        cdr_id: id.into(),
        call_id: CANARIES[3].into(),
        correlation_id: CANARIES[4].into(),
        caller: Some(Party {
            user: CANARIES[0].into(),
            domain: "Pdomain-x".into(),
            display: CANARIES[2].into(),
        }),
        callee: Some(Party {
            user: CANARIES[1].into(),
            ..Default::default()
        }),
        src_ip: CANARIES[5].into(),
        dst_ip: CANARIES[6].into(),
        user_agent_caller: CANARIES[7].into(),
        user_agent_callee: CANARIES[8].into(),
        start_time_ms: 1_765_000_000_000,
        end_time_ms: 1_765_000_060_000,
        duration_ms: 60_000,
        billable_ms: 55_000,
        disposition: Disposition::Answered as i32,
        final_code: 200,
        codecs: vec!["PCMA".into()],
        media: vec![MediaLeg {
            src_ip: CANARIES[5].into(),
            dst_ip: CANARIES[6].into(),
            codec: "PCMA".into(),
            packets: 2_750,
            loss_pct: 1.5,
            mos: 4.1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn records(from_seq: u64, cdrs: Vec<Cdr>) -> Vec<CdrRecord> {
    cdrs.into_iter()
        .zip(from_seq..)
        .map(|(c, sequence)| CdrRecord {
            sequence,
            cdr: Some(c),
        })
        .collect()
}

/// Every canary found in any file under `dir`, with the file.
fn scan(dir: &Path) -> Vec<(String, String)> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            for c in CANARIES {
                if bytes.windows(c.len()).any(|w| w == c.as_bytes()) {
                    hits.push((c.to_owned(), path.display().to_string()));
                }
            }
        }
    }
    hits
}

fn keys(dir: &Path) -> Arc<TenantKeys> {
    let master = MasterKey::load_or_create(&dir.join("master.key"))
        .unwrap()
        .0;
    Arc::new(TenantKeys::open(&dir.join("tenant-keys"), master).unwrap())
}

fn by_pseudonym(p: &str, tenant: Option<&str>) -> CdrFilter {
    CdrFilter {
        pseudonyms: vec![p.into()],
        tenant: tenant.map(str::to_owned),
        limit: 100,
        ..Default::default()
    }
}

async fn sealed_files_hold_no_canary_and_clear_ones_do(b: Backend) {
    let key_dir = tempfile::tempdir().unwrap();
    let store = SealedStore::wrap(b.open().await, keys(key_dir.path()));
    let cdr = canary_cdr("c-1");
    store
        .ingest_into("sbc-1", "acme", records(1, vec![cdr.clone()]))
        .await
        .unwrap();
    // Through the store everything reads back whole, found by a pseudonym.
    let found = store
        .query(by_pseudonym(CANARIES[0], Some("acme")))
        .await
        .unwrap();
    assert_eq!(found, [cdr], "{}", b.name());
    store
        .audit(AuditEntry {
            time_ms: 1,
            action: AuditAction::Query,
            actor: "ops".into(),
            subjects: vec![CANARIES[0].into()],
            reference: "{}".into(),
            affected: 1,
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    assert_eq!(
        store.audit_log(10).await.unwrap()[0].subjects,
        [CANARIES[0]]
    );
    let erased = store
        .erase(Erasure {
            pseudonyms: vec![CANARIES[9].into()],
            reference: "t-9".into(),
            actor: "dpo".into(),
            now_ms: 2,
            tenant: Some("acme".into()),
            audited: None,
        })
        .await
        .unwrap();
    assert_eq!(erased, 0);
    assert_eq!(store.audit_log(1).await.unwrap()[0].subjects, [CANARIES[9]]);
    drop(store);
    let hits = scan(&b.files_on_disk().await);
    assert!(hits.is_empty(), "{}: in clear on disk: {hits:?}", b.name());

    // The same call in a store explicitly left in clear: the scan finds it.
    let clear = Backend::new_like(&b);
    let plain = clear.open().await;
    plain
        .ingest_into("sbc-1", "acme", records(1, vec![canary_cdr("c-1")]))
        .await
        .unwrap();
    drop(plain);
    let hits = scan(&clear.files_on_disk().await);
    for c in [CANARIES[0], CANARIES[5], CANARIES[7]] {
        assert!(
            hits.iter().any(|(h, _)| h == c),
            "{}: the scan misses {c} in a clear store",
            b.name()
        );
    }
}

async fn rotation_keeps_old_rows_and_deletion_shreds_every_copy(b: Backend) {
    let key_dir = tempfile::tempdir().unwrap();
    let keys = keys(key_dir.path());
    let store = SealedStore::wrap(b.open().await, Arc::clone(&keys));
    store
        .ingest_into("sbc-1", "acme", records(1, vec![canary_cdr("before")]))
        .await
        .unwrap();
    store
        .ingest_into("sbc-9", "globex", records(1, vec![canary_cdr("other")]))
        .await
        .unwrap();
    let first = keys.key_ids("acme").unwrap();
    let new = store.rotate_key("acme").await.unwrap();
    assert_eq!(keys.key_ids("acme").unwrap()[0], new);
    assert!(!first.contains(&new));
    store
        .ingest_into("sbc-1", "acme", records(2, vec![canary_cdr("after")]))
        .await
        .unwrap();
    let mut ids: Vec<String> = store
        .query(by_pseudonym(CANARIES[0], Some("acme")))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.cdr_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["after", "before"], "{}", b.name());

    // Re-encryption: a row stored in clear before encryption was on (straight into the
    // backend) and the row sealed under the old key are re-sealed under the new key; the row
    // already under it is left.
    b.open()
        .await
        .ingest_into("sbc-1", "acme", records(3, vec![canary_cdr("clear")]))
        .await
        .unwrap();
    assert_eq!(store.reseal("acme").await.unwrap(), 2, "{}", b.name());
    let sealed_under_new = format!("s1.{new:x}.");
    let callers = b
        .select("SELECT caller_user FROM cdrs WHERE tenant = 'acme'")
        .await;
    assert_eq!(callers.len(), 3);
    for c in &callers {
        assert!(c[0].starts_with(&sealed_under_new), "{}: {c:?}", b.name());
    }
    assert_eq!(
        store
            .query(by_pseudonym(CANARIES[0], Some("acme")))
            .await
            .unwrap()
            .len(),
        3
    );

    // A copy of the database and of the key store, made before the deletion.
    let copy = tempfile::tempdir().unwrap();
    let old_keys = copy.path().join("tenant-keys.before");
    std::fs::copy(key_dir.path().join("tenant-keys"), &old_keys).unwrap();
    let db_copy = b.copy_of_files();

    let audit = AuditEntry {
        time_ms: 2,
        action: AuditAction::TenantDelete,
        actor: "noc".into(),
        subjects: Vec::new(),
        reference: "contract ended".into(),
        affected: 0,
        tenant: Some("acme".into()),
    };
    assert_eq!(store.delete_tenant("acme", audit).await.unwrap(), 3);
    assert!(keys.key_ids("acme").unwrap().is_empty());
    assert!(store
        .query(by_pseudonym(CANARIES[0], Some("acme")))
        .await
        .unwrap()
        .is_empty());
    // The other tenant is untouched.
    assert_eq!(
        store
            .query(by_pseudonym(CANARIES[0], Some("globex")))
            .await
            .unwrap()
            .len(),
        1
    );

    // The copy under the collector's keys: acme's rows are there but cannot be opened.
    let Some(db_copy) = db_copy else {
        return; // PostgreSQL: no file copy of a running cluster (the keys are gone all the same).
    };
    let master = || MasterKey::load(&key_dir.path().join("master.key")).unwrap();
    let now_keys =
        Arc::new(TenantKeys::open(&key_dir.path().join("tenant-keys"), master()).unwrap());
    let acme_rows = CdrFilter {
        tenant: Some("acme".into()),
        limit: 100,
        ..Default::default()
    };
    let shredded = SealedStore::wrap(db_copy.open().await, now_keys);
    assert!(
        matches!(
            shredded.query(acme_rows.clone()).await,
            Err(StoreError::Sealed(_))
        ),
        "a shredded tenant's rows opened"
    );
    assert!(shredded
        .query(by_pseudonym(CANARIES[0], Some("acme")))
        .await
        .unwrap()
        .is_empty());
    // The same copy with the key store as it was before the deletion opens: the rows are
    // really in the copy, only the keys are gone.
    let before = Arc::new(TenantKeys::open(&old_keys, master()).unwrap());
    let readable = SealedStore::wrap(db_copy.open().await, before);
    assert_eq!(readable.query(acme_rows).await.unwrap().len(), 3);
}

both_backends!(
    sealed_files_hold_no_canary_and_clear_ones_do,
    rotation_keeps_old_rows_and_deletion_shreds_every_copy,
);
