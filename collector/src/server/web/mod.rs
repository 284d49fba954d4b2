//! The read-only web console (`collector server --web-listen ADDR`): server-rendered HTML
//! over the same store reads, tenant confinement and audit as the gRPC `Query` API
//! ([`super::query::read`]), behind the same TLS files and bearer tokens.
//!
//! Why it looks the way it does: the operator pastes a read token once ([`auth`]); it is
//! kept in an `HttpOnly; Secure; SameSite=Strict` cookie and verified again on every
//! request exactly as a gRPC read would be, so a revoked role or an expired token stops the
//! next page. Pages are plain HTML; every response says `no-store` and a CSP that allows
//! only this server's own stylesheet and script, and no inline script ([`layout`]). A phone
//! number typed into the search is hashed here, under the key ring of the caller's tenant,
//! into the pseudonyms the store holds and never appears in a URL, page or log line
//! ([`calls`]). One call's page ([`call`]) draws its 10-second quality intervals as an
//! inline SVG ([`chart`]) and its SIP messages as a ladder ([`ladder`]); the quality page
//! ([`quality`]) draws
//! MOS and loss percentiles per hour and agent the same way; [`usage`] is the month's
//! usage per destination and [`inventory`] the data inventory. [`live`] lists the calls in
//! progress from the relay's live flows (`Watch`), confined to the token's tenant as
//! `Watch.Flows` is, and keeps them current over server-sent events with the one script the
//! console ships (`/static/live.js`, in the binary); without script it is a plain page.
//!
//! Serving: one hyper connection task per accepted socket, TLS handshakes bounded in time,
//! request bodies capped at [`MAX_BODY_BYTES`].

mod auth;
mod call;
mod calls;
mod chart;
mod inventory;
mod ladder;
mod layout;
mod live;
mod quality;
mod usage;

use std::{future::Future, sync::Arc, time::Duration};

use axum::{
    extract::DefaultBodyLimit,
    http::{header, HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::get,
    Router,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;

use super::{store::Store, token::TokenSecret};
use crate::{
    privacy::{NumberKeys, PrivacyConfig},
    watch::WatchService,
};

/// Largest request body accepted (the login and search forms are far smaller).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The console's policy: nothing but this server's own stylesheet, images and script (no
/// inline script), connections (the live page's event stream) and forms only here, never
/// framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

/// How the console serves.
#[derive(Clone, Default)]
pub struct WebOptions {
    /// Token signing secret (the gRPC API's); `None` = authentication off, every request
    /// is anonymous (allowed on loopback or with `--insecure` only, like gRPC).
    pub token_secret: Option<Arc<TokenSecret>>,
    /// The server's TLS (the gRPC listener's files); `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The key rings numbers are searched under (`--privacy-config`, per tenant
    /// `--tenant-privacy-config`): a caller without a ring has no number search.
    pub numbers: NumberKeys,
    /// The agents' privacy configuration (`--privacy-config`) the data inventory is drawn
    /// from (the defaults without it, as `collector inventory` does).
    pub privacy: Option<Arc<PrivacyConfig>>,
    /// The central store's retention (`--retention-days`, 0 = kept until erased).
    pub retention_days: u32,
    /// The collector's live-flow relay (`Watch`), for `/live`; `None`: no live page.
    pub relay: Option<WatchService>,
}

/// What every handler reads.
#[derive(Clone)]
struct Console {
    store: Arc<dyn Store>,
    secret: Option<Arc<TokenSecret>>,
    numbers: NumberKeys,
    privacy: Option<Arc<PrivacyConfig>>,
    retention_days: u32,
    relay: Option<WatchService>,
}

/// The console's routes, with the security headers on every response.
pub fn router(store: Arc<dyn Store>, opts: &WebOptions) -> Router {
    let console = Console {
        store,
        secret: opts.token_secret.clone(),
        numbers: opts.numbers.clone(),
        privacy: opts.privacy.clone(),
        retention_days: opts.retention_days,
        relay: opts.relay.clone(),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/calls") }))
        .route("/login", get(auth::form).post(auth::login))
        .route("/logout", axum::routing::post(auth::logout))
        .route("/calls", get(calls::get).post(calls::post))
        .route("/calls.csv", get(calls::csv))
        .route("/calls/{id}", get(call::page))
        .route("/live", get(live::page))
        .route("/live/events", get(live::events))
        .route("/quality", get(quality::page))
        .route("/usage", get(usage::page))
        .route("/inventory", get(inventory::page))
        .route("/static/console.css", get(stylesheet))
        .route("/static/live.js", get(live::script))
        .fallback(|| async { layout::error(StatusCode::NOT_FOUND, "no such page") })
        .with_state(console)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::map_response(security_headers))
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response()
}

/// The headers of every response (pages, errors, redirects, the stylesheet, CSV).
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn serve<F>(listener: TcpListener, store: Arc<dyn Store>, opts: WebOptions, shutdown: F)
where
    F: Future<Output = ()> + Send,
{
    let app = router(store, &opts);
    let acceptor = opts.tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "web console accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let http = Builder::new(TokioExecutor::new());
            let served = match acceptor {
                Some(a) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, a.accept(tcp)).await {
                    Ok(Ok(tls)) => http.serve_connection(TokioIo::new(tls), service).await,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "web console TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                },
                None => http.serve_connection(TokioIo::new(tcp), service).await,
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "web console connection ended");
            }
        });
    }
}
