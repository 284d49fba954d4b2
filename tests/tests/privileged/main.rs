//! The privileged integration tests (root: network namespaces, veth pairs, attached eBPF
//! programs, real SBC peers), in one test binary: one compile and one link of the whole
//! library instead of one per suite (each costs minutes of a 2-core machine). Each module is
//! one suite; `cargo xtask test --filter NAME` (or `cargo test -p collector-tests --test
//! privileged NAME`) runs the tests whose path contains NAME, e.g. `veth` or `e2e_sbc::`.
//! Each test has namespaces, interfaces, temporary directories and tmux sockets of its own
//! (unique names), its agent's own maps, and checks of what is left loaded look only at its
//! own agent's programs, so they can run two at a time (`-- --test-threads=2`);
//! `cargo xtask test` runs them one at a time (see there).
mod agent_metrics;
mod alerts;
mod datapath;
mod e2e_baresip;
mod e2e_sbc;
mod hostile;
mod jitter_buffers;
mod live_view;
mod privacy_e2e;
mod rtp_kernel;
mod safety;
mod sbc_calls;
mod veth;
