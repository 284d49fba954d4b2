//! `cargo xtask soak --minutes N`: the attached agent under a steady load for N minutes (1 to
//! 240), watched for growth. The SBC topology (Kamailio + rtpengine, topology hiding) carries
//! a steady stream of answered calls with G.711 audio both ways (sipp at both ends, 3 new
//! calls a second lasting 10 s each, about 30 at once), while the carrier sends
//! malformed and useless SIP every second (requests without a Call-ID, bytes that are not
//! SIP, CRLF keepalives, and INVITEs to a port where nobody answers, which leave half-open
//! dialogs for the agent to expire). The agent streams to a collector with TLS and tokens
//! through its spool, as in production.
//!
//! Every minute it prints the agent's resident memory (all of it, and the anonymous part:
//! heap and stacks), its CPU, the events held in its watch history ring, its open dialogs and media
//! map entries, the spool's bytes and unacknowledged CDRs, and the CDRs produced and
//! acknowledged (from the agent's own metrics and /proc). The closing lines say, for each
//! gauge, whether it stayed flat after the first minute (warm-up): the mean of the later half
//! of the run is within 5 % (plus a small absolute slack) of the mean of the earlier half.
//! Memory is judged from the minute the watch history ring is full: it keeps the last
//! `--watch-history` events (10,000 by default) for `collector flows --last`, and filling it
//! is growth by design, up to that bound. Everything is torn down on exit, on error and on
//! Ctrl-C.
use std::{
    net::UdpSocket,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use collector_tests::{
    deploy::{Options, SecuredCollector},
    sbc::{CallOptions, SbcMode, Scenario, Topology, SBC_CARRIER_IP},
    scrape::{scrape, sum},
    Agent, Netns,
};

/// The agent's metrics, on the SBC namespace's loopback.
const METRICS: &str = "127.0.0.1:9466";
/// Set by SIGINT/SIGTERM, and when the run is over: the traffic stops.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn check_stopped() -> Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted: tearing down");
    }
    Ok(())
}

/// One minute's reading.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kib: u64,
    rss_anon_kib: u64,
    history: u64,
    cpu_pct: f64,
    dialogs: u64,
    media_entries: u64,
    spool_bytes: u64,
    spool_unacked: u64,
    produced: u64,
    acked: u64,
    ring_lost: u64,
    parse_errors: u64,
}

/// A gauge judged for flatness: its name, how to read it, its absolute slack.
type Gauge = (&'static str, fn(&Sample) -> u64, u64);

/// The agent's CPU time so far (user + system), its resident memory and the anonymous
/// part of it (heap and stacks, without the mapped binary), KiB.
fn proc_stat(pid: u32) -> Result<(Duration, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields count after it.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat(5); after the name, indexes 11 and 12.
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let cpu = Duration::from_millis((ticks(11) + ticks(12)) * 1000 / hz);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/{pid}/status"))
    };
    Ok((cpu, kib("VmRSS:")?, kib("RssAnon:")?))
}

fn sample(
    ns: &Netns,
    pid: u32,
    cpu_before: Duration,
    wall: Duration,
) -> Result<(Sample, Duration)> {
    let page = scrape(ns, METRICS)?;
    let metric = |name: &str| sum(&page, name, "") as u64;
    let labelled = |name: &str, label: &str| sum(&page, name, label) as u64;
    let (cpu, rss_kib, rss_anon_kib) = proc_stat(pid)?;
    let used = cpu.saturating_sub(cpu_before);
    Ok((
        Sample {
            rss_kib,
            rss_anon_kib,
            history: metric("collector_watch_history_events"),
            cpu_pct: used.as_secs_f64() / wall.as_secs_f64().max(1e-3) * 100.0,
            dialogs: metric("collector_active_dialogs"),
            media_entries: metric("collector_active_media_streams"),
            spool_bytes: metric("collector_spool_bytes"),
            spool_unacked: metric("collector_spool_unacked_cdrs"),
            produced: labelled("collector_cdrs_total", "stage=\"produced\""),
            acked: labelled("collector_cdrs_total", "stage=\"acknowledged\""),
            ring_lost: metric("collector_ring_lost_total"),
            parse_errors: metric("collector_sip_parse_errors_total"),
        },
        cpu,
    ))
}

/// Whether `values` (the samples after warm-up) stayed flat: the later half's mean is
/// within 5 % plus `slack` of the earlier half's mean (a steady climb fails it, a single
/// peak does not). Returns the two means.
fn flat(values: &[u64], slack: u64) -> Option<(bool, u64, u64)> {
    if values.len() < 2 {
        return None;
    }
    let (a, b) = values.split_at(values.len() / 2);
    let mean = |v: &[u64]| v.iter().sum::<u64>() / (v.len() as u64).max(1);
    let (first, later) = (mean(a), mean(b));
    Some((later <= first + first / 20 + slack, first, later))
}

/// Malformed and useless SIP from the carrier, every second until stopped: counts sent.
fn junk(topo: &Topology) -> Result<u64> {
    topo.carrier.run(|| {
        let sock = UdpSocket::bind("198.18.10.2:0").context("binding in the carrier")?;
        let sip = format!("{SBC_CARRIER_IP}:5060");
        // A SIP port the agent watches where nothing listens: INVITEs left half open.
        let nobody = format!("{SBC_CARRIER_IP}:5080");
        let mut sent = 0u64;
        let mut k = 0u64;
        while !STOP.load(Ordering::SeqCst) {
            for i in 0..20 {
                let no_call_id = format!(
                    "OPTIONS sip:x@{SBC_CARRIER_IP} SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.10.2;branch=z9hG4bKj{k}-{i}\r\nFrom: <sip:j@198.18.10.2>;tag=j\r\nTo: <sip:x@{SBC_CARRIER_IP}>\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                );
                sock.send_to(no_call_id.as_bytes(), &sip)?;
                sock.send_to(b"\x16\x03\x01 definitely not SIP \xff\xfe", &sip)?;
                sent += 2;
            }
            for _ in 0..50 {
                sock.send_to(b"\r\n\r\n", &sip)?;
                sent += 1;
            }
            for i in 0..5 {
                let invite = format!(
                    "INVITE sip:soak@{SBC_CARRIER_IP}:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.10.2;branch=z9hG4bKh{k}-{i}\r\nFrom: <sip:+4930999{i}@198.18.10.2>;tag=h{k}\r\nTo: <sip:soak@{SBC_CARRIER_IP}>\r\nCall-ID: half-open-{k}-{i}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
                );
                sock.send_to(invite.as_bytes(), &nobody)?;
                sent += 1;
            }
            k += 1;
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(sent)
    })
}

/// Answered calls at a steady 3 a second until stopped, in sipp runs of up to 9 minutes:
/// (calls placed, calls sipp counted successful).
fn calls(topo: &Topology, minutes: u64) -> Result<(u64, u64)> {
    let (mut placed, mut ok) = (0u64, 0u64);
    let until = Instant::now() + Duration::from_secs(60 * minutes);
    let mut run = 0u64;
    while !STOP.load(Ordering::SeqCst) {
        let left = until.saturating_duration_since(Instant::now()).as_secs();
        let chunk = left.clamp(30, 540);
        let o = CallOptions {
            duration: Duration::from_secs(10),
            rate: 3,
            max_concurrent: 60,
            timeout: Duration::from_secs(chunk),
            seed: run,
            ..CallOptions::default()
        };
        let n = u32::try_from(3 * chunk).unwrap_or(u32::MAX);
        let r = topo.run_calls(Scenario::Answered, n, &o)?;
        placed += r.uac.created;
        ok += r.uac.successful;
        run += 1;
    }
    Ok((placed, ok))
}

fn main() -> Result<()> {
    let mut minutes = 10u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--minutes" => {
                minutes = args
                    .next()
                    .context("--minutes needs a value")?
                    .parse()
                    .context("--minutes: a whole number")?;
            }
            other => bail!("unknown argument {other} (usage: soak --minutes N)"),
        }
    }
    ensure!((1..=240).contains(&minutes), "--minutes must be 1 to 240");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the soak creates network namespaces and attaches eBPF programs: run as root");
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }

    let topo = Topology::up(SbcMode::TopologyHiding)?;
    let ns = topo.sbc.name.clone();
    let opts = Options {
        agent_id: "sbc-soak-1".into(),
        scope: "soak".into(),
        port: 50061,
        dir_prefix: "collector-soak".into(),
    };
    let mut server = SecuredCollector::start(&ns, opts, &check_stopped)?;
    let mut agent_args = server.agent_args();
    agent_args.extend(["--metrics-listen".to_owned(), METRICS.to_owned()]);
    let agent_args: Vec<&str> = agent_args.iter().map(String::as_str).collect();
    let agent = Agent::start(&ns, &topo.sbc_ifaces(), &agent_args)?;
    let pid = agent.pid();
    println!(
        "soak: {minutes} min; calls (3/s, 10 s of G.711 each way) and junk SIP \
         (20 no-Call-ID + 20 not-SIP + 50 CRLF + 5 half-open INVITEs a second) through the \
         SBC; agent pid {pid} streaming to {}",
        server.url()
    );
    println!(
        "{:>4} {:>9} {:>9} {:>8} {:>6} {:>8} {:>8} {:>11} {:>7} {:>9} {:>9} {:>9} {:>11}",
        "min",
        "rss_MiB",
        "anon_MiB",
        "history",
        "cpu_%",
        "dialogs",
        "media",
        "spool_KiB",
        "unacked",
        "produced",
        "acked",
        "ring_lost",
        "parse_errs"
    );

    let started = Instant::now();
    let result = std::thread::scope(|s| -> Result<(Vec<Sample>, (u64, u64), u64)> {
        let traffic = s.spawn(|| calls(&topo, minutes));
        let junk = s.spawn(|| junk(&topo));
        let mut samples = Vec::new();
        let mut cpu = proc_stat(pid)?.0;
        let mut last = Instant::now();
        let sampled = (|| -> Result<()> {
            for m in 1..=minutes {
                let due = started + Duration::from_secs(60 * m);
                while Instant::now() < due {
                    check_stopped()?;
                    ensure!(
                        !traffic.is_finished() && !junk.is_finished(),
                        "the traffic stopped early"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                let (x, now_cpu) = sample(&topo.sbc, pid, cpu, last.elapsed())?;
                cpu = now_cpu;
                last = Instant::now();
                println!(
                    "{m:>4} {:>9.1} {:>9.1} {:>8} {:>6.1} {:>8} {:>8} {:>11.1} {:>7} {:>9} {:>9} {:>9} {:>11}",
                    x.rss_kib as f64 / 1024.0,
                    x.rss_anon_kib as f64 / 1024.0,
                    x.history,
                    x.cpu_pct,
                    x.dialogs,
                    x.media_entries,
                    x.spool_bytes as f64 / 1024.0,
                    x.spool_unacked,
                    x.produced,
                    x.acked,
                    x.ring_lost,
                    x.parse_errors
                );
                samples.push(x);
            }
            Ok(())
        })();
        STOP.store(true, Ordering::SeqCst);
        let placed = traffic
            .join()
            .map_err(|_| anyhow::anyhow!("the call thread panicked"))?;
        let junk = junk
            .join()
            .map_err(|_| anyhow::anyhow!("the junk thread panicked"))?;
        sampled?;
        Ok((samples, placed?, junk?))
    });
    let (samples, (placed, ok), junk_sent) = result?;

    // Let the last calls and half-open dialogs end and the spool drain, then read the totals.
    let settle = Instant::now() + Duration::from_secs(120);
    let mut end = *samples.last().context("no sample")?;
    while Instant::now() < settle {
        end = sample(&topo.sbc, pid, Duration::ZERO, Duration::from_secs(1))?.0;
        if end.spool_unacked == 0 && end.dialogs == 0 && end.media_entries == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!(
        "\nsoak: {placed} calls placed, {ok} successful per sipp; {junk_sent} junk datagrams; \
         at the end: {} CDRs produced, {} acknowledged by the collector, {} unacked, {} dialogs \
         open, {} media map entries",
        end.produced, end.acked, end.spool_unacked, end.dialogs, end.media_entries
    );
    let after: Vec<Sample> = samples.iter().skip(1).copied().collect();
    // The watch history ring (the last --watch-history events, for `flows --last`) fills
    // by design until it holds its bound; memory is judged once it is full, from the
    // minute it first held as many events as it ever did (the bound, on any run long
    // enough to fill it).
    let cap = after.iter().map(|s| s.history).max().unwrap_or(0);
    let full_from = after.iter().position(|s| s.history >= cap).unwrap_or(0);
    let memory: Vec<Sample> = after.iter().skip(full_from).copied().collect();
    println!(
        "memory judged from minute {}, when the watch history ring first held {cap} events",
        full_from + 2
    );
    let gauges: [(Gauge, &[Sample]); 6] = [
        (("agent RSS (KiB)", |s| s.rss_kib, 2048), &memory),
        (
            ("agent anonymous RSS (KiB)", |s| s.rss_anon_kib, 2048),
            &memory,
        ),
        (("open dialogs", |s| s.dialogs, 16), &after),
        (("media map entries", |s| s.media_entries, 16), &after),
        // Acknowledged records stay until their 16 MiB segment rolls and goes: a saw tooth
        // up to one segment is flat.
        (("spool bytes", |s| s.spool_bytes, 17 << 20), &after),
        (("unacked CDRs", |s| s.spool_unacked, 50), &after),
    ];
    let mut all_flat = true;
    for ((name, get, slack), judged) in gauges {
        let values: Vec<u64> = judged.iter().map(get).collect();
        match flat(&values, slack) {
            None => println!("{name}: too short to judge (needs 3 minutes or more)"),
            Some((true, a, b)) => {
                println!(
                    "{name}: flat after warm-up (mean {a} in the earlier half, {b} in the later)"
                );
            }
            Some((false, a, b)) => {
                all_flat = false;
                println!("{name}: GROWING after warm-up (mean {a} in the earlier half, {b} in the later)");
            }
        }
    }
    let cpu: Vec<f64> = after.iter().map(|s| s.cpu_pct).collect();
    if !cpu.is_empty() {
        let mean = cpu.iter().sum::<f64>() / cpu.len() as f64;
        let max = cpu.iter().copied().fold(0.0, f64::max);
        println!(
            "agent CPU: mean {mean:.1} % of one core after warm-up, largest minute {max:.1} %"
        );
    }
    drop(agent);
    server.stop()?;
    ensure!(all_flat, "a gauge grew after warm-up");
    ensure!(
        end.dialogs == 0 && end.media_entries == 0,
        "{} dialogs and {} media map entries left 2 minutes after the load",
        end.dialogs,
        end.media_entries
    );
    ensure!(
        end.spool_unacked == 0 && end.acked == end.produced,
        "{} CDRs produced, {} acknowledged, {} waiting in the spool 2 minutes after the load",
        end.produced,
        end.acked,
        end.spool_unacked
    );
    Ok(())
}
