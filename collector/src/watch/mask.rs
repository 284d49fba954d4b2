//! Field masks (`WatchRequest.field_mask`, as in Hubble's `experimental.field_mask`): a
//! client names the `FlowEvent` fields it shows, by proto path (`agent_id`,
//! `call_state.state`, `media_stats.leg.mos`, `call_state.cdr.media.loss_pct`), and every
//! other field is cleared before the event is sent. Paths are checked against the message
//! structure when the request arrives, so a typo is an `INVALID_ARGUMENT`, not an empty
//! column.
//!
//! The event's kind always survives (an unlisted kind arrives as an empty message, so the
//! client still knows what happened), and lost-event notices are never masked.
use std::collections::BTreeMap;

use collector_proto::v1::{
    flow_event::Event, Alert, CallState, Cdr, Coverage, FlowEvent, LostEvents, MediaLeg,
    MediaStats, Party, Reason, Registration, SipMessage,
};
use serde_json::Value;

use super::WatchError;

/// Most paths in one mask.
pub const MAX_PATHS: usize = 64;
/// Longest path, in bytes.
pub const MAX_PATH_LEN: usize = 128;

/// The top-level scalar fields of `FlowEvent`.
const SCALARS: [&str; 4] = ["time_ms", "agent_id", "call_id", "tenant"];
/// Key under which serde places the `FlowEvent.event` oneof.
const ONEOF_KEY: &str = "event";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    keep_all: bool,
    children: BTreeMap<String, Node>,
}

/// A compiled field mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMask {
    root: Node,
}

/// One event of each kind with every nested message present, to check paths against.
fn templates() -> Vec<FlowEvent> {
    let party = || Some(Party::default());
    let leg = MediaLeg::default();
    [
        Event::CallState(CallState {
            caller: party(),
            callee: party(),
            cdr: Some(Box::new(Cdr {
                caller: party(),
                callee: party(),
                reason: Some(Reason::default()),
                coverage: Some(Coverage::default()),
                media: vec![leg.clone()],
                ..Default::default()
            })),
            ..Default::default()
        }),
        Event::MediaStats(MediaStats {
            leg: Some(Box::new(leg)),
            ..Default::default()
        }),
        Event::Registration(Registration {
            aor: party(),
            ..Default::default()
        }),
        Event::Alert(Alert::default()),
        Event::LostEvents(LostEvents::default()),
        Event::SipMessage(SipMessage::default()),
    ]
    .into_iter()
    .map(|e| FlowEvent {
        event: Some(e),
        ..Default::default()
    })
    .collect()
}

/// The serde form of an event: `{time_ms, agent_id, call_id, event: {kind: {...}}}`.
fn to_value(e: &FlowEvent) -> Option<Value> {
    serde_json::to_value(e).ok()
}

/// Whether `path` (split on dots) names a field of some template.
fn path_exists(templates: &[Value], segments: &[&str]) -> bool {
    let Some((first, rest)) = segments.split_first() else {
        return false;
    };
    if SCALARS.contains(first) {
        return rest.is_empty();
    }
    templates.iter().any(|t| {
        let Some(mut cur) = t.get(ONEOF_KEY).and_then(|e| e.get(*first)) else {
            return false;
        };
        for seg in rest {
            if let Value::Array(items) = cur {
                match items.first() {
                    Some(item) => cur = item,
                    None => return false,
                }
            }
            match cur.get(*seg) {
                Some(next) => cur = next,
                None => return false,
            }
        }
        true
    })
}

impl FieldMask {
    /// Validates and compiles `paths`; `None` for an empty mask (send everything).
    pub fn compile(paths: &[String]) -> Result<Option<Self>, WatchError> {
        if paths.is_empty() {
            return Ok(None);
        }
        if paths.len() > MAX_PATHS {
            return Err(WatchError::Invalid(format!(
                "field_mask: at most {MAX_PATHS} paths"
            )));
        }
        let templates: Vec<Value> = templates().iter().filter_map(to_value).collect();
        let mut root = Node::default();
        for path in paths {
            let segments: Vec<&str> = path.split('.').collect();
            if path.len() > MAX_PATH_LEN || !path_exists(&templates, &segments) {
                return Err(WatchError::Invalid(format!(
                    "field_mask: {:?} is not a FlowEvent field path",
                    path.chars().take(MAX_PATH_LEN).collect::<String>()
                )));
            }
            let mut node = &mut root;
            for seg in segments {
                node = node.children.entry(seg.to_string()).or_default();
            }
            node.keep_all = true;
        }
        Ok(Some(FieldMask { root }))
    }

    /// `e` with every field outside the mask cleared.
    pub fn apply(&self, e: &FlowEvent) -> FlowEvent {
        if let Some(Event::LostEvents(_)) = e.event {
            return e.clone();
        }
        let Some(Value::Object(mut obj)) = to_value(e) else {
            return e.clone();
        };
        obj.retain(|k, _| k == ONEOF_KEY || self.root.children.contains_key(k));
        if let Some(Value::Object(event)) = obj.get_mut(ONEOF_KEY) {
            for (kind, body) in event.iter_mut() {
                match self.root.children.get(kind) {
                    Some(node) => prune(body, node),
                    None => *body = Value::Object(serde_json::Map::new()),
                }
            }
        }
        serde_json::from_value(Value::Object(obj)).unwrap_or_else(|_| e.clone())
    }
}

fn prune(v: &mut Value, node: &Node) {
    if node.keep_all {
        return;
    }
    match v {
        Value::Object(map) => {
            map.retain(|k, _| node.children.contains_key(k));
            for (k, child) in map.iter_mut() {
                if let Some(n) = node.children.get(k) {
                    prune(child, n);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                prune(item, node);
            }
        }
        // Paths are validated, so a scalar is only reached when it is kept whole.
        _ => {}
    }
}
