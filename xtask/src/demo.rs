//! `cargo xtask demo`: builds the demo program of the `collector-tools` package (on top of
//! the SBC topology of the `collector-tests` library) in release and runs it as root against
//! the release `collector` binary the build step just made. The demo itself is
//! `tools/src/bin/demo.rs`.
use std::process::Command;

use anyhow::{bail, Result};

use crate::{build_tool, collector_bin, run};

/// Builds and runs the demo; setup and the collector build are done by the caller.
pub fn demo() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches eBPF programs: run as root");
    }
    let bin = build_tool("demo")?;
    run(
        Command::new(bin).env("COLLECTOR_BIN", collector_bin()),
        "the demo",
    )
}
