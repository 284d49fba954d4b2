//! The userspace side of the VoIP metadata collector.
//!
//! One module per concern: `capture` loads and attaches the kernel programs and reads what
//! they send; `cli` is the command line. Further modules (parsing, call tracking, privacy,
//! spooling, shipping, the server) plug in beside them.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod calls;
pub mod callview;
pub mod capture;
pub mod cli;
pub mod fuzzing;
pub mod harden;
pub mod media;
pub mod metrics;
pub mod net;
pub mod pipeline;
pub mod privacy;
pub mod server;
pub mod ship;
pub mod sip;
pub mod spool;
pub mod watch;
