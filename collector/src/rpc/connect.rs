//! Client side of the collector's transport security, shared by the shipper and the
//! operator CLI: TLS to the collector (its CA, optionally a client certificate for mutual
//! TLS) and the bearer token sent with every call.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::{path::Path, time::Duration};

use thiserror::Error;
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{interceptor::InterceptedService, Interceptor},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
    Request, Status,
};

/// A channel that carries the bearer token on every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// Errors setting up a connection.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// A PEM or token file could not be read.
    #[error("reading {what} {path}")]
    File {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token cannot be sent as an HTTP header value.
    #[error("the token is not a valid header value")]
    Token,
    /// The endpoint or its TLS settings are not usable.
    #[error("invalid collector endpoint or TLS settings")]
    Endpoint(#[source] tonic::transport::Error),
    /// Connecting failed.
    #[error("connecting to the collector failed")]
    Connect(#[source] tonic::transport::Error),
}

/// TLS and token settings of a client.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// TLS settings for `https://` endpoints (`None` = tonic defaults, which for this build
    /// means no trusted roots: give the collector's CA).
    pub tls: Option<ClientTlsConfig>,
    /// The bearer token (without the `Bearer ` prefix).
    pub token: Option<String>,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::File {
        what,
        path: path.display().to_string(),
        source,
    })
}

impl ClientSecurity {
    /// Builds the settings from files: the CA that signed the collector's certificate, a
    /// client certificate and key for mutual TLS, a file holding the token, and the name to
    /// check the server certificate against (default: the endpoint's host).
    pub fn from_files(
        ca: Option<&Path>,
        client_cert: Option<(&Path, &Path)>,
        token_file: Option<&Path>,
        domain: Option<&str>,
    ) -> Result<Self, ConnectError> {
        let mut tls = None;
        if ca.is_some() || client_cert.is_some() || domain.is_some() {
            let mut c = ClientTlsConfig::new();
            if let Some(ca) = ca {
                c = c.ca_certificate(Certificate::from_pem(read("CA certificate", ca)?));
            }
            if let Some((cert, key)) = client_cert {
                c = c.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            if let Some(d) = domain {
                c = c.domain_name(d);
            }
            tls = Some(c);
        }
        let token = match token_file {
            Some(p) => Some(
                String::from_utf8(read("token file", p)?)
                    .map_err(|_| ConnectError::Token)?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        Ok(Self { tls, token })
    }

    /// The endpoint for `url` with these settings.
    pub fn endpoint(&self, url: &str, connect_timeout: Duration) -> Result<Endpoint, ConnectError> {
        let mut e = Endpoint::from_shared(url.to_string())
            .map_err(ConnectError::Endpoint)?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            e = e.tls_config(tls.clone()).map_err(ConnectError::Endpoint)?;
        }
        Ok(e)
    }

    /// The interceptor adding the token.
    pub fn interceptor(&self) -> Result<BearerToken, ConnectError> {
        let value = match &self.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| ConnectError::Token)?,
            ),
            None => None,
        };
        Ok(BearerToken(value))
    }

    /// Connects to `url`.
    pub async fn connect(
        &self,
        url: &str,
        connect_timeout: Duration,
    ) -> Result<AuthChannel, ConnectError> {
        let channel = self
            .endpoint(url, connect_timeout)?
            .connect()
            .await
            .map_err(ConnectError::Connect)?;
        Ok(InterceptedService::new(channel, self.interceptor()?))
    }
}

/// Adds `authorization: Bearer <token>` to every request (nothing when no token is set).
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A token is a credential: never print it.
        f.write_str("BearerToken(..)")
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}
