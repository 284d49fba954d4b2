//! `collector cdrs`: queries stored CDRs over `collector.v1.Query` and prints them as a
//! table, JSON lines (proto field names) or CSV (RFC 4180). Filters: time range, subject
//! (a number is hashed here under every key, see [`super::connect::SubjectArgs`]),
//! disposition, agent, minimum loss, maximum MOS. With `--by-call` it asks for calls
//! (`ListCalls`) and prints them with [`crate::callview::print`]: each call, then its legs.
use std::{
    io::{self, Write},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use collector_proto::v1::{query_client::QueryClient, CdrQuery};
use tokio_stream::StreamExt as _;

use super::CdrsArgs;
pub use crate::present::cdrs::OutputFormat;
use crate::{
    callview,
    present::{
        cdrs::{parse_disposition, print_cdrs},
        times::parse_time_ms,
    },
};

/// Runs the verb.
pub fn run(args: CdrsArgs) -> anyhow::Result<()> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let call_format = match (args.by_call, args.output) {
        (false, _) => None,
        (true, OutputFormat::Table) => Some(callview::Format::Table),
        (true, OutputFormat::Json) => Some(callview::Format::Json),
        (true, OutputFormat::Csv) => bail!("--by-call prints a table or json, not csv"),
    };
    let pseudonyms = args.subject.pseudonyms(&mut io::stdin().lock())?;
    let query = build_query(&args, pseudonyms, now_ms)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(format) = call_format {
        let calls = rt.block_on(async {
            let mut client = QueryClient::new(args.conn.connect().await?)
                .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
            let mut stream = client
                .list_calls(query)
                .await
                .context("querying calls")?
                .into_inner();
            let mut out = Vec::new();
            while let Some(c) = stream.next().await {
                out.push(c.context("receiving calls")?);
            }
            anyhow::Ok(out)
        })?;
        return write_out(|w| callview::print(w, &calls, format));
    }
    let cdrs = rt.block_on(async {
        let mut client = QueryClient::new(args.conn.connect().await?)
            .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
        let mut stream = client
            .list_cdrs(query)
            .await
            .context("querying CDRs")?
            .into_inner();
        let mut out = Vec::new();
        while let Some(c) = stream.next().await {
            out.push(c.context("receiving CDRs")?);
        }
        anyhow::Ok(out)
    })?;
    write_out(|w| print_cdrs(w, &cdrs, args.output))
}

/// Runs `print` over buffered stdout.
fn write_out(
    print: impl FnOnce(&mut io::BufWriter<io::StdoutLock<'static>>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let mut w = io::BufWriter::new(io::stdout().lock());
    match print(&mut w).and_then(|()| w.flush()) {
        // `collector cdrs | head` closing the pipe early is not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Turns the flags into a query (the subject already turned into `pseudonyms`).
pub fn build_query(
    args: &CdrsArgs,
    pseudonyms: Vec<String>,
    now_ms: u64,
) -> anyhow::Result<CdrQuery> {
    let time = |v: &Option<String>| -> anyhow::Result<u64> {
        v.as_deref().map_or(Ok(0), |s| parse_time_ms(s, now_ms))
    };
    let (start_from_ms, start_to_ms) = (time(&args.since)?, time(&args.until)?);
    if start_to_ms != 0 && start_to_ms <= start_from_ms {
        bail!("--until must be later than --since");
    }
    let disposition = match &args.disposition {
        Some(d) => parse_disposition(d)? as i32,
        None => 0,
    };
    Ok(CdrQuery {
        start_from_ms,
        start_to_ms,
        pseudonyms,
        disposition,
        agent_id: args.agent.clone().unwrap_or_default(),
        min_loss_pct: args.min_loss,
        max_mos: args.max_mos,
        limit: args.limit,
        tenant: args.tenant.clone(),
        ..Default::default()
    })
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]
mod tests {

    use super::*;
    use collector_proto::v1::Disposition;

    fn args() -> CdrsArgs {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "collector",
            "cdrs",
            "--since",
            "1h",
            "--until",
            "2001-09-09T01:46:40Z",
            "--disposition",
            "busy",
            "--agent",
            "sbc1",
            "--min-loss",
            "2.5",
            "--max-mos",
            "3.6",
            "--limit",
            "5",
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Cdrs(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn by_call_is_a_flag_that_leaves_the_query_alone() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(["collector", "cdrs", "--by-call", "-o", "json"])
            .unwrap();
        let crate::cli::Command::Cdrs(a) = cli.command else {
            panic!("not cdrs");
        };
        assert!(a.by_call);
        assert_eq!(a.output, OutputFormat::Json);
        assert!(!args().by_call);
        // The filters (and the limit, which counts calls) go into the same CdrQuery.
        let q = build_query(&a, vec!["P-x".into()], 0).unwrap();
        assert_eq!(q.pseudonyms, ["P-x"]);
    }

    #[test]
    fn flags_become_the_query() {
        // 2001-09-09T01:46:40Z is Unix time 1_000_000_000 (`date -u -d @1000000000`).
        let q = build_query(&args(), vec!["P-x".into(), "P-y".into()], 999_000_000_000).unwrap();
        assert_eq!(q.start_from_ms, 999_000_000_000 - 3_600_000);
        assert_eq!(q.start_to_ms, 1_000_000_000_000);
        assert_eq!(q.pseudonyms, ["P-x", "P-y"]);
        assert_eq!(q.disposition, Disposition::Busy as i32);
        assert_eq!(q.agent_id, "sbc1");
        assert_eq!((q.min_loss_pct, q.max_mos), (Some(2.5), Some(3.6)));
        assert_eq!(q.limit, 5);
        // --until before --since is refused.
        assert!(build_query(&args(), vec![], 2_000_000_000_000).is_err());
        assert!(parse_time_ms("2001-13-01T00:00:00Z", 0).is_err());
    }
}
