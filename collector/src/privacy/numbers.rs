//! The key rings a server turns a typed phone number into stored pseudonyms with: the
//! agents' shared configuration (`--privacy-config`) and, per tenant, the configuration of
//! that tenant's own agents (`--tenant-privacy-config TENANT=PATH`). Tenants whose agents
//! pseudonymize under their own keys are searched under those keys only; a caller with no
//! tenant (the provider) searches under every ring. The number itself is never kept.
use std::{collections::BTreeMap, path::Path, sync::Arc};

use super::{ConfigError, PrivacyConfig, Pseudonymizer};

/// The shared key ring and the tenants' own.
#[derive(Debug, Clone, Default)]
pub struct NumberKeys {
    shared: Option<Arc<Pseudonymizer>>,
    tenants: BTreeMap<String, Arc<Pseudonymizer>>,
}

/// A `--tenant-privacy-config` value that is not `TENANT=PATH`, or a file that does not load.
#[derive(Debug, thiserror::Error)]
pub enum NumberKeysError {
    /// Not `TENANT=PATH`.
    #[error("--tenant-privacy-config takes TENANT=PATH, got {0:?}")]
    Syntax(String),
    /// The same tenant twice.
    #[error("--tenant-privacy-config names tenant {0:?} twice")]
    Duplicate(String),
    /// The configuration did not load.
    #[error("tenant {tenant:?}: {source}")]
    Config {
        /// The tenant whose file it is.
        tenant: String,
        /// Why.
        source: ConfigError,
    },
}

impl NumberKeys {
    /// Only the shared ring.
    pub fn shared(pz: Arc<Pseudonymizer>) -> Self {
        NumberKeys {
            shared: Some(pz),
            tenants: BTreeMap::new(),
        }
    }

    /// Adds `tenant`'s own ring.
    pub fn with_tenant(mut self, tenant: impl Into<String>, pz: Arc<Pseudonymizer>) -> Self {
        self.tenants.insert(tenant.into(), pz);
        self
    }

    /// The shared ring (if any) and the rings of `TENANT=PATH` agent configuration files.
    pub fn load(
        shared: Option<Arc<Pseudonymizer>>,
        tenant_configs: &[String],
    ) -> Result<Self, NumberKeysError> {
        let mut keys = NumberKeys {
            shared,
            tenants: BTreeMap::new(),
        };
        for spec in tenant_configs {
            let (tenant, path) = spec
                .split_once('=')
                .filter(|(t, p)| !t.is_empty() && !p.is_empty())
                .ok_or_else(|| NumberKeysError::Syntax(spec.clone()))?;
            if keys.tenants.contains_key(tenant) {
                return Err(NumberKeysError::Duplicate(tenant.to_owned()));
            }
            let config = |source| NumberKeysError::Config {
                tenant: tenant.to_owned(),
                source,
            };
            let pz = PrivacyConfig::load_agent_config(Path::new(path))
                .and_then(|c| Pseudonymizer::from_config(&c))
                .map_err(config)?;
            keys.tenants.insert(tenant.to_owned(), Arc::new(pz));
        }
        Ok(keys)
    }

    /// The rings a caller of `tenant` searches under: the tenant's own, else the shared
    /// one; every ring for a caller with no tenant.
    fn rings(&self, tenant: Option<&str>) -> Vec<&Pseudonymizer> {
        match tenant {
            Some(t) => match self.tenants.get(t) {
                Some(own) => vec![own.as_ref()],
                None => self.shared.as_deref().into_iter().collect(),
            },
            None => self
                .shared
                .as_deref()
                .into_iter()
                .chain(self.tenants.values().map(Arc::as_ref))
                .collect(),
        }
    }

    /// Whether a caller of `tenant` can search by number at all.
    pub fn available(&self, tenant: Option<&str>) -> bool {
        !self.rings(tenant).is_empty()
    }

    /// Every pseudonym `number` has under the rings of a caller of `tenant` (see
    /// [`Pseudonymizer::pseudonyms_for`]); `None` when that caller has no ring. Empty when
    /// nothing is left of the number after normalisation.
    pub fn pseudonyms_for(&self, tenant: Option<&str>, number: &[u8]) -> Option<Vec<String>> {
        let rings = self.rings(tenant);
        if rings.is_empty() {
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        for p in rings.iter().flat_map(|pz| pz.pseudonyms_for(number)) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// An agent configuration under one key, `secret` (64 hex digits).
    fn config(dir: &Path, name: &str, secret: &str) -> String {
        let keys = dir.join(format!("{name}-keys.toml"));
        std::fs::write(
            &keys,
            format!(
                "[[key]]\nid = \"k1\"\nsecret = \"{secret}\"\n\
                 created = \"2025-01-01T00:00:00Z\"\nactive = true\n"
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[privacy]\nscope = \"{name}\"\nkey_file = {:?}\n",
                keys.display().to_string()
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    fn pz(path: &str) -> Arc<Pseudonymizer> {
        let c = PrivacyConfig::load_agent_config(Path::new(path)).unwrap();
        Arc::new(Pseudonymizer::from_config(&c).unwrap())
    }

    #[test]
    fn each_tenant_searches_under_its_own_keys() {
        let dir = tempfile::tempdir().unwrap();
        let shared = config(dir.path(), "shared", &"11".repeat(32));
        let globex = config(dir.path(), "globex", &"22".repeat(32));
        let keys = NumberKeys::load(Some(pz(&shared)), &[format!("globex={globex}")]).unwrap();
        let number = b"+442079460000";
        let under_shared = pz(&shared).pseudonyms_for(number);
        let under_globex = pz(&globex).pseudonyms_for(number);
        assert_eq!(under_shared.len(), 1);
        assert_ne!(under_shared, under_globex);
        assert_eq!(
            keys.pseudonyms_for(Some("globex"), number),
            Some(under_globex.clone())
        );
        assert_eq!(
            keys.pseudonyms_for(Some("acme"), number),
            Some(under_shared.clone())
        );
        let all = keys.pseudonyms_for(None, number).unwrap();
        assert_eq!(all, [under_shared, under_globex].concat());
        assert!(NumberKeys::default()
            .pseudonyms_for(Some("acme"), number)
            .is_none());
        assert!(!NumberKeys::default().available(None));
        // Only globex has a ring: the others cannot search.
        let only = NumberKeys::load(None, &[format!("globex={globex}")]).unwrap();
        assert!(only.available(Some("globex")) && !only.available(Some("acme")));
    }

    #[test]
    fn bad_specifications_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let globex = config(dir.path(), "globex", &"22".repeat(32));
        for bad in ["globex", "=x", "globex="] {
            assert!(matches!(
                NumberKeys::load(None, &[bad.to_owned()]),
                Err(NumberKeysError::Syntax(_))
            ));
        }
        let twice = [format!("globex={globex}"), format!("globex={globex}")];
        assert!(matches!(
            NumberKeys::load(None, &twice),
            Err(NumberKeysError::Duplicate(_))
        ));
        assert!(matches!(
            NumberKeys::load(None, &["globex=/nonexistent/agent.toml".to_owned()]),
            Err(NumberKeysError::Config { .. })
        ));
    }
}
