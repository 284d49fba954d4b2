//! Privacy at the edge, end to end: a call with a known caller number, callee number,
//! display name, addresses and Call-ID goes past the attached agent, which streams its CDR
//! through the spool to a collector and serves its live flows. Then everything that left
//! the agent process is scanned — the collector's database file as received over gRPC, the
//! spool files, the agent's logs at trace level and its stdout, the live flow output and a
//! query of the stored CDRs — for each identifier in every common encoding: zero hits.
use std::{
    net::UdpSocket,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use collector_tests::{collector_bin, VethPair};

const CALLER: &str = "+442079460123";
const CALLEE: &str = "+15551234567";
const DISPLAY: &str = "Alice Wonderland";
const CALL_ID: &str = "privacy-e2e-7f3a9c@198.18.7.1";

/// Every spelling of the identifiers that must not appear anywhere.
fn needles(a: &str, b: &str) -> Vec<String> {
    let mut n = Vec::new();
    for num in [CALLER, CALLEE] {
        let digits = num.trim_start_matches('+');
        n.push(num.to_owned()); // +442079460123
        n.push(digits.to_owned()); // 442079460123
        n.push(format!("%2B{digits}")); // URL-encoded +
        n.push(format!("00{digits}")); // international prefix
        n.push(format!("sip:{num}"));
        n.push(digits[digits.len() - 8..].to_owned()); // the subscriber part alone
    }
    n.push(DISPLAY.to_owned());
    n.push(DISPLAY.replace(' ', "%20"));
    n.push(DISPLAY.replace(' ', "+"));
    n.push("Wonderland".to_owned());
    n.push(CALL_ID.to_owned());
    n.push("privacy-e2e-7f3a9c".to_owned());
    n.push(a.to_owned());
    n.push(b.to_owned());
    n
}

/// One message of the call; `a` is the caller's address (the Via of every transaction,
/// which the caller starts), `media` the address the SDP (if any) announces.
#[allow(clippy::too_many_arguments)]
fn sip(
    first: &str,
    cseq: &str,
    branch: &str,
    a: &str,
    media: &str,
    with_sdp: bool,
    to_tag: bool,
) -> Vec<u8> {
    let b = media;
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 {media}\r\ns=-\r\nc=IN IP4 {media}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    );
    let body = if with_sdp { sdp.as_str() } else { "" };
    let ctype = if with_sdp {
        "Content-Type: application/sdp\r\n"
    } else {
        ""
    };
    let tag = if to_tag { ";tag=callee1" } else { "" };
    format!(
        "{first}\r\nVia: SIP/2.0/UDP {a}:5060;branch=z9hG4bK{branch}\r\nFrom: \"{DISPLAY}\" <sip:{CALLER}@{a};user=phone>;tag=caller1\r\nTo: <sip:{CALLEE}@{b};user=phone>{tag}\r\nCall-ID: {CALL_ID}\r\nCSeq: {cseq}\r\nContact: <sip:{CALLER}@{a}:5060>\r\nMax-Forwards: 70\r\nUser-Agent: privacy-e2e\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn scan(what: &str, data: &[u8], needles: &[String], hits: &mut Vec<String>) {
    let text = String::from_utf8_lossy(data);
    for n in needles {
        if text.contains(n.as_str()) {
            hits.push(format!("{what}: {n}"));
        }
    }
}

fn scan_dir(dir: &Path, needles: &[String], hits: &mut Vec<String>) -> Result<usize> {
    let mut files = 0;
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        if p.is_dir() {
            files += scan_dir(&p, needles, hits)?;
        } else {
            scan(&p.display().to_string(), &std::fs::read(&p)?, needles, hits);
            files += 1;
        }
    }
    Ok(files)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_port(ns: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let out = collector_tests::ns_exec(ns, &["ss", "-ltn"])?;
        if out.contains(&format!("127.0.0.1:{port}")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("nothing listens on port {port} in {ns}")
}

#[test]
fn nothing_that_leaves_the_agent_holds_an_identifier() -> Result<()> {
    let pair = VethPair::new(7)?;
    let (a, b) = (pair.addr_a.clone(), pair.addr_b.clone());
    let tmp = std::env::temp_dir().join(format!("vct-privacy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = Rm(tmp.clone());
    let db = tmp.join("cdr.db");
    let spool = tmp.join("spool");
    let bin = collector_bin();
    let _server = Killed(
        Command::new("ip")
            .args(["netns", "exec", &pair.b.name])
            .arg(&bin)
            .args(["server", "--listen", "127.0.0.1:50061"])
            .arg("--master-key")
            .arg(db.with_file_name("master.key"))
            .arg("--tenant-keys")
            .arg(db.with_file_name("tenant-keys"))
            .arg("--db")
            .arg(format!("sqlite://{}", db.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the collector")?,
    );
    wait_port(&pair.b.name, 50061)?;
    let config = collector_tests::agent_config(&tmp, "privacy-e2e", "")?;
    let agent_log = std::fs::File::create(tmp.join("agent.log"))?;
    let agent_out = std::fs::File::create(tmp.join("agent.out"))?;
    let mut agent = Killed(
        Command::new("ip")
            .args(["netns", "exec", &pair.b.name])
            .arg(&bin)
            .args(["agent", "--iface", &pair.if_b, "--config", &config])
            .args(["--server", "http://127.0.0.1:50061", "--spool-dir"])
            .arg(&spool)
            .arg("--spool-key")
            .arg(tmp.join("spool.key"))
            .args(["--watch-listen", "127.0.0.1:50062"])
            .env("COLLECTOR_LOG", "trace")
            .stdout(agent_out)
            .stderr(agent_log)
            .spawn()
            .context("starting the agent")?,
    );
    wait_port(&pair.b.name, 50062)?;

    // The call: INVITE, 180, 200 (with SDP both ways), ACK, BYE, 200 — the caller in A,
    // the callee in B, both bound to 5060 so every message is delivered.
    let (sa, sb) = {
        let (a1, b1) = (a.clone(), b.clone());
        let sa = pair
            .a
            .run(move || Ok(UdpSocket::bind((a1.as_str(), 5060))?))?;
        let sb = pair
            .b
            .run(move || Ok(UdpSocket::bind((b1.as_str(), 5060))?))?;
        (sa, sb)
    };
    let to_b = (b.as_str(), 5060);
    let to_a = (a.as_str(), 5060);
    let invite = format!("INVITE sip:{CALLEE}@{b};user=phone SIP/2.0");
    sa.send_to(&sip(&invite, "1 INVITE", "inv1", &a, &a, true, false), to_b)?;
    std::thread::sleep(Duration::from_millis(50));
    sb.send_to(
        &sip(
            "SIP/2.0 180 Ringing",
            "1 INVITE",
            "inv1",
            &a,
            &b,
            false,
            true,
        ),
        to_a,
    )?;
    std::thread::sleep(Duration::from_millis(300));
    sb.send_to(
        &sip("SIP/2.0 200 OK", "1 INVITE", "inv1", &a, &b, true, true),
        to_a,
    )?;
    std::thread::sleep(Duration::from_millis(50));
    let ack = format!("ACK sip:{CALLEE}@{b} SIP/2.0");
    sa.send_to(&sip(&ack, "1 ACK", "ack1", &a, &b, false, true), to_b)?;
    std::thread::sleep(Duration::from_millis(1000));
    let bye = format!("BYE sip:{CALLEE}@{b} SIP/2.0");
    sa.send_to(&sip(&bye, "2 BYE", "bye2", &a, &b, false, true), to_b)?;
    std::thread::sleep(Duration::from_millis(50));
    sb.send_to(
        &sip("SIP/2.0 200 OK", "2 BYE", "bye2", &a, &b, false, true),
        to_a,
    )?;
    // Past the tracker's linger after BYE, so the CDR is final and shipped.
    std::thread::sleep(Duration::from_secs(6));

    let flows = collector_tests::ns_exec(
        &pair.b.name,
        &[
            bin.to_str().unwrap_or_default(),
            "flows",
            "--server",
            "http://127.0.0.1:50062",
            "--last",
            "100",
            "-o",
            "json",
        ],
    )?;
    // SIGTERM: the agent finishes, ships what is left and exits.
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.0.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let cdrs = collector_tests::ns_exec(
        &pair.b.name,
        &[
            bin.to_str().unwrap_or_default(),
            "cdrs",
            "--server",
            "http://127.0.0.1:50061",
            "-o",
            "json",
        ],
    )?;

    // The test saw what it meant to: one answered call, stored and streamed.
    ensure!(
        cdrs.lines().count() == 1 && cdrs.contains("DISPOSITION_ANSWERED"),
        "want one answered CDR at the collector, got: {cdrs}"
    );
    ensure!(
        flows.contains("ANSWERED"),
        "no live call-state events: {flows}"
    );
    let log = std::fs::read(tmp.join("agent.log"))?;
    ensure!(log.len() > 1000, "the trace log is suspiciously short");

    let needles = needles(&a, &b);
    let mut hits = Vec::new();
    scan(
        "collector query output",
        cdrs.as_bytes(),
        &needles,
        &mut hits,
    );
    scan("live flow output", flows.as_bytes(), &needles, &mut hits);
    // The collector's files hold exactly what it received over gRPC.
    let files = scan_dir(&tmp, &needles, &mut hits)?;
    ensure!(
        files >= 4,
        "expected the db, spool, log and stdout files, found {files}"
    );
    assert!(hits.is_empty(), "identifiers left the agent: {hits:#?}");
    Ok(())
}
