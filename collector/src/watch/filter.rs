//! Flow filters (`collector.v1.FlowFilter`): validated and compiled once per request, then
//! matched against every event. Semantics as in Hubble: within a filter every set field
//! must match (AND), within a field any value (OR); an event passes when it matches some
//! allow filter (or there are none) and no deny filter.
//!
//! Lost-event notices are matched on their agent only: a client filtering by call state
//! or number still learns that its view is incomplete.
use std::collections::HashSet;

use collector_proto::v1::{
    flow_event::Event, CallStateKind, Disposition, FlowEvent, FlowEventType, FlowFilter, MediaLeg,
};

use super::hub::Stored;
use super::WatchError;

/// Most allow (and, separately, deny) filters in one request.
pub const MAX_FILTERS: usize = 16;
/// Most values in one repeated field of a filter.
pub const MAX_VALUES: usize = 64;
/// Longest string value in a filter, in bytes.
pub const MAX_VALUE_LEN: usize = 256;

/// The kind of an event, as filters name it.
pub fn event_type(e: &FlowEvent) -> FlowEventType {
    match &e.event {
        Some(Event::CallState(_)) => FlowEventType::CallState,
        Some(Event::MediaStats(_)) => FlowEventType::MediaStats,
        Some(Event::Registration(_)) => FlowEventType::Registration,
        Some(Event::Alert(_)) => FlowEventType::Alert,
        Some(Event::LostEvents(_)) => FlowEventType::LostEvents,
        Some(Event::SipMessage(_)) => FlowEventType::SipMessage,
        None => FlowEventType::Unspecified,
    }
}

/// One compiled filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    agents: HashSet<String>,
    parties: HashSet<String>,
    call_ids: HashSet<String>,
    types: Vec<FlowEventType>,
    dispositions: Vec<i32>,
    states: Vec<i32>,
    address_prefixes: Vec<String>,
    mos_below: Option<f64>,
    loss_above_pct: Option<f64>,
}

/// Allow and deny filters of one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    allow: Vec<Filter>,
    deny: Vec<Filter>,
    /// The only tenant whose events pass, whatever the filters (the caller's token's); the
    /// relay's own lost-event notices, which name no tenant, pass too.
    tenant: Option<String>,
}

fn check_strings(field: &str, values: &[String]) -> Result<(), WatchError> {
    if values.len() > MAX_VALUES {
        return Err(WatchError::Invalid(format!(
            "filter field {field}: at most {MAX_VALUES} values"
        )));
    }
    if values
        .iter()
        .any(|v| v.is_empty() || v.len() > MAX_VALUE_LEN)
    {
        return Err(WatchError::Invalid(format!(
            "filter field {field}: each value must be 1..={MAX_VALUE_LEN} bytes"
        )));
    }
    Ok(())
}

fn check_enums(
    field: &str,
    values: &[i32],
    known: impl Fn(i32) -> bool,
) -> Result<Vec<i32>, WatchError> {
    if values.len() > MAX_VALUES {
        return Err(WatchError::Invalid(format!(
            "filter field {field}: at most {MAX_VALUES} values"
        )));
    }
    if let Some(bad) = values.iter().find(|v| **v == 0 || !known(**v)) {
        return Err(WatchError::Invalid(format!(
            "filter field {field}: unknown value {bad}"
        )));
    }
    Ok(values.to_vec())
}

fn check_threshold(field: &str, v: Option<f64>, max: f64) -> Result<Option<f64>, WatchError> {
    match v {
        Some(x) if !x.is_finite() || !(0.0..=max).contains(&x) => Err(WatchError::Invalid(
            format!("filter field {field}: must be a number in 0..={max}"),
        )),
        other => Ok(other),
    }
}

/// Turns a phone number typed into a filter into its pseudonyms (empty when nothing is
/// left of it after normalisation).
pub type Resolve<'a> = &'a dyn Fn(&[u8]) -> Vec<String>;

impl Filter {
    /// Validates and compiles one filter; `number` values are turned into their pseudonyms
    /// by `resolve` (an error without one). The numbers never appear in an error.
    pub fn compile(f: &FlowFilter, resolve: Option<Resolve<'_>>) -> Result<Self, WatchError> {
        check_strings("agent_id", &f.agent_id)?;
        check_strings("pseudonym", &f.pseudonym)?;
        check_strings("call_id", &f.call_id)?;
        check_strings("number", &f.number)?;
        check_strings("address_prefix", &f.address_prefix)?;
        let types = check_enums("event_type", &f.event_type, |v| {
            FlowEventType::try_from(v).is_ok()
        })?
        .into_iter()
        .filter_map(|v| FlowEventType::try_from(v).ok())
        .collect();
        let dispositions = check_enums("disposition", &f.disposition, |v| {
            Disposition::try_from(v).is_ok()
        })?;
        let states = check_enums("call_state", &f.call_state, |v| {
            CallStateKind::try_from(v).is_ok()
        })?;
        let mut parties: HashSet<String> = f.pseudonym.iter().cloned().collect();
        if !f.number.is_empty() {
            let resolve = resolve.ok_or(WatchError::NoKeys)?;
            for n in &f.number {
                let found = resolve(n.as_bytes());
                if found.is_empty() {
                    return Err(WatchError::Invalid(
                        "filter field number: a value is empty after normalisation".into(),
                    ));
                }
                parties.extend(found);
            }
        }
        Ok(Filter {
            agents: f.agent_id.iter().cloned().collect(),
            parties,
            call_ids: f.call_id.iter().cloned().collect(),
            types,
            dispositions,
            states,
            address_prefixes: f.address_prefix.clone(),
            mos_below: check_threshold("mos_below", f.mos_below, 5.0)?,
            loss_above_pct: check_threshold("loss_above_pct", f.loss_above_pct, 100.0)?,
        })
    }

    /// Whether `s` matches every set field.
    pub fn matches(&self, s: &Stored) -> bool {
        let e = &s.event;
        if !self.agents.is_empty() && !self.agents.contains(&e.agent_id) {
            return false;
        }
        if !self.parties.is_empty() && !s.parties.iter().any(|p| self.parties.contains(p)) {
            return false;
        }
        if !self.call_ids.is_empty() && !self.call_ids.contains(&e.call_id) {
            return false;
        }
        if !self.types.is_empty() && !self.types.contains(&event_type(e)) {
            return false;
        }
        let call_state = match &e.event {
            Some(Event::CallState(cs)) => Some(cs),
            _ => None,
        };
        if !self.dispositions.is_empty()
            && !call_state.is_some_and(|cs| self.dispositions.contains(&cs.disposition))
        {
            return false;
        }
        if !self.states.is_empty() && !call_state.is_some_and(|cs| self.states.contains(&cs.state))
        {
            return false;
        }
        if !self.address_prefixes.is_empty()
            && !addresses(e).any(|a| self.address_prefixes.iter().any(|p| a.starts_with(p)))
        {
            return false;
        }
        if let Some(max) = self.mos_below {
            if !legs(e).any(|l| l.mos > 0.0 && l.mos < max) {
                return false;
            }
        }
        if let Some(min) = self.loss_above_pct {
            if !legs(e).any(|l| l.loss_pct > min) {
                return false;
            }
        }
        true
    }

    /// The agent-only match applied to lost-event notices: in an allow list a filter
    /// without agents matches; in a deny list only a filter naming the agent does.
    fn matches_lost(&self, agent: &str, deny: bool) -> bool {
        if self.agents.is_empty() {
            !deny
        } else {
            self.agents.contains(agent)
        }
    }
}

/// The media legs an event reports on: a media stats interval, or an ended call's CDR.
fn legs(e: &FlowEvent) -> Box<dyn Iterator<Item = &MediaLeg> + '_> {
    match &e.event {
        Some(Event::MediaStats(m)) => Box::new(m.leg.as_deref().into_iter()),
        Some(Event::CallState(cs)) => Box::new(cs.cdr.iter().flat_map(|c| c.media.iter())),
        _ => Box::new(std::iter::empty()),
    }
}

/// The address strings an event carries (as the agent's privacy policy left them).
fn addresses(e: &FlowEvent) -> Box<dyn Iterator<Item = &str> + '_> {
    fn leg_addrs(l: &MediaLeg) -> [&str; 2] {
        [l.src_ip.as_str(), l.dst_ip.as_str()]
    }
    let all: Box<dyn Iterator<Item = &str> + '_> = match &e.event {
        Some(Event::MediaStats(m)) => Box::new(m.leg.as_deref().into_iter().flat_map(leg_addrs)),
        Some(Event::CallState(cs)) => Box::new(cs.cdr.iter().flat_map(|c| {
            [c.src_ip.as_str(), c.dst_ip.as_str()]
                .into_iter()
                .chain(c.media.iter().flat_map(leg_addrs))
        })),
        Some(Event::SipMessage(m)) => Box::new([m.from.as_str(), m.to.as_str()].into_iter()),
        _ => Box::new(std::iter::empty()),
    };
    Box::new(all.filter(|a| !a.is_empty()))
}

impl Selector {
    /// Validates and compiles the allow and deny lists of a request.
    pub fn compile(
        allow: &[FlowFilter],
        deny: &[FlowFilter],
        resolve: Option<Resolve<'_>>,
    ) -> Result<Self, WatchError> {
        if allow.len() > MAX_FILTERS || deny.len() > MAX_FILTERS {
            return Err(WatchError::Invalid(format!(
                "at most {MAX_FILTERS} allow and {MAX_FILTERS} deny filters"
            )));
        }
        Ok(Selector {
            allow: allow
                .iter()
                .map(|f| Filter::compile(f, resolve))
                .collect::<Result<_, _>>()?,
            deny: deny
                .iter()
                .map(|f| Filter::compile(f, resolve))
                .collect::<Result<_, _>>()?,
            tenant: None,
        })
    }

    /// Confines the selector to `tenant`'s events (`None`: every tenant's).
    pub fn confine(mut self, tenant: Option<String>) -> Self {
        self.tenant = tenant;
        self
    }

    /// A selector that lets every event through.
    pub fn all() -> Self {
        Selector::default()
    }

    /// Whether `s` passes.
    pub fn matches(&self, s: &Stored) -> bool {
        if let Some(t) = &self.tenant {
            let relay_notice =
                matches!(&s.event.event, Some(Event::LostEvents(_))) && s.event.tenant.is_empty();
            if !relay_notice && s.event.tenant != *t {
                return false;
            }
        }
        if let Some(Event::LostEvents(_)) = &s.event.event {
            let agent = s.event.agent_id.as_str();
            return (self.allow.is_empty()
                || self.allow.iter().any(|f| f.matches_lost(agent, false)))
                && !self.deny.iter().any(|f| f.matches_lost(agent, true));
        }
        (self.allow.is_empty() || self.allow.iter().any(|f| f.matches(s)))
            && !self.deny.iter().any(|f| f.matches(s))
    }
}
