//! The console's HTML frame and the few helpers every page needs: one escaping function
//! for everything printed ([`esc`]), the page layout, typed error pages, and
//! `application/x-www-form-urlencoded` decoding and encoding (forms and query strings).
use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page: `body` is already HTML (escaped by its maker); `signed_in` adds the
/// navigation and the logout button.
pub fn page(status: StatusCode, title: &str, signed_in: bool, body: &str) -> Response {
    let nav = if signed_in {
        "<nav><a href=\"/calls\">Calls</a><a href=\"/live\">Live</a><a href=\"/quality\">Quality</a>\
         <a href=\"/usage\">Usage</a><a href=\"/inventory\">Data inventory</a>\
         <form method=\"post\" action=\"/logout\"><button type=\"submit\">Log out</button></form>\
         </nav>"
    } else {
        ""
    };
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · collector</title>\
         <link rel=\"stylesheet\" href=\"/static/console.css\"></head>\
         <body><header><h1>collector</h1>{nav}</header><main>\n{body}\n</main></body></html>\n",
        title = esc(title),
    );
    (status, Html(html)).into_response()
}

/// A typed error page.
pub fn error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<h2>{}</h2><p class=\"error\">{}</p><p><a href=\"/calls\">Back to the calls</a></p>",
        status.as_u16(),
        esc(message)
    );
    page(status, "error", false, &body)
}

/// The page for a refused read: the status's code as the HTTP status, its message (which
/// never carries an identifier, see `server::status`).
pub fn status_error(s: &tonic::Status) -> Response {
    use tonic::Code;
    let code = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // Too many live streams open at once: try again later.
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(code, s.message())
}

/// The fields of a form body or query string, decoded (`+` is a space), in order.
pub fn fields(encoded: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    encoded
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A query string (`a=1&b=2`) of the non-empty `pairs`, percent-encoded.
pub fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
#[allow(clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn forms_round_trip() {
        let q = query_string(&[("a", "x y&z=é".into()), ("empty", String::new())]);
        assert_eq!(q, "a=x%20y%26z%3D%C3%A9");
        assert_eq!(fields(&q), [("a".to_string(), "x y&z=é".to_string())]);
        assert_eq!(
            fields("token=a+b&n=%2B44"),
            [("token".into(), "a b".into()), ("n".into(), "+44".into())]
        );
    }

    #[test]
    fn a_refused_live_stream_is_a_429_not_a_500() {
        let hub = crate::watch::Hub::new(crate::watch::HubConfig {
            max_subscribers: 1,
            ..Default::default()
        });
        let selector = std::sync::Arc::new(crate::watch::Selector::default());
        let window = crate::watch::Window::default();
        let _first = hub.subscribe(std::sync::Arc::clone(&selector), window);
        let Err(e) = hub.subscribe(selector, window) else {
            panic!("a second subscriber was accepted");
        };
        let status: tonic::Status = crate::watch::WatchError::Hub(e).into();
        assert_eq!(
            status_error(&status).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
