//! The `billing` policy of the callee number through the agent's pipeline (issue 24): a
//! capture written here (four answered calls to numbers under three prefixes of
//! `testdata/billing/rates.csv`, plus one country absent from it) is replayed with an agent
//! configuration using the policy, in process (`replay_file`, the pipeline the agent runs)
//! and through the `collector replay` binary in every output format. Each CDR's
//! `destination_prefix` must be the one read off the CSV by hand, and no serialized CDR or
//! flow event may hold a callee number's digits (canary scan). Then end to end with the
//! central collector: rate table imported, capture loaded, the month's usage report equal to
//! the hand-computed sums, and no callee number in the store, the spool or the report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use collector::cli::replay::{replay_file, ReplayOptions};
use collector::privacy::PrivacyConfig;
use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::support::{collector, write_private};

/// Capture start (2026-03-02T00:00:00Z, a date the test table is valid on), in seconds.
const T0_S: u64 = 1_772_409_600;

/// The calls: (callee as dialled in the To and request-URI, the destination prefix expected
/// from `rates.csv` by reading it, the national significant number that must never appear).
const CALLS: [(&str, &str, &str); 5] = [
    // London in national form (the UK rule makes it +442079460000): +4420 beats +44.
    ("02079460000", "+4420", "2079460000"),
    // The mobile network: +447700 beats +44.
    ("+447700900123", "+447700", "7700900123"),
    // Berlin with the international prefix: +4930.
    ("00493012345678", "+4930", "3012345678"),
    // Elsewhere in the UK: only the +44 row matches.
    ("+441632960001", "+44", "1632960001"),
    // France has no row: its country code alone.
    ("+33123456789", "+33", "123456789"),
];

/// An agent configuration with the billing policy on the test rate table.
fn agent_config(dir: &Path) -> PathBuf {
    let keys = dir.join("keys.toml");
    write_private(
        &keys,
        "[[key]]\nid = \"k1\"\n\
         secret = \"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\"\n\
         created = \"2025-01-01T00:00:00Z\"\nactive = true\n",
    );
    let rates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/billing/rates.csv");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[privacy]\nscope = \"tenant-a\"\nkey_file = {:?}\nbilling_rates = {:?}\n\
             national = {{ country_code = \"44\", trunk_prefix = \"0\" }}\n\
             [privacy.fields]\ncallee_user = \"billing\"\n",
            keys.display().to_string(),
            rates.display().to_string()
        ),
    )
    .unwrap();
    config
}

/// Ethernet + IPv4 + UDP 5060 → 5060 between the two hosts (checksums left at zero: the
/// decoder does not need them).
fn frame(from_caller: bool, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = if from_caller {
        ([198, 51, 100, 1], [198, 51, 100, 2])
    } else {
        ([198, 51, 100, 2], [198, 51, 100, 1])
    };
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = u16::try_from(20 + 8 + payload.len()).unwrap();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&5060u16.to_be_bytes());
    f.extend_from_slice(&5060u16.to_be_bytes());
    f.extend_from_slice(&(total - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// One SIP message of call `n` to `callee`: a request (`method`, CSeq) or a response
/// (`code` to the CSeq's method).
fn sip(n: usize, callee: &str, first_line: &str, cseq: &str, to_tag: bool) -> Vec<u8> {
    let tag = if to_tag { ";tag=callee" } else { "" };
    format!(
        "{first_line}\r\n\
         Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-{n}-{}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@198.51.100.1>;tag=caller-{n}\r\n\
         To: <sip:{callee}@198.51.100.2>{tag}\r\n\
         Call-ID: billing-call-{n}@198.51.100.1\r\n\
         CSeq: {cseq}\r\n\
         Contact: <sip:alice@198.51.100.1:5060>\r\n\
         Content-Length: 0\r\n\r\n",
        cseq.replace(' ', "-")
    )
    .into_bytes()
}

/// The capture: the calls one after the other, each INVITE, 200, ACK, BYE, 200, answered
/// 1 s after the INVITE and hung up by the caller 30 s later.
fn write_capture(path: &Path) {
    let mut w = PcapWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (n, (callee, _, _)) in CALLS.iter().enumerate() {
        let t = T0_S * 1000 + 60_000 * n as u64;
        let ruri = format!("sip:{callee}@198.51.100.2 SIP/2.0");
        let msgs = [
            (
                0,
                true,
                sip(n, callee, &format!("INVITE {ruri}"), "1 INVITE", false),
            ),
            (
                1_000,
                false,
                sip(n, callee, "SIP/2.0 200 OK", "1 INVITE", true),
            ),
            (
                1_010,
                true,
                sip(n, callee, &format!("ACK {ruri}"), "1 ACK", true),
            ),
            (
                31_000,
                true,
                sip(n, callee, &format!("BYE {ruri}"), "2 BYE", true),
            ),
            (
                31_010,
                false,
                sip(n, callee, "SIP/2.0 200 OK", "2 BYE", true),
            ),
        ];
        for (dt, from_caller, payload) in msgs {
            let data = frame(from_caller, &payload);
            let len = u32::try_from(data.len()).unwrap();
            let ts = Duration::from_millis(t + dt);
            w.write_packet(&PcapPacket::new(ts, len, &data)).unwrap();
        }
    }
}

/// Fails when `text` holds any callee's national significant number (so the full number,
/// in any spelling that keeps its digits together, cannot be there either).
fn canary(what: &str, text: &str) {
    for (dialled, _, nsn) in CALLS {
        assert!(
            !text.contains(nsn),
            "{what}: the digits of {dialled} leaked: {text}"
        );
    }
}

#[test]
fn billing_policy_keeps_destination_prefixes_and_never_the_number() {
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path());
    let capture = dir.path().join("billing.pcap");
    write_capture(&capture);

    // In process: the pipeline the agent runs, with the agent's policy.
    let opts = ReplayOptions {
        privacy: Some(PrivacyConfig::load_agent_config(&config).unwrap()),
        ..ReplayOptions::default()
    };
    let out = replay_file(&capture, &opts, |_| {}).unwrap();
    let finals: Vec<_> = out.cdrs.iter().filter(|c| !c.interim).collect();
    assert_eq!(finals.len(), CALLS.len(), "{:?}", out.cdrs);
    // Calls are told apart by their start time (one a minute, in CALLS order).
    let by_start: BTreeMap<u64, &str> = finals
        .iter()
        .map(|c| (c.start_time_ms, c.destination_prefix.as_str()))
        .collect();
    let got: Vec<&str> = by_start.values().copied().collect();
    let want: Vec<&str> = CALLS.iter().map(|c| c.1).collect();
    assert_eq!(got, want);
    // The number is pseudonymized exactly as under `pseudonymize`: the London call's callee
    // is the fixed vector of +442079460000 in scope tenant-a under key bytes 0..=31,
    // computed with Python's `hmac` (see `privacy::policy`'s `pseudonym_format_fixed_vectors`).
    let london = finals.iter().min_by_key(|c| c.start_time_ms).unwrap();
    assert_eq!(
        london.callee.as_ref().unwrap().user,
        "n_k1_lnbnqvjd5pj4wjxg7bkvf2gove"
    );
    for c in &finals {
        let callee = &c.callee.as_ref().unwrap().user;
        assert!(
            callee.starts_with("n_k1_"),
            "callee pseudonymized: {callee}"
        );
        assert_eq!(c.billable_ms, 30_000);
        canary("CDR", &serde_json::to_string(c).unwrap());
    }
    for ev in &out.flows {
        canary("flow event", &serde_json::to_string(ev).unwrap());
    }

    // The binary, as an operator runs it: every printer shows the prefix, none the number.
    for format in ["json", "csv", "table"] {
        let run = collector()
            .arg("replay")
            .arg(&capture)
            .arg("--config")
            .arg(&config)
            .args(["-o", format])
            .output()
            .unwrap();
        let stdout = String::from_utf8(run.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{format}: {stderr}");
        canary(format, &stdout);
        canary(format, &stderr);
        for (_, prefix, _) in CALLS {
            assert!(stdout.contains(prefix), "{format}: no {prefix}: {stdout}");
        }
        if format == "json" {
            let prefixes: Vec<String> = stdout
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["destination_prefix"].as_str().unwrap().to_owned()
                })
                .collect();
            assert_eq!(prefixes, want);
        }
        if format == "csv" {
            let header = stdout.lines().next().unwrap();
            assert!(header.ends_with(",destination_prefix"), "{header}");
        }
    }
}

/// A bad rate table stops the start with an error naming the file and the line; `billing`
/// without a table and `billing` on the caller are configuration errors.
#[test]
fn billing_configuration_errors_stop_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("billing.pcap");
    write_capture(&capture);
    let good = std::fs::read_to_string(agent_config(dir.path())).unwrap();
    let bad_rates = dir.path().join("bad.csv");
    std::fs::write(
        &bad_rates,
        "prefix,destination,price_per_minute,currency,increments,minimum_secs,connection_fee,valid_from\n\
         +44,United Kingdom,12,EUR,60/60,0,0,2026-01-01\n\
         +4420,London,1.5,EUR,60/60,0,0,2026-01-01\n",
    )
    .unwrap();
    let rates_line = good
        .lines()
        .find(|l| l.starts_with("billing_rates"))
        .unwrap()
        .to_owned();
    let cases = [
        (
            good.replace(
                &rates_line,
                &format!("billing_rates = {:?}", bad_rates.display().to_string()),
            ),
            vec!["bad.csv", "line 3"],
        ),
        (good.replace(&rates_line, ""), vec!["privacy.billing_rates"]),
        (
            good.replace(
                "callee_user = \"billing\"",
                "callee_user = \"billing\"\ncaller_user = \"billing\"",
            ),
            vec!["caller_user", "billing", "does not apply"],
        ),
    ];
    for (i, (text, want)) in cases.into_iter().enumerate() {
        let config = dir.path().join(format!("case{i}.toml"));
        std::fs::write(&config, &text).unwrap();
        let run = collector()
            .arg("replay")
            .arg(&capture)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "case {i} started: {stderr}");
        for w in want {
            assert!(stderr.contains(w), "case {i}: no {w:?} in {stderr}");
        }
        assert!(run.stdout.is_empty(), "case {i}: printed CDRs");
    }
}

/// End to end through the binaries: a collector (SQLite), `collector rates import` of
/// `rates.csv`, the capture loaded by `collector replay --server` with the billing policy,
/// then `collector report usage --month 2026-03 -o json`. Each call is answered for 30 s;
/// by hand from the CSV: London (+4420, 10/min, 60/60) 60 s, cost 10; mobile (+447700,
/// 30/min, 30/6, minimum 30 s, fee 5) 30 s, 5 + 15 = 20; Berlin (+4930, 8/min, 1/1) 30 s,
/// ceil(240 / 60) = 4; United Kingdom (+44, 12/min, 60/60) 60 s, cost 12; France (+33) has no
/// row: listed unrated. No full callee number in the store, the spool or the report.
#[test]
fn usage_report_from_the_collector_equals_the_hand_sums() {
    use std::net::SocketAddr;

    use crate::support::{free_port, wait_listening, Proc};
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(dir.path());
    let capture = dir.path().join("billing.pcap");
    write_capture(&capture);
    let db = dir.path().join("cdr.db");
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = collector();
    cmd.arg("server").args([
        "--listen",
        &addr.to_string(),
        "--db",
        &format!("sqlite://{}", db.display()),
    ]);
    cmd.arg("--master-key")
        .arg(dir.path().join("master.key"))
        .arg("--tenant-keys")
        .arg(dir.path().join("tenant-keys"));
    let _server = Proc::spawn("collector server", cmd, &dir.path().join("server.log"));
    wait_listening(addr, Duration::from_secs(30));
    let url = format!("http://{addr}");
    let rates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/billing/rates.csv");
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let imported = ok(collector()
        .args(["rates", "import"])
        .arg(&rates)
        .args(["--server", &url])
        .output()
        .unwrap());
    assert!(imported.contains("4 rows"), "{imported}");
    let spool = dir.path().join("spool");
    ok(collector()
        .arg("replay")
        .arg(&capture)
        .arg("--config")
        .arg(&config)
        .args(["--server", &url])
        .arg("--spool-dir")
        .arg(&spool)
        .output()
        .unwrap());
    let report = ok(collector()
        .args(["report", "usage", "--month", "2026-03", "-o", "json"])
        .args(["--server", &url])
        .output()
        .unwrap());
    canary("report", &report);
    let v: serde_json::Value = serde_json::from_str(&report).unwrap();
    let dest: Vec<(String, u64, u64, u64, u64)> = v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["destination"].as_str().unwrap().to_owned(),
                d["calls"].as_u64().unwrap(),
                d["answered"].as_u64().unwrap(),
                d["billable_secs"].as_u64().unwrap(),
                d["cost_minor"].as_u64().unwrap(),
            )
        })
        .collect();
    let row = |n: &str, secs, cost| (n.to_owned(), 1, 1, secs, cost);
    assert_eq!(
        dest,
        vec![
            row("Germany, Berlin", 30, 4),
            row("United Kingdom", 60, 12),
            row("United Kingdom, London", 60, 10),
            row("United Kingdom, mobile", 30, 20),
        ]
    );
    assert_eq!(
        v["unrated"],
        serde_json::json!([{"destination_prefix": "+33", "answered_calls": 1,
            "answered_ms": 30_000}])
    );
    // The store (the database file with its WAL) and the spool hold no callee number.
    for entry in walk(dir.path()) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("cdr.db") || entry.starts_with(&spool) {
            canary(
                &name,
                &String::from_utf8_lossy(&std::fs::read(&entry).unwrap()),
            );
        }
    }
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
