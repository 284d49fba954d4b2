//! Flow events: call-state notifications, one event per SIP message of a call (the
//! ladder), quality alerts (one-way audio, media gaps,
//! low MOS, the receiver's RTCP disagreeing with our measurement), each raised once per call (no media-gap alert for a call that was put on
//! hold), and the running statistics of each active stream ([`MediaStats`], every media
//! poll).
#![deny(clippy::indexing_slicing, clippy::panic)]

#[allow(
    clippy::wildcard_imports,
    reason = "the tracker's types and imports, shared by its parts"
)]
use super::*;
use collector_proto::v1::MediaLeg;

pub(super) const ALERT_ONE_WAY: u8 = 1;
pub(super) const ALERT_GAP: u8 = 2;
pub(super) const ALERT_MOS: u8 = 4;
pub(super) const ALERT_RTCP: u8 = 8;

impl Tracker {
    pub(super) fn notify(&mut self, cookie: u64, kind: CallStateKind, trigger: &str, now: u64) {
        let Some(c) = self.calls.get_mut(&cookie) else {
            return;
        };
        if kind == CallStateKind::Held {
            c.was_held = true;
        }
        let c = &*c;
        let disposition = match (kind, c.end) {
            (CallStateKind::Ended, Some(e)) => e.disposition as i32,
            _ => 0,
        };
        let event = FlowEvent {
            tenant: String::new(),
            time_ms: now / MS,
            agent_id: self.agent_id.clone(),
            call_id: c.call_id.clone(),
            event: Some(flow_event::Event::CallState(CallState {
                state: kind as i32,
                caller: Some(c.caller.clone()),
                callee: Some(c.callee.clone()),
                trigger: trigger.to_owned(),
                disposition,
                cdr: None,
            })),
        };
        self.out.flow(FlowOut::new(event, c.consent.clone()));
    }
}

impl Tracker {
    /// One [`flow_event::Event::SipMessage`] for the message of a tracked call just
    /// recorded in its ladder (the ladder of `collector top`).
    pub(super) fn sip_event(&mut self, msg: &SipMessage<'_>) {
        let Some(c) = self
            .index
            .get(msg.call_id())
            .and_then(|k| self.calls.get(k))
        else {
            return;
        };
        let Some(step) = c.ladder.last() else {
            return;
        };
        let event = FlowEvent {
            tenant: String::new(),
            time_ms: step.time_ms(),
            agent_id: self.agent_id.clone(),
            call_id: c.call_id.clone(),
            event: None,
        };
        self.out.flow(FlowOut {
            event,
            consent: c.consent.clone(),
            sip: Some(step.clone()),
        });
    }

    pub(super) fn alert(&mut self, cookie: u64, kind: &str, message: String, now: u64) {
        let Some(c) = self.calls.get(&cookie) else {
            return;
        };
        let event = FlowEvent {
            tenant: String::new(),
            time_ms: now / MS,
            agent_id: self.agent_id.clone(),
            call_id: c.call_id.clone(),
            event: Some(flow_event::Event::Alert(Alert {
                severity: AlertSeverity::Warning as i32,
                kind: kind.to_owned(),
                message,
            })),
        };
        self.out.flow(FlowOut::new(event, c.consent.clone()));
    }
}

impl Tracker {
    /// Raises the quality alerts of a call once each: one-way audio (during the call),
    /// long media gaps, and (at the end) a low MOS.
    /// `end_legs` are the call's final media legs when it ends (the CDR's, computed once by
    /// the caller), `None` while it is in progress.
    pub(super) fn check_alerts(&mut self, cookie: u64, now: u64, end_legs: Option<&[MediaLeg]>) {
        let at_end = end_legs.is_some();
        let Some(call) = self.calls.get(&cookie) else {
            return;
        };
        let a = &self.cfg.alerts;
        let mut raise: Vec<(u8, &'static str, String)> = Vec::new();
        // Borrowed, not copied: a value is 552 bytes, and this runs at every message.
        let values: Vec<(Way, &MediaValue)> = if at_end {
            call.media
                .snapshots
                .iter()
                .map(|s| (s.way, &s.value))
                .collect()
        } else {
            call.media.live().map(|(w, v)| (*w, v)).collect()
        };
        let packets = |way: Way| -> u64 {
            values
                .iter()
                .filter(|(w, _)| *w == way)
                .flat_map(|(_, v)| v.slots.iter())
                .map(|s| s.packets)
                .sum()
        };
        let both_sendrecv = [call.sdp_of(Side::Caller), call.sdp_of(Side::Callee)]
            .iter()
            .all(|s| s.is_some_and(|s| matches!(s.direction, sip::sdp::Direction::SendRecv)));
        if call.alerts & ALERT_ONE_WAY == 0
            && both_sendrecv
            && matches!(call.phase, Phase::Confirmed { held: false, .. })
            && call
                .answer_ns
                .is_some_and(|t| now >= t.saturating_add(a.one_way_after_ms.saturating_mul(MS)))
        {
            let (c2e, e2c) = (packets(Way::CallerToCallee), packets(Way::CalleeToCaller));
            if (c2e == 0) != (e2c == 0) {
                let dir = if c2e == 0 {
                    "callee to caller"
                } else {
                    "caller to callee"
                };
                raise.push((
                    ALERT_ONE_WAY,
                    "one_way_audio",
                    format!("RTP flows only {dir} after the answer"),
                ));
            }
        }
        // A call on hold sends no media (RFC 3264 §8.4) or only comfort noise: a gap there
        // is the hold, not a fault.
        if call.alerts & ALERT_GAP == 0 && !call.was_held {
            let gap_ms = values
                .iter()
                .flat_map(|(_, v)| v.slots.iter())
                .map(|s| s.max_gap_ns / MS)
                .max()
                .unwrap_or(0);
            if gap_ms > a.media_gap_ms {
                raise.push((
                    ALERT_GAP,
                    "media_gap",
                    format!(
                        "RTP stopped for {gap_ms} ms (threshold {} ms)",
                        a.media_gap_ms
                    ),
                ));
            }
        }
        let legs = end_legs.unwrap_or_default();
        if at_end && call.alerts & ALERT_RTCP == 0 {
            for l in legs {
                let Some(fe) = l.far_end.as_ref().filter(|f| f.disagreement) else {
                    continue;
                };
                let dir =
                    if l.direction == collector_proto::v1::MediaDirection::CallerToCallee as i32 {
                        "caller to callee"
                    } else {
                        "callee to caller"
                    };
                raise.push((
                    ALERT_RTCP,
                    "rtcp_disagreement",
                    format!(
                        "{dir}: the receiver reports {:.1} % loss and {:.1} ms jitter{}, we \
                         measured {:.1} % and {:.1} ms ({})",
                        fe.loss_pct,
                        fe.jitter_ms,
                        if fe.xr_present {
                            format!(" (RTCP-XR loss rate {:.1} %)", fe.xr_loss_pct)
                        } else {
                            String::new()
                        },
                        l.loss_pct,
                        l.mean_jitter_ms,
                        fe.disagreement_reason
                    ),
                ));
                break;
            }
        }
        if at_end && call.alerts & ALERT_MOS == 0 {
            let worst = legs
                .iter()
                .filter(|l| l.mos > 0.0)
                .map(|l| l.mos)
                .fold(f64::INFINITY, f64::min);
            if worst.is_finite() && worst < a.mos_below {
                raise.push((
                    ALERT_MOS,
                    "low_mos",
                    format!("MOS {worst:.2} below {:.2}", a.mos_below),
                ));
            }
        }
        for (bit, kind, message) in raise {
            if let Some(c) = self.calls.get_mut(&cookie) {
                c.alerts |= bit;
            }
            self.alert(cookie, kind, message, now);
        }
    }
}
