//! `/inventory`: what the collector stores of a call and for how long: the register of
//! `collector inventory` ([`crate::privacy::inventory::inventory`]) under the agents'
//! privacy configuration (`--privacy-config`, the defaults without it), with the central
//! store's retention as this server runs it (`--retention-days`). The same for every
//! tenant: it describes the fields, never a record.
use axum::{extract::State, http::StatusCode, response::Response};

use super::{
    auth::SignedIn,
    layout::{self, esc},
    Console,
};
use crate::privacy::{inventory::inventory, PrivacyConfig};

/// `GET /inventory`.
pub async fn page(State(console): State<Console>, SignedIn(_): SignedIn) -> Response {
    let mut config = console
        .privacy
        .as_deref()
        .cloned()
        .unwrap_or_else(PrivacyConfig::default);
    config.retention_days = console.retention_days;
    let kept = if console.retention_days == 0 {
        "until erased".to_owned()
    } else {
        format!("{} days", console.retention_days)
    };
    let rows: String = inventory(&config)
        .iter()
        .map(|r| {
            let retention = match r.retention_days {
                None => "never stored".to_owned(),
                Some(_) => format!("spool until acknowledged; central store {kept}"),
            };
            let cells = [
                r.name,
                r.category.label(),
                r.description,
                &r.protection,
                r.when_declined,
                r.storage,
                r.readers,
                &retention,
            ];
            let cells: String = cells
                .iter()
                .map(|v| format!("<td>{}</td>", esc(v)))
                .collect();
            format!("<tr>{cells}</tr>")
        })
        .collect();
    let body = format!(
        "<h2>Data inventory</h2><p class=\"count\">Every field of a stored call record, how \
         it is protected, where it is kept, who can read it and for how long. The central \
         store keeps records {kept}.</p>\
         <table class=\"inventory\"><thead><tr><th>field</th><th>category</th>\
         <th>what it holds</th><th>protection</th><th>when consent is declined</th>\
         <th>storage</th><th>readers</th><th>retention</th></tr></thead>\
         <tbody>{rows}</tbody></table>"
    );
    layout::page(StatusCode::OK, "data inventory", true, &body)
}
