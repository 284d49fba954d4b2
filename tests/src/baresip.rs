//! baresip as a second, independent SIP stack in the SBC topology ([`crate::sbc`]): a user
//! agent in a namespace with a registrar-less account, audio from a generated WAV file
//! (`aufile`, 8 kHz mono, so no sound card is involved), PCMA only, driven through its
//! `ctrl_tcp` module (netstring-framed JSON on the namespace's loopback): commands in, events
//! (`CALL_ESTABLISHED`, `CALL_CLOSED`, ...) out, each stamped with the test's clock on arrival.
//!
//! baresip's own record of a call is what it prints when the call ends (with `rtp_stats yes`):
//!
//! ```text
//! sip:a@h: Call with sip:b@h terminated (duration: 4 secs)
//!
//! audio           Transmit:     Receive:
//! packets:            198          198
//! avg. bitrate:      64.1         64.1  (kbit/s)
//! errors:               0            0
//! ```
//!
//! plus `pkt.report:`, `lost:` and `jitter:` lines once RTCP reports were exchanged. baresip
//! buffers stdout into its log file, so the summaries are read after it exits
//! ([`Baresip::finish`]). The process is stopped (its whole group) on drop, like every
//! process of [`crate::sbc`].
use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, TcpStream},
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::{
    sbc::{path_str, wait_until, Proc},
    Netns,
};

/// The ports baresip takes its RTP (and RTCP, one above) from: apart from rtpengine's
/// [`crate::sbc::RTP_PORTS`], so a stream's ports tell which side of the SBC sent it.
pub const RTP_PORTS: (u16, u16) = (40000, 40999);
/// Length of the generated audio: longer than any call of the tests (aufile stops at its end).
const AUDIO_SECONDS: u32 = 120;
/// Largest ctrl_tcp message accepted (events are a few hundred bytes).
const MAX_NETSTRING: usize = 1 << 20;

/// One user agent: who it is and where it listens.
#[derive(Clone, Debug)]
pub struct UaConfig {
    /// The URI user of the account (the phone number the calls carry).
    pub user: String,
    /// The namespace's address baresip binds to.
    pub ip: Ipv4Addr,
    /// The namespace's interface carrying `ip` (baresip finds no address without a default
    /// route otherwise).
    pub iface: String,
    /// SIP port (UDP).
    pub sip_port: u16,
    /// ctrl_tcp port on the namespace's loopback.
    pub ctrl_port: u16,
    /// Answer incoming calls at once (`answermode=auto`).
    pub auto_answer: bool,
}

/// An event baresip sent on ctrl_tcp, with when it arrived.
#[derive(Clone, Debug)]
pub struct Event {
    /// When the test read it.
    pub at: Instant,
    /// `type`, e.g. `CALL_ESTABLISHED`.
    pub kind: String,
    /// The whole event.
    pub body: Value,
}

/// What baresip printed when one call ended.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallSummary {
    /// `duration: N secs`: whole seconds from answer to end.
    pub duration_s: u64,
    /// RTP packets sent.
    pub tx_packets: u64,
    /// RTP packets received.
    pub rx_packets: u64,
    /// `lost:` (transmit as the peer reported it in RTCP, receive as counted here), if printed.
    pub lost: Option<(i64, i64)>,
    /// `jitter:` in ms (transmit per the peer's RTCP, receive here), if printed.
    pub jitter_ms: Option<(f64, f64)>,
}

/// A running baresip.
pub struct Baresip {
    // Dropped first: stops the process.
    proc: Proc,
    ctrl: TcpStream,
    events: mpsc::Receiver<Event>,
    seen: Vec<Event>,
    log: PathBuf,
    /// The account it runs.
    pub ua: UaConfig,
    tokens: u32,
}

impl Baresip {
    /// Writes the config into `dir` (created), starts baresip in `ns` and connects to its
    /// ctrl_tcp, within 20 s.
    pub fn start(ns: &Netns, ua: UaConfig, dir: &Path) -> Result<Self> {
        ensure!(
            Path::new("/usr/bin/baresip").is_file(),
            "baresip is missing: run `cargo xtask setup` (Debian package baresip-core)"
        );
        fs::create_dir_all(dir)?;
        let wav = dir.join("tone.wav");
        write_tone(&wav)?;
        fs::write(dir.join("config"), config(&ua, &wav)?)?;
        let answer = if ua.auto_answer { "auto" } else { "manual" };
        fs::write(
            dir.join("accounts"),
            format!(
                "<sip:{}@{};transport=udp>;regint=0;audio_codecs=PCMA;answermode={answer}\n",
                ua.user, ua.ip
            ),
        )?;
        let log = dir.join("baresip.log");
        let mut proc = Proc::spawn(
            "baresip",
            &ns.name,
            &["baresip", "-f", path_str(dir)?],
            dir,
            &log,
        )?;
        let port = ua.ctrl_port;
        let mut ctrl = None;
        wait_until("baresip's ctrl_tcp", &mut proc, || {
            ctrl = ns
                .run(move || Ok(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()))
                .ok()
                .flatten();
            Ok(ctrl.is_some())
        })?;
        let ctrl = ctrl.context("no ctrl_tcp connection")?;
        let reader = ctrl.try_clone()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(reader);
            while let Ok(Some(v)) = read_netstring(&mut r) {
                let at = Instant::now();
                if v.get("event").and_then(Value::as_bool) != Some(true) {
                    continue;
                }
                let kind = v
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if tx.send(Event { at, kind, body: v }).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            proc,
            ctrl,
            events: rx,
            seen: Vec::new(),
            log,
            ua,
            tokens: 0,
        })
    }

    /// Sends a ctrl_tcp command (`dial`, `hangup`, ...); returns when it is written.
    pub fn command(&mut self, command: &str, params: Option<&str>) -> Result<Instant> {
        self.tokens += 1;
        let mut msg =
            serde_json::json!({ "command": command, "token": format!("t{}", self.tokens) });
        if let Some(p) = params {
            msg["params"] = Value::from(p);
        }
        let body = serde_json::to_vec(&msg)?;
        let mut frame = format!("{}:", body.len()).into_bytes();
        frame.extend_from_slice(&body);
        frame.push(b',');
        let at = Instant::now();
        self.ctrl
            .write_all(&frame)
            .with_context(|| format!("sending {command} to baresip"))?;
        Ok(at)
    }

    /// Dials `uri`; returns when the command left (the INVITE follows within a millisecond).
    pub fn dial(&mut self, uri: &str) -> Result<Instant> {
        self.command("dial", Some(uri))
    }

    /// Hangs up the current call (sends BYE for an established one).
    pub fn hangup(&mut self) -> Result<Instant> {
        self.command("hangup", None)
    }

    /// Waits up to `within` for the `n`-th (1-based) event of `kind` since the start.
    pub fn wait_event(&mut self, kind: &str, n: usize, within: Duration) -> Result<Event> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.seen.iter().filter(|e| e.kind == kind).nth(n - 1) {
                return Ok(e.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .events
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(e) => self.seen.push(e),
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if !self.proc.running() {
                        bail!("baresip exited:\n{}", self.proc.log_tail());
                    }
                }
                Err(_) => bail!(
                    "baresip {}: no {kind} #{n} within {within:?}; events {:?}\n{}",
                    self.ua.user,
                    self.seen.iter().map(|e| &e.kind).collect::<Vec<_>>(),
                    self.proc.log_tail()
                ),
            }
        }
    }

    /// Stops baresip (SIGTERM: it ends its calls and flushes its output) and returns the
    /// summary of every call it printed, in the order the calls ended.
    pub fn finish(mut self) -> Result<Vec<CallSummary>> {
        self.proc.stop(libc::SIGTERM, Duration::from_secs(5));
        let text = fs::read_to_string(&self.log)
            .with_context(|| format!("reading {}", self.log.display()))?;
        parse_summaries(&text)
    }
}

fn config(ua: &UaConfig, wav: &Path) -> Result<String> {
    let wav = path_str(wav)?;
    Ok(format!(
        "poll_method epoll\n\
         sip_listen {ip}:{sip}\n\
         sip_trans_def udp\n\
         net_interface {iface}\n\
         audio_source aufile,{wav}\n\
         ausrc_srate 8000\n\
         auplay_srate 8000\n\
         ausrc_channels 1\n\
         auplay_channels 1\n\
         audio_level no\n\
         rtp_ports {lo}-{hi}\n\
         rtp_timeout 0\n\
         rtp_stats yes\n\
         module_path /usr/lib/baresip/modules\n\
         module g711.so\n\
         module aufile.so\n\
         module_app account.so\n\
         module_app menu.so\n\
         module_app ctrl_tcp.so\n\
         ctrl_tcp_listen 127.0.0.1:{ctrl}\n",
        ip = ua.ip,
        sip = ua.sip_port,
        iface = ua.iface,
        lo = RTP_PORTS.0,
        hi = RTP_PORTS.1,
        ctrl = ua.ctrl_port,
    ))
}

/// A 440 Hz tone, 8 kHz mono S16LE WAV, [`AUDIO_SECONDS`] long: what aufile plays.
fn write_tone(path: &Path) -> Result<()> {
    let samples = 8000 * AUDIO_SECONDS;
    let data_len = samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16_000u32.to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        let v = (f64::from(i) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin() * 8000.0;
        out.extend_from_slice(&(v as i16).to_le_bytes());
    }
    fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

/// Reads one netstring (`LEN:BYTES,`) holding JSON; `None` at end of stream.
fn read_netstring(r: &mut impl BufRead) -> Result<Option<Value>> {
    let mut len = Vec::new();
    if r.read_until(b':', &mut len)? == 0 {
        return Ok(None);
    }
    let digits = std::str::from_utf8(len.strip_suffix(b":").context("truncated netstring")?)?;
    let n: usize = digits.trim().parse().context("bad netstring length")?;
    ensure!(n <= MAX_NETSTRING, "netstring of {n} bytes");
    let mut body = vec![0u8; n + 1];
    r.read_exact(&mut body)?;
    ensure!(body.pop() == Some(b','), "netstring without its comma");
    Ok(Some(serde_json::from_slice(&body)?))
}

/// The per-call summaries in baresip's output (see the module doc).
pub fn parse_summaries(text: &str) -> Result<Vec<CallSummary>> {
    let mut out: Vec<CallSummary> = Vec::new();
    // The status line is rewritten in place with `\r`; summaries are whole lines.
    for line in text.split(['\n', '\r']) {
        if let Some(rest) = line.split("terminated (duration: ").nth(1) {
            let secs = rest
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("bad duration in {line}"))?;
            out.push(CallSummary {
                duration_s: secs,
                ..CallSummary::default()
            });
            continue;
        }
        let Some(last) = out.last_mut() else { continue };
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["packets:", tx, rx] => {
                last.tx_packets = tx.parse().context("bad packets line")?;
                last.rx_packets = rx.parse().context("bad packets line")?;
            }
            ["lost:", tx, rx] => {
                last.lost = Some((
                    tx.parse().context("bad lost line")?,
                    rx.parse().context("bad lost line")?,
                ));
            }
            ["jitter:", tx, rx, "(ms)"] => {
                last.jitter_ms = Some((
                    tx.parse().context("bad jitter line")?,
                    rx.parse().context("bad jitter line")?,
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // baresip 1.0.0's output for a 4 s call (status line abridged), then a call with RTCP.
    #[test]
    fn parses_call_summaries() {
        let text = "baresip is ready.\n[0:00:00] audio=0/0 (bit/s)    [0:00:04] audio=64000/64000 (bit/s)    call: terminate call 'e24b' with sip:bob@198.18.99.2;transport=udp\nsip:alice@198.18.99.1: Call with sip:bob@198.18.99.2;transport=udp terminated (duration: 4 secs)\n\naudio           Transmit:     Receive:\npackets:            198          197\navg. bitrate:      64.1         64.1  (kbit/s)\nerrors:               0            0\nsip:a@h: Call with sip:b@h terminated (duration: 7 secs)\naudio           Transmit:     Receive:\npackets:            350          331\navg. bitrate:      64.1         64.1  (kbit/s)\nerrors:               0            0\npkt.report:         250          240\nlost:                 0           19\njitter:             0.3          1.5  (ms)\nterminated by signal 15\n";
        let s = parse_summaries(text).unwrap();
        assert_eq!(
            s,
            vec![
                CallSummary {
                    duration_s: 4,
                    tx_packets: 198,
                    rx_packets: 197,
                    lost: None,
                    jitter_ms: None
                },
                CallSummary {
                    duration_s: 7,
                    tx_packets: 350,
                    rx_packets: 331,
                    lost: Some((0, 19)),
                    jitter_ms: Some((0.3, 1.5))
                }
            ]
        );
    }

    #[test]
    fn reads_netstrings() {
        // `{"event":true}` is 14 bytes.
        let mut r = BufReader::new(&b"14:{\"event\":true},2:{},"[..]);
        assert_eq!(
            read_netstring(&mut r).unwrap(),
            Some(serde_json::json!({"event": true}))
        );
        assert_eq!(read_netstring(&mut r).unwrap(), Some(serde_json::json!({})));
        assert_eq!(read_netstring(&mut r).unwrap(), None);
        assert!(read_netstring(&mut BufReader::new(&b"5:{}"[..])).is_err());
    }

    #[test]
    fn tone_is_a_valid_wav() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.wav");
        write_tone(&p).unwrap();
        let b = fs::read(&p).unwrap();
        assert_eq!(b.len(), 44 + 2 * 8000 * AUDIO_SECONDS as usize);
        assert_eq!(&b[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([b[24], b[25], b[26], b[27]]), 8000);
    }
}
