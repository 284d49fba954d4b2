//! Helpers of the privileged integration tests: uniquely named network namespaces joined by
//! veth pairs (addresses in 198.18.0.0/15 only), code run inside a namespace, and the real
//! `collector` binary run as an agent. Everything is removed on drop, so a failing test
//! (a panic unwinds through the drops) cleans up too.
use std::{
    fs::File,
    io::{BufRead, BufReader},
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub mod baresip;
pub mod deploy;
pub mod rawsip;
pub mod sbc;
pub mod scrape;
pub mod wire;

/// Prefix of every namespace and interface this suite creates.
pub const PREFIX: &str = "vct";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short unique name (interface names are limited to 15 bytes).
pub fn unique(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}{tag}{n}", std::process::id() % 100_000)
}

/// Runs `ip` with the given arguments.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs a command inside a namespace (`ip netns exec`), returning its stdout.
pub fn ns_exec(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .context("running ip netns exec")?;
    if !out.status.success() {
        bail!(
            "in {ns}: {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a uniquely named namespace with loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        let name = unique(tag);
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered this namespace; sockets created there stay in it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || -> Result<T> {
            let file = File::open(&path).with_context(|| format!("opening {path}"))?;
            // SAFETY: setns on a valid namespace fd; it only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            f()
        });
        match handle.join() {
            Ok(r) => r,
            Err(_) => bail!("the thread in namespace panicked"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Two namespaces joined by a veth pair, IPv4 only, with static neighbours (no ARP, no IPv6
/// autoconfiguration), so the only packets on the wire are the ones a test sends.
pub struct VethPair {
    /// Side A.
    pub a: Netns,
    /// Side B.
    pub b: Netns,
    /// Interface in A.
    pub if_a: String,
    /// Interface in B.
    pub if_b: String,
    /// Address of A (198.18.x.y).
    pub addr_a: String,
    /// Address of B.
    pub addr_b: String,
}

impl VethPair {
    /// Creates the pair with the given /24 third octet (198.18.`net`.1 and .2).
    pub fn new(net: u8) -> Result<Self> {
        let a = Netns::new("a")?;
        let b = Netns::new("b")?;
        let if_a = unique("x");
        let if_b = unique("y");
        ip(&["link", "add", &if_a, "type", "veth", "peer", "name", &if_b])?;
        let pair = Self {
            addr_a: format!("198.18.{net}.1"),
            addr_b: format!("198.18.{net}.2"),
            a,
            b,
            if_a,
            if_b,
        };
        ip(&["link", "set", &pair.if_a, "netns", &pair.a.name])?;
        ip(&["link", "set", &pair.if_b, "netns", &pair.b.name])?;
        for (ns, ifn, addr) in [
            (&pair.a.name, &pair.if_a, &pair.addr_a),
            (&pair.b.name, &pair.if_b, &pair.addr_b),
        ] {
            ns_exec(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{ifn}.disable_ipv6=1"),
                ],
            )?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", ifn])?;
            ip(&["-n", ns, "link", "set", ifn, "up"])?;
        }
        let mac = |ns: &str, ifn: &str| -> Result<String> {
            let out = ns_exec(ns, &["cat", &format!("/sys/class/net/{ifn}/address")])?;
            Ok(out.trim().to_owned())
        };
        let mac_a = mac(&pair.a.name, &pair.if_a)?;
        let mac_b = mac(&pair.b.name, &pair.if_b)?;
        ip(&[
            "-n",
            &pair.a.name,
            "neigh",
            "replace",
            &pair.addr_b,
            "lladdr",
            &mac_b,
            "dev",
            &pair.if_a,
            "nud",
            "permanent",
        ])?;
        ip(&[
            "-n",
            &pair.b.name,
            "neigh",
            "replace",
            &pair.addr_a,
            "lladdr",
            &mac_a,
            "dev",
            &pair.if_b,
            "nud",
            "permanent",
        ])?;
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and with it the peer.
        let _ = ip(&["-n", &self.a.name, "link", "del", &self.if_a]);
    }
}

/// The `collector` binary under test: `COLLECTOR_BIN` (set by `cargo xtask test`), else the
/// release build of this workspace.
pub fn collector_bin() -> PathBuf {
    std::env::var_os("COLLECTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/collector")
        })
}

/// A running `collector agent`, stopped with SIGTERM on drop.
pub struct Agent {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// The agent's ready line (it lists the attachments).
    pub ready: serde_json::Value,
}

impl Agent {
    /// Starts `collector agent --iface IF ARGS...` inside `ns` and waits for its ready line.
    pub fn start(ns: &str, ifaces: &[&str], args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(collector_bin())
            .arg("agent");
        for i in ifaces {
            cmd.args(["--iface", i]);
        }
        cmd.args(args)
            .env("COLLECTOR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting the collector agent")?;
        let stdout = child.stdout.take().context("agent stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut agent = Self {
            child,
            lines: rx,
            seen: Vec::new(),
            ready: serde_json::Value::Null,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match agent.lines.recv_timeout(left) {
                Ok(l) if l.contains("\"ready\":true") => {
                    agent.ready = serde_json::from_str(&l)?;
                    return Ok(agent);
                }
                Ok(l) => agent.seen.push(l),
                Err(_) => {
                    let status = agent.child.try_wait().ok().flatten();
                    bail!("the agent did not become ready within 20 s (exit: {status:?})");
                }
            }
        }
    }

    /// The agent's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// IDs of the BPF programs the agent holds open (the `prog_id` of its descriptors in
    /// /proc/PID/fdinfo).
    pub fn program_ids(&self) -> Result<Vec<u32>> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            // A descriptor closed between the listing and the read is simply gone.
            let Ok(text) = std::fs::read_to_string(entry?.path()) else {
                continue;
            };
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|v| v.trim().parse::<u32>().ok());
            if let Some(id) = id.filter(|id| !ids.contains(id)) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Sends SIGTERM, waits (bounded) for exit, and returns every stdout line as JSON.
    pub fn stop(mut self) -> Result<Vec<serde_json::Value>> {
        self.terminate()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the agent exited with {status}");
                }
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("the agent did not exit within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = Vec::new();
        for l in self.seen.drain(..).chain(self.lines.try_iter()) {
            if let Ok(v) = serde_json::from_str(&l) {
                out.push(v);
            }
        }
        // The reader thread may still be flushing the last lines.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            if let Ok(v) = serde_json::from_str(&l) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Sends `sig` to the agent (e.g. SIGSTOP/SIGCONT to pause its reader).
    pub fn signal(&self, sig: i32) -> Result<()> {
        // SAFETY: kill on the pid of our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        if rc != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn terminate(&mut self) -> Result<()> {
        // SAFETY: kill on the pid of our own child.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        if rc != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
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

/// The final counters an agent printed when it stopped.
pub fn final_counters(
    lines: &[serde_json::Value],
) -> Result<serde_json::Map<String, serde_json::Value>> {
    lines
        .iter()
        .rev()
        .find(|v| v.get("final").is_some())
        .and_then(|v| v.get("counters"))
        .and_then(|c| c.as_object())
        .cloned()
        .context("the agent printed no final counters")
}

/// A counter's value from [`final_counters`].
pub fn counter(c: &serde_json::Map<String, serde_json::Value>, name: &str) -> u64 {
    c.get(name).and_then(|v| v.as_u64()).unwrap_or(u64::MAX)
}

/// FNV-1a 64, as the agent prints for each captured payload.
pub fn fnv1a(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Whether an XDP program is attached to `ifname` in `ns`, per `ip link`.
pub fn xdp_attached(ns: &str, ifname: &str) -> Result<bool> {
    let link = ns_exec(ns, &["ip", "-d", "link", "show", ifname])?;
    Ok(link.contains("xdp"))
}

/// Writes an agent configuration into `dir`: a key file made by `collector keygen`, a
/// `[privacy]` table with `scope` and that key file, and `extra` (further tables, or keys of
/// `[agent]` first). Returns the configuration's path.
pub fn agent_config(dir: &std::path::Path, scope: &str, extra: &str) -> Result<String> {
    let keys = dir.join("keys.toml");
    let out = Command::new(collector_bin())
        .arg("keygen")
        .arg("-o")
        .arg(&keys)
        .output()
        .context("running collector keygen")?;
    if !out.status.success() {
        bail!("keygen: {}", String::from_utf8_lossy(&out.stderr));
    }
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "{extra}\n\n[privacy]\nscope = \"{scope}\"\nkey_file = \"{}\"\n",
            keys.display()
        ),
    )?;
    Ok(config.to_string_lossy().into_owned())
}

/// Which of the BPF programs `ids` are still loaded, after waiting up to 3 s for them to go
/// (the kernel frees programs after an RCU grace period once the last reference is closed).
/// TC programs attached through TCX do not show in `tc filter show`; a program that is
/// loaded by nobody is attached nowhere. Only the given programs are looked at, so tests
/// running at the same time with agents of their own do not disturb the answer.
pub fn programs_still_loaded(ids: &[u32]) -> Result<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut left = Vec::new();
        for p in aya::programs::loaded_programs() {
            let p = p.context("listing loaded BPF programs")?;
            if ids.contains(&p.id()) {
                left.push(p.id());
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return Ok(left);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends raw Ethernet frames out of `ifname` from inside `ns` (AF_PACKET): they pass the
/// sender's TC egress and arrive at the peer's XDP exactly as built, VLAN tags included.
/// `gap` is slept after each frame.
pub fn send_raw(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>, gap: Duration) -> Result<()> {
    send_paced(ns, ifname, frames, Pace::After(gap)).map(drop)
}

/// Like [`send_raw`], each frame sent at its offset from the start (offsets in order): a
/// real-time schedule such as RTP every 20 ms, paced by absolute deadlines so that the
/// sender's own delays do not accumulate.
pub fn send_raw_at(ns: &Netns, ifname: &str, frames: Vec<(Duration, Vec<u8>)>) -> Result<()> {
    send_raw_at_timed(ns, ifname, frames).map(drop)
}

/// [`send_raw_at`], returning how late each frame went out: the time its `sendto`
/// returned less its offset. On a veth the peer's XDP program has run by then, so this
/// bounds the lateness the receiver saw that the schedule did not ask for (a test that
/// judges arrival times checks it against its margins: a stalled sender is not the code's
/// fault).
pub fn send_raw_at_timed(
    ns: &Netns,
    ifname: &str,
    frames: Vec<(Duration, Vec<u8>)>,
) -> Result<Vec<Duration>> {
    let (at, frames): (Vec<Duration>, Vec<Vec<u8>>) = frames.into_iter().unzip();
    let sent = send_paced(ns, ifname, frames, Pace::At(at.clone()))?;
    Ok(sent
        .iter()
        .zip(at)
        .map(|(s, a)| s.saturating_sub(a))
        .collect())
}

/// How [`send_paced`] spaces its frames.
enum Pace {
    /// Sleep this long after each frame.
    After(Duration),
    /// Frame `k` goes out at offset `k` from the start.
    At(Vec<Duration>),
}

/// Sends the frames; returns when each `sendto` returned, from the start.
fn send_paced(ns: &Netns, ifname: &str, frames: Vec<Vec<u8>>, pace: Pace) -> Result<Vec<Duration>> {
    let ifname = ifname.to_owned();
    ns.run(move || {
        let c = std::ffi::CString::new(ifname.clone())?;
        let mut sent = Vec::with_capacity(frames.len());
        // SAFETY: plain libc calls on values we own; errors are checked.
        unsafe {
            let idx = libc::if_nametoindex(c.as_ptr());
            if idx == 0 {
                bail!("no interface {ifname}");
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = idx as i32;
            sll.sll_halen = 6;
            let start = Instant::now();
            for (k, f) in frames.iter().enumerate() {
                if let Pace::At(at) = &pace {
                    let due = start + at.get(k).copied().unwrap_or_default();
                    let wait = due.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        std::thread::sleep(wait);
                    }
                }
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if n < 0 || n as usize != f.len() {
                    let e = std::io::Error::last_os_error();
                    libc::close(fd);
                    bail!("sendto: {e}");
                }
                sent.push(start.elapsed());
                if let Pace::After(gap) = pace {
                    if !gap.is_zero() {
                        std::thread::sleep(gap);
                    }
                }
            }
            libc::close(fd);
        }
        Ok(sent)
    })
}
