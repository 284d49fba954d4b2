//! Spool tests. Expected sizes and offsets are computed from the documented frame layout
//! (16-byte header + payload), not read back from the code.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "tests"
)]

use std::{fs, os::unix::fs::PermissionsExt, path::PathBuf};

use super::*;

const H: u64 = 16;

fn dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("spool");
    (t, d)
}

fn all(s: &Spool) -> Vec<(u64, Vec<u8>)> {
    s.unacked_from(0).collect::<Result<Vec<_>, _>>().unwrap()
}

fn only_segment(d: &Path) -> PathBuf {
    let mut segs: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.pop().unwrap()
}

fn recs(v: &[(u64, &str)]) -> Vec<(u64, Vec<u8>)> {
    v.iter().map(|(s, p)| (*s, p.as_bytes().to_vec())).collect()
}

#[test]
fn reopen_continues_after_the_last_record() {
    let (_t, d) = dir();
    {
        let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
        assert_eq!(s.append(b"a").unwrap(), 1);
        assert_eq!(s.append_batch([&b"bb"[..], b"ccc"]).unwrap(), (2, 3));
        assert_eq!(s.stats().bytes_used, 3 * H + 6);
    }
    let seg = only_segment(&d);
    assert_eq!(seg.file_name().unwrap(), "seg-00000000000000000001.log");
    assert_eq!(fs::metadata(&seg).unwrap().len(), 3 * H + 6);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "a"), (2, "bb"), (3, "ccc")]));
    assert_eq!(s.append(b"d").unwrap(), 4);
    assert_eq!(s.stats().recovery, RecoveryReport::default());
    assert_eq!(s.stats().pending, 4);
    assert_eq!(
        s.unacked_from(3).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        vec![3, 4]
    );
}

#[test]
fn directory_is_private_and_a_shared_one_is_refused() {
    let (_t, d) = dir();
    drop(Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap());
    assert_eq!(
        fs::metadata(&d).unwrap().permissions().mode() & 0o777,
        0o700
    );
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
    match Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed) {
        Err(SpoolError::InsecurePermissions { mode, .. }) => assert_eq!(mode, 0o750),
        other => panic!("expected InsecurePermissions, got {other:?}"),
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let (_t, d) = dir();
    let _s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert!(matches!(
        Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed),
        Err(SpoolError::Locked(_))
    ));
}

fn three_records(d: &Path) -> PathBuf {
    let mut s = Spool::open(d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    s.append_batch(["aaaa", "bbbb", "cccc"]).unwrap();
    drop(s);
    only_segment(d)
}

#[test]
fn torn_tail_inside_the_payload_is_cut_and_its_sequence_is_not_reused() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    // Each frame is 20 bytes; keep the third frame's header and 1 payload byte.
    let f = fs::File::options().write(true).open(&seg).unwrap();
    f.set_len(2 * 20 + 17).unwrap();
    drop(f);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (2, "bbbb")]));
    let r = s.stats().recovery;
    assert_eq!((r.segments_cut, r.bytes_cut, r.records_skipped), (1, 17, 0));
    assert_eq!(fs::metadata(&seg).unwrap().len(), 40);
    // 17 bytes could have held at most ceil(17/16) = 2 sequences past 2: 3 and 4.
    assert_eq!(s.append(b"new").unwrap(), 5);
    drop(s);
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (2, "bbbb"), (5, "new")]));
    assert_eq!(s.stats().recovery, RecoveryReport::default());
}

#[test]
fn torn_tail_inside_the_header_is_cut() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    let f = fs::File::options().write(true).open(&seg).unwrap();
    f.set_len(2 * 20 + 5).unwrap();
    drop(f);
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (2, "bbbb")]));
    assert_eq!(s.stats().recovery.bytes_cut, 5);
    assert_eq!(s.stats().next_seq, 4);
}

fn flip(path: &Path, offset: usize) {
    let mut b = fs::read(path).unwrap();
    b[offset] ^= 0x10;
    fs::write(path, b).unwrap();
}

#[test]
fn bit_flip_in_the_last_record_cuts_only_that_record() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    flip(&seg, 2 * 20 + 16 + 2); // a payload byte of record 3
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (2, "bbbb")]));
    let r = s.stats().recovery;
    assert_eq!((r.segments_cut, r.bytes_cut, r.records_skipped), (1, 20, 0));
    // Record 3 may already be stored at the collector: its sequence must not come back.
    assert!(s.append(b"x").unwrap() > 3);
}

#[test]
fn bit_flip_in_a_middle_record_drops_it_and_keeps_the_records_after_it() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    flip(&seg, 20 + 16); // first payload byte of record 2
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (3, "cccc")]));
    let r = s.stats().recovery;
    assert_eq!((r.segments_cut, r.bytes_cut, r.records_skipped), (1, 20, 1));
    assert_eq!(s.stats().next_seq, 4);
    drop(s);
    // The segment was rewritten without the damaged frame: a reopen finds nothing to fix.
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(fs::metadata(only_segment(&d)).unwrap().len(), 40);
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (3, "cccc")]));
    assert_eq!(s.stats().recovery, RecoveryReport::default());
}

#[test]
fn damaged_length_of_a_middle_record_still_finds_the_records_after_it() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    flip(&seg, 20 + 3); // high byte of record 2's length: 4 + 0x10000000
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (3, "cccc")]));
    assert_eq!(s.stats().recovery.records_skipped, 1);
}

#[test]
fn damaged_sequence_field_is_caught_by_the_checksum() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    flip(&seg, 20 + 8); // record 2's sequence: 2 ^ 0x10 = 18
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (3, "cccc")]));
}

#[test]
fn ack_persists_and_fully_acknowledged_segments_are_deleted() {
    let (_t, d) = dir();
    // A segment rolls once it reaches 80 bytes: one 64-byte record (80-byte frame) each.
    let opts = SpoolOptions {
        segment_bytes: 80,
        ..SpoolOptions::default()
    };
    let mut s = Spool::open(&d, opts, SpoolSealing::Unsealed).unwrap();
    for i in 1..=4u64 {
        assert_eq!(s.append(&[i as u8; 64]).unwrap(), i);
    }
    assert_eq!(s.stats().segments, 4);
    s.ack(2).unwrap();
    assert_eq!(s.stats().segments, 2);
    assert_eq!(s.stats().bytes_used, 2 * 80);
    assert!(!d.join("seg-00000000000000000001.log").exists());
    assert!(!d.join("seg-00000000000000000002.log").exists());
    assert_eq!(
        s.unacked_from(0).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    assert!(matches!(
        s.ack(9),
        Err(SpoolError::AckBeyondEnd { ack: 9, last: 4 })
    ));
    s.ack(1).unwrap(); // going back is a no-op
    assert_eq!(s.acked(), 2);
    drop(s);
    let mut s = Spool::open(&d, opts, SpoolSealing::Unsealed).unwrap();
    assert_eq!(s.acked(), 2);
    assert_eq!(
        s.unacked_from(0).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    s.ack(4).unwrap();
    // The newest segment stays, so the sequence survives a restart with nothing pending.
    assert_eq!(s.stats().segments, 1);
    drop(s);
    let mut s = Spool::open(&d, opts, SpoolSealing::Unsealed).unwrap();
    assert_eq!(s.unacked_from(0).count(), 0);
    assert_eq!(s.append(b"z").unwrap(), 5);
}

#[test]
fn damaged_ack_cursor_falls_back_to_resending_everything() {
    let (_t, d) = dir();
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    s.append_batch(["a", "b"]).unwrap();
    s.ack(1).unwrap();
    drop(s);
    let mut b = fs::read(d.join("ack")).unwrap();
    assert_eq!(b.len(), 12);
    assert_eq!(&b[..8], &1u64.to_le_bytes());
    b[0] = 7;
    fs::write(d.join("ack"), b).unwrap();
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    assert!(s.stats().recovery.cursor_corrupt);
    assert_eq!(s.acked(), 0);
    assert_eq!(
        s.unacked_from(0).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn full_spool_refuses_and_counts_and_accepts_again_after_ack() {
    let (_t, d) = dir();
    // Room for exactly three 20-byte frames.
    let opts = SpoolOptions {
        max_bytes: 60,
        segment_bytes: 20,
        ..SpoolOptions::default()
    };
    let mut s = Spool::open(&d, opts, SpoolSealing::Unsealed).unwrap();
    s.append_batch(["1111", "2222", "3333"]).unwrap();
    match s.append(b"4444") {
        Err(SpoolError::Full(SpoolFull {
            used,
            needed,
            limit,
        })) => {
            assert_eq!((used, needed, limit), (60, 20, 60))
        }
        other => panic!("expected Full, got {other:?}"),
    }
    // A batch is all or nothing.
    assert!(matches!(
        s.append_batch(["a", "b"]),
        Err(SpoolError::Full(_))
    ));
    assert_eq!(s.stats().full_rejections, 3);
    assert_eq!(s.stats().next_seq, 4, "refused records take no sequence");
    assert_eq!(s.unacked_from(0).count(), 3, "nothing old was evicted");
    // Acknowledged records free their space, even those in the newest segment.
    s.ack(2).unwrap();
    assert!(
        matches!(s.append(b"4444"), Err(SpoolError::Full(_))),
        "3 is still pending"
    );
    s.ack(3).unwrap();
    assert_eq!(s.append(b"4444").unwrap(), 4);
    assert_eq!(s.stats().bytes_used, 20);
}

#[test]
fn oversized_record_is_refused() {
    let (_t, d) = dir();
    let opts = SpoolOptions {
        max_record_bytes: 8,
        ..SpoolOptions::default()
    };
    let mut s = Spool::open(&d, opts, SpoolSealing::Unsealed).unwrap();
    assert!(matches!(
        s.append(&[0; 9]),
        Err(SpoolError::RecordTooLarge { len: 9, max: 8 })
    ));
    assert_eq!(s.append(&[0; 8]).unwrap(), 1);
}

#[test]
fn scan_of_arbitrary_bytes_never_panics_and_keeps_order() {
    use proptest::prelude::*;
    proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 0..512), last in 0u64..8)| {
        let s = segment::scan_bytes(&bytes, last, 64);
        let mut prev = last;
        for f in &s.good {
            prop_assert!(f.seq > prev);
            prev = f.seq;
        }
    });
}

// --- Sealing at rest -------------------------------------------------------------------

use crate::privacy::seal::{MasterKey, SealError, RECORD_OVERHEAD};

/// Identifiers that must never be found in a sealed spool's files: pseudonyms, a truncated
/// address, a user agent, a destination prefix.
const CANARIES: [&str; 5] = [
    "P-k1_canary7f3a9c01",
    "P-k1_canary0b44e2d9",
    "198.18.7.0/24",
    "CanaryPhone/9.8.7 (sealing-test)",
    "+4477009",
];

fn canary_cdr(i: u64) -> Vec<u8> {
    use collector_proto::v1::{Cdr, Party};
    use prost::Message as _;
    Cdr {
        agent_id: "agent-canary".into(),
        cdr_id: format!("cdr-{i}"),
        caller: Some(Party {
            user: CANARIES[0].into(),
            ..Default::default()
        }),
        callee: Some(Party {
            user: CANARIES[1].into(),
            ..Default::default()
        }),
        src_ip: CANARIES[2].into(),
        user_agent_caller: CANARIES[3].into(),
        destination_prefix: CANARIES[4].into(),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Every byte of every file below `d`, with the file names.
fn every_byte(d: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(every_byte(&p));
        } else {
            out.push((p.clone(), fs::read(&p).unwrap()));
        }
    }
    out
}

fn canaries_found(d: &Path) -> Vec<(PathBuf, &'static str)> {
    let mut found = Vec::new();
    for (path, bytes) in every_byte(d) {
        for c in CANARIES {
            if bytes.windows(c.len()).any(|w| w == c.as_bytes()) {
                found.push((path.clone(), c));
            }
        }
    }
    found
}

fn sealed_key(t: &tempfile::TempDir) -> MasterKey {
    crate::spool::sealing::load_key(&t.path().join("spool"), &t.path().join("spool.key"))
        .unwrap()
        .0
}

#[test]
fn sealed_spool_files_hold_no_canary_and_unsealed_ones_do() {
    let records: Vec<Vec<u8>> = (1..=20).map(canary_cdr).collect();
    // Sealed as the agent opens it (a new key file beside the spool): write, roll segments,
    // reopen; then scan every byte of every file.
    let (t, d) = dir();
    let key_file = t.path().join("spool.key");
    let opts = SpoolOptions {
        segment_bytes: 1024,
        ..SpoolOptions::default()
    };
    {
        let mut s = Spool::open_with_key_file(&d, opts, Some(&key_file)).unwrap();
        assert!(s.is_sealed());
        s.append_batch(&records[..10]).unwrap();
        for r in &records[10..] {
            s.append(r).unwrap();
        }
        assert!(s.stats().segments > 1, "{:?}", s.stats());
    }
    let s = Spool::open_with_key_file(&d, opts, Some(&key_file)).unwrap();
    let back: Vec<_> = all(&s).into_iter().map(|(_, p)| p).collect();
    assert_eq!(back, records);
    drop(s);
    assert!(every_byte(&d)
        .iter()
        .any(|(p, _)| p.to_string_lossy().ends_with(".sealed.log")));
    assert_eq!(canaries_found(&d), []);

    // The same through an explicitly unsealed spool: every canary is there (the scan can
    // fail).
    let (_t, d) = dir();
    let mut s = Spool::open(&d, opts, SpoolSealing::Unsealed).unwrap();
    assert!(!s.is_sealed());
    s.append_batch(&records).unwrap();
    drop(s);
    let found = canaries_found(&d);
    for c in CANARIES {
        assert!(found.iter().any(|(_, f)| *f == c), "{c} not found");
    }
}

#[test]
fn sealed_frames_keep_the_framing_and_records_read_back() {
    let (t, d) = dir();
    let key = sealed_key(&t);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    assert_eq!(s.append(b"a").unwrap(), 1);
    assert_eq!(s.append_batch([&b"bb"[..], b"ccc"]).unwrap(), (2, 3));
    let o = RECORD_OVERHEAD as u64;
    assert_eq!(s.stats().bytes_used, 3 * (H + o) + 6);
    drop(s);
    let seg = only_segment(&d);
    assert_eq!(
        seg.file_name().unwrap(),
        "seg-00000000000000000001.sealed.log"
    );
    // The frame header is the documented one, the payload a sealed record.
    let bytes = fs::read(&seg).unwrap();
    assert_eq!(&bytes[..4], &(1 + RECORD_OVERHEAD as u32).to_le_bytes());
    assert_eq!(&bytes[8..16], &1u64.to_le_bytes());
    assert_eq!(bytes[16], crate::privacy::seal::RECORD_VERSION);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    assert_eq!(all(&s), recs(&[(1, "a"), (2, "bb"), (3, "ccc")]));
    assert_eq!(s.stats().recovery, RecoveryReport::default());
    assert_eq!(s.append(b"d").unwrap(), 4);
    // The plaintext limit applies, not the sealed size.
    let opts = SpoolOptions {
        max_record_bytes: 8,
        ..SpoolOptions::default()
    };
    drop(s);
    let mut s = Spool::open(&d, opts, SpoolSealing::Sealed(&key)).unwrap();
    assert_eq!(s.append(&[7; 8]).unwrap(), 5);
    assert!(matches!(
        s.append(&[7; 9]),
        Err(SpoolError::RecordTooLarge { len: 9, max: 8 })
    ));
    drop(s);
    let s = Spool::open(&d, opts, SpoolSealing::Sealed(&key)).unwrap();
    assert_eq!(all(&s).last().unwrap(), &(5, vec![7; 8]));
}

#[test]
fn another_master_key_or_no_key_is_a_typed_error_and_changes_nothing() {
    let (t, d) = dir();
    let key = sealed_key(&t);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    s.append(&canary_cdr(1)).unwrap();
    drop(s);
    let before = every_byte(&d);

    let other = MasterKey::generate().unwrap();
    let err = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&other)).unwrap_err();
    assert!(err.to_string().contains("key.wrapped"), "{err}");
    match err {
        SpoolError::Key { path, source } => {
            assert_eq!(path, d.join("key.wrapped"));
            assert!(matches!(source, SealError::Authentication), "{source:?}");
        }
        other => panic!("expected a key error, got {other:?}"),
    }
    match Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed) {
        Err(SpoolError::SealedWithoutKey(p)) => assert_eq!(p, d),
        other => panic!("expected SealedWithoutKey, got {other:?}"),
    }
    assert_eq!(every_byte(&d), before, "a refused open changes no file");

    // Crypto-shredding: without the wrapped data key the records cannot be read.
    fs::remove_file(d.join("key.wrapped")).unwrap();
    assert!(matches!(
        Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)),
        Err(SpoolError::DataKeyMissing(_))
    ));
}

#[test]
fn a_frame_moved_to_another_sequence_does_not_open() {
    let (t, d) = dir();
    let key = sealed_key(&t);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    s.append_batch([&b"first"[..], b"other"]).unwrap();
    drop(s);
    // Give record 2 the sealed payload of record 1, with a valid checksum for sequence 2: the
    // frame survives the scan, but the sequence is the record's associated data.
    let seg = only_segment(&d);
    let bytes = fs::read(&seg).unwrap();
    let len1 = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    let payload1 = bytes[16..16 + len1].to_vec();
    let mut out = bytes[..16 + len1].to_vec();
    let l = u32::try_from(payload1.len()).unwrap();
    frame::encode(2, &payload1, l, &mut out);
    fs::write(&seg, &out).unwrap();
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    let got: Vec<_> = s.unacked_from(0).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].as_ref().unwrap(), &(1, b"first".to_vec()));
    assert!(
        matches!(
            &got[1],
            Err(SpoolError::Seal {
                seq: 2,
                source: SealError::Authentication
            })
        ),
        "{:?}",
        got[1]
    );
}

#[test]
fn a_spool_in_clear_opens_sealed_and_drains_while_new_records_are_sealed() {
    let (t, d) = dir();
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
    s.append_batch([&b"old1"[..], b"old2"]).unwrap();
    drop(s);
    let key = sealed_key(&t);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    assert_eq!(s.append(b"new3").unwrap(), 3);
    assert_eq!(all(&s), recs(&[(1, "old1"), (2, "old2"), (3, "new3")]));
    let mut names: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("seg-"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "seg-00000000000000000001.log",
            "seg-00000000000000000003.sealed.log"
        ]
    );
    // Once acknowledged, the segment in clear is deleted.
    s.ack(2).unwrap();
    assert_eq!(
        only_segment(&d).file_name().unwrap(),
        "seg-00000000000000000003.sealed.log"
    );
    drop(s);
    let s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    assert_eq!(all(&s), recs(&[(3, "new3")]));
}

#[test]
fn an_empty_segment_is_relabelled_when_sealing_is_turned_on() {
    let (t, d) = dir();
    drop(Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap());
    assert_eq!(
        only_segment(&d).file_name().unwrap(),
        "seg-00000000000000000001.log"
    );
    let key = sealed_key(&t);
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key)).unwrap();
    assert_eq!(
        only_segment(&d).file_name().unwrap(),
        "seg-00000000000000000001.sealed.log"
    );
    assert_eq!(s.append(b"x").unwrap(), 1);
    s.ack(1).unwrap();
    drop(s);
    // Back to clear is refused while the newest segment (kept for its sequence mark) is
    // sealed, even with everything acknowledged.
    let mut s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed);
    assert!(matches!(s, Err(SpoolError::SealedWithoutKey(_))));
    s = Spool::open(&d, SpoolOptions::default(), SpoolSealing::Sealed(&key));
    assert_eq!(s.unwrap().append(b"y").unwrap(), 2);
}

#[test]
fn a_key_inside_the_spool_directory_is_refused_and_one_outside_is_created_0600() {
    let (t, d) = dir();
    for inside in [
        d.join("spool.key"),
        d.join("sub").join("k"),
        d.join(".").join("k"),
    ] {
        assert!(
            matches!(
                crate::spool::sealing::load_key(&d, &inside),
                Err(SpoolError::KeyInsideSpool { .. })
            ),
            "{inside:?}"
        );
    }
    drop(Spool::open(&d, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap());
    let inside = d.join("..").join("spool").join("key");
    assert!(matches!(
        crate::spool::sealing::load_key(&d, &inside),
        Err(SpoolError::KeyInsideSpool { .. })
    ));
    let outside = t.path().join("etc").join("spool.key");
    let (_, created) = crate::spool::sealing::load_key(&d, &outside).unwrap();
    assert!(created);
    assert_eq!(
        fs::metadata(&outside).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (_, created) = crate::spool::sealing::load_key(&d, &outside).unwrap();
    assert!(!created);
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        crate::spool::sealing::load_key(&d, &outside),
        Err(SpoolError::Key {
            source: SealError::KeyFile(crate::privacy::keys::KeyError::Permissions {
                mode: 0o644,
                ..
            }),
            ..
        })
    ));
}
