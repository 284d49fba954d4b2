//! `collector report usage`: the usage report of a month from the central collector
//! (`Query.Usage`, the same connection and `read` token as `collector cdrs`), per destination:
//! calls, answered, failed, ASR (answered / attempts), ACD (mean answered duration), billable
//! minutes and cost in integer minor units; then the unrated answered calls by prefix, so the
//! operator can fix the rate table. As a table, CSV (for billing systems) or JSON. Every figure
//! is computed in integers (no floating point near money).
use std::io::{self, Write as _};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use collector_proto::v1::{query_client::QueryClient, UsageReportRequest};

use super::ConnectArgs;
use crate::present::{
    cdrs::OutputFormat,
    usage::{month_range, render},
};

/// `collector report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Which report.
    #[command(subcommand)]
    pub command: ReportCommand,
}

/// The reports.
#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Calls, minutes and cost per destination over one month (UTC), and the unrated calls.
    Usage(UsageArgs),
}

/// `collector report usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// The month, `YYYY-MM` (UTC).
    #[arg(long)]
    pub month: String,
    /// The tenant (default: the token's own; a provider token names it, else `default`).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Output format.
    #[arg(long = "output", short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Collector connection (needs a `read` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// Runs the verb.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    match args.command {
        ReportCommand::Usage(a) => usage(a),
    }
}

fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let (from_ms, to_ms) = month_range(&args.month)
        .with_context(|| format!("--month {:?} is not YYYY-MM", args.month))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let mut client = QueryClient::new(args.conn.connect().await?);
        let resp = client
            .usage(UsageReportRequest {
                tenant: args.tenant.clone(),
                from_ms,
                to_ms,
            })
            .await
            .context("usage report refused")?;
        anyhow::Ok(resp.into_inner())
    })?;
    io::stdout()
        .lock()
        .write_all(render(&report, args.output).as_bytes())?;
    Ok(())
}
