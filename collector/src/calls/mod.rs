//! Call tracking: SIP dialogs (RFC 3261 §12–§17: INVITE transactions, early and confirmed
//! dialogs, CANCEL, BYE), session timers (RFC 4028), the media binder (RFC 3264
//! offer/answer into the kernel's MEDIA maps), leg correlation through a B2BUA (RFC 7989
//! Session-ID, RFC 7315 P-Charging-Vector), and the Call Detail Record with its live flow
//! events.
//!
//! - [`dialog`]: the pure state machine of one call ([`dialog::step`]).
//! - [`tracker`]: the tables of calls, deduplication of retransmissions and of the two hops
//!   of a forwarded message, the effects of each step, timers, bounds and counters.
//! - [`media`]: the [`media::MediaTable`] trait, its in-memory kernel emulation for replay,
//!   and the binding of SDP to map entries.
//! - [`cdr`]: the CDR (`collector_proto::v1::Cdr`) and its media legs.
//! - [`register`]: REGISTER transactions and bindings as flow events.
//!
//! Time is injected everywhere (ns on one clock: capture time in replay, wall clock in the
//! agent), so replay is deterministic and tests run a paused clock. Nothing here logs an
//! identifier; identifiers leave only through the CDR and flow events, which the caller
//! passes through `crate::privacy::apply`.
#![forbid(unsafe_code)]

pub mod cdr;
pub mod dialog;
pub mod media;
pub mod register;
pub mod tracker;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use dialog::{disposition_for, step, Effect, Event, Phase, Timers};
pub use media::{EmulatedMedia, MediaError, MediaTable, UdpVerdict};
pub use tracker::{CdrOut, FlowOut, Tracker, TrackerStats};

/// Nanoseconds per millisecond.
const MS: u64 = 1_000_000;

/// Thresholds of the quality alerts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// One-way audio is reported when, this long after the answer, RTP flows in one
    /// direction and not the other although both sides announced `sendrecv` (ms).
    pub one_way_after_ms: u64,
    /// A gap between two RTP packets of one stream longer than this is reported (ms).
    pub media_gap_ms: u64,
    /// A direction whose MOS ends below this is reported.
    pub mos_below: f64,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            one_way_after_ms: 5_000,
            media_gap_ms: 2_000,
            mos_below: 3.1,
        }
    }
}

/// The `[calls]` table of the agent configuration.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// Most calls tracked at once.
    pub max_calls: usize,
    /// Most unanswered calls (INVITE seen, no final answer) at once; beyond it the oldest is
    /// evicted. Established calls are never evicted.
    pub max_early: usize,
    /// Most REGISTER transactions and bindings tracked.
    pub max_registrations: usize,
    /// Most flow events waiting to be drained; beyond it new ones are dropped and counted.
    pub max_flow_events: usize,
    /// RFC 3261 Timer B, ms.
    pub timer_b_ms: u64,
    /// RFC 3261 Timer C, ms.
    pub timer_c_ms: u64,
    /// Wait for an INVITE retried with credentials after 401/407, ms.
    pub auth_retry_ms: u64,
    /// RTP silence that ends an answered call not on hold, ms.
    pub media_timeout_ms: u64,
    /// Silence of both SIP and RTP that ends an answered call, ms.
    pub idle_timeout_ms: u64,
    /// How long an ended call absorbs late messages before its CDR is emitted, ms.
    pub linger_ms: u64,
    /// Every this long of a call's life (from its INVITE) while it is in progress, an
    /// interim CDR of it is emitted (times and media so far), so that billing sees calls
    /// that last hours or whose BYE is lost; 0 = no interim records, ms.
    pub interim_interval_ms: u64,
    /// How long a message is remembered to recognise its retransmissions and other hops
    /// (64·T1 covers every retransmission), ms.
    pub dedupe_window_ms: u64,
    /// Headers carrying the first leg's Call-ID through a B2BUA, in order of preference.
    pub correlation_headers: Vec<String>,
    /// Two calls whose INVITEs are further apart than this are never linked by media
    /// anchoring, ms.
    pub correlation_window_ms: u64,
    /// Header whose value is recorded as the call's consent (from the privacy policy).
    pub consent_header: Option<String>,
    /// Alert thresholds.
    pub alerts: AlertConfig,
}

impl Default for CallsConfig {
    fn default() -> Self {
        let t = Timers::default();
        Self {
            max_calls: 100_000,
            max_early: 20_000,
            max_registrations: 50_000,
            max_flow_events: 16_384,
            timer_b_ms: t.timer_b_ns / MS,
            timer_c_ms: t.timer_c_ns / MS,
            auth_retry_ms: t.auth_retry_ns / MS,
            media_timeout_ms: t.media_timeout_ns / MS,
            idle_timeout_ms: t.idle_timeout_ns / MS,
            linger_ms: t.linger_ns / MS,
            interim_interval_ms: 15 * 60 * 1000,
            dedupe_window_ms: 32_000,
            // FreeSWITCH writes `XCall-ID` on the B-leg (seen in the corpus).
            correlation_headers: vec![
                "X-CID".to_owned(),
                "X-Call-ID".to_owned(),
                "XCall-ID".to_owned(),
            ],
            correlation_window_ms: 5_000,
            consent_header: None,
            alerts: AlertConfig::default(),
        }
    }
}

/// Why a `[calls]` table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CallsConfigError {
    /// Not valid TOML of the expected shape.
    #[error("invalid [calls] configuration")]
    Syntax(#[source] toml::de::Error),
}

impl CallsConfig {
    /// The `[calls]` table of an agent configuration text (defaults when absent).
    pub fn from_agent_toml(text: &str) -> Result<Self, CallsConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(CallsConfigError::Syntax)?;
        match table.remove("calls") {
            Some(v) => v.try_into().map_err(CallsConfigError::Syntax),
            None => Ok(Self::default()),
        }
    }

    /// The timers of the state machine.
    pub fn timers(&self) -> Timers {
        Timers {
            timer_b_ns: self.timer_b_ms.saturating_mul(MS),
            timer_c_ns: self.timer_c_ms.saturating_mul(MS),
            auth_retry_ns: self.auth_retry_ms.saturating_mul(MS),
            media_timeout_ns: self.media_timeout_ms.saturating_mul(MS),
            idle_timeout_ns: self.idle_timeout_ms.saturating_mul(MS),
            linger_ns: self.linger_ms.saturating_mul(MS),
        }
    }
}
