//! The collector's integration tests, in one test binary (one link instead of one per
//! file: on a 2-core machine each release test binary costs a long link of the whole
//! library). Each module is one suite; `cargo test -p collector --test integration NAME`
//! runs the tests whose path contains NAME (e.g. `rtp_accounting`, `security::`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

// First: its macros (`both_backends!`) are used by the suites below.
#[macro_use]
mod support;
mod at_rest;
mod billing_policy;
mod billing_store;
mod cli;
mod crash;
mod fuzz_regressions;
mod mos_capture;
mod rtp_accounting;
mod security;
mod sip_corpus;
mod sip_proptest;
mod sip_rfc3261;
mod sip_torture;
mod store_backends;
mod web;
