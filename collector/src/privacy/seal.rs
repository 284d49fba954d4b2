//! Sealing at rest: AES-SIV (RFC 5297) for deterministic fields and key wrapping, AES-GCM-SIV
//! (RFC 8452) for whole records, under data keys wrapped by a master key.
//!
//! - A [`MasterKey`] (512 bits, the key size of `AEAD_AES_SIV_CMAC_512`, RFC 5297 §6.2) only
//!   wraps data keys. It lives in a file of 128 hex digits (mode 0600, like the other key
//!   files: group and others must have no access) or in the environment variable
//!   [`MASTER_KEY_ENV`].
//! - A [`DataKey`] has a numeric id and 768 bits: 512 for AES-256-SIV (fields), 256 for
//!   AES-256-GCM-SIV (records), so the two modes never share key material. It is stored only
//!   wrapped: AES-SIV with the scope (a tenant name, `"spool"`) and the key id as associated
//!   data, so a wrapped key cannot be moved to another scope or id. Destroying the master key
//!   or the wrapped data keys of a scope erases everything sealed under them
//!   (crypto-shredding).
//! - [`DataKey::seal_field`]: deterministic, so an index on the sealed text still answers
//!   equality look-ups; the column name is the associated data, so equal values in two columns
//!   do not look alike. Text form `s1.<key id, hex>.<base64url without padding>`; an empty
//!   value stays the empty string ("no value" keeps its meaning).
//! - [`DataKey::seal_record`]: randomised (a fresh 96-bit nonce per record; GCM-SIV stays safe
//!   even if a nonce repeats), binary form
//!   `[RECORD_VERSION u8][key id u32 BE][nonce 12][ciphertext ‖ tag 16]`; the version byte
//!   and the key id are authenticated together with the caller's associated data.
//! - A [`Keyring`] holds the data keys of one scope: the newest (highest id) seals new data,
//!   every key opens, and [`Keyring::field_variants`] gives a value's sealed text under each
//!   key, so an equality look-up still finds rows sealed before a rotation.
//!
//! Key bytes are zeroized on drop and never appear in `Debug` output or error messages;
//! nothing here logs.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    fmt,
    fs::{self, DirBuilder},
    io,
    os::unix::fs::DirBuilderExt as _,
    path::Path,
};

use aes_gcm_siv::{
    aead::{Aead as _, KeyInit as _, Payload},
    Aes256GcmSiv,
};
use aes_siv::siv::Aes256Siv;
use data_encoding::{BASE64URL_NOPAD, HEXLOWER, HEXLOWER_PERMISSIVE};
use zeroize::{Zeroize as _, Zeroizing};

use super::keys::{self, KeyError};

/// The environment variable that conventionally holds a master key as hex (the caller reads
/// it and passes the value to [`MasterKey::from_hex`]).
pub const MASTER_KEY_ENV: &str = "COLLECTOR_MASTER_KEY";
/// Bytes of a master key: an AES-256-SIV key (two 256-bit halves, RFC 5297 §2.2).
pub const MASTER_KEY_BYTES: usize = 64;
/// Bytes of the AES-256-SIV part of a data key.
const FIELD_KEY_BYTES: usize = 64;
/// Bytes of the AES-256-GCM-SIV part of a data key.
const RECORD_KEY_BYTES: usize = 32;
/// Bytes of a data key in clear.
pub const DATA_KEY_BYTES: usize = FIELD_KEY_BYTES + RECORD_KEY_BYTES;
/// Bytes of a wrapped data key: the 16-byte synthetic IV, then the encrypted key.
pub const WRAPPED_KEY_BYTES: usize = SIV_TAG_BYTES + DATA_KEY_BYTES;
/// Prefix of the text of a sealed field (format version 1).
pub const FIELD_PREFIX: &str = "s1.";
/// First byte of a sealed record (format version 1).
pub const RECORD_VERSION: u8 = 0xA1;
/// Bytes a sealed record adds to its plaintext: version, key id, nonce, tag.
pub const RECORD_OVERHEAD: usize = RECORD_HEADER_BYTES + NONCE_BYTES + GCM_TAG_BYTES;

const SIV_TAG_BYTES: usize = 16;
const GCM_TAG_BYTES: usize = 16;
const NONCE_BYTES: usize = 12;
/// Version byte and key id: the part of a record header that is authenticated as data.
const RECORD_HEADER_BYTES: usize = 5;

/// Why sealing, opening or a key file failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Authentication failed: the key is not the one the data was sealed with, the
    /// associated data (column, scope, sequence) differs, or the data was altered.
    #[error("wrong key or tampered data: authentication failed")]
    Authentication,
    /// The data names a key id the keyring does not hold.
    #[error("no data key with id {0:x} in the keyring")]
    UnknownKeyId(u32),
    /// The data is not in a sealed format.
    #[error("malformed sealed data: {0}")]
    Malformed(&'static str),
    /// Two keys of one keyring share an id.
    #[error("data key id {0:x} appears twice")]
    DuplicateKeyId(u32),
    /// A keyring needs at least one key.
    #[error("a keyring needs at least one data key")]
    EmptyKeyring,
    /// A key file cannot be read, created or written, is not a regular file, or group or
    /// others have some access to it (the checks and errors of the pseudonymization key
    /// file, which name the path and the mode).
    #[error(transparent)]
    KeyFile(#[from] KeyError),
    /// A master key is not 128 hex digits; `origin` names the file or the variable.
    #[error("master key in {origin} must be {n} hex digits", n = 2 * MASTER_KEY_BYTES)]
    KeyFormat {
        /// Where the key came from.
        origin: String,
    },
    /// The operating system's random source failed.
    #[error("no randomness for a key or nonce: {0}")]
    Random(String),
}

fn random_fill(buf: &mut [u8]) -> Result<(), SealError> {
    getrandom::fill(buf).map_err(|e| SealError::Random(e.to_string()))
}

/// AES-256-SIV encryption (RFC 5297 §2.6): `headers` is the associated-data vector of S2V,
/// one string per component (never concatenated). Output: synthetic IV ‖ ciphertext.
fn siv_encrypt(key: &[u8; 64], headers: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
    let mut siv = Aes256Siv::new(key.into());
    // The crate fails only for more than `aes_siv::siv::MAX_HEADERS` (126) headers; this
    // module passes one or two, so the empty fallback (which opens to nothing) is never used.
    siv.encrypt(headers, plaintext).unwrap_or_default()
}

/// AES-256-SIV decryption (RFC 5297 §2.7), the inverse of [`siv_encrypt`].
fn siv_decrypt(key: &[u8; 64], headers: &[&[u8]], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut siv = Aes256Siv::new(key.into());
    siv.decrypt(headers, sealed)
        .map_err(|_| SealError::Authentication)
}

/// AES-256-GCM-SIV encryption (RFC 8452 §4). Output: ciphertext ‖ tag.
fn gcm_siv_encrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_BYTES],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    Aes256GcmSiv::new(key.into())
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Only inputs beyond 2^36 bytes (RFC 8452 §6) fail.
        .map_err(|_| SealError::Malformed("record too large to seal"))
}

/// AES-256-GCM-SIV decryption (RFC 8452 §5), the inverse of [`gcm_siv_encrypt`].
fn gcm_siv_decrypt(
    key: &[u8; 32],
    nonce: &[u8; NONCE_BYTES],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    Aes256GcmSiv::new(key.into())
        .decrypt(nonce.into(), Payload { msg: sealed, aad })
        .map_err(|_| SealError::Authentication)
}

/// The key that wraps data keys (zeroized on drop; `Debug` never shows it).
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_BYTES]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, SealError> {
        let mut k = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        random_fill(&mut *k)?;
        Ok(Self(k))
    }

    /// A key from raw bytes (tests, tools); the caller should zeroize its copy.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_BYTES]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A key from 128 hex digits (surrounding white space ignored), for example the value of
    /// [`MASTER_KEY_ENV`].
    pub fn from_hex(text: &str) -> Result<Self, SealError> {
        Self::parse(text, || MASTER_KEY_ENV.to_owned())
    }

    fn parse(text: &str, origin: impl FnOnce() -> String) -> Result<Self, SealError> {
        let text = text.trim().as_bytes();
        let mut k = Zeroizing::new([0u8; MASTER_KEY_BYTES]);
        let ok = text.len() == 2 * MASTER_KEY_BYTES
            && HEXLOWER_PERMISSIVE.decode_mut(text, &mut *k).is_ok();
        if ok {
            Ok(Self(k))
        } else {
            Err(SealError::KeyFormat { origin: origin() })
        }
    }

    /// Loads a key file after checking the opened file's type and mode bits (group and others
    /// must have no access; the mode of the file itself is checked, not access, since the
    /// agent often runs as root).
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let text = keys::read_key_file(path)?;
        Self::parse(&text, || path.display().to_string())
    }

    /// Writes a new random key to `path` with mode 0600, never replacing an existing file:
    /// the key is written and fsynced under a temporary name, then linked to `path`, which
    /// fails if `path` exists (so a crash never leaves a half-written key file). A missing
    /// parent directory is created with mode 0700.
    pub fn create(path: &Path) -> Result<Self, SealError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Write { path, source }
        };
        let key = Self::generate()?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(write_err(dir))?;
        }
        let mut tag = [0u8; 8];
        random_fill(&mut tag)?;
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".{}.tmp", HEXLOWER.encode(&tag)));
        let tmp = dir.join(tmp_name);
        let mut text = Zeroizing::new(String::with_capacity(2 * MASTER_KEY_BYTES + 1));
        HEXLOWER.encode_append(&*key.0, &mut text);
        text.push('\n');
        let written = keys::create_private(&tmp)
            .and_then(|mut f| keys::write_all_synced(&mut f, &tmp, &text))
            .and_then(|()| fs::hard_link(&tmp, path).map_err(write_err(path)));
        // The temporary name goes in every case; the link (if made) keeps the key.
        let removed = fs::remove_file(&tmp).map_err(write_err(&tmp));
        written?;
        removed?;
        keys::sync_dir(path)?;
        Ok(key)
    }

    /// Loads the key file at `path`, or creates it (see [`MasterKey::create`]) if there is
    /// none; `true` when it was created. Two processes racing here end with the same key.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SealError> {
        match Self::create(path) {
            Ok(k) => Ok((k, true)),
            Err(SealError::KeyFile(KeyError::Write { source, .. }))
                if source.kind() == io::ErrorKind::AlreadyExists =>
            {
                Self::load(path).map(|k| (k, false))
            }
            Err(e) => Err(e),
        }
    }
}

/// A data key: what seals fields and records of one scope (zeroized on drop; `Debug` shows
/// the id only).
pub struct DataKey {
    id: u32,
    field: Zeroizing<[u8; FIELD_KEY_BYTES]>,
    record: Zeroizing<[u8; RECORD_KEY_BYTES]>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({:x}, <redacted>)", self.id)
    }
}

impl DataKey {
    /// A fresh random key with id `id`.
    pub fn generate(id: u32) -> Result<Self, SealError> {
        let mut key = Self {
            id,
            field: Zeroizing::new([0; FIELD_KEY_BYTES]),
            record: Zeroizing::new([0; RECORD_KEY_BYTES]),
        };
        random_fill(&mut *key.field)?;
        random_fill(&mut *key.record)?;
        Ok(key)
    }

    /// The key id (printed in sealed fields, stored in sealed records).
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The key wrapped by `master` for `scope`: [`WRAPPED_KEY_BYTES`] bytes, AES-256-SIV with
    /// the scope and the key id (4 bytes, big-endian) as two associated-data strings.
    pub fn wrap(&self, master: &MasterKey, scope: &str) -> Vec<u8> {
        let mut clear = Zeroizing::new([0u8; DATA_KEY_BYTES]);
        let (f, r) = clear.split_at_mut(FIELD_KEY_BYTES);
        f.copy_from_slice(&*self.field);
        r.copy_from_slice(&*self.record);
        siv_encrypt(
            &master.0,
            &[scope.as_bytes(), &self.id.to_be_bytes()],
            &*clear,
        )
    }

    /// Unwraps a key wrapped by [`DataKey::wrap`] under the same master key, scope and id;
    /// anything else is [`SealError::Authentication`].
    pub fn unwrap(
        master: &MasterKey,
        scope: &str,
        id: u32,
        wrapped: &[u8],
    ) -> Result<Self, SealError> {
        if wrapped.len() != WRAPPED_KEY_BYTES {
            return Err(SealError::Malformed("wrapped key has the wrong length"));
        }
        let mut clear = Zeroizing::new(siv_decrypt(
            &master.0,
            &[scope.as_bytes(), &id.to_be_bytes()],
            wrapped,
        )?);
        let mut key = Self {
            id,
            field: Zeroizing::new([0; FIELD_KEY_BYTES]),
            record: Zeroizing::new([0; RECORD_KEY_BYTES]),
        };
        let parts = clear
            .split_first_chunk::<FIELD_KEY_BYTES>()
            .and_then(|(f, rest)| rest.first_chunk::<RECORD_KEY_BYTES>().map(|r| (f, r)));
        let result = match parts {
            Some((f, r)) => {
                key.field.copy_from_slice(f);
                key.record.copy_from_slice(r);
                Ok(key)
            }
            None => Err(SealError::Malformed("wrapped key has the wrong length")),
        };
        clear.zeroize();
        result
    }

    /// Seals a field value deterministically (AES-256-SIV, the column name as associated
    /// data): `s1.<key id hex>.<base64url>`. The same key, column and value always give the
    /// same text; the empty value stays empty.
    pub fn seal_field(&self, column: &str, plaintext: &[u8]) -> String {
        if plaintext.is_empty() {
            return String::new();
        }
        let sealed = siv_encrypt(&self.field, &[column.as_bytes()], plaintext);
        let mut out = format!("{FIELD_PREFIX}{:x}.", self.id);
        BASE64URL_NOPAD.encode_append(&sealed, &mut out);
        out
    }

    fn open_field(&self, column: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        siv_decrypt(&self.field, &[column.as_bytes()], sealed)
    }

    /// Seals a record (AES-256-GCM-SIV, a fresh random nonce): see the module docs for the
    /// layout. `aad` is authenticated, not stored: opening needs the same bytes.
    pub fn seal_record(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_BYTES];
        random_fill(&mut nonce)?;
        let header = record_header(self.id);
        let body = gcm_siv_encrypt(&self.record, &nonce, &record_aad(&header, aad), plaintext)?;
        let mut out = Vec::with_capacity(RECORD_OVERHEAD + plaintext.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }
}

fn record_header(id: u32) -> [u8; RECORD_HEADER_BYTES] {
    let [a, b, c, d] = id.to_be_bytes();
    [RECORD_VERSION, a, b, c, d]
}

/// The associated data GCM-SIV authenticates for a record: its header, then the caller's.
fn record_aad(header: &[u8; RECORD_HEADER_BYTES], aad: &[u8]) -> Vec<u8> {
    let mut all = Vec::with_capacity(RECORD_HEADER_BYTES + aad.len());
    all.extend_from_slice(header);
    all.extend_from_slice(aad);
    all
}

/// The data keys of one scope, by id; the newest (highest id) seals new data.
pub struct Keyring {
    scope: String,
    /// The key new data is sealed with.
    newest: DataKey,
    /// The other keys, for opening only.
    older: Vec<DataKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("scope", &self.scope)
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// A keyring of `scope` holding `keys` (at least one, ids unique).
    pub fn new(scope: &str, keys: Vec<DataKey>) -> Result<Self, SealError> {
        let mut keys = keys.into_iter();
        let Some(first) = keys.next() else {
            return Err(SealError::EmptyKeyring);
        };
        let mut ring = Self {
            scope: scope.to_owned(),
            newest: first,
            older: Vec::new(),
        };
        for k in keys {
            ring.insert(k)?;
        }
        Ok(ring)
    }

    /// Unwraps `(id, wrapped key)` pairs of `scope` into a keyring.
    pub fn unwrap<'a>(
        master: &MasterKey,
        scope: &str,
        wrapped: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Result<Self, SealError> {
        let keys = wrapped
            .into_iter()
            .map(|(id, w)| DataKey::unwrap(master, scope, id, w))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(scope, keys)
    }

    /// Adds a key; one with a higher id than every other becomes the key for new data
    /// (rotation).
    pub fn insert(&mut self, key: DataKey) -> Result<(), SealError> {
        if self.get(key.id).is_some() {
            return Err(SealError::DuplicateKeyId(key.id));
        }
        if key.id > self.newest.id {
            let previous = std::mem::replace(&mut self.newest, key);
            self.older.push(previous);
        } else {
            self.older.push(key);
        }
        Ok(())
    }

    /// The scope (tenant name, `"spool"`) the keys belong to.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The key that seals new data.
    pub fn current(&self) -> &DataKey {
        &self.newest
    }

    /// The key with id `id`.
    pub fn get(&self, id: u32) -> Option<&DataKey> {
        self.keys().find(|k| k.id == id)
    }

    /// Every key, the newest first.
    pub fn keys(&self) -> impl Iterator<Item = &DataKey> {
        std::iter::once(&self.newest).chain(self.older.iter())
    }

    /// Every key id, the newest first.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.keys().map(|k| k.id)
    }

    /// The sealed text of `plaintext` in `column` under every key, the newest first: the
    /// values an equality look-up matches so that rows sealed before a rotation are found.
    pub fn field_variants(&self, column: &str, plaintext: &[u8]) -> Vec<String> {
        if plaintext.is_empty() {
            return vec![String::new()];
        }
        self.keys()
            .map(|k| k.seal_field(column, plaintext))
            .collect()
    }

    fn key(&self, id: u32) -> Result<&DataKey, SealError> {
        self.get(id).ok_or(SealError::UnknownKeyId(id))
    }
}

/// Opens a field sealed by [`DataKey::seal_field`] in `column` with the ring's key of the id
/// it names. The empty text opens to the empty value.
pub fn open_field(ring: &Keyring, column: &str, text: &str) -> Result<Vec<u8>, SealError> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let rest = text
        .strip_prefix(FIELD_PREFIX)
        .ok_or(SealError::Malformed("not a sealed field"))?;
    let (id, body) = rest
        .split_once('.')
        .ok_or(SealError::Malformed("sealed field has no key id"))?;
    let id_ok = (1..=8).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let id = u32::from_str_radix(id, 16)
        .ok()
        .filter(|_| id_ok)
        .ok_or(SealError::Malformed("sealed field has a bad key id"))?;
    let sealed = BASE64URL_NOPAD
        .decode(body.as_bytes())
        .map_err(|_| SealError::Malformed("sealed field is not base64url"))?;
    ring.key(id)?.open_field(column, &sealed)
}

/// Opens a record sealed by [`DataKey::seal_record`] with the same `aad`.
pub fn open_record(ring: &Keyring, aad: &[u8], bytes: &[u8]) -> Result<Vec<u8>, SealError> {
    let short = SealError::Malformed("sealed record is too short");
    let (header, rest) = bytes
        .split_first_chunk::<RECORD_HEADER_BYTES>()
        .ok_or(short)?;
    let [version, a, b, c, d] = *header;
    if version != RECORD_VERSION {
        return Err(SealError::Malformed(
            "not a sealed record (unknown version)",
        ));
    }
    let (nonce, body) = rest
        .split_first_chunk::<NONCE_BYTES>()
        .ok_or(SealError::Malformed("sealed record is too short"))?;
    if body.len() < GCM_TAG_BYTES {
        return Err(SealError::Malformed("sealed record is too short"));
    }
    let key = ring.key(u32::from_be_bytes([a, b, c, d]))?;
    gcm_siv_decrypt(&key.record, nonce, &record_aad(header, aad), body)
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use aes_siv::{aead::KeyInit as _, siv::Aes128Siv};

    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        HEXLOWER_PERMISSIVE.decode(s.as_bytes()).unwrap()
    }

    fn key(id: u32) -> DataKey {
        DataKey::generate(id).unwrap()
    }

    fn master() -> MasterKey {
        MasterKey::generate().unwrap()
    }

    #[test]
    fn rfc5297_a1_deterministic_vector_with_one_associated_data_string() {
        // RFC 5297 Appendix A.1 (AES-SIV-CMAC-256: the crate's 128-bit-cipher variant, the
        // only key size the RFC gives vectors for), passed as this module passes a column:
        // one associated-data string in the S2V header vector.
        let k = hex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let ad = hex("101112131415161718191a1b1c1d1e1f2021222324252627");
        let pt = hex("112233445566778899aabbccddee");
        let mut siv = Aes128Siv::new_from_slice(&k).unwrap();
        let out = siv.encrypt([ad.as_slice()], &pt).unwrap();
        assert_eq!(
            HEXLOWER.encode(&out),
            // CMAC(final) = V, then the CTR ciphertext.
            "85632d07c6e8f37f950acd320a2ecc93\
             40c02b9690c4dc04daef7f6afe5c"
        );
        let mut siv = Aes128Siv::new_from_slice(&k).unwrap();
        assert_eq!(siv.decrypt([ad.as_slice()], &out).unwrap(), pt);
    }

    #[test]
    fn aes_256_siv_field_matches_an_independent_implementation() {
        // The same computation by OpenSSL 3 (Python `cryptography` 48, `AESSIV` with a
        // 512-bit key, associated data [b"caller"]):
        //   AESSIV(bytes(range(64))).encrypt(b"+442071838750", [b"caller"]).hex()
        let mut k = [0u8; 64];
        k.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        let out = siv_encrypt(&k, &[b"caller"], b"+442071838750");
        assert_eq!(HEXLOWER.encode(&out), OPENSSL_SIV_512);
        // And the field text is exactly that, behind the prefix and the key id.
        let dk = DataKey {
            id: 0x2a,
            field: Zeroizing::new(k),
            record: Zeroizing::new([0; 32]),
        };
        assert_eq!(
            dk.seal_field("caller", b"+442071838750"),
            format!("s1.2a.{}", BASE64URL_NOPAD.encode(&hex(OPENSSL_SIV_512)))
        );
    }

    const OPENSSL_SIV_512: &str = "3f2179a4101de1c88452fab7c2f696d173cf7c30d37182a560c86a35c9";

    #[test]
    fn rfc8452_c2_aes_256_gcm_siv_vector_with_associated_data() {
        // RFC 8452 Appendix C.2 (AEAD_AES_256_GCM_SIV), the first case with associated data.
        let mut k = [0u8; 32];
        k[0] = 1;
        let mut nonce = [0u8; 12];
        nonce[0] = 3;
        let out = gcm_siv_encrypt(&k, &nonce, &[0x01], &hex("0200000000000000")).unwrap();
        assert_eq!(
            HEXLOWER.encode(&out),
            "1de22967237a813291213f267e3b452f02d01ae33e4ec854"
        );
        assert_eq!(
            gcm_siv_decrypt(&k, &nonce, &[0x01], &out).unwrap(),
            hex("0200000000000000")
        );
        assert!(matches!(
            gcm_siv_decrypt(&k, &nonce, &[0x02], &out),
            Err(SealError::Authentication)
        ));
    }

    #[test]
    fn fields_are_deterministic_per_column_and_open() {
        let k = key(1);
        let a = k.seal_field("caller", b"+4420");
        assert_eq!(a, k.seal_field("caller", b"+4420"));
        assert!(a.starts_with("s1.1."), "{a}");
        assert_ne!(a, k.seal_field("callee", b"+4420"));
        assert_ne!(a, k.seal_field("caller", b"+4421"));
        assert_eq!(k.seal_field("caller", b""), "");
        let ring = Keyring::new("tenant-a", vec![k]).unwrap();
        assert_eq!(open_field(&ring, "caller", &a).unwrap(), b"+4420");
        assert_eq!(open_field(&ring, "caller", "").unwrap(), b"");
        // The column is authenticated: the text of one column does not open in another.
        assert!(matches!(
            open_field(&ring, "callee", &a),
            Err(SealError::Authentication)
        ));
    }

    #[test]
    fn tampered_or_malformed_fields_are_errors() {
        let ring = Keyring::new("t", vec![key(1)]).unwrap();
        let a = ring.current().seal_field("caller", b"+4420");
        let mut raw = BASE64URL_NOPAD.decode(&a.as_bytes()[5..]).unwrap();
        raw[20] ^= 1;
        let flipped = format!("s1.1.{}", BASE64URL_NOPAD.encode(&raw));
        assert!(matches!(
            open_field(&ring, "caller", &flipped),
            Err(SealError::Authentication)
        ));
        assert!(matches!(
            open_field(&ring, "caller", &a.replace("s1.1.", "s1.2.")),
            Err(SealError::UnknownKeyId(2))
        ));
        for bad in [
            "+4420",
            "s1.",
            "s1.1",
            "s1.x.AAAA",
            "s1.1.***",
            "s1.+1.AAAA",
            "s1.1.AA",
        ] {
            assert!(
                matches!(
                    open_field(&ring, "caller", bad),
                    Err(SealError::Malformed(_) | SealError::Authentication)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn records_are_randomised_bound_to_their_aad_and_tamper_evident() {
        let ring = Keyring::new("spool", vec![key(7)]).unwrap();
        let k = ring.current();
        let a = k.seal_record(b"seq 1", b"a call record").unwrap();
        let b = k.seal_record(b"seq 1", b"a call record").unwrap();
        assert_ne!(a, b, "a fresh nonce per record");
        assert_eq!(a.len(), RECORD_OVERHEAD + 13);
        assert_eq!(&a[..5], &[RECORD_VERSION, 0, 0, 0, 7]);
        assert_eq!(open_record(&ring, b"seq 1", &a).unwrap(), b"a call record");
        assert!(matches!(
            open_record(&ring, b"seq 2", &a),
            Err(SealError::Authentication)
        ));
        for i in 0..a.len() {
            let mut t = a.clone();
            t[i] ^= 0x80;
            assert!(open_record(&ring, b"seq 1", &t).is_err(), "byte {i}");
        }
        assert!(matches!(
            open_record(&ring, b"", &a[..RECORD_OVERHEAD - 1]),
            Err(SealError::Malformed(_))
        ));
        let other = Keyring::new("spool", vec![key(7)]).unwrap();
        assert!(matches!(
            open_record(&other, b"seq 1", &a),
            Err(SealError::Authentication)
        ));
    }

    #[test]
    fn wrapped_keys_are_bound_to_master_scope_and_id() {
        let m = master();
        let k = key(3);
        let w = k.wrap(&m, "tenant-a");
        assert_eq!(w.len(), WRAPPED_KEY_BYTES);
        let back = DataKey::unwrap(&m, "tenant-a", 3, &w).unwrap();
        assert_eq!(
            back.seal_field("c", b"v"),
            k.seal_field("c", b"v"),
            "same key material"
        );
        for (mm, scope, id) in [(&m, "tenant-b", 3), (&m, "tenant-a", 4)] {
            assert!(matches!(
                DataKey::unwrap(mm, scope, id, &w),
                Err(SealError::Authentication)
            ));
        }
        assert!(matches!(
            DataKey::unwrap(&master(), "tenant-a", 3, &w),
            Err(SealError::Authentication)
        ));
        assert!(matches!(
            DataKey::unwrap(&m, "tenant-a", 3, &w[1..]),
            Err(SealError::Malformed(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_rows_readable_and_findable() {
        let m = master();
        let (k1, k2) = (key(1), key(2));
        let (w1, w2) = (k1.wrap(&m, "t"), k2.wrap(&m, "t"));
        let old_field = k1.seal_field("caller", b"+4420");
        let old_record = k1.seal_record(b"1", b"old").unwrap();
        // After the rotation the ring (unwrapped from storage) seals with key 2.
        let mut ring = Keyring::unwrap(&m, "t", [(1, w1.as_slice())]).unwrap();
        ring.insert(DataKey::unwrap(&m, "t", 2, &w2).unwrap())
            .unwrap();
        assert_eq!(ring.current().key_id(), 2);
        assert_eq!(ring.ids().collect::<Vec<_>>(), [2, 1]);
        let new_field = ring.current().seal_field("caller", b"+4420");
        let new_record = ring.current().seal_record(b"2", b"new").unwrap();
        assert!(new_field.starts_with("s1.2."));
        assert_eq!(open_field(&ring, "caller", &old_field).unwrap(), b"+4420");
        assert_eq!(open_field(&ring, "caller", &new_field).unwrap(), b"+4420");
        assert_eq!(open_record(&ring, b"1", &old_record).unwrap(), b"old");
        assert_eq!(open_record(&ring, b"2", &new_record).unwrap(), b"new");
        assert_eq!(
            ring.field_variants("caller", b"+4420"),
            [new_field, old_field]
        );
        assert_eq!(ring.field_variants("caller", b""), [""]);
        assert!(matches!(
            ring.insert(key(1)),
            Err(SealError::DuplicateKeyId(1))
        ));
        assert!(matches!(
            Keyring::new("t", Vec::new()),
            Err(SealError::EmptyKeyring)
        ));
    }

    #[test]
    fn master_key_file_is_created_0600_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("spool.key");
        let (k1, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(created);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.len(), 129, "128 hex digits and a newline");
        let text = fs::read_to_string(&path).unwrap();
        let (k2, created) = MasterKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(*k1.0, *k2.0);
        // O_EXCL: an explicit create over an existing file fails and leaves it alone.
        match MasterKey::create(&path) {
            Err(SealError::KeyFile(KeyError::Write { source, .. })) => {
                assert_eq!(source.kind(), io::ErrorKind::AlreadyExists)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let w = key(1).wrap(&k1, "spool");
        assert!(DataKey::unwrap(&MasterKey::load(&path).unwrap(), "spool", 1, &w).is_ok());
    }

    #[test]
    fn exposed_or_malformed_master_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.key");
        drop(MasterKey::create(&path).unwrap());
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            match MasterKey::load(&path) {
                Err(e @ SealError::KeyFile(KeyError::Permissions { mode: m, .. })) => {
                    assert_eq!(m, mode);
                    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
                    assert!(e.to_string().contains(&format!("{mode:04o}")), "{e}");
                }
                other => panic!("mode {mode:o}: {other:?}"),
            }
            assert!(MasterKey::load_or_create(&path).is_err());
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(MasterKey::load(&path).is_ok());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, "abcd\n").unwrap();
        assert!(matches!(
            MasterKey::load(&path),
            Err(SealError::KeyFormat { origin }) if origin == path.display().to_string()
        ));
        assert!(matches!(
            MasterKey::load(dir.path()),
            Err(SealError::KeyFile(
                KeyError::NotAFile { .. } | KeyError::Read { .. }
            ))
        ));
    }

    #[test]
    fn master_key_from_environment_text_and_debug_redaction() {
        let text = format!("  {}\n", "0f".repeat(64));
        let m = MasterKey::from_hex(&text).unwrap();
        assert_eq!(*m.0, [0x0f; 64]);
        assert!(matches!(
            MasterKey::from_hex(&"0f".repeat(63)),
            Err(SealError::KeyFormat { origin }) if origin == MASTER_KEY_ENV
        ));
        assert!(MasterKey::from_hex(&"zz".repeat(64)).is_err());
        let dbg = format!("{m:?} {:?} {:?}", key(9), Keyring::new("t", vec![key(9)]));
        assert!(!dbg.contains("15, 15") && !dbg.contains("0f0f"), "{dbg}");
        assert!(dbg.contains("redacted"), "{dbg}");
    }
}
