//! `collector replay FILE.pcap|pcapng`: the agent's userspace pipeline over a capture file,
//! with the kernel's media maps emulated in memory, printing one CDR per SIP dialog (or,
//! with `--by-call`, one row per call with its legs under it, grouped by
//! [`crate::callview::group`]).
//!
//! Identifiers are printed in clear unless `--config` names an agent configuration with a
//! `[privacy]` policy (scope and key file), which is then applied exactly as the agent
//! applies it. The output is deterministic: CDR ids are derived from the SHA-256 of the
//! capture file and the call's order in it (see `calls::cdr::cdr_id`), so replaying a file
//! twice prints the same bytes.
#![deny(clippy::indexing_slicing, clippy::panic)]
use std::{io::Write as _, path::Path};

use anyhow::Context as _;
use collector_proto::v1::{Cdr, FlowEvent};
use sha2::{Digest, Sha256};

use crate::calls::{
    media::{EmulatedMedia, EmulationStats, EMULATED_ENTRIES},
    tracker::{CdrIds, TrackerStats},
    CallsConfig, Tracker,
};
use crate::callview;
use crate::net::{pcap::PcapSource, DecoderConfig, NetStats};
use crate::pipeline::{Pipeline, Privacy, Schedule};
use crate::present::cdrs::{print_cdrs, OutputFormat};
use crate::privacy::{PrivacyConfig, Pseudonymizer};

/// Agent id written into replayed CDRs.
pub const REPLAY_AGENT_ID: &str = "replay";

/// What a replay needs besides the file.
#[derive(Debug, Default)]
pub struct ReplayOptions {
    /// Extra SIP ports (added to 5060 and 5080).
    pub sip_ports: Vec<u16>,
    /// Call tracking settings.
    pub calls: CallsConfig,
    /// Privacy policy (None: identifiers in clear).
    pub privacy: Option<PrivacyConfig>,
}

/// Everything a replay produced.
#[derive(Debug, Default)]
pub struct ReplayOutput {
    /// CDRs in the order they were completed.
    pub cdrs: Vec<Cdr>,
    /// Flow events in order.
    pub flows: Vec<FlowEvent>,
    /// Decoder counters.
    pub net: NetStats,
    /// Tracker counters.
    pub tracker: TrackerStats,
    /// Emulated kernel counters.
    pub media: EmulationStats,
    /// Entries left in the emulated maps after the end (0 when nothing leaked).
    pub media_left: (usize, usize),
    /// Requests per method.
    pub methods: Vec<(String, u64)>,
    /// Tracker tables left after the end (calls, Call-IDs, SDP and RTCP addresses): zero
    /// when nothing leaked.
    pub tables_left: [usize; 4],
}

fn file_hash(path: &Path) -> anyhow::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize().into())
}

/// Replays `path` through the pipeline; `on_cdr` sees each CDR as it completes.
pub fn replay_file(
    path: &Path,
    opts: &ReplayOptions,
    mut on_cdr: impl FnMut(&Cdr),
) -> anyhow::Result<ReplayOutput> {
    let seed = file_hash(path)?;
    let mut decoder = DecoderConfig::default();
    for &p in &opts.sip_ports {
        if !decoder.sip_ports.contains(&p) {
            decoder.sip_ports.push(p);
        }
    }
    let mut calls = opts.calls.clone();
    let privacy = match &opts.privacy {
        None => None,
        Some(pc) => {
            calls.consent_header = pc.consent.as_ref().map(|c| c.header.clone());
            Some(Privacy {
                pz: Pseudonymizer::from_config(pc).context("privacy policy")?,
                consent_header: calls.consent_header.clone(),
            })
        }
    };
    let media = EmulatedMedia::new(&decoder.sip_ports, EMULATED_ENTRIES);
    let tracker = Tracker::new(calls, REPLAY_AGENT_ID, CdrIds::Derived(seed));
    let mut pipe = Pipeline::new(decoder, tracker, media, privacy, Schedule::default());
    let mut src = PcapSource::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = ReplayOutput::default();
    let mut last_ts = 0u64;
    while let Some(frame) = src.next_frame() {
        let frame = frame.with_context(|| format!("reading {}", path.display()))?;
        last_ts = last_ts.max(frame.ts_ns);
        pipe.feed_frame(frame.ts_ns, &frame.data, None);
        for c in pipe.drain_cdrs() {
            on_cdr(&c);
            out.cdrs.push(c);
        }
        out.flows.extend(pipe.drain_flows());
    }
    pipe.finish(last_ts);
    for c in pipe.drain_cdrs() {
        on_cdr(&c);
        out.cdrs.push(c);
    }
    out.flows.extend(pipe.drain_flows());
    out.net = pipe.net_stats();
    out.tracker = pipe.tracker().stats();
    out.media = pipe.media().stats();
    out.media_left = pipe.media().len();
    out.tables_left = pipe.tracker().table_sizes();
    out.methods = pipe
        .tracker()
        .methods()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    Ok(out)
}

/// `collector replay`.
pub fn run(args: &super::ReplayArgs) -> anyhow::Result<()> {
    let format = args.output;
    if args.by_call && format == OutputFormat::Csv {
        anyhow::bail!("--by-call prints a table or json, not csv");
    }
    let mut opts = ReplayOptions {
        sip_ports: args.sip_ports.clone(),
        ..ReplayOptions::default()
    };
    if let Some(cfg) = &args.config {
        let text =
            std::fs::read_to_string(cfg).with_context(|| format!("reading {}", cfg.display()))?;
        opts.calls = CallsConfig::from_agent_toml(&text)?;
        let privacy = PrivacyConfig::from_agent_toml(&text)?;
        // A policy needs its key file; without one replay prints identifiers in clear
        // rather than pseudonyms of a throwaway key that would differ on every run.
        if privacy.key_file.is_some() {
            opts.privacy = Some(privacy);
        } else {
            eprintln!(
                "replay: {} names no privacy.key_file: identifiers are printed in clear",
                cfg.display()
            );
        }
    }
    // A capture is complete: one final record per call, no interim records (they exist
    // for billing calls still running on a live agent).
    opts.calls.interim_interval_ms = 0;
    if let Some(conn) = args.ship.connect_args() {
        if opts.privacy.is_none() {
            anyhow::bail!(
                "--server needs a privacy policy with a key file in --config: nothing leaves \
                 this process in clear"
            );
        }
        return load_into(args, &conn, &opts);
    }
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut write_err: Option<std::io::Error> = None;
    let out = replay_file(&args.file, &opts, |c| {
        if format == OutputFormat::Json && !args.by_call && write_err.is_none() {
            match serde_json::to_string(c) {
                Ok(s) => {
                    if let Err(e) = writeln!(lock, "{s}") {
                        write_err = Some(e);
                    }
                }
                Err(e) => write_err = Some(std::io::Error::other(e)),
            }
        }
    })?;
    if let Some(e) = write_err {
        return Err(e).context("writing the output");
    }
    if args.by_call {
        let calls = callview::group(out.cdrs.iter().cloned(), callview::Order::OldestFirst);
        let format = match format {
            OutputFormat::Json => callview::Format::Json,
            OutputFormat::Table | OutputFormat::Csv => callview::Format::Table,
        };
        callview::print(&mut lock, &calls, format).context("writing the output")?;
    } else if format != OutputFormat::Json {
        print_cdrs(&mut lock, &out.cdrs, format).context("writing the output")?;
    }
    drop(lock);
    eprintln!(
        "replay: {} CDRs, {} SIP messages ({} retransmissions, {} parse errors), {} RTP packets counted, {} RTCP",
        out.cdrs.len(),
        out.tracker.messages,
        out.tracker.retransmissions,
        out.tracker.parse_errors,
        out.media.rtp_matched + out.media.telephone_events,
        out.media.rtcp_copied,
    );
    Ok(())
}

/// `replay --server`: spools the capture's (pseudonymized) CDRs, fsynced, then ships them
/// like the agent does and waits (bounded) until the collector has acknowledged them all.
fn load_into(
    args: &super::ReplayArgs,
    conn: &super::connect::ConnectArgs,
    opts: &ReplayOptions,
) -> anyhow::Result<()> {
    use crate::{
        ship::Shipper,
        spool::{Spool, SpoolOptions},
    };
    let server = conn.server.as_str();
    let out = replay_file(&args.file, opts, |_| {})?;
    let agent_id = match &args.agent_id {
        Some(a) => a.clone(),
        None => format!(
            "replay-{}",
            args.file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    };
    let key_path = args.spool_key.as_deref();
    let spool = Spool::open_with_key_file(&args.spool_dir, SpoolOptions::default(), key_path)
        .with_context(|| format!("opening the spool {}", args.spool_dir.display()))?;
    let spool = std::sync::Arc::new(std::sync::Mutex::new(spool));
    // A capture already spooled here (a rerun, or a resumed interrupted load) is not
    // spooled again: its CDRs would get new sequence numbers and be stored twice. (A crash
    // between the append and the marker would still duplicate on the next run.)
    let marker = args.spool_dir.join(format!(
        "loaded-{}",
        file_hash(&args.file)?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let last = if marker.exists() {
        eprintln!("replay: this capture is in the spool already; shipping what is pending");
        crate::spool::lock(&spool)?.last_seq()
    } else {
        // The records name the agent they are streamed as (the server groups and filters
        // by it), not the offline replay's own name.
        let payloads: Vec<Vec<u8>> = out
            .cdrs
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.agent_id.clone_from(&agent_id);
                prost::Message::encode_to_vec(&c)
            })
            .collect();
        let (_, last) = crate::spool::lock(&spool)?
            .append_batch(payloads.iter().map(Vec::as_slice))
            .context("spooling the CDRs")?;
        std::fs::write(&marker, last.to_string())
            .with_context(|| format!("writing {}", marker.display()))?;
        last
    };
    let security = conn.security()?;
    let shipper =
        Shipper::new(std::sync::Arc::clone(&spool), server, agent_id).with_security(security);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let spool2 = std::sync::Arc::clone(&spool);
    rt.block_on(async move {
        let done = async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while std::time::Instant::now() < deadline {
                if crate::spool::lock(&spool2).map_or(true, |s| s.acked() >= last) {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        };
        shipper.run(done).await
    })?;
    let acked = crate::spool::lock(&spool)?.acked();
    if acked < last {
        anyhow::bail!(
            "the collector acknowledged up to {acked} of {last} within 2 minutes; the rest stays \
             in {} and goes out on the next run",
            args.spool_dir.display()
        );
    }
    eprintln!("replay: {} CDRs stored by {server}", out.cdrs.len());
    Ok(())
}
