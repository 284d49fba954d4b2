//! Every transition of [`dialog::step`], with the RFC 3261 timer values as the reference
//! (Timer B = 64·T1 = 32 s, §17.1.1.2; Timer C > 3 min, §16.6) and the disposition table of
//! the issue.
use collector_proto::v1::{CallStateKind as K, Disposition as D, HangupSide as H};
use proptest::prelude::*;

use crate::calls::dialog::{disposition_for, step, Effect, Ending, Event, Phase, Timers};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_000 * S;

fn t() -> Timers {
    Timers::default()
}

fn calling() -> Phase {
    Phase::Calling {
        invite_at: T0,
        trying_at: None,
        cancel_at: None,
    }
}

fn early() -> Phase {
    Phase::Early {
        last_provisional: T0 + S,
        early_media: false,
        cancel_at: None,
    }
}

fn confirmed() -> Phase {
    Phase::Confirmed {
        held: false,
        refreshed_at: T0 + 2 * S,
        session_interval_s: None,
    }
}

fn tick(last_media: Option<u64>, last_sip: u64) -> Event {
    Event::Tick {
        last_media,
        last_sip,
    }
}

fn ending(at: u64, disposition: D, side: H, observed: bool) -> Effect {
    Effect::End(Ending {
        at,
        disposition,
        side,
        observed,
    })
}

fn ended(at: u64, since: u64) -> Phase {
    Phase::Ended { at, since }
}

#[test]
fn timers_are_the_rfc_values() {
    let t = t();
    assert_eq!(
        t.timer_b_ns,
        32 * S,
        "RFC 3261 Timer B = 64*T1, T1 = 500 ms"
    );
    assert!(t.timer_c_ns > 180 * S - 1, "RFC 3261 Timer C > 3 min");
}

#[test]
fn disposition_table() {
    for (code, d) in [
        (200, D::Answered),
        (202, D::Answered),
        (486, D::Busy),
        (600, D::Busy),
        (408, D::NoAnswer),
        (480, D::NoAnswer),
        (487, D::Cancelled),
        (403, D::Rejected),
        (603, D::Rejected),
        (404, D::Failed),
        (488, D::Failed),
        (500, D::Failed),
        (503, D::Failed),
        (302, D::Failed),
    ] {
        assert_eq!(disposition_for(code), d, "{code}");
    }
}

#[test]
fn calling_trying_stops_timer_b_and_starts_timer_c() {
    let (p, fx) = step(
        calling(),
        Event::Provisional {
            code: 100,
            sdp: false,
        },
        T0 + S,
        &t(),
    );
    assert_eq!(
        p,
        Phase::Calling {
            invite_at: T0,
            trying_at: Some(T0 + S),
            cancel_at: None
        }
    );
    assert!(fx.is_empty());
    // Past Timer B, the 100 keeps the call alive.
    let (p2, fx) = step(p, tick(None, T0 + S), T0 + 40 * S, &t());
    assert_eq!(p2, p);
    assert!(fx.is_empty());
    // Timer C after the 100.
    let deadline = T0 + S + 180 * S;
    let (p3, fx) = step(p, tick(None, T0 + S), deadline, &t());
    assert_eq!(p3, ended(deadline, deadline));
    assert_eq!(
        fx,
        vec![
            ending(deadline, D::NoAnswer, H::System, false),
            Effect::Notify(K::Ended)
        ]
    );
}

#[test]
fn calling_timer_b_expires_at_32_s() {
    let (p, fx) = step(calling(), tick(None, T0), T0 + 32 * S - 1, &t());
    assert_eq!(p, calling());
    assert!(fx.is_empty());
    // Noticed late (a coarse tick): the end is still the expiry.
    let (p, fx) = step(calling(), tick(None, T0), T0 + 33 * S, &t());
    assert_eq!(p, ended(T0 + 32 * S, T0 + 33 * S));
    assert_eq!(
        fx,
        vec![
            ending(T0 + 32 * S, D::NoAnswer, H::System, false),
            Effect::Notify(K::Ended)
        ]
    );
}

#[test]
fn ringing_and_early_media() {
    let (p, fx) = step(
        calling(),
        Event::Provisional {
            code: 180,
            sdp: false,
        },
        T0 + S,
        &t(),
    );
    assert_eq!(p, early());
    assert_eq!(fx, vec![Effect::Ring, Effect::Notify(K::Ringing)]);
    let (p, fx) = step(
        calling(),
        Event::Provisional {
            code: 183,
            sdp: true,
        },
        T0 + S,
        &t(),
    );
    assert_eq!(
        p,
        Phase::Early {
            last_provisional: T0 + S,
            early_media: true,
            cancel_at: None
        }
    );
    assert_eq!(fx, vec![Effect::Ring, Effect::Notify(K::EarlyMedia)]);
    // 180 then 183 with SDP: early media announced once.
    let (p, fx) = step(
        early(),
        Event::Provisional {
            code: 183,
            sdp: true,
        },
        T0 + 2 * S,
        &t(),
    );
    assert_eq!(fx, vec![Effect::Notify(K::EarlyMedia)]);
    let (p2, fx) = step(
        p,
        Event::Provisional {
            code: 183,
            sdp: true,
        },
        T0 + 3 * S,
        &t(),
    );
    assert!(fx.is_empty());
    assert_eq!(
        p2,
        Phase::Early {
            last_provisional: T0 + 3 * S,
            early_media: true,
            cancel_at: None
        }
    );
    // Timer C runs from the latest provisional.
    let (p3, fx) = step(p2, tick(None, T0), T0 + 3 * S + 180 * S, &t());
    assert_eq!(p3, ended(T0 + 183 * S, T0 + 183 * S));
    assert_eq!(fx[0], ending(T0 + 183 * S, D::NoAnswer, H::System, false));
    let (p4, _) = step(p2, tick(None, T0), T0 + 3 * S + 179 * S, &t());
    assert_eq!(p4, p2);
}

#[test]
fn answer_from_calling_and_early() {
    for from in [calling(), early()] {
        let ev = Event::Answer {
            code: 200,
            session_interval_s: Some(1800),
        };
        let (p, fx) = step(from, ev, T0 + 5 * S, &t());
        assert_eq!(
            p,
            Phase::Confirmed {
                held: false,
                refreshed_at: T0 + 5 * S,
                session_interval_s: Some(1800)
            }
        );
        assert_eq!(
            fx,
            vec![
                Effect::Final(200),
                Effect::Answer,
                Effect::Notify(K::Answered)
            ]
        );
    }
}

#[test]
fn final_failures_end_the_call_on_the_callee_side() {
    for (code, d) in [
        (486, D::Busy),
        (404, D::Failed),
        (603, D::Rejected),
        (480, D::NoAnswer),
    ] {
        for from in [calling(), early()] {
            let (p, fx) = step(from, Event::Reject { code }, T0 + 2 * S, &t());
            assert_eq!(p, ended(T0 + 2 * S, T0 + 2 * S), "{code}");
            assert_eq!(
                fx,
                vec![
                    Effect::Final(code),
                    ending(T0 + 2 * S, d, H::Callee, true),
                    Effect::Notify(K::Ended)
                ]
            );
        }
    }
}

#[test]
fn cancel_then_487_is_cancelled_by_the_caller() {
    let (p, fx) = step(early(), Event::Cancel, T0 + 3 * S, &t());
    assert!(fx.is_empty());
    assert_eq!(
        p,
        Phase::Early {
            last_provisional: T0 + S,
            early_media: false,
            cancel_at: Some(T0 + 3 * S)
        }
    );
    // A retransmitted CANCEL changes nothing.
    let (p2, fx) = step(p, Event::Cancel, T0 + 3 * S + 500_000_000, &t());
    assert_eq!(p2, p);
    assert!(fx.is_empty());
    let (p3, fx) = step(p, Event::Reject { code: 487 }, T0 + 4 * S, &t());
    assert_eq!(p3, ended(T0 + 4 * S, T0 + 4 * S));
    assert_eq!(
        fx,
        vec![
            Effect::Final(487),
            ending(T0 + 4 * S, D::Cancelled, H::Caller, true),
            Effect::Notify(K::Ended)
        ]
    );
    // Whatever the UAS answers after the CANCEL (a 408 of its own), the caller gave up.
    let (_, fx) = step(p, Event::Reject { code: 408 }, T0 + 4 * S, &t());
    assert_eq!(fx[1], ending(T0 + 4 * S, D::Cancelled, H::Caller, true));
}

#[test]
fn cancel_racing_a_200_is_answered() {
    let (p, _) = step(calling(), Event::Cancel, T0 + S, &t());
    let (p, fx) = step(
        p,
        Event::Answer {
            code: 200,
            session_interval_s: None,
        },
        T0 + S + 1000,
        &t(),
    );
    assert!(matches!(p, Phase::Confirmed { .. }));
    assert_eq!(fx[1], Effect::Answer);
    // A CANCEL after the 2xx has no effect either (RFC 3261 §9.2).
    let (p2, fx) = step(p, Event::Cancel, T0 + 2 * S, &t());
    assert_eq!(p2, p);
    assert!(fx.is_empty());
}

#[test]
fn cancel_without_final_response_ends_at_the_cancel() {
    let (p, _) = step(calling(), Event::Cancel, T0 + 2 * S, &t());
    let p = match p {
        Phase::Calling {
            invite_at,
            cancel_at,
            ..
        } => Phase::Calling {
            invite_at,
            trying_at: Some(T0 + S),
            cancel_at,
        },
        other => other,
    };
    let (p2, fx) = step(p, tick(None, T0), T0 + 2 * S + 32 * S - 1, &t());
    assert_eq!(p2, p);
    assert!(fx.is_empty());
    let (p3, fx) = step(p, tick(None, T0), T0 + 34 * S, &t());
    assert_eq!(p3, ended(T0 + 2 * S, T0 + 34 * S));
    assert_eq!(fx[0], ending(T0 + 2 * S, D::Cancelled, H::Caller, false));
}

#[test]
fn cancelled_invite_without_any_response_ends_at_timer_b_as_cancelled() {
    // No 100 at all: the INVITE's Timer B (T0 + 32 s) comes before the CANCEL's.
    let (p, _) = step(calling(), Event::Cancel, T0 + 20 * S, &t());
    let (p2, fx) = step(p, tick(None, T0), T0 + 32 * S - 1, &t());
    assert_eq!((p2, fx.len()), (p, 0));
    let (p3, fx) = step(p, tick(None, T0), T0 + 32 * S, &t());
    assert_eq!(p3, ended(T0 + 20 * S, T0 + 32 * S));
    assert_eq!(fx[0], ending(T0 + 20 * S, D::Cancelled, H::Caller, false));
}

#[test]
fn challenge_then_retry() {
    let (p, fx) = step(calling(), Event::Reject { code: 407 }, T0 + S, &t());
    assert_eq!(
        p,
        Phase::Challenged {
            at: T0 + S,
            code: 407
        }
    );
    assert_eq!(fx, vec![Effect::Final(407)]);
    // Late responses to the challenged attempt change nothing.
    let (p2, fx) = step(
        p,
        Event::Provisional {
            code: 100,
            sdp: false,
        },
        T0 + S,
        &t(),
    );
    assert_eq!((p2, fx.len()), (p, 0));
    let (p3, fx) = step(p, Event::Invite, T0 + 60 * S, &t());
    assert!(fx.is_empty());
    assert_eq!(
        p3,
        Phase::Calling {
            invite_at: T0 + 60 * S,
            trying_at: None,
            cancel_at: None
        }
    );
    // Nobody retried: the challenge was the final answer, at its own time.
    let (p4, fx) = step(p, tick(None, T0), T0 + S + 120 * S, &t());
    assert_eq!(p4, ended(T0 + S, T0 + 121 * S));
    assert_eq!(fx[0], ending(T0 + S, D::Failed, H::Callee, true));
    let (p5, _) = step(p, tick(None, T0), T0 + S + 119 * S, &t());
    assert_eq!(p5, p);
    // The caller gives up while challenged.
    let (_, fx) = step(p, Event::Cancel, T0 + 2 * S, &t());
    assert_eq!(fx[0], ending(T0 + 2 * S, D::Cancelled, H::Caller, true));
    // A 401 or 407 after a CANCEL is not a challenge.
    let (p6, _) = step(calling(), Event::Cancel, T0 + S, &t());
    let (p7, fx) = step(p6, Event::Reject { code: 401 }, T0 + 2 * S, &t());
    assert!(matches!(p7, Phase::Ended { .. }));
    assert_eq!(fx[1], ending(T0 + 2 * S, D::Cancelled, H::Caller, true));
}

#[test]
fn bye_ends_a_confirmed_call_on_the_sender_side() {
    let (p, fx) = step(
        confirmed(),
        Event::Bye { by_caller: true },
        T0 + 9 * S,
        &t(),
    );
    assert_eq!(p, ended(T0 + 9 * S, T0 + 9 * S));
    assert_eq!(
        fx,
        vec![
            ending(T0 + 9 * S, D::Answered, H::Caller, true),
            Effect::Notify(K::Ended)
        ]
    );
    let (_, fx) = step(
        confirmed(),
        Event::Bye { by_caller: false },
        T0 + 9 * S,
        &t(),
    );
    assert_eq!(fx[0], ending(T0 + 9 * S, D::Answered, H::Callee, true));
}

#[test]
fn bye_before_the_answer() {
    let (_, fx) = step(early(), Event::Bye { by_caller: true }, T0 + 3 * S, &t());
    assert_eq!(fx[0], ending(T0 + 3 * S, D::Cancelled, H::Caller, true));
    let (_, fx) = step(calling(), Event::Bye { by_caller: false }, T0 + 3 * S, &t());
    assert_eq!(fx[0], ending(T0 + 3 * S, D::Failed, H::Callee, true));
}

#[test]
fn hold_and_resume() {
    let (p, fx) = step(confirmed(), Event::Offer { hold: true }, T0 + 5 * S, &t());
    assert_eq!(fx, vec![Effect::Notify(K::Held)]);
    assert!(matches!(p, Phase::Confirmed { held: true, .. }));
    // A second hold offer (session refresh while held): no new event.
    let (p2, fx) = step(p, Event::Offer { hold: true }, T0 + 6 * S, &t());
    assert!(fx.is_empty());
    assert_eq!(p2, p);
    let (p3, fx) = step(p2, Event::Offer { hold: false }, T0 + 7 * S, &t());
    assert_eq!(fx, vec![Effect::Notify(K::Resumed)]);
    assert!(matches!(p3, Phase::Confirmed { held: false, .. }));
    // Offers before the answer (UPDATE in an early dialog) do not hold.
    let (p4, fx) = step(early(), Event::Offer { hold: true }, T0 + 2 * S, &t());
    assert_eq!((p4, fx.len()), (early(), 0));
}

#[test]
fn session_timer_expiry_and_refresh() {
    let c = Phase::Confirmed {
        held: false,
        refreshed_at: T0,
        session_interval_s: Some(90),
    };
    let (p, fx) = step(c, tick(None, T0), T0 + 89 * S, &t());
    assert_eq!((p, fx.len()), (c, 0));
    let (p, fx) = step(c, tick(None, T0), T0 + 95 * S, &t());
    assert_eq!(p, ended(T0 + 90 * S, T0 + 95 * S));
    assert_eq!(fx[0], ending(T0 + 90 * S, D::Answered, H::System, false));
    // A refresh restarts the interval (RFC 4028 §10).
    let (r, fx) = step(
        c,
        Event::Refresh {
            session_interval_s: None,
        },
        T0 + 60 * S,
        &t(),
    );
    assert!(fx.is_empty());
    assert_eq!(
        r,
        Phase::Confirmed {
            held: false,
            refreshed_at: T0 + 60 * S,
            session_interval_s: Some(90)
        }
    );
    let (p, _) = step(r, tick(None, T0), T0 + 95 * S, &t());
    assert_eq!(p, r);
}

#[test]
fn media_timeout_ends_at_the_last_packet_unless_held() {
    let last = T0 + 30 * S;
    let (p, fx) = step(confirmed(), tick(Some(last), T0), last + 119 * S, &t());
    assert_eq!((p, fx.len()), (confirmed(), 0));
    let (p, fx) = step(confirmed(), tick(Some(last), T0), last + 121 * S, &t());
    assert_eq!(p, ended(last, last + 121 * S));
    assert_eq!(fx[0], ending(last, D::Answered, H::System, false));
    let held = Phase::Confirmed {
        held: true,
        refreshed_at: T0,
        session_interval_s: None,
    };
    let (p, fx) = step(held, tick(Some(last), T0), last + 600 * S, &t());
    assert_eq!((p, fx.len()), (held, 0));
}

#[test]
fn idle_timeout_is_the_last_resort() {
    let idle = 4 * 3600 * S;
    let (p, fx) = step(
        confirmed(),
        tick(None, T0 + 3 * S),
        T0 + 3 * S + idle - 1,
        &t(),
    );
    assert_eq!((p, fx.len()), (confirmed(), 0));
    let (p, fx) = step(confirmed(), tick(None, T0 + 3 * S), T0 + 3 * S + idle, &t());
    assert_eq!(p, ended(T0 + 3 * S, T0 + 3 * S + idle));
    assert_eq!(fx[0], ending(T0 + 3 * S, D::Answered, H::System, false));
}

#[test]
fn late_and_out_of_order_responses_after_the_answer_are_ignored() {
    for ev in [
        Event::Provisional {
            code: 180,
            sdp: false,
        },
        Event::Answer {
            code: 200,
            session_interval_s: None,
        },
        Event::Reject { code: 486 },
        Event::Invite,
    ] {
        let (p, fx) = step(confirmed(), ev, T0 + 9 * S, &t());
        assert_eq!((p, fx.len()), (confirmed(), 0), "{ev:?}");
    }
}

#[test]
fn eviction_takes_only_unanswered_calls() {
    for from in [calling(), early()] {
        let (p, fx) = step(from, Event::Evict, T0 + 5 * S, &t());
        assert_eq!(p, Phase::Closed);
        assert_eq!(
            fx,
            vec![
                ending(T0 + 5 * S, D::Unspecified, H::System, false),
                Effect::Notify(K::Ended),
                Effect::Finalize
            ]
        );
    }
    let (p, fx) = step(confirmed(), Event::Evict, T0 + 5 * S, &t());
    assert_eq!((p, fx.len()), (confirmed(), 0));
    // A challenged call is over as far as its answer goes.
    let (p, fx) = step(
        Phase::Challenged { at: T0, code: 401 },
        Event::Evict,
        T0 + S,
        &t(),
    );
    assert_eq!(p, Phase::Closed);
    assert_eq!(fx[0], ending(T0, D::Failed, H::Callee, true));
    assert_eq!(fx.last(), Some(&Effect::Finalize));
}

#[test]
fn linger_then_finalize() {
    let e = ended(T0 + 9 * S, T0 + 9 * S);
    for ev in [
        Event::Bye { by_caller: false },
        Event::Answer {
            code: 200,
            session_interval_s: None,
        },
        Event::Cancel,
        Event::Offer { hold: true },
    ] {
        let (p, fx) = step(e, ev, T0 + 10 * S, &t());
        assert_eq!((p, fx.len()), (e, 0), "{ev:?}");
    }
    let (p, fx) = step(e, tick(None, T0), T0 + 12 * S, &t());
    assert_eq!((p, fx.len()), (e, 0));
    let (p, fx) = step(e, tick(None, T0), T0 + 13 * S, &t());
    assert_eq!(p, Phase::Closed);
    assert_eq!(fx, vec![Effect::Finalize]);
    let (p, fx) = step(e, Event::Shutdown, T0 + 10 * S, &t());
    assert_eq!((p, fx), (Phase::Closed, vec![Effect::Finalize]));
}

#[test]
fn shutdown_finalizes_calls_in_progress_without_an_end() {
    for from in [calling(), early(), confirmed()] {
        let (p, fx) = step(from, Event::Shutdown, T0 + 5 * S, &t());
        assert_eq!((p, fx), (Phase::Closed, vec![Effect::Finalize]));
    }
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Invite),
        (100u16..200, any::<bool>()).prop_map(|(code, sdp)| Event::Provisional { code, sdp }),
        (200u16..300, proptest::option::of(1u32..4000)).prop_map(|(code, s)| Event::Answer {
            code,
            session_interval_s: s
        }),
        (300u16..700).prop_map(|code| Event::Reject { code }),
        Just(Event::Cancel),
        any::<bool>().prop_map(|by_caller| Event::Bye { by_caller }),
        any::<bool>().prop_map(|hold| Event::Offer { hold }),
        proptest::option::of(1u32..4000).prop_map(|s| Event::Refresh {
            session_interval_s: s
        }),
        (proptest::option::of(0u64..1 << 40), 0u64..1 << 40).prop_map(|(m, s)| Event::Tick {
            last_media: m,
            last_sip: s
        }),
        Just(Event::Evict),
        Just(Event::Shutdown),
    ]
}

proptest! {
    // Whatever happens, a call ends at most once, is finalized at most once and last, and
    // Closed absorbs everything.
    #[test]
    fn any_sequence_ends_and_finalizes_at_most_once(
        events in proptest::collection::vec((any_event(), 0u64..1 << 40), 0..40)
    ) {
        let mut p = calling();
        let (mut ends, mut finals, mut notifies_after_end) = (0, 0, 0);
        let mut now = 0u64;
        for (ev, dt) in events {
            now = now.saturating_add(dt);
            let (next, fx) = step(p, ev, now, &t());
            for f in &fx {
                match f {
                    Effect::End(_) => ends += 1,
                    Effect::Finalize => finals += 1,
                    Effect::Notify(k) if ends > 0 && *k != K::Ended => notifies_after_end += 1,
                    _ => {}
                }
            }
            if fx.contains(&Effect::Finalize) {
                prop_assert_eq!(fx.last(), Some(&Effect::Finalize));
                prop_assert_eq!(next, Phase::Closed);
            }
            if p == Phase::Closed {
                prop_assert!(fx.is_empty());
                prop_assert_eq!(next, Phase::Closed);
            }
            p = next;
        }
        prop_assert!(ends <= 1);
        prop_assert!(finals <= 1);
        prop_assert_eq!(notifies_after_end, 0);
    }
}
