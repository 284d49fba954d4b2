//! Sealing of the spool at rest: the spool's data key, wrapped in the spool directory, and
//! the master key file that unwraps it, kept elsewhere.
//!
//! - The master key file (`--spool-key`, 128 hex digits, mode 0600, created if missing) is
//!   refused inside the spool directory: keys are kept apart from the data they protect.
//! - `key.wrapped` in the spool directory holds the spool's data keys wrapped by the master
//!   key with the scope [`SCOPE`] (see [`crate::privacy::seal`]), one line each:
//!   `<key id, hex> <wrapped key, base64url without padding>`. The newest key seals new
//!   records. The file is created, with one key, when a spool is first opened sealed.
//! - Each record payload of a sealed segment is [`DataKey::seal_record`]'s output with the
//!   record's sequence number (8 bytes, big-endian) as associated data, so a frame moved to
//!   another place in the spool, or given another sequence, no longer opens.
//!
//! **Crypto-shredding**: deleting the master key file (or `key.wrapped`) makes every sealed
//! record unreadable; a spool opened with another master key fails with
//! [`SpoolError::Key`] (authentication failure) and is left untouched.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use data_encoding::BASE64URL_NOPAD;

use super::{cursor, SpoolError};
use crate::privacy::{
    keys::{read_key_file, KeyError},
    seal::{DataKey, Keyring, MasterKey, SealError},
};

/// The scope the spool's data keys are wrapped for.
pub const SCOPE: &str = "spool";
/// File of the wrapped data keys, in the spool directory.
pub const WRAPPED_KEY_FILE: &str = "key.wrapped";

/// Whether a spool seals what it writes, chosen by every caller that opens one.
#[derive(Debug, Clone, Copy)]
pub enum SpoolSealing<'a> {
    /// Seal new records with the spool's data key, unwrapped (or first created) with this
    /// master key. Existing segments in clear stay readable (they are from before sealing
    /// was turned on) and are deleted once acknowledged.
    Sealed(&'a MasterKey),
    /// Write records in clear. A spool that holds sealed segments is refused.
    Unsealed,
}

impl<'a> SpoolSealing<'a> {
    /// Sealed with `key` if there is one, in clear otherwise.
    pub fn with(key: Option<&'a MasterKey>) -> Self {
        key.map_or(Self::Unsealed, Self::Sealed)
    }
}

/// The master key for the spool in `spool_dir` from the file `key_path` (see [`load_key`]),
/// `None` without a path; says once, in the log, where a new key file was created.
pub fn key_for(spool_dir: &Path, key_path: Option<&Path>) -> Result<Option<MasterKey>, SpoolError> {
    let Some(path) = key_path else {
        tracing::warn!(spool = %spool_dir.display(), "the spool is written in clear (unsealed)");
        return Ok(None);
    };
    let (key, created) = load_key(spool_dir, path)?;
    if created {
        tracing::info!(
            key = %path.display(),
            "created the spool key (mode 0600): deleting it makes the spool unreadable"
        );
    }
    Ok(Some(key))
}

/// The associated data of the record with sequence `seq`.
pub(super) fn record_aad(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Loads the master key file at `key_path` for the spool in `spool_dir`, creating it (mode
/// 0600) if missing; `true` when it was created. A key path inside the spool directory is
/// refused.
pub fn load_key(spool_dir: &Path, key_path: &Path) -> Result<(MasterKey, bool), SpoolError> {
    if resolve(key_path).starts_with(resolve(spool_dir)) {
        return Err(SpoolError::KeyInsideSpool {
            key: key_path.to_path_buf(),
            dir: spool_dir.to_path_buf(),
        });
    }
    MasterKey::load_or_create(key_path).map_err(|source| SpoolError::Key {
        path: key_path.to_path_buf(),
        source,
    })
}

/// `p` made absolute with its links resolved as far as it exists (a key file or a spool
/// directory may not exist yet).
fn resolve(p: &Path) -> PathBuf {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    if let Ok(c) = fs::canonicalize(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()),
    }
}

/// The spool's keyring: unwrapped from `key.wrapped`, or a new one written there when the
/// spool has no sealed segment yet.
pub(super) fn keyring(
    dir: &Path,
    master: &MasterKey,
    has_sealed: bool,
) -> Result<Keyring, SpoolError> {
    let path = dir.join(WRAPPED_KEY_FILE);
    let key_err = |source| SpoolError::Key {
        path: path.clone(),
        source,
    };
    match read_wrapped(&path).map_err(key_err)? {
        Some(entries) => Keyring::unwrap(
            master,
            SCOPE,
            entries.iter().map(|(id, w)| (*id, w.as_slice())),
        )
        .map_err(key_err),
        None if has_sealed => Err(SpoolError::DataKeyMissing(path)),
        None => {
            let key = DataKey::generate(1).map_err(key_err)?;
            write_wrapped(dir, &[(key.key_id(), key.wrap(master, SCOPE))]).map_err(|source| {
                key_err(SealError::KeyFile(KeyError::Write {
                    path: path.clone(),
                    source,
                }))
            })?;
            Keyring::new(SCOPE, vec![key]).map_err(key_err)
        }
    }
}

/// `(key id, wrapped key)` lines of `key.wrapped`.
type WrappedKeys = Vec<(u32, Vec<u8>)>;

/// The entries of `key.wrapped`, `None` if there is no such file. It is read with the checks
/// of every key file (regular file, mode 0600, bounded size).
fn read_wrapped(path: &Path) -> Result<Option<WrappedKeys>, SealError> {
    let text = match read_key_file(path) {
        Ok(t) => t,
        Err(KeyError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(e) => return Err(e.into()),
    };
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let parsed = line.split_once(' ').and_then(|(id, w)| {
            let id = u32::from_str_radix(id, 16).ok()?;
            let w = BASE64URL_NOPAD.decode(w.trim().as_bytes()).ok()?;
            Some((id, w))
        });
        match parsed {
            Some(e) => entries.push(e),
            None => {
                return Err(SealError::Malformed(
                    "key.wrapped lines must be `<id hex> <base64url>`",
                ))
            }
        }
    }
    Ok(Some(entries))
}

/// Writes `key.wrapped` atomically. Wrapped keys are not secret without the master key, but
/// the file is private like the rest.
fn write_wrapped(dir: &Path, entries: &[(u32, Vec<u8>)]) -> io::Result<()> {
    let mut text = String::new();
    for (id, w) in entries {
        text.push_str(&format!("{id:x} "));
        BASE64URL_NOPAD.encode_append(w, &mut text);
        text.push('\n');
    }
    cursor::replace_file(dir, WRAPPED_KEY_FILE, text.as_bytes())
}
