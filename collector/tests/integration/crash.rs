//! Nothing lost, nothing duplicated, with real processes: `collector server` and the
//! shipping half of an agent (`collector ship-spool`, producing CDRs at a steady rate
//! into its spool while it ships) run as children of the test and are stopped, or killed
//! with SIGKILL, in the middle of their work, then restarted. Every generated CDR carries
//! its spool sequence in its id (`c<seq>`), so the check is independent of the code under
//! test: the stored rows, read with direct SQL, must be exactly agent `sbc1`, sequences
//! 1..=N, each once, each with its own id. Run over both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::support;
use std::{
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::support::{collector, Backend, Proc};
use collector::{
    cli::ship_spool::generated_cdr,
    server::token::{self, Role, TokenSecret},
    spool::{Spool, SpoolOptions, SpoolSealing},
};
use prost::Message as _;

const AGENT: &str = "sbc1";

struct Env {
    b: Backend,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl Env {
    fn new(b: Backend) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let secret = TokenSecret::generate(&dir.path().join("secret")).unwrap();
        let now = collector::server::retention::now_ms() / 1000;
        let t = token::issue(&secret, AGENT, Role::Ingest, now, 3_600).unwrap();
        std::fs::write(dir.path().join("token"), t).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
        Env { b, dir, addr }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn server(&self) -> Proc {
        let mut cmd = collector();
        cmd.arg("server")
            .args(["--listen", &self.addr.to_string()])
            .arg("--master-key")
            .arg(self.path("master.key"))
            .arg("--tenant-keys")
            .arg(self.path("tenant-keys"))
            .args(["--db", &self.b.url()])
            .arg("--token-secret")
            .arg(self.path("secret"));
        let p = Proc::spawn("collector server", cmd, &self.path("server.log"));
        support::wait_listening(self.addr, Duration::from_secs(30));
        p
    }

    fn shipper(&self, produce: u64, every_ms: u64) -> Proc {
        let mut cmd = collector();
        cmd.arg("ship-spool")
            .arg("--spool")
            .arg(self.path("spool"))
            .args(["--server", &format!("http://{}", self.addr)])
            .arg("--token-file")
            .arg(self.path("token"))
            .args(["--agent-id", AGENT])
            .args(["--produce", &produce.to_string()])
            .args(["--every-ms", &every_ms.to_string()])
            .arg("--until-acked");
        Proc::spawn("collector ship-spool", cmd, &self.path("shipper.log"))
    }

    async fn count(&self) -> u64 {
        self.b.select("SELECT COUNT(*) FROM cdrs").await[0][0]
            .parse()
            .unwrap()
    }

    /// Waits until at least `n` CDRs are stored.
    async fn wait_stored(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count().await < n {
            assert!(
                Instant::now() < deadline,
                "{}: fewer than {n} CDRs stored after 60 s; logs in {}",
                self.b.name(),
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The stored rows must be exactly `seqs`, each once, each with its own id.
    async fn assert_exactly(&self, seqs: impl Iterator<Item = u64>) {
        let want: Vec<(String, u64, String)> = seqs
            .map(|s| (AGENT.to_string(), s, format!("c{s}")))
            .collect();
        let got = self.b.stored().await;
        if got != want {
            let dup = got.windows(2).filter(|w| w[0].1 == w[1].1).count();
            panic!(
                "{}: stored {} rows ({dup} duplicated sequences), expected {}; first \
                 differences: {:?}",
                self.b.name(),
                got.len(),
                want.len(),
                got.iter()
                    .zip(&want)
                    .filter(|(g, w)| g != w)
                    .take(3)
                    .collect::<Vec<_>>()
            );
        }
    }
}

fn finish(mut shipper: Proc) {
    let (status, out) = shipper.wait_exit(Duration::from_secs(90));
    assert!(status.success(), "ship-spool failed: {status}");
    assert!(out.contains("\"event\":\"done\""), "{out}");
}

async fn collector_stopped_for_a_while_under_a_steady_stream(b: Backend) {
    let env = Env::new(b);
    const N: u64 = 400;
    let mut server = env.server();
    let shipper = env.shipper(N, 4);
    env.wait_stored(60).await;
    server.terminate();
    let stopped_at = env.count().await;
    // CDRs keep coming while the collector is away; the spool holds them.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.count().await, stopped_at);
    let _server = env.server();
    finish(shipper);
    env.assert_exactly(1..=N).await;
}

async fn kill9_of_the_server_in_the_middle_of_ingest(b: Backend) {
    let env = Env::new(b);
    const N: u64 = 600;
    let mut server = env.server();
    let shipper = env.shipper(N, 2);
    for at in [100, 300] {
        env.wait_stored(at).await;
        server.kill9();
        server = env.server();
    }
    finish(shipper);
    env.assert_exactly(1..=N).await;
    // The shipper saw its sessions die with the server and reconnected.
    let log = std::fs::read_to_string(env.path("shipper.log")).unwrap();
    assert!(log.matches("reconnecting").count() >= 2, "{log}");
    drop(server);
}

async fn kill9_of_the_shipper_in_the_middle_of_sending(b: Backend) {
    let env = Env::new(b);
    const N: u64 = 600;
    let _server = env.server();
    let mut shipper = env.shipper(N, 2);
    for at in [100, 300] {
        env.wait_stored(at).await;
        shipper.kill9();
        // The restarted shipper finds the spool as the killed one left it: it resumes
        // after the collector's cursor and goes on producing up to N.
        shipper = env.shipper(N, 2);
    }
    finish(shipper);
    env.assert_exactly(1..=N).await;
}

/// Byte range of each record in a segment file, walking the documented frame layout
/// (`[len u32 LE][crc32c u32][seq u64][payload]`).
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, 16 + len));
        at += 16 + len;
    }
    out
}

async fn corrupted_spool_tail_is_reported_and_intact_records_delivered(b: Backend) {
    let env = Env::new(b);
    let spool_dir = env.path("spool");
    {
        let mut spool =
            Spool::open(&spool_dir, SpoolOptions::default(), SpoolSealing::Unsealed).unwrap();
        let now = collector::server::retention::now_ms();
        for seq in 1..=50u64 {
            let got = spool
                .append(&generated_cdr(AGENT, seq, now).encode_to_vec())
                .unwrap();
            assert_eq!(got, seq);
        }
    }
    let segment = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("seg-"))
        .unwrap();
    let mut bytes = Vec::new();
    std::fs::File::open(&segment)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    let f = frames(&bytes);
    assert_eq!(f.len(), 50);
    // Flip one bit in the middle of record 25's payload, and tear record 50 (a write cut
    // short by a crash): 3 bytes missing at the end of the file.
    let (at25, len25) = f[24];
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment)
        .unwrap();
    let flip_at = (at25 + 16 + (len25 - 16) / 2) as u64;
    file.seek(SeekFrom::Start(flip_at)).unwrap();
    let mut byte = [0u8];
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(flip_at)).unwrap();
    file.write_all(&[byte[0] ^ 0x10]).unwrap();
    file.set_len(bytes.len() as u64 - 3).unwrap();
    drop(file);

    let _server = env.server();
    finish(env.shipper(0, 1));
    // Reported: the open-time JSON line carries the recovery report.
    let log = std::fs::read_to_string(env.path("shipper.log")).unwrap();
    let opened: serde_json::Value = log
        .lines()
        .find_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .filter(|v| v["event"] == "opened")
        })
        .unwrap_or_else(|| panic!("no recovery report in {log}"));
    let r = &opened["recovery"];
    assert_eq!(r["segments_cut"], 1, "{opened}");
    assert_eq!(r["records_skipped"], 1, "{opened}");
    // Record 25 whole, and the 3 bytes of 50 left on disk... all of 50 that remained.
    let cut = len25 + f[49].1 - 3;
    assert_eq!(r["bytes_cut"], cut as u64, "{opened}");
    // Every intact record was delivered, once; the damaged two were not.
    env.assert_exactly((1..=24).chain(26..=49)).await;
}

both_backends!(
    collector_stopped_for_a_while_under_a_steady_stream,
    kill9_of_the_server_in_the_middle_of_ingest,
    kill9_of_the_shipper_in_the_middle_of_sending,
    corrupted_spool_tail_is_reported_and_intact_records_delivered,
);
