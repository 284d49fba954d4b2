//! Pseudonymization keys: the key file, its permission check, rotation and generation.
//!
//! The key file is TOML, one `[[key]]` table per key, written by `collector keygen`:
//!
//! ```toml
//! [[key]]
//! id = "k1"                             # 1-16 of [a-z0-9-]; printed inside pseudonyms
//! secret = "<64 hex digits>"            # 256 bits, hex or base64 (RFC 4648 §4)
//! created = "2025-01-31T09:00:00Z"      # RFC 3339
//! active = false
//!
//! [[key]]
//! id = "k2"
//! secret = "..."
//! created = "2025-07-31T09:00:00Z"
//! active = true                          # exactly one key is active
//! ```
//!
//! The active key makes new pseudonyms; every key in the file is used for lookups
//! (erasure, filters), so rotating keeps older pseudonyms findable. The keys kept in the file
//! are the retention window: delete a key once no stored CDR can carry its pseudonyms.
//!
//! The file must not be readable or writable by group or others (`mode & 0o077 == 0`);
//! loading checks the mode bits of the opened file, not access, since the agent often runs as
//! root. Secrets are zeroized on drop and never appear in `Debug` output or error messages.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::{Zeroize, Zeroizing};

/// Bytes in a secret (256 bits).
pub const SECRET_BYTES: usize = 32;
/// Largest key file accepted, in bytes: far above any real rotation history, and a bound on
/// what a wrong path could make the agent read.
pub const KEY_FILE_MAX_BYTES: u64 = 64 * 1024;
/// Most keys accepted in one file; every lookup computes one pseudonym per key.
pub const MAX_KEYS: usize = 256;
/// Longest key id.
pub const KEY_ID_MAX: usize = 16;

/// Why a key file cannot be used or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file cannot be opened or read.
    #[error("cannot read key file {path}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file (or its temporary copy) cannot be written.
    #[error("cannot write key file {path}")]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Group or others have some access to the file.
    #[error(
        "key file {path} has mode {mode:04o}: group and others must have no access (chmod 600)"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path is not a regular file.
    #[error("key file {path} is not a regular file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`KEY_FILE_MAX_BYTES`].
    #[error("key file {path} is larger than {max} bytes")]
    TooLarge {
        /// The key file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// The file is not UTF-8 TOML of the expected shape. Only the parser's message and the
    /// line are kept: the parser's rendering quotes the offending line, which may hold a
    /// secret.
    #[error("key file is not valid at line {line}: {message}")]
    Syntax {
        /// 1-based line of the error (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A key id is empty, too long or has characters other than `[a-z0-9-]`.
    #[error("key id {0:?} is invalid: use 1 to 16 of a-z, 0-9 and '-'")]
    BadId(String),
    /// Two keys share an id.
    #[error("key id {0:?} appears twice")]
    DuplicateId(String),
    /// A secret is not 256 bits in hex or base64.
    #[error("key {id}: secret must be 256 bits as 64 hex digits or base64")]
    BadSecret {
        /// The key id.
        id: String,
    },
    /// A creation time is not RFC 3339.
    #[error("key {id}: created must be an RFC 3339 timestamp")]
    BadCreated {
        /// The key id.
        id: String,
        /// The cause.
        #[source]
        source: time::error::Parse,
    },
    /// A creation time cannot be written as RFC 3339 (a year beyond 9999).
    #[error("key {id}: created cannot be written as RFC 3339")]
    Format {
        /// The key id.
        id: String,
        /// The cause.
        #[source]
        source: time::error::Format,
    },
    /// No key is marked active.
    #[error("no active key: mark one key `active = true` or run `collector keygen`")]
    NoActiveKey,
    /// More than one key is marked active.
    #[error("several active keys ({0}): exactly one key may be active")]
    SeveralActive(String),
    /// More keys than [`MAX_KEYS`].
    #[error("more than {0} keys: delete keys past their retention window")]
    TooManyKeys(usize),
    /// The operating system's random source failed.
    #[error("cannot get random bytes for a new key: {0}")]
    Random(String),
}

/// A 256-bit secret, zeroized on drop; `Debug` never shows it.
pub struct Secret([u8; SECRET_BYTES]);

impl Secret {
    /// A fresh secret from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut s = Secret([0; SECRET_BYTES]);
        getrandom::fill(&mut s.0).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(s)
    }

    /// A secret from bytes (tests and tools); the caller should zeroize its copy.
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        Secret(bytes)
    }

    /// The secret bytes, for the HMAC.
    pub fn expose(&self) -> &[u8; SECRET_BYTES] {
        &self.0
    }

    /// Reads 64 hex digits or base64 (padded or not) of exactly 256 bits.
    fn from_text(text: &str) -> Option<Self> {
        let text = text.trim().as_bytes();
        let decoded = if text.len() == 2 * SECRET_BYTES {
            data_encoding::HEXLOWER_PERMISSIVE.decode(text).ok()
        } else {
            None
        };
        let decoded = decoded
            .or_else(|| data_encoding::BASE64.decode(text).ok())
            .or_else(|| data_encoding::BASE64_NOPAD.decode(text).ok())
            .map(Zeroizing::new)?;
        let mut s = Secret([0; SECRET_BYTES]);
        if decoded.len() != SECRET_BYTES {
            return None;
        }
        s.0.copy_from_slice(&decoded);
        Some(s)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A key id: 1 to [`KEY_ID_MAX`] characters of `[a-z0-9-]` (no `_`, which separates the
/// parts of a pseudonym).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Validates a key id.
    pub fn try_new(id: &str) -> Result<Self, KeyError> {
        if Self::is_valid(id) {
            Ok(KeyId(id.to_owned()))
        } else {
            Err(KeyError::BadId(id.to_owned()))
        }
    }

    /// Whether `id` is a valid key id.
    pub fn is_valid(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= KEY_ID_MAX
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One key of the key file.
#[derive(Debug)]
pub struct Key {
    id: KeyId,
    secret: Secret,
    created: OffsetDateTime,
    active: bool,
}

impl Key {
    /// A key from its parts.
    pub fn new(id: KeyId, secret: Secret, created: OffsetDateTime, active: bool) -> Self {
        Key {
            id,
            secret,
            created,
            active,
        }
    }

    /// The key id.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// When the key was created.
    pub fn created(&self) -> OffsetDateTime {
        self.created
    }

    /// Whether this key makes new pseudonyms.
    pub fn is_active(&self) -> bool {
        self.active
    }
}

/// The keys of a key file: exactly one active, all usable for lookups.
#[derive(Debug)]
pub struct KeyRing {
    active: Key,
    /// The inactive keys, in file order.
    retired: Vec<Key>,
}

impl KeyRing {
    /// Validates a set of keys: 1 to [`MAX_KEYS`], unique ids, exactly one active.
    pub fn try_new(keys: Vec<Key>) -> Result<Self, KeyError> {
        check_ids(&keys)?;
        let (mut actives, retired): (Vec<Key>, Vec<Key>) = keys.into_iter().partition(|k| k.active);
        match actives.pop() {
            None => Err(KeyError::NoActiveKey),
            Some(active) if actives.is_empty() => Ok(KeyRing { active, retired }),
            Some(last) => {
                actives.push(last);
                Err(KeyError::SeveralActive(
                    actives
                        .iter()
                        .map(|k| k.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                ))
            }
        }
    }

    /// Loads and validates a key file (permission bits, size, syntax, one active key).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_key_file(path)?;
        Self::try_new(parse_keys(&text)?)
    }

    /// The active key.
    pub fn active(&self) -> &Key {
        &self.active
    }

    /// Every key, active first, then the others in file order: the order of lookups.
    pub fn lookup_order(&self) -> impl Iterator<Item = &Key> {
        std::iter::once(&self.active).chain(self.retired.iter())
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        1 + self.retired.len()
    }

    /// Always false: a ring holds at least its active key.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The key with this id.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.lookup_order().find(|k| k.id.as_str() == id)
    }
}

fn check_ids(keys: &[Key]) -> Result<(), KeyError> {
    if keys.len() > MAX_KEYS {
        return Err(KeyError::TooManyKeys(MAX_KEYS));
    }
    let mut seen: Vec<&str> = Vec::with_capacity(keys.len());
    for k in keys {
        if seen.contains(&k.id.as_str()) {
            return Err(KeyError::DuplicateId(k.id.0.clone()));
        }
        seen.push(k.id.as_str());
    }
    Ok(())
}

/// Secret text read from the file, wiped when dropped.
struct SecretText(String);

impl Drop for SecretText {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<'de> serde::Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretText)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    secret: SecretText,
    created: String,
    active: bool,
}

/// Reads a key file after checking the opened file's type, mode bits and size.
pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(KeyError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > KEY_FILE_MAX_BYTES {
        return Err(KeyError::TooLarge {
            path: path.to_owned(),
            max: KEY_FILE_MAX_BYTES,
        });
    }
    // Capacity reserved up front so the buffer never reallocates and leaves an unwiped
    // copy behind; the `take` bounds a file that grew after the size check.
    let mut buf = Zeroizing::new(Vec::with_capacity(KEY_FILE_MAX_BYTES as usize + 1));
    file.take(KEY_FILE_MAX_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() as u64 > KEY_FILE_MAX_BYTES {
        return Err(KeyError::TooLarge {
            path: path.to_owned(),
            max: KEY_FILE_MAX_BYTES,
        });
    }
    let bytes = std::mem::take(&mut *buf);
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Zeroizing::new(s)),
        Err(e) => {
            let line = line_of(e.as_bytes(), e.utf8_error().valid_up_to());
            e.into_bytes().zeroize();
            Err(KeyError::Syntax {
                line,
                message: "not UTF-8".to_owned(),
            })
        }
    }
}

fn line_of(text: &[u8], offset: usize) -> usize {
    1 + text.iter().take(offset).filter(|&&b| b == b'\n').count()
}

/// Parses key file text into keys (no check on the active flag).
fn parse_keys(text: &str) -> Result<Vec<Key>, KeyError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| KeyError::Syntax {
        line: e
            .span()
            .map(|s| line_of(text.as_bytes(), s.start))
            .unwrap_or(0),
        message: e.message().to_owned(),
    })?;
    if raw.key.len() > MAX_KEYS {
        return Err(KeyError::TooManyKeys(MAX_KEYS));
    }
    let mut keys = Vec::with_capacity(raw.key.len());
    for rk in raw.key {
        let id = KeyId::try_new(&rk.id)?;
        let secret = Secret::from_text(&rk.secret.0)
            .ok_or_else(|| KeyError::BadSecret { id: rk.id.clone() })?;
        let created = OffsetDateTime::parse(&rk.created, &Rfc3339).map_err(|source| {
            KeyError::BadCreated {
                id: rk.id.clone(),
                source,
            }
        })?;
        keys.push(Key::new(id, secret, created, rk.active));
    }
    check_ids(&keys)?;
    Ok(keys)
}

/// The id after the highest `k<number>` in use (`k1` for an empty file).
fn next_id(keys: &[Key]) -> Result<KeyId, KeyError> {
    let highest = keys
        .iter()
        .filter_map(|k| k.id.as_str().strip_prefix('k'))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    KeyId::try_new(&format!("k{}", highest.saturating_add(1)))
}

fn render(keys: &[Key]) -> Result<Zeroizing<String>, KeyError> {
    // Reserved up front so appending never reallocates and leaves secret copies behind.
    let mut out = Zeroizing::new(String::with_capacity(512 + 256 * keys.len()));
    out.push_str(
        "# Pseudonymization keys of the VoIP collector, written by `collector keygen`.\n\
         # Keep this file secret (mode 0600). Older keys stay for lookups (erasure, filters);\n\
         # delete a key once no stored CDR can carry its pseudonyms.\n",
    );
    for k in keys {
        let created = k
            .created
            .format(&Rfc3339)
            .map_err(|source| KeyError::Format {
                id: k.id.0.clone(),
                source,
            })?;
        out.push_str("\n[[key]]\nid = \"");
        out.push_str(k.id.as_str());
        out.push_str("\"\nsecret = \"");
        data_encoding::HEXLOWER.encode_append(k.secret.expose(), &mut out);
        out.push_str("\"\ncreated = \"");
        out.push_str(&created);
        out.push_str("\"\nactive = ");
        out.push_str(if k.active { "true" } else { "false" });
        out.push('\n');
    }
    Ok(out)
}

pub(crate) fn write_all_synced(file: &mut File, path: &Path, text: &str) -> Result<(), KeyError> {
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
}

pub(crate) fn create_private(path: &Path) -> Result<File, KeyError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
}

pub(crate) fn sync_dir(path: &Path) -> Result<(), KeyError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| KeyError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// What [`generate_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The new key's id.
    pub id: KeyId,
    /// Keys the file held before (now inactive, kept for lookups).
    pub previous_keys: usize,
}

/// Adds a fresh key to `path` and makes it the only active one.
///
/// A missing file is created with mode 0600 and `O_EXCL`, so an existing file is never
/// silently replaced. An existing file must pass the same permission check as loading; it
/// is rewritten through a 0600 temporary file in the same directory, synced and renamed
/// over the original, so a crash leaves either the old or the new file. Two concurrent runs
/// on one file may lose one of the new keys: run keygen once at a time.
pub fn generate_key(path: &Path, now: OffsetDateTime) -> Result<Generated, KeyError> {
    let existing = match read_key_file(path) {
        Ok(text) => Some(parse_keys(&text)?),
        Err(KeyError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut keys = existing.unwrap_or_default();
    let previous_keys = keys.len();
    if keys.len() >= MAX_KEYS {
        return Err(KeyError::TooManyKeys(MAX_KEYS));
    }
    let id = next_id(&keys)?;
    for k in &mut keys {
        k.active = false;
    }
    keys.push(Key::new(id.clone(), Secret::generate()?, now, true));
    let text = render(&keys)?;
    if previous_keys == 0 && !path.exists() {
        let mut file = create_private(path)?;
        write_all_synced(&mut file, path, &text)?;
    } else {
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).map_err(|e| KeyError::Random(e.to_string()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "keys".to_owned());
        let tmp = path.with_file_name(format!(
            ".{name}.{}.tmp",
            data_encoding::HEXLOWER.encode(&suffix)
        ));
        let mut file = create_private(&tmp)?;
        let written = write_all_synced(&mut file, &tmp, &text).and_then(|()| {
            std::fs::rename(&tmp, path).map_err(|source| KeyError::Write {
                path: path.to_owned(),
                source,
            })
        });
        if let Err(e) = written {
            // Best effort: the temporary copy holds secrets and must not linger.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    }
    sync_dir(path)?;
    Ok(Generated { id, previous_keys })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2025-03-01T12:00:00Z", &Rfc3339).unwrap()
    }

    fn write_mode(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    const ONE_KEY: &str = "[[key]]\nid = \"k1\"\n\
        secret = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
        created = \"2025-01-01T00:00:00+01:00\"\nactive = true\n";

    #[test]
    fn mode_0600_accepted_0644_and_0640_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        write_mode(&path, ONE_KEY, 0o600);
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.active().id().as_str(), "k1");
        assert_eq!(ring.active().secret().expose()[31], 0x1f);
        for mode in [0o644, 0o640, 0o604, 0o602, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            match KeyRing::load(&path) {
                Err(KeyError::Permissions { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: {other:?}"),
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(KeyRing::load(&path).is_ok());
    }

    #[test]
    fn no_active_and_several_active_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        write_mode(&path, &ONE_KEY.replace("true", "false"), 0o600);
        assert!(matches!(KeyRing::load(&path), Err(KeyError::NoActiveKey)));
        let two = format!("{ONE_KEY}\n{}", ONE_KEY.replace("k1", "k2"));
        write_mode(&path, &two, 0o600);
        assert!(
            matches!(KeyRing::load(&path), Err(KeyError::SeveralActive(ids)) if ids == "k1, k2")
        );
        write_mode(&path, "", 0o600);
        assert!(matches!(KeyRing::load(&path), Err(KeyError::NoActiveKey)));
    }

    #[test]
    fn bad_contents_refused_without_echoing_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let secret = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        // Short secret, unterminated string, bad id, duplicate id, bad timestamp.
        let cases = [
            ONE_KEY.replace("1e1f\"", "1e\""),
            ONE_KEY.replace("1e1f\"", "1e1f"),
            ONE_KEY.replace("\"k1\"", "\"K_1\""),
            format!("{ONE_KEY}\n{}", ONE_KEY.replace("true", "false")),
            ONE_KEY.replace("2025-01-01T00:00:00+01:00", "yesterday"),
        ];
        for text in cases {
            write_mode(&path, &text, 0o600);
            let err = KeyRing::load(&path).unwrap_err();
            let chain = format!("{err} {err:?} {:?}", std::error::Error::source(&err));
            assert!(!chain.contains(&secret[..40]), "{chain}");
        }
        write_mode(&path, &ONE_KEY.replace("1e1f\"", "1e1f"), 0o600);
        assert!(matches!(
            KeyRing::load(&path),
            Err(KeyError::Syntax { line: 3, .. })
        ));
    }

    #[test]
    fn base64_secret_accepted() {
        // RFC 4648 §4 base64 of bytes 0..32:
        // python3 -c 'import base64; print(base64.b64encode(bytes(range(32))).decode())'
        let text = ONE_KEY.replace(
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        );
        let keys = parse_keys(&text).unwrap();
        assert_eq!(
            keys[0].secret().expose(),
            &core::array::from_fn(|i| i as u8)
        );
        let nopad = text.replace("Hh8=", "Hh8");
        assert_eq!(parse_keys(&nopad).unwrap()[0].secret().expose()[31], 31);
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let keys = parse_keys(ONE_KEY).unwrap();
        let ring = KeyRing::try_new(keys).unwrap();
        let dbg = format!("{ring:?}");
        assert!(dbg.contains("k1") && dbg.contains("<redacted>"));
        assert!(!dbg.contains("0, 1, 2, 3"), "{dbg}");
        assert!(!dbg.to_lowercase().contains("000102030405"), "{dbg}");
    }

    #[test]
    fn keygen_creates_then_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let g1 = generate_key(&path, now()).unwrap();
        assert_eq!((g1.id.as_str(), g1.previous_keys), ("k1", 0));
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        let s1 = *KeyRing::load(&path).unwrap().active().secret().expose();

        let g2 = generate_key(&path, now()).unwrap();
        assert_eq!((g2.id.as_str(), g2.previous_keys), ("k2", 1));
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        let ring = KeyRing::load(&path).unwrap();
        assert_eq!(ring.active().id().as_str(), "k2");
        assert_ne!(ring.active().secret().expose(), &s1);
        // The old key is kept, inactive, with the same secret.
        let k1 = ring.get("k1").unwrap();
        assert!(!k1.is_active());
        assert_eq!(k1.secret().expose(), &s1);
        assert_eq!(k1.created(), now());
        let order: Vec<_> = ring.lookup_order().map(|k| k.id().as_str()).collect();
        assert_eq!(order, ["k2", "k1"]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn keygen_refuses_an_exposed_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        write_mode(&path, ONE_KEY, 0o644);
        assert!(matches!(
            generate_key(&path, now()),
            Err(KeyError::Permissions { mode: 0o644, .. })
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ONE_KEY);
    }

    #[test]
    fn keygen_numbers_after_the_highest_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        write_mode(&path, &ONE_KEY.replace("\"k1\"", "\"k9\""), 0o600);
        assert_eq!(generate_key(&path, now()).unwrap().id.as_str(), "k10");
    }
}
