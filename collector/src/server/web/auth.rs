//! Login, logout and the caller of every console request. The token is the gRPC API's
//! bearer token, kept in an `HttpOnly; Secure; SameSite=Strict` cookie, and every request
//! hands it to [`crate::server::auth::authorize`] as if it were a `Query/ListCdrs` call:
//! the same signature, expiry, role and tenant rules, with nothing cached in between.
use axum::{
    extract::{FromRequestParts, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
};

use super::{layout, Console};
use crate::server::{
    auth::{authorize, Caller},
    retention::now_ms,
};

/// The cookie holding the token.
const COOKIE: &str = "collector_token";
/// The gRPC method whose rule a console read follows.
const READ_METHOD: &str = "/collector.v1.Query/ListCdrs";

/// Where a request without a valid token goes.
pub fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// The verified caller of a request (`None`: send it to [`to_login`]).
pub fn caller(console: &Console, headers: &HeaderMap) -> Option<Caller> {
    let token = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='));
    verify(console, token.unwrap_or("")).ok()
}

/// The verified caller as a handler argument: a request without a valid token is answered
/// with [`to_login`] before the handler runs.
pub struct SignedIn(pub Caller);

impl FromRequestParts<Console> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        caller(console, &parts.headers)
            .map(SignedIn)
            .ok_or_else(to_login)
    }
}

/// The token checked as a gRPC read would check it.
fn verify(console: &Console, token: &str) -> Result<Caller, tonic::Status> {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, v);
    }
    authorize(
        console.secret.as_deref(),
        READ_METHOD,
        &headers,
        now_ms() / 1000,
    )
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let note = if message.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\">{}</p>", layout::esc(message))
    };
    let body = format!(
        "<h2>Log in</h2>{note}\
         <form method=\"post\" action=\"/login\" class=\"login\">\
         <label>Read token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label>\
         <button type=\"submit\">Log in</button></form>\
         <p>Paste a token of role read, admin or provider (<code>collector token</code>).</p>"
    );
    layout::page(status, "log in", false, &body)
}

/// `GET /login`.
pub async fn form() -> Response {
    login_page(StatusCode::OK, "")
}

/// `POST /login`: a token that may read goes into the cookie.
pub async fn login(State(console): State<Console>, body: String) -> Response {
    let token = layout::fields(&body)
        .into_iter()
        .find_map(|(k, v)| (k == "token").then_some(v))
        .unwrap_or_default();
    let token = token.trim();
    // A JWS is base64url and dots: anything else cannot be a token, nor go into a cookie.
    let cookie_safe = token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !cookie_safe {
        return login_page(StatusCode::UNAUTHORIZED, "invalid token");
    }
    match verify(&console, token) {
        Ok(caller) => {
            tracing::info!(subject = %caller.subject, "web console login");
            let cookie = format!("{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/");
            ([(header::SET_COOKIE, cookie)], Redirect::to("/calls")).into_response()
        }
        Err(s) => {
            let status = match s.code() {
                tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            login_page(status, s.message())
        }
    }
}

/// `POST /logout`: the cookie is cleared.
pub async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}
