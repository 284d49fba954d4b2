//! The gRPC plumbing both sides share, below the agent's clients (`ship`, `watch::forward`,
//! the CLI verbs) and the collector's services (`server`, the agent's own Watch listener):
//! the client connection with TLS and token ([`connect`]), the listener's exposure check
//! ([`listen`]), capped jittered backoff ([`backoff`]), the largest message accepted and
//! the one-line display of an error chain.

pub mod backoff;
pub mod connect;
pub mod listen;

/// Largest gRPC message accepted, in bytes (a batch of CDRs).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// `error: cause: cause` on one line (errors here carry no CDR values).
pub fn display_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
