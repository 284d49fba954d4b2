//! End to end, SIP only: the released agent attached to a veth (its CDRs as JSON lines on
//! stdout, pseudonymized under a key file), driven by complete calls sent from the peer
//! namespace at a paced rate. A rate passes when nothing is lost: no ring record dropped
//! (`ring_full` 0), none undecodable, and one CDR per call sent with every message of it.
//!
//! Each call is INVITE with an SDP offer, 200 with an answer, ACK, BYE and its 200 (five
//! messages); calls overlap (each is torn down [`CONCURRENT`] calls after its setup), so the
//! agent follows that many dialogs at once. Runs are bounded in messages and in time.
//!
//! Every run also reports the kernel memory of the BPF maps the agent holds, at its peak
//! over the run ([`bpf_maps`], sampled while the traffic is sent and drained).
use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use collector_tests::{
    agent_config, counter, final_counters, rawsip::RawCall, Agent, Netns, VethPair,
};

/// Calls in progress at once.
pub const CONCURRENT: usize = 1000;
/// Messages per call.
const MSGS_PER_CALL: u64 = 5;

/// One offered rate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LoadRow {
    /// Messages per second offered.
    pub offered: u64,
    /// Messages per second the sender achieved.
    pub achieved: f64,
    /// Calls sent.
    pub calls: u64,
    /// CDRs the agent printed, with all five messages.
    pub complete_cdrs: u64,
    /// Ring records the kernel could not write (`ring_full`).
    pub ring_full: u64,
    /// Agent CPU (user + system) per message, µs.
    pub agent_us_per_msg: f64,
    /// The kernel program's run time per packet it ran on, ns (BPF statistics).
    pub kernel_ns_per_pkt: f64,
    /// The agent's peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// Kernel memory of the BPF maps the agent holds at their peak over the run, MiB.
    pub bpf_maps_mib: f64,
    /// Those maps one by one, at that peak.
    pub bpf_maps: Vec<MapMem>,
    /// Nothing lost.
    pub clean: bool,
}

/// One BPF map an agent holds, as its descriptor's /proc/PID/fdinfo reports it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MapMem {
    /// The kernel's map id (`map_id:`); two descriptors on one map share it.
    pub id: u32,
    /// The map's name (from the kernel's map info; `None` if it could not be read).
    pub name: Option<String>,
    /// The kernel's `bpf_map_type` number (`map_type:`).
    pub map_type: u32,
    /// Its capacity (`max_entries:`).
    pub max_entries: u64,
    /// Its map flags (`map_flags:`, e.g. 0x1 for `BPF_F_NO_PREALLOC`).
    pub map_flags: u32,
    /// The kernel memory charged to it (`memlock:`), bytes: since Linux 6.4 what it uses
    /// now (a hash map without preallocation counts its live elements), before that its
    /// capacity.
    pub memlock_bytes: u64,
}

/// The BPF maps one process holds, each counted once.
#[derive(Clone, Debug, Default)]
pub struct MapsMem {
    /// The maps, by id.
    pub maps: BTreeMap<u32, MapMem>,
}

impl MapsMem {
    /// Their memory together, bytes.
    pub fn total_bytes(&self) -> u64 {
        self.maps.values().map(|m| m.memlock_bytes).sum()
    }

    /// Their memory together, MiB.
    pub fn total_mib(&self) -> f64 {
        self.total_bytes() as f64 / (1024.0 * 1024.0)
    }

    /// Fills in each map's name from the kernel's map info (the maps must still be loaded);
    /// a map whose info cannot be read keeps no name.
    fn name(&mut self) {
        for m in self.maps.values_mut() {
            m.name = aya::maps::MapInfo::from_id(m.id)
                .ok()
                .and_then(|i| i.name_as_str().map(str::to_owned));
        }
    }

    /// The maps as a list, by id.
    fn list(&self) -> Vec<MapMem> {
        self.maps.values().cloned().collect()
    }
}

/// A number after `key` on a line of an fdinfo text (`memlock:\t1234`); map flags are
/// printed in hex (`map_flags:\t0x1`).
fn fdinfo_field(text: &str, key: &str) -> Option<u64> {
    let v = text.lines().find_map(|l| l.strip_prefix(key))?.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The BPF maps process `pid` holds: every descriptor in /proc/PID/fd that links to
/// `anon_inode:bpf-map`, read from /proc/PID/fdinfo/FD and counted once per map id. A
/// descriptor closed between the listing and the read is simply gone.
pub fn bpf_maps(pid: u32) -> Result<MapsMem> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = MapsMem::default();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-map" {
            continue;
        }
        let fd = entry.file_name();
        let path = format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy());
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let field =
            |key: &str| fdinfo_field(&text, key).with_context(|| format!("no {key} in {path}"));
        let id = u32::try_from(field("map_id:")?).context("map_id")?;
        out.maps.entry(id).or_insert(MapMem {
            id,
            name: None,
            map_type: u32::try_from(field("map_type:")?).context("map_type")?,
            max_entries: field("max_entries:")?,
            map_flags: u32::try_from(field("map_flags:")?).context("map_flags")?,
            memlock_bytes: field("memlock:")?,
        });
    }
    Ok(out)
}

/// Samples [`bpf_maps`] of `pid` every 100 ms until `stop` is set and returns the sample
/// with the most memory (named), or the first error.
fn peak_maps(pid: u32, stop: &AtomicBool) -> Result<MapsMem> {
    let mut peak = MapsMem::default();
    loop {
        let done = stop.load(Ordering::Relaxed);
        let now = bpf_maps(pid)?;
        if now.total_bytes() > peak.total_bytes() || peak.maps.is_empty() {
            peak = now;
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    peak.name();
    Ok(peak)
}

/// The frames of `n` calls between `a` and `b`, each torn down [`CONCURRENT`] calls later.
fn frames(a: [u8; 4], b: [u8; 4], n: usize) -> Vec<Vec<u8>> {
    let call = |i: usize| RawCall {
        a,
        b,
        i,
        call_id: format!("{i}-load@bench.invalid"),
        rtp_ports: (
            10_000 + (i % 20_000) as u16 * 2,
            50_000 + (i % 7_000) as u16 * 2,
        ),
    };
    let mut out = Vec::with_capacity(n * MSGS_PER_CALL as usize);
    for i in 0..n + CONCURRENT {
        if i < n {
            out.extend(call(i).setup());
        }
        if i >= CONCURRENT {
            out.extend(call(i - CONCURRENT).teardown());
        }
    }
    out
}

/// An AF_PACKET socket bound to one interface, sending whole Ethernet frames.
pub struct PacketSocket {
    fd: i32,
    sll: libc::sockaddr_ll,
}

impl PacketSocket {
    /// Opens the socket on `ifname` (call it inside the namespace that has the interface).
    pub fn open(ifname: &str) -> Result<Self> {
        let c = std::ffi::CString::new(ifname)?;
        // SAFETY: libc calls on values we own; results checked.
        unsafe {
            let idx = libc::if_nametoindex(c.as_ptr());
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 || idx == 0 {
                let e = std::io::Error::last_os_error();
                if fd >= 0 {
                    libc::close(fd);
                }
                bail!("AF_PACKET socket on {ifname}: {e}");
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = idx as i32;
            sll.sll_halen = 6;
            Ok(Self { fd, sll })
        }
    }

    /// Sends `frames` with one `sendmmsg`: how many went (0 when the queue is full).
    pub fn send(&mut self, frames: &[&[u8]]) -> Result<usize> {
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut _,
                iov_len: f.len(),
            })
            .collect();
        let sll: *mut libc::sockaddr_ll = &mut self.sll;
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: an all-zero mmsghdr is a valid empty header.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = sll.cast();
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                h.msg_hdr.msg_iov = v as *mut libc::iovec;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: the headers point at buffers that outlive the call.
        let n = unsafe { libc::sendmmsg(self.fd, msgs.as_mut_ptr(), msgs.len() as u32, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(0);
            }
            bail!("sendmmsg: {e}");
        }
        Ok(n as usize)
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our own descriptor, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Sends `frames` out of `ifname` in `ns` at `rate` frames per second (`sendmmsg` in
/// batches, paced against absolute deadlines); the rate achieved.
fn send_paced(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>, rate: u64) -> Result<f64> {
    let ifname = ifname.to_owned();
    ns.run(move || {
        const BATCH: usize = 32;
        let mut sock = PacketSocket::open(&ifname)?;
        let start = Instant::now();
        let limit = Duration::from_secs(60);
        let mut sent = 0usize;
        while sent < frames.len() {
            if start.elapsed() > limit {
                bail!("sending took over {limit:?}");
            }
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let end = (sent + BATCH).min(frames.len());
            let batch: Vec<&[u8]> = frames[sent..end].iter().map(Vec::as_slice).collect();
            sent += sock.send(&batch)?;
        }
        Ok(sent as f64 / start.elapsed().as_secs_f64())
    })
}

/// (user + system CPU, peak RSS in KiB) of process `pid`.
fn cpu_and_peak(pid: u32) -> Result<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5): indexes 11 and 12 after ')'.
    let ticks: u64 =
        f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((Duration::from_millis(ticks * 1000 / hz), hwm))
}

/// (run time ns, run count) summed over the BPF programs `ids`.
fn bpf_stats(ids: &[u32]) -> Result<(u64, u64)> {
    let (mut t, mut c) = (0u64, 0u64);
    for p in aya::programs::loaded_programs() {
        let p = p.context("listing BPF programs")?;
        if ids.contains(&p.id()) {
            t += p.run_time().as_nanos() as u64;
            c += p.run_count();
        }
    }
    Ok((t, c))
}

/// What one run of the attached agent measured.
struct Measured {
    /// Frames per second the sender achieved.
    achieved: f64,
    /// Agent CPU (user + system) while the traffic was sent and drained.
    cpu: Duration,
    /// Agent peak RSS, KiB.
    peak_kib: u64,
    /// BPF run time (ns) and run count over the run.
    bpf: (u64, u64),
    /// The agent's stdout lines (CDRs and the final counters).
    lines: Vec<serde_json::Value>,
    /// Its `ring_full` counter at exit.
    ring_full: u64,
    /// Its BPF maps at their peak over the run.
    maps: MapsMem,
}

/// Starts the agent on a fresh veth pair (`tag` names the pair), runs `send` (given the
/// pair and both addresses; it returns the rate achieved), lets the agent drain for
/// `drain`, stops it and collects what it measured. Its BPF maps are sampled from before
/// the traffic until the end of the drain, while every call is still known to it.
fn with_agent(
    tag: u8,
    drain: Duration,
    send: impl FnOnce(&VethPair, [u8; 4], [u8; 4]) -> Result<f64>,
) -> Result<Measured> {
    let pair = VethPair::new(tag)?;
    let dir = tempfile::tempdir()?;
    let cfg = agent_config(dir.path(), "bench", "")?;
    let agent = Agent::start(&pair.b.name, &[&pair.if_b], &["--config", &cfg])?;
    let ids = agent.program_ids()?;
    let a: [u8; 4] = pair.addr_a.parse::<std::net::Ipv4Addr>()?.octets();
    let b: [u8; 4] = pair.addr_b.parse::<std::net::Ipv4Addr>()?.octets();
    let (cpu0, _) = cpu_and_peak(agent.pid())?;
    let (t0, c0) = bpf_stats(&ids)?;
    let pid = agent.pid();
    let stop = AtomicBool::new(false);
    let (achieved, maps) = std::thread::scope(|s| {
        let sampler = s.spawn(|| peak_maps(pid, &stop));
        let achieved = send(&pair, a, b);
        // Let the agent read what is left in the ring and finish the last calls.
        if achieved.is_ok() {
            std::thread::sleep(drain);
        }
        stop.store(true, Ordering::Relaxed);
        let maps = sampler
            .join()
            .map_err(|_| anyhow::anyhow!("the BPF map sampler panicked"))?;
        anyhow::Ok((achieved?, maps?))
    })?;
    let (cpu1, peak_kib) = cpu_and_peak(agent.pid())?;
    let (t1, c1) = bpf_stats(&ids)?;
    let lines = agent.stop()?;
    let ring_full = counter(&final_counters(&lines)?, "ring_full");
    Ok(Measured {
        achieved,
        cpu: cpu1.saturating_sub(cpu0),
        peak_kib,
        bpf: (t1 - t0, c1 - c0),
        lines,
        ring_full,
        maps,
    })
}

/// One offered rate, `secs` seconds of messages.
fn run(rate: u64, secs: f64) -> Result<LoadRow> {
    let calls = ((rate as f64 * secs) as u64 / MSGS_PER_CALL).max(1);
    let m = with_agent(11, Duration::from_millis(500), |pair, a, b| {
        send_paced(&pair.a, &pair.if_a, frames(a, b, calls as usize), rate)
    })?;
    let complete = m
        .lines
        .iter()
        .filter(|l| l.get("cdr_id").is_some())
        .filter(|l| l.get("sip_messages").and_then(|v| v.as_u64()) == Some(MSGS_PER_CALL))
        .count() as u64;
    let ring_full = m.ring_full;
    let msgs = calls * MSGS_PER_CALL;
    let row = LoadRow {
        offered: rate,
        achieved: m.achieved,
        calls,
        complete_cdrs: complete,
        ring_full,
        agent_us_per_msg: m.cpu.as_secs_f64() * 1e6 / msgs as f64,
        kernel_ns_per_pkt: m.bpf.0 as f64 / m.bpf.1.max(1) as f64,
        peak_rss_mib: m.peak_kib as f64 / 1024.0,
        bpf_maps_mib: m.maps.total_mib(),
        bpf_maps: m.maps.list(),
        clean: ring_full == 0 && complete == calls,
    };
    eprintln!(
        "bench: SIP load {:>7} msg/s offered ({:>7.0} sent): {} of {} calls complete, ring_full {}, agent {:.2} µs/msg, RSS {:.0} MiB, BPF maps {:.1} MiB",
        row.offered,
        row.achieved,
        row.complete_cdrs,
        row.calls,
        row.ring_full,
        row.agent_us_per_msg,
        row.peak_rss_mib,
        row.bpf_maps_mib
    );
    Ok(row)
}

/// The offered rates in order, stopping after the second rate that loses something; each
/// rate is offered for `secs` seconds.
pub fn sip_only(rates: &[u64], secs: f64) -> Result<Vec<LoadRow>> {
    let mut rows = Vec::new();
    let mut failed = 0;
    for &r in rates {
        let row = run(r, secs)?;
        failed += usize::from(!row.clean);
        rows.push(row);
        if failed >= 2 {
            break;
        }
    }
    Ok(rows)
}

/// The highest offered rate with nothing lost.
pub fn highest_clean(rows: &[LoadRow]) -> Option<&LoadRow> {
    rows.iter().filter(|r| r.clean).max_by_key(|r| r.offered)
}

/// A peer capture tool on the same traffic, at one offered rate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerRow {
    /// The tool.
    pub tool: &'static str,
    /// Messages per second offered.
    pub offered: u64,
    /// Messages sent.
    pub sent: u64,
    /// Messages the tool reports having seen.
    pub seen: u64,
    /// Packets the tool reports dropped (its own counter).
    pub dropped: u64,
    /// Its CPU (user + system) per message, µs.
    pub us_per_msg: f64,
    /// Its peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// It saw every message and dropped none.
    pub clean: bool,
}

/// How a peer reports what it saw.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Report {
    /// libpcap's statistics on stderr at exit: "N packets captured", "N packets dropped".
    PcapStats,
    /// sngrep's no-interface mode: "Dialog count: N" on stdout (each call is a dialog of
    /// [`MSGS_PER_CALL`] messages); it reports no drop counter.
    DialogCount,
}

/// The peers: the command line (the interface is appended) and how it reports.
const PEERS: [(&str, &[&str], Report); 3] = [
    // Its default buffering: packets reach it when a buffer block fills or its 1 s timeout
    // passes, so it is stopped 1.5 s after the last message.
    (
        "tcpdump -w /dev/null",
        &["tcpdump", "-n", "-q", "-w", "/dev/null", "-i"],
        Report::PcapStats,
    ),
    (
        "tshark -q -z sip,stat",
        &["tshark", "-n", "-q", "-z", "sip,stat", "-i"],
        Report::PcapStats,
    ),
    (
        "sngrep -N",
        &["sngrep", "-N", "-l", "100000000", "-d"],
        Report::DialogCount,
    ),
];

/// The peers' names, in the order they run.
pub fn peer_tools() -> impl Iterator<Item = &'static str> {
    PEERS.iter().map(|(tool, _, _)| *tool)
}

/// The first number before `what` on a line of `text` (tcpdump's "N packets captured",
/// "N packets dropped by kernel"; tshark's "N packets captured", "N packets dropped").
fn number_before(text: &str, what: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.trim()
            .split_once(what)
            .and_then(|(n, _)| n.trim().rsplit(' ').next()?.parse().ok())
    })
}

/// One peer on `rate` messages/s for `secs` seconds: the tool runs in the receiving
/// namespace on its veth, as the agent does.
fn run_peer(
    tool: &'static str,
    argv: &[&str],
    report: Report,
    rate: u64,
    secs: f64,
) -> Result<PeerRow> {
    let pair = VethPair::new(12)?;
    let a: [u8; 4] = pair.addr_a.parse::<std::net::Ipv4Addr>()?.octets();
    let b: [u8; 4] = pair.addr_b.parse::<std::net::Ipv4Addr>()?.octets();
    let calls = ((rate as f64 * secs) as u64 / MSGS_PER_CALL).max(1);
    let frames = frames(a, b, calls as usize);
    let err = tempfile::NamedTempFile::new()?;
    let out = tempfile::NamedTempFile::new()?;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &pair.b.name])
        .args(argv)
        .arg(&pair.if_b)
        .stdout(out.reopen()?)
        .stderr(err.reopen()?)
        .spawn()
        .with_context(|| format!("starting {tool} (cargo xtask setup installs it)"))?;
    let pid = child.id();
    // Ready once it reports capturing, bounded.
    let start = Instant::now();
    let ready = || -> Result<bool> {
        let err = std::fs::read_to_string(err.path())?;
        let out = std::fs::read_to_string(out.path())?;
        Ok(match report {
            Report::PcapStats => err.contains("apturing on") || err.contains("listening on"),
            Report::DialogCount => out.contains("Dialog count"),
        })
    };
    while !ready()? {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            bail!("{tool} did not start capturing within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // `ip netns exec` execs the tool: the pid is the tool's.
    let (cpu0, _) = cpu_and_peak(pid)?;
    send_paced(&pair.a, &pair.if_a, frames, rate)?;
    std::thread::sleep(Duration::from_millis(1500));
    let (cpu1, peak_kib) = cpu_and_peak(pid)?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{tool} did not stop within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let msgs = calls * MSGS_PER_CALL;
    let (seen, dropped) = match report {
        Report::PcapStats => {
            let text = std::fs::read_to_string(err.path())?;
            (
                number_before(&text, "packets captured").unwrap_or(0),
                number_before(&text, "packets dropped").unwrap_or(0),
            )
        }
        Report::DialogCount => {
            let text = std::fs::read_to_string(out.path())?;
            let dialogs = text
                .rsplit("Dialog count:")
                .next()
                .and_then(|n| n.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            (dialogs * MSGS_PER_CALL, 0)
        }
    };
    let row = PeerRow {
        tool,
        offered: rate,
        sent: msgs,
        seen,
        dropped,
        us_per_msg: (cpu1 - cpu0).as_secs_f64() * 1e6 / msgs as f64,
        peak_rss_mib: peak_kib as f64 / 1024.0,
        clean: seen == msgs && dropped == 0,
    };
    eprintln!(
        "bench: {tool} at {rate} msg/s: saw {seen} of {msgs}, dropped {dropped}, {:.2} µs/msg, RSS {:.0} MiB",
        row.us_per_msg, row.peak_rss_mib
    );
    Ok(row)
}

/// Every peer at the offered rates, stopping at its second rate that loses something.
pub fn peers(rates: &[u64], secs: f64) -> Result<Vec<PeerRow>> {
    let mut rows = Vec::new();
    for (tool, argv, report) in PEERS {
        let mut failed = 0;
        for &r in rates {
            let row = run_peer(tool, argv, report, r, secs)?;
            failed += usize::from(!row.clean);
            rows.push(row);
            if failed >= 2 {
                break;
            }
        }
    }
    Ok(rows)
}

/// One end-to-end run with media: calls in progress at once, RTP both ways.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MediaRow {
    /// Calls in progress at once.
    pub calls: u64,
    /// RTP packets per direction of each call.
    pub per_direction: u64,
    /// Frames per second offered (SIP and RTP).
    pub offered: u64,
    /// Frames per second the sender achieved.
    pub achieved: f64,
    /// Calls whose CDR has both directions with exactly `per_direction` packets.
    pub exact_cdrs: u64,
    /// Ring records the kernel could not write.
    pub ring_full: u64,
    /// Agent CPU per frame, ns (user + system of all its threads).
    pub agent_ns_per_pkt: f64,
    /// The kernel programs' run time per frame, ns.
    pub kernel_ns_per_pkt: f64,
    /// The agent's peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// Kernel memory of the BPF maps the agent holds at their peak over the run, MiB.
    pub bpf_maps_mib: f64,
    /// Those maps one by one, at that peak.
    pub bpf_maps: Vec<MapMem>,
    /// Nothing lost.
    pub clean: bool,
}

/// The frames of `n` calls set up together, then (the second list) `per_dir` rounds of
/// one G.711 packet each way per call (50 packets/s per direction in real time: a round
/// every 20 ms of media), then torn down together.
fn media_frames(a: [u8; 4], b: [u8; 4], n: usize, per_dir: u16) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let calls: Vec<RawCall> = (0..n)
        .map(|i| RawCall {
            a,
            b,
            i,
            call_id: format!("{i}-media@bench.invalid"),
            rtp_ports: (
                10_000 + (i % 15_000) as u16 * 2,
                40_000 + (i % 12_000) as u16 * 2,
            ),
        })
        .collect();
    let setup: Vec<Vec<u8>> = calls.iter().flat_map(RawCall::setup).collect();
    let mut out = Vec::new();
    for seq in 0..per_dir {
        for (i, c) in calls.iter().enumerate() {
            let ts = u32::from(seq) * 160;
            out.push(c.rtp(true, 0x1000_0000 + i as u32, seq, ts));
            out.push(c.rtp(false, 0x2000_0000 + i as u32, seq, ts));
        }
    }
    out.extend(calls.iter().flat_map(RawCall::teardown));
    (setup, out)
}

/// `calls` calls with `per_dir` packets each way, offered at `rate` frames/s.
pub fn media_run(calls: usize, per_dir: u16, rate: u64) -> Result<MediaRow> {
    let mut n = 0u64;
    let m = with_agent(13, Duration::from_millis(1500), |pair, a, b| {
        let (setup, media) = media_frames(a, b, calls, per_dir);
        n = (setup.len() + media.len()) as u64;
        // RTP starts once the signalling is through, as a caller's starts after the 200 OK
        // reached it: the agent has had its round trip to bind the media.
        send_paced(&pair.a, &pair.if_a, setup, rate)?;
        std::thread::sleep(Duration::from_millis(200));
        send_paced(&pair.a, &pair.if_a, media, rate)
    })?;
    let exact = m
        .lines
        .iter()
        .filter(|l| l.get("cdr_id").is_some())
        .filter(|l| {
            let legs = l.get("media").and_then(|m| m.as_array());
            legs.is_some_and(|legs| {
                legs.len() == 2
                    && legs.iter().all(|leg| {
                        leg.get("packets").and_then(serde_json::Value::as_u64)
                            == Some(u64::from(per_dir))
                    })
            })
        })
        .count() as u64;
    let ring_full = m.ring_full;
    let row = MediaRow {
        calls: calls as u64,
        per_direction: u64::from(per_dir),
        offered: rate,
        achieved: m.achieved,
        exact_cdrs: exact,
        ring_full,
        agent_ns_per_pkt: m.cpu.as_secs_f64() * 1e9 / n.max(1) as f64,
        kernel_ns_per_pkt: m.bpf.0 as f64 / m.bpf.1.max(1) as f64,
        peak_rss_mib: m.peak_kib as f64 / 1024.0,
        bpf_maps_mib: m.maps.total_mib(),
        bpf_maps: m.maps.list(),
        clean: ring_full == 0 && exact == calls as u64,
    };
    eprintln!(
        "bench: media load {} calls at {} frames/s ({:.0} sent): {} exact CDRs, ring_full {}, agent {:.0} ns/frame, kernel {:.0} ns/frame, RSS {:.0} MiB, BPF maps {:.1} MiB",
        row.calls,
        row.offered,
        row.achieved,
        row.exact_cdrs,
        row.ring_full,
        row.agent_ns_per_pkt,
        row.kernel_ns_per_pkt,
        row.peak_rss_mib,
        row.bpf_maps_mib
    );
    Ok(row)
}
