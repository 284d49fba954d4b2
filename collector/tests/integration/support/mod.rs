//! Test support shared by the integration tests: the two storage backends behind one
//! type (SQLite in a temporary directory, PostgreSQL in a throwaway cluster), direct row
//! reads that bypass the code under test, test PKIs made with rcgen, and child processes
//! of the real `collector` binary that are killed (SIGKILL) on drop.
#![allow(dead_code, reason = "each test binary uses a part")]

pub mod pg;
pub mod web;

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use collector::server::store::{self, Store};

/// One storage backend for a test.
pub enum Backend {
    /// SQLite file in a temporary directory.
    Sqlite(tempfile::TempDir),
    /// A throwaway PostgreSQL cluster.
    Postgres(pg::PgCluster),
}

impl Backend {
    /// A fresh SQLite database.
    pub fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    /// A fresh PostgreSQL cluster.
    pub fn postgres() -> Backend {
        Backend::Postgres(pg::PgCluster::start())
    }

    /// The backend's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    fn sqlite_path(dir: &Path) -> PathBuf {
        dir.join("cdr.db")
    }

    /// The `--db` URL.
    pub fn url(&self) -> String {
        match self {
            Backend::Sqlite(d) => format!("sqlite://{}", Self::sqlite_path(d.path()).display()),
            Backend::Postgres(c) => c.url(),
        }
    }

    /// The directory holding every file of the database (the SQLite file with its journal,
    /// or the PostgreSQL data directory), after the database wrote what it holds in memory
    /// to it (PostgreSQL: CHECKPOINT).
    pub async fn files_on_disk(&self) -> PathBuf {
        match self {
            Backend::Sqlite(d) => d.path().to_path_buf(),
            Backend::Postgres(c) => {
                c.client()
                    .await
                    .execute("CHECKPOINT", &[])
                    .await
                    .expect("checkpoint");
                c.data_dir()
            }
        }
    }

    /// A new, empty backend of the same kind.
    pub fn new_like(b: &Backend) -> Backend {
        match b {
            Backend::Sqlite(_) => Backend::sqlite(),
            Backend::Postgres(_) => Backend::postgres(),
        }
    }

    /// A copy of the database as a backup would hold it: the SQLite file with its journal
    /// (`None` for PostgreSQL, whose files cannot be copied while it runs).
    pub fn copy_of_files(&self) -> Option<Backend> {
        let Backend::Sqlite(d) = self else {
            return None;
        };
        let to = tempfile::tempdir().expect("tempdir");
        for f in ["cdr.db", "cdr.db-wal", "cdr.db-shm"] {
            let from = d.path().join(f);
            if from.exists() {
                std::fs::copy(&from, to.path().join(f)).expect("copying the database");
            }
        }
        Some(Backend::Sqlite(to))
    }

    /// Opens the store through the code under test.
    pub async fn open(&self) -> Arc<dyn Store> {
        store::open(&self.url()).await.expect("opening the store")
    }

    /// Runs a query returning rows of text/integer columns, directly (not through the
    /// store): each row as strings.
    pub async fn select(&self, sql: &str) -> Vec<Vec<String>> {
        match self {
            Backend::Sqlite(d) => {
                let c = rusqlite::Connection::open(Self::sqlite_path(d.path())).expect("open");
                let mut stmt = c.prepare(sql).expect("prepare");
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => "NULL".to_string(),
                                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                                    rusqlite::types::ValueRef::Real(v) => v.to_string(),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        String::from_utf8_lossy(t).into_owned()
                                    }
                                    rusqlite::types::ValueRef::Blob(_) => "BLOB".to_string(),
                                })
                            })
                            .collect::<Result<Vec<String>, rusqlite::Error>>()
                    })
                    .expect("query");
                rows.collect::<Result<_, _>>().expect("rows")
            }
            Backend::Postgres(c) => {
                use tokio_postgres::types::Type;
                let client = c.client().await;
                let rows = client.query(sql, &[]).await.expect("query");
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                let t = r.columns()[i].type_().clone();
                                let text = if t == Type::INT8 {
                                    r.get::<_, Option<i64>>(i).map(|v| v.to_string())
                                } else if t == Type::INT4 {
                                    r.get::<_, Option<i32>>(i).map(|v| v.to_string())
                                } else if t == Type::FLOAT8 {
                                    r.get::<_, Option<f64>>(i).map(|v| v.to_string())
                                } else if t == Type::BOOL {
                                    r.get::<_, Option<bool>>(i)
                                        .map(|v| i32::from(v).to_string())
                                } else if t == Type::TEXT_ARRAY {
                                    r.get::<_, Option<Vec<String>>>(i)
                                        .map(|v| serde_json::to_string(&v).expect("json"))
                                } else if t == Type::BYTEA {
                                    Some("BLOB".to_string())
                                } else {
                                    r.get::<_, Option<String>>(i)
                                };
                                text.unwrap_or_else(|| "NULL".to_string())
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// `(agent, sequence, cdr_id)` of every stored CDR, ordered, read directly.
    pub async fn stored(&self) -> Vec<(String, u64, String)> {
        self.select("SELECT agent_id, sequence, cdr_id FROM cdrs ORDER BY agent_id, sequence")
            .await
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().expect("sequence"), r[2].clone()))
            .collect()
    }

    /// The cdr_ids stored, sorted.
    pub async fn cdr_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .select("SELECT cdr_id FROM cdrs")
            .await
            .into_iter()
            .map(|mut r| r.remove(0))
            .collect();
        v.sort();
        v
    }
}

/// Runs `$test(backend)` once per backend, as `$test::sqlite` and `$test::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$test($crate::support::Backend::sqlite()).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$test($crate::support::Backend::postgres()).await
            }
        }
    )*};
}

/// A test PKI: a CA with a server certificate (for 127.0.0.1 and localhost) and a client
/// certificate, plus a second, unrelated CA with its own client certificate.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, pem: String| {
            std::fs::write(dir.path().join(name), pem).expect("write pem");
        };
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca")
        };
        let leaf = |names: Vec<String>, issuer: &CertifiedIssuer<'_, KeyPair>| {
            let key = KeyPair::generate().expect("key");
            let p = CertificateParams::new(names).expect("params");
            let cert = p.signed_by(&key, issuer).expect("leaf");
            (cert.pem(), key.serialize_pem())
        };
        let good = ca("collector test CA");
        let other = ca("some other CA");
        write("ca.pem", good.pem());
        write("other-ca.pem", other.pem());
        let (c, k) = leaf(vec!["localhost".into(), "127.0.0.1".into()], &good);
        write("server.pem", c);
        write("server.key", k);
        let (c, k) = leaf(vec!["agent-1".into()], &good);
        write("client.pem", c);
        write("client.key", k);
        let (c, k) = leaf(vec!["intruder".into()], &other);
        write("intruder.pem", c);
        write("intruder.key", k);
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Writes `text` to `path` with mode 0600 (what key files need).
pub fn write_private(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The real `collector` binary.
pub fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_collector"))
}

/// A child process killed with SIGKILL when dropped (also when a test fails).
pub struct Proc {
    pub child: Child,
    pub name: &'static str,
}

impl Proc {
    /// Spawns `cmd` with stdout piped and stderr to a log file in `log_dir`.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Proc {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .env("COLLECTOR_LOG", "info")
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc { child, name }
    }

    /// SIGKILL, like a crash: no handler runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait (a clean stop).
    pub fn terminate(&mut self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child, whose pid we hold unreaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself within `limit`; its stdout.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                let mut out = String::new();
                if let Some(mut o) = self.child.stdout.take() {
                    use std::io::Read as _;
                    let _ = o.read_to_string(&mut out);
                }
                return (st, out);
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
