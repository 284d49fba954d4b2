//! `cargo xtask demo`: the product's main job in one command, as production runs it. A
//! carrier, an SBC (Kamailio + rtpengine, topology hiding) and a PBX in three network
//! namespaces; the central collector (`collector server`, embedded SQLite) with TLS from a
//! throwaway CA and bearer tokens from `collector token`; the real `collector agent` attached
//! to the SBC's two interfaces with a key file and scope in its configuration file,
//! streaming its CDRs to the collector through its durable spool and its live events to the
//! collector's relay. While a mix of real calls runs (answered, busy, cancelled, unanswered,
//! held and resumed; G.711 audio, some with loss and jitter), `collector flows -f` watches
//! the relay with a read token and its lines are printed as they come. At the end the table
//! is read back from the collector (`collector cdrs --by-call`: one row per call, its legs
//! below) and the data inventory of the agent's policy is printed.
//!
//! The collector listens on the SBC namespace's loopback (a real deployment runs it on
//! another host; the agent's side is the same: an `https://` URL, a CA, a token file).
//! Everything is torn down on exit, on error and on Ctrl-C: the children stop on drop, the
//! namespaces go with the topology.
use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use collector_tests::{
    collector_bin,
    deploy::{collector_in, Options, Proc, SecuredCollector, Token},
    sbc::{CallOptions, SbcMode, Scenario, Topology},
    Agent,
};

/// The calls the demo places, in order: (label, scenario, calls, impaired).
const PLAN: [(&str, Scenario, u32, bool); 6] = [
    ("answered, clean", Scenario::Answered, 2, false),
    (
        "answered, 3% loss + 30 ms jitter from the PBX",
        Scenario::Answered,
        2,
        true,
    ),
    ("busy", Scenario::Busy, 1, false),
    ("cancelled while ringing", Scenario::Cancelled, 1, false),
    ("no answer", Scenario::NoAnswer, 1, false),
    ("held and resumed", Scenario::HoldResume, 1, false),
];

/// The collector's gRPC port on the SBC namespace's loopback.
const PORT: u16 = 50051;
/// The agent's id: its ingest token is bound to it.
const AGENT_ID: &str = "sbc-demo-1";

/// Set by SIGINT/SIGTERM: the demo stops at its next step and tears everything down.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C and SIGTERM set [`INTERRUPTED`] instead of killing the demo, so that the drops
/// run (the children in the terminal's process group get Ctrl-C themselves and stop).
fn catch_signals() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted: tearing down");
    }
    Ok(())
}

/// Starts `cmd` with stdout piped to a thread that prints every line, prefixed, as it
/// arrives; returns the process and a receiver of its lines (for the caller's checks).
fn printed(
    name: &'static str,
    mut cmd: Command,
    prefix: &'static str,
) -> Result<(Proc, mpsc::Receiver<String>)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut p = Proc::spawn(name, cmd)?;
    let stdout = p.child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            println!("{prefix}{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok((p, rx))
}

fn inventory(config: &Path) -> Result<()> {
    let out = Command::new(collector_bin())
        .arg("inventory")
        .arg("--config")
        .arg(config)
        .stderr(Stdio::null())
        .output()
        .context("running collector inventory")?;
    if !out.status.success() {
        bail!("collector inventory failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    for l in lines.by_ref() {
        if l.starts_with("FIELD") {
            break;
        }
        if !l.trim().is_empty() {
            println!("  {l}");
        }
    }
    let mut tally: Vec<(String, Vec<String>)> = Vec::new();
    for l in lines {
        if l.trim().is_empty() {
            break;
        }
        // Columns are separated by two or more spaces; the protection is the third.
        let cols: Vec<&str> = l
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        let (Some(field), Some(prot)) = (cols.first(), cols.get(2)) else {
            continue;
        };
        match tally.iter_mut().find(|(p, _)| p == prot) {
            Some((_, fields)) => fields.push((*field).to_owned()),
            None => tally.push(((*prot).to_owned(), vec![(*field).to_owned()])),
        }
    }
    for (prot, fields) in &tally {
        if prot == "kept" {
            println!("  {:<36} {} technical/quality fields", prot, fields.len());
        } else {
            println!("  {:<36} {}", prot, fields.join(", "));
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and attaches eBPF programs: run as root");
    }
    catch_signals();
    let t0 = Instant::now();
    println!("== topology: carrier --- SBC (Kamailio + rtpengine, topology hiding) --- PBX, in network namespaces");
    // Topology hiding: each leg has its own Call-ID, so the agent writes one CDR per leg
    // with that leg's media and links the two legs of a call (correlation id); the
    // collector's call view shows one row per call.
    let topo = Topology::up(SbcMode::TopologyHiding)?;
    let [a, b] = topo.sbc_ifaces();
    let ns = topo.sbc.name.clone();
    println!(
        "SBC up in {:.1}s: interfaces {a} (carrier side), {b} (PBX side)",
        t0.elapsed().as_secs_f64()
    );

    println!("\n== the central collector: TLS (throwaway CA), bearer tokens, SQLite");
    let opts = Options {
        agent_id: AGENT_ID.to_owned(),
        scope: "demo-carrier".to_owned(),
        port: PORT,
        dir_prefix: "collector-demo".to_owned(),
    };
    let mut server = SecuredCollector::start(&ns, opts, &check_interrupted)?;
    println!(
        "collector server on {}; tokens from `collector token`: ingest \
         (bound to agent {AGENT_ID}) and read",
        server.url()
    );

    let agent_args = server.agent_args();
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let agent = Agent::start(&ns, &[a, b], &agent_args)?;
    let attachments = agent
        .ready
        .get("attachments")
        .and_then(serde_json::Value::as_array)
        .map_or(0, Vec::len);
    println!(
        "agent {AGENT_ID} ready: {attachments} attachments (XDP ingress + TC egress on both \
         interfaces), key file and scope from its config, CDRs to the collector through its spool"
    );

    let mut flows = collector_in(&ns);
    flows.args([
        "flows",
        "--follow",
        "--type",
        "call-state,media-stats,alert",
        "-o",
        "compact",
    ]);
    flows.args(server.client_args(Token::Read));
    flows.env("COLLECTOR_LOG", "warn");
    let (mut flows, live) = printed("collector flows", flows, "  live | ")?;

    println!(
        "\n== calls (sipp both ends, G.711 A-law audio both ways), watched live: collector flows -f \
         --server https://127.0.0.1:{PORT} --ca ca.pem --token-file read.token"
    );
    let mut placed = 0;
    for (label, scenario, n, impaired) in PLAN {
        check_interrupted()?;
        let o = CallOptions {
            duration: Duration::from_secs(3),
            ring: Duration::from_millis(800),
            loss: if impaired { 0.03 } else { 0.0 },
            jitter: if impaired {
                Duration::from_millis(30)
            } else {
                Duration::ZERO
            },
            ..CallOptions::default()
        };
        let r = topo
            .run_calls(scenario, n, &o)
            .with_context(|| topo.diagnostics())?;
        placed += n;
        println!(
            "sipp: {n} x {label}: {} ok, {} failed (caller), {} ok (callee)",
            r.uac.successful, r.uac.failed, r.uas.successful
        );
    }
    check_interrupted()?;
    // In-dialog retransmission timers of the last call, then stop: the agent closes what is
    // still open, ships what is left in its spool and exits.
    std::thread::sleep(Duration::from_millis(500));
    agent.stop()?;
    // The relay's last events reach the watcher within its batch interval.
    std::thread::sleep(Duration::from_millis(500));
    let _ = flows.stop(Duration::from_secs(5));
    let live_lines = live.try_iter().count();
    ensure!(
        live_lines > 0,
        "collector flows printed no live event through the relay"
    );

    println!(
        "\n== the calls, read back from the collector: collector cdrs --by-call --server \
         https://127.0.0.1:{PORT} --ca ca.pem --token-file read.token"
    );
    let mut cdrs = collector_in(&ns);
    cdrs.args(["cdrs", "--by-call", "-o", "table"]);
    cdrs.args(server.client_args(Token::Read));
    let out = cdrs
        .stdin(Stdio::null())
        .output()
        .context("running collector cdrs")?;
    ensure!(
        out.status.success(),
        "collector cdrs failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let table = String::from_utf8_lossy(&out.stdout);
    print!("{table}");
    println!("   {placed} calls placed; {live_lines} live events seen while they ran");

    println!("\n== data inventory (collector inventory --config agent.toml)");
    inventory(&server.path("agent.toml"))?;
    let _ = server.stop();
    drop(server);
    drop(topo);
    println!(
        "\n== torn down; demo took {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
