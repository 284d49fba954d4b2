//! The privacy boundary of the agent: every identifier field of a CDR or flow event is
//! mapped through the call's [`CallPrivacy`] before the record leaves the process (GDPR
//! Art. 25 data protection by design; the fields are those of [`super::inventory`]).
//!
//! One function per record type, so a new identifier field has one place to be handled,
//! and a test in this module fails when the CDR message gains a field the inventory does
//! not list. A field the policy drops becomes empty; when the subscriber declined (the
//! consent header), every identifier is empty and `consent` says `declined`.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::net::IpAddr;

use collector_proto::v1::{flow_event, Cdr, FlowEvent, Party, SipMessage};

use super::policy::{CallPrivacy, Consent, Pseudonymizer};

/// What `consent` holds after [`apply_cdr`] when the policy applied.
pub const CONSENT_APPLIED: &str = "pseudonymized:v1";
/// What `consent` holds after [`apply_cdr`] when the subscriber declined.
pub const CONSENT_DECLINED: &str = "declined";

/// The consent of a call whose configured consent header (`header`, if any) had `value`.
pub fn consent_of(pz: &Pseudonymizer, header: Option<&str>, value: &str) -> Consent {
    match header {
        Some(h) if !value.is_empty() => pz.consent([(h.as_bytes(), value.as_bytes())]),
        _ => Consent::NotDeclined,
    }
}

fn or_empty(v: Option<String>) -> String {
    v.unwrap_or_default()
}

fn ip_field(cp: &CallPrivacy<'_>, text: &str) -> String {
    // Addresses are written by the tracker as plain IP text; anything else is dropped
    // rather than passed on unprotected.
    match text.parse::<IpAddr>() {
        Ok(ip) => or_empty(cp.ip(ip)),
        Err(_) => String::new(),
    }
}

fn party(cp: &CallPrivacy<'_>, p: &mut Party, caller: bool) {
    p.user = if p.user.is_empty() {
        String::new()
    } else if caller {
        or_empty(cp.caller_user(p.user.as_bytes()))
    } else {
        or_empty(cp.callee_user(p.user.as_bytes()))
    };
    p.domain = if p.domain.is_empty() {
        String::new()
    } else {
        or_empty(cp.domain(p.domain.as_bytes()))
    };
    p.display = if p.display.is_empty() {
        String::new()
    } else {
        or_empty(cp.display_name(p.display.as_bytes()))
    };
}

fn call_id(cp: &CallPrivacy<'_>, id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        or_empty(cp.call_id(id.as_bytes()))
    }
}

/// Maps every identifier of `cdr` through `cp`: parties (users by the caller/callee
/// policy, domains, display names), signalling and media addresses, the Call-ID and the
/// correlation id (a Call-ID or a value derived from one, so under the Call-ID policy: the
/// legs of one call keep equal pseudonyms), user agents. Technical and quality fields are
/// kept. `destination_prefix` is written here, from the callee number before it is
/// pseudonymized, and only under the `billing` policy (empty otherwise, whatever it held).
/// `consent` is replaced by what was applied.
pub fn apply_cdr(cp: &CallPrivacy<'_>, cdr: &mut Cdr) {
    cdr.call_id = call_id(cp, &cdr.call_id);
    cdr.correlation_id = call_id(cp, &cdr.correlation_id);
    if let Some(p) = cdr.caller.as_mut() {
        party(cp, p, true);
    }
    cdr.destination_prefix = cdr
        .callee
        .as_ref()
        .and_then(|p| cp.destination_prefix(p.user.as_bytes()))
        .unwrap_or_default();
    if let Some(p) = cdr.callee.as_mut() {
        party(cp, p, false);
    }
    cdr.src_ip = ip_field(cp, &cdr.src_ip);
    cdr.dst_ip = ip_field(cp, &cdr.dst_ip);
    for leg in &mut cdr.media {
        leg.src_ip = ip_field(cp, &leg.src_ip);
        leg.dst_ip = ip_field(cp, &leg.dst_ip);
    }
    for m in cdr.ladder.iter_mut().filter_map(|s| s.message.as_mut()) {
        hops(cp, m);
    }
    cdr.user_agent_caller = or_empty(cp.user_agent(cdr.user_agent_caller.as_bytes()));
    cdr.user_agent_callee = or_empty(cp.user_agent(cdr.user_agent_callee.as_bytes()));
    cdr.consent = match cp.consent() {
        Consent::Declined => CONSENT_DECLINED,
        Consent::NotDeclined => CONSENT_APPLIED,
    }
    .to_owned();
}

/// A ladder message's hops are addresses (protected like any address) or the fixed side
/// labels.
fn hops(cp: &CallPrivacy<'_>, m: &mut SipMessage) {
    for hop in [&mut m.from, &mut m.to] {
        if !matches!(hop.as_str(), "caller" | "callee" | "sbc") {
            *hop = ip_field(cp, hop);
        }
    }
}

/// Maps every identifier of a flow event: its Call-ID, the parties of a call state (and
/// the CDR it may carry), the address of record of a registration. Alert texts never hold
/// identifiers (the tracker writes them from numbers only).
pub fn apply_flow(cp: &CallPrivacy<'_>, ev: &mut FlowEvent) {
    ev.call_id = call_id(cp, &ev.call_id);
    match ev.event.as_mut() {
        Some(flow_event::Event::CallState(s)) => {
            if let Some(p) = s.caller.as_mut() {
                party(cp, p, true);
            }
            if let Some(p) = s.callee.as_mut() {
                party(cp, p, false);
            }
            if let Some(c) = s.cdr.as_mut() {
                apply_cdr(cp, c);
            }
        }
        Some(flow_event::Event::Registration(r)) => {
            // The registering subscriber is a caller-side identity.
            if let Some(p) = r.aor.as_mut() {
                party(cp, p, true);
            }
        }
        Some(flow_event::Event::MediaStats(m)) => {
            if let Some(l) = m.leg.as_mut() {
                l.src_ip = ip_field(cp, &l.src_ip);
                l.dst_ip = ip_field(cp, &l.dst_ip);
            }
        }
        Some(flow_event::Event::SipMessage(m)) => hops(cp, m),
        Some(flow_event::Event::Alert(_)) | Some(flow_event::Event::LostEvents(_)) | None => {}
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
mod tests;
