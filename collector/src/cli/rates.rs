//! `collector rates`: rate tables in the central collector (issue 24). `import` sends a rate
//! table CSV to the collector (`Admin.ImportRates`, an `admin` token), which validates it (an
//! error names the line), stores it as a new version of the tenant's table and rates the
//! answered CDRs ingested afterwards with it. Prints the version (a hash of the content).
//! `rerate` re-rates a tenant's CDRs since a date with its newest table (`Admin.Rerate`, an
//! `admin` token; recorded in the audit log).
use std::io::{self, Write as _};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use collector_proto::v1::{admin_client::AdminClient, ImportRatesRequest, RerateRequest};

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
    /// Re-rate a tenant's CDRs since a date with its newest rate table (after importing a
    /// corrected table). Audited.
    Rerate(RerateArgs),
}

/// `collector rates rerate`.
#[derive(Debug, Args)]
pub struct RerateArgs {
    /// The first day re-rated, `YYYY-MM-DD` (UTC): final CDRs that started on it or later.
    #[arg(long)]
    pub since: String,
    /// The tenant (default: the token's own; a provider token names it, else `default`).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Collector connection (needs an `admin` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// `collector rates import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The rate-table CSV (header `prefix,destination,price_per_minute,currency,increments,
    /// minimum_secs,connection_fee,valid_from`).
    pub file: std::path::PathBuf,
    /// The tenant (default: the token's own; a provider token names it, else `default`).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Collector connection (needs an `admin` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// Runs the verb.
pub fn run(args: RatesArgs) -> anyhow::Result<()> {
    match args.command {
        RatesCommand::Import(a) => import(a),
        RatesCommand::Rerate(a) => rerate(a),
    }
}

/// Makes one `Admin` call on a runtime of its own; a refusal reads `{refused}: {message}`.
fn admin_call<T, F, Fut>(conn: &ConnectArgs, refused: &str, call: F) -> anyhow::Result<T>
where
    F: FnOnce(AdminClient<crate::rpc::connect::AuthChannel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = AdminClient::new(conn.connect().await?);
        let resp = call(client)
            .await
            .map_err(|s| anyhow::anyhow!("{refused}: {}", s.message()))?;
        anyhow::Ok(resp.into_inner())
    })
}

/// Midnight (UTC) of `YYYY-MM-DD`, Unix ms.
pub fn day_start_ms(day: &str) -> Option<u64> {
    let mut parts = day.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()?;
    u64::try_from(date.midnight().assume_utc().unix_timestamp())
        .ok()?
        .checked_mul(1000)
}

fn rerate(args: RerateArgs) -> anyhow::Result<()> {
    let since_ms = day_start_ms(&args.since)
        .with_context(|| format!("--since {:?} is not YYYY-MM-DD", args.since))?;
    let request = RerateRequest {
        tenant: args.tenant.clone(),
        since_ms,
    };
    let resp = admin_call(&args.conn, "re-rating refused", |mut c| async move {
        c.rerate(request).await
    })?;
    let mut out = io::stdout().lock();
    let version = if resp.version.is_empty() {
        "no rate table".to_owned()
    } else {
        format!("rate table {}", resp.version)
    };
    writeln!(
        out,
        "tenant {}: {} CDRs since {} re-rated with {version}: {} changed, {} answered unrated",
        args.tenant, resp.cdrs, args.since, resp.changed, resp.unrated
    )?;
    Ok(())
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let csv = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let request = ImportRatesRequest {
        tenant: args.tenant.clone(),
        csv,
    };
    let refused = format!("{}: import refused", args.file.display());
    let resp = admin_call(&args.conn, &refused, |mut c| async move {
        c.import_rates(request).await
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
