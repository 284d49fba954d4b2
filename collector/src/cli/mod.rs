//! The command line: one subcommand per verb, each in its own module once built.
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod inventory;
pub mod keygen;
pub mod pseudonym;

pub use pseudonym::PseudonymArgs;
pub mod agent;
pub mod cdrs;
pub mod replay;
pub mod server;

/// eBPF-based VoIP metadata collector: follows SIP calls and RTP media quality on an SBC or
/// PBX host, pseudonymizes every identifier on the host and streams Call Detail Records to a
/// central collector.
#[derive(Debug, Parser)]
#[command(name = "collector", version, propagate_version = true)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `collector=debug`.
    #[arg(long, global = true, env = "COLLECTOR_LOG", default_value = "info")]
    pub log: String,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on this host: attach the kernel programs to interfaces, follow calls,
    /// and print or ship CDRs.
    Agent(AgentArgs),
    /// Run the central collector: ingest CDRs from agents, store them (SQLite or
    /// PostgreSQL), apply retention and erasure, serve queries and live flows.
    Server(ServerArgs),
    /// Show live call events (state changes, media stats, alerts) from an agent or the
    /// central collector.
    Flows(FlowsArgs),
    /// Query stored CDRs by time range, subject, disposition or quality.
    Cdrs(CdrsArgs),
    /// Erase every CDR of one subject (GDPR Art. 17) under every key in the retention window.
    Erase(EraseArgs),
    /// Generate a pseudonymization key file (mode 0600).
    Keygen(KeygenArgs),
    /// Print the pseudonym(s) a phone number or URI has under the configured keys.
    Pseudonym(PseudonymArgs),
    /// Print the data processing register for the running configuration: every field, its
    /// category, protection, storage and retention.
    Inventory(InventoryArgs),
    /// Run the userspace pipeline over a capture file (pcap or pcapng) and print its CDRs.
    Replay(ReplayArgs),
    /// Print the load and attach self-check: load the embedded eBPF object and report its
    /// programs and maps (no attachment).
    Check,
}

/// `collector agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Interface to attach to (repeat for several).
    #[arg(long = "iface", short = 'i', required = true)]
    pub ifaces: Vec<String>,
    /// Central collector to stream CDRs to (https://host:port); without it CDRs are printed
    /// as JSON lines on stdout.
    #[arg(long)]
    pub server: Option<String>,
    /// Configuration file (TOML); flags override it.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value_t = crate::capture::XdpModeArg::Auto)]
    pub xdp_mode: crate::capture::XdpModeArg,
    /// SIP ports (UDP and TCP).
    #[arg(long = "sip-port", default_values_t = [5060u16, 5080])]
    pub sip_ports: Vec<u16>,
    /// Bytes of each SIP packet copied to userspace (1..=4096).
    #[arg(long, default_value_t = collector_common::SNAP_DEFAULT)]
    pub snap_len: u32,
    /// Copy one RTP header in N to userspace (0 = none).
    #[arg(long, default_value_t = 0)]
    pub rtp_sample_every: u32,
    /// Ring buffer size in bytes (a power of two).
    #[arg(long, default_value_t = collector_common::RING_BYTES_DEFAULT)]
    pub ring_bytes: u32,
    /// Print the kernel counters every N seconds (0 = only at exit).
    #[arg(long, default_value_t = 0)]
    pub stats_every: u64,
    /// Write each captured SIP packet's metadata as a JSON line on stdout (debugging aid:
    /// addresses and payloads are NOT printed).
    #[arg(long)]
    pub print_events: bool,
}

/// `collector server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on for gRPC.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Storage URL: `sqlite://cdr.db` or `postgres://...`.
    #[arg(long, default_value = "sqlite://cdr.db")]
    pub db: String,
    /// Allow plaintext gRPC on a non-loopback address (TLS is not built yet; without this
    /// flag only 127.0.0.1/::1 are accepted, so CDRs never cross a network in clear by
    /// accident).
    #[arg(long)]
    pub insecure: bool,
}

/// `collector flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Server or agent to watch.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Keep streaming new events.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `collector cdrs`.
#[derive(Debug, Args)]
pub struct CdrsArgs {
    /// Server to query.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Only CDRs that started within this long ago (e.g. `1h`, `30m`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only CDRs where this pseudonym is the caller or callee (user, domain or display).
    #[arg(long)]
    pub pseudonym: Option<String>,
    /// Only CDRs with this disposition: answered, busy, no-answer, cancelled, failed,
    /// rejected.
    #[arg(long)]
    pub disposition: Option<String>,
    /// Most CDRs to print (0 = the server's default).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Output format.
    #[arg(long = "output", short = 'o', value_enum, default_value_t = cdrs::OutputFormat::Table)]
    pub output: cdrs::OutputFormat,
}

/// `collector erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// Server to send the request to.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Phone number of the subject (hashed before it is sent).
    #[arg(long, conflicts_with = "pseudonym")]
    pub number: Option<String>,
    /// Pseudonym of the subject.
    #[arg(long)]
    pub pseudonym: Option<String>,
}

/// `collector keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Key file to write (created with mode 0600; an existing file gets a new active key).
    #[arg(long, short = 'o')]
    pub out: std::path::PathBuf,
}

/// `collector inventory`.
#[derive(Debug, Args)]
pub struct InventoryArgs {
    /// Agent configuration file whose privacy policy to describe.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, default_value = "text")]
    pub format: String,
}

/// `collector replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture file (pcap or pcapng).
    pub file: std::path::PathBuf,
    /// Output format: `table` or `json` (one CDR per line).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Agent configuration (TOML): its `[privacy]` policy is applied (identifiers are
    /// printed in clear without it) and its `[calls]` settings used.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Additional SIP port (UDP and TCP), besides 5060 and 5080; repeat for several.
    #[arg(long = "sip-port")]
    pub sip_ports: Vec<u16>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Agent(a) => agent::run(a),
        Command::Check => crate::capture::self_check(),
        Command::Server(a) => server::run(a),
        Command::Flows(_) => not_built("flows", "live flow inspection"),
        Command::Cdrs(a) => cdrs::run(a),
        Command::Erase(_) => not_built("erase", "erasure requests"),
        Command::Keygen(a) => keygen::run(&a),
        Command::Pseudonym(a) => pseudonym::run(&a),
        Command::Inventory(a) => inventory::run(&a),
        Command::Replay(a) => replay::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collector: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_built(verb: &str, what: &str) -> anyhow::Result<()> {
    anyhow::bail!("`collector {verb}` is not built yet: {what} is still to come in this release")
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
