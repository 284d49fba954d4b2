//! `cargo xtask demo`: the product's main job in one command. A carrier, an SBC (Kamailio +
//! rtpengine) and a PBX in three network namespaces; the real `collector agent` attached to
//! the SBC's two interfaces; a mix of real calls (answered, busy, cancelled, unanswered, held
//! and resumed) with G.711 audio, some with loss and jitter on the PBX's media; a live line
//! per call as its CDR comes out; then the CDR table and the data inventory. Everything is
//! torn down on exit (also on error: the topology and the agent stop on drop).
//!
//! The CDRs are read from the agent's JSON lines on stdout: this build's agent refuses
//! `--server` (CDR streaming to the central collector is not built yet), so the demo does not
//! start `collector server` nor query it with `collector cdrs`. When streaming lands, the
//! agent gets `--server http://127.0.0.1:PORT` (a server in the SBC namespace) and the table
//! comes from `collector cdrs --server ... -o table`.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use collector_tests::{
    collector_bin,
    sbc::{CallOptions, SbcMode, Scenario, Topology},
};
use serde_json::Value;

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

/// `collector agent` in the SBC namespace, its stdout read line by line on a thread that
/// prints each CDR as it arrives and keeps it.
struct LiveAgent {
    child: Child,
    cdrs: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl LiveAgent {
    fn start(ns: &str, ifaces: &[&str]) -> Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(collector_bin())
            .arg("agent");
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        cmd.env("COLLECTOR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // The agent says once that its pseudonymization key is ephemeral; not demo output.
            .stderr(Stdio::null());
        let mut child = cmd.spawn().context("starting the collector agent")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let cdrs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let keep = Arc::clone(&cdrs);
        let reader = std::thread::spawn(move || {
            let t0 = Instant::now();
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v.get("ready").is_some() {
                    let _ = ready_tx.send(v);
                } else if v.get("call_id").is_some() {
                    let mut all = keep.lock().unwrap_or_else(|p| p.into_inner());
                    all.push(v);
                    if let Some(c) = all.last() {
                        println!(
                            "  [{:>5.1}s] CDR #{:<2} {}",
                            t0.elapsed().as_secs_f64(),
                            all.len(),
                            live_line(c)
                        );
                    }
                }
            }
        });
        let mut agent = Self {
            child,
            cdrs,
            reader: Some(reader),
        };
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(ready) => {
                let n = ready
                    .get("attachments")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                println!(
                    "agent ready: {n} attachments (XDP ingress + TC egress on both interfaces)"
                );
                Ok(agent)
            }
            Err(_) => {
                let status = agent.child.try_wait().ok().flatten();
                bail!("the agent did not become ready within 20 s (exit: {status:?})")
            }
        }
    }

    /// SIGTERM (the agent closes every call and prints what is left), bounded wait, then
    /// every CDR seen.
    fn stop(mut self) -> Result<Vec<Value>> {
        // SAFETY: kill on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the agent did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let all = self.cdrs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(all)
    }
}

impl Drop for LiveAgent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill on the pid of our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn disposition(c: &Value) -> &str {
    s(c, "disposition")
        .trim_start_matches("DISPOSITION_")
        .trim_start_matches("UNSPECIFIED")
}

/// The media legs of one direction of a call: on an SBC each direction crosses two
/// interfaces (PBX leg, carrier leg), so there are usually two.
fn legs<'a>(c: &'a Value, dir: &str) -> Vec<&'a Value> {
    c.get("media")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|l| s(l, "direction") == dir)
        .collect()
}

const A_TO_B: &str = "MEDIA_DIRECTION_CALLER_TO_CALLEE";
const B_TO_A: &str = "MEDIA_DIRECTION_CALLEE_TO_CALLER";

/// The worst leg of a direction (most lost, then highest jitter): what a listener hears.
fn worst<'a>(c: &'a Value, dir: &str) -> Option<&'a Value> {
    legs(c, dir).into_iter().max_by(|a, b| {
        let la = a.get("lost").and_then(Value::as_i64).unwrap_or(0);
        let lb = b.get("lost").and_then(Value::as_i64).unwrap_or(0);
        la.cmp(&lb)
            .then(f(a, "mean_jitter_ms").total_cmp(&f(b, "mean_jitter_ms")))
    })
}

fn live_line(c: &Value) -> String {
    let q = |dir| {
        worst(c, dir).map_or("-".to_owned(), |l| {
            format!(
                "{}pk/{}lost/{:.1}ms/MOS {:.2}",
                u(l, "packets"),
                l.get("lost").and_then(Value::as_i64).unwrap_or(0),
                f(l, "mean_jitter_ms"),
                f(l, "mos")
            )
        })
    };
    format!(
        "{:<9} {} {:>6} ms  caller->callee {}  callee->caller {}",
        disposition(c),
        u(c, "final_code"),
        u(c, "duration_ms"),
        q(A_TO_B),
        q(B_TO_A)
    )
}

/// The legs (CDRs) grouped into calls by correlation id, in the order the calls began: one
/// row per call (what the caller experienced: the first leg's disposition and times), then
/// one line per leg with its media both ways.
fn calls(cdrs: &[Value]) -> Vec<Vec<&Value>> {
    let mut calls: Vec<Vec<&Value>> = Vec::new();
    for c in cdrs {
        let id = s(c, "correlation_id");
        match calls
            .iter_mut()
            .find(|legs| !id.is_empty() && s(legs[0], "correlation_id") == id)
        {
            Some(legs) => legs.push(c),
            None => calls.push(vec![c]),
        }
    }
    for legs in &mut calls {
        legs.sort_by_key(|c| u(c, "start_time_ms"));
    }
    calls.sort_by_key(|legs| u(legs[0], "start_time_ms"));
    calls
}

fn table(cdrs: &[Value]) -> usize {
    let calls = calls(cdrs);
    println!(
        "{:>2} {:<11} {:>4} {:>5} {:>6} {:>6} {:<5} {:<10} | {:<24} | {:<24}",
        "#",
        "DISPOSITION",
        "CODE",
        "PDD",
        "DUR",
        "BILL",
        "CODEC",
        "LINKED BY",
        "CALLER->CALLEE",
        "CALLEE->CALLER"
    );
    for (i, legs) in calls.iter().enumerate() {
        let c = legs[0];
        let per = |leg: &Value, dir| {
            let l = self::legs(leg, dir);
            if l.is_empty() {
                return "-".to_owned();
            }
            l.iter()
                .map(|l| {
                    format!(
                        "{}/{}/{:.1}/{:.2}",
                        u(l, "packets"),
                        l.get("lost").and_then(Value::as_i64).unwrap_or(0),
                        f(l, "mean_jitter_ms"),
                        f(l, "mos")
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let codec = c
            .get("codecs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("-");
        let method = match s(c, "correlation_method") {
            "" => "none",
            m => m,
        };
        println!(
            "{:>2} {:<11} {:>4} {:>5} {:>6} {:>6} {:<5} {:<10} | {} leg(s)",
            i + 1,
            disposition(c),
            u(c, "final_code"),
            u(c, "post_dial_delay_ms"),
            u(c, "duration_ms"),
            u(c, "billable_ms"),
            codec,
            method,
            legs.len()
        );
        for (n, leg) in legs.iter().enumerate() {
            let side = if n == 0 { "ingress leg" } else { "egress leg" };
            println!(
                "   {:<11} {:>4} {:>5} {:>6} {:>6} {:<16} | {:<24} | {:<24}",
                side,
                u(leg, "final_code"),
                u(leg, "post_dial_delay_ms"),
                u(leg, "duration_ms"),
                u(leg, "billable_ms"),
                "",
                per(leg, A_TO_B),
                per(leg, B_TO_A)
            );
        }
    }
    calls.len()
}

/// `collector inventory`: its summary lines and how many fields each protection covers.
fn inventory() -> Result<()> {
    let out = Command::new(collector_bin())
        .arg("inventory")
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
    let t0 = Instant::now();
    println!("== topology: carrier --- SBC (Kamailio + rtpengine, topology hiding) --- PBX, in network namespaces");
    // Topology hiding: each leg has its own Call-ID, so the agent writes one CDR per leg with
    // that leg's media; the agent links the two legs of a call (correlation id) and the
    // table shows one row per call.
    let topo = Topology::up(SbcMode::TopologyHiding)?;
    let [a, b] = topo.sbc_ifaces();
    println!(
        "SBC up in {:.1}s: interfaces {a} (carrier side), {b} (PBX side)",
        t0.elapsed().as_secs_f64()
    );
    let agent = LiveAgent::start(&topo.sbc.name, &[a, b])?;

    println!("\n== calls (sipp both ends, G.711 A-law audio both ways); live CDRs as calls end");
    let mut placed = 0;
    for (label, scenario, n, impaired) in PLAN {
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
    // In-dialog retransmission timers of the last call, then stop: the agent closes and
    // prints whatever call is still open.
    std::thread::sleep(Duration::from_millis(500));
    let cdrs = agent.stop()?;

    println!(
        "\n== calls ({} CDRs, one per leg, grouped by correlation id; from the agent's JSON lines, identifiers pseudonymized)",
        cdrs.len()
    );
    println!("   PDD/DUR/BILL in ms; media per leg: packets/lost/mean jitter ms/MOS");
    let rows = table(&cdrs);
    println!("   {rows} calls for {placed} placed");

    println!("\n== data inventory (collector inventory)");
    inventory()?;
    drop(topo);
    println!(
        "\n== torn down; demo took {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
