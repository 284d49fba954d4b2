//! `collector erase`: asks the collector to delete every CDR of one subject (GDPR Art. 17).
//! A number is hashed here under every key of the key file (so CDRs pseudonymized under a
//! retired key are found too); only the pseudonyms are sent, and the collector's audit
//! entry names them, never the number. Prints how many CDRs were deleted.
use std::io::{self, Write as _};

use anyhow::Context as _;
use collector_proto::v1::{admin_client::AdminClient, EraseRequest};

use super::EraseArgs;

/// Runs the verb.
pub fn run(args: EraseArgs) -> anyhow::Result<()> {
    if !args.subject.is_set() {
        anyhow::bail!("name the subject with --number or --pseudonym");
    }
    let pseudonyms = args.subject.pseudonyms(&mut io::stdin().lock())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let deleted = rt.block_on(async {
        let mut client = AdminClient::new(args.conn.connect().await?);
        let resp = client
            .erase(EraseRequest {
                pseudonyms: pseudonyms.clone(),
                reference: args.reference.clone(),
                tenant: args.tenant.clone(),
            })
            .await
            .context("erasure refused")?;
        anyhow::Ok(resp.into_inner().deleted)
    })?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "erased {deleted} CDR(s) matching {} pseudonym(s)",
        pseudonyms.len()
    )?;
    Ok(())
}
