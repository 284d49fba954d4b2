//! The operator verbs against a real `collector server` child: `collector cdrs` and
//! `collector erase --number` hash the number on the client side under every key of the
//! agents' key file (the retired key's pseudonym is the fixed vector computed with
//! Python's `hmac`), send only pseudonyms, print what the server did, and are refused
//! without the right role. Rows and the audit log are read back with direct SQL. Run over
//! both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::{
    io::Write as _,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use collector::server::token::{self, Role, TokenSecret};
use collector_proto::v1::{Cdr, CdrRecord, Disposition, Party};
use support::{collector, Backend, Proc};

/// The retired key's pseudonym of +442079460000 in scope tenant-a (privacy::policy's
/// fixed vector).
const SUBJECT_K1: &str = "n_k1_lnbnqvjd5pj4wjxg7bkvf2gove";

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// An agent configuration whose key file has k1 (retired) and k2 (active).
fn agent_config(dir: &Path) -> PathBuf {
    let keys = dir.join("keys.toml");
    write_private(
        &keys,
        "[[key]]\nid = \"k1\"\n\
         secret = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
         created = \"2025-01-01T00:00:00Z\"\nactive = false\n\
         [[key]]\nid = \"k2\"\n\
         secret = \"ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1eff\"\n\
         created = \"2025-06-01T00:00:00Z\"\nactive = true\n",
    );
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[privacy]\nscope = \"tenant-a\"\nkey_file = {:?}\n\
             national = {{ country_code = \"44\", trunk_prefix = \"0\" }}\n",
            keys.display().to_string()
        ),
    )
    .unwrap();
    config
}

fn cdr(id: &str, caller: &str, callee: &str, start: u64) -> Cdr {
    Cdr {
        cdr_id: id.into(),
        caller: Some(Party {
            user: caller.into(),
            ..Default::default()
        }),
        callee: Some(Party {
            user: callee.into(),
            ..Default::default()
        }),
        start_time_ms: start,
        disposition: Disposition::Answered as i32,
        final_code: 200,
        ..Default::default()
    }
}

fn run(mut cmd: std::process::Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

async fn erase_and_cdrs_hash_the_number_client_side(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path());
    // The subject's active-key pseudonym, through the privacy module.
    let pz = collector::privacy::Pseudonymizer::from_config(
        &collector::privacy::PrivacyConfig::load_agent_config(&config).unwrap(),
    )
    .unwrap();
    let subject = pz.pseudonyms_for(b"+442079460000");
    assert_eq!(subject[1], SUBJECT_K1);
    let other = pz.pseudonyms_for(b"+442079460001")[0].clone();
    let now = collector::server::retention::now_ms();
    {
        let s = b.open().await;
        let cdrs = vec![
            cdr("s1", SUBJECT_K1, &other, now - 3_000),
            cdr("o1", &other, "n_k2_someoneelse", now - 2_000),
            cdr("s2", &other, &subject[0], now - 1_000),
            cdr("s3", &subject[0], &other, now),
        ];
        let recs = cdrs
            .into_iter()
            .zip(1..)
            .map(|(c, s)| CdrRecord {
                sequence: s,
                cdr: Some(c),
            })
            .collect();
        s.ingest("sbc1", recs).await.unwrap();
    }
    let secret = TokenSecret::generate(&dir.path().join("secret")).unwrap();
    let now_s = now / 1000;
    for (file, sub, role) in [
        ("read.tok", "ops", Role::Read),
        ("admin.tok", "dpo", Role::Admin),
    ] {
        let t = token::issue(&secret, sub, role, now_s, 600).unwrap();
        std::fs::write(dir.path().join(file), t).unwrap();
    }
    let addr: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let mut cmd = collector();
    cmd.arg("server")
        .args(["--listen", &addr.to_string(), "--db", &b.url()])
        .arg("--token-secret")
        .arg(dir.path().join("secret"));
    let _server = Proc::spawn("collector server", cmd, &dir.path().join("server.log"));
    support::wait_listening(addr, Duration::from_secs(30));
    let url = format!("http://{addr}");
    let client = |verb: &str, tok: &str| {
        let mut c = collector();
        c.arg(verb)
            .args(["--server", &url])
            .arg("--token-file")
            .arg(dir.path().join(tok))
            .arg("--config")
            .arg(&config);
        c
    };

    // cdrs --number - (read from stdin, national spelling) finds the subject under both keys.
    let mut q = client("cdrs", "read.tok");
    q.args(["--number", "-", "-o", "json"]);
    let out = run(q, "020 7946 0000\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["cdr_id"].to_string())
        .collect();
    assert_eq!(ids, ["\"s3\"", "\"s2\"", "\"s1\""], "{}", b.name());

    // A read token may not erase.
    let mut e = client("erase", "read.tok");
    e.args(["--number", "+442079460000"]);
    let out = run(e, "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PermissionDenied") || err.contains("permission"),
        "{err}"
    );
    assert_eq!(b.cdr_ids().await, ["o1", "s1", "s2", "s3"]);

    // An admin token erases, and the verb says how many.
    let mut e = client("erase", "admin.tok");
    e.args(["--number", "+44 20 7946 0000", "--reference", "T-1"]);
    let out = run(e, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "erased 3 CDR(s) matching 2 pseudonym(s)\n"
    );
    assert_eq!(b.cdr_ids().await, ["o1"]);
    let audit = b
        .select("SELECT action, actor, subjects, reference, affected FROM audit_log ORDER BY id")
        .await;
    let erase = audit.iter().find(|r| r[0] == "erase").unwrap();
    assert_eq!(erase[1], "dpo");
    let subjects: Vec<String> = serde_json::from_str(&erase[2]).unwrap();
    assert_eq!(subjects, subject);
    assert_eq!(erase[3..], ["T-1", "3"]);
    let read = audit.iter().find(|r| r[0] == "query").unwrap();
    assert_eq!((read[1].as_str(), read[4].as_str()), ("ops", "3"));
    for row in &audit {
        for cell in row {
            assert!(
                !cell.contains("7946"),
                "the number reached the audit log: {cell}"
            );
        }
    }
    // CSV of what is left.
    let mut q = client("cdrs", "read.tok");
    q.args(["-o", "csv", "--since", "1h"]);
    let out = run(q, "");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("start,agent,caller,callee,disposition"));
    assert!(lines[1].contains(&other), "{text}");
}

both_backends!(erase_and_cdrs_hash_the_number_client_side);

/// `collector replay FILE --server` loads a capture's CDRs into the central store through
/// the spool and the Ingest stream, pseudonymized by the configuration's policy, exactly
/// once even when run twice with the same spool: the capture's oracle has 3 calls.
#[test]
fn replay_loads_a_capture_into_the_collector_once() {
    let b = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path());
    let addr: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let mut cmd = collector();
    cmd.arg("server")
        .args(["--listen", &addr.to_string(), "--db", &b.url()]);
    let _server = Proc::spawn("collector server", cmd, &dir.path().join("server.log"));
    support::wait_listening(addr, Duration::from_secs(30));
    let capture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/sipp_g711_basic.pcap");
    for _ in 0..2 {
        let mut r = collector();
        r.arg("replay")
            .arg(&capture)
            .arg("--config")
            .arg(&config)
            .args(["--server", &format!("http://{addr}")])
            .arg("--spool-dir")
            .arg(dir.path().join("spool"));
        let out = run(r, "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let rows = rt.block_on(b.select("SELECT caller_user, final_code FROM cdrs"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    for r in &rows {
        assert!(
            r[0].starts_with("u_k2_") || r[0].starts_with("n_k2_"),
            "{r:?}"
        );
        assert_eq!(r[1], "200");
    }
}
