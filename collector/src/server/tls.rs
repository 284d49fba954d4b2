//! TLS of the collector's gRPC endpoint (rustls through tonic): the server certificate and
//! key, and optionally a client CA, which turns on mutual TLS so that only agents holding a
//! certificate from that CA can connect at all (before any token is looked at).
use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use super::ServerError;

/// Where the server's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA whose certificates clients must present (mutual TLS); `None` = no client
    /// certificates.
    pub client_ca: Option<PathBuf>,
    /// With a client CA: also accept clients without a certificate (those that present
    /// one must still chain to the CA).
    pub client_auth_optional: bool,
}

fn read(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::TlsFile {
        path: path.to_path_buf(),
        source,
    })
}

impl TlsFiles {
    /// Reads the files into tonic's server TLS configuration.
    pub fn load(&self) -> Result<ServerTlsConfig, ServerError> {
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(self.client_auth_optional);
        }
        Ok(config)
    }
}
