//! `collector rates`: rate tables in the central collector (issue 24). `import` sends a rate
//! table CSV to the collector (`Admin.ImportRates`, an `admin` token), which validates it (an
//! error names the line), stores it as a new version of the tenant's table and rates the
//! answered CDRs ingested afterwards with it. Prints the version (a hash of the content).
use std::io::{self, Write as _};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use collector_proto::v1::{admin_client::AdminClient, ImportRatesRequest};

use super::ConnectArgs;

/// `collector rates`.
#[derive(Debug, Args)]
pub struct RatesArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: RatesCommand,
}

/// The verbs of `collector rates`.
#[derive(Debug, Subcommand)]
pub enum RatesCommand {
    /// Import a rate-table CSV as the newest version of a tenant's table.
    Import(ImportArgs),
}

/// `collector rates import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The rate-table CSV (header `prefix,destination,price_per_minute,currency,increments,
    /// minimum_secs,connection_fee,valid_from`).
    pub file: std::path::PathBuf,
    /// The tenant the table belongs to (a plain name).
    #[arg(long, default_value = "default")]
    pub tenant: String,
    /// Collector connection (needs an `admin` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// Runs the verb.
pub fn run(args: RatesArgs) -> anyhow::Result<()> {
    match args.command {
        RatesCommand::Import(a) => import(a),
    }
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let csv = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let resp = rt.block_on(async {
        let mut client = AdminClient::new(args.conn.connect().await?);
        let resp = client
            .import_rates(ImportRatesRequest {
                tenant: args.tenant.clone(),
                csv,
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", args.file.display(), s.message()))
            .context("import refused")?;
        anyhow::Ok(resp.into_inner())
    })?;
    let mut out = io::stdout().lock();
    let what = if resp.new_version {
        "imported"
    } else {
        "already imported (now the newest)"
    };
    writeln!(
        out,
        "rate table for tenant {}: {} rows, version {} {what}",
        args.tenant, resp.rows, resp.version
    )?;
    Ok(())
}
