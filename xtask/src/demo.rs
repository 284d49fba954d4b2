//! `cargo xtask demo`: builds the demo binary of the `collector-tests` crate (where the SBC
//! topology lives) in release and runs it as root against the release `collector` binary the
//! build step just made. The demo itself is `tests/src/bin/demo.rs`.
use std::process::Command;

use anyhow::{bail, Result};

use crate::{cargo, collector_bin, root, run};

/// Builds and runs the demo; setup and the collector build are done by the caller.
pub fn demo() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches eBPF programs: run as root");
    }
    run(
        cargo().args([
            "build",
            "--release",
            "-p",
            "collector-tests",
            "--bin",
            "demo",
        ]),
        "building the demo",
    )?;
    run(
        Command::new(root().join("target/release/demo")).env("COLLECTOR_BIN", collector_bin()),
        "the demo",
    )
}
