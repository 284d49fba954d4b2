//! `collector tenants`: the collector's tenants with their stored CDRs, agents and retention
//! (`Admin.Tenants`, a `provider` token). Tenant names are the provider's own labels for its
//! customers, not personal data.
use std::io::{self, Write as _};

use anyhow::Context as _;
use collector_proto::v1::{admin_client::AdminClient, TenantsRequest};

use super::TenantsArgs;

/// Runs the verb: one line per tenant.
pub fn run(args: &TenantsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let tenants = rt.block_on(async {
        let mut client = AdminClient::new(args.conn.connect().await?);
        let resp = client
            .tenants(TenantsRequest {})
            .await
            .context("listing tenants refused (it needs a provider token)")?;
        anyhow::Ok(resp.into_inner().tenants)
    })?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:>12} {:>7} {:>10}",
        "TENANT", "CDRS", "AGENTS", "RETENTION"
    )?;
    for t in tenants {
        let retention = match t.retention_days {
            0 => "forever".to_owned(),
            d => format!("{d}d"),
        };
        writeln!(
            out,
            "{:<24} {:>12} {:>7} {:>10}",
            t.tenant, t.cdrs_stored, t.agents, retention
        )?;
    }
    Ok(())
}
