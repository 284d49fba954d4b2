//! Live inspection on a secured collector (issue #19, "Must show"): calls of each outcome
//! from known caller numbers go through the SBC topology, the real agent streams their
//! events to `collector server` over TLS with an ingest token, and the operator's verbs read
//! them back through the collector's relay with a read token and the CA:
//! - `collector flows` (the relay's history) returns exactly the expected events for each
//!   filter: `--state`, `--disposition`, `--number` (hashed on the client), `--mos-below`,
//!   `--type sip-message`;
//! - `collector top`, run in tmux, lists the active calls and draws the selected call's
//!   ladder (INVITE, 180, 200, ACK, BYE), read from the screen with `capture-pane`.
//!
//! The expectations come from what the test placed (which calls, from which numbers, with
//! which outcomes and which impairment, per sipp's own statistics), never from the
//! collector's output. The pseudonym of each number comes from `collector pseudonym` with
//! the agent's key file and scope.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{
    collections::{BTreeMap, BTreeSet},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use collector_tests::{
    collector_bin,
    deploy::{collector_in, Options, SecuredCollector, Token},
    sbc::{CallOptions, SbcMode, Scenario, Topology},
    unique, Agent,
};
use serde_json::Value;

/// The collector's port on the SBC namespace's loopback.
const PORT: u16 = 50051;
/// The agent's id.
const AGENT_ID: &str = "sbc-live-1";

/// Caller A: two clean answered calls.
const A: &str = "+4930111001";
/// Caller B: one busy and one cancelled call.
const B: &str = "+4930222002";
/// Caller C: one answered call with loss on the PBX's media.
const C: &str = "+4930333003";

/// Loss on the PBX's media of the impaired call: large enough that its MOS falls well
/// under [`MOS_BELOW`] within its first second (G.711 without loss scores about 4.4).
const LOSS: f64 = 0.10;
/// The `--mos-below` threshold.
const MOS_BELOW: f64 = 4.0;

/// What the test placed: caller, outcome, calls, impaired.
const PLAN: [(&str, Scenario, u32, bool); 4] = [
    (A, Scenario::Answered, 2, false),
    (B, Scenario::Busy, 1, false),
    (B, Scenario::Cancelled, 1, false),
    (C, Scenario::Answered, 1, true),
];

/// The deployment: topology, secured collector, agent on the SBC's two interfaces.
struct Deployment {
    // Drop order: the agent, then the collector, then the namespaces.
    agent: Option<Agent>,
    collector: SecuredCollector,
    topo: Topology,
}

impl Deployment {
    fn up() -> Result<Self> {
        // Proxy mode: one Call-ID per call, so a call is one call id in the events.
        let topo = Topology::up(SbcMode::Proxy)?;
        let ns = topo.sbc.name.clone();
        let opts = Options {
            agent_id: AGENT_ID.to_owned(),
            scope: "live-view-test".to_owned(),
            port: PORT,
            dir_prefix: unique("live"),
        };
        let collector = SecuredCollector::start(&ns, opts, &|| Ok(()))?;
        let args = collector.agent_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start(&ns, &topo.sbc_ifaces(), &args)?;
        Ok(Self {
            agent: Some(agent),
            collector,
            topo,
        })
    }

    /// `collector flows ARGS -o json` in the SBC namespace with the read token and the CA;
    /// one JSON object per event.
    fn flows(&self, args: &[&str]) -> Result<Vec<Value>> {
        let mut cmd = collector_in(&self.topo.sbc.name);
        cmd.arg("flows")
            .args(self.collector.client_args(Token::Read))
            .args(["--last", "10000", "-o", "json"])
            .args(args)
            .env("COLLECTOR_LOG", "warn")
            .stdin(Stdio::null());
        let out = output_within(cmd, Duration::from_secs(15))?;
        ensure!(
            out.status.success(),
            "collector flows {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
            .collect()
    }

    /// The active pseudonym of `number` under the agent's key file and scope.
    fn pseudonym(&self, number: &str) -> Result<String> {
        let out = Command::new(collector_bin())
            .arg("pseudonym")
            .arg(number)
            .arg("--config")
            .arg(self.collector.path("agent.toml"))
            .stdin(Stdio::null())
            .output()?;
        ensure!(out.status.success(), "collector pseudonym failed");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .next()
            .map(str::to_owned)
            .context("collector pseudonym printed nothing")
    }
}

/// Runs `cmd` and waits at most `within` for it (killed after that).
fn output_within(mut cmd: Command, within: Duration) -> Result<std::process::Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting collector")?;
    let deadline = Instant::now() + within;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.wait_with_output()?)
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_str()
        .unwrap_or_default()
}

fn call_id(e: &Value) -> &str {
    s(e, &["call_id"])
}

/// The event's kind: the key of its oneof (`call_state`, `media_stats`, ...).
fn kind(e: &Value) -> &'static str {
    [
        "call_state",
        "media_stats",
        "sip_message",
        "alert",
        "registration",
        "lost_events",
    ]
    .into_iter()
    .find(|k| e.get(*k).is_some())
    .unwrap_or("?")
}

/// The MOS values an event reports: a media interval's, or an ended call's CDR legs.
fn mos_values(e: &Value) -> Vec<f64> {
    let leg_mos = |l: &Value| l["mos"].as_f64().unwrap_or(0.0);
    match kind(e) {
        "media_stats" => vec![leg_mos(&e["media_stats"]["leg"])],
        "call_state" => e["call_state"]["cdr"]["media"]
            .as_array()
            .map(|m| m.iter().map(leg_mos).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The set of call ids of `events`.
fn ids(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(|e| call_id(e).to_owned()).collect()
}

#[test]
fn flows_filters_on_a_secured_collector() -> Result<()> {
    let t0 = Instant::now();
    let mut d = Deployment::up()?;

    // The calls, one sipp run per line of the plan; sipp's statistics are the reference.
    let mut runs = Vec::new();
    for (caller, scenario, n, impaired) in PLAN {
        let o = CallOptions {
            duration: Duration::from_millis(2500),
            ring: Duration::from_millis(400),
            loss: if impaired { LOSS } else { 0.0 },
            caller: caller.to_owned(),
            ..CallOptions::default()
        };
        let r = d
            .topo
            .run_calls(scenario, n, &o)
            .with_context(|| d.topo.diagnostics())?;
        r.check_all_ok()?;
        runs.push(r);
    }
    let placed: u32 = PLAN.iter().map(|p| p.2).sum();

    // Every call ended: the relay has their last events once it has one `ended` per call
    // (bounded poll: the agent's forwarder batches).
    let deadline = Instant::now() + Duration::from_secs(15);
    let ended = loop {
        let ended = d.flows(&["--state", "ended"])?;
        if ended.len() >= placed as usize || Instant::now() > deadline {
            break ended;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // The agent stops cleanly (its spool shipped to the collector).
    if let Some(agent) = d.agent.take() {
        agent.stop()?;
    }

    let all = d.flows(&[])?;
    let pseudonym: BTreeMap<&str, String> = [A, B, C]
        .into_iter()
        .map(|n| Ok((n, d.pseudonym(n)?)))
        .collect::<Result<_>>()?;
    // No clear number crossed: the history does not hold any of them.
    let history = serde_json::to_string(&all)?;
    for n in [A, B, C] {
        ensure!(
            !history.contains(n.trim_start_matches('+')),
            "number {n} in the clear in the relay's history"
        );
    }

    // --state ended: one event per call placed, each from its caller with its outcome.
    let mut want: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for (caller, scenario, n, _) in PLAN {
        *want
            .entry((pseudonym[caller].clone(), scenario.disposition()))
            .or_default() += n as usize;
    }
    let mut got: BTreeMap<(String, &str), usize> = BTreeMap::new();
    for e in &ended {
        ensure!(
            s(e, &["call_state", "state"]) == "CALL_STATE_KIND_ENDED",
            "--state ended returned {e}"
        );
        let disp = s(e, &["call_state", "disposition"]);
        *got.entry((s(e, &["call_state", "caller", "user"]).to_owned(), disp))
            .or_default() += 1;
    }
    ensure!(got == want, "--state ended: {got:?}, placed {want:?}");
    ensure!(ids(&ended).len() == placed as usize, "one call id per call");
    // Which call id is whose, as placed (call ids are pseudonyms the test cannot compute).
    let calls_of = |number: &str| -> BTreeSet<String> {
        ended
            .iter()
            .filter(|e| s(e, &["call_state", "caller", "user"]) == pseudonym[number])
            .map(|e| call_id(e).to_owned())
            .collect()
    };
    let answered_of = |number: &str| -> BTreeSet<String> {
        ended
            .iter()
            .filter(|e| {
                s(e, &["call_state", "caller", "user"]) == pseudonym[number]
                    && s(e, &["call_state", "disposition"]) == "DISPOSITION_ANSWERED"
            })
            .map(|e| call_id(e).to_owned())
            .collect()
    };

    // --state answered: one per answered call (A's two and C's one), nothing else.
    let answered = d.flows(&["--state", "answered"])?;
    ensure!(
        answered
            .iter()
            .all(|e| s(e, &["call_state", "state"]) == "CALL_STATE_KIND_ANSWERED"),
        "--state answered: {answered:?}"
    );
    let want_answered: BTreeSet<String> = answered_of(A).union(&answered_of(C)).cloned().collect();
    ensure!(
        answered.len() == 3 && ids(&answered) == want_answered,
        "--state answered returned {} events for {:?}; placed 3 answered calls {:?}",
        answered.len(),
        ids(&answered),
        want_answered
    );

    // --disposition: only the ended events of the calls with that outcome.
    let got = d.flows(&["--disposition", "answered"])?;
    ensure!(
        got.len() == 3
            && ids(&got) == want_answered
            && got.iter().all(|e| {
                s(e, &["call_state", "state"]) == "CALL_STATE_KIND_ENDED"
                    && s(e, &["call_state", "disposition"]) == "DISPOSITION_ANSWERED"
            }),
        "--disposition answered: {got:?}; placed 3 answered calls {want_answered:?}"
    );
    for (flag, disp) in [
        ("busy", "DISPOSITION_BUSY"),
        ("cancelled", "DISPOSITION_CANCELLED"),
    ] {
        let got = d.flows(&["--disposition", flag])?;
        ensure!(
            got.len() == 1
                && s(&got[0], &["call_state", "disposition"]) == disp
                && s(&got[0], &["call_state", "caller", "user"]) == pseudonym[B],
            "--disposition {flag}: placed one such call, from {B}; got {got:?}"
        );
    }

    // --number: hashed by flows under the key file; only that caller's calls, all of them.
    for number in [A, B, C] {
        let got = d.flows(&[
            "--number",
            number,
            "--config",
            &d.collector.path("agent.toml").display().to_string(),
        ])?;
        let mine = calls_of(number);
        ensure!(
            ids(&got) == mine,
            "--number {number}: calls {:?}, placed {mine:?}",
            ids(&got)
        );
        // Every event of those calls in the history, of every kind, and only those.
        let want: Vec<&Value> = all.iter().filter(|e| mine.contains(call_id(e))).collect();
        ensure!(
            got.iter().collect::<Vec<_>>() == want,
            "--number {number}: {} events, the history holds {} for its calls",
            got.len(),
            want.len()
        );
        let kinds: BTreeSet<&str> = got.iter().map(kind).collect();
        ensure!(
            kinds.contains("call_state") && kinds.contains("sip_message"),
            "--number {number}: kinds {kinds:?}"
        );
    }

    // --mos-below: only the impaired call's measurements under the threshold.
    let low = d.flows(&["--mos-below", &MOS_BELOW.to_string()])?;
    ensure!(
        ids(&low) == answered_of(C),
        "--mos-below {MOS_BELOW}: calls {:?}; only C's call {:?} had loss",
        ids(&low),
        answered_of(C)
    );
    for e in &low {
        ensure!(
            mos_values(e).iter().any(|m| *m > 0.0 && *m < MOS_BELOW),
            "--mos-below {MOS_BELOW} returned {e}"
        );
    }
    let want_low: Vec<&Value> = all
        .iter()
        .filter(|e| mos_values(e).iter().any(|m| *m > 0.0 && *m < MOS_BELOW))
        .collect();
    ensure!(
        low.iter().collect::<Vec<_>>() == want_low,
        "--mos-below: {} events, {} in the history under the threshold",
        low.len(),
        want_low.len()
    );

    // --type sip-message: one event per SIP message at the SBC's interfaces. Every message
    // a sipp sent or received crossed exactly one of them once (sipp talks only to
    // Kamailio), so per method or status the events are what both sipps counted.
    let sip = d.flows(&["--type", "sip-message"])?;
    ensure!(sip.iter().all(|e| kind(e) == "sip_message"), "{sip:?}");
    let mut want_msgs: BTreeMap<String, u64> = BTreeMap::new();
    for r in &runs {
        ensure!(
            r.uac.retransmissions == 0 && r.uas.retransmissions == 0,
            "sipp retransmitted in {}: the message counts are not exact",
            r.dir.display()
        );
        for side in [&r.uac, &r.uas] {
            for (key, n) in &side.messages {
                // `STEP_NAME_Sent` or `STEP_NAME_Recv` (other counters are not messages).
                let name = key.split_once('_').and_then(|(_, rest)| {
                    rest.strip_suffix("_Sent")
                        .or_else(|| rest.strip_suffix("_Recv"))
                });
                if let Some(name) = name.filter(|_| *n > 0) {
                    *want_msgs.entry(name.to_owned()).or_default() += n;
                }
            }
        }
    }
    let mut got_msgs: BTreeMap<String, u64> = BTreeMap::new();
    for e in &sip {
        *got_msgs
            .entry(s(e, &["sip_message", "method_or_status"]).to_owned())
            .or_default() += 1;
    }
    ensure!(
        got_msgs == want_msgs,
        "--type sip-message per method/status: {got_msgs:?}; sipp counted {want_msgs:?}"
    );
    // Each answered call's ladder: INVITE, 180, 200, ACK, BYE in that order.
    for id in &want_answered {
        let ladder: Vec<&str> = sip
            .iter()
            .filter(|e| call_id(e) == id)
            .map(|e| s(e, &["sip_message", "method_or_status"]))
            .collect();
        let mut want = ["INVITE", "180", "200", "ACK", "BYE"]
            .into_iter()
            .peekable();
        for m in &ladder {
            if want.peek() == Some(m) {
                want.next();
            }
        }
        ensure!(want.peek().is_none(), "ladder of {id}: {ladder:?}");
    }
    eprintln!(
        "flows filters checked in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A tmux server of its own (`tmux -L NAME`), killed on drop with whatever runs in it.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `argv` in a detached 200x50 session.
    fn start(argv: &[String]) -> Result<Self> {
        let t = Self {
            socket: unique("tmux"),
        };
        let out = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "50",
            ])
            .arg("--")
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .context("running tmux")?;
        ensure!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(t)
    }

    /// The screen, line by line.
    fn screen(&self) -> Result<Vec<String>> {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "capture-pane", "-p"])
            .output()?;
        ensure!(
            out.status.success(),
            "tmux capture-pane: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Polls the screen every 100 ms until `want` holds, for at most `within`; on timeout the
    /// error shows the last screen.
    fn wait_for(
        &self,
        what: &str,
        within: Duration,
        want: impl Fn(&[String]) -> bool,
    ) -> Result<Vec<String>> {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen()?;
            if want(&screen) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not on screen within {within:?}:\n{}",
                    screen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the call list shows exactly one row for each of `callers`, in `state`.
fn listed_as(screen: &[String], callers: &[String], state: &str) -> bool {
    callers.iter().all(|c| {
        let rows: Vec<&String> = screen
            .iter()
            .take_while(|l| !l.contains("SIP ladder"))
            .filter(|l| l.contains(c.as_str()))
            .collect();
        rows.len() == 1 && rows[0].contains(state)
    })
}

/// The labels of the ladder's arrows, top to bottom: each message line starts with its time
/// offset (`+0.040`), the label is the word drawn on the arrow.
fn ladder(screen: &[String]) -> Vec<String> {
    screen
        .iter()
        .skip_while(|l| !l.contains("SIP ladder"))
        .skip(1)
        .filter_map(|l| {
            let l = l.trim_start_matches(|c: char| c == '│' || c.is_whitespace());
            let rest = l.strip_prefix('+')?;
            let (offset, arrow) = rest.split_once(char::is_whitespace)?;
            if !offset.contains('.') {
                return None;
            }
            arrow
                .split(|c: char| !c.is_ascii_alphanumeric())
                .find(|w| !w.is_empty() && w != &"SDP")
                .map(str::to_owned)
        })
        .collect()
}

/// Whether `want` occurs in `seen` in order (other messages may come between).
fn in_order(seen: &[String], want: &[&str]) -> bool {
    let mut want = want.iter().peekable();
    for m in seen {
        if want.peek().is_some_and(|w| *w == m) {
            want.next();
        }
    }
    want.peek().is_none()
}

#[test]
fn top_lists_calls_and_draws_the_ladder() -> Result<()> {
    let t0 = Instant::now();
    let d = Deployment::up()?;
    // sipp numbers the calls of a run from 1: the default caller `carrier[call_number]`
    // makes two calls from two callers.
    let callers = [d.pseudonym("carrier1")?, d.pseudonym("carrier2")?];
    let mut argv: Vec<String> = [
        "ip",
        "netns",
        "exec",
        &d.topo.sbc.name,
        &collector_bin().display().to_string(),
        "top",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    argv.extend(d.collector.client_args(Token::Read));
    let tmux = Tmux::start(&argv)?;

    let o = CallOptions {
        duration: Duration::from_secs(5),
        ring: Duration::from_millis(300),
        ..CallOptions::default()
    };
    let (run, during) = std::thread::scope(|scope| -> Result<_> {
        let calls = scope.spawn(|| d.topo.run_calls(Scenario::Answered, 2, &o));
        // While the calls are up: both listed as answered, the selected one's ladder so far.
        let during = tmux.wait_for(
            "two answered calls and the ladder up to the ACK",
            Duration::from_secs(15),
            |screen| {
                listed_as(screen, &callers, "answered")
                    && in_order(&ladder(screen), &["INVITE", "180", "200", "ACK"])
            },
        );
        let run = calls
            .join()
            .map_err(|_| anyhow::anyhow!("the sipp thread panicked"))?;
        Ok((run, during))
    })?;
    let run = run.with_context(|| d.topo.diagnostics())?;
    run.check_all_ok()?;
    let during = during?;
    ensure!(
        during.iter().any(|l| l.contains("calls: 2")),
        "the list's title counts the two calls:\n{}",
        during.join("\n")
    );
    // After the BYEs: both calls shown as ended (ended calls linger on screen), and the
    // selected call's ladder is complete.
    tmux.wait_for(
        "both calls ended and the ladder with the BYE",
        Duration::from_secs(8),
        |screen| {
            listed_as(screen, &callers, "ended")
                && in_order(&ladder(screen), &["INVITE", "180", "200", "ACK", "BYE"])
        },
    )?;
    eprintln!("top checked in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}
