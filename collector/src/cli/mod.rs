//! The command line: one subcommand per verb, each in its own module once built.
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

pub mod inventory;
pub mod keygen;
pub mod pseudonym;

pub use pseudonym::PseudonymArgs;
pub mod agent;
pub mod cdrs;
pub mod flows;
pub mod replay;
pub mod server;
pub mod top;

pub use flows::FlowsArgs;
pub use top::TopArgs;
pub mod admin;
pub mod connect;
pub mod erase;
pub mod rates;
pub mod report;
pub mod ship_spool;
pub mod tenants;
pub mod token;

pub use connect::{ConnectArgs, SubjectArgs};

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
    /// Live view of active calls with their media quality and SIP ladder (terminal UI).
    Top(TopArgs),
    /// Query stored CDRs by time range, subject, disposition or quality.
    Cdrs(CdrsArgs),
    /// Erase every CDR of one subject (GDPR Art. 17) under every key in the retention window.
    Erase(EraseArgs),
    /// Manage the rate tables billing rates calls with (stored in the central collector).
    Rates(rates::RatesArgs),
    /// Reports from the central collector (usage per destination, for billing).
    Report(report::ReportArgs),
    /// Issue a bearer token for the collector (or create its signing secret).
    Token(TokenArgs),
    /// List the collector's tenants with their CDR counts and retention (provider token).
    Tenants(TenantsArgs),
    /// Tenant administration: delete a tenant (crypto-shredding), rotate its data key.
    Admin(admin::AdminArgs),
    /// Ship a spool directory to a collector (test and recovery tool).
    #[command(hide = true)]
    ShipSpool(ShipSpoolArgs),
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
    /// The central collector and how to reach it (TLS, client certificate, token: the same
    /// flags as every verb that talks to a server).
    #[command(flatten)]
    pub ship: connect::ShipArgs,
    /// Spool directory (created 0700): a CDR counts as produced once it is fsynced here;
    /// what the collector has not acknowledged is resent after any restart.
    #[arg(long, default_value = "/var/lib/collector/spool")]
    pub spool_dir: std::path::PathBuf,
    /// Master key file that seals the spool at rest (128 hex digits; created with mode 0600
    /// if missing; refused inside the spool directory). Deleting it makes the spool
    /// unreadable.
    #[arg(long, value_name = "PATH", default_value = "/etc/collector/spool.key")]
    pub spool_key: std::path::PathBuf,
    /// Write the spool in clear, without a key (a spool already holding sealed records is
    /// refused).
    #[arg(long)]
    pub spool_unsealed: bool,
    /// Serve the agent's own live flows (Watch API, for `collector flows`/`top`) here.
    #[arg(long)]
    pub watch_listen: Option<String>,
    /// Allow `--watch-listen` on a non-loopback address without TLS.
    #[arg(long)]
    pub insecure: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (kernel counters, ring, parse
    /// errors, dialogs, media streams, CDRs, spool, shipping; never an identifier).
    #[arg(long)]
    pub metrics_listen: Option<String>,
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
    /// Storage URL: `sqlite://cdr.db` or `postgres://user@host/db` (libpq-style).
    #[arg(long, env = "COLLECTOR_DB", default_value = "sqlite://cdr.db")]
    pub db: String,
    /// PEM CA of the PostgreSQL server's certificate: connections to the database use TLS
    /// and verify it (put `sslmode=require` in the URL so plaintext is never used).
    #[arg(long)]
    pub db_ca: Option<std::path::PathBuf>,
    /// PEM certificate chain of the server (turns TLS on, with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the server.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA of agent certificates: turns on mutual TLS (clients must present a
    /// certificate signed by it).
    #[arg(long, requires = "tls_cert")]
    pub client_ca: Option<std::path::PathBuf>,
    /// With --client-ca, also accept clients without a certificate (operators' CLIs);
    /// a certificate that is presented must still chain to the CA.
    #[arg(long, requires = "client_ca")]
    pub client_auth_optional: bool,
    /// Token signing secret file (create one with `collector token --init --secret FILE`):
    /// every call then needs a bearer token of the right role.
    #[arg(long)]
    pub token_secret: Option<std::path::PathBuf>,
    /// Delete CDRs older than this many days, after folding them into daily aggregates
    /// (0 = keep until erased).
    #[arg(long, default_value_t = crate::server::retention::DEFAULT_DAYS)]
    pub retention_days: u32,
    /// Time between retention runs (e.g. `1h`, `15m`).
    #[arg(long, default_value = "1h")]
    pub retention_interval: String,
    /// Allow a listener without TLS or without tokens on a non-loopback address (without
    /// this flag such a listener is refused, so CDRs never cross a network in clear or
    /// unauthenticated by accident).
    #[arg(long)]
    pub insecure: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Serve the read-only web console at ADDR (off by default): over the same TLS and
    /// tokens as gRPC, and refused without them off loopback unless --insecure, like
    /// --listen.
    #[arg(long)]
    pub web_listen: Option<String>,
    /// Agent configuration file whose `[privacy]` table (scope, key file, national rule)
    /// lets `collector flows --number` filter live flows by phone number.
    #[arg(long)]
    pub privacy_config: Option<std::path::PathBuf>,
    /// A tenant whose agents pseudonymize under their own keys: TENANT=PATH of those
    /// agents' configuration file. That tenant's number searches (web console, live-flow
    /// number filters) use its keys instead of --privacy-config's. Repeatable.
    #[arg(long, value_name = "TENANT=PATH")]
    pub tenant_privacy_config: Vec<String>,
    /// Live flow events kept for `collector flows --last/--since`.
    #[arg(long, default_value_t = crate::watch::hub::DEFAULT_HISTORY)]
    pub watch_history: usize,
    /// The master key that wraps the tenants' data keys (encryption at rest): a file of 128
    /// hex digits, mode 0600, created if missing; keep it apart from the database and its
    /// backups. The key itself may come from the environment variable COLLECTOR_MASTER_KEY.
    #[arg(
        long,
        env = "COLLECTOR_MASTER_KEY_FILE",
        default_value = "/etc/collector/master.key"
    )]
    pub master_key: std::path::PathBuf,
    /// The tenants' data keys, wrapped by the master key (created at the first tenant). Kept
    /// apart from the database: removing a tenant's keys makes its rows unreadable in every
    /// copy of the database.
    #[arg(
        long,
        env = "COLLECTOR_TENANT_KEYS",
        default_value = "/etc/collector/tenant-keys"
    )]
    pub tenant_keys: std::path::PathBuf,
    /// A tenant whose CDRs are kept fewer days than `--retention-days`: `TENANT=DAYS`
    /// (repeatable).
    #[arg(long, value_parser = parse_tenant_days)]
    pub tenant_retention: Vec<(String, u32)>,
    /// Store CDRs in clear (no encryption at rest). Off only when asked for.
    #[arg(long, conflicts_with = "master_key")]
    pub no_encryption: bool,
}

/// `collector cdrs`.
#[derive(Debug, Args)]
pub struct CdrsArgs {
    /// Collector connection.
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Only CDRs that started at or after this: a duration ago (`1h`, `30m`, `7d`) or an
    /// RFC 3339 time (`2025-01-31T09:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only CDRs that started before this (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only CDRs of this subject (number hashed here, or pseudonyms).
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Only CDRs with this disposition: answered, busy, no-answer, cancelled, failed,
    /// rejected.
    #[arg(long)]
    pub disposition: Option<String>,
    /// Only CDRs from this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only CDRs with a media leg that lost at least this many percent.
    #[arg(long)]
    pub min_loss: Option<f64>,
    /// Only CDRs with a media leg whose MOS is at most this.
    #[arg(long)]
    pub max_mos: Option<f64>,
    /// Most CDRs to print (0 = the server's default).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Output format.
    #[arg(long = "output", short = 'o', value_enum, default_value_t = cdrs::OutputFormat::Table)]
    pub output: cdrs::OutputFormat,
    /// One row per call rather than per leg: the legs the agent linked (one correlation id)
    /// under their call, every leg of a call with a matching leg (`--limit` counts calls;
    /// table or json).
    #[arg(long)]
    pub by_call: bool,
    /// Only CDRs of this tenant (a provider token reads every tenant unless it names one; a
    /// tenant's token always reads its own).
    #[arg(long, default_value = "")]
    pub tenant: String,
}

/// `collector erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// Collector connection (needs an `admin` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The subject: a number (hashed here under every key of the key file, never sent) or
    /// its pseudonyms.
    #[command(flatten)]
    pub subject: SubjectArgs,
    /// Reference for the audit log (e.g. the request's ticket number; no identifiers).
    #[arg(long, default_value = "")]
    pub reference: String,
    /// Erase in this tenant only (a provider token erases in every tenant unless it names
    /// one; a tenant's token always erases in its own).
    #[arg(long, default_value = "")]
    pub tenant: String,
}

/// `collector token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The server's token signing secret file.
    #[arg(long)]
    pub secret: std::path::PathBuf,
    /// Create the secret file (mode 0600; refuses to overwrite) instead of issuing a token.
    #[arg(long, conflicts_with_all = ["role", "ttl", "subject", "tenant"])]
    pub init: bool,
    /// What the token allows: ingest (agents), read (queries), admin (queries, erasure,
    /// rates), all three confined to one tenant; provider (the provider's own operators:
    /// admin over every tenant, and the tenant list).
    #[arg(long, required_unless_present = "init")]
    pub role: Option<String>,
    /// The tenant (customer) the token is confined to: an agent's CDRs are stored under it,
    /// a reader sees only its CDRs and live flows (default: `default`; not for `provider`).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Lifetime (e.g. `12h`, `30d`).
    #[arg(long, default_value = "30d")]
    pub ttl: String,
    /// Who holds the token (agent id or operator), written to the audit log; default the
    /// role name.
    #[arg(long)]
    pub subject: Option<String>,
}

/// `TENANT=DAYS` of `--tenant-retention`.
fn parse_tenant_days(s: &str) -> Result<(String, u32), String> {
    let (tenant, days) = s
        .split_once('=')
        .ok_or_else(|| "expected TENANT=DAYS".to_owned())?;
    if !crate::server::token::valid_tenant(tenant) {
        return Err(format!("{tenant:?} is not a tenant name"));
    }
    let days = days
        .parse()
        .map_err(|_| format!("{days:?} is not a number of days"))?;
    Ok((tenant.to_owned(), days))
}

/// `collector tenants`: the tenant list, for the provider's operators.
#[derive(Debug, Args)]
pub struct TenantsArgs {
    /// Collector connection (needs a `provider` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// `collector ship-spool` (hidden): ships a spool directory, optionally appending generated
/// CDRs at a steady rate first, as an agent would.
#[derive(Debug, Args)]
pub struct ShipSpoolArgs {
    /// The spool directory.
    #[arg(long)]
    pub spool: std::path::PathBuf,
    /// Master key file of a sealed spool (the agent's `--spool-key`; created with mode 0600
    /// if missing). Without it the spool is written in clear and a sealed one is refused.
    #[arg(long, value_name = "PATH")]
    pub spool_key: Option<std::path::PathBuf>,
    /// Collector connection (needs an `ingest` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// Agent id to ship as.
    #[arg(long, default_value = "ship-spool")]
    pub agent_id: String,
    /// Append generated CDRs until the spool's last sequence reaches this (0 = none).
    #[arg(long, default_value_t = 0)]
    pub produce: u64,
    /// Milliseconds between generated CDRs.
    #[arg(long, default_value_t = 5)]
    pub every_ms: u64,
    /// Exit once production is done and everything is acknowledged.
    #[arg(long)]
    pub until_acked: bool,
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
    /// Output format: `text` or `json` (`--format` is an alias).
    #[arg(long = "output", short = 'o', alias = "format", default_value = "text")]
    pub format: String,
}

/// `collector replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture file (pcap or pcapng).
    pub file: std::path::PathBuf,
    /// Output format: the CDR printer of `collector cdrs` (`table`, `json` lines, `csv`;
    /// with `--by-call`: `table` or `json`). `--format` is an alias.
    #[arg(long = "output", short = 'o', alias = "format", value_enum, default_value_t = crate::present::cdrs::OutputFormat::Table)]
    pub output: crate::present::cdrs::OutputFormat,
    /// One row per call rather than per leg: the legs the agent linked (one correlation id)
    /// under their call, calls in start order (json: one object per call).
    #[arg(long, conflicts_with = "server")]
    pub by_call: bool,
    /// Load the capture's CDRs into this central collector, through the same spool and
    /// stream as the agent (the `--config` privacy policy, with its key file, is required),
    /// with the TLS and token flags of every verb that talks to a server.
    #[command(flatten)]
    pub ship: connect::ShipArgs,
    /// Agent configuration (TOML): its `[privacy]` policy is applied (identifiers are
    /// printed in clear without it) and its `[calls]` settings used.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Additional SIP port (UDP and TCP), besides 5060 and 5080; repeat for several.
    #[arg(long = "sip-port")]
    pub sip_ports: Vec<u16>,
    /// Spool directory for `--server` (kept, so an interrupted load resumes).
    #[arg(long, default_value = "replay-spool")]
    pub spool_dir: std::path::PathBuf,
    /// Seal the `--server` spool with this master key file (created with mode 0600 if
    /// missing; outside the spool directory). Without it the spool is written in clear.
    #[arg(long, value_name = "PATH")]
    pub spool_key: Option<std::path::PathBuf>,
    /// Agent id the CDRs are stored under (default: `replay-` and the file's name).
    #[arg(long)]
    pub agent_id: Option<String>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing(&cli.log);
    let result = match cli.command {
        Command::Agent(a) => agent::run(a),
        Command::Check => crate::capture::self_check(),
        Command::Server(a) => server::run(a),
        Command::Flows(a) => flows::run(a),
        Command::Top(a) => top::run(a),
        Command::Cdrs(a) => cdrs::run(a),
        Command::Erase(a) => erase::run(a),
        Command::Rates(a) => rates::run(a),
        Command::Report(a) => report::run(a),
        Command::Token(a) => token::run(&a),
        Command::Tenants(a) => tenants::run(&a),
        Command::Admin(a) => admin::run(a),
        Command::ShipSpool(a) => ship_spool::run(a),
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

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
