//! What the client verbs share: the connection to the collector (URL, TLS, token) and the
//! subject of a query or erasure (a number hashed here with the privacy module's key ring,
//! or pseudonyms). A number never leaves this process: only its pseudonyms are sent.
use std::{
    io::{BufRead, Read as _},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use crate::{
    privacy::{PrivacyConfig, Pseudonymizer},
    rpc::connect::{AuthChannel, ClientSecurity},
};

/// Longest number read from standard input, in bytes.
const STDIN_MAX: u64 = 4096;

/// How to reach the collector.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Collector URL: `https://host:port` (TLS) or `http://127.0.0.1:port`.
    #[arg(
        long,
        env = "COLLECTOR_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// PEM CA that signed the collector's certificate.
    #[arg(long, env = "COLLECTOR_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for a collector that requires mutual TLS.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM client key.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name to verify the collector's certificate against (default: the URL's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
    /// File holding the bearer token (from `collector token`).
    #[arg(long, env = "COLLECTOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// Where an agent (or `collector replay --server`) streams its CDRs: the same TLS and token
/// flags as [`ConnectArgs`], with no default server (without one, CDRs are printed).
#[derive(Debug, Clone, Default, Args)]
pub struct ShipArgs {
    /// Central collector to stream CDRs (through the durable spool) and live flows to
    /// (`https://host:port`, or `http://` on a trusted network); without it CDRs are
    /// printed as JSON lines on stdout.
    #[arg(long)]
    pub server: Option<String>,
    /// PEM CA that signed the collector's certificate.
    #[arg(long, env = "COLLECTOR_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate, for a collector that requires mutual TLS (`--client-ca`).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM client key.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Name to verify the collector's certificate against (default: the URL's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
    /// File holding an `ingest` bearer token (from `collector token`).
    #[arg(long, env = "COLLECTOR_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl ShipArgs {
    /// The connection flags, when a server is named.
    pub fn connect_args(&self) -> Option<ConnectArgs> {
        self.server.as_ref().map(|server| ConnectArgs {
            server: server.clone(),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            tls_domain: self.tls_domain.clone(),
            token_file: self.token_file.clone(),
        })
    }
}

impl ConnectArgs {
    /// `server` without TLS or token (a collector on loopback).
    pub fn plain(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
            ca: None,
            cert: None,
            key: None,
            tls_domain: None,
            token_file: None,
        }
    }

    /// The TLS and token settings.
    pub fn security(&self) -> anyhow::Result<ClientSecurity> {
        let pair = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        Ok(ClientSecurity::from_files(
            self.ca.as_deref(),
            pair,
            self.token_file.as_deref(),
            self.tls_domain.as_deref(),
        )?)
    }

    /// Connects.
    pub async fn connect(&self) -> anyhow::Result<AuthChannel> {
        self.security()?
            .connect(&self.server, Duration::from_secs(10))
            .await
            .with_context(|| format!("connecting to {}", self.server))
    }
}

/// Whose CDRs: a number (hashed here) or pseudonyms.
#[derive(Debug, Clone, Default, Args)]
pub struct SubjectArgs {
    /// Phone number, SIP/tel URI or URI user of the subject; hashed here under every key of
    /// the key file (never sent). `-` reads it from standard input, which keeps it out of
    /// the process list and the shell history.
    #[arg(long, conflicts_with = "pseudonym")]
    pub number: Option<std::ffi::OsString>,
    /// A pseudonym of the subject (repeat for several).
    #[arg(long)]
    pub pseudonym: Vec<String>,
    /// Agent configuration file whose `[privacy]` table (scope, key file, national rule)
    /// hashes --number.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Key file (overrides `privacy.key_file`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Scope (overrides `privacy.scope`).
    #[arg(long)]
    pub scope: Option<String>,
}

impl SubjectArgs {
    /// Whether a subject was named.
    pub fn is_set(&self) -> bool {
        self.number.is_some() || !self.pseudonym.is_empty()
    }

    /// The pseudonyms to send: those given, or the number's under every key (active first).
    pub fn pseudonyms(&self, stdin: &mut dyn BufRead) -> anyhow::Result<Vec<String>> {
        let Some(number) = &self.number else {
            return Ok(self.pseudonym.clone());
        };
        let mut config = match &self.config {
            Some(path) => PrivacyConfig::load_agent_config(path)
                .with_context(|| format!("reading {}", path.display()))?,
            None => PrivacyConfig::default(),
        };
        if let Some(k) = &self.key_file {
            config.key_file = Some(k.clone());
        }
        if let Some(s) = &self.scope {
            config.scope = Some(s.clone());
        }
        let pz = Pseudonymizer::from_config(&config)
            .context("hashing --number needs the agents' privacy settings (--config)")?;
        let identifier = if number.as_bytes() == b"-" {
            let mut line = Vec::new();
            stdin
                .take(STDIN_MAX + 1)
                .read_until(b'\n', &mut line)
                .context("reading the number from standard input")?;
            if line.len() as u64 > STDIN_MAX {
                anyhow::bail!("number on standard input is longer than {STDIN_MAX} bytes");
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            line
        } else {
            number.as_bytes().to_vec()
        };
        let out = pz.pseudonyms_for(&identifier);
        if out.is_empty() {
            anyhow::bail!("nothing to hash: the number is empty after normalisation");
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use clap::Parser;

    use super::ShipArgs;
    use crate::cli::Command;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        ship: ShipArgs,
    }

    #[test]
    fn ship_flags_are_the_connect_flags_and_name_no_default_server() {
        let none = Cli::try_parse_from(["x"]).unwrap();
        assert!(none.ship.connect_args().is_none());
        let c = Cli::try_parse_from([
            "x",
            "--server",
            "https://collector.example:50051",
            "--ca",
            "ca.pem",
            "--cert",
            "agent.pem",
            "--key",
            "agent.key",
            "--tls-domain",
            "collector.example",
            "--token-file",
            "ingest.token",
        ])
        .unwrap()
        .ship
        .connect_args()
        .unwrap();
        assert_eq!(c.server, "https://collector.example:50051");
        assert_eq!(c.ca.unwrap().to_str(), Some("ca.pem"));
        assert_eq!(c.cert.unwrap().to_str(), Some("agent.pem"));
        assert_eq!(c.key.unwrap().to_str(), Some("agent.key"));
        assert_eq!(c.tls_domain.as_deref(), Some("collector.example"));
        assert_eq!(c.token_file.unwrap().to_str(), Some("ingest.token"));
        // A client certificate needs its key.
        assert!(Cli::try_parse_from(["x", "--server", "https://c:1", "--cert", "a.pem"]).is_err());
    }

    #[test]
    fn the_agent_and_replay_take_the_same_connection_flags() {
        let flags = [
            "--server",
            "https://c:1",
            "--ca",
            "ca.pem",
            "--cert",
            "a.pem",
            "--key",
            "a.key",
            "--token-file",
            "t",
        ];
        let agent = crate::cli::Cli::try_parse_from(
            ["collector", "agent", "-i", "eth0"]
                .into_iter()
                .chain(flags),
        )
        .unwrap();
        let replay = crate::cli::Cli::try_parse_from(
            ["collector", "replay", "x.pcap"].into_iter().chain(flags),
        )
        .unwrap();
        let (Command::Agent(a), Command::Replay(r)) = (agent.command, replay.command) else {
            panic!("wrong verbs");
        };
        let (a, r) = (
            a.ship.connect_args().unwrap(),
            r.ship.connect_args().unwrap(),
        );
        assert_eq!(format!("{a:?}"), format!("{r:?}"));
        assert_eq!(a.cert.unwrap().to_str(), Some("a.pem"));
    }
}
