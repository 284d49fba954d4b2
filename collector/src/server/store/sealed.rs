//! Encryption at rest (issue 23): a [`Store`] wrapper that seals every CDR before a backend
//! sees it and opens it on the way out, so neither the SQLite file, the PostgreSQL data
//! directory nor a backup of either holds an identifier in clear.
//!
//! What a backend stores of a CDR is a skeleton ([`skeleton`]): the fields queries filter on
//! and billing rates with (times, disposition, codes, codecs, per-leg loss and MOS, agent,
//! destination prefix, the record's own id), the identifiers that equality look-ups need
//! (the parties' user, domain and display pseudonyms, the Call-ID and correlation id
//! pseudonyms) sealed deterministically with AES-256-SIV, and the whole record sealed with
//! AES-256-GCM-SIV in [`Cdr::sealed`] (its associated data the tenant's name, so a row cannot
//! be moved to another tenant). Everything else (addresses, user agents, media legs' hops,
//! consent) exists only inside the sealed record.
//!
//! Keys ([`TenantKeys`]): one keyring of data keys per tenant, each wrapped by the master key
//! (AES-SIV, the tenant and key id as associated data) and kept in a key store file beside
//! the master key, apart from the data. Key ids are unique across tenants, so a sealed value
//! names the keyring that opens it. Rotation adds a key: new rows are sealed with it, older
//! rows stay readable, and a look-up by pseudonym matches the value sealed under every key
//! of the tenant. Deleting a tenant removes its keys from the key store before its rows:
//! its rows in any earlier copy of the database can then no longer be opened
//! (crypto-shredding).
//!
//! The pseudonyms of audit entries are sealed the same way (the provider's own entries under
//! the keyring of [`ALL_TENANTS`]). Rows stored before encryption was turned on (no sealed
//! record) are returned as they are.
//!
//! With several collectors sharing one PostgreSQL database, every collector needs the same
//! master key and key store file (distributed like the token secret); a tenant's first key
//! is made by the collector that first ingests for it.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use collector_proto::v1::{Cdr, CdrRecord, MediaLeg, Party};
use data_encoding::BASE64URL_NOPAD;
use prost::Message as _;

use super::{
    billing, AuditEntry, CdrFilter, DailyAggregate, Erasure, IngestOutcome, RetentionRun,
    RetentionState, RowRewrite, Store, StoreError, StoreStats, TenantStats, ALL_TENANTS,
};
use crate::privacy::{
    keys::{read_key_file, KeyError},
    seal::{open_field, open_record, DataKey, Keyring, MasterKey, SealError},
};

/// The associated data of every sealed identifier: one label for all of them, so that one
/// sealed pseudonym matches it in any party column or as the Call-ID.
const ID_COLUMN: &str = "id";
/// Most data keys the key store holds (tenants times rotations).
pub const MAX_KEYS: usize = 100_000;

/// The data keys of every tenant, wrapped by the master key in a key store file.
pub struct TenantKeys {
    path: PathBuf,
    master: MasterKey,
    rings: Mutex<BTreeMap<String, Keyring>>,
}

impl std::fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKeys")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn seal_err(e: SealError) -> StoreError {
    StoreError::Sealed(e)
}

/// Adds `key` to `tenant`'s ring, making the ring if it has none.
fn insert_key(
    rings: &mut BTreeMap<String, Keyring>,
    tenant: &str,
    key: DataKey,
) -> Result<(), StoreError> {
    match rings.get_mut(tenant) {
        Some(ring) => ring.insert(key).map_err(seal_err),
        None => {
            rings.insert(
                tenant.to_owned(),
                Keyring::new(tenant, vec![key]).map_err(seal_err)?,
            );
            Ok(())
        }
    }
}

impl TenantKeys {
    /// Opens the key store at `path` (created at the first key; it must be a private file),
    /// unwrapping every key with `master`.
    pub fn open(path: &Path, master: MasterKey) -> Result<Self, StoreError> {
        let mut rings: BTreeMap<String, Keyring> = BTreeMap::new();
        let text = match read_key_file(path) {
            Ok(t) => Some(t),
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                None
            }
            Err(e) => return Err(seal_err(e.into())),
        };
        for line in text.iter().flat_map(|t| t.lines()).map(str::trim) {
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split(' ');
            let (Some(tenant), Some(id), Some(wrapped), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(seal_err(SealError::Malformed(
                    "key store lines must be `<tenant> <id hex> <base64url>`",
                )));
            };
            let id = u32::from_str_radix(id, 16)
                .map_err(|_| seal_err(SealError::Malformed("key store: bad key id")))?;
            let wrapped = BASE64URL_NOPAD
                .decode(wrapped.as_bytes())
                .map_err(|_| seal_err(SealError::Malformed("key store: bad wrapped key")))?;
            let key = DataKey::unwrap(&master, tenant, id, &wrapped).map_err(seal_err)?;
            insert_key(&mut rings, tenant, key)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            master,
            rings: Mutex::new(rings),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Keyring>>, StoreError> {
        self.rings.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Writes every wrapped key to the key store file, atomically, with `extra` (a key not
    /// in the rings yet) when given.
    fn persist(
        &self,
        rings: &BTreeMap<String, Keyring>,
        extra: Option<(&str, &DataKey)>,
    ) -> Result<(), StoreError> {
        let mut text = String::new();
        let keys = rings
            .iter()
            .flat_map(|(t, ring)| ring.keys().map(move |k| (t.as_str(), k)))
            .chain(extra);
        for (tenant, key) in keys {
            text.push_str(&format!("{tenant} {:x} ", key.key_id()));
            BASE64URL_NOPAD.encode_append(&key.wrap(&self.master, tenant), &mut text);
            text.push('\n');
        }
        let io = |source| StoreError::KeyStore {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io(std::io::Error::other("the key store path names no file")))?;
        crate::spool::cursor::replace_file(dir, name, text.as_bytes()).map_err(io)
    }

    /// Adds a new key to `tenant`'s ring (making the ring if needed) and stores it; its id.
    fn add_key(
        &self,
        rings: &mut BTreeMap<String, Keyring>,
        tenant: &str,
    ) -> Result<u32, StoreError> {
        let ids: Vec<u32> = rings.values().flat_map(Keyring::ids).collect();
        if ids.len() >= MAX_KEYS {
            return Err(seal_err(SealError::Malformed("the key store is full")));
        }
        let id = ids.iter().max().copied().unwrap_or(0).saturating_add(1);
        let key = DataKey::generate(id).map_err(seal_err)?;
        // Stored before it is used: nothing is ever sealed with a key the store lacks.
        self.persist(rings, Some((tenant, &key)))?;
        insert_key(rings, tenant, key)?;
        Ok(id)
    }

    /// Runs `f` with `tenant`'s ring, making its first key if it has none.
    fn with_ring<T>(
        &self,
        tenant: &str,
        f: impl FnOnce(&Keyring) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut rings = self.lock()?;
        if !rings.contains_key(tenant) {
            self.add_key(&mut rings, tenant)?;
        }
        match rings.get(tenant) {
            Some(ring) => f(ring),
            None => Err(StoreError::NotSealed),
        }
    }

    /// A new data key for `tenant`; new data is sealed with it. Its id.
    pub fn rotate(&self, tenant: &str) -> Result<u32, StoreError> {
        let mut rings = self.lock()?;
        self.add_key(&mut rings, tenant)
    }

    /// Destroys `tenant`'s keys (stored at once); true when it had any.
    pub fn shred(&self, tenant: &str) -> Result<bool, StoreError> {
        let mut rings = self.lock()?;
        let Some(ring) = rings.remove(tenant) else {
            return Ok(false);
        };
        if let Err(e) = self.persist(&rings, None) {
            // Still on disk: keep using it until the deletion succeeds.
            rings.insert(tenant.to_owned(), ring);
            return Err(e);
        }
        Ok(true)
    }

    /// The ids of `tenant`'s keys, the newest first.
    pub fn key_ids(&self, tenant: &str) -> Result<Vec<u32>, StoreError> {
        Ok(self
            .lock()?
            .get(tenant)
            .map(|r| r.ids().collect())
            .unwrap_or_default())
    }

    /// The sealed forms of `value` under every key of `tenant` (`None`: of every tenant),
    /// and `value` itself: the values an equality look-up matches.
    fn variants(&self, tenant: Option<&str>, value: &str) -> Result<Vec<String>, StoreError> {
        let rings = self.lock()?;
        let mut out: Vec<String> = match tenant {
            Some(t) => rings
                .get(t)
                .map(|r| r.field_variants(ID_COLUMN, value.as_bytes()))
                .unwrap_or_default(),
            None => rings
                .values()
                .flat_map(|r| r.field_variants(ID_COLUMN, value.as_bytes()))
                .collect(),
        };
        // Rows stored before encryption was turned on hold the value in clear.
        out.push(value.to_owned());
        Ok(out)
    }

    /// Opens a sealed identifier with whichever ring holds its key.
    fn open_id(&self, text: &str) -> Result<String, StoreError> {
        let rings = self.lock()?;
        for ring in rings.values() {
            match open_field(ring, ID_COLUMN, text) {
                Ok(v) => return Ok(String::from_utf8_lossy(&v).into_owned()),
                Err(SealError::UnknownKeyId(_)) => continue,
                Err(e) => return Err(seal_err(e)),
            }
        }
        Err(seal_err(SealError::Malformed(
            "no key of the key store opens it",
        )))
    }

    /// Opens a sealed record with whichever ring holds its key (its associated data is the
    /// ring's tenant).
    fn open_record(&self, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
        let rings = self.lock()?;
        for ring in rings.values() {
            match open_record(ring, ring.scope().as_bytes(), bytes) {
                Ok(v) => return Ok(v),
                Err(SealError::UnknownKeyId(_)) => continue,
                Err(e) => return Err(seal_err(e)),
            }
        }
        Err(seal_err(SealError::Malformed(
            "no key of the key store opens it",
        )))
    }
}

/// The id of the key a sealed record names (its bytes 1 to 4, big-endian), if it is one.
fn record_key_id(sealed: &[u8]) -> Option<u32> {
    let id: [u8; 4] = sealed.get(1..5)?.try_into().ok()?;
    Some(u32::from_be_bytes(id))
}

/// The part of `cdr` a backend stores, its identifiers sealed and the whole record sealed
/// beside them (see the module docs), under `ring`'s current key.
pub fn skeleton(ring: &Keyring, cdr: &Cdr) -> Result<Cdr, StoreError> {
    let key = ring.current();
    let id = |v: &str| key.seal_field(ID_COLUMN, v.as_bytes());
    let party = |p: &Option<Party>| {
        p.as_ref().map(|p| Party {
            user: id(&p.user),
            domain: id(&p.domain),
            display: id(&p.display),
        })
    };
    let sealed = key
        .seal_record(ring.scope().as_bytes(), &cdr.encode_to_vec())
        .map_err(seal_err)?;
    Ok(Cdr {
        agent_id: cdr.agent_id.clone(),
        cdr_id: cdr.cdr_id.clone(),
        call_id: id(&cdr.call_id),
        correlation_id: id(&cdr.correlation_id),
        caller: party(&cdr.caller),
        callee: party(&cdr.callee),
        start_time_ms: cdr.start_time_ms,
        ring_time_ms: cdr.ring_time_ms,
        answer_time_ms: cdr.answer_time_ms,
        end_time_ms: cdr.end_time_ms,
        duration_ms: cdr.duration_ms,
        billable_ms: cdr.billable_ms,
        disposition: cdr.disposition,
        final_code: cdr.final_code,
        codecs: cdr.codecs.clone(),
        media: cdr
            .media
            .iter()
            .map(|m| MediaLeg {
                codec: m.codec.clone(),
                loss_pct: m.loss_pct,
                mos: m.mos,
                ..Default::default()
            })
            .collect(),
        interim: cdr.interim,
        interim_seq: cdr.interim_seq,
        destination_prefix: cdr.destination_prefix.clone(),
        sealed,
        ..Default::default()
    })
}

/// A [`Store`] that seals what it stores in `inner` with [`TenantKeys`].
pub struct SealedStore {
    inner: Arc<dyn Store>,
    keys: Arc<TenantKeys>,
}

impl SealedStore {
    /// Seals `inner`'s rows with `keys`.
    pub fn wrap(inner: Arc<dyn Store>, keys: Arc<TenantKeys>) -> Arc<dyn Store> {
        Arc::new(Self { inner, keys })
    }

    /// The CDR a stored row stands for: the sealed record opened, or the row itself when it
    /// was stored in clear (before encryption was on).
    fn open(&self, stored: Cdr) -> Result<Cdr, StoreError> {
        if stored.sealed.is_empty() {
            return Ok(stored);
        }
        let bytes = self.keys.open_record(&stored.sealed)?;
        Cdr::decode(bytes.as_slice()).map_err(StoreError::Decode)
    }

    fn open_all(&self, rows: Vec<Cdr>) -> Result<Vec<Cdr>, StoreError> {
        rows.into_iter().map(|c| self.open(c)).collect()
    }

    /// `pseudonyms` as the sealed values a look-up in `tenant` (or every tenant) matches.
    fn sealed_lookup(
        &self,
        tenant: Option<&str>,
        pseudonyms: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for p in pseudonyms {
            for v in self.keys.variants(tenant, p)? {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }

    /// `f` as the backend must see it: pseudonyms sealed. The agent, the times and the
    /// record's own id (`cdr_id`) are stored in clear ([`skeleton`]) and pass as they are.
    fn seal_filter(&self, mut f: CdrFilter) -> Result<CdrFilter, StoreError> {
        if !f.pseudonyms.is_empty() {
            f.pseudonyms = self.sealed_lookup(f.tenant.as_deref(), &f.pseudonyms)?;
        }
        Ok(f)
    }

    /// The pseudonyms an audit entry of `tenant` names, sealed under that tenant's current
    /// key (the provider's own entries under the keyring of [`ALL_TENANTS`]).
    fn seal_subjects(
        &self,
        tenant: Option<&str>,
        subjects: &[String],
    ) -> Result<Vec<String>, StoreError> {
        if subjects.is_empty() {
            return Ok(Vec::new());
        }
        self.keys.with_ring(tenant.unwrap_or(ALL_TENANTS), |ring| {
            Ok(subjects
                .iter()
                .map(|s| ring.current().seal_field(ID_COLUMN, s.as_bytes()))
                .collect())
        })
    }

    /// An audit entry with its pseudonyms sealed.
    fn seal_audit(&self, mut e: AuditEntry) -> Result<AuditEntry, StoreError> {
        e.subjects = self.seal_subjects(e.tenant.as_deref(), &e.subjects)?;
        Ok(e)
    }
}

#[tonic::async_trait]
impl Store for SealedStore {
    async fn ingest_into(
        &self,
        agent_id: &str,
        tenant: &str,
        mut batch: Vec<CdrRecord>,
    ) -> Result<IngestOutcome, StoreError> {
        self.keys.with_ring(tenant, |ring| {
            for r in &mut batch {
                if let Some(c) = r.cdr.as_mut() {
                    if c.agent_id.is_empty() {
                        agent_id.clone_into(&mut c.agent_id);
                    }
                    c.sealed.clear();
                    *c = skeleton(ring, c)?;
                }
            }
            Ok(())
        })?;
        self.inner.ingest_into(agent_id, tenant, batch).await
    }

    async fn cursor(&self, agent_id: &str) -> Result<u64, StoreError> {
        self.inner.cursor(agent_id).await
    }

    async fn query(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        let rows = self.inner.query(self.seal_filter(filter)?).await?;
        self.open_all(rows)
    }

    async fn query_call_legs(&self, filter: CdrFilter) -> Result<Vec<Cdr>, StoreError> {
        let rows = self
            .inner
            .query_call_legs(self.seal_filter(filter)?)
            .await?;
        self.open_all(rows)
    }

    async fn erase(&self, mut erasure: Erasure) -> Result<u64, StoreError> {
        erasure.audited = Some(self.seal_subjects(erasure.tenant.as_deref(), &erasure.pseudonyms)?);
        erasure.pseudonyms = self.sealed_lookup(erasure.tenant.as_deref(), &erasure.pseudonyms)?;
        self.inner.erase(erasure).await
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.inner.audit(self.seal_audit(entry)?).await
    }

    async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = self.inner.audit_log(limit).await?;
        for e in &mut entries {
            for s in &mut e.subjects {
                // An entry of a deleted tenant keeps its sealed form.
                if let Ok(clear) = self.keys.open_id(s) {
                    *s = clear;
                }
            }
        }
        Ok(entries)
    }

    async fn retain(
        &self,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        self.inner.retain(cutoff_ms, now_ms).await
    }

    async fn retain_tenant(
        &self,
        tenant: &str,
        cutoff_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RetentionRun>, StoreError> {
        self.inner.retain_tenant(tenant, cutoff_ms, now_ms).await
    }

    async fn retention_state(&self) -> Result<RetentionState, StoreError> {
        self.inner.retention_state().await
    }

    async fn aggregates(
        &self,
        from_day: u64,
        to_day: u64,
    ) -> Result<Vec<DailyAggregate>, StoreError> {
        self.inner.aggregates(from_day, to_day).await
    }

    async fn stats(&self, tenant: Option<&str>) -> Result<StoreStats, StoreError> {
        self.inner.stats(tenant).await
    }

    async fn tenants(&self) -> Result<Vec<TenantStats>, StoreError> {
        self.inner.tenants().await
    }

    async fn delete_tenant(&self, tenant: &str, audit: AuditEntry) -> Result<u64, StoreError> {
        // The keys first: if deleting the rows fails, they are unreadable already.
        self.keys.shred(tenant)?;
        self.inner.delete_tenant(tenant, audit).await
    }

    async fn rotate_key(&self, tenant: &str) -> Result<u32, StoreError> {
        self.keys.rotate(tenant)
    }

    async fn rewrite(&self, tenant: &str, f: RowRewrite) -> Result<u64, StoreError> {
        self.inner.rewrite(tenant, f).await
    }

    async fn reseal(&self, tenant: &str) -> Result<u64, StoreError> {
        let current = self
            .keys
            .with_ring(tenant, |ring| Ok(ring.current().key_id()))?;
        let keys = Arc::clone(&self.keys);
        let owner = tenant.to_owned();
        let f: RowRewrite = Arc::new(move |stored: &Cdr| {
            if record_key_id(&stored.sealed) == Some(current) {
                return Ok(None);
            }
            // A row stored in clear is sealed as it is; a sealed one is opened first.
            let full = if stored.sealed.is_empty() {
                stored.clone()
            } else {
                Cdr::decode(keys.open_record(&stored.sealed)?.as_slice())
                    .map_err(StoreError::Decode)?
            };
            keys.with_ring(&owner, |ring| skeleton(ring, &full))
                .map(Some)
        });
        self.inner.rewrite(tenant, f).await
    }

    async fn store_rates(
        &self,
        tenant: &str,
        version: &str,
        csv: &str,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        self.inner.store_rates(tenant, version, csv, now_ms).await
    }

    async fn usage(
        &self,
        tenant: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<billing::UsageGroup>, StoreError> {
        self.inner.usage(tenant, from_ms, to_ms).await
    }

    async fn rerate(
        &self,
        tenant: &str,
        since_ms: u64,
        audit: AuditEntry,
    ) -> Result<billing::RerateOutcome, StoreError> {
        self.inner
            .rerate(tenant, since_ms, self.seal_audit(audit)?)
            .await
    }
}
