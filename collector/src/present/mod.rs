//! What the command line and the web console both show, in one place: CDRs as a table,
//! JSON lines or CSV ([`cdrs`]), times read and printed ([`times`]), the month's usage
//! report ([`usage`]), enum values by their short names.
pub mod cdrs;
pub mod times;
pub mod usage;

/// `CALL_STATE_KIND_EARLY_MEDIA` → `early-media`: an enum value name without its prefix.
pub fn short_name(full: &str, prefix: &str) -> String {
    full.strip_prefix(prefix)
        .unwrap_or(full)
        .to_ascii_lowercase()
        .replace('_', "-")
}
