//! Segment files: naming, the open-time scan that finds the good records and removes
//! damage, and the reader behind [`super::Unacked`].
//!
//! Invariant: the records of one segment carry consecutive sequences starting at the
//! number in its name (the spool starts a new segment whenever it has to skip sequences).
//!
//! Recovery policy (why it is safe for billing records):
//! - A frame that fails its checks (runs past the end of the file, an implausible length, a
//!   checksum mismatch, a sequence that does not increase) starts a damaged region. The scan
//!   resynchronises by looking, byte by byte, for the next frame that verifies and carries
//!   a plausible next sequence (cheap: the sequence is compared before any checksum).
//! - Records after a damaged middle record are therefore **kept**: they are valid, fsynced
//!   CDRs, and losing them for a neighbour's bit flip would be worse than a gap in the
//!   sequence. The segment is rewritten without the damaged bytes (temp file, fsync,
//!   rename), so readers never meet damage.
//! - A damaged tail (nothing verifies after it) is cut with a truncate. A torn last write
//!   lands here: the `append` that wrote it never returned, so nobody was told it was stored.
//! - Sequences a removed region may have held are never reused: every frame is at least
//!   [`HEADER_LEN`] bytes and the sequences in a segment are consecutive, so the spool
//!   continues after `last good + ceil(removed bytes / HEADER_LEN)`. A collector that stored
//!   a record before it was damaged here can thus never take a new record for a duplicate.
use std::{
    fs::{self, File},
    io::{self, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use super::frame::{Header, HEADER_LEN};

/// A sparse index entry is kept every this many records, so a reader can seek close to an
/// unacknowledged sequence instead of reading a whole segment.
const INDEX_EVERY: u64 = 256;

/// While resynchronising, a candidate frame is only considered if its sequence is within
/// this distance above the last good one (a segment never holds more records than this).
const PLAUSIBLE_SEQ_GAP: u64 = 1 << 24;

/// Suffix of a segment whose payloads are sealed records (see [`super::sealing`]).
const SEALED_SUFFIX: &str = ".sealed.log";
/// Suffix of a segment whose payloads are in clear.
const CLEAR_SUFFIX: &str = ".log";

/// File name of the segment whose first sequence is `first_seq`: `seg-<seq>.log` in clear,
/// `seg-<seq>.sealed.log` sealed.
pub fn name(first_seq: u64, sealed: bool) -> String {
    let suffix = if sealed { SEALED_SUFFIX } else { CLEAR_SUFFIX };
    format!("seg-{first_seq:020}{suffix}")
}

/// The first sequence encoded in a segment file name and whether the segment is sealed, or
/// `None` if it is not a segment's name.
pub fn parse_name(file_name: &str) -> Option<(u64, bool)> {
    let rest = file_name.strip_prefix("seg-")?;
    let (digits, sealed) = match rest.strip_suffix(SEALED_SUFFIX) {
        Some(d) => (d, true),
        None => (rest.strip_suffix(CLEAR_SUFFIX)?, false),
    };
    // Digits only: `str::parse` would also take a sign.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(|seq| (seq, sealed))
}

/// What the spool knows about one segment file.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// First sequence allocated when the segment was created (from its name).
    pub name_seq: u64,
    /// Whether its payloads are sealed records (from its name).
    pub sealed: bool,
    /// Sequence of its last good record (`None` when it holds none).
    pub last_seq: Option<u64>,
    /// Good records in it.
    pub records: u64,
    /// Bytes of the file that hold durable, verified records.
    pub len: u64,
    /// Sparse `(sequence, offset)` index, increasing.
    pub index: Vec<(u64, u64)>,
}

impl SegmentInfo {
    /// A new, empty segment.
    pub fn empty(path: PathBuf, name_seq: u64, sealed: bool) -> Self {
        Self {
            path,
            name_seq,
            sealed,
            last_seq: None,
            records: 0,
            len: 0,
            index: Vec::new(),
        }
    }

    /// Records a good frame at `offset`.
    pub fn push(&mut self, seq: u64, offset: u64, frame_len: u64) {
        if self.records.is_multiple_of(INDEX_EVERY) {
            self.index.push((seq, offset));
        }
        self.records += 1;
        self.last_seq = Some(seq);
        self.len = offset + frame_len;
    }

    /// Offset to start reading from to find `seq` (the closest indexed record before it).
    pub fn seek_hint(&self, seq: u64) -> u64 {
        self.index
            .iter()
            .take_while(|(s, _)| *s <= seq)
            .last()
            .map_or(0, |(_, off)| *off)
    }
}

/// A verified frame found by [`scan_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Its sequence.
    pub seq: u64,
    /// Offset of its header.
    pub offset: usize,
    /// Header + payload bytes.
    pub len: usize,
}

/// Result of scanning a segment's bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanBytes {
    /// Verified frames, in file order, with increasing sequences.
    pub good: Vec<Found>,
    /// Damaged regions followed by a verified frame (each held at least one record).
    pub middle_regions: u64,
    /// Bytes in damaged regions (middle and tail).
    pub damaged_bytes: u64,
    /// Whether the file ends in a damaged region.
    pub damaged_tail: bool,
    /// Highest sequence a damaged region may have held (0 if none was damaged).
    pub burnt_seq: u64,
}

/// The frame at `offset` if it is complete, verifies, and its sequence is in
/// `(last, last + PLAUSIBLE_SEQ_GAP]`.
fn frame_at(buf: &[u8], offset: usize, last: u64, max_payload: u32) -> Option<Found> {
    let head: &[u8; HEADER_LEN] = buf
        .get(offset..offset.checked_add(HEADER_LEN)?)?
        .try_into()
        .ok()?;
    let h = Header::parse(head);
    if h.seq <= last || h.seq - last > PLAUSIBLE_SEQ_GAP || h.len > max_payload {
        return None;
    }
    let start = offset + HEADER_LEN;
    let payload = buf.get(start..start.checked_add(h.len as usize)?)?;
    h.verifies(payload).then_some(Found {
        seq: h.seq,
        offset,
        len: HEADER_LEN + payload.len(),
    })
}

/// Finds the verified frames of a segment. `last` is the sequence just below the segment's
/// first (from its name, or the last good record before it, whichever is higher).
pub fn scan_bytes(buf: &[u8], mut last: u64, max_payload: u32) -> ScanBytes {
    let mut out = ScanBytes::default();
    let mut pos = 0usize;
    while pos < buf.len() {
        if let Some(f) = frame_at(buf, pos, last, max_payload) {
            out.good.push(f);
            last = f.seq;
            pos += f.len;
            continue;
        }
        let next = (pos + 1..buf.len()).find(|p| frame_at(buf, *p, last, max_payload).is_some());
        let end = next.unwrap_or(buf.len());
        let region = (end - pos) as u64;
        out.damaged_bytes += region;
        // Consecutive sequences and frames of at least HEADER_LEN bytes bound what it held.
        out.burnt_seq = out
            .burnt_seq
            .max(last.saturating_add(region.div_ceil(HEADER_LEN as u64)));
        match next {
            Some(_) => out.middle_regions += 1,
            None => out.damaged_tail = true,
        }
        pos = end;
    }
    out
}

/// Outcome of recovering one segment.
#[derive(Debug)]
pub struct Scan {
    /// The segment as it now is on disk.
    pub info: SegmentInfo,
    /// Bytes removed (damaged regions).
    pub bytes_removed: u64,
    /// Damaged middle regions removed while the records after them were kept.
    pub records_skipped: u64,
    /// Highest sequence a removed region may have carried (0 if none).
    pub burnt_seq: u64,
}

/// Scans a segment and removes any damage from the file (see the module policy).
/// `prev_seq` is the last good sequence before this segment; `max_payload` bounds a frame's
/// payload as stored (sealed records included).
pub fn recover(
    path: &Path,
    name_seq: u64,
    sealed: bool,
    prev_seq: u64,
    max_payload: u32,
) -> io::Result<Scan> {
    let buf = fs::read(path)?;
    let base = prev_seq.max(name_seq.saturating_sub(1));
    let s = scan_bytes(&buf, base, max_payload);
    let mut info = SegmentInfo::empty(path.to_path_buf(), name_seq, sealed);
    let mut offset = 0u64;
    for f in &s.good {
        info.push(f.seq, offset, f.len as u64);
        offset += f.len as u64;
    }
    if s.middle_regions > 0 {
        rewrite(path, &buf, &s.good)?;
    } else if s.damaged_tail {
        let file = File::options().write(true).open(path)?;
        file.set_len(offset)?;
        file.sync_all()?;
    }
    Ok(Scan {
        info,
        bytes_removed: s.damaged_bytes,
        records_skipped: s.middle_regions,
        burnt_seq: s.burnt_seq,
    })
}

/// Replaces the segment by its good frames only, atomically.
fn rewrite(path: &Path, buf: &[u8], good: &[Found]) -> io::Result<()> {
    let tmp = path.with_extension("log.tmp");
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    for g in good {
        let bytes = buf.get(g.offset..g.offset + g.len).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "frame outside the scanned buffer",
            )
        })?;
        f.write_all(bytes)?;
    }
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => super::cursor::sync_dir(dir),
        None => Ok(()),
    }
}

/// Reads records of one segment from `start` up to the durable end `end`.
pub struct SegmentReader {
    reader: BufReader<File>,
    pos: u64,
    end: u64,
}

impl SegmentReader {
    /// Opens `path` positioned at `start`. `Ok(None)` if the file no longer exists (it was
    /// fully acknowledged and deleted meanwhile).
    pub fn open(path: &Path, start: u64, end: u64) -> io::Result<Option<Self>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(start))?;
        Ok(Some(Self {
            reader: BufReader::with_capacity(1 << 16, file),
            pos: start,
            end,
        }))
    }

    /// The next record `(seq, payload)`; `Ok(None)` at the durable end. Damage found here
    /// appeared after the open-time scan (the disk is failing) and is an error.
    pub fn next_record(&mut self, max_payload: u32) -> io::Result<Option<(u64, Vec<u8>)>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let damaged = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "segment damaged after it was scanned",
            )
        };
        let mut head = [0u8; HEADER_LEN];
        self.reader.read_exact(&mut head)?;
        let h = Header::parse(&head);
        if h.len > max_payload || self.pos + h.frame_len() > self.end {
            return Err(damaged());
        }
        let mut payload = vec![0u8; h.len as usize];
        self.reader.read_exact(&mut payload)?;
        if !h.verifies(&payload) {
            return Err(damaged());
        }
        self.pos += h.frame_len();
        Ok(Some((h.seq, payload)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn names_sort_like_their_sequences_and_round_trip() {
        assert_eq!(name(42, false), "seg-00000000000000000042.log");
        assert_eq!(name(42, true), "seg-00000000000000000042.sealed.log");
        for sealed in [false, true] {
            assert_eq!(
                parse_name(&name(u64::MAX, sealed)),
                Some((u64::MAX, sealed))
            );
            assert!(name(9, sealed) < name(10, sealed));
        }
        assert_eq!(parse_name("seg-12.tmp"), None);
        assert_eq!(parse_name("seg-12.sealed.log.tmp"), None);
        assert_eq!(parse_name("seg-+12.log"), None);
        assert_eq!(parse_name("seg-.sealed.log"), None);
        assert_eq!(parse_name("ack"), None);
    }
}
