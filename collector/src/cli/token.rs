//! `collector token`: issues a bearer token (an HS256 JWT, see [`crate::server::token`])
//! for a role and a lifetime from the server's secret file, or creates that file.
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use super::TokenArgs;
use crate::present::times::parse_duration_ms;
use crate::server::token::{self, Role, TokenSecret};

/// Runs the verb: prints the token (or a note that the secret was created) on stdout.
pub fn run(args: &TokenArgs) -> anyhow::Result<()> {
    if args.init {
        TokenSecret::generate(&args.secret)?;
        eprintln!(
            "collector: created token secret {} (mode 0600); keep it only on the collectors",
            args.secret.display()
        );
        return Ok(());
    }
    println!("{}", issue(args, now_s())?);
    Ok(())
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token the flags ask for, issued at `now_s`.
pub fn issue(args: &TokenArgs, now_s: u64) -> anyhow::Result<String> {
    let role: Role = args
        .role
        .as_deref()
        .context("--role is required")?
        .parse()?;
    let ttl_s = parse_duration_ms(&args.ttl)? / 1000;
    if ttl_s == 0 {
        anyhow::bail!("--ttl must be at least one second");
    }
    let secret = TokenSecret::load(&args.secret)?;
    let subject = args.subject.as_deref().unwrap_or(role.as_str());
    Ok(token::issue_for(
        &secret,
        subject,
        role,
        args.tenant.as_deref(),
        now_s,
        ttl_s,
    )?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn issues_a_token_the_server_accepts_for_its_role_and_lifetime() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let mut args = TokenArgs {
            secret: secret.clone(),
            init: true,
            role: None,
            ttl: "30d".into(),
            subject: None,
            tenant: None,
        };
        run(&args).unwrap();
        args.init = false;
        args.role = Some("read".into());
        args.ttl = "2h".into();
        args.subject = Some("ops-alice".into());
        let t = issue(&args, 1_000).unwrap();
        let claims = token::verify(&TokenSecret::load(&secret).unwrap(), &t, 1_001).unwrap();
        assert_eq!(claims.sub, "ops-alice");
        assert_eq!(claims.role, Role::Read);
        assert_eq!(claims.exp, 1_000 + 7_200);
        assert_eq!(claims.tenant, None);
        args.tenant = Some("acme".into());
        let t = issue(&args, 1_000).unwrap();
        let claims = token::verify(&TokenSecret::load(&secret).unwrap(), &t, 1_001).unwrap();
        assert_eq!(claims.scope().as_deref(), Some("acme"));
        args.role = Some("provider".into());
        assert!(
            issue(&args, 1_000).is_err(),
            "a provider token names no tenant"
        );
        args.tenant = None;
        args.role = Some("read".into());
        args.role = Some("root".into());
        assert!(issue(&args, 1_000).is_err());
    }
}
