//! `cargo xtask`: one entry point for setting up a machine, building the eBPF object and the
//! binary, running every test tier, the demo and the benchmarks.
//!
//! Every command runs `setup` first, so a fresh Debian 12 machine needs nothing but this
//! repository and a Rust toolchain.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod demo;
mod fuzz;
mod setup;

#[derive(Parser)]
#[command(name = "xtask", about = "Build, test and demo the VoIP collector")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build, the tests and the demo need (idempotent).
    Setup,
    /// Build the eBPF object (release) and the `collector` binary that embeds it.
    Build {
        /// Build the userspace binary in the dev profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Setup, build, fmt, clippy, unit tests, then the privileged integration tests.
    Test {
        /// Skip the privileged integration tests (network namespaces, attached programs).
        #[arg(long)]
        no_privileged: bool,
        /// Only run integration tests whose name contains this string.
        #[arg(long)]
        filter: Option<String>,
    },
    /// The main job in one command: a live SBC topology, real calls, the CDR table.
    Demo,
    /// Benchmarks: kernel cost per packet, userspace throughput, peers side by side.
    Bench,
    /// The attached agent under a steady load of calls and junk SIP for N minutes: its
    /// memory, CPU, dialogs, map entries and spool every minute, and whether each stayed flat.
    Soak {
        /// Minutes of load (1 to 240).
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Runs every cargo-fuzz target for a bounded time, seeded from testdata/.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
}

/// The workspace root (the parent of this crate).
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// Path of the built eBPF object.
pub fn ebpf_object() -> PathBuf {
    root().join("collector-ebpf/target/bpfel-unknown-none/release/collector-ebpf")
}

/// Path of the release `collector` binary.
pub fn collector_bin() -> PathBuf {
    root().join("target/release/collector")
}

/// Runs a command, failing with its description when it exits non-zero.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn build_ebpf() -> Result<()> {
    let dir = root().join("collector-ebpf");
    let mut path = std::env::var("PATH").unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        path = format!("{}/.cargo/bin:{path}", PathBuf::from(home).display());
    }
    let mut cmd = Command::new("/usr/bin/cargo");
    cmd.current_dir(&dir)
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", path)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ]);
    run(&mut cmd, "building the eBPF object")?;
    if !ebpf_object().is_file() {
        bail!(
            "the eBPF build left no object at {}",
            ebpf_object().display()
        );
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c.env("COLLECTOR_EBPF_OBJ", ebpf_object());
    c
}

fn build(debug: bool) -> Result<()> {
    let t = Instant::now();
    build_ebpf()?;
    let mut c = cargo();
    c.args(["build", "-p", "collector", "--bin", "collector"]);
    if !debug {
        c.arg("--release");
    }
    run(&mut c, "building the collector binary")?;
    println!(
        "xtask: built {} (eBPF object embedded) in {:.0?}",
        collector_bin().display(),
        t.elapsed()
    );
    Ok(())
}

struct Step {
    name: &'static str,
    ok: bool,
    secs: f64,
    note: String,
}

fn test(no_privileged: bool, filter: Option<String>) -> Result<()> {
    let mut steps: Vec<Step> = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<String>| {
        let t = Instant::now();
        println!("\n=== xtask test: {name} ===");
        let (ok, note) = match f() {
            Ok(n) => (true, n),
            Err(e) => (false, format!("{e:#}")),
        };
        steps.push(Step {
            name,
            ok,
            secs: t.elapsed().as_secs_f64(),
            note,
        });
        ok
    };
    let mut proceed = step("setup", &mut || setup::setup().map(|()| String::new()));
    proceed = proceed && step("build", &mut || test_build().map(|()| String::new()));
    if proceed {
        step("fmt", &mut || {
            run(
                cargo().args(["fmt", "--all", "--", "--check"]),
                "cargo fmt --check",
            )
            .map(|()| String::new())
        });
        step("clippy", &mut || {
            run(
                // In the release profile, like every build and test here: the build
                // scripts and proc macros it needs are then those already built (a dev
                // profile would compile them all again).
                cargo().args([
                    "clippy",
                    "--release",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]),
                "cargo clippy",
            )
            .map(|()| String::new())
        });
        step("unit tests", &mut || {
            run(
                cargo().args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "collector-tests",
                    "--exclude",
                    "collector-tools",
                    "--release",
                ]),
                "unit tests",
            )?;
            // The test helpers' own unit tests (templates, parsers of sipp's, tshark's and
            // baresip's output); the crate's privileged binary runs in the next step. Every
            // library's, selected with `--workspace --lib` to keep the workspace's feature
            // resolution (`-p collector-tests` alone would compile the collector again); the
            // collector's own run again, in two seconds.
            run(
                cargo().args(["test", "--workspace", "--release", "--lib"]),
                "the libraries' unit tests, the test helpers' included",
            )
            .map(|()| String::new())
        });
        if no_privileged {
            println!("xtask: privileged integration tests skipped (--no-privileged)");
        } else {
            step("integration tests (root, netns)", &mut || {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    bail!("the integration tests attach eBPF programs and create network namespaces: run as root (or pass --no-privileged)");
                }
                let mut c = cargo();
                c.env("COLLECTOR_BIN", collector_bin())
                    .args(["test", "--workspace", "--release"]);
                // One binary, `tests/tests/privileged/`, selected by name so that the run
                // keeps the workspace's feature resolution.
                c.args(["--test", "privileged"]);
                // Two at a time: their namespaces and programs are their own (see
                // tests/tests/privileged/main.rs), and no packet to an offerer is lost
                // while its answer is bound however late the agent reads it (the seeded
                // entries), so the contention of two tests on two cores changes no count.
                c.args(["--", "--test-threads=2"]);
                if let Some(f) = &filter {
                    c.arg(f);
                }
                run(&mut c, "integration tests").map(|()| String::new())
            });
        }
    }
    println!("\n=== xtask test: summary ===");
    let mut failed = 0;
    for s in &steps {
        let mark = if s.ok { "ok  " } else { "FAIL" };
        println!("{mark} {:<34} {:>7.1}s {}", s.name, s.secs, s.note);
        if !s.ok {
            failed += 1;
        }
    }
    if failed > 0 || !proceed {
        bail!("{failed} step(s) failed");
    }
    println!("all steps passed");
    Ok(())
}

/// The build of `cargo xtask test`: the eBPF object, then every test binary and the
/// `collector` binary in one `cargo test --workspace --release --no-run`. Each later step
/// selects from the same workspace-wide feature resolution, so nothing compiles twice (a
/// separate `cargo build -p collector` resolves other features for shared dependencies and
/// rebuilds the tree under them).
fn test_build() -> Result<()> {
    let t = Instant::now();
    build_ebpf()?;
    run(
        cargo().args(["test", "--workspace", "--release", "--no-run"]),
        "building the tests and the collector binary",
    )?;
    if !collector_bin().is_file() {
        bail!("the build left no binary at {}", collector_bin().display());
    }
    println!(
        "xtask: built the tests and {} (eBPF object embedded) in {:.0?}",
        collector_bin().display(),
        t.elapsed()
    );
    Ok(())
}

/// Builds one program of the `collector-tools` package (demo, bench, soak) in release;
/// its path.
pub fn build_tool(name: &str) -> Result<PathBuf> {
    run(
        cargo().args(["build", "--release", "-p", "collector-tools", "--bin", name]),
        &format!("building the {name} program"),
    )?;
    Ok(root().join("target/release").join(name))
}

/// Builds and runs the soak binary (root: it creates namespaces and attaches the agent).
fn soak(minutes: u64) -> Result<()> {
    let bin = build_tool("soak")?;
    run(
        Command::new(bin)
            .args(["--minutes", &minutes.to_string()])
            .env("COLLECTOR_BIN", collector_bin()),
        "the soak",
    )
}

/// Runs the benchmark binary (root: it attaches programs and creates namespaces), prints
/// its table and keeps it in docs/BENCHMARKS.md with the JSON beside it in target/bench.
fn bench() -> Result<()> {
    let bin = build_tool("bench")?;
    let json = root().join("target/bench/kernel.json");
    let out = Command::new(bin)
        .arg("--json")
        .arg(&json)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the benchmark")?;
    let mut table = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{table}");
    if !out.status.success() {
        bail!("the benchmark failed ({})", out.status);
    }
    // The collector's rows: ingest from several agents at once and erasure among 1M CDRs,
    // on both backends (PostgreSQL in a throwaway cluster).
    let out = cargo()
        .args([
            "bench",
            "-p",
            "collector",
            "--bench",
            "erase",
            "--",
            "--rows",
            "1000000",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running the collector benchmark")?;
    let collector = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{collector}");
    if !out.status.success() {
        bail!("the collector benchmark failed ({})", out.status);
    }
    table.push_str(&collector);
    let doc = format!(
        "# Benchmarks\n\nProduced by `cargo xtask bench` (the latest run is committed here; every figure is\nalso in `target/bench/kernel.json` after a run). Goals are those of the benchmark issue;\na goal not met is reported as not met.\n{table}"
    );
    std::fs::create_dir_all(root().join("docs"))?;
    std::fs::write(root().join("docs/BENCHMARKS.md"), doc)?;
    println!("xtask: wrote docs/BENCHMARKS.md");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Build { debug } => {
            setup::setup()?;
            build(debug)
        }
        Cmd::Test {
            no_privileged,
            filter,
        } => test(no_privileged, filter),
        Cmd::Demo => {
            setup::setup()?;
            build(false)?;
            demo::demo()
        }
        Cmd::Fuzz { time, target } => {
            setup::setup()?;
            fuzz::run(time, target.as_deref())
        }
        Cmd::Soak { minutes } => {
            setup::setup()?;
            build(false)?;
            soak(minutes)
        }
        Cmd::Bench => {
            setup::setup()?;
            build(false)?;
            bench()
        }
    }
}
