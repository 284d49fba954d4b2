//! The privileged integration tests (root: network namespaces, veth pairs, attached eBPF
//! programs, real SBC peers), in one test binary: one compile and one link of the whole
//! library instead of one per suite (each costs minutes of a 2-core machine). Each module is
//! one suite; `cargo xtask test --filter NAME` (or `cargo test -p collector-tests --test
//! privileged NAME -- --test-threads=1`) runs the tests whose path contains NAME, e.g.
//! `veth` or `e2e_sbc::`. They run one at a time: several attach programs to the same
//! kinds of interfaces and `veth` checks that nothing else is attached.
mod agent_metrics;
mod alerts;
mod datapath;
mod e2e_baresip;
mod e2e_sbc;
mod hostile;
mod live_view;
mod privacy_e2e;
mod rtp_kernel;
mod safety;
mod sbc_calls;
mod veth;
