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
        let mut s = Spool::open(&d, SpoolOptions::default()).unwrap();
        assert_eq!(s.append(b"a").unwrap(), 1);
        assert_eq!(s.append_batch([&b"bb"[..], b"ccc"]).unwrap(), (2, 3));
        assert_eq!(s.stats().bytes_used, 3 * H + 6);
    }
    let seg = only_segment(&d);
    assert_eq!(seg.file_name().unwrap(), "seg-00000000000000000001.log");
    assert_eq!(fs::metadata(&seg).unwrap().len(), 3 * H + 6);
    let mut s = Spool::open(&d, SpoolOptions::default()).unwrap();
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
    drop(Spool::open(&d, SpoolOptions::default()).unwrap());
    assert_eq!(
        fs::metadata(&d).unwrap().permissions().mode() & 0o777,
        0o700
    );
    fs::set_permissions(&d, fs::Permissions::from_mode(0o750)).unwrap();
    match Spool::open(&d, SpoolOptions::default()) {
        Err(SpoolError::InsecurePermissions { mode, .. }) => assert_eq!(mode, 0o750),
        other => panic!("expected InsecurePermissions, got {other:?}"),
    }
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let (_t, d) = dir();
    let _s = Spool::open(&d, SpoolOptions::default()).unwrap();
    assert!(matches!(
        Spool::open(&d, SpoolOptions::default()),
        Err(SpoolError::Locked(_))
    ));
}

fn three_records(d: &Path) -> PathBuf {
    let mut s = Spool::open(d, SpoolOptions::default()).unwrap();
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
    let mut s = Spool::open(&d, SpoolOptions::default()).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (2, "bbbb")]));
    let r = s.stats().recovery;
    assert_eq!((r.segments_cut, r.bytes_cut, r.records_skipped), (1, 17, 0));
    assert_eq!(fs::metadata(&seg).unwrap().len(), 40);
    // 17 bytes could have held at most ceil(17/16) = 2 sequences past 2: 3 and 4.
    assert_eq!(s.append(b"new").unwrap(), 5);
    drop(s);
    let s = Spool::open(&d, SpoolOptions::default()).unwrap();
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
    let s = Spool::open(&d, SpoolOptions::default()).unwrap();
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
    let mut s = Spool::open(&d, SpoolOptions::default()).unwrap();
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
    let s = Spool::open(&d, SpoolOptions::default()).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (3, "cccc")]));
    let r = s.stats().recovery;
    assert_eq!((r.segments_cut, r.bytes_cut, r.records_skipped), (1, 20, 1));
    assert_eq!(s.stats().next_seq, 4);
    drop(s);
    // The segment was rewritten without the damaged frame: a reopen finds nothing to fix.
    let s = Spool::open(&d, SpoolOptions::default()).unwrap();
    assert_eq!(fs::metadata(only_segment(&d)).unwrap().len(), 40);
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (3, "cccc")]));
    assert_eq!(s.stats().recovery, RecoveryReport::default());
}

#[test]
fn damaged_length_of_a_middle_record_still_finds_the_records_after_it() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    flip(&seg, 20 + 3); // high byte of record 2's length: 4 + 0x10000000
    let s = Spool::open(&d, SpoolOptions::default()).unwrap();
    assert_eq!(all(&s), recs(&[(1, "aaaa"), (3, "cccc")]));
    assert_eq!(s.stats().recovery.records_skipped, 1);
}

#[test]
fn damaged_sequence_field_is_caught_by_the_checksum() {
    let (_t, d) = dir();
    let seg = three_records(&d);
    flip(&seg, 20 + 8); // record 2's sequence: 2 ^ 0x10 = 18
    let s = Spool::open(&d, SpoolOptions::default()).unwrap();
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
    let mut s = Spool::open(&d, opts).unwrap();
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
    let mut s = Spool::open(&d, opts).unwrap();
    assert_eq!(s.acked(), 2);
    assert_eq!(
        s.unacked_from(0).map(|r| r.unwrap().0).collect::<Vec<_>>(),
        vec![3, 4]
    );
    s.ack(4).unwrap();
    // The newest segment stays, so the sequence survives a restart with nothing pending.
    assert_eq!(s.stats().segments, 1);
    drop(s);
    let mut s = Spool::open(&d, opts).unwrap();
    assert_eq!(s.unacked_from(0).count(), 0);
    assert_eq!(s.append(b"z").unwrap(), 5);
}

#[test]
fn damaged_ack_cursor_falls_back_to_resending_everything() {
    let (_t, d) = dir();
    let mut s = Spool::open(&d, SpoolOptions::default()).unwrap();
    s.append_batch(["a", "b"]).unwrap();
    s.ack(1).unwrap();
    drop(s);
    let mut b = fs::read(d.join("ack")).unwrap();
    assert_eq!(b.len(), 12);
    assert_eq!(&b[..8], &1u64.to_le_bytes());
    b[0] = 7;
    fs::write(d.join("ack"), b).unwrap();
    let s = Spool::open(&d, SpoolOptions::default()).unwrap();
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
    let mut s = Spool::open(&d, opts).unwrap();
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
    let mut s = Spool::open(&d, opts).unwrap();
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
