//! TLS of the collector's gRPC endpoint (rustls through tonic): the server certificate and
//! key, and optionally a client CA, which turns on mutual TLS so that only agents holding a
//! certificate from that CA can connect at all (before any token is looked at). The web
//! console ([`super::web`]) is served under the same files through plain rustls
//! ([`TlsFiles::rustls`]).
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};

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

    /// The same files as a rustls server configuration (HTTP/1.1 and HTTP/2 by ALPN), for
    /// the web console: the same certificate and, with a client CA, the same client rule.
    pub fn rustls(&self) -> Result<rustls::ServerConfig, ServerError> {
        let bad = |path: &Path, why: String| ServerError::TlsFile {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
        };
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&self.cert, e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?)
            .map_err(|e| bad(&self.key, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(&self.cert, e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
                    roots
                        .add(cert.map_err(|e| bad(ca, e.to_string()))?)
                        .map_err(|e| bad(ca, e.to_string()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = if self.client_auth_optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| bad(ca, e.to_string()))?,
                )
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| bad(&self.key, e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}
