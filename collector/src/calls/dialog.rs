//! The life of one INVITE-initiated call (RFC 3261 §13 INVITE transactions and dialogs,
//! §17.1.1 Timer B, §16.8 Timer C, §9 CANCEL, §15 BYE; RFC 4028 session timers) as an enum
//! driven by one pure transition function, [`step`]: the event and the time go in, the next
//! phase and the effects come out. No clock, no I/O, no table: the tracker
//! ([`super::tracker`]) turns SIP messages and timer ticks into [`Event`]s and applies the
//! [`Effect`]s to its call record.
//!
//! Timeouts end calls whose end was never seen: an INVITE without any response (Timer B,
//! 64·T1 = 32 s), an early dialog without a final response (Timer C, 3 min after the last
//! provisional), a CANCEL without a final response (32 s), a challenge (401/407) without a
//! new attempt, a confirmed call whose session timer ran out (RFC 4028 §10), whose media
//! stopped (while not on hold), or with no signalling and no media at all for a long time.
//! The end time of a timeout is when the call most plausibly ended (the last media packet,
//! the session expiry), not when the timer was noticed, so a coarse tick does not bias
//! durations.
#![deny(clippy::indexing_slicing, clippy::panic)]

use collector_proto::v1::{CallStateKind, Disposition, HangupSide};

/// Nanoseconds per second.
const NS: u64 = 1_000_000_000;

/// Timeouts of [`step`], in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// RFC 3261 Timer B (64·T1 = 32 s): an INVITE without any response is dead; also the
    /// wait for a final response after a CANCEL.
    pub timer_b_ns: u64,
    /// RFC 3261 Timer C (> 3 min): an early dialog whose provisional responses stopped.
    pub timer_c_ns: u64,
    /// How long a 401/407 challenge waits for the retried INVITE (a user may be typing
    /// credentials; seen in the corpus after 51 s).
    pub auth_retry_ns: u64,
    /// A confirmed call whose RTP stopped this long ago (both directions, not on hold) ended
    /// without a BYE seen.
    pub media_timeout_ns: u64,
    /// A confirmed call with neither SIP nor RTP for this long is closed (no media ever
    /// seen, no session timer: the last resort against leaks).
    pub idle_timeout_ns: u64,
    /// An ended call stays this long to absorb the ACK, the 200 to BYE and retransmissions
    /// before its CDR is emitted.
    pub linger_ns: u64,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            timer_b_ns: 32 * NS,
            timer_c_ns: 180 * NS,
            auth_retry_ns: 120 * NS,
            media_timeout_ns: 120 * NS,
            idle_timeout_ns: 4 * 3600 * NS,
            linger_ns: 4 * NS,
        }
    }
}

/// Where a call is. Times are ns on the tracker's clock (capture or wall clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// INVITE sent, no dialog-creating response yet (a 100 Trying creates none).
    Calling {
        /// The current INVITE attempt.
        invite_at: u64,
        /// A 100 Trying arrived (Timer B no longer applies, Timer C does).
        trying_at: Option<u64>,
        /// A CANCEL was seen: waiting for the final response (487, or a racing 2xx).
        cancel_at: Option<u64>,
    },
    /// A 101..=199 response arrived: the phone rings (or plays early media).
    Early {
        /// The latest provisional response.
        last_provisional: u64,
        /// Early media (an 18x with SDP) was announced.
        early_media: bool,
        /// A CANCEL was seen.
        cancel_at: Option<u64>,
    },
    /// A 401/407 ended the attempt; the caller may retry with credentials.
    Challenged {
        /// When the challenge arrived.
        at: u64,
        /// 401 or 407.
        code: u16,
    },
    /// A 2xx answered the INVITE.
    Confirmed {
        /// Put on hold by the latest offer.
        held: bool,
        /// Last session refresh (the answer, or a 2xx to a re-INVITE/UPDATE), RFC 4028.
        refreshed_at: u64,
        /// Negotiated session interval, seconds (RFC 4028), if any.
        session_interval_s: Option<u32>,
    },
    /// The call is over; lingering to absorb late messages.
    Ended {
        /// When the call ended (the CDR's end time).
        at: u64,
        /// When the end was processed (the linger runs from here).
        since: u64,
    },
    /// The CDR was emitted; the record is gone.
    Closed,
}

/// What happened to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new INVITE attempt (credentials after a challenge).
    Invite,
    /// A 1xx to the current INVITE.
    Provisional {
        /// Status code.
        code: u16,
        /// It carries SDP (early media).
        sdp: bool,
    },
    /// A 2xx to the current INVITE.
    Answer {
        /// Status code.
        code: u16,
        /// Session interval negotiated in the 2xx (RFC 4028), seconds.
        session_interval_s: Option<u32>,
    },
    /// A 3xx..=6xx to the current INVITE.
    Reject {
        /// Status code.
        code: u16,
    },
    /// A CANCEL of the INVITE.
    Cancel,
    /// A BYE.
    Bye {
        /// It came from the caller's side (its From tag is the caller's).
        by_caller: bool,
    },
    /// An SDP offer inside the dialog (re-INVITE or UPDATE).
    Offer {
        /// It puts the media on hold (sendonly/inactive, or a 0.0.0.0 address).
        hold: bool,
    },
    /// A 2xx to a re-INVITE or UPDATE: the session was refreshed (RFC 4028 §7).
    Refresh {
        /// The session interval it carries, seconds.
        session_interval_s: Option<u32>,
    },
    /// Time passed.
    Tick {
        /// Arrival of the last RTP packet of the call, any direction.
        last_media: Option<u64>,
        /// Arrival of the last SIP message of the call.
        last_sip: u64,
    },
    /// The table is full: this (unanswered) call makes room for a new one.
    Evict,
    /// The agent or the replay stops.
    Shutdown,
}

/// Why an ended call ended, as the CDR reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// End time (ns).
    pub at: u64,
    /// Disposition.
    pub disposition: Disposition,
    /// Who ended it.
    pub side: HangupSide,
    /// The end itself was observed (a BYE, a final response): not a timeout, eviction or
    /// shutdown.
    pub observed: bool,
}

/// What the tracker must do after a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Announce a new call state (a flow event).
    Notify(CallStateKind),
    /// Record the ring time (first 180/183) if none yet.
    Ring,
    /// Record the answer time.
    Answer,
    /// Record the final response code of the INVITE.
    Final(u16),
    /// The call ended: record it, snapshot and remove its media.
    End(Ending),
    /// Emit the CDR and drop the record.
    Finalize,
}

/// The disposition of a final response to the INVITE (as the issue defines it): 2xx
/// answered; 486, 600 busy; 408, 480 no answer; 487 cancelled; 403, 603 rejected; anything
/// else failed.
pub fn disposition_for(code: u16) -> Disposition {
    match code {
        200..=299 => Disposition::Answered,
        486 | 600 => Disposition::Busy,
        408 | 480 => Disposition::NoAnswer,
        487 => Disposition::Cancelled,
        403 | 603 => Disposition::Rejected,
        _ => Disposition::Failed,
    }
}

/// The effects of a final non-2xx response to the INVITE.
fn rejected(code: u16, cancel_at: Option<u64>, now: u64, fx: &mut Vec<Effect>) -> Phase {
    fx.push(Effect::Final(code));
    // A CANCEL before the final response means the caller gave up; whatever the UAS then
    // answered (487, or a 408 of its own), the call was abandoned.
    let (disposition, side) = match cancel_at {
        Some(_) => (Disposition::Cancelled, HangupSide::Caller),
        None => (disposition_for(code), HangupSide::Callee),
    };
    end(now, now, disposition, side, true, fx)
}

fn end(
    at: u64,
    now: u64,
    disposition: Disposition,
    side: HangupSide,
    observed: bool,
    fx: &mut Vec<Effect>,
) -> Phase {
    fx.push(Effect::End(Ending {
        at,
        disposition,
        side,
        observed,
    }));
    fx.push(Effect::Notify(CallStateKind::Ended));
    Phase::Ended { at, since: now }
}

/// Ends an unanswered call at once (eviction, shutdown) and finalizes it.
fn abort(now: u64, disposition: Disposition, fx: &mut Vec<Effect>) -> Phase {
    end(now, now, disposition, HangupSide::System, false, fx);
    fx.push(Effect::Finalize);
    Phase::Closed
}

/// Checks the timers of an unanswered call; `None` while none ran out.
fn unanswered_timeout(
    invite_at: u64,
    last_provisional: Option<u64>,
    cancel_at: Option<u64>,
    now: u64,
    t: &Timers,
    fx: &mut Vec<Effect>,
) -> Option<Phase> {
    let deadline = match last_provisional {
        None => invite_at.saturating_add(t.timer_b_ns),
        Some(p) => p.saturating_add(t.timer_c_ns),
    };
    if let Some(c) = cancel_at {
        // No final response after the CANCEL (Timer B of the CANCEL), or the INVITE's own
        // timer ran out first: either way the caller gave up, at the CANCEL.
        if now >= c.saturating_add(t.timer_b_ns).min(deadline) {
            return Some(end(
                c,
                now,
                Disposition::Cancelled,
                HangupSide::Caller,
                false,
                fx,
            ));
        }
        return None;
    }
    (now >= deadline).then(|| {
        end(
            deadline,
            now,
            Disposition::NoAnswer,
            HangupSide::System,
            false,
            fx,
        )
    })
}

/// The transition function: the next phase of a call in `phase` after `event` at `now`,
/// with the effects to apply in order.
pub fn step(phase: Phase, event: Event, now: u64, t: &Timers) -> (Phase, Vec<Effect>) {
    let mut fx = Vec::new();
    let next = match (phase, event) {
        // --- Calling: INVITE out, no dialog yet.
        (Phase::Calling { .. }, Event::Invite) => phase,
        (
            Phase::Calling {
                invite_at,
                cancel_at,
                ..
            },
            Event::Provisional { code, sdp },
        ) => {
            if code == 100 {
                Phase::Calling {
                    invite_at,
                    trying_at: Some(now),
                    cancel_at,
                }
            } else {
                fx.push(Effect::Ring);
                fx.push(Effect::Notify(if sdp {
                    CallStateKind::EarlyMedia
                } else {
                    CallStateKind::Ringing
                }));
                Phase::Early {
                    last_provisional: now,
                    early_media: sdp,
                    cancel_at,
                }
            }
        }
        (
            Phase::Calling { .. } | Phase::Early { .. },
            Event::Answer {
                code,
                session_interval_s,
            },
        ) => {
            // A 2xx wins over a CANCEL in flight (RFC 3261 §9.1: the CANCEL has no effect
            // on a transaction that already completed).
            fx.push(Effect::Final(code));
            fx.push(Effect::Answer);
            fx.push(Effect::Notify(CallStateKind::Answered));
            Phase::Confirmed {
                held: false,
                refreshed_at: now,
                session_interval_s,
            }
        }
        (Phase::Calling { cancel_at, .. }, Event::Reject { code })
        | (Phase::Early { cancel_at, .. }, Event::Reject { code }) => {
            if matches!(code, 401 | 407) && cancel_at.is_none() {
                fx.push(Effect::Final(code));
                Phase::Challenged { at: now, code }
            } else {
                rejected(code, cancel_at, now, &mut fx)
            }
        }
        (
            Phase::Calling {
                invite_at,
                trying_at,
                cancel_at: None,
            },
            Event::Cancel,
        ) => Phase::Calling {
            invite_at,
            trying_at,
            cancel_at: Some(now),
        },
        (
            Phase::Early {
                last_provisional,
                early_media,
                cancel_at: None,
            },
            Event::Cancel,
        ) => Phase::Early {
            last_provisional,
            early_media,
            cancel_at: Some(now),
        },
        // A retransmitted or repeated CANCEL changes nothing.
        (
            Phase::Calling {
                cancel_at: Some(_), ..
            }
            | Phase::Early {
                cancel_at: Some(_), ..
            },
            Event::Cancel,
        ) => phase,
        // RFC 3261 §15: no BYE on an early dialog from the caller, yet it happens; the caller
        // hanging up before the answer is a cancellation.
        (Phase::Calling { .. } | Phase::Early { .. }, Event::Bye { by_caller }) => {
            if by_caller {
                end(
                    now,
                    now,
                    Disposition::Cancelled,
                    HangupSide::Caller,
                    true,
                    &mut fx,
                )
            } else {
                end(
                    now,
                    now,
                    Disposition::Failed,
                    HangupSide::Callee,
                    true,
                    &mut fx,
                )
            }
        }
        // Hold needs a confirmed dialog; an UPDATE in an early dialog changes media only.
        (Phase::Calling { .. } | Phase::Early { .. }, Event::Offer { .. }) => phase,
        (Phase::Calling { .. } | Phase::Early { .. }, Event::Refresh { .. }) => phase,
        (
            Phase::Calling {
                invite_at,
                trying_at,
                cancel_at,
            },
            Event::Tick { .. },
        ) => unanswered_timeout(invite_at, trying_at, cancel_at, now, t, &mut fx).unwrap_or(phase),
        (Phase::Calling { .. } | Phase::Early { .. }, Event::Evict) => {
            abort(now, Disposition::Unspecified, &mut fx)
        }
        (Phase::Calling { .. } | Phase::Early { .. }, Event::Shutdown) => {
            fx.push(Effect::Finalize);
            Phase::Closed
        }

        // --- Early: ringing or early media.
        (Phase::Early { .. }, Event::Invite) => phase,
        (
            Phase::Early {
                early_media,
                cancel_at,
                ..
            },
            Event::Provisional { code: _, sdp },
        ) => {
            if sdp && !early_media {
                fx.push(Effect::Notify(CallStateKind::EarlyMedia));
            }
            Phase::Early {
                last_provisional: now,
                early_media: early_media || sdp,
                cancel_at,
            }
        }
        (
            Phase::Early {
                last_provisional,
                cancel_at,
                ..
            },
            Event::Tick { .. },
        ) => unanswered_timeout(
            last_provisional,
            Some(last_provisional),
            cancel_at,
            now,
            t,
            &mut fx,
        )
        .unwrap_or(phase),

        // --- Challenged: 401/407, waiting for the retry.
        (Phase::Challenged { .. }, Event::Invite) => Phase::Calling {
            invite_at: now,
            trying_at: None,
            cancel_at: None,
        },
        // Late responses to the challenged attempt.
        (
            Phase::Challenged { .. },
            Event::Provisional { .. }
            | Event::Answer { .. }
            | Event::Reject { .. }
            | Event::Offer { .. }
            | Event::Refresh { .. },
        ) => phase,
        // The caller gives up (a CANCEL or BYE for the challenged attempt).
        (Phase::Challenged { .. }, Event::Cancel | Event::Bye { .. }) => end(
            now,
            now,
            Disposition::Cancelled,
            HangupSide::Caller,
            true,
            &mut fx,
        ),
        (Phase::Challenged { at, code }, Event::Tick { .. }) => {
            if now >= at.saturating_add(t.auth_retry_ns) {
                // Nobody retried: the challenge was the final answer.
                end(
                    at,
                    now,
                    disposition_for(code),
                    HangupSide::Callee,
                    true,
                    &mut fx,
                )
            } else {
                phase
            }
        }
        (Phase::Challenged { at, code }, Event::Evict | Event::Shutdown) => {
            end(
                at,
                now,
                disposition_for(code),
                HangupSide::Callee,
                true,
                &mut fx,
            );
            fx.push(Effect::Finalize);
            Phase::Closed
        }

        // --- Confirmed: answered.
        (
            Phase::Confirmed { .. },
            Event::Invite | Event::Provisional { .. } | Event::Answer { .. } | Event::Reject { .. },
        ) => phase,
        // CANCEL after the 2xx has no effect (RFC 3261 §9.2).
        (Phase::Confirmed { .. }, Event::Cancel) => phase,
        (Phase::Confirmed { .. }, Event::Bye { by_caller }) => end(
            now,
            now,
            Disposition::Answered,
            if by_caller {
                HangupSide::Caller
            } else {
                HangupSide::Callee
            },
            true,
            &mut fx,
        ),
        (
            Phase::Confirmed {
                held,
                refreshed_at,
                session_interval_s,
            },
            Event::Offer { hold },
        ) => {
            if hold != held {
                fx.push(Effect::Notify(if hold {
                    CallStateKind::Held
                } else {
                    CallStateKind::Resumed
                }));
            }
            Phase::Confirmed {
                held: hold,
                refreshed_at,
                session_interval_s,
            }
        }
        (
            Phase::Confirmed {
                held,
                session_interval_s,
                ..
            },
            Event::Refresh {
                session_interval_s: new,
            },
        ) => Phase::Confirmed {
            held,
            refreshed_at: now,
            session_interval_s: new.or(session_interval_s),
        },
        (
            Phase::Confirmed {
                held,
                refreshed_at,
                session_interval_s,
            },
            Event::Tick {
                last_media,
                last_sip,
            },
        ) => {
            let session_end = session_interval_s
                .map(|s| refreshed_at.saturating_add(u64::from(s).saturating_mul(NS)));
            let media_end = if held { None } else { last_media };
            let last = last_media.map_or(last_sip, |m| m.max(last_sip));
            if let Some(e) = session_end.filter(|&e| now >= e) {
                end(
                    e,
                    now,
                    Disposition::Answered,
                    HangupSide::System,
                    false,
                    &mut fx,
                )
            } else if let Some(m) =
                media_end.filter(|&m| now >= m.saturating_add(t.media_timeout_ns))
            {
                end(
                    m,
                    now,
                    Disposition::Answered,
                    HangupSide::System,
                    false,
                    &mut fx,
                )
            } else if now >= last.saturating_add(t.idle_timeout_ns) {
                end(
                    last,
                    now,
                    Disposition::Answered,
                    HangupSide::System,
                    false,
                    &mut fx,
                )
            } else {
                phase
            }
        }
        // Established calls are never evicted: the caller refuses the new INVITE instead.
        (Phase::Confirmed { .. }, Event::Evict) => phase,
        (Phase::Confirmed { .. }, Event::Shutdown) => {
            fx.push(Effect::Finalize);
            Phase::Closed
        }

        // --- Ended: lingering.
        (
            Phase::Ended { .. },
            Event::Invite
            | Event::Provisional { .. }
            | Event::Answer { .. }
            | Event::Reject { .. }
            | Event::Cancel
            | Event::Bye { .. }
            | Event::Offer { .. }
            | Event::Refresh { .. },
        ) => phase,
        (Phase::Ended { since, .. }, Event::Tick { .. }) => {
            if now >= since.saturating_add(t.linger_ns) {
                fx.push(Effect::Finalize);
                Phase::Closed
            } else {
                phase
            }
        }
        (Phase::Ended { .. }, Event::Evict | Event::Shutdown) => {
            fx.push(Effect::Finalize);
            Phase::Closed
        }

        // --- Closed: nothing happens any more.
        (
            Phase::Closed,
            Event::Invite
            | Event::Provisional { .. }
            | Event::Answer { .. }
            | Event::Reject { .. }
            | Event::Cancel
            | Event::Bye { .. }
            | Event::Offer { .. }
            | Event::Refresh { .. }
            | Event::Tick { .. }
            | Event::Evict
            | Event::Shutdown,
        ) => phase,
    };
    (next, fx)
}

impl Phase {
    /// True before a final answer (the call may be evicted under table pressure).
    pub fn is_unanswered(&self) -> bool {
        match self {
            Phase::Calling { .. } | Phase::Early { .. } | Phase::Challenged { .. } => true,
            Phase::Confirmed { .. } | Phase::Ended { .. } | Phase::Closed => false,
        }
    }

    /// True once the call has ended.
    pub fn is_over(&self) -> bool {
        match self {
            Phase::Ended { .. } | Phase::Closed => true,
            Phase::Calling { .. }
            | Phase::Early { .. }
            | Phase::Challenged { .. }
            | Phase::Confirmed { .. } => false,
        }
    }
}
