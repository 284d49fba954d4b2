//! `collector server`: runs the central collector (see [`crate::server`]) until SIGINT or
//! SIGTERM, with the live-flow relay and, with `--metrics-listen`, Prometheus metrics.
use std::{sync::Arc, time::Duration};

use anyhow::Context as _;

use super::ServerArgs;
use crate::{
    metrics::Metrics,
    present::times::parse_duration_ms,
    privacy::{
        seal::{MasterKey, MASTER_KEY_ENV},
        NumberKeys, PrivacyConfig, Pseudonymizer,
    },
    rpc::listen::Exposure,
    server::{
        metered::MeteredStore,
        retention::RetentionPolicy,
        store::sealed::{SealedStore, TenantKeys},
        tls::TlsFiles,
        token::TokenSecret,
        watch::{relay, RelayOptions},
        web::WebOptions,
        ServeOptions,
    },
    watch::HubConfig,
};

/// Runs the verb.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let opts = options(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let exposure = Exposure {
            tls: opts.tls.is_some(),
            auth: opts.token_secret.is_some(),
            insecure: args.insecure,
        };
        // The store first: once the port accepts connections the schema is in place.
        let db_ca = match &args.db_ca {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        };
        let store = crate::server::store::open_with(&args.db, db_ca.as_deref())
            .await
            .context("opening the CDR store")?;
        let privacy = match &args.privacy_config {
            Some(path) => Some(
                PrivacyConfig::load_agent_config(path)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            None => None,
        };
        let pseudonymizer = match &privacy {
            Some(config) => Some(Arc::new(Pseudonymizer::from_config(config)?)),
            None => None,
        };
        let numbers = NumberKeys::load(pseudonymizer, &args.tenant_privacy_config)?;
        let store = if args.no_encryption {
            tracing::warn!("--no-encryption: CDRs are stored in clear");
            store
        } else {
            SealedStore::wrap(store, Arc::new(tenant_keys(&args)?))
        };
        let metrics = Arc::new(Metrics::new());
        let store = MeteredStore::wrap(store, Arc::clone(&metrics));
        let relay = relay(RelayOptions {
            hub: HubConfig {
                history: args.watch_history,
                ..HubConfig::default()
            },
            numbers: numbers.clone(),
            metrics: Some(Arc::clone(&metrics)),
        });
        if let Some(addr) = &args.metrics_listen {
            // Metrics carry no identifiers (see `crate::metrics`), so any address may serve
            // them, as Prometheus scrapes from elsewhere.
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics address {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics at /metrics");
            tokio::spawn(crate::metrics::serve(
                l,
                Arc::clone(&metrics),
                shutdown_signal(),
            ));
        }
        let listener = crate::rpc::listen::bind(&args.listen, exposure).await?;
        if let Some(addr) = &args.web_listen {
            let l = crate::rpc::listen::bind(addr, exposure).await?;
            tracing::info!(addr = %l.local_addr()?, tls = exposure.tls, "web console listening");
            let web = WebOptions {
                token_secret: opts.token_secret.clone().map(Arc::new),
                tls: web_tls(&args)?.map(Arc::new),
                numbers,
                privacy: privacy.map(Arc::new),
                retention_days: args.retention_days,
                relay: Some(relay.clone()),
            };
            tokio::spawn(crate::server::web::serve(
                l,
                Arc::clone(&store),
                web,
                shutdown_signal(),
            ));
        }
        if !exposure.auth {
            tracing::warn!("no --token-secret: every call is accepted without a token");
        }
        tracing::info!(
            addr = %listener.local_addr()?,
            tls = exposure.tls,
            auth = exposure.auth,
            retention_days = opts.retention.days,
            "collector listening"
        );
        crate::server::serve_with_relay(listener, store, opts, relay, shutdown_signal()).await?;
        tracing::info!("collector stopped");
        Ok(())
    })
}

/// The tenants' data keys, unwrapped with the master key from the environment or from its
/// file (created, and said where, when there is none).
fn tenant_keys(args: &ServerArgs) -> anyhow::Result<TenantKeys> {
    let master = match std::env::var(MASTER_KEY_ENV) {
        Ok(hex) => MasterKey::from_hex(&hex)?,
        Err(_) => {
            let (key, created) = MasterKey::load_or_create(&args.master_key)?;
            if created {
                tracing::warn!(
                    path = %args.master_key.display(),
                    "created a new master key for encryption at rest (mode 0600): back it up apart from the database"
                );
            }
            key
        }
    };
    if args.tenant_keys.starts_with(db_dir(&args.db)) {
        tracing::warn!(
            path = %args.tenant_keys.display(),
            "the tenant key store sits beside the database: keep keys apart from the data"
        );
    }
    TenantKeys::open(&args.tenant_keys, master).context("opening the tenant key store")
}

/// The directory of a `sqlite://` database (empty for other backends).
fn db_dir(url: &str) -> std::path::PathBuf {
    url.strip_prefix("sqlite://")
        .and_then(|p| std::path::Path::new(p).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("/nonexistent-collector-db-dir"))
}

/// The server's TLS files, when --tls-cert and --tls-key are given.
fn tls_files(args: &ServerArgs) -> Option<TlsFiles> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
            client_auth_optional: args.client_auth_optional,
        }),
        _ => None,
    }
}

fn web_tls(args: &ServerArgs) -> anyhow::Result<Option<rustls::ServerConfig>> {
    Ok(tls_files(args).map(|f| f.rustls()).transpose()?)
}

/// The serving options the flags ask for.
pub fn options(args: &ServerArgs) -> anyhow::Result<ServeOptions> {
    let tls = tls_files(args).map(|f| f.load()).transpose()?;
    let token_secret = args
        .token_secret
        .as_deref()
        .map(TokenSecret::load)
        .transpose()?;
    let interval = Duration::from_millis(parse_duration_ms(&args.retention_interval)?);
    Ok(ServeOptions {
        token_secret,
        tls,
        retention: {
            let policy = RetentionPolicy {
                days: args.retention_days,
                interval,
                tenants: args.tenant_retention.iter().cloned().collect(),
            };
            policy.validate()?;
            policy
        },
    })
}

/// Completes on SIGINT or SIGTERM (or at once if the handlers cannot be installed, so the
/// server never runs without a way to stop it cleanly).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        tracing::error!("cannot install the SIGTERM handler");
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
