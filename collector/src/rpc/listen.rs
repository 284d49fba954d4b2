//! The exposure of a gRPC listener (the collector's, an agent's Watch API): [`check_listen`]
//! refuses a listener without TLS or without tokens on anything but a loopback address
//! unless the operator explicitly passes `--insecure`: CDRs (even pseudonymized), live flows
//! and the erase API must not cross a network unencrypted or unauthenticated by accident.
use std::net::SocketAddr;

use thiserror::Error;
use tokio::net::TcpListener;

/// Why a listener was not opened.
#[derive(Debug, Error)]
pub enum ListenError {
    /// A plaintext listener on a non-loopback address without `--insecure`.
    #[error(
        "refusing to listen on {addr} without TLS: plaintext gRPC would carry CDRs and the \
         erase API over the network unencrypted; give --tls-cert and --tls-key, listen on a \
         loopback address (127.0.0.1 or ::1), or pass --insecure on a network you trust"
    )]
    PlaintextNonLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// A listener without token authentication on a non-loopback address.
    #[error(
        "refusing to listen on {addr} without bearer tokens: anyone reaching it could read \
         and erase CDRs; give --token-secret, listen on a loopback address, or pass \
         --insecure on a network you trust"
    )]
    UnauthenticatedNonLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// The listen address could not be bound.
    #[error("binding {addr} failed")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How a listener is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    /// TLS is on.
    pub tls: bool,
    /// Bearer tokens are checked.
    pub auth: bool,
    /// The operator accepts the risk of a missing protection (`--insecure`).
    pub insecure: bool,
}

/// Refuses a listener without TLS or without tokens on a non-loopback address unless
/// `insecure` (see the module docs for why).
pub fn check_listen(addr: SocketAddr, exposure: Exposure) -> Result<(), ListenError> {
    if addr.ip().is_loopback() || exposure.insecure {
        Ok(())
    } else if !exposure.tls {
        Err(ListenError::PlaintextNonLoopback { addr })
    } else if !exposure.auth {
        Err(ListenError::UnauthenticatedNonLoopback { addr })
    } else {
        Ok(())
    }
}

/// Binds `addr` after [`check_listen`].
pub async fn bind(addr: &str, exposure: Exposure) -> Result<TcpListener, ListenError> {
    let bind_err = |source| ListenError::Bind {
        addr: addr.to_string(),
        source,
    };
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(bind_err)?
        .collect();
    if resolved.is_empty() {
        return Err(bind_err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address",
        )));
    }
    for a in &resolved {
        check_listen(*a, exposure)?;
    }
    TcpListener::bind(resolved.as_slice())
        .await
        .map_err(bind_err)
}
