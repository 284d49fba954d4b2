//! The operator verbs against a real `collector server` child: `collector cdrs` and
//! `collector erase --number` hash the number on the client side under every key of the
//! agents' key file (the retired key's pseudonym is the fixed vector computed with
//! Python's `hmac`), send only pseudonyms, print what the server did, and are refused
//! without the right role. Rows and the audit log are read back with direct SQL. Run over
//! both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::support;
use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use crate::support::{collector, write_private, Backend, Proc};
use collector::server::token::{self, Role, TokenSecret};
use collector_proto::v1::{Cdr, CdrRecord, Disposition, Party};

/// The retired key's pseudonym of +442079460000 in scope tenant-a (privacy::policy's
/// fixed vector).
const SUBJECT_K1: &str = "n_k1_lnbnqvjd5pj4wjxg7bkvf2gove";

/// An agent configuration whose key file has k1 (retired) and k2 (active).
pub(crate) fn agent_config(dir: &Path) -> PathBuf {
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
        // The test reads the stored columns directly (encryption at rest: `at_rest`).
        .arg("--no-encryption")
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
        .args(["--listen", &addr.to_string(), "--db", &b.url()])
        // The test reads the stored columns directly (encryption at rest: `at_rest`).
        .arg("--no-encryption");
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

/// `collector cdrs --by-call` asks the server for calls: the two legs the agent linked
/// print as one call (json: one object with both legs in start order; table: the call's
/// row, then its legs indented), a leg without correlation id is a call of its own, and
/// csv is refused.
#[test]
fn cdrs_by_call_prints_each_call_with_its_legs() {
    let b = Backend::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let leg = |id: &str, cid: &str, from: &str, to: &str, start: u64| Cdr {
        call_id: format!("call-{id}"),
        correlation_id: cid.into(),
        correlation_method: if cid.is_empty() { "" } else { "header" }.into(),
        ..cdr(id, from, to, start)
    };
    // Recent times: the server's retention job deletes what is older than its limit.
    let t0 = collector::server::retention::now_ms() - 60_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = b.open().await;
        let recs = [
            leg("x_out", "X", "P-sbc", "P-bob", t0 + 1_040),
            leg("x_in", "X", "P-alice", "P-sbc", t0 + 1_000),
            leg("z", "", "P-erin", "P-bob", t0 + 2_000),
        ]
        .into_iter()
        .zip(1..)
        .map(|(c, s)| CdrRecord {
            sequence: s,
            cdr: Some(c),
        })
        .collect();
        s.ingest("sbc1", recs).await.unwrap();
    });
    let addr: SocketAddr = ([127, 0, 0, 1], support::free_port()).into();
    let mut cmd = collector();
    cmd.arg("server")
        .args(["--listen", &addr.to_string(), "--db", &b.url()])
        .arg("--master-key")
        .arg(dir.path().join("master.key"))
        .arg("--tenant-keys")
        .arg(dir.path().join("tenant-keys"));
    let _server = Proc::spawn("collector server", cmd, &dir.path().join("server.log"));
    support::wait_listening(addr, Duration::from_secs(30));
    let url = format!("http://{addr}");
    let cdrs = |args: &[&str]| {
        let mut c = collector();
        c.args(["cdrs", "--server", &url, "--by-call"]).args(args);
        run(c, "")
    };

    let out = cdrs(&["-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 2);
    // Newest first: z (2 000), then X (1 000) with its ingress leg first.
    assert_eq!(calls[0]["leg_count"], 1);
    assert_eq!(calls[0]["legs"][0]["cdr_id"], "z");
    assert_eq!(calls[1]["correlation_id"], "X");
    assert_eq!(calls[1]["correlation_method"], "header");
    assert_eq!(calls[1]["leg_count"], 2);
    assert_eq!(calls[1]["legs"][0]["cdr_id"], "x_in");
    assert_eq!(calls[1]["legs"][1]["cdr_id"], "x_out");
    assert_eq!(calls[1]["caller"]["user"], "P-alice");
    assert_eq!(calls[1]["callee"]["user"], "P-bob");

    let out = cdrs(&["-o", "table", "--limit", "1"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Two header lines, then the newest call (z) and its one leg.
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[2].contains("P-erin") && !lines[2].starts_with(' '),
        "{text}"
    );
    assert!(
        lines[3].starts_with("  ") && lines[3].contains("call-z"),
        "{text}"
    );

    let out = cdrs(&["-o", "csv"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--by-call"));
}

/// `collector replay --by-call` groups the replayed legs with the same grouping: the
/// capture's oracle (tshark) has 3 calls, none through a B2BUA, so 3 one-leg calls in start
/// order, each with the oracle's Call-ID and RTP packet counts per direction.
#[test]
fn replay_by_call_matches_the_oracle() {
    let capture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/sipp_g711_basic.pcap");
    let oracle: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(capture.with_extension("pcap.json")).unwrap(),
    )
    .unwrap();
    let mut r = collector();
    r.arg("replay")
        .arg(&capture)
        .args(["--by-call", "-o", "json"]);
    let out = run(r, "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want = oracle["calls"].as_array().unwrap();
    assert_eq!(calls.len(), want.len());
    for (c, w) in calls.iter().zip(want) {
        assert_eq!(c["leg_count"], 1);
        let leg = &c["legs"][0];
        assert_eq!(leg["call_id"], w["call_id"]);
        for (dir, key) in [
            ("MEDIA_DIRECTION_CALLER_TO_CALLEE", "caller_to_callee"),
            ("MEDIA_DIRECTION_CALLEE_TO_CALLER", "callee_to_caller"),
        ] {
            // Each stream tshark saw is in the leg, same direction and SSRC, same count.
            for o in w["rtp"][key].as_array().unwrap() {
                let ssrc =
                    u64::from_str_radix(o["ssrc"].as_str().unwrap().trim_start_matches("0x"), 16)
                        .unwrap();
                let packets: Vec<u64> = leg["media"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| m["direction"] == dir && m["ssrc"].as_u64() == Some(ssrc))
                    .map(|m| m["packets"].as_u64().unwrap())
                    .collect();
                assert_eq!(
                    packets,
                    [o["packets"].as_u64().unwrap()],
                    "{} {key}",
                    w["call_id"]
                );
            }
        }
    }
    // The table has the same calls, each followed by its leg.
    let mut r = collector();
    r.arg("replay").arg(&capture).arg("--by-call");
    let text = String::from_utf8(run(r, "").stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 2 * want.len(), "{text}");
    for (i, w) in want.iter().enumerate() {
        let id = w["call_id"].as_str().unwrap();
        assert!(lines[2 + 2 * i + 1].starts_with("  "), "{text}");
        assert!(lines[2 + 2 * i + 1].contains(id), "{text}");
    }
}

/// An agent that streams to a collector without a key file would pseudonymize with a key
/// made at start: after a restart one number becomes another in the central store. It is
/// refused before anything is attached, with a message naming the setting; a misspelled
/// table is refused the same way.
#[test]
fn agent_refuses_a_server_without_a_key_file_and_misspelled_tables() {
    let dir = tempfile::tempdir().unwrap();
    let no_key = dir.path().join("no-key.toml");
    std::fs::write(
        &no_key,
        "[agent]\nid = \"a1\"\n\n[privacy]\nscope = \"s\"\n",
    )
    .unwrap();
    let misspelled = dir.path().join("misspelled.toml");
    std::fs::write(&misspelled, "[privcy]\nscope = \"s\"\n").unwrap();
    for (config, needle) in [
        (None, "privacy.key_file"),
        (Some(&no_key), "privacy.key_file"),
        (Some(&misspelled), "privcy"),
    ] {
        let mut cmd = collector();
        cmd.args(["agent", "--iface", "lo", "--server", "http://127.0.0.1:9"]);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        // An agent that was not refused would run until stopped: killed after 10 s.
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let refused = child.try_wait().unwrap();
        if refused.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            refused.is_some_and(|s| !s.success()),
            "{config:?} was not refused: {stderr}"
        );
        assert!(stderr.contains(needle), "{config:?}: {stderr}");
    }
}
