//! Durable CDR spool: a CDR counts as produced only once it is in the spool and fsynced.
//!
//! Layout of the spool directory (mode 0700, refused if group or others have any access,
//! because it holds call records):
//! - `seg-<first-seq>.log`: append-only segments of framed records
//!   (`[len u32][crc32c u32][seq u64][payload]`, see [`frame`]) whose payloads are in clear;
//! - `seg-<first-seq>.sealed.log`: the same framing, each payload a sealed record
//!   (AES-256-GCM-SIV, the sequence as associated data; see [`sealing`]). The suffix makes
//!   each segment say what it holds, so a spool written in clear by an older agent still
//!   opens, and turning sealing on continues in a new sealed segment while the segments in
//!   clear drain and are deleted once acknowledged. A spool holding sealed segments does not
//!   open without its key;
//! - `key.wrapped`: the spool's data key, wrapped by the master key file kept outside the
//!   directory (deleting that file crypto-shreds the spool; see [`sealing`]);
//! - `ack`: the acknowledgement cursor, the highest sequence the collector confirmed
//!   (see [`cursor`]);
//! - `lock`: held with an exclusive lock while a process has the spool open.
//!
//! Sequences start at 1 and strictly increase for the life of the directory, across
//! restarts and damage (see [`segment`] for the recovery policy). Fully acknowledged
//! segments are deleted; the newest segment is always kept because its name carries the
//! sequence high-water mark even when everything in it was acknowledged.
//!
//! **When full** (the size bound, 1 GiB by default, would be exceeded) the spool refuses
//! new records with [`SpoolError::Full`] and counts the refusal
//! ([`SpoolStats::full_rejections`]). It does not evict old unacknowledged records: these are
//! billing records, and dropping the oldest silently would corrupt billing without anyone
//! knowing, while a refusal is visible where the CDR is produced and on the metric the
//! operator alerts on. The producer decides what to do with a refused CDR (count it, keep it
//! in memory briefly, log the fact without identifiers).
//!
//! The API is synchronous (it calls `fsync`); async callers wrap it in [`SharedSpool`] and
//! call it from `tokio::task::spawn_blocking`.

pub mod cursor;
pub mod frame;
pub mod sealing;
pub mod segment;

use std::{
    collections::VecDeque,
    fs::{self, DirBuilder, File},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use serde::Serialize;
use thiserror::Error;

use crate::privacy::seal::{self, Keyring, SealError};
pub use sealing::SpoolSealing;
use segment::{SegmentInfo, SegmentReader};

/// Default size bound: 1 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default segment size before rolling to a new file: 16 MiB (the open-time scan reads one
/// segment into memory at a time).
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;
/// Default largest record: 1 MiB (a CDR is a few KiB; anything bigger is a bug upstream).
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 1 << 20;

/// Tuning of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolOptions {
    /// Bound on the bytes of all segment files together.
    pub max_bytes: u64,
    /// A new segment is started once the current one reaches this size.
    pub segment_bytes: u64,
    /// Largest accepted payload.
    pub max_record_bytes: u32,
}

impl Default for SpoolOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// The typed "spool is full" refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("spool is full: {used} of {limit} bytes used, {needed} more needed")]
pub struct SpoolFull {
    /// Bytes in use.
    pub used: u64,
    /// Bytes the refused records needed.
    pub needed: u64,
    /// The bound.
    pub limit: u64,
}

/// Errors of the spool.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// The size bound would be exceeded; the records were not stored.
    #[error(transparent)]
    Full(#[from] SpoolFull),
    /// A file operation failed.
    #[error("spool {what} failed for {path}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The spool directory is accessible to group or others.
    #[error("spool directory {path} has mode {mode:o}; it must not be accessible to group or others (chmod 700)")]
    InsecurePermissions {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path exists and is not a directory.
    #[error("spool path {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Another process has the spool open.
    #[error("spool {0} is in use by another process")]
    Locked(PathBuf),
    /// A payload is larger than the configured limit.
    #[error("record of {len} bytes exceeds the spool's {max}-byte limit")]
    RecordTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// An acknowledgement names a sequence that was never appended.
    #[error("acknowledgement {ack} is beyond the last appended sequence {last}")]
    AckBeyondEnd {
        /// The acknowledged sequence.
        ack: u64,
        /// The last appended sequence.
        last: u64,
    },
    /// A previous write or fsync failed, so the file state is unknown; reopen the spool
    /// (which rescans and cuts any partial record).
    #[error("spool is unusable after a failed write; reopen it")]
    Broken,
    /// A thread panicked while holding the spool lock.
    #[error("spool lock poisoned")]
    Poisoned,
    /// The spool key (master key file or `key.wrapped`) cannot be used: unreadable, exposed,
    /// malformed, or (authentication failure) not the key this spool was sealed with.
    #[error("spool key {path} cannot be used")]
    Key {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: SealError,
    },
    /// The master key file would sit inside the spool directory.
    #[error("spool key {key} is inside the spool directory {dir}: keep keys apart from the data")]
    KeyInsideSpool {
        /// The key file.
        key: PathBuf,
        /// The spool directory.
        dir: PathBuf,
    },
    /// The spool holds sealed segments and was opened without a key.
    #[error("spool {0} holds sealed records: open it with its key (--spool-key)")]
    SealedWithoutKey(PathBuf),
    /// The spool holds sealed segments but its wrapped data key is gone.
    #[error("spool data key {0} is missing: the sealed records cannot be read")]
    DataKeyMissing(PathBuf),
    /// A record cannot be sealed (no randomness) or opened (altered after its checksum was
    /// recomputed, or sealed under another key).
    #[error("spool record {seq} cannot be sealed or opened")]
    Seal {
        /// The record's sequence.
        seq: u64,
        /// The cause.
        #[source]
        source: SealError,
    },
}

/// Largest payload stored in a frame of a segment: a sealed record is larger than its
/// plaintext by [`seal::RECORD_OVERHEAD`].
fn frame_limit(max_record_bytes: u32, sealed: bool) -> u32 {
    if sealed {
        let overhead = u32::try_from(seal::RECORD_OVERHEAD).unwrap_or(u32::MAX);
        max_record_bytes.saturating_add(overhead)
    } else {
        max_record_bytes
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// What opening the spool found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Segments that held damage and were repaired.
    pub segments_cut: u64,
    /// Damaged bytes removed (tails cut and middle regions rewritten out).
    pub bytes_cut: u64,
    /// Damaged middle regions (each at least one record) dropped while the good records
    /// after them were kept.
    pub records_skipped: u64,
    /// The ack cursor file was damaged (everything unacknowledged since 0 is resent; the
    /// collector drops duplicates).
    pub cursor_corrupt: bool,
}

/// Counters and state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpoolStats {
    /// Sequence the next record will get.
    pub next_seq: u64,
    /// Highest acknowledged sequence.
    pub acked: u64,
    /// Records appended but not acknowledged (exact unless sequences were burnt by
    /// recovery, then an upper bound).
    pub pending: u64,
    /// Bytes of all segment files.
    pub bytes_used: u64,
    /// The size bound.
    pub max_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Records appended since open.
    pub appended_total: u64,
    /// Records refused because the spool was full, since open.
    pub full_rejections: u64,
    /// What open found.
    pub recovery: RecoveryReport,
}

/// A spool shared between the producer and the shipper.
pub type SharedSpool = Arc<Mutex<Spool>>;

/// Locks a shared spool, turning poisoning into an error.
pub fn lock(spool: &SharedSpool) -> Result<MutexGuard<'_, Spool>, SpoolError> {
    spool.lock().map_err(|_| SpoolError::Poisoned)
}

/// The durable spool (see the module docs).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    opts: SpoolOptions,
    /// Oldest first; the last one is the one appended to.
    segments: Vec<SegmentInfo>,
    active: File,
    next_seq: u64,
    acked: u64,
    bytes_used: u64,
    appended_total: u64,
    full_rejections: u64,
    recovery: RecoveryReport,
    broken: bool,
    /// The spool's data keys when new records are sealed.
    keys: Option<Arc<Keyring>>,
    notify: tokio::sync::watch::Sender<u64>,
    _lock: File,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, scans its segments, cuts damaged tails
    /// and continues the sequence after the last good record. `sealing` says whether new
    /// records are sealed (see [`SpoolSealing`]); a sealed spool opened with another master
    /// key is refused with [`SpoolError::Key`] before anything is changed.
    pub fn open(
        dir: impl AsRef<Path>,
        opts: SpoolOptions,
        sealing: SpoolSealing<'_>,
    ) -> Result<Self, SpoolError> {
        let dir = dir.as_ref().to_path_buf();
        prepare_dir(&dir)?;
        let lock = lock_dir(&dir)?;

        let mut recovery = RecoveryReport::default();
        let acked = match cursor::load(&dir).map_err(io_err("reading the ack cursor", &dir))? {
            cursor::Loaded::Missing => 0,
            cursor::Loaded::Value(v) => v,
            cursor::Loaded::Corrupt => {
                recovery.cursor_corrupt = true;
                0
            }
        };

        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            if let Some((seq, sealed)) = entry.file_name().to_str().and_then(segment::parse_name) {
                names.push((seq, sealed, entry.path()));
            }
        }
        names.sort_by_key(|(seq, sealed, _)| (*seq, *sealed));
        let has_sealed = names.iter().any(|(_, sealed, _)| *sealed);
        let keys = match sealing {
            SpoolSealing::Sealed(master) => {
                Some(Arc::new(sealing::keyring(&dir, master, has_sealed)?))
            }
            SpoolSealing::Unsealed if has_sealed => return Err(SpoolError::SealedWithoutKey(dir)),
            SpoolSealing::Unsealed => None,
        };
        let sealed = keys.is_some();

        let mut segments = Vec::with_capacity(names.len());
        // `high` bounds every sequence ever handed out; `last_good` orders the records.
        let mut high = acked;
        let mut last_good = 0;
        for (name_seq, seg_sealed, path) in names {
            let limit = frame_limit(opts.max_record_bytes, seg_sealed);
            let scan = segment::recover(&path, name_seq, seg_sealed, last_good, limit)
                .map_err(io_err("scanning segment", &path))?;
            if scan.bytes_removed > 0 {
                recovery.segments_cut += 1;
                recovery.bytes_cut += scan.bytes_removed;
            }
            recovery.records_skipped += scan.records_skipped;
            last_good = last_good.max(scan.info.last_seq.unwrap_or(0));
            // A segment's name is the first sequence allocated in it: later records are above.
            high = high
                .max(name_seq.saturating_sub(1))
                .max(scan.info.last_seq.unwrap_or(0))
                .max(scan.burnt_seq);
            segments.push(scan.info);
        }
        let next_seq = high.saturating_add(1);
        // Keep each segment's sequences consecutive from its name (recovery relies on it):
        // after skipped sequences, continue in a new segment.
        let continues = segments
            .last()
            .is_some_and(|s| s.last_seq.map_or(s.name_seq, |l| l + 1) == next_seq);
        match segments.last_mut() {
            Some(s) if continues && s.sealed == sealed => {}
            // Sealing turned on or off over an empty segment: rename it (atomically, so its
            // name keeps carrying the sequence high-water mark).
            Some(s) if continues && s.records == 0 => relabel_segment(&dir, s, sealed)?,
            _ => segments.push(create_segment(&dir, next_seq, sealed)?),
        }
        let active_path = segments.last().map(|s| s.path.clone()).unwrap_or_default();
        let active = File::options()
            .append(true)
            .open(&active_path)
            .map_err(io_err("opening segment", &active_path))?;
        let bytes_used = segments.iter().map(|s| s.len).sum();
        let (notify, _) = tokio::sync::watch::channel(next_seq - 1);
        if recovery != RecoveryReport::default() {
            tracing::warn!(
                segments_cut = recovery.segments_cut,
                bytes_cut = recovery.bytes_cut,
                records_skipped = recovery.records_skipped,
                cursor_corrupt = recovery.cursor_corrupt,
                "spool recovered from damage"
            );
        }
        let mut spool = Self {
            dir,
            opts,
            segments,
            active,
            next_seq,
            acked,
            bytes_used,
            appended_total: 0,
            full_rejections: 0,
            recovery,
            broken: false,
            keys,
            notify,
            _lock: lock,
        };
        spool.delete_acked_segments()?;
        Ok(spool)
    }

    /// Opens the spool sealed under the master key file `key_path` (created if missing and
    /// refused inside `dir`, see [`sealing::key_for`]), or in clear without one. The master
    /// key is dropped once it has unwrapped the spool's data key.
    pub fn open_with_key_file(
        dir: impl AsRef<Path>,
        opts: SpoolOptions,
        key_path: Option<&Path>,
    ) -> Result<Self, SpoolError> {
        let dir = dir.as_ref();
        let key = sealing::key_for(dir, key_path)?;
        Self::open(dir, opts, SpoolSealing::with(key.as_ref()))
    }

    /// Appends one record and fsyncs it; returns its sequence.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, SpoolError> {
        self.append_batch([payload]).map(|(first, _)| first)
    }

    /// Appends records with a single fsync; all or none are stored. Returns the first and
    /// last sequence given (equal for one record; `first > last` for an empty batch).
    pub fn append_batch<I, P>(&mut self, payloads: I) -> Result<(u64, u64), SpoolError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        if self.broken {
            return Err(SpoolError::Broken);
        }
        let first = self.next_seq;
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut seq = first;
        for p in payloads {
            let p = p.as_ref();
            let too_large = SpoolError::RecordTooLarge {
                len: p.len(),
                max: self.opts.max_record_bytes,
            };
            if u32::try_from(p.len()).map_or(true, |l| l > self.opts.max_record_bytes) {
                return Err(too_large);
            }
            let sealed;
            let stored = match &self.keys {
                Some(ring) => {
                    sealed = ring
                        .current()
                        .seal_record(&sealing::record_aad(seq), p)
                        .map_err(|source| SpoolError::Seal { seq, source })?;
                    sealed.as_slice()
                }
                None => p,
            };
            let len = u32::try_from(stored.len()).map_err(|_| too_large)?;
            let at = buf.len() as u64;
            frame::encode(seq, stored, len, &mut buf);
            frames.push((seq, at, buf.len() as u64 - at));
            seq += 1;
        }
        if frames.is_empty() {
            return Ok((first, first - 1));
        }
        let needed = buf.len() as u64;
        if self.bytes_used.saturating_add(needed) > self.opts.max_bytes {
            self.reclaim_active()?;
        }
        if self.bytes_used.saturating_add(needed) > self.opts.max_bytes {
            self.full_rejections += frames.len() as u64;
            return Err(SpoolFull {
                used: self.bytes_used,
                needed,
                limit: self.opts.max_bytes,
            }
            .into());
        }
        self.roll_if_needed()?;
        let Some(seg) = self.segments.last_mut() else {
            return Err(SpoolError::Broken);
        };
        let base = seg.len;
        let written = self
            .active
            .write_all(&buf)
            .and_then(|()| self.active.sync_data());
        if let Err(source) = written {
            // Take back a partial write so the file ends at a record boundary again; if even
            // that fails, the file state is unknown until a reopen rescans it.
            let undone = self
                .active
                .set_len(base)
                .and_then(|()| self.active.sync_data());
            if undone.is_err() {
                self.broken = true;
            }
            return Err(SpoolError::Io {
                what: "appending",
                path: seg.path.clone(),
                source,
            });
        }
        for (s, at, len) in frames {
            seg.push(s, base + at, len);
        }
        self.bytes_used += needed;
        self.next_seq = seq;
        self.appended_total += seq - first;
        self.notify.send_replace(seq - 1);
        Ok((first, seq - 1))
    }

    fn roll_if_needed(&mut self) -> Result<(), SpoolError> {
        let full = self
            .segments
            .last()
            .is_some_and(|s| s.records > 0 && s.len >= self.opts.segment_bytes);
        if !full {
            return Ok(());
        }
        let seg = create_segment(&self.dir, self.next_seq, self.keys.is_some())?;
        self.active = File::options()
            .append(true)
            .open(&seg.path)
            .map_err(io_err("opening segment", &seg.path))?;
        self.segments.push(seg);
        Ok(())
    }

    /// Frees the newest segment when everything in it is acknowledged (it is otherwise kept
    /// as the sequence high-water mark): a new empty segment takes over that role.
    fn reclaim_active(&mut self) -> Result<(), SpoolError> {
        let acked_active = self
            .segments
            .last()
            .is_some_and(|s| s.last_seq.is_some_and(|l| l <= self.acked));
        if acked_active {
            let seg = create_segment(&self.dir, self.next_seq, self.keys.is_some())?;
            self.active = File::options()
                .append(true)
                .open(&seg.path)
                .map_err(io_err("opening segment", &seg.path))?;
            self.segments.push(seg);
            self.delete_acked_segments()?;
        }
        Ok(())
    }

    /// Records the collector's acknowledgement of every sequence up to `seq` and deletes
    /// segments that hold nothing unacknowledged. Acknowledging less than before is a no-op.
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        if seq <= self.acked {
            return Ok(());
        }
        let last = self.next_seq - 1;
        if seq > last {
            return Err(SpoolError::AckBeyondEnd { ack: seq, last });
        }
        cursor::store(&self.dir, seq).map_err(io_err("writing the ack cursor", &self.dir))?;
        self.acked = seq;
        self.delete_acked_segments()
    }

    fn delete_acked_segments(&mut self) -> Result<(), SpoolError> {
        let mut deleted = false;
        while self.segments.len() > 1 {
            let Some(seg) = self.segments.first() else {
                break;
            };
            if seg.last_seq.is_some_and(|l| l > self.acked) {
                break;
            }
            fs::remove_file(&seg.path).map_err(io_err("deleting segment", &seg.path))?;
            self.bytes_used = self.bytes_used.saturating_sub(seg.len);
            self.segments.remove(0);
            deleted = true;
        }
        if deleted {
            cursor::sync_dir(&self.dir).map_err(io_err("syncing", &self.dir))?;
        }
        Ok(())
    }

    /// Reads the records at or after `seq` that are not acknowledged, oldest first. The
    /// reader works on its own file handles over what was durable when it was made, so the
    /// spool can be unlocked while it is drained.
    pub fn unacked_from(&self, seq: u64) -> Unacked {
        let from = seq.max(self.acked.saturating_add(1));
        let segs = self
            .segments
            .iter()
            .filter(|s| s.last_seq.is_some_and(|l| l >= from))
            .map(|s| (s.path.clone(), s.seek_hint(from), s.len, s.sealed))
            .collect();
        Unacked {
            segs,
            from,
            current: None,
            max_record_bytes: self.opts.max_record_bytes,
            keys: self.keys.clone(),
        }
    }

    /// Highest acknowledged sequence.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Last appended sequence (0 if none ever).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// A receiver that changes whenever records are appended (value: last sequence).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether new records are sealed.
    pub fn is_sealed(&self) -> bool {
        self.keys.is_some()
    }

    /// Counters and state.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            next_seq: self.next_seq,
            acked: self.acked,
            pending: (self.next_seq - 1).saturating_sub(self.acked),
            bytes_used: self.bytes_used,
            max_bytes: self.opts.max_bytes,
            segments: self.segments.len() as u64,
            appended_total: self.appended_total,
            full_rejections: self.full_rejections,
            recovery: self.recovery,
        }
    }
}

/// Unacknowledged records, oldest first, opened when sealed (see [`Spool::unacked_from`]).
pub struct Unacked {
    /// `(path, start offset, durable end, sealed)` of the segments still to read.
    segs: VecDeque<(PathBuf, u64, u64, bool)>,
    from: u64,
    current: Option<(PathBuf, SegmentReader, bool)>,
    max_record_bytes: u32,
    keys: Option<Arc<Keyring>>,
}

impl Unacked {
    fn open(&self, seq: u64, sealed: bool, payload: Vec<u8>) -> Result<Vec<u8>, SpoolError> {
        if !sealed {
            return Ok(payload);
        }
        let Some(ring) = &self.keys else {
            return Err(SpoolError::Seal {
                seq,
                source: SealError::Malformed("sealed segment read without a key"),
            });
        };
        seal::open_record(ring, &sealing::record_aad(seq), &payload)
            .map_err(|source| SpoolError::Seal { seq, source })
    }
}

impl Iterator for Unacked {
    type Item = Result<(u64, Vec<u8>), SpoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((path, reader, sealed)) = self.current.as_mut() {
                let sealed = *sealed;
                match reader.next_record(frame_limit(self.max_record_bytes, sealed)) {
                    Ok(Some((seq, payload))) if seq >= self.from => {
                        return Some(self.open(seq, sealed, payload).map(|p| (seq, p)))
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => self.current = None,
                    Err(source) => {
                        let path = path.clone();
                        self.current = None;
                        return Some(Err(SpoolError::Io {
                            what: "reading segment",
                            path,
                            source,
                        }));
                    }
                }
            }
            let (path, start, end, sealed) = self.segs.pop_front()?;
            match SegmentReader::open(&path, start, end) {
                Ok(Some(r)) => self.current = Some((path, r, sealed)),
                Ok(None) => {}
                Err(source) => {
                    return Some(Err(SpoolError::Io {
                        what: "opening segment",
                        path,
                        source,
                    }))
                }
            }
        }
    }
}

fn prepare_dir(dir: &Path) -> Result<(), SpoolError> {
    match fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err(SpoolError::NotADirectory(dir.to_path_buf())),
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SpoolError::InsecurePermissions {
                    path: dir.to_path_buf(),
                    mode,
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err("creating directory", dir))?;
            // The umask may have removed bits but never adds them; set exactly 0700 anyway.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(io_err("setting permissions on", dir))?;
        }
        Err(e) => return Err(io_err("inspecting", dir)(e)),
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join("lock");
    let f = File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err("opening lock file", &path))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(SpoolError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(io_err("locking", &path)(e)),
    }
}

fn create_segment(dir: &Path, first_seq: u64, sealed: bool) -> Result<SegmentInfo, SpoolError> {
    let path = dir.join(segment::name(first_seq, sealed));
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("creating segment", &path))?;
    cursor::sync_dir(dir).map_err(io_err("syncing", dir))?;
    Ok(SegmentInfo::empty(path, first_seq, sealed))
}

/// Renames the empty segment `seg` to the name of a segment that is (or is not) sealed.
fn relabel_segment(dir: &Path, seg: &mut SegmentInfo, sealed: bool) -> Result<(), SpoolError> {
    let path = dir.join(segment::name(seg.name_seq, sealed));
    fs::rename(&seg.path, &path).map_err(io_err("renaming segment", &seg.path))?;
    cursor::sync_dir(dir).map_err(io_err("syncing", dir))?;
    seg.path = path;
    seg.sealed = sealed;
    Ok(())
}

#[cfg(test)]
mod tests;
