//! REGISTER tracking (RFC 3261 §10): every completed REGISTER transaction becomes a
//! `Registration` flow event (ok, failed, or timed out), and every binding granted by a 2xx
//! is remembered until its expiry so a binding that is not refreshed is reported as expired.
//!
//! Both tables are bounded: pending transactions time out after 64·T1 (Timer F, 32 s) and
//! are reported with status 408, as RFC 3261 §8.1.3.1 says a transaction timeout is
//! treated; when a table is full the new entry is refused and counted.
#![deny(clippy::indexing_slicing, clippy::panic)]

use std::collections::{BTreeMap, HashMap};

use collector_proto::v1::{Party, Registration};

use crate::sip::{Contact, SipMessage};

/// Nanoseconds per second.
const NS: u64 = 1_000_000_000;
/// RFC 3261 Timer F (64·T1): a non-INVITE transaction without a final response is dead.
pub const TIMER_F_NS: u64 = 32 * NS;

/// Counters of the registrar view.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterStats {
    /// REGISTER requests (retransmissions excluded).
    pub requests: u64,
    /// Retransmitted REGISTER requests or final responses.
    pub retransmissions: u64,
    /// Transactions completed with a 2xx.
    pub ok: u64,
    /// Transactions completed with a non-2xx final response.
    pub failed: u64,
    /// Transactions without a final response within Timer F.
    pub timeouts: u64,
    /// Bindings that expired without a refresh.
    pub expired: u64,
    /// Responses to no known REGISTER.
    pub orphan_responses: u64,
    /// Transactions or bindings refused because a table was full.
    pub table_full: u64,
}

#[derive(Clone, Debug)]
struct Pending {
    call_id: String,
    aor: Party,
    at: u64,
}

#[derive(Clone, Debug)]
struct Binding {
    call_id: String,
    aor: Party,
    expires_at: u64,
}

/// What the registrar view reports: `(time ns, Call-ID, event)`.
pub type RegistrationOut = (u64, String, Registration);

/// Pending REGISTER transactions and granted bindings.
#[derive(Debug)]
pub struct Registrations {
    max: usize,
    pending: HashMap<(String, u32), Pending>,
    // Completed transactions kept for Timer F, so retransmitted final responses are not
    // mistaken for orphans.
    done: HashMap<(String, u32), u64>,
    // Keyed by address of record (user@domain); ordered by expiry for the sweep.
    bindings: HashMap<String, Binding>,
    by_expiry: BTreeMap<(u64, String), ()>,
    stats: RegisterStats,
}

/// The address of record of a To header as a party (user, domain, display).
pub fn party_of(addr: &crate::sip::NameAddr<'_>) -> Party {
    let uri = addr.uri();
    Party {
        user: uri.user().unwrap_or_default().to_owned(),
        domain: uri.host().map(|h| host_text(&h)).unwrap_or_default(),
        display: addr
            .display_name()
            .map(|d| d.to_string_lossy())
            .unwrap_or_default(),
    }
}

/// A URI host as text (IPv6 without brackets).
pub fn host_text(h: &crate::sip::Host<'_>) -> String {
    match h {
        crate::sip::Host::Name(n) => (*n).to_owned(),
        crate::sip::Host::V4(a) => a.to_string(),
        crate::sip::Host::V6(a) => a.to_string(),
    }
}

fn aor_key(p: &Party) -> String {
    format!("{}@{}", p.user, p.domain.to_ascii_lowercase())
}

/// The expiry a 2xx grants: the largest Contact `expires` parameter, else the Expires
/// header, else RFC 3261's default of 3600 s; and the number of contacts bound.
fn granted(msg: &SipMessage<'_>) -> (u32, u32) {
    let mut count = 0u32;
    let mut max_param: Option<u32> = None;
    for c in msg.contacts() {
        if let Contact::Addr(a) = c {
            count = count.saturating_add(1);
            if let Some(e) = a
                .params()
                .value("expires")
                .and_then(|v| v.parse::<u32>().ok())
            {
                max_param = Some(max_param.map_or(e, |m| m.max(e)));
            }
        }
    }
    let header = msg.expires().ok().flatten();
    let expires = max_param
        .or(header)
        .unwrap_or(if count == 0 { 0 } else { 3600 });
    (expires, count)
}

impl Registrations {
    /// Empty tables of at most `max` entries each.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            pending: HashMap::new(),
            done: HashMap::new(),
            bindings: HashMap::new(),
            by_expiry: BTreeMap::new(),
            stats: RegisterStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> RegisterStats {
        self.stats
    }

    /// Bindings currently remembered.
    pub fn bindings(&self) -> usize {
        self.bindings.len()
    }

    /// Takes in one REGISTER request or response seen at `now`; appends what completed.
    pub fn on_message(&mut self, msg: &SipMessage<'_>, now: u64, out: &mut Vec<RegistrationOut>) {
        let key = (msg.call_id().to_owned(), msg.cseq().seq);
        match msg.status_code() {
            None => {
                if self.pending.contains_key(&key) || self.done.contains_key(&key) {
                    self.stats.retransmissions += 1;
                    return;
                }
                if self.pending.len() >= self.max {
                    self.stats.table_full += 1;
                    return;
                }
                self.stats.requests += 1;
                self.pending.insert(
                    key,
                    Pending {
                        call_id: msg.call_id().to_owned(),
                        aor: party_of(msg.to()),
                        at: now,
                    },
                );
            }
            Some(code) if code < 200 => {}
            Some(code) => {
                let Some(p) = self.pending.remove(&key) else {
                    if self.done.contains_key(&key) {
                        self.stats.retransmissions += 1;
                    } else {
                        self.stats.orphan_responses += 1;
                    }
                    return;
                };
                if self.done.len() < self.max {
                    self.done.insert(key, now);
                }
                let (expires_s, contact_count) = if (200..300).contains(&code) {
                    self.stats.ok += 1;
                    let (e, c) = granted(msg);
                    self.bind(&p, e, c, now);
                    (e, c)
                } else {
                    self.stats.failed += 1;
                    (0, 0)
                };
                out.push((
                    now,
                    p.call_id,
                    Registration {
                        aor: Some(p.aor),
                        status_code: u32::from(code),
                        expires_s,
                        contact_count,
                    },
                ));
            }
        }
    }

    fn bind(&mut self, p: &Pending, expires_s: u32, contacts: u32, now: u64) {
        let k = aor_key(&p.aor);
        if let Some(old) = self.bindings.remove(&k) {
            self.by_expiry.remove(&(old.expires_at, k.clone()));
        }
        if expires_s == 0 || contacts == 0 {
            // De-registration (or nothing bound).
            return;
        }
        if self.bindings.len() >= self.max {
            self.stats.table_full += 1;
            return;
        }
        let expires_at = now.saturating_add(u64::from(expires_s).saturating_mul(NS));
        self.by_expiry.insert((expires_at, k.clone()), ());
        self.bindings.insert(
            k,
            Binding {
                call_id: p.call_id.clone(),
                aor: p.aor.clone(),
                expires_at,
            },
        );
    }

    /// Times out transactions and bindings at `now`; appends what it reports. A timed-out
    /// transaction is reported with status 408; an expired binding with status 0, expiry 0
    /// and no contacts (nothing is bound any more).
    pub fn tick(&mut self, now: u64, out: &mut Vec<RegistrationOut>) {
        let mut dead: Vec<(String, u32)> = self
            .pending
            .iter()
            .filter(|(_, p)| now >= p.at.saturating_add(TIMER_F_NS))
            .map(|(k, _)| k.clone())
            .collect();
        dead.sort();
        for k in dead {
            if let Some(p) = self.pending.remove(&k) {
                self.stats.timeouts += 1;
                out.push((
                    p.at.saturating_add(TIMER_F_NS),
                    p.call_id,
                    Registration {
                        aor: Some(p.aor),
                        status_code: 408,
                        expires_s: 0,
                        contact_count: 0,
                    },
                ));
            }
        }
        self.done
            .retain(|_, at| now < at.saturating_add(TIMER_F_NS));
        while let Some(((at, k), ())) = self.by_expiry.pop_first() {
            if at > now {
                self.by_expiry.insert((at, k), ());
                break;
            }
            if let Some(b) = self.bindings.remove(&k) {
                self.stats.expired += 1;
                out.push((
                    b.expires_at,
                    b.call_id,
                    Registration {
                        aor: Some(b.aor),
                        status_code: 0,
                        expires_s: 0,
                        contact_count: 0,
                    },
                ));
            }
        }
    }
}
