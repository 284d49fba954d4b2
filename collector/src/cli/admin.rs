//! `collector admin`: tenant administration on the central collector (issue 23).
//! `tenant-delete` destroys a tenant's data keys and then deletes its rows
//! (`Admin.DeleteTenant`, a `provider` token): its rows in any copy of the database can no
//! longer be read. `rotate-key` starts a new data key for a tenant (`Admin.RotateKey`, an
//! `admin` token for its own tenant or a `provider` token): new rows are sealed with it,
//! older ones stay readable. Both are audited.
use std::io::{self, Write as _};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use collector_proto::v1::{admin_client::AdminClient, DeleteTenantRequest, RotateKeyRequest};

use super::ConnectArgs;

/// `collector admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The verbs of `collector admin`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Destroy a tenant's data keys, then delete its CDRs, agents, usage and rate tables.
    TenantDelete(TenantDeleteArgs),
    /// Start a new data key for a tenant (new rows are sealed with it).
    RotateKey(RotateKeyArgs),
}

/// `collector admin tenant-delete`.
#[derive(Debug, Args)]
pub struct TenantDeleteArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// Reference for the audit log (e.g. a ticket number); no personal data.
    #[arg(long, default_value = "")]
    pub reference: String,
    /// Collector connection (needs a `provider` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// `collector admin rotate-key`.
#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    /// The tenant (default: the token's own).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Also re-seal every stored row of the tenant under the new key (re-encryption; rows
    /// stored in clear before encryption was on are sealed too).
    #[arg(long)]
    pub reseal: bool,
    /// Collector connection (needs an `admin` or `provider` token).
    #[command(flatten)]
    pub conn: ConnectArgs,
}

/// Runs the verb; prints what was done.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let line = rt.block_on(async {
        match args.command {
            AdminCommand::TenantDelete(a) => {
                let mut c = AdminClient::new(a.conn.connect().await?);
                let r = c
                    .delete_tenant(DeleteTenantRequest {
                        tenant: a.tenant.clone(),
                        reference: a.reference,
                    })
                    .await
                    .context("deleting the tenant refused")?
                    .into_inner();
                anyhow::Ok(format!(
                    "tenant {}: data keys destroyed, {} CDR(s) deleted",
                    a.tenant, r.deleted
                ))
            }
            AdminCommand::RotateKey(a) => {
                let mut c = AdminClient::new(a.conn.connect().await?);
                let r = c
                    .rotate_key(RotateKeyRequest {
                        tenant: a.tenant,
                        reseal: a.reseal,
                    })
                    .await
                    .context("rotating the key refused")?
                    .into_inner();
                anyhow::Ok(format!(
                    "new data key {:x}; {} row(s) re-sealed",
                    r.key_id, r.resealed
                ))
            }
        }
    })?;
    writeln!(io::stdout().lock(), "{line}")?;
    Ok(())
}
