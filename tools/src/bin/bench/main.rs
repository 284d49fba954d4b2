//! `cargo xtask bench` (kernel part): the cost per packet of each datapath path, from the
//! kernel's own BPF run-time statistics, on a veth pair between two namespaces, with the
//! rate our generator achieved. Prints a Markdown table and writes every figure as JSON.
//!
//! Traffic is crafted frames sent with `sendmmsg` on an AF_PACKET socket (no pktgen or netem
//! on this kernel), addressed to a MAC nobody owns so the stack drops them right after the
//! hooks: the figures are the programs' cost, not the stack's. Every run is bounded in
//! packets and in time.
//!
//! `--kernel-only` runs just the kernel rows (under a minute; the whole benchmark takes
//! about 14), `--sip-load-only` and `--media-load-only` just those tables (the media one
//! writes its rows as JSON only when given `--json PATH`).
use std::{
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use collector::capture::{map_addr, Capture, CaptureOptions, XdpModeArg};
use collector_common::{MediaKey, MediaValue};
use collector_tests::{Netns, VethPair};

mod e2e;
mod insns;

const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const SRC: [u8; 4] = [198, 18, 9, 1];
const DST: [u8; 4] = [198, 18, 9, 2];

fn frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42 + payload.len());
    f.extend_from_slice(&MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    ip.extend_from_slice(&SRC);
    ip.extend_from_slice(&DST);
    let mut sum: u32 = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut b = vec![0x80, 8];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    b.extend_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(&[0xd5; 160]);
    b
}

fn sip_600() -> Vec<u8> {
    let head = "INVITE sip:bench@198.18.9.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.9.1;branch=z9hG4bKbench\r\nCall-ID: bench\r\nCSeq: 1 INVITE\r\nContent-Length: ";
    let body = "v".repeat(600 - head.len() - 8);
    format!("{head}{:<4}\r\n\r\n{body}", body.len()).into_bytes()
}

/// Offset of the RTP sequence number in a frame built by [`frame`].
const SEQ_OFF: usize = 14 + 20 + 8 + 2;

/// Sends `frames` round robin out of `ifname` in `ns` for at most `secs` seconds or
/// `max_packets` packets; `bump_seq` rewrites each frame's RTP sequence every round.
fn generate(
    ns: &Netns,
    ifname: &str,
    frames: Vec<Vec<u8>>,
    secs: f64,
    max_packets: u64,
    bump_seq: bool,
) -> Result<(u64, f64)> {
    let ifname = ifname.to_owned();
    ns.run(move || {
        let mut frames = frames;
        const BATCH: usize = 64;
        let mut sock = e2e::PacketSocket::open(&ifname)?;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut next = 0usize;
        let mut round = 0u16;
        while sent < max_packets && start.elapsed().as_secs_f64() < secs {
            let mut idxs = Vec::with_capacity(BATCH);
            for _ in 0..BATCH {
                if next == 0 {
                    round = round.wrapping_add(1);
                }
                if bump_seq {
                    frames[next][SEQ_OFF..SEQ_OFF + 2].copy_from_slice(&round.to_be_bytes());
                }
                idxs.push(next);
                next = (next + 1) % frames.len();
            }
            let batch: Vec<&[u8]> = idxs.iter().map(|&i| frames[i].as_slice()).collect();
            sent += sock.send(&batch)? as u64;
        }
        Ok((sent, start.elapsed().as_secs_f64()))
    })
}

#[derive(Clone, Debug, serde::Serialize)]
struct Figure {
    scenario: String,
    program: &'static str,
    xdp_mode: String,
    /// Median, min and max over the runs, ns per packet.
    ns_per_packet: [f64; 3],
    /// Median packets per second the hook saw.
    rate_pps: f64,
    runs: usize,
    /// Goal on the overhead over the PASS baseline, ns per packet.
    goal_ns: Option<f64>,
    /// The PASS-only program's cost in the same run and mode, ns per packet (median).
    baseline_ns: f64,
    /// Helper calls this path makes (`insns::PATH_HELPERS`, checked against the dump).
    helper_calls: Option<usize>,
}

fn median3(mut v: Vec<f64>) -> [f64; 3] {
    v.sort_by(|a, b| a.total_cmp(b));
    let med = v[v.len() / 2];
    [med, v[0], v[v.len() - 1]]
}

struct Bed {
    pair: VethPair,
    cap: Capture,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Bed {
    fn new(mode: XdpModeArg) -> Result<Self> {
        let pair = VethPair::new(9)?;
        let iface = pair.if_b.clone();
        let mut cap = pair.b.run(move || {
            let mut cap = Capture::load(&CaptureOptions::default())?;
            cap.attach(&iface, mode)?;
            Ok(cap)
        })?;
        // Drain the ring continuously, as the agent does, so the SIP path never sees it full.
        let mut ring = cap.take_ring_raw()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let reader = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                while let Some(r) = ring.next() {
                    std::hint::black_box(&*r);
                }
                // The agent's poll period.
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Ok(Self {
            pair,
            cap,
            stop,
            reader: Some(reader),
        })
    }

    fn stats(&self, prog: &str) -> Result<(u64, u64)> {
        self.cap
            .program_stats()?
            .into_iter()
            .find(|(n, _, _)| *n == prog)
            .map(|(_, t, c)| (t, c))
            .context("program stats")
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    bed: &Bed,
    egress: bool,
    scenario: &str,
    mode: &str,
    frames: &[Vec<u8>],
    bump: bool,
    runs: usize,
    secs: f64,
    goal: Option<f64>,
) -> Result<Figure> {
    let prog = if egress { "sip_tc_egress" } else { "sip_xdp" };
    let (ns, ifn) = if egress {
        (&bed.pair.b, &bed.pair.if_b)
    } else {
        (&bed.pair.a, &bed.pair.if_a)
    };
    let mut costs = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..runs {
        let (t0, c0) = bed.stats(prog)?;
        let (_sent, el) = generate(ns, ifn, frames.to_vec(), secs, 5_000_000, bump)?;
        std::thread::sleep(Duration::from_millis(50));
        let (t1, c1) = bed.stats(prog)?;
        let n = c1.saturating_sub(c0);
        if n == 0 {
            bail!("{scenario}: the program ran on no packet (are BPF stats enabled?)");
        }
        costs.push((t1 - t0) as f64 / n as f64);
        rates.push(n as f64 / el);
    }
    let fig = Figure {
        scenario: scenario.to_owned(),
        program: prog,
        xdp_mode: if egress { "-".into() } else { mode.to_owned() },
        ns_per_packet: median3(costs),
        rate_pps: median3(rates)[0],
        runs,
        goal_ns: goal,
        baseline_ns: 0.0,
        helper_calls: insns::path_helpers(prog, scenario).map(<[_]>::len),
    };
    eprintln!(
        "bench: {:<28} {:<14} {:<8} {:>7.1} ns/pkt at {:>9.0} pkt/s",
        fig.scenario, fig.program, fig.xdp_mode, fig.ns_per_packet[0], fig.rate_pps
    );
    Ok(fig)
}

/// The baseline: an XDP program that only returns PASS (`pass_xdp`, in the same object)
/// on the same kind of veth, with the same frames as the no-match path; ns per packet,
/// median over `runs` (min, max).
fn baseline(mode: XdpModeArg, frames: &[Vec<u8>], runs: usize, secs: f64) -> Result<[f64; 3]> {
    use aya::programs::{xdp::XdpMode, Xdp};
    let pair = VethPair::new(10)?;
    let iface = pair.if_b.clone();
    let flags = match mode {
        XdpModeArg::Generic => XdpMode::Skb,
        _ => XdpMode::Driver,
    };
    let ebpf = pair.b.run(move || {
        let mut ebpf = aya::Ebpf::load(collector::capture::EBPF_OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut("pass_xdp")
            .context("no pass_xdp program in the object")?
            .try_into()?;
        prog.load()?;
        prog.attach(&iface, flags)?;
        Ok(ebpf)
    })?;
    // Sent from A: XDP runs on B's receive.
    let b = measure_alone(ebpf, "pass_xdp", &pair.a, &pair.if_a, frames, runs, secs)?;
    eprintln!("bench: baseline (PASS only) {mode:?}: {:.1} ns/pkt", b[0]);
    Ok(b)
}

/// Runs `frames` out of `ifname` in `ns` `runs` times and returns the ns per packet of
/// `prog` in `ebpf` (median, min, max); `ebpf` is dropped (detached and unloaded) before
/// returning, so the next program has the hook to itself.
fn measure_alone(
    ebpf: aya::Ebpf,
    prog: &str,
    ns: &collector_tests::Netns,
    ifname: &str,
    frames: &[Vec<u8>],
    runs: usize,
    secs: f64,
) -> Result<[f64; 3]> {
    let stats = |ebpf: &aya::Ebpf| -> Result<(u64, u64)> {
        let info = ebpf.program(prog).context("program")?.info()?;
        Ok((info.run_time().as_nanos() as u64, info.run_count()))
    };
    let mut costs = Vec::new();
    for _ in 0..runs {
        let (t0, c0) = stats(&ebpf)?;
        generate(ns, ifname, frames.to_vec(), secs, 5_000_000, false)?;
        std::thread::sleep(Duration::from_millis(50));
        let (t1, c1) = stats(&ebpf)?;
        let n = c1.saturating_sub(c0);
        if n == 0 {
            bail!("the baseline {prog} ran on no packet");
        }
        costs.push((t1 - t0) as f64 / n as f64);
    }
    drop(ebpf);
    Ok(median3(costs))
}

/// The TC baseline: a classifier that only returns PIPE (`pass_tc`, in the same object) on
/// the egress of the same kind of veth, with the same frames as the no-match path; ns per
/// packet, median over `runs` (min, max). TC egress runs in the sender's context, one packet
/// at a time between the stack's own work, so its caches are colder than those of XDP's
/// batched receive: its own baseline tells the program's cost from the hook's.
fn baseline_tc(frames: &[Vec<u8>], runs: usize, secs: f64) -> Result<[f64; 3]> {
    use aya::programs::{tc, SchedClassifier, TcAttachType};
    let pair = VethPair::new(11)?;
    let iface = pair.if_a.clone();
    let ebpf = pair.a.run(move || {
        let mut ebpf = aya::Ebpf::load(collector::capture::EBPF_OBJECT)?;
        // A fresh veth has no clsact qdisc: add it (an error here is one attach reports).
        let _ = tc::qdisc_add_clsact(&iface);
        let prog: &mut SchedClassifier = ebpf
            .program_mut("pass_tc")
            .context("no pass_tc program in the object")?
            .try_into()?;
        prog.load()?;
        prog.attach(&iface, TcAttachType::Egress)?;
        Ok(ebpf)
    })?;
    // Sent from A: the classifier runs on A's egress.
    let b = measure_alone(ebpf, "pass_tc", &pair.a, &pair.if_a, frames, runs, secs)?;
    eprintln!("bench: baseline (PIPE only) TC egress: {:.1} ns/pkt", b[0]);
    Ok(b)
}

fn install_streams(bed: &mut Bed, n: usize) -> Result<Vec<Vec<u8>>> {
    let src: IpAddr = IpAddr::from(SRC);
    let dst: IpAddr = IpAddr::from(DST);
    let mut frames = Vec::with_capacity(n);
    for i in 0..n {
        let sport = 10_000 + (i % 25_000) as u16 * 2;
        let dport = 10_000 + (i / 25_000) as u16 * 2;
        let key = MediaKey {
            src: map_addr(src),
            dst: map_addr(dst),
            sport,
            dport,
        };
        bed.cap
            .insert_stream(key, MediaValue::new(i as u64, 8000, 101, 0))?;
        frames.push(frame(sport, dport, &rtp(0, i as u32)));
    }
    Ok(frames)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| "target/bench/kernel.json".into());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark attaches eBPF programs and creates namespaces: run it as root");
    }
    let (runs, secs) = if quick { (3, 0.3) } else { (3, 1.0) };
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF stats")?;
    // `--rates 50000,100000` offers only those rates (profiling one load).
    let load_rates: Vec<u64> = match args.iter().position(|a| a == "--rates") {
        Some(i) => args
            .get(i + 1)
            .context("--rates needs a comma-separated list")?
            .split(',')
            .map(|r| r.parse().context("--rates"))
            .collect::<Result<_>>()?,
        None => vec![20_000, 50_000, 100_000, 150_000, 200_000, 300_000],
    };
    // Frames per second offered to the media runs (SIP and RTP).
    let media_rates = [100_000, 200_000, 300_000, 400_000];
    if args.iter().any(|a| a == "--media-load-only") {
        let rows = media_load(&media_rates)?;
        print_media(&rows);
        // Only where asked: the default path holds the whole benchmark's figures.
        if args.iter().any(|a| a == "--json") {
            write_json(&json_path, &serde_json::json!({ "media_load": rows }))?;
        }
        return Ok(());
    }
    if args.iter().any(|a| a == "--sip-load-only") {
        let rows = e2e::sip_only(&load_rates, if quick { 1.0 } else { 2.0 })?;
        print_load(&rows);
        // `--no-peers`: the agent's rows alone (to compare two builds of it).
        if !args.iter().any(|a| a == "--no-peers") {
            let peers = e2e::peers(&load_rates, if quick { 1.0 } else { 2.0 })?;
            print_peers(&rows, &peers);
        }
        return Ok(());
    }
    let (figs, sizes) = kernel(runs, secs)?;
    let machine = machine();
    if args.iter().any(|a| a == "--kernel-only") {
        print_kernel(&figs, &sizes, &machine, runs, secs);
        write_json(
            &json_path,
            &serde_json::json!({ "machine": machine, "kernel": figs, "programs": sizes }),
        )?;
        return Ok(());
    }
    let user = userspace(runs)?;
    let load = e2e::sip_only(&load_rates, if quick { 1.0 } else { 2.0 })?;
    let peers = e2e::peers(&load_rates, if quick { 1.0 } else { 2.0 })?;
    let media = media_load(&media_rates)?;
    print_kernel(&figs, &sizes, &machine, runs, secs);
    println!("\n## Userspace (one core)\n");
    println!("| what | per second (median) | min–max | goal | met |");
    println!("|---|---:|---:|---:|---|");
    for u in &user {
        let (goal, met) = match u.goal_per_s {
            Some(g) => (
                format!("≥ {g:.0}"),
                if u.per_s[0] >= g { "yes" } else { "**no**" },
            ),
            None => ("–".into(), "–"),
        };
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {} | {} |",
            u.what, u.per_s[0], u.per_s[1], u.per_s[2], goal, met
        );
    }
    print_load(&load);
    print_peers(&load, &peers);
    print_media(&media);
    write_json(
        &json_path,
        &serde_json::json!({ "machine": machine, "kernel": figs, "programs": sizes, "userspace": user, "sip_load": load, "peers": peers, "media_load": media }),
    )?;
    println!("\n(JSON: every figure in `target/bench/kernel.json`.)");
    Ok(())
}

fn write_json(path: &str, v: &serde_json::Value) -> Result<()> {
    if let Some(dir) = std::path::Path::new(path).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(v)?)?;
    Ok(())
}

/// The kernel rows: each path of `sip_xdp` in native and generic XDP mode and of
/// `sip_tc_egress`, each beside the PASS baseline measured in the same mode just before.
fn kernel(runs: usize, secs: f64) -> Result<(Vec<Figure>, Vec<insns::ProgSize>)> {
    let mut figs = Vec::new();
    let mut sizes = Vec::new();
    // Odd ports: the streams installed below take even ones (sport 10,000 + 2i, dport
    // 10,000), and a frame on an announced port is not the cheap path but three hash misses
    // (the TC row, measured after the installs, used to count those).
    let nomatch: Vec<Vec<u8>> = (0..256u16)
        .map(|i| frame(30_001 + 2 * i, 40_001, &[0u8; 172]))
        .collect();
    let sip = vec![frame(5060, 5060, &sip_600())];
    for (mode, m) in [
        ("native", XdpModeArg::Native),
        ("generic", XdpModeArg::Generic),
    ] {
        let base = baseline(m, &nomatch, runs, secs)?;
        let base_tc = if mode == "native" {
            Some(baseline_tc(&nomatch, runs, secs)?)
        } else {
            None
        };
        let first = figs.len();
        let mut bed = Bed::new(m)?;
        if sizes.is_empty() {
            for name in ["sip_xdp", "sip_tc_egress"] {
                let size = insns::program_size(name, &bed.cap.program_info(name)?)?;
                insns::check_table(&size)?;
                sizes.push(size);
            }
        }
        figs.push(measure(
            &bed,
            false,
            "no-match (UDP, other ports)",
            mode,
            &nomatch,
            false,
            runs,
            secs,
            Some(11.0),
        )?);
        figs.push(measure(
            &bed,
            false,
            "SIP copy (600 B) to ring",
            mode,
            &sip,
            false,
            runs,
            secs,
            Some(156.0),
        )?);
        let f1k = install_streams(&mut bed, 1000)?;
        figs.push(measure(
            &bed,
            false,
            "RTP hit, 1,000 streams",
            mode,
            &f1k,
            true,
            runs,
            secs,
            Some(66.0),
        )?);
        let f20k = install_streams(&mut bed, 20_000)?;
        figs.push(measure(
            &bed,
            false,
            "RTP hit, 20,000 streams",
            mode,
            &f20k[1000..],
            true,
            runs,
            secs,
            Some(156.0),
        )?);
        if mode == "native" {
            figs.push(measure(
                &bed,
                true,
                "no-match (UDP, other ports)",
                mode,
                &nomatch,
                false,
                runs,
                secs,
                None,
            )?);
            figs.push(measure(
                &bed,
                true,
                "SIP copy (600 B) to ring",
                mode,
                &sip,
                false,
                runs,
                secs,
                None,
            )?);
            figs.push(measure(
                &bed,
                true,
                "RTP hit, 20,000 streams",
                mode,
                &f20k[1000..],
                true,
                runs,
                secs,
                None,
            )?);
        }
        for f in &mut figs[first..] {
            f.baseline_ns = match base_tc {
                Some(b) if f.program == "sip_tc_egress" => b[0],
                _ => base[0],
            };
        }
        let c = bed.cap.counters()?;
        eprintln!(
            "bench: {mode}: ring_full={} ssrc_overflow={}",
            c["ring_full"], c["ssrc_overflow"]
        );
    }
    Ok((figs, sizes))
}

/// The kernel table (Markdown) and the TC/XDP no-match ratio.
fn print_kernel(figs: &[Figure], sizes: &[insns::ProgSize], machine: &str, runs: usize, secs: f64) {
    println!("\n## Kernel cost per packet (BPF run-time statistics, veth pair)\n");
    println!("Machine: {machine}. Median of {runs} runs of {secs} s (min–max).\n");
    println!("Each figure beside the baseline measured in the same run and XDP mode: `pass_xdp`, a program that only returns PASS (for the TC rows `pass_tc`, a classifier that only returns PIPE, on TC egress). Goals are on the overhead over that baseline; absolute figures drift up to threefold between runs on a shared machine, the overhead and the ratio much less.\n");
    println!(
        "| path | program | XDP mode | ns/packet | min–max | PASS baseline | overhead ns | ratio | rate seen (pkt/s) | helper calls | goal (overhead) | met |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for f in figs {
        let over = f.ns_per_packet[0] - f.baseline_ns;
        let (goal, met) = match f.goal_ns {
            Some(g) => (
                format!("≤ {g:.0}"),
                if over <= g { "yes" } else { "**no**" },
            ),
            None => ("–".into(), "–"),
        };
        println!(
            "| {} | {} | {} | {:.1} | {:.1}–{:.1} | {:.1} | {:.1} | {:.2} | {:.0} | {} | {} | {} |",
            f.scenario,
            f.program,
            f.xdp_mode,
            f.ns_per_packet[0],
            f.ns_per_packet[1],
            f.ns_per_packet[2],
            f.baseline_ns,
            over,
            f.ns_per_packet[0] / f.baseline_ns.max(f64::MIN_POSITIVE),
            f.rate_pps,
            f.helper_calls.map_or("–".into(), |n| n.to_string()),
            goal,
            met
        );
    }
    let no_match = |program: &str| {
        figs.iter().find(|f| {
            f.program == program
                && f.scenario.starts_with("no-match")
                && (f.xdp_mode == "native" || f.xdp_mode == "-")
        })
    };
    if let (Some(tc), Some(xdp)) = (no_match("sip_tc_egress"), no_match("sip_xdp")) {
        let r = tc.ns_per_packet[0] / xdp.ns_per_packet[0];
        let over = |f: &Figure| f.ns_per_packet[0] - f.baseline_ns;
        println!(
            "\nTC egress no-match against XDP's (native): {r:.2} times (goal ≤ 1.5: {}). Over each hook's own do-nothing baseline: TC {:.1} ns, XDP {:.1} ns.",
            if r <= 1.5 { "met" } else { "**not met**" },
            over(tc),
            over(xdp)
        );
    }
    println!("\nHelper calls per path: the calls into the kernel each path makes, from a table read off the code that the benchmark holds against the programs' translated code (array and per-CPU array lookups are inlined by the verifier and not counted). The programs as the verifier left them:\n");
    println!("| program | xlated insns | JIT bytes | verified insns | helper call sites | by helper | bpf-to-bpf call sites |");
    println!("|---|---:|---:|---:|---:|---|---:|");
    for z in sizes {
        let by: Vec<String> = z
            .helper_sites
            .iter()
            .map(|(h, n)| format!("{h} ×{n}"))
            .collect();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            z.program,
            z.xlated_insns,
            z.jited_bytes,
            z.verified_insns.map_or("–".into(), |n| n.to_string()),
            z.helper_total(),
            by.join(", "),
            z.subprog_sites
        );
    }
}

/// The end-to-end SIP-only table.
/// The media rows: 1,000 calls with 250 packets each way (5 s of G.711, 1% of the
/// frames SIP), then 10,000 calls with 50 each way, at each offered rate until the second
/// rate that loses something.
fn media_load(rates: &[u64]) -> Result<Vec<e2e::MediaRow>> {
    let mut rows = Vec::new();
    for (calls, per_dir) in [(1_000, 250), (10_000, 50)] {
        let mut failed = 0;
        for &r in rates {
            let row = e2e::media_run(calls, per_dir, r)?;
            failed += usize::from(!row.clean);
            rows.push(row);
            if failed >= 2 {
                break;
            }
        }
    }
    Ok(rows)
}

fn print_media(rows: &[e2e::MediaRow]) {
    println!(
        "\n## End to end with media (calls set up together, G.711 both ways, torn down together)\n"
    );
    println!("Nothing lost: ring_full 0 and every call's CDR with both directions counting exactly the packets sent.\n");
    println!("BPF maps MiB: the kernel memory (`memlock`) of the BPF maps the agent holds, each counted once, at its peak over the run.\n");
    println!("| calls | packets each way | offered frames/s | sent frames/s | exact CDRs | ring_full | agent ns/frame | kernel ns/frame | peak RSS MiB | BPF maps MiB | nothing lost |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            r.calls,
            r.per_direction,
            r.offered,
            r.achieved,
            r.exact_cdrs,
            r.ring_full,
            r.agent_ns_per_pkt,
            r.kernel_ns_per_pkt,
            r.peak_rss_mib,
            r.bpf_maps_mib,
            if r.clean { "yes" } else { "**no**" }
        );
    }
    let at_10k = rows
        .iter()
        .filter(|r| r.calls == 10_000)
        .map(|r| r.bpf_maps_mib)
        .max_by(f64::total_cmp);
    if let Some(mib) = at_10k {
        println!(
            "\nBPF maps at 10,000 calls: {mib:.1} MiB (goal ≤ 16: {}).",
            if mib <= 16.0 { "met" } else { "**not met**" }
        );
    }
}

fn print_peers(ours: &[e2e::LoadRow], peers: &[e2e::PeerRow]) {
    println!("\n## Peers on the same SIP load (same veth, same sender, one run each)\n");
    println!("Each tool captures on the receiving veth in place of the agent; seen and dropped are its own exit counters (sngrep reports none: seen is its dialog count times the 5 messages of each call). tcpdump only writes packets; tshark dissects SIP for its statistics; sngrep follows dialogs; the agent follows every dialog, binds its media in the kernel and writes CDRs.\n");
    println!(
        "| tool | offered msg/s | sent | seen | dropped | µs/msg | peak RSS MiB | nothing lost |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for p in peers {
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.0} | {} |",
            p.tool,
            p.offered,
            p.sent,
            p.seen,
            p.dropped,
            p.us_per_msg,
            p.peak_rss_mib,
            if p.clean { "yes" } else { "**no**" }
        );
    }
    let ours = e2e::highest_clean(ours).map_or(0, |r| r.offered);
    for tool in e2e::peer_tools() {
        let best = peers
            .iter()
            .filter(|p| p.tool == tool && p.clean)
            .map(|p| p.offered)
            .max()
            .unwrap_or(0);
        let ratio = if best > 0 {
            format!("{:.2}", ours as f64 / best as f64)
        } else {
            "–".into()
        };
        println!(
            "\nHighest clean rate of {tool}: {best} msg/s; the agent's: {ours} msg/s (agent / {tool}: {ratio})."
        );
    }
}

fn print_load(rows: &[e2e::LoadRow]) {
    println!(
        "\n## End to end, SIP only (agent attached to a veth, {} calls in progress, 5 messages per call)\n",
        e2e::CONCURRENT
    );
    println!("The sender shares the machine's cores with the agent. Agent CPU is user + system time of all its threads (ring reader and output); msg/s per core is its inverse, to set beside the parser's own rate above.\n");
    println!("| offered msg/s | sent msg/s | calls | complete CDRs | ring_full | agent µs/msg | agent msg/s per core | kernel ns/pkt | peak RSS MiB | BPF maps MiB | nothing lost |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {} | {} | {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            r.offered,
            r.achieved,
            r.calls,
            r.complete_cdrs,
            r.ring_full,
            r.agent_us_per_msg,
            1e6 / r.agent_us_per_msg.max(1e-3),
            r.kernel_ns_per_pkt,
            r.peak_rss_mib,
            r.bpf_maps_mib,
            if r.clean { "yes" } else { "**no**" }
        );
    }
    let best = e2e::highest_clean(rows).map_or(0, |r| r.offered);
    println!(
        "\nHighest offered rate with nothing lost: {best} msg/s (goal ≥ 200000: {}).",
        if best >= 200_000 {
            "met"
        } else {
            "**not met**"
        }
    );
}

#[derive(Clone, Debug, serde::Serialize)]
struct UserFigure {
    what: String,
    /// Median, min and max per second over the runs.
    per_s: [f64; 3],
    goal_per_s: Option<f64>,
}

/// A typical INVITE with SDP (about 900 bytes), as an SBC sees thousands of.
fn typical_invite() -> Vec<u8> {
    let sdp = "v=0\r\no=- 3848234 3848234 IN IP4 198.18.9.1\r\ns=-\r\nc=IN IP4 198.18.9.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8 0 18 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:18 G729/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
    format!(
        "INVITE sip:+15551234567@198.18.9.2:5060;user=phone SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.9.1:5060;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nFrom: \"Bench Caller\" <sip:+442079460123@198.18.9.1;user=phone>;tag=1928301774\r\nTo: <sip:+15551234567@198.18.9.2;user=phone>\r\nCall-ID: a84b4c76e66710@198.18.9.1\r\nCSeq: 314159 INVITE\r\nContact: <sip:+442079460123@198.18.9.1:5060>\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK\r\nSupported: timer, 100rel\r\nSession-Expires: 1800;refresher=uac\r\nUser-Agent: bench/1.0\r\nP-Charging-Vector: icid-value=1234bc9876e;icid-generated-at=198.18.9.1\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

/// SIP messages parsed per second on one core, and CDRs per second through the whole
/// userspace pipeline (decode, reassemble, parse, track, bind media, emulated kernel RTP
/// update, CDR), each over `runs` runs of about a second.
fn userspace(runs: usize) -> Result<Vec<UserFigure>> {
    use collector::sip::{parse_message, SipLimits};
    let invite = typical_invite();
    let limits = SipLimits::default();
    let mut parse = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            for _ in 0..1000 {
                let m = parse_message(std::hint::black_box(&invite), &limits)
                    .map_err(|e| anyhow::anyhow!("the bench INVITE does not parse: {e}"))?;
                let _ =
                    std::hint::black_box((m.call_id(), m.cseq(), m.from(), m.to(), m.sdp_body()));
                n += 1;
            }
        }
        parse.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let capture = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/corpus/sipp_g711_basic.pcap");
    let opts = collector::cli::replay::ReplayOptions::default();
    let mut cdrs = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            let out = collector::cli::replay::replay_file(&capture, &opts, |_| {})?;
            n += out.cdrs.len() as u64;
        }
        cdrs.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let f = |what: &str, v: Vec<f64>, goal| UserFigure {
        what: what.into(),
        per_s: median3(v),
        goal_per_s: goal,
    };
    let figs = vec![
        f("SIP messages parsed (INVITE with SDP, 900 B)", parse, Some(500_000.0)),
        f(
            "CDRs through the whole pipeline (replay of sipp_g711_basic.pcap: 3 calls with audio both ways per pass)",
            cdrs,
            None,
        ),
    ];
    for u in &figs {
        eprintln!("bench: {:<60} {:>10.0}/s", u.what, u.per_s[0]);
    }
    Ok(figs)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // The mitigations that make calls and returns (helpers, map lookups) expensive.
    let mitigations: Vec<String> = ["spectre_v2", "spec_rstack_overflow", "retbleed"]
        .iter()
        .filter_map(|v| {
            let s = std::fs::read_to_string(format!("/sys/devices/system/cpu/vulnerabilities/{v}"))
                .ok()?;
            Some(format!("{v}: {}", s.trim()))
        })
        .collect();
    format!(
        "{cpu}, {cores} cores, Linux {}; mitigations: {}",
        kernel.trim(),
        mitigations.join("; ")
    )
}
