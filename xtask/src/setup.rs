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
    (
        "kamailio",
        "the SIP proxy of the test SBC (core with the tm, rr, rtpengine and topoh modules)",
    ),
    (
        "rtpengine-daemon",
        "the media relay of the test SBC, in userspace mode (no kernel module package)",
    ),
    (
        "baresip-core",
        "baresip, the second SIP stack of the end-to-end tests (the `baresip` package adds GUIs)",
    ),
    (
        "iptables",
        "random packet loss on the test SBC (statistic match), since netem is absent",
    ),
    ("tcpdump", "a peer of the agent in `cargo xtask bench`"),
    ("sngrep", "a peer of the agent in `cargo xtask bench`"),
    ("chromium", "browser tests of the web console"),
    ("chromium-driver", "browser tests of the web console"),
];

/// System services the packages above install: the tests run their own instances in a
/// namespace, so the system-wide ones must never run.
const SERVICES: &[&str] = &["kamailio.service", "rtpengine-daemon.service"];

/// Debian's hook that tells maintainer scripts whether they may start services.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

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

/// Writes a policy-rc.d that forbids every service action.
fn write_policy_rc_d() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        POLICY_RC_D,
        "#!/bin/sh\n# Written by cargo xtask setup for the install.\nexit 101\n",
    )
    .with_context(|| format!("writing {POLICY_RC_D}"))?;
    std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {POLICY_RC_D} executable"))?;
    Ok(())
}

/// Disables and stops the system-wide Kamailio and rtpengine if systemd runs them (they
/// would hold port 5060 and the ng port, and start at boot).
fn quiet_services() -> Result<()> {
    if !std::path::Path::new("/run/systemd/system").exists() {
        // No systemd: nothing starts them at boot, and policy-rc.d kept the install quiet.
        return Ok(());
    }
    for svc in SERVICES {
        let on = |what: &str| {
            Command::new("systemctl")
                .args([what, "--quiet", svc])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if on("is-enabled") || on("is-active") {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                bail!("{svc} is enabled or running: run `cargo xtask setup` as root to disable it");
            }
            println!("setup: disabling and stopping {svc} (the tests run their own instances)");
            crate::run(
                Command::new("systemctl").args(["disable", "--now", svc]),
                "systemctl disable",
            )?;
        }
    }
    Ok(())
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
        // Exit status 101 ("action forbidden") keeps the maintainer scripts from starting
        // the daemons we install; a policy already in place is left as it is.
        let own_policy = !std::path::Path::new(POLICY_RC_D).exists();
        if own_policy {
            write_policy_rc_d()?;
        }
        let installed = crate::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(missing.iter().map(|(p, _)| *p))
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        );
        if own_policy {
            std::fs::remove_file(POLICY_RC_D).with_context(|| format!("removing {POLICY_RC_D}"))?;
        }
        installed?;
    }
    quiet_services()?;
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
