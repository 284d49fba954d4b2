//! A throwaway PostgreSQL 15 cluster per test: `initdb` and `pg_ctl` from Debian's
//! `postgresql` package in a temporary directory, listening only on a unix socket in that
//! directory (no TCP port, so parallel tests never collide), stopped and deleted on drop,
//! also when the test panics. PostgreSQL refuses to run as root, so as root the binaries
//! run as the `postgres` user through `runuser`.
//!
//! Without the package the tests fail with a message saying how to install it: they
//! never skip silently.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Where Debian puts PostgreSQL 15 (override with `PG_BIN`).
const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A running cluster.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    port: u16,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgCluster {
    /// Creates and starts a cluster (unix socket only).
    pub fn start() -> PgCluster {
        Self::start_with(None)
    }

    /// Creates and starts a cluster that also listens on 127.0.0.1 with TLS, using this
    /// PEM certificate and key (see [`PgCluster::tcp_url`]).
    pub fn start_tls(cert: &Path, key: &Path) -> PgCluster {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> PgCluster {
        let bin =
            std::env::var_os("PG_BIN").map_or_else(|| PathBuf::from(DEFAULT_BIN), PathBuf::from);
        assert!(
            bin.join("initdb").exists() && bin.join("pg_ctl").exists(),
            "PostgreSQL 15 is not installed ({} has no initdb/pg_ctl): the PostgreSQL backend \
             tests need it; run `cargo xtask setup` (or `apt-get install -y postgresql`)",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("collector-pg-")
            .tempdir()
            .expect("temporary directory");
        let as_postgres = is_root();
        if as_postgres {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("running chown");
            assert!(
                st.success(),
                "chown postgres {} failed",
                dir.path().display()
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let cluster = PgCluster {
            dir,
            bin,
            as_postgres,
            port,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--no-sync".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        );
        // Unix socket only, in the test's own directory; durability is irrelevant here (the
        // tests kill the collector, never PostgreSQL).
        let mut opts = format!(
            "-c port={port} -c unix_socket_directories='{}' -c fsync=off \
             -c full_page_writes=off -c max_connections=200 -c shared_buffers=64MB",
            cluster.socket_dir().display()
        );
        match tls {
            None => opts.push_str(" -c listen_addresses=''"),
            Some((cert, key)) => {
                // PostgreSQL wants its key owned by itself and private.
                let (c, k) = (
                    cluster.dir.path().join("server.crt"),
                    cluster.dir.path().join("server.key"),
                );
                std::fs::copy(cert, &c).expect("copy cert");
                std::fs::copy(key, &k).expect("copy key");
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600))
                        .expect("chmod key");
                }
                if as_postgres {
                    let st = Command::new("chown")
                        .arg("postgres:postgres")
                        .arg(&c)
                        .arg(&k)
                        .status()
                        .expect("chown");
                    assert!(st.success());
                }
                opts.push_str(&format!(
                    " -c listen_addresses='127.0.0.1' -c ssl=on -c ssl_cert_file='{}' \
                     -c ssl_key_file='{}'",
                    c.display(),
                    k.display()
                ));
            }
        }
        let log = cluster.dir.path().join("postgres.log");
        cluster.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        cluster
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The URL of the cluster's `postgres` database over its unix socket, for the
    /// collector's `--db`.
    pub fn url(&self) -> String {
        let host = self.socket_dir().display().to_string().replace('/', "%2F");
        format!("postgresql://postgres@{host}:{}/postgres", self.port)
    }

    /// The URL over TCP with TLS required (clusters made by [`PgCluster::start_tls`]).
    pub fn tcp_url(&self) -> String {
        format!(
            "postgresql://postgres@127.0.0.1:{}/postgres?sslmode=require",
            self.port
        )
    }

    /// A direct client, for checking rows independently of the code under test.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .expect("connecting to the test cluster");
        tokio::spawn(conn);
        client
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
