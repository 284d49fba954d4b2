//! `cargo xtask fuzz [--time S] [--target T]`: builds the cargo-fuzz targets (nightly) and
//! runs each for a bounded time, seeded from the captures in testdata/ and RFC torture messages.
//! A crash leaves its input in `collector/fuzz/artifacts/<target>/`; copy it to
//! `collector/fuzz/regressions/<target>/` and it becomes a regression test
//! (`collector/tests/integration/fuzz_regressions.rs`).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// Every target, with the seeds it takes: raw frames, SIP messages or nothing.
const TARGETS: &[(&str, Seeds)] = &[
    ("l2l4", Seeds::Frames),
    ("sip", Seeds::Sip),
    ("sdp", Seeds::Sip),
    ("rtp", Seeds::None),
    ("rtcp", Seeds::Frames),
    ("reassembly", Seeds::Frames),
    ("spool_frames", Seeds::None),
    ("ingest_validation", Seeds::None),
];

#[derive(Clone, Copy)]
enum Seeds {
    Frames,
    Sip,
    None,
}

fn testdata() -> PathBuf {
    crate::root().join("testdata")
}

fn seed(dir: &Path, kind: Seeds) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut n = 0;
    match kind {
        Seeds::None => {}
        Seeds::Sip => {
            for sub in ["badinput/rfc4475", "badinput/rfc5118"] {
                let Ok(rd) = std::fs::read_dir(testdata().join(sub)) else {
                    continue;
                };
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "md") {
                        continue;
                    }
                    if let Some(name) = p.file_name() {
                        std::fs::copy(&p, dir.join(name))?;
                        n += 1;
                    }
                }
            }
        }
        Seeds::Frames => {
            let Ok(rd) = std::fs::read_dir(testdata().join("corpus")) else {
                return Ok(0);
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_none_or(|x| x != "pcap") {
                    continue;
                }
                let Ok(f) = std::fs::File::open(&p) else {
                    continue;
                };
                let Ok(mut r) = pcap_file::pcap::PcapReader::new(f) else {
                    continue;
                };
                let stem = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Ethernet captures only: the targets take frames from the Ethernet header.
                if r.header().datalink != pcap_file::DataLink::ETHERNET {
                    continue;
                }
                let mut i = 0;
                while let Some(Ok(pkt)) = r.next_packet() {
                    if i >= 200 {
                        break;
                    }
                    std::fs::write(dir.join(format!("{stem}-{i}")), &pkt.data)?;
                    i += 1;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

/// Runs the targets.
pub fn run(secs: u64, only: Option<&str>) -> Result<()> {
    let fuzz_dir = crate::root().join("collector/fuzz");
    let has_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_fuzz {
        println!("fuzz: installing cargo-fuzz");
        crate::run(
            Command::new("cargo").args(["install", "cargo-fuzz"]),
            "cargo install cargo-fuzz",
        )?;
    }
    let mut failed = Vec::new();
    for (name, seeds) in TARGETS {
        if only.is_some_and(|o| o != *name) {
            continue;
        }
        let corpus = fuzz_dir.join("corpus").join(name);
        let n = seed(&corpus, *seeds).with_context(|| format!("seeding {name}"))?;
        println!("fuzz: {name}: {n} seeds, {secs} s");
        let status = Command::new("cargo")
            .current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", name])
            .arg(&corpus)
            .args([
                "--",
                &format!("-max_total_time={secs}"),
                "-rss_limit_mb=2048",
            ])
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        bail!("fuzz targets found crashes: {failed:?} (inputs in collector/fuzz/artifacts/)");
    }
    println!("fuzz: no crash");
    Ok(())
}
