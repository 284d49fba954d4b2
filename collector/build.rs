//! Embeds the eBPF object into the binary, so one file deploys.
//!
//! `cargo xtask build` builds the object first and passes its path in `COLLECTOR_EBPF_OBJ`.
//! Without it (plain `cargo check`/`clippy`/`test`), the object found at the default build
//! path is used if present, else an empty stub is embedded and loading it fails with a clear
//! error.
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=COLLECTOR_EBPF_OBJ");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let default =
        manifest.join("../collector-ebpf/target/bpfel-unknown-none/release/collector-ebpf");
    let src = std::env::var_os("COLLECTOR_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("collector-ebpf.o");
    if src.is_file() {
        std::fs::copy(&src, &out)?;
    } else {
        std::fs::write(&out, b"")?;
        println!(
            "cargo:warning=eBPF object not found at {}; embedding a stub (run `cargo xtask build`)",
            src.display()
        );
    }
    Ok(())
}
