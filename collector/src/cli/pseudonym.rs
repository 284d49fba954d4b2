//! `collector pseudonym`: prints the pseudonyms an identifier has under every key of the
//! key file (active key first), as stored CDRs, filters and erasure requests carry them.
//! The identifier itself is never printed.
use std::ffi::OsString;
use std::io::{BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::privacy::{Kind, PrivacyConfig, Pseudonymizer};

/// Longest identifier read from standard input, in bytes.
const STDIN_MAX: u64 = 4096;

/// `collector pseudonym`.
#[derive(Debug, Args)]
pub struct PseudonymArgs {
    /// Phone number, SIP/tel URI or URI user; `-` reads one line from standard input, which
    /// keeps it out of the process list and the shell history.
    pub identifier: OsString,
    /// What the identifier is.
    #[arg(long, value_enum, default_value_t = IdentifierKind::Subscriber)]
    pub kind: IdentifierKind,
    /// Agent configuration file whose `[privacy]` table to use.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Key file (overrides `privacy.key_file`).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Scope, the tenant or instance id (overrides `privacy.scope`).
    #[arg(long)]
    pub scope: Option<String>,
}

/// The class of identifier to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdentifierKind {
    /// A phone number, URI or URI user (numbers and other users are told apart by content).
    Subscriber,
    /// A URI host name (an IP literal is looked up as an IP address).
    Domain,
    /// An IP address.
    Ip,
    /// A SIP Call-ID.
    CallId,
    /// A display name.
    DisplayName,
    /// A User-Agent value.
    UserAgent,
}

impl IdentifierKind {
    fn kind(self) -> Kind {
        match self {
            IdentifierKind::Subscriber => Kind::Number,
            IdentifierKind::Domain => Kind::Domain,
            IdentifierKind::Ip => Kind::Ip,
            IdentifierKind::CallId => Kind::CallId,
            IdentifierKind::DisplayName => Kind::DisplayName,
            IdentifierKind::UserAgent => Kind::UserAgent,
        }
    }
}

/// Runs `collector pseudonym`: one pseudonym per line on stdout.
pub fn run(args: &PseudonymArgs) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    for p in pseudonyms(args, &mut stdin.lock())? {
        println!("{p}");
    }
    Ok(())
}

/// The pseudonyms of `args.identifier` (read from `stdin` when it is `-`).
pub fn pseudonyms(args: &PseudonymArgs, stdin: &mut dyn BufRead) -> anyhow::Result<Vec<String>> {
    let mut config = match &args.config {
        Some(path) => PrivacyConfig::load_agent_config(path)
            .with_context(|| format!("reading {}", path.display()))?,
        None => PrivacyConfig::default(),
    };
    if let Some(k) = &args.key_file {
        config.key_file = Some(k.clone());
    }
    if let Some(s) = &args.scope {
        config.scope = Some(s.clone());
    }
    let pz = Pseudonymizer::from_config(&config)?;
    let identifier = if args.identifier.as_bytes() == b"-" {
        let mut line = Vec::new();
        stdin
            .take(STDIN_MAX + 1)
            .read_until(b'\n', &mut line)
            .context("reading the identifier from standard input")?;
        if line.len() as u64 > STDIN_MAX {
            anyhow::bail!("identifier on standard input is longer than {STDIN_MAX} bytes");
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        line
    } else {
        args.identifier.as_bytes().to_vec()
    };
    let out = pz.pseudonyms_for_kind(args.kind.kind(), &identifier);
    if out.is_empty() {
        anyhow::bail!("nothing to pseudonymize: the identifier is empty after normalisation");
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn prints_the_fixed_vector_for_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.toml");
        std::fs::write(
            &keys,
            "[[key]]\nid = \"k1\"\n\
             secret = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
             created = \"2025-01-01T00:00:00Z\"\nactive = true\n",
        )
        .unwrap();
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[privacy]\nscope = \"tenant-a\"\nkey_file = {:?}\n\
                 national = {{ country_code = \"44\", trunk_prefix = \"0\" }}\n",
                keys.display().to_string()
            ),
        )
        .unwrap();
        let args = |identifier: &str, kind| PseudonymArgs {
            identifier: identifier.into(),
            kind,
            config: Some(config.clone()),
            key_file: None,
            scope: None,
        };
        // Same vector as privacy::policy's fixed vectors (computed with Python's hmac).
        let want = vec!["n_k1_lnbnqvjd5pj4wjxg7bkvf2gove".to_owned()];
        let mut no_stdin: &[u8] = b"";
        for spelling in [
            "+44 20 7946 0000",
            "020 7946 0000",
            "sip:+442079460000@example.com",
        ] {
            let got = pseudonyms(&args(spelling, IdentifierKind::Subscriber), &mut no_stdin);
            assert_eq!(got.unwrap(), want);
        }
        let mut stdin: &[u8] = b"0044 20 7946 0000\r\nignored\n";
        assert_eq!(
            pseudonyms(&args("-", IdentifierKind::Subscriber), &mut stdin).unwrap(),
            want
        );
        let cid = pseudonyms(
            &args("a84b4c76e66710@pc33.atlanta.com", IdentifierKind::CallId),
            &mut no_stdin,
        );
        assert_eq!(cid.unwrap(), ["cid_k1_csjjt3zphr2xzwbjk62cjxzgbe"]);
        // Another scope gives the tenant-b vector.
        let mut other = args("+442079460000", IdentifierKind::Subscriber);
        other.scope = Some("tenant-b".into());
        assert_eq!(
            pseudonyms(&other, &mut no_stdin).unwrap(),
            ["n_k1_njrscb6cupzdla7dcjvrf6gvtq"]
        );
        assert!(pseudonyms(&args("   ", IdentifierKind::Subscriber), &mut no_stdin).is_err());
        // A key file others can read is refused.
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = pseudonyms(
            &args("+442079460000", IdentifierKind::Subscriber),
            &mut no_stdin,
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("mode 0644"));
    }
}
