//! The acknowledgement cursor file: the highest sequence the collector has confirmed as
//! durably stored. Written atomically (temporary file, fsync, rename, fsync of the
//! directory) so a crash leaves either the old or the new value, never a mix.
use std::{
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// Cursor file name inside the spool directory.
pub const FILE: &str = "ack";

/// What was found in the cursor file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// No cursor yet.
    Missing,
    /// A verified value.
    Value(u64),
    /// The file is damaged; the caller starts from 0, which is safe because the collector
    /// drops sequences it already stored.
    Corrupt,
}

/// Reads the cursor: 8 bytes little-endian sequence followed by their CRC-32C.
pub fn load(dir: &Path) -> io::Result<Loaded> {
    let bytes = match fs::read(dir.join(FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    let Ok(arr) = <[u8; 12]>::try_from(bytes.as_slice()) else {
        return Ok(Loaded::Corrupt);
    };
    let [s0, s1, s2, s3, s4, s5, s6, s7, c0, c1, c2, c3] = arr;
    let seq = [s0, s1, s2, s3, s4, s5, s6, s7];
    if crc32c::crc32c(&seq) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Ok(Loaded::Corrupt);
    }
    Ok(Loaded::Value(u64::from_le_bytes(seq)))
}

/// Atomically replaces the cursor with `seq`.
pub fn store(dir: &Path, seq: u64) -> io::Result<()> {
    let mut bytes = [0u8; 12];
    let (s, c) = bytes.split_at_mut(8);
    s.copy_from_slice(&seq.to_le_bytes());
    c.copy_from_slice(&crc32c::crc32c(&seq.to_le_bytes()).to_le_bytes());
    replace_file(dir, FILE, &bytes)
}

/// Atomically replaces the file `name` in `dir` (mode 0600) with `bytes`: written and
/// fsynced as `<name>.tmp`, renamed, then the directory fsynced.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Makes directory entry changes (create, rename, unlink) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
