//! `cargo xtask setup`: installs what the build, the tests and the demo need on Debian 12,
//! and says what it installs. Idempotent: a second run only checks, in seconds.
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages and why each is needed.
const PACKAGES: &[(&str, &str)] = &[
    (
        "rustc-web",
        "Rust 1.96 with LLVM 22 and the bpf target sysroot, for the eBPF crate",
    ),
    ("cargo-web", "cargo matching rustc-web"),
    (
        "rust-web-src",
        "core's source, for -Z build-std=core on bpfel-unknown-none",
    ),
    ("llvm-22-dev", "LLVM 22, which bpf-linker links against"),
    (
        "iproute2",
        "network namespaces, veth pairs and tc for the tests and the demo",
    ),
    (
        "sip-tester",
        "sipp, the real SIP peer of the tests and the demo",
    ),
    (
        "tshark",
        "the independent analyser the tests compare against",
    ),
    ("tcpreplay", "replays captures onto a veth"),
    (
        "postgresql",
        "the scale-out CDR store for the collector tests",
    ),
];

/// The bpf-linker version known to work with rustc-web's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false)
        || home_bin("bpf-linker")
            .and_then(|p| Command::new(p).arg("--version").output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
            .unwrap_or(false)
}

fn home_bin(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo/bin").join(name))
}

/// Installs what is missing.
pub fn setup() -> Result<()> {
    let t = std::time::Instant::now();
    if std::env::consts::OS != "linux" {
        bail!("this project needs Linux (eBPF, network namespaces)");
    }
    let missing: Vec<_> = PACKAGES.iter().filter(|(p, _)| !installed(p)).collect();
    if !missing.is_empty() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "missing Debian packages {:?}: run `cargo xtask setup` as root (apt-get install)",
                missing.iter().map(|(p, _)| *p).collect::<Vec<_>>()
            );
        }
        for (p, why) in &missing {
            println!("setup: installing {p}: {why}");
        }
        crate::run(
            Command::new("apt-get")
                .args(["update", "-q"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get update",
        )?;
        crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(missing.iter().map(|(p, _)| *p))
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        )?;
    }
    if !bpf_linker_ok() {
        println!("setup: installing bpf-linker {BPF_LINKER_VERSION} (links the eBPF object; about a minute)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        crate::run(
            Command::new(cargo)
                .args([
                    "install",
                    "bpf-linker",
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
            "cargo install bpf-linker",
        )
        .context("bpf-linker is needed to link the eBPF object")?;
    }
    println!("setup: everything present ({:.1?})", t.elapsed());
    Ok(())
}
