//! A secured deployment of the central collector, as production runs it, for the demo and
//! the tests of the live view: a throwaway CA (rcgen) and the collector's certificate, a
//! token secret with an `ingest` token bound to the agent and a `read` token, the
//! pseudonymization key file and the agent's configuration (id, scope, key file), then
//! `collector server` with TLS, tokens and SQLite on a namespace's loopback.
//!
//! Every process is stopped on drop (SIGTERM, a bounded wait, SIGKILL) and the files go
//! with the temporary directory, so a failing test or an interrupted demo leaves nothing.
use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{collector_bin, ns_exec};

/// A child process stopped on drop: SIGTERM, a bounded wait, then SIGKILL.
pub struct Proc {
    name: &'static str,
    /// The process (its stdout, when piped, can be taken).
    pub child: Child,
}

impl Proc {
    /// Starts `cmd`; `name` says what it is in errors.
    pub fn spawn(name: &'static str, mut cmd: Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the {name}"))?;
        Ok(Self { name, child })
    }

    /// SIGTERM and a wait of at most `within`; the exit status.
    pub fn stop(&mut self, within: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // SAFETY: kill on the pid of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!(
                    "the {} did not exit within {within:?} of SIGTERM",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stop(Duration::from_secs(10)).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `collector ...` run inside `ns`.
pub fn collector_in(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(collector_bin());
    c
}

/// Runs `collector ARGS` (outside any namespace) and returns its stdout.
pub fn collector_out(args: &[&OsStr]) -> Result<String> {
    let out = Command::new(collector_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running collector")?;
    if !out.status.success() {
        bail!(
            "collector {:?} failed ({}): {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits (bounded) until something listens on 127.0.0.1:`port` in `ns`; `check` runs at
/// every poll and ends the wait with its error (the demo's Ctrl-C).
pub fn wait_port(ns: &str, port: u16, check: &dyn Fn() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        check()?;
        if ns_exec(ns, &["ss", "-ltnH"])?.contains(&format!("127.0.0.1:{port}")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on 127.0.0.1:{port} in {ns} after 15 s")
}

/// The bearer tokens a [`SecuredCollector`] made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// `ingest`, bound to the agent's id.
    Ingest,
    /// `read`: queries and live flows.
    Read,
}

impl Token {
    fn file(self) -> &'static str {
        match self {
            Token::Ingest => "ingest.token",
            Token::Read => "read.token",
        }
    }
}

/// What to deploy.
#[derive(Clone, Debug)]
pub struct Options {
    /// The agent's id (its ingest token is bound to it).
    pub agent_id: String,
    /// The pseudonymization scope in the agent's configuration.
    pub scope: String,
    /// The collector's port on the namespace's loopback.
    pub port: u16,
    /// Prefix of the temporary directory.
    pub dir_prefix: String,
}

/// The central collector with TLS and tokens, running in a namespace; its files (CA,
/// certificates, token secret and tokens, key file, the agent's configuration, the
/// database, the agent's spool) in one temporary directory. Stopped and removed on drop.
pub struct SecuredCollector {
    // Declared first: the server stops before its directory goes.
    server: Proc,
    dir: tempfile::TempDir,
    opts: Options,
}

impl SecuredCollector {
    /// Makes the files and starts `collector server` in `ns`; returns once it listens.
    /// `check` runs while waiting (see [`wait_port`]).
    pub fn start(ns: &str, opts: Options, check: &dyn Fn() -> Result<()>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&opts.dir_prefix)
            .tempdir()?;
        let path = |name: &str| dir.path().join(name);
        pki(&path("ca.pem"), &path("server.pem"), &path("server.key"))?;
        let secret = path("token.secret");
        collector_out(&[
            "token".as_ref(),
            "--secret".as_ref(),
            secret.as_os_str(),
            "--init".as_ref(),
        ])?;
        for (token, role, subject) in [
            (Token::Ingest, "ingest", opts.agent_id.as_str()),
            (Token::Read, "read", "operator"),
        ] {
            let t = collector_out(&[
                "token".as_ref(),
                "--secret".as_ref(),
                secret.as_os_str(),
                "--role".as_ref(),
                role.as_ref(),
                "--subject".as_ref(),
                subject.as_ref(),
                "--ttl".as_ref(),
                "1h".as_ref(),
            ])?;
            std::fs::write(path(token.file()), t.trim())?;
        }
        collector_out(&[
            "keygen".as_ref(),
            "-o".as_ref(),
            path("keys.toml").as_os_str(),
        ])?;
        std::fs::write(
            path("agent.toml"),
            format!(
                "[agent]\nid = \"{}\"\n\n[privacy]\nscope = \"{}\"\nkey_file = \"{}\"\n",
                opts.agent_id,
                opts.scope,
                path("keys.toml").display()
            ),
        )?;
        let mut server = collector_in(ns);
        server
            .args(["server", "--listen", &format!("127.0.0.1:{}", opts.port)])
            .arg("--master-key")
            .arg(path("master.key"))
            .arg("--tenant-keys")
            .arg(path("tenant-keys"))
            .arg("--db")
            .arg(format!("sqlite://{}", path("cdr.db").display()))
            .arg("--tls-cert")
            .arg(path("server.pem"))
            .arg("--tls-key")
            .arg(path("server.key"))
            .arg("--token-secret")
            .arg(secret)
            .env("COLLECTOR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let server = Proc::spawn("collector server", server)?;
        let collector = Self { server, dir, opts };
        wait_port(ns, collector.opts.port, check)?;
        Ok(collector)
    }

    /// A file of the deployment (`ca.pem`, `agent.toml`, `keys.toml`, ...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The collector's URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.opts.port)
    }

    /// A file's path as a flag value (the temporary directory's path is UTF-8: `tempfile`
    /// names it from the prefix, ASCII, under `TMPDIR`).
    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// The connection flags of a client verb: URL, CA, token file.
    pub fn client_args(&self, token: Token) -> Vec<String> {
        vec![
            "--server".into(),
            self.url(),
            "--ca".into(),
            self.arg("ca.pem"),
            "--token-file".into(),
            self.arg(token.file()),
        ]
    }

    /// The flags of `collector agent` streaming here: its configuration (id, scope, key
    /// file), a sealed spool and its key, and the connection with the ingest token.
    pub fn agent_args(&self) -> Vec<String> {
        let mut args = vec![
            "--config".into(),
            self.arg("agent.toml"),
            "--spool-dir".into(),
            self.arg("spool"),
            // Sealed, with the master key beside the spool rather than in /etc/collector.
            "--spool-key".into(),
            self.arg("spool.key"),
        ];
        args.extend(self.client_args(Token::Ingest));
        args
    }

    /// Stops the server (bounded).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.server.stop(Duration::from_secs(10))
    }
}

/// Writes a throwaway CA and a certificate (with its key) for 127.0.0.1 and localhost.
fn pki(
    ca_pem: &std::path::Path,
    cert_pem: &std::path::Path,
    key_pem: &std::path::Path,
) -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "collector test CA (throwaway)");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &ca)?;
    std::fs::write(ca_pem, ca.pem())?;
    std::fs::write(cert_pem, cert.pem())?;
    std::fs::write(key_pem, key.serialize_pem())?;
    Ok(())
}
