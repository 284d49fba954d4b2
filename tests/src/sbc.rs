//! The SBC test topology: a carrier, a session border controller and a PBX in three network
//! namespaces, with real SIP and RTP between them, for the end-to-end tests and the demo.
//!
//! ```text
//!  ns carrier               ns sbc                                        ns pbx
//!  sipp UAC                 Kamailio :5060 (SIP proxy, optionally topoh)  sipp UAS
//!  198.18.10.2 ── veth ── 198.18.10.1     rtpengine     198.18.20.1 ── veth ── 198.18.20.2
//!  media :6000              RTP 30000-30999 on both sides, ng on 127.0.0.1   media :6000
//! ```
//!
//! Kamailio record-routes every dialog (RFC 3261 16.6 step 4, double Record-Route because each
//! call changes interface) and hands each SDP offer and answer (RFC 3264) to rtpengine, which
//! rewrites the connection address to its own and relays the media in userspace, so every RTP
//! packet crosses the SBC twice: once per leg. In [`SbcMode::TopologyHiding`] Kamailio's
//! `topoh` module also masks the Call-ID, so the two legs of a call carry different Call-IDs
//! as they would behind a B2BUA.
//!
//! Impairments work without netem (this kernel has no netem qdisc), and only on the media the
//! PBX sends, so the carrier's media stays clean for comparison:
//! - jitter is written into the media capture the PBX plays: sipp replays a capture at its
//!   recorded times, so each packet leaves up to `jitter` late (rather than a delaying relay,
//!   which would need the SDP to point at it);
//! - loss is an iptables `statistic` rule in the SBC namespace's `raw` PREROUTING chain on the
//!   PBX-facing interface, for UDP to rtpengine's ports: the SBC's XDP hook and tshark on that
//!   interface still see every packet the PBX sent, rtpengine receives and forwards to the
//!   carrier only the survivors, so the loss shows on the carrier leg. (A DROP in the PBX's
//!   OUTPUT chain would be nearer the wire, but makes `sendto` fail with EPERM, which stops
//!   sipp's media player.)
//!
//! Every process runs in its own process group inside a namespace this module created, and is
//! stopped (the whole group) when its owner drops, before the namespaces go; every wait is
//! bounded in time.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    marker::PhantomData,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    ops::RangeInclusive,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};

use crate::{ip, ns_exec, unique, Netns};

/// The carrier's address (sipp UAC), in namespace `carrier`.
pub const CARRIER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// The SBC's address towards the carrier.
pub const SBC_CARRIER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
/// The SBC's address towards the PBX.
pub const SBC_PBX_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 1);
/// The PBX's address (sipp UAS), in namespace `pbx`.
pub const PBX_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 20, 2);
/// The SIP port of every peer (UDP).
pub const SIP_PORT: u16 = 5060;
/// The RTP port of both sipp instances (one port for all their calls, as a media server).
pub const MEDIA_PORT: u16 = 6000;
/// The ports rtpengine allocates on both of its interfaces.
pub const RTP_PORTS: RangeInclusive<u16> = 30000..=30999;
/// SSRC of the RTP the carrier sends.
pub const CARRIER_SSRC: u32 = 0x0CA2_0001;
/// SSRC of the RTP the PBX sends.
pub const PBX_SSRC: u32 = 0x0BB0_0002;

/// rtpengine's ng control port on the SBC's loopback.
const NG_PORT: u16 = 2223;
/// The source of the audio both sides play: G.711 A-law, 30 ms packets, shipped with sipp.
const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";
/// Set to keep the topology's directory (configs, logs, sipp traces, captures) after the test.
const KEEP_ENV: &str = "VCT_SBC_KEEP";

const KAMAILIO_CFG: &str = include_str!("../sbc/kamailio.cfg");
const RTPENGINE_CONF: &str = include_str!("../sbc/rtpengine.conf");

/// How Kamailio treats the calls it relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbcMode {
    /// A record-routing stateful proxy: both legs of a call carry the same Call-ID.
    Proxy,
    /// The proxy plus the `topoh` module masking Via, Record-Route, Contact and the Call-ID:
    /// each leg carries its own Call-ID, as with a B2BUA.
    TopologyHiding,
}

/// A call flow, run as a sipp UAC in the carrier and a sipp UAS in the PBX (the XML files
/// under `tests/sbc/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// 180, 200 with SDP, PCMA audio both ways for [`CallOptions::duration`], BYE from the caller.
    Answered,
    /// 486 Busy Here from the PBX.
    Busy,
    /// 180, then the caller sends CANCEL after [`CallOptions::ring`]; 487 from the PBX.
    Cancelled,
    /// 180, then 480 Temporarily Unavailable from the PBX after [`CallOptions::ring`].
    NoAnswer,
    /// Answered; after `duration` a re-INVITE with a=sendonly (the PBX answers a=recvonly and
    /// falls silent while the carrier plays music on hold), after another `duration` a
    /// re-INVITE with a=sendrecv, talk for a third `duration`, BYE (RFC 3264 8.4).
    HoldResume,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 5] = [
        Scenario::Answered,
        Scenario::Busy,
        Scenario::Cancelled,
        Scenario::NoAnswer,
        Scenario::HoldResume,
    ];

    /// Short name, as in the XML file names.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Answered => "answered",
            Scenario::Busy => "busy",
            Scenario::Cancelled => "cancelled",
            Scenario::NoAnswer => "no_answer",
            Scenario::HoldResume => "hold",
        }
    }

    /// The disposition the collector gives a call of this flow (its proto enum name, as
    /// CDRs and flow events in JSON carry it).
    pub fn disposition(self) -> &'static str {
        match self {
            Scenario::Answered | Scenario::HoldResume => "DISPOSITION_ANSWERED",
            Scenario::Busy => "DISPOSITION_BUSY",
            Scenario::Cancelled => "DISPOSITION_CANCELLED",
            Scenario::NoAnswer => "DISPOSITION_NO_ANSWER",
        }
    }

    /// The final response the caller gets to its initial INVITE.
    pub fn final_status(self) -> u16 {
        match self {
            Scenario::Answered | Scenario::HoldResume => 200,
            Scenario::Busy => 486,
            Scenario::Cancelled => 487,
            Scenario::NoAnswer => 480,
        }
    }

    fn templates(self) -> (&'static str, &'static str) {
        match self {
            Scenario::Answered => (
                include_str!("../sbc/uac_answered.xml"),
                include_str!("../sbc/uas_answered.xml"),
            ),
            Scenario::Busy => (
                include_str!("../sbc/uac_busy.xml"),
                include_str!("../sbc/uas_busy.xml"),
            ),
            Scenario::Cancelled => (
                include_str!("../sbc/uac_cancelled.xml"),
                include_str!("../sbc/uas_cancelled.xml"),
            ),
            Scenario::NoAnswer => (
                include_str!("../sbc/uac_no_answer.xml"),
                include_str!("../sbc/uas_no_answer.xml"),
            ),
            Scenario::HoldResume => (
                include_str!("../sbc/uac_hold.xml"),
                include_str!("../sbc/uas_hold.xml"),
            ),
        }
    }

    /// sipp's `-d` (the scenario's `<pause/>`) for the caller and the callee.
    fn pauses(self, o: &CallOptions) -> (Duration, Duration) {
        match self {
            Scenario::Answered | Scenario::HoldResume | Scenario::Busy => (o.duration, o.duration),
            Scenario::Cancelled => (o.ring, o.duration),
            Scenario::NoAnswer => (o.duration, o.ring),
        }
    }
}

/// How [`Topology::run_calls`] runs its calls.
#[derive(Clone, Debug)]
pub struct CallOptions {
    /// Talk time of an answered call; each of the three phases of a held call. Media captures
    /// last this long (rounded down to whole 30 ms packets).
    pub duration: Duration,
    /// Ringing before the caller cancels ([`Scenario::Cancelled`]) or the PBX gives up
    /// ([`Scenario::NoAnswer`]).
    pub ring: Duration,
    /// New calls per second.
    pub rate: u32,
    /// Most calls at once.
    pub max_concurrent: u32,
    /// Probability (0 to 1) that an RTP packet the PBX sends is dropped on arrival at the SBC,
    /// after the SBC's interface saw it and before rtpengine gets it.
    pub loss: f64,
    /// Largest extra delay of an RTP packet the PBX sends (uniform from zero).
    pub jitter: Duration,
    /// Seed of the jitter.
    pub seed: u64,
    /// The caller's URI user (the From of every call), in sipp's keyword syntax: the
    /// default `carrier[call_number]` gives each call of a run its own caller (`carrier1`,
    /// `carrier2`, ...); a fixed number such as `+4930111001` makes every call of the run
    /// come from that number.
    pub caller: String,
    /// Bound on the run: sipp (`-timeout`) starts no call after it and lets the calls in
    /// progress end; the harness kills whatever still runs 10 s later (the statistics are then
    /// those sipp dumped within the last second, and `exit_code` is `None`).
    pub timeout: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(2),
            ring: Duration::from_millis(500),
            rate: 10,
            max_concurrent: 10,
            loss: 0.0,
            jitter: Duration::ZERO,
            seed: 1,
            caller: "carrier[call_number]".to_owned(),
            timeout: Duration::from_secs(30),
        }
    }
}

impl CallOptions {
    fn validate(&self) -> Result<()> {
        ensure!(
            (0.0..1.0).contains(&self.loss),
            "loss must be in [0, 1), got {}",
            self.loss
        );
        ensure!(self.rate >= 1, "rate must be at least 1 call/s");
        ensure!(
            self.max_concurrent >= 1,
            "max_concurrent must be at least 1"
        );
        ensure!(
            self.duration >= Duration::from_millis(100),
            "duration must be at least 100 ms"
        );
        ensure!(
            self.jitter <= Duration::from_secs(1),
            "jitter above 1 s is not a jitter"
        );
        ensure!(
            self.timeout >= Duration::from_secs(1) && self.timeout <= Duration::from_secs(600),
            "timeout must be within 1 s and 10 min"
        );
        ensure!(
            !self.caller.is_empty()
                && !self
                    .caller
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b"<>@;:\"".contains(&b)),
            "caller must be a URI user, got {:?}",
            self.caller
        );
        Ok(())
    }
}

/// One response-time duration sipp measured in a call (its `-trace_rtt` file): `setup` runs
/// from the INVITE to its final response, `call` from the INVITE to the 200 of the BYE.
#[derive(Clone, Debug, PartialEq)]
pub struct Rtd {
    /// The scenario's RTD name.
    pub name: String,
    /// Milliseconds.
    pub millis: f64,
}

/// What one sipp instance reported about its run.
#[derive(Clone, Debug, Default)]
pub struct SippStats {
    /// sipp's exit code (0: every call succeeded, 1: some failed); `None` if it had to be killed.
    pub exit_code: Option<i32>,
    /// Calls sipp created (`TotalCallCreated`; for the UAS, incoming calls).
    pub created: u64,
    /// Calls that ran their scenario to the end (`SuccessfulCall(C)`).
    pub successful: u64,
    /// Calls that did not (`FailedCall(C)`).
    pub failed: u64,
    /// Of the failed: unexpected messages (`FailedUnexpectedMessage(C)`).
    pub failed_unexpected: u64,
    /// Of the failed: receive timeouts and exhausted retransmissions.
    pub failed_timeout: u64,
    /// Retransmissions sipp sent (`Retransmissions(C)`).
    pub retransmissions: u64,
    /// Every column of the last line of the `-trace_stat` file.
    pub columns: BTreeMap<String, String>,
    /// Message counts per scenario step from `-trace_counts`, e.g. `"5_486_Recv"`.
    pub messages: BTreeMap<String, u64>,
    /// Per-call response-time durations from `-trace_rtt` (one line per call and RTD).
    pub rtd: Vec<Rtd>,
    /// The `-trace_err` file, line by line (at most [`MAX_ERROR_LINES`]).
    pub errors: Vec<String>,
}

/// Lines of sipp's error file kept in [`SippStats::errors`].
pub const MAX_ERROR_LINES: usize = 200;

impl SippStats {
    /// Messages named `name` (a method or a status code) received, over every scenario step.
    pub fn received(&self, name: &str) -> u64 {
        self.count(name, "Recv")
    }

    /// Messages named `name` sent (first transmissions), over every scenario step.
    pub fn sent(&self, name: &str) -> u64 {
        self.count(name, "Sent")
    }

    /// The durations of the RTD `name`, in milliseconds, one per call that reached its end.
    pub fn rtd_ms(&self, name: &str) -> Vec<f64> {
        self.rtd
            .iter()
            .filter(|r| r.name == name)
            .map(|r| r.millis)
            .collect()
    }

    fn count(&self, name: &str, dir: &str) -> u64 {
        let want = format!("{name}_{dir}");
        self.messages
            .iter()
            .filter(|(k, _)| {
                k.split_once('_').is_some_and(|(idx, rest)| {
                    !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) && rest == want
                })
            })
            .map(|(_, v)| *v)
            .sum()
    }
}

/// The result of [`Topology::run_calls`]: sipp's own statistics from both ends.
#[derive(Clone, Debug)]
pub struct SippResult {
    /// The scenario run.
    pub scenario: Scenario,
    /// Calls asked for.
    pub calls: u32,
    /// The caller, in the carrier.
    pub uac: SippStats,
    /// The callee, in the PBX.
    pub uas: SippStats,
    /// Wall time from starting the UAC to both ends finished.
    pub elapsed: Duration,
    /// Where the run's scenarios, media captures and sipp traces are.
    pub dir: PathBuf,
}

impl SippResult {
    /// sipp's verdict on the run: every call ran its scenario to the end on both sides, and
    /// the caller got the scenario's final response to each INVITE.
    pub fn check_all_ok(&self) -> Result<()> {
        let (r, n) = (self, u64::from(self.calls));
        ensure!(
            r.uac.created == n
                && r.uac.successful == n
                && r.uac.failed == 0
                && r.uas.successful == n
                && r.uas.failed == 0,
            "{:?}: uac {}/{}/{} uas {}/{} errors {:?} {:?}; traces in {}",
            r.scenario,
            r.uac.created,
            r.uac.successful,
            r.uac.failed,
            r.uas.successful,
            r.uas.failed,
            r.uac.errors,
            r.uas.errors,
            r.dir.display()
        );
        ensure!(
            r.uac.received(&r.scenario.final_status().to_string()) >= n,
            "{:?}: the caller did not get its final responses",
            r.scenario
        );
        Ok(())
    }
}

/// One line of `tshark -q -z rtp,streams`.
#[derive(Clone, Debug, PartialEq)]
pub struct RtpStreamStat {
    /// Sender.
    pub src: SocketAddrV4,
    /// Receiver.
    pub dst: SocketAddrV4,
    /// Synchronisation source.
    pub ssrc: u32,
    /// Payload name as tshark prints it (e.g. `g711A`).
    pub payload: String,
    /// Packets seen.
    pub packets: u64,
    /// Packets missing by sequence number (negative for duplicates).
    pub lost: i64,
    /// Largest gap between packets, ms.
    pub max_delta_ms: f64,
    /// Mean RFC 3550 interarrival jitter, ms.
    pub mean_jitter_ms: f64,
    /// Largest RFC 3550 interarrival jitter, ms.
    pub max_jitter_ms: f64,
    /// tshark flagged a problem (sequence errors, wrong timestamps).
    pub problems: bool,
}

/// The three namespaces, the two links and the SBC's daemons.
pub struct Topology {
    // Declared first, so they are dropped (stopped) before the namespaces go.
    kamailio: Proc,
    rtpengine: Proc,
    runs: AtomicU32,
    /// Which Kamailio configuration runs.
    pub mode: SbcMode,
    /// The carrier's interface (in [`Topology::carrier`]).
    pub carrier_if: String,
    /// The SBC's interface towards the carrier (in [`Topology::sbc`]).
    pub sbc_carrier_if: String,
    /// The SBC's interface towards the PBX (in [`Topology::sbc`]).
    pub sbc_pbx_if: String,
    /// The PBX's interface (in [`Topology::pbx`]).
    pub pbx_if: String,
    dir: tempfile::TempDir,
    /// Namespace of the carrier (sipp UAC).
    pub carrier: Netns,
    /// Namespace of the SBC (Kamailio, rtpengine; where the agent attaches).
    pub sbc: Netns,
    /// Namespace of the PBX (sipp UAS).
    pub pbx: Netns,
}

impl Topology {
    /// Creates the namespaces and links, starts rtpengine then Kamailio in the SBC namespace,
    /// and returns once both answer (an ng `ping`, a SIP OPTIONS on each side), within 20 s.
    pub fn up(mode: SbcMode) -> Result<Self> {
        require_tools()?;
        let carrier = Netns::new("car")?;
        let sbc = Netns::new("sbc")?;
        let pbx = Netns::new("pbx")?;
        let carrier_if = unique("c");
        let sbc_carrier_if = unique("sc");
        let sbc_pbx_if = unique("sp");
        let pbx_if = unique("p");
        veth(
            (&carrier, &carrier_if, CARRIER_IP),
            (&sbc, &sbc_carrier_if, SBC_CARRIER_IP),
        )?;
        veth((&sbc, &sbc_pbx_if, SBC_PBX_IP), (&pbx, &pbx_if, PBX_IP))?;

        let dir = tempfile::Builder::new()
            .prefix("vct-sbc-")
            .disable_cleanup(std::env::var_os(KEEP_ENV).is_some())
            .tempdir()
            .context("creating the topology's directory")?;
        let vars = [
            ("CARRIER_IP", CARRIER_IP.to_string()),
            ("CARRIER_SBC_IP", SBC_CARRIER_IP.to_string()),
            ("PBX_SBC_IP", SBC_PBX_IP.to_string()),
            ("PBX_IP", PBX_IP.to_string()),
            // topoh writes this host into the URIs it masks; the carrier's view of the SBC.
            ("MASK_IP", SBC_CARRIER_IP.to_string()),
            ("NG_PORT", NG_PORT.to_string()),
            ("PORT_MIN", RTP_PORTS.start().to_string()),
            ("PORT_MAX", RTP_PORTS.end().to_string()),
        ];
        let rtp_conf = dir.path().join("rtpengine.conf");
        fs::write(&rtp_conf, render(RTPENGINE_CONF, &vars)?)?;
        let kam_cfg = dir.path().join("kamailio.cfg");
        fs::write(&kam_cfg, render(KAMAILIO_CFG, &vars)?)?;

        let mut rtpengine = Proc::spawn(
            "rtpengine",
            &sbc.name,
            &[
                "rtpengine",
                "--config-file",
                path_str(&rtp_conf)?,
                "--config-section",
                "rtpengine",
            ],
            dir.path(),
            &dir.path().join("rtpengine.log"),
        )?;
        // Kamailio marks an rtpengine that does not answer as down, so it starts second.
        wait_until("rtpengine to answer an ng ping", &mut rtpengine, || {
            ng_ping(&sbc)
        })?;

        let mut args = vec![
            "kamailio",
            "-f",
            path_str(&kam_cfg)?,
            "-DD",
            "-E",
            "-m",
            "64",
            "-M",
            "8",
            "-Y",
            path_str(dir.path())?,
            "-w",
            path_str(dir.path())?,
        ];
        if mode == SbcMode::TopologyHiding {
            args.extend(["-A", "WITH_TOPOH"]);
        }
        let mut kamailio = Proc::spawn(
            "kamailio",
            &sbc.name,
            &args,
            dir.path(),
            &dir.path().join("kamailio.log"),
        )?;
        wait_until(
            "Kamailio to answer OPTIONS on both sides",
            &mut kamailio,
            || {
                Ok(sip_ping(&carrier, CARRIER_IP, SBC_CARRIER_IP)?
                    && sip_ping(&pbx, PBX_IP, SBC_PBX_IP)?)
            },
        )?;
        if !rtpengine.running() {
            bail!("rtpengine exited: {}", rtpengine.log_tail());
        }

        Ok(Self {
            kamailio,
            rtpengine,
            runs: AtomicU32::new(0),
            mode,
            carrier_if,
            sbc_carrier_if,
            sbc_pbx_if,
            pbx_if,
            dir,
            carrier,
            sbc,
            pbx,
        })
    }

    /// The SBC's two interfaces (towards the carrier, towards the PBX), where the agent attaches.
    pub fn sbc_ifaces(&self) -> [&str; 2] {
        [&self.sbc_carrier_if, &self.sbc_pbx_if]
    }

    /// The directory holding the configs, the daemons' logs, the runs and the captures
    /// (kept after the test when `VCT_SBC_KEEP` is set).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of Kamailio's and rtpengine's logs, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- kamailio ---\n{}\n--- rtpengine ---\n{}",
            self.kamailio.log_tail(),
            self.rtpengine.log_tail()
        )
    }

    /// Runs `n` calls of `scenario`: sipp UAS in the PBX, then sipp UAC in the carrier
    /// towards the SBC; waits (bounded by `options.timeout` plus a margin) for both, and
    /// returns their own statistics. Calls that fail are counted, not an error; an error
    /// means sipp itself could not run.
    pub fn run_calls(
        &self,
        scenario: Scenario,
        n: u32,
        options: &CallOptions,
    ) -> Result<SippResult> {
        options.validate()?;
        ensure!((1..=10_000).contains(&n), "calls must be within 1..=10000");
        self.check_daemons()?;
        let k = self.runs.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.path().join(format!("run{k}-{}", scenario.name()));
        let uac_dir = dir.join("uac");
        let uas_dir = dir.join("uas");
        fs::create_dir_all(&uac_dir)?;
        fs::create_dir_all(&uas_dir)?;

        let (uac_tpl, uas_tpl) = scenario.templates();
        let seed = options.seed ^ u64::from(k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let uac_media = MediaSide {
            src: CARRIER_IP,
            dst: SBC_CARRIER_IP,
            ssrc: CARRIER_SSRC,
            seq0: 1000,
            ts0: 16_000,
            jitter: Duration::ZERO,
            seed,
        };
        let uas_media = MediaSide {
            src: PBX_IP,
            dst: SBC_PBX_IP,
            ssrc: PBX_SSRC,
            seq0: 30_000,
            ts0: 800_000,
            jitter: options.jitter,
            seed: seed ^ 0x5eed,
        };
        let uac_xml = uac_dir.join(format!("uac_{}.xml", scenario.name()));
        fs::write(
            &uac_xml,
            render_scenario(
                uac_tpl,
                &uac_dir,
                &uac_media,
                options.duration,
                &[("CALLER", options.caller.clone())],
            )?,
        )?;
        let uas_xml = uas_dir.join(format!("uas_{}.xml", scenario.name()));
        fs::write(
            &uas_xml,
            render_scenario(uas_tpl, &uas_dir, &uas_media, options.duration, &[])?,
        )?;

        let _loss = if options.loss > 0.0 {
            Some(self.pbx_media_loss(options.loss)?)
        } else {
            None
        };

        let (uac_pause, uas_pause) = scenario.pauses(options);
        let timeout_s = options.timeout.as_secs().max(1).to_string();
        let n_s = n.to_string();
        let uas_pause_ms = uas_pause.as_millis().to_string();
        let uas_ip = PBX_IP.to_string();
        let mut uas_args = sipp_common(&uas_xml, &uas_ip, &n_s, &timeout_s)?;
        uas_args.extend(["-d".to_owned(), uas_pause_ms]);
        let mut uas = Proc::spawn(
            "sipp UAS",
            &self.pbx.name,
            &uas_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &uas_dir,
            &uas_dir.join("sipp.log"),
        )?;
        wait_until("the sipp UAS to listen", &mut uas, || {
            let out = ns_exec(
                &self.pbx.name,
                &["ss", "-Hlun", &format!("sport = :{SIP_PORT}")],
            )?;
            Ok(!out.trim().is_empty())
        })?;

        let uac_ip = CARRIER_IP.to_string();
        let mut uac_args = sipp_common(&uac_xml, &uac_ip, &n_s, &timeout_s)?;
        uac_args.extend([
            "-r".to_owned(),
            options.rate.to_string(),
            "-l".to_owned(),
            options.max_concurrent.to_string(),
            "-d".to_owned(),
            uac_pause.as_millis().to_string(),
            "-trace_rtt".to_owned(),
            "-rtt_freq".to_owned(),
            "1".to_owned(),
            format!("{SBC_CARRIER_IP}:{SIP_PORT}"),
        ]);
        let started = Instant::now();
        let mut uac = Proc::spawn(
            "sipp UAC",
            &self.carrier.name,
            &uac_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &uac_dir,
            &uac_dir.join("sipp.log"),
        )?;
        let margin = Duration::from_secs(10);
        let uac_status = uac.wait_exit(options.timeout + margin)?;
        uac.stop(libc::SIGTERM, Duration::from_secs(2));
        // The UAS ends after its n-th call; it may still be taking the last ACK or BYE. If the
        // UAC had to be killed, calls are left half done and the UAS will not end by itself.
        let uas_grace = Duration::from_secs(if uac_status.is_some() { 5 } else { 1 });
        let uas_status = uas.wait_exit(uas_grace)?;
        uas.stop(libc::SIGTERM, Duration::from_secs(2));
        let elapsed = started.elapsed();

        let uac_stats = collect_stats("sipp UAC", &uac, &uac_dir, uac_status)?;
        let uas_stats = collect_stats("sipp UAS", &uas, &uas_dir, uas_status)?;
        Ok(SippResult {
            scenario,
            calls: n,
            uac: uac_stats,
            uas: uas_stats,
            elapsed,
            dir,
        })
    }

    /// Starts `tshark -i IFACE -w FILE` in the SBC namespace and returns once it captures.
    /// The capture stops when the returned value is stopped or dropped, which must happen
    /// before the topology goes.
    pub fn capture(&self, iface: &str) -> Result<TsharkCapture<'_>> {
        ensure!(
            iface == self.sbc_carrier_if || iface == self.sbc_pbx_if,
            "capture on one of the SBC's interfaces"
        );
        let k = self.runs.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("capture{k}-{iface}.pcapng"));
        let log = self.dir.path().join(format!("capture{k}-{iface}.log"));
        let mut proc = Proc::spawn(
            "tshark",
            &self.sbc.name,
            &["tshark", "-n", "-q", "-i", iface, "-w", path_str(&path)?],
            self.dir.path(),
            &log,
        )?;
        let want = format!("Capturing on '{iface}'");
        wait_until("tshark to capture", &mut proc, || {
            Ok(fs::read_to_string(&log)
                .map(|s| s.contains(&want))
                .unwrap_or(false))
        })?;
        Ok(TsharkCapture {
            proc: Some(proc),
            path,
            _topology: PhantomData,
        })
    }

    /// Drops each UDP packet the PBX sends to rtpengine's ports with probability `loss`, on
    /// arrival at the SBC (after its interface and the agent saw it), until the returned rule
    /// is dropped. [`CallOptions::loss`] does this for sipp's calls.
    pub fn pbx_media_loss(&self, loss: f64) -> Result<IptablesRule> {
        ensure!(
            loss > 0.0 && loss < 1.0,
            "loss must be in (0, 1), got {loss}"
        );
        let ports = format!("{}:{}", RTP_PORTS.start(), RTP_PORTS.end());
        let p = format!("{loss:.6}");
        IptablesRule::add(
            &self.sbc.name,
            "raw",
            "PREROUTING",
            &[
                "-i",
                &self.sbc_pbx_if,
                "-p",
                "udp",
                "--dport",
                &ports,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
                "-j",
                "DROP",
            ],
        )
    }

    fn check_daemons(&self) -> Result<()> {
        // `running` needs `&mut`; the pids are ours, so a signal 0 probe is enough here.
        for p in [&self.kamailio, &self.rtpengine] {
            if !p.alive() {
                bail!("{} is not running: {}", p.name, p.log_tail());
            }
        }
        Ok(())
    }
}

/// A running `tshark -w` inside the SBC namespace; stopped on drop.
pub struct TsharkCapture<'t> {
    proc: Option<Proc>,
    path: PathBuf,
    _topology: PhantomData<&'t Topology>,
}

impl TsharkCapture<'_> {
    /// The capture file (pcapng), complete once [`TsharkCapture::stop`] returned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the capture (SIGINT, as at a terminal, so the file is complete) and returns its
    /// path. Idempotent.
    pub fn stop(&mut self) -> Result<&Path> {
        if let Some(mut proc) = self.proc.take() {
            // Let packets already on the wire reach the capture.
            std::thread::sleep(Duration::from_millis(300));
            proc.signal_leader(libc::SIGINT);
            let status = proc.wait_exit(Duration::from_secs(10))?;
            proc.stop(libc::SIGTERM, Duration::from_secs(2));
            if status.is_none() {
                bail!("tshark did not stop within 10 s of SIGINT");
            }
        }
        ensure!(
            self.path.exists(),
            "tshark wrote no file at {}",
            self.path.display()
        );
        Ok(&self.path)
    }

    /// Stops the capture and returns every distinct `sip.Call-ID` in it.
    pub fn sip_call_ids(&mut self) -> Result<BTreeSet<String>> {
        let out = tshark_read(
            self.stop()?,
            &["-Y", "sip", "-T", "fields", "-e", "sip.Call-ID"],
        )?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    /// Stops the capture and returns, per Call-ID of a dialog that began with an INVITE
    /// in it, the method or status code of each of its SIP messages in capture order.
    pub fn sip_ladders(&mut self) -> Result<BTreeMap<String, Vec<String>>> {
        let out = tshark_read(
            self.stop()?,
            &[
                "-Y",
                "sip",
                "-T",
                "fields",
                "-E",
                "separator=/t",
                "-e",
                "sip.Call-ID",
                "-e",
                "sip.Method",
                "-e",
                "sip.Status-Code",
            ],
        )?;
        let mut ladders: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in out.lines() {
            let mut f = line.split('\t');
            let (Some(id), Some(method), Some(status)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let label = if method.is_empty() { status } else { method };
            ladders
                .entry(id.trim().to_owned())
                .or_default()
                .push(label.trim().to_owned());
        }
        ladders.retain(|_, l| l.first().is_some_and(|m| m == "INVITE"));
        Ok(ladders)
    }

    /// Stops the capture and returns `tshark -q -z rtp,streams` as printed.
    pub fn rtp_streams_text(&mut self) -> Result<String> {
        tshark_read(
            self.stop()?,
            &["-q", "-o", "rtp.heuristic_rtp:TRUE", "-z", "rtp,streams"],
        )
    }

    /// Stops the capture and returns tshark's RTP stream analysis, one entry per stream.
    pub fn rtp_streams(&mut self) -> Result<Vec<RtpStreamStat>> {
        parse_rtp_streams(&self.rtp_streams_text()?)
    }
}

impl Drop for TsharkCapture<'_> {
    fn drop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.signal_leader(libc::SIGINT);
            let _ = proc.wait_exit(Duration::from_secs(5));
        }
    }
}

/// Runs `tshark -r FILE ARGS...` and returns its stdout.
fn tshark_read(file: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running tshark -r")?;
    if !out.status.success() {
        bail!(
            "tshark -r {} {}: {}",
            file.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses the table of `tshark -q -z rtp,streams`: `start end src sport dst dport ssrc
/// payload... pkts lost (pct) min_delta mean_delta max_delta min_jitter mean_jitter
/// max_jitter [X]`. The payload name may contain spaces, so it is what remains in between.
pub fn parse_rtp_streams(text: &str) -> Result<Vec<RtpStreamStat>> {
    let mut streams = Vec::new();
    for line in text.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        // A data line starts with two floats; headers and rules do not.
        let is_data = t.len() >= 16
            && t.first().is_some_and(|s| s.parse::<f64>().is_ok())
            && t.get(1).is_some_and(|s| s.parse::<f64>().is_ok());
        if !is_data {
            continue;
        }
        let problems = t.last() == Some(&"X");
        let end = if problems { t.len() - 1 } else { t.len() };
        let field = |i: usize| -> Result<&str> {
            t.get(i)
                .copied()
                .with_context(|| format!("rtp,streams line too short: {line}"))
        };
        let f64_at = |i: usize| -> Result<f64> {
            field(i)?
                .parse::<f64>()
                .with_context(|| format!("rtp,streams: bad number in {line}"))
        };
        let addr = |ip: usize, port: usize| -> Result<SocketAddrV4> {
            Ok(SocketAddrV4::new(
                field(ip)?.parse().context("rtp,streams: bad address")?,
                field(port)?.parse().context("rtp,streams: bad port")?,
            ))
        };
        // From the end: 6 delta/jitter columns, "(pct)", lost, pkts.
        ensure!(end >= 16, "rtp,streams line too short: {line}");
        let ssrc_s = field(6)?;
        let ssrc =
            u32::from_str_radix(ssrc_s.trim_start_matches("0x").trim_start_matches("0X"), 16)
                .with_context(|| format!("rtp,streams: bad SSRC in {line}"))?;
        let payload = t.get(7..end - 9).map(|p| p.join(" ")).unwrap_or_default();
        streams.push(RtpStreamStat {
            src: addr(2, 3)?,
            dst: addr(4, 5)?,
            ssrc,
            payload,
            packets: field(end - 9)?
                .parse()
                .with_context(|| format!("rtp,streams: bad packet count in {line}"))?,
            lost: field(end - 8)?
                .parse()
                .with_context(|| format!("rtp,streams: bad lost count in {line}"))?,
            max_delta_ms: f64_at(end - 4)?,
            mean_jitter_ms: f64_at(end - 2)?,
            max_jitter_ms: f64_at(end - 1)?,
            problems,
        });
    }
    Ok(streams)
}

/// A process started inside a namespace, leader of its own process group (also used by
/// [`crate::baresip`]).
pub(crate) struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Proc {
    pub(crate) fn spawn(
        name: &'static str,
        ns: &str,
        argv: &[&str],
        cwd: &Path,
        log: &Path,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // `ip netns exec` execs the program, so the child's pid is the program's pid, and
        // everything it forks stays in the group the child leads.
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
            exited: None,
        })
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Whether the leader is still running (reaps it if not).
    pub(crate) fn running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exited = Some(s);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Whether the leader exists, without reaping it.
    fn alive(&self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        // SAFETY: signal 0 to our own child's pid only checks that it exists.
        let exists = unsafe { libc::kill(self.pid(), 0) } == 0;
        // An exited but not yet reaped child still exists, as a zombie.
        let zombie = fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        exists && !zombie
    }

    /// Waits up to `within` for the leader to exit; `None` if it still runs.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + within;
        loop {
            if !self.running() {
                return Ok(self.exited);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal_leader(&self, sig: i32) {
        if self.exited.is_none() {
            // SAFETY: a signal to our own, not yet reaped, child.
            unsafe {
                libc::kill(self.pid(), sig);
            }
        }
    }

    pub(crate) fn signal_group(&self, sig: i32) {
        // SAFETY: a signal to the process group our child leads (created with
        // process_group(0)); ESRCH once every member is gone is harmless.
        unsafe {
            libc::kill(-self.pid(), sig);
        }
    }

    /// Sends `sig` to the group, waits up to `grace` for the leader, then kills the group.
    pub(crate) fn stop(&mut self, sig: i32, grace: Duration) {
        if self.running() {
            self.signal_group(sig);
            let _ = self.wait_exit(grace);
        }
        // Children (Kamailio's workers, tshark's dumpcap) may outlive the leader.
        self.signal_group(libc::SIGKILL);
        if self.running() {
            let _ = self.child.wait().map(|s| self.exited = Some(s));
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(25);
        lines.get(from..).map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM, Duration::from_secs(5));
    }
}

/// An iptables rule in a namespace, deleted on drop.
pub struct IptablesRule {
    ns: String,
    /// `-t TABLE`, the chain's place (filled with `-A` or `-D`), the chain, the rule.
    args: Vec<String>,
}

impl IptablesRule {
    fn add(ns: &str, table: &str, chain: &str, rule: &[&str]) -> Result<Self> {
        let mut args: Vec<String> = ["iptables", "-w", "-t", table, "-A", chain]
            .into_iter()
            .chain(rule.iter().copied())
            .map(str::to_owned)
            .collect();
        ns_exec(ns, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
        if let Some(op) = args.get_mut(4) {
            "-D".clone_into(op);
        }
        Ok(Self {
            ns: ns.to_owned(),
            args,
        })
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let _ = ns_exec(
            &self.ns,
            &self.args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
    }
}

fn require_tools() -> Result<()> {
    let mut missing = Vec::new();
    for tool in ["kamailio", "rtpengine", "sipp", "tshark", "iptables", "ss"] {
        let found = std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p).any(|d| d.join(tool).is_file())
                    || Path::new("/usr/sbin").join(tool).is_file()
            })
            .unwrap_or(false);
        if !found {
            missing.push(tool);
        }
    }
    ensure!(
        missing.is_empty(),
        "missing {missing:?}: run `cargo xtask setup` (Debian packages kamailio, rtpengine-daemon, sip-tester, tshark, iptables, iproute2)"
    );
    ensure!(
        Path::new(G711A_PCAP).is_file(),
        "{G711A_PCAP} is missing (Debian package sip-tester)"
    );
    Ok(())
}

pub(crate) fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("non-UTF-8 path {}", p.display()))
}

/// Joins `a` and `b` with a veth pair, addresses in a /24, IPv6 off and static neighbours,
/// so the only packets on the wire are the test's.
fn veth(a: (&Netns, &str, Ipv4Addr), b: (&Netns, &str, Ipv4Addr)) -> Result<()> {
    let (ns_a, if_a, addr_a) = a;
    let (ns_b, if_b, addr_b) = b;
    ip(&["link", "add", if_a, "type", "veth", "peer", "name", if_b])?;
    ip(&["link", "set", if_a, "netns", &ns_a.name])?;
    ip(&["link", "set", if_b, "netns", &ns_b.name])?;
    for (ns, ifn, addr) in [(ns_a, if_a, addr_a), (ns_b, if_b, addr_b)] {
        ns_exec(
            &ns.name,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{ifn}.disable_ipv6=1"),
            ],
        )?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            ifn,
        ])?;
        ip(&["-n", &ns.name, "link", "set", ifn, "up"])?;
    }
    let mac = |ns: &Netns, ifn: &str| -> Result<String> {
        let out = ns_exec(&ns.name, &["cat", &format!("/sys/class/net/{ifn}/address")])?;
        Ok(out.trim().to_owned())
    };
    let mac_a = mac(ns_a, if_a)?;
    let mac_b = mac(ns_b, if_b)?;
    for (ns, ifn, peer, peer_mac) in [(ns_a, if_a, addr_b, &mac_b), (ns_b, if_b, addr_a, &mac_a)] {
        ip(&[
            "-n",
            &ns.name,
            "neigh",
            "replace",
            &peer.to_string(),
            "lladdr",
            peer_mac,
            "dev",
            ifn,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// Polls `ready` every 100 ms for up to 20 s while `proc` runs.
pub(crate) fn wait_until(
    what: &str,
    proc: &mut Proc,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ready()? {
            return Ok(());
        }
        if !proc.running() {
            bail!(
                "waiting for {what}: {} exited ({:?}):\n{}",
                proc.name,
                proc.exited,
                proc.log_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!("waiting for {what}: not within 20 s:\n{}", proc.log_tail());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One ng `ping` to rtpengine from inside the SBC namespace.
fn ng_ping(sbc: &Netns) -> Result<bool> {
    sbc.run(|| {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        sock.connect((Ipv4Addr::LOCALHOST, NG_PORT))?;
        // The ng protocol: a cookie, a space, a bencoded dictionary.
        sock.send(b"vctready d7:command4:pinge")?;
        let mut buf = [0u8; 512];
        match sock.recv(&mut buf) {
            Ok(n) => Ok(buf
                .get(..n)
                .is_some_and(|r| r.windows(4).any(|w| w == b"pong"))),
            Err(_) => Ok(false),
        }
    })
}

static PROBES: AtomicU32 = AtomicU32::new(0);

/// One SIP OPTIONS from `local` (inside `ns`) to Kamailio at `target`; true on a 200.
fn sip_ping(ns: &Netns, local: Ipv4Addr, target: Ipv4Addr) -> Result<bool> {
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    ns.run(move || {
        let sock = UdpSocket::bind((local, 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(300)))?;
        let port = sock.local_addr()?.port();
        let msg = format!(
            "OPTIONS sip:{target}:{SIP_PORT} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local}:{port};branch=z9hG4bK-vct-ready-{n}\r\n\
             From: <sip:probe@{local}>;tag=vct{n}\r\n\
             To: <sip:{target}>\r\n\
             Call-ID: vct-ready-{n}@{local}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), (target, SIP_PORT))?;
        let mut buf = [0u8; 2048];
        match sock.recv(&mut buf) {
            Ok(n) => Ok(buf.get(..n).is_some_and(|r| r.starts_with(b"SIP/2.0 200"))),
            Err(_) => Ok(false),
        }
    })
}

/// Replaces every `@NAME@` of `vars`; fails if a placeholder is left.
fn render(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = template.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("@{k}@"), v);
    }
    if let Some(p) = placeholders(&out).into_iter().next() {
        bail!("template placeholder @{p}@ has no value");
    }
    Ok(out)
}

/// The `@NAME@` placeholders in `text` (NAME of capitals, digits and underscores).
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find('@') {
        let after = rest.get(start + 1..).unwrap_or_default();
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if len > 0 && after.as_bytes().get(len) == Some(&b'@') {
            found.insert(after.get(..len).unwrap_or_default().to_owned());
            rest = after.get(len + 1..).unwrap_or_default();
        } else {
            rest = after;
        }
    }
    found
}

/// Fills a scenario's `@PCAP_S_T@` placeholders with media captures written to `dir`: each
/// lasts `duration`; its RTP sequence numbers continue after S earlier captures of this side
/// and its timestamps after T phases of the call, as a phone's do across a hold. The other
/// placeholders take their value from `given`.
fn render_scenario(
    template: &str,
    dir: &Path,
    side: &MediaSide,
    duration: Duration,
    given: &[(&str, String)],
) -> Result<String> {
    let mut vars: Vec<(String, String)> = given
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let needed: BTreeSet<String> = placeholders(template)
        .into_iter()
        .filter(|p| !given.iter().any(|(k, _)| k == p))
        .collect();
    if !needed.is_empty() {
        let source = RtpSource::load(Path::new(G711A_PCAP))?;
        for p in needed {
            let (s, t) = p
                .strip_prefix("PCAP_")
                .and_then(|st| st.split_once('_'))
                .and_then(|(s, t)| Some((s.parse::<u32>().ok()?, t.parse::<u32>().ok()?)))
                .with_context(|| format!("unknown scenario placeholder @{p}@"))?;
            let file = dir.join(format!("media_{s}_{t}.pcap"));
            write_media(&file, &source, side, s, t, duration)?;
            vars.push((p.clone(), path_str(&file)?.to_owned()));
        }
    }
    let vars: Vec<(&str, String)> = vars.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    render(template, &vars)
}

/// Who sends a media capture, and how.
struct MediaSide {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
    jitter: Duration,
    seed: u64,
}

/// The RTP payloads of a capture (the audio that is looped), with their packetisation.
struct RtpSource {
    payloads: Vec<Vec<u8>>,
    payload_type: u8,
    /// RTP timestamp units per packet (G.711: one per payload byte).
    samples: u32,
    ptime: Duration,
}

/// Packets read from a source capture at most.
const MAX_SOURCE_PACKETS: usize = 10_000;

impl RtpSource {
    fn load(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut reader = pcap_file::pcap::PcapReader::new(file)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut payloads = Vec::new();
        let mut payload_type = None;
        while let Some(pkt) = reader.next_packet() {
            let pkt = pkt.with_context(|| format!("reading {}", path.display()))?;
            let Ok(sliced) = etherparse::SlicedPacket::from_ethernet(&pkt.data) else {
                continue;
            };
            let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
                continue;
            };
            let rtp = udp.payload();
            // RFC 3550 5.1: version 2, 12 bytes plus 4 per CSRC, then an optional extension.
            let (Some(&b0), Some(&b1)) = (rtp.first(), rtp.get(1)) else {
                continue;
            };
            if b0 >> 6 != 2 || b0 & 0x10 != 0 {
                continue;
            }
            let header = 12 + 4 * usize::from(b0 & 0x0f);
            let Some(body) = rtp.get(header..) else {
                continue;
            };
            if body.is_empty() || payload_type.is_some_and(|pt| pt != b1 & 0x7f) {
                continue;
            }
            payload_type = Some(b1 & 0x7f);
            payloads.push(body.to_vec());
            if payloads.len() >= MAX_SOURCE_PACKETS {
                break;
            }
        }
        let payload_type = payload_type.with_context(|| format!("no RTP in {}", path.display()))?;
        ensure!(
            payload_type == 0 || payload_type == 8,
            "{}: payload type {payload_type} is not G.711",
            path.display()
        );
        let samples = payloads
            .first()
            .map(|p| u32::try_from(p.len()).unwrap_or(u32::MAX))
            .unwrap_or(0);
        ensure!(
            (8..=1600).contains(&samples) && payloads.iter().all(|p| p.len() == samples as usize),
            "{}: payloads of different sizes",
            path.display()
        );
        Ok(Self {
            payloads,
            payload_type,
            samples,
            ptime: Duration::from_micros(u64::from(samples) * 125),
        })
    }
}

/// A small deterministic generator (SplitMix64) for the jitter: reproducible per seed, and
/// no cryptographic property is needed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Writes a pcap sipp can play: `duration` of RTP from `side`, looping the source's audio,
/// packet `i` recorded at `i * ptime` plus a uniform delay of up to `side.jitter` (never
/// before the previous packet, so sipp keeps the order).
fn write_media(
    path: &Path,
    source: &RtpSource,
    side: &MediaSide,
    seq_phase: u32,
    time_phase: u32,
    duration: Duration,
) -> Result<()> {
    let per_phase = u32::try_from(duration.as_micros() / source.ptime.as_micros().max(1))
        .unwrap_or(u32::MAX)
        .clamp(1, 100_000);
    let first = seq_phase.saturating_mul(per_phase);
    let mut rng = SplitMix64(side.seed ^ (u64::from(seq_phase) << 32 | u64::from(time_phase)));
    let jitter_us = u64::try_from(side.jitter.as_micros()).unwrap_or(u64::MAX);
    let base = Duration::from_secs(1_700_000_000);
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = pcap_file::pcap::PcapWriter::new(file)?;
    let mut last = Duration::ZERO;
    for i in 0..per_phase {
        let n = first.wrapping_add(i);
        let seq = side.seq0.wrapping_add(n as u16);
        let ts = side.ts0.wrapping_add(
            time_phase
                .wrapping_mul(per_phase)
                .wrapping_add(i)
                .wrapping_mul(source.samples),
        );
        let len = source.payloads.len().max(1);
        let audio = source
            .payloads
            .get(n as usize % len)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut rtp = Vec::with_capacity(12 + audio.len());
        // Marker on the first packet of each phase: the start of a talkspurt (RFC 3551 4.1).
        let marker = if i == 0 { 0x80 } else { 0 };
        rtp.extend_from_slice(&[0x80, marker | source.payload_type]);
        rtp.extend_from_slice(&seq.to_be_bytes());
        rtp.extend_from_slice(&ts.to_be_bytes());
        rtp.extend_from_slice(&side.ssrc.to_be_bytes());
        rtp.extend_from_slice(audio);

        let delay = if jitter_us > 0 {
            Duration::from_micros(rng.next() % (jitter_us + 1))
        } else {
            Duration::ZERO
        };
        let at = (source.ptime * i + delay).max(last);
        last = at;

        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(side.src.octets(), side.dst.octets(), 64)
            .udp(MEDIA_PORT, MEDIA_PORT);
        let mut frame = Vec::with_capacity(builder.size(rtp.len()));
        builder
            .write(&mut frame, &rtp)
            .context("building an RTP frame")?;
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        writer.write_packet(&pcap_file::pcap::PcapPacket::new(
            base + at,
            orig_len,
            &frame,
        ))?;
    }
    Ok(())
}

/// The sipp arguments both sides share: scenario, addresses, call count, traces, timeout.
fn sipp_common(scenario: &Path, ip: &str, n: &str, timeout_s: &str) -> Result<Vec<String>> {
    Ok([
        "sipp",
        "-sf",
        path_str(scenario)?,
        "-i",
        ip,
        "-p",
        &SIP_PORT.to_string(),
        "-mi",
        ip,
        "-mp",
        &MEDIA_PORT.to_string(),
        "-m",
        n,
        "-nostdin",
        "-timeout",
        timeout_s,
        "-trace_stat",
        "-stf",
        "stat.csv",
        "-fd",
        "1",
        "-trace_counts",
        "-trace_err",
        "-error_file",
        "errors.log",
        "-trace_msg",
        "-message_file",
        "messages.log",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect())
}

/// Reads one sipp's statistics from its directory.
fn collect_stats(
    name: &str,
    proc: &Proc,
    dir: &Path,
    status: Option<ExitStatus>,
) -> Result<SippStats> {
    let exit_code = status.and_then(|s| s.code());
    if let Some(code) = exit_code {
        // 0: all calls succeeded; 1: some failed. Anything else: sipp could not run.
        if code != 0 && code != 1 {
            bail!(
                "{name} exited with {code}:\n{}\n{}",
                proc.log_tail(),
                fs::read_to_string(dir.join("errors.log")).unwrap_or_default()
            );
        }
    }
    let stat = fs::read_to_string(dir.join("stat.csv"))
        .with_context(|| format!("{name} wrote no statistics:\n{}", proc.log_tail()))?;
    let columns = parse_last_csv_row(&stat)?;
    let num = |k: &str| -> Result<u64> {
        let v = columns
            .get(k)
            .with_context(|| format!("{name}: no column {k} in its statistics"))?;
        v.trim()
            .parse::<u64>()
            .with_context(|| format!("{name}: column {k} is not a count: {v}"))
    };
    let mut stats = SippStats {
        exit_code,
        created: num("TotalCallCreated")?,
        successful: num("SuccessfulCall(C)")?,
        failed: num("FailedCall(C)")?,
        failed_unexpected: num("FailedUnexpectedMessage(C)")?,
        failed_timeout: num("FailedTimeoutOnRecv(C)")? + num("FailedMaxUDPRetrans(C)")?,
        retransmissions: num("Retransmissions(C)")?,
        ..SippStats::default()
    };
    if let Some(counts) = find_file(dir, "_counts.csv")? {
        for (k, v) in parse_last_csv_row(&fs::read_to_string(counts)?)? {
            if let Ok(v) = v.trim().parse::<u64>() {
                stats.messages.insert(k, v);
            }
        }
    }
    if let Some(rtt) = find_file(dir, "_rtt.csv")? {
        stats.rtd = parse_rtt(&fs::read_to_string(rtt)?)?;
    }
    stats.columns = columns;
    if let Ok(errors) = fs::read_to_string(dir.join("errors.log")) {
        stats.errors = errors
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(MAX_ERROR_LINES)
            .map(|l| l.chars().take(300).collect())
            .collect();
    }
    Ok(stats)
}

fn find_file(dir: &Path, suffix: &str) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(suffix))
        {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// sipp's `;`-separated statistics: a header line, then one line per dump; the last counts.
fn parse_last_csv_row(text: &str) -> Result<BTreeMap<String, String>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().context("empty sipp statistics file")?;
    let last = lines
        .next_back()
        .context("sipp statistics file without data")?;
    Ok(header
        .split(';')
        .zip(last.split(';'))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect())
}

/// sipp's `-trace_rtt` file: `Date_ms;response_time_ms;rtd_no` then one line per measure.
fn parse_rtt(text: &str) -> Result<Vec<Rtd>> {
    let mut out = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let mut f = line.split(';');
        let (Some(_), Some(ms), Some(name)) = (f.next(), f.next(), f.next()) else {
            bail!("bad sipp rtt line: {line}");
        };
        out.push(Rtd {
            name: name.trim().to_owned(),
            millis: ms
                .trim()
                .parse()
                .with_context(|| format!("bad sipp rtt line: {line}"))?,
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_rendered() {
        let t = "a @X@ b sip:[service]@[remote_ip] @PCAP_1_2@ @x@ @@";
        let p = placeholders(t);
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            vec!["PCAP_1_2".to_owned(), "X".to_owned()]
        );
        assert!(render(t, &[("X", "1".into())]).is_err());
        let r = render(t, &[("X", "1".into()), ("PCAP_1_2", "f".into())]).unwrap();
        assert_eq!(r, "a 1 b sip:[service]@[remote_ip] f @x@ @@");
    }

    #[test]
    fn every_template_renders() {
        let vars = [
            ("CARRIER_IP", "a".to_owned()),
            ("CARRIER_SBC_IP", "b".to_owned()),
            ("PBX_SBC_IP", "c".to_owned()),
            ("PBX_IP", "d".to_owned()),
            ("MASK_IP", "e".to_owned()),
            ("NG_PORT", "1".to_owned()),
            ("PORT_MIN", "2".to_owned()),
            ("PORT_MAX", "3".to_owned()),
        ];
        render(KAMAILIO_CFG, &vars).unwrap();
        render(RTPENGINE_CONF, &vars).unwrap();
        for s in Scenario::ALL {
            let (uac, uas) = s.templates();
            for t in [uac, uas] {
                // The media captures and the caller's number are the scenario's own
                // (filled per call); anything else would be left unrendered.
                for p in placeholders(t) {
                    assert!(p.starts_with("PCAP_") || p == "CALLER", "{s:?}: {p}");
                }
            }
        }
    }

    // A line of tshark 3.6's `-z rtp,streams`, as printed for a capture of this topology.
    #[test]
    fn parses_rtp_streams() {
        let text = "========================= RTP Streams ========================\n   Start time      End time     Src IP addr  Port    Dest IP addr  Port       SSRC          Payload  Pkts         Lost   Min Delta(ms)  Mean Delta(ms)   Max Delta(ms)  Min Jitter(ms) Mean Jitter(ms)  Max Jitter(ms) Problems?\n     0.103383      2.083872     198.18.20.1 30050     198.18.20.2  6000 0xDEE0EE8F            g711A    67     0 (0.0%)           9.685          30.007          50.813           0.003           0.611           4.000 \n     0.104637      5.981355     198.18.20.1 30334     198.18.20.2  6000 0xDEE0EE8F            g711A   197  -134 (-212.7%)          19.246          30.003          41.073           0.004          19.528         119.388 X\n==============================================================\n";
        let s = parse_rtp_streams(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].src, "198.18.20.1:30050".parse().unwrap());
        assert_eq!(s[0].dst, "198.18.20.2:6000".parse().unwrap());
        assert_eq!(s[0].ssrc, 0xDEE0_EE8F);
        assert_eq!(s[0].payload, "g711A");
        assert_eq!((s[0].packets, s[0].lost), (67, 0));
        assert_eq!(s[0].max_delta_ms, 50.813);
        assert_eq!(s[0].mean_jitter_ms, 0.611);
        assert_eq!(s[0].max_jitter_ms, 4.0);
        assert!(!s[0].problems);
        assert_eq!((s[1].packets, s[1].lost), (197, -134));
        assert!(s[1].problems);
    }

    // Lines as sipp 3.6.1 wrote them in this topology.
    #[test]
    fn parses_sipp_files() {
        let counts = "CurrentTime;ElapsedTime;0_INVITE_Recv;0_INVITE_Retrans;1_180_Sent;2_486_Sent;3_ACK_Recv;\n2026-11-25\t14:08:45.031876\t1795615725.031876;00:00:00:005000;0;0;0;0;0;\n2026-11-25\t14:08:47.742205\t1795615727.742205;00:00:02:217000;3;0;3;3;3;\n";
        let stats = SippStats {
            messages: parse_last_csv_row(counts)
                .unwrap()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.parse().ok()?)))
                .collect(),
            ..SippStats::default()
        };
        assert_eq!(stats.received("INVITE"), 3);
        assert_eq!(stats.sent("486"), 3);
        assert_eq!(stats.sent("180"), 3);
        assert_eq!(stats.received("486"), 0);
        let rtt = parse_rtt("Date_ms;response_time_ms;rtd_no\n112.001;8;setup\n2116;2012;call\n")
            .unwrap();
        assert_eq!(
            rtt,
            vec![
                Rtd {
                    name: "setup".into(),
                    millis: 8.0
                },
                Rtd {
                    name: "call".into(),
                    millis: 2012.0
                }
            ]
        );
    }

    // The generated media: continuous sequence numbers and timestamps across phases, the
    // source's payload type and packet size, send times at ptime plus at most the jitter.
    #[test]
    fn media_capture_is_continuous_and_jittered() {
        if !Path::new(G711A_PCAP).is_file() {
            eprintln!("skipped: {G711A_PCAP} missing (sip-tester)");
            return;
        }
        let source = RtpSource::load(Path::new(G711A_PCAP)).unwrap();
        // tshark on the file: 236 packets of 240 bytes of PCMA (payload type 8), 30 ms apart.
        assert_eq!(source.payloads.len(), 236);
        assert_eq!((source.payload_type, source.samples), (8, 240));
        assert_eq!(source.ptime, Duration::from_millis(30));
        let dir = tempfile::tempdir().unwrap();
        let side = MediaSide {
            src: PBX_IP,
            dst: SBC_PBX_IP,
            ssrc: PBX_SSRC,
            seq0: 65_530,
            ts0: 100,
            jitter: Duration::from_millis(40),
            seed: 7,
        };
        let path = dir.path().join("m.pcap");
        write_media(&path, &source, &side, 1, 2, Duration::from_millis(300)).unwrap();
        let mut reader = pcap_file::pcap::PcapReader::new(File::open(&path).unwrap()).unwrap();
        let mut times = Vec::new();
        let mut rtp = Vec::new();
        while let Some(p) = reader.next_packet() {
            let p = p.unwrap();
            times.push(p.timestamp);
            let s = etherparse::SlicedPacket::from_ethernet(&p.data).unwrap();
            let Some(etherparse::TransportSlice::Udp(u)) = s.transport else {
                panic!("not UDP")
            };
            rtp.push(u.payload().to_vec());
        }
        assert_eq!(rtp.len(), 10);
        for (i, r) in rtp.iter().enumerate() {
            let seq = u16::from_be_bytes([r[2], r[3]]);
            let ts = u32::from_be_bytes([r[4], r[5], r[6], r[7]]);
            // Phase S=1 starts 10 packets in; T=2 starts 20 packets (of 240 samples) in.
            assert_eq!(seq, 65_530u16.wrapping_add(10 + i as u16));
            assert_eq!(ts, 100 + (20 + i as u32) * 240);
            assert_eq!(r[1] & 0x7f, 8);
            assert_eq!(r[1] & 0x80 != 0, i == 0);
            assert_eq!(&r[8..12], &PBX_SSRC.to_be_bytes());
            assert_eq!(r.len(), 12 + 240);
        }
        let t0 = times[0] - Duration::from_secs(1_700_000_000);
        assert!(t0 <= Duration::from_millis(40));
        for (i, w) in times.windows(2).enumerate() {
            assert!(w[1] >= w[0]);
            let nominal = Duration::from_millis(30 * (i as u64 + 1));
            let at = w[1] - Duration::from_secs(1_700_000_000);
            assert!(at >= nominal && at <= nominal + Duration::from_millis(40));
        }
        assert!(
            times
                .windows(2)
                .any(|w| w[1] - w[0] != Duration::from_millis(30)),
            "a 40 ms jitter moved no packet"
        );
    }
}
