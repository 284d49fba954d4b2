//! The userspace side of the VoIP metadata collector.
//!
//! The data flow, and the module that owns each stage:
//!
//! ```text
//! kernel (XDP/TC) ──ring──▶ capture ──▶ net (L2..L4, reassembly, SIP framing)
//!                                        │
//!                     pipeline ◀─────────┘  (drives the stages below, one clock)
//!                        │
//!        sip + calls (dialogs, media binding in the kernel's MEDIA maps, CDRs, flow events)
//!                        │            media (RTCP, E-model, jitter buffers) feeds calls
//!                     privacy (pseudonyms, field policies: nothing leaves in clear)
//!                 ┌──────┴───────┐
//!   spool ──▶ ship (Ingest)   watch (hub; forward ──▶ the collector's relay)
//!                 │                │
//!                 └──── rpc ───────┘  (connect, TLS, token, listener exposure, backoff)
//!                        │
//!   server (Ingest, Query, Admin, Watch relay; store: SQLite / PostgreSQL; retention)
//!                        │
//!   cli (agent, server, cdrs, flows, top, replay, erase, ...), callview, metrics
//! ```
//!
//! Beside the flow, `billing` holds the pure rating engine (rate tables, rating, destination
//! prefixes) for the agent's billing policy and the server's rating at ingest.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod billing;
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
pub mod present;
pub mod privacy;
pub mod rpc;
pub mod server;
pub mod ship;
pub mod sip;
pub mod spool;
pub mod watch;
