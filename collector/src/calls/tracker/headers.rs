//! What the tracker reads from a message's headers: party, cause (Reason or status),
//! trigger, user agent, session interval, and a lax Call-ID of a message that failed to parse.
#![deny(clippy::indexing_slicing, clippy::panic)]

#[allow(
    clippy::wildcard_imports,
    reason = "the tracker's types and imports, shared by its parts"
)]
use super::*;

/// The Call-ID of a message that failed to parse, read leniently (for attribution only).
pub(super) fn lax_call_id(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(16 * 1024))?).ok()?;
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            let v = value.trim();
            return (!v.is_empty()).then_some(v);
        }
    }
    None
}

pub(super) fn party(addr: &sip::NameAddr<'_>) -> Party {
    register::party_of(addr)
}

pub(super) fn cause_of(msg: &SipMessage<'_>) -> Option<Cause> {
    // A BYE may carry one Reason per protocol (RFC 3326 §2): Q.850 says most about why.
    let mut first: Option<Cause> = None;
    for r in msg.reasons().flatten() {
        let c = Cause {
            protocol: match r.protocol {
                sip::ReasonProtocol::Sip => "SIP".to_owned(),
                sip::ReasonProtocol::Q850 => "Q.850".to_owned(),
                sip::ReasonProtocol::Other(p) => p.to_owned(),
            },
            cause: u32::from(r.cause.unwrap_or(0)),
            text: r.text.unwrap_or("").to_owned(),
        };
        if matches!(r.protocol, sip::ReasonProtocol::Q850) {
            return Some(c);
        }
        if first.is_none() {
            first = Some(c);
        }
    }
    first
}

pub(super) fn trigger_of(msg: &SipMessage<'_>) -> String {
    match msg.status_code() {
        Some(code) => code.to_string(),
        None => msg.method().as_str().to_owned(),
    }
}

pub(super) fn ua_of(msg: &SipMessage<'_>) -> Option<String> {
    let raw = if msg.is_request() {
        msg.user_agent()
    } else {
        msg.server().or_else(|| msg.user_agent())
    }?;
    let s = String::from_utf8_lossy(&raw).trim().to_owned();
    (!s.is_empty()).then_some(s)
}

pub(super) fn session_interval(msg: &SipMessage<'_>) -> Option<u32> {
    msg.session_expires()
        .ok()
        .flatten()
        .map(|s| s.delta_seconds)
        .filter(|&s| s > 0)
}
