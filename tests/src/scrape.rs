//! Scraping an agent's Prometheus metrics (`collector agent --metrics-listen`) over plain
//! HTTP/1.1 from inside its namespace, and reading samples out of the exposition text.
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::Netns;

/// One scrape of `/metrics` at `addr` from inside `ns`; the body.
pub fn scrape(ns: &Netns, addr: &str) -> Result<String> {
    let addr = addr.to_owned();
    ns.run(move || {
        let mut s = TcpStream::connect(&addr).context("connecting to /metrics")?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp.split_once("\r\n\r\n").context("no HTTP head")?;
        if !head.starts_with("HTTP/1.1 200 ") {
            bail!("scrape answered {head}");
        }
        Ok(body.to_owned())
    })
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum of every sample of metric `name` (any labels, or none) whose labels contain
/// `label` (empty: all).
pub fn sum(body: &str, name: &str, label: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            let bare = labels.is_empty() || labels.starts_with('{');
            (bare && labels.contains(label)).then_some(value)
        })
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Scrapes until `done` holds (the agent refreshes its metrics once a second), at most
/// `within`; returns the last body either way, for the assertions to report.
pub fn scrape_until(
    ns: &Netns,
    addr: &str,
    within: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let body = scrape(ns, addr)?;
        if done(&body) || Instant::now() > deadline {
            return Ok(body);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Scrapes until the sample `series` equals `want`, at most `within`; an error saying
/// `what` did not happen (with the last body) otherwise. Returns the last body.
pub fn await_sample(
    ns: &Netns,
    addr: &str,
    series: &str,
    want: f64,
    within: Duration,
    what: &str,
) -> Result<String> {
    let body = scrape_until(ns, addr, within, |b| sample(b, series) == Some(want))?;
    if sample(&body, series) != Some(want) {
        bail!("{what}: {series} is not {want} after {within:?}: {body}");
    }
    Ok(body)
}

/// Waits (at most 10 s) until the agent has produced `n` CDRs; returns the last body.
pub fn await_cdrs(ns: &Netns, addr: &str, n: usize) -> Result<String> {
    let series = r#"collector_cdrs_total{stage="produced"}"#;
    let within = Duration::from_secs(10);
    await_sample(ns, addr, series, n as f64, within, "every CDR made")
}

/// The series of the kernel counter `reason`.
pub fn kernel(reason: &str) -> String {
    format!(r#"collector_kernel_packets_total{{reason="{reason}"}}"#)
}
