//! Tests of the hub, filters, masks, and the relay in-process (a real collector on
//! 127.0.0.1:0 with a SQLite store, fake agents publishing over gRPC). Expected results
//! are the fixtures written here (which event belongs to which agent, call and party),
//! never the code's own output.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use collector_proto::v1::{
    flow_event::Event, watch_client::WatchClient, Alert, CallState, CallStateKind, Cdr,
    Disposition, FlowEvent, FlowEventType, FlowFilter, LostEvents, LostEventsSource, MediaLeg,
    MediaStats, Party, PublishRequest, Registration, SipMessage, WatchRequest,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::Code;

use super::{
    forward::{forward, ForwardConfig},
    hub::{Hub, HubConfig, Item, Window},
    mask::FieldMask,
    Selector, WatchError,
};
use crate::{
    metrics::Metrics,
    privacy::{
        keys::{Key, KeyId, Secret},
        Consent, KeyRing, NumberKeys, PrivacyConfig, Pseudonymizer,
    },
    server::watch::{relay, RelayOptions},
};

// ---------------------------------------------------------------- fixtures

fn party(user: &str) -> Option<Party> {
    Some(Party {
        user: user.into(),
        domain: "d_example".into(),
        display: String::new(),
    })
}

fn call_state(
    t: u64,
    agent: &str,
    call: &str,
    state: CallStateKind,
    a: &str,
    b: &str,
) -> FlowEvent {
    FlowEvent {
        tenant: String::new(),
        time_ms: t,
        agent_id: agent.into(),
        call_id: call.into(),
        event: Some(Event::CallState(CallState {
            state: state as i32,
            caller: party(a),
            callee: party(b),
            trigger: match state {
                CallStateKind::Trying => "INVITE",
                CallStateKind::Ringing => "180",
                CallStateKind::Answered => "200",
                _ => "BYE",
            }
            .into(),
            disposition: if state == CallStateKind::Ended {
                Disposition::Answered as i32
            } else {
                0
            },
            cdr: None,
        })),
    }
}

fn media(t: u64, agent: &str, call: &str, mos: f64, loss: f64, src: &str) -> FlowEvent {
    FlowEvent {
        tenant: String::new(),
        time_ms: t,
        agent_id: agent.into(),
        call_id: call.into(),
        event: Some(Event::MediaStats(MediaStats {
            leg: Some(Box::new(MediaLeg {
                src_ip: src.into(),
                dst_ip: "198.51.100.0/24".into(),
                codec: "PCMU".into(),
                mos,
                loss_pct: loss,
                mean_jitter_ms: 2.5,
                ..Default::default()
            })),
            interval_ms: 5_000,
        })),
    }
}

fn alert(t: u64, agent: &str, text: &str) -> FlowEvent {
    FlowEvent {
        tenant: String::new(),
        time_ms: t,
        agent_id: agent.into(),
        call_id: String::new(),
        event: Some(Event::Alert(Alert {
            severity: 2,
            kind: "test".into(),
            message: text.into(),
        })),
    }
}

/// The fixture's identity of an event: (time, agent, call).
fn key(e: &FlowEvent) -> (u64, String, String) {
    (e.time_ms, e.agent_id.clone(), e.call_id.clone())
}

fn test_pz() -> Pseudonymizer {
    let config = PrivacyConfig {
        scope: Some("watch-test".into()),
        ..Default::default()
    };
    let key = Key::new(
        KeyId::try_new("k1").unwrap(),
        Secret::from_bytes([0x5a; 32]),
        time::OffsetDateTime::UNIX_EPOCH,
        true,
    );
    Pseudonymizer::try_new(&config, KeyRing::try_new(vec![key]).unwrap()).unwrap()
}

fn hub(history: usize, queue: usize) -> Hub {
    Hub::new(HubConfig {
        history,
        subscriber_queue: queue,
        ..Default::default()
    })
}

fn alert_text(item: &Item) -> String {
    match item {
        Item::Event(s) => match &s.event.event {
            Some(Event::Alert(a)) => a.message.clone(),
            other => panic!("{other:?}"),
        },
        Item::Lost(n) => format!("lost {n}"),
    }
}

// ---------------------------------------------------------------- hub

#[tokio::test]
async fn slow_subscriber_gets_the_exact_loss_where_the_gap_is() {
    let h = hub(100, 4);
    let mut sub = h
        .subscribe(Arc::new(Selector::all()), Window::default())
        .unwrap();
    for i in 1..=10 {
        h.publish(alert(i, "A", &format!("e{i}")));
    }
    // Queue of 4: e1..e4 queued, e5..e10 lost.
    assert_eq!(alert_text(&sub.next().await.unwrap()), "e1");
    assert_eq!(alert_text(&sub.next().await.unwrap()), "e2");
    // Room again: the notice goes in front of the next event, where the gap is.
    h.publish(alert(11, "A", "e11"));
    let rest: Vec<String> = std::iter::from_fn(|| sub.try_next())
        .map(|i| alert_text(&i))
        .collect();
    assert_eq!(rest, ["e3", "e4", "lost 6", "e11"]);
    assert_eq!(h.stats().client_lost, 6);
    assert_eq!(h.stats().published, 11);
}

#[tokio::test]
async fn loss_is_reported_when_the_queue_runs_empty_even_without_new_events() {
    let h = hub(0, 2);
    let mut sub = h
        .subscribe(Arc::new(Selector::all()), Window::default())
        .unwrap();
    for i in 1..=5 {
        h.publish(alert(i, "A", &format!("e{i}")));
    }
    let got: Vec<String> = std::iter::from_fn(|| sub.try_next())
        .map(|i| alert_text(&i))
        .collect();
    assert_eq!(got, ["e1", "e2", "lost 3"]);
    // Reported once only.
    assert!(sub.try_next().is_none());
}

#[tokio::test]
async fn history_is_bounded_and_selected_by_last_n_since_until() {
    let h = hub(5, 8);
    for i in 1..=8u64 {
        h.publish(alert(i * 100, "A", &format!("e{i}")));
    }
    let texts = |v: Vec<Arc<super::Stored>>| -> Vec<String> {
        v.into_iter().map(|s| alert_text(&Item::Event(s))).collect()
    };
    let all = Selector::all();
    // The ring keeps the last 5 (e4..e8).
    let w = |since_ms, until_ms, last_n| Window {
        since_ms,
        until_ms,
        last_n,
    };
    assert_eq!(
        texts(h.history(&all, w(0, 0, 100))),
        ["e4", "e5", "e6", "e7", "e8"]
    );
    assert_eq!(texts(h.history(&all, w(0, 0, 2))), ["e7", "e8"]);
    assert_eq!(texts(h.history(&all, w(600, 0, 0))), ["e6", "e7", "e8"]);
    assert_eq!(texts(h.history(&all, w(500, 800, 0))), ["e5", "e6", "e7"]);
    assert_eq!(texts(h.history(&all, w(500, 0, 1))), ["e8"]);
    // Nothing asked for, nothing sent.
    assert!(h.history(&all, w(0, 0, 0)).is_empty());
}

#[tokio::test]
async fn subscription_joins_history_and_live_without_gap_or_duplicate() {
    let h = hub(100, 16);
    for i in 1..=3 {
        h.publish(alert(i, "A", &format!("e{i}")));
    }
    let mut sub = h
        .subscribe(
            Arc::new(Selector::all()),
            Window {
                last_n: 2,
                ..Default::default()
            },
        )
        .unwrap();
    h.publish(alert(4, "A", "e4"));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(alert_text(&sub.next().await.unwrap()));
    }
    assert_eq!(got, ["e2", "e3", "e4"]);
    // Closing the hub ends the subscription.
    h.close();
    assert!(sub.next().await.is_none());
    assert!(h
        .subscribe(Arc::new(Selector::all()), Window::default())
        .is_err());
}

#[tokio::test]
async fn subscriber_limit_and_departed_subscribers() {
    let h = Hub::new(HubConfig {
        max_subscribers: 1,
        ..Default::default()
    });
    let sub = h
        .subscribe(Arc::new(Selector::all()), Window::default())
        .unwrap();
    assert!(matches!(
        h.subscribe(Arc::new(Selector::all()), Window::default()),
        Err(super::HubError::TooManySubscribers(1))
    ));
    drop(sub);
    h.publish(alert(1, "A", "x"));
    assert_eq!(h.stats().subscribers, 0);
    assert!(h
        .subscribe(Arc::new(Selector::all()), Window::default())
        .is_ok());
}

// ---------------------------------------------------------------- filters

/// Published events, each with the fixture's expectation of which filters pick it.
fn mixed_events() -> Vec<FlowEvent> {
    vec![
        call_state(1, "A", "c1", CallStateKind::Trying, "alice", "bob"),
        call_state(2, "B", "c2", CallStateKind::Trying, "carol", "dave"),
        media(3, "A", "c1", 4.3, 0.0, "192.0.2.0/24"),
        media(4, "B", "c2", 2.9, 7.5, "203.0.113.0/24"),
        call_state(5, "A", "c1", CallStateKind::Answered, "alice", "bob"),
        alert(6, "B", "storm"),
        call_state(7, "B", "c2", CallStateKind::Ended, "carol", "dave"),
    ]
}

fn pick(selector: &Selector, events: &[FlowEvent]) -> Vec<u64> {
    let h = hub(100, 16);
    for e in events {
        h.publish(e.clone());
    }
    h.history(
        selector,
        Window {
            last_n: 100,
            ..Default::default()
        },
    )
    .iter()
    .map(|s| s.event.time_ms)
    .collect()
}

fn allow(f: FlowFilter) -> Selector {
    Selector::compile(&[f], &[], None).unwrap()
}

#[test]
fn each_filter_field_selects_its_events() {
    let ev = mixed_events();
    let f = FlowFilter::default;
    assert_eq!(
        pick(
            &allow(FlowFilter {
                agent_id: vec!["B".into()],
                ..f()
            }),
            &ev
        ),
        [2, 4, 6, 7]
    );
    // A party filter also picks the call's media stats (parties learnt from call_state).
    assert_eq!(
        pick(
            &allow(FlowFilter {
                pseudonym: vec!["carol".into()],
                ..f()
            }),
            &ev
        ),
        [2, 4, 7]
    );
    assert_eq!(
        pick(
            &allow(FlowFilter {
                event_type: vec![
                    FlowEventType::MediaStats as i32,
                    FlowEventType::Alert as i32
                ],
                ..f()
            }),
            &ev
        ),
        [3, 4, 6]
    );
    assert_eq!(
        pick(
            &allow(FlowFilter {
                call_state: vec![CallStateKind::Answered as i32],
                ..f()
            }),
            &ev
        ),
        [5]
    );
    assert_eq!(
        pick(
            &allow(FlowFilter {
                disposition: vec![Disposition::Answered as i32],
                ..f()
            }),
            &ev
        ),
        [7]
    );
    assert_eq!(
        pick(
            &allow(FlowFilter {
                mos_below: Some(3.5),
                ..f()
            }),
            &ev
        ),
        [4]
    );
    assert_eq!(
        pick(
            &allow(FlowFilter {
                loss_above_pct: Some(0.0),
                ..f()
            }),
            &ev
        ),
        [4]
    );
    assert_eq!(
        pick(
            &allow(FlowFilter {
                address_prefix: vec!["192.0.2.".into()],
                ..f()
            }),
            &ev
        ),
        [3]
    );
    assert_eq!(
        pick(
            &allow(FlowFilter {
                call_id: vec!["c1".into()],
                ..f()
            }),
            &ev
        ),
        [1, 3, 5]
    );
    // AND within a filter, OR across filters, deny wins.
    let and = FlowFilter {
        agent_id: vec!["A".into()],
        event_type: vec![FlowEventType::CallState as i32],
        ..f()
    };
    assert_eq!(pick(&allow(and.clone()), &ev), [1, 5]);
    let or = Selector::compile(
        &[
            and.clone(),
            FlowFilter {
                event_type: vec![FlowEventType::Alert as i32],
                ..f()
            },
        ],
        &[],
        None,
    )
    .unwrap();
    assert_eq!(pick(&or, &ev), [1, 5, 6]);
    let deny = Selector::compile(
        &[],
        &[FlowFilter {
            agent_id: vec!["B".into()],
            ..f()
        }],
        None,
    )
    .unwrap();
    assert_eq!(pick(&deny, &ev), [1, 3, 5]);
}

#[test]
fn lost_notices_pass_every_filter_but_their_agents() {
    let mut ev = mixed_events();
    ev.push(FlowEvent {
        time_ms: 8,
        agent_id: "A".into(),
        event: Some(Event::LostEvents(LostEvents {
            source: LostEventsSource::KernelRing as i32,
            count: 3,
        })),
        ..Default::default()
    });
    let by_state = allow(FlowFilter {
        call_state: vec![CallStateKind::Answered as i32],
        ..Default::default()
    });
    assert_eq!(pick(&by_state, &ev), [5, 8]);
    let other_agent = allow(FlowFilter {
        agent_id: vec!["B".into()],
        ..Default::default()
    });
    assert_eq!(pick(&other_agent, &ev), [2, 4, 6, 7]);
}

#[test]
fn invalid_filters_are_refused_before_any_work() {
    let bad = [
        FlowFilter {
            event_type: vec![0],
            ..Default::default()
        },
        FlowFilter {
            event_type: vec![99],
            ..Default::default()
        },
        FlowFilter {
            call_state: vec![42],
            ..Default::default()
        },
        FlowFilter {
            mos_below: Some(f64::NAN),
            ..Default::default()
        },
        FlowFilter {
            loss_above_pct: Some(101.0),
            ..Default::default()
        },
        FlowFilter {
            pseudonym: vec![String::new()],
            ..Default::default()
        },
        FlowFilter {
            agent_id: vec!["x".repeat(300)],
            ..Default::default()
        },
    ];
    for f in bad {
        assert!(
            matches!(
                Selector::compile(std::slice::from_ref(&f), &[], None),
                Err(WatchError::Invalid(_))
            ),
            "{f:?}"
        );
    }
    let too_many = vec![FlowFilter::default(); super::filter::MAX_FILTERS + 1];
    assert!(Selector::compile(&too_many, &[], None).is_err());
    // A number filter needs keys.
    let by_number = FlowFilter {
        number: vec!["+15551234567".into()],
        ..Default::default()
    };
    assert!(matches!(
        Selector::compile(&[by_number], &[], None),
        Err(WatchError::NoKeys)
    ));
}

// ---------------------------------------------------------------- masks

#[test]
fn field_mask_clears_unlisted_fields_and_keeps_the_kind() {
    let mask = FieldMask::compile(&["agent_id".into(), "call_state.state".into()])
        .unwrap()
        .unwrap();
    let e = call_state(9, "A", "c1", CallStateKind::Answered, "alice", "bob");
    let m = mask.apply(&e);
    assert_eq!(m.agent_id, "A");
    assert_eq!((m.time_ms, m.call_id.as_str()), (0, ""));
    match m.event {
        Some(Event::CallState(cs)) => {
            assert_eq!(cs.state(), CallStateKind::Answered);
            assert_eq!(
                (cs.caller, cs.callee, cs.trigger.as_str()),
                (None, None, "")
            );
        }
        other => panic!("{other:?}"),
    }
    // An unlisted kind arrives as an empty message of its kind.
    let m = mask.apply(&media(3, "A", "c1", 4.1, 1.0, "192.0.2.0/24"));
    assert_eq!(m.event, Some(Event::MediaStats(MediaStats::default())));
    // Nested paths, through a repeated field.
    let mask = FieldMask::compile(&[
        "call_state.caller.user".into(),
        "call_state.cdr.media.mos".into(),
    ])
    .unwrap()
    .unwrap();
    let mut e = call_state(9, "A", "c1", CallStateKind::Ended, "alice", "bob");
    if let Some(Event::CallState(cs)) = &mut e.event {
        cs.cdr = Some(Box::new(Cdr {
            final_code: 200,
            media: vec![
                MediaLeg {
                    mos: 4.2,
                    codec: "PCMA".into(),
                    ..Default::default()
                },
                MediaLeg {
                    mos: 3.1,
                    codec: "PCMA".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }));
    }
    let Some(Event::CallState(cs)) = mask.apply(&e).event else {
        panic!()
    };
    assert_eq!(
        cs.caller,
        Some(Party {
            user: "alice".into(),
            ..Default::default()
        })
    );
    let cdr = cs.cdr.unwrap();
    assert_eq!(cdr.final_code, 0);
    assert_eq!(
        cdr.media
            .iter()
            .map(|l| (l.mos, l.codec.as_str()))
            .collect::<Vec<_>>(),
        [(4.2, ""), (3.1, "")]
    );
    // Lost-event notices are never masked.
    let lost = FlowEvent {
        time_ms: 5,
        event: Some(Event::LostEvents(LostEvents {
            source: 4,
            count: 9,
        })),
        ..Default::default()
    };
    assert_eq!(mask.apply(&lost), lost);
}

#[test]
fn field_mask_paths_are_checked() {
    assert_eq!(FieldMask::compile(&[]).unwrap(), None);
    for ok in [
        "time_ms",
        "media_stats.leg.mos",
        "sip_message.method_or_status",
        "registration.aor",
    ] {
        assert!(FieldMask::compile(&[ok.into()]).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "nope",
        "call_state.nope",
        "time_ms.x",
        "media_stats.leg.mos.x",
        "event",
    ] {
        assert!(
            matches!(
                FieldMask::compile(&[bad.into()]),
                Err(WatchError::Invalid(_))
            ),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------- in-process relay

struct Collector {
    addr: SocketAddr,
    hub: Arc<Hub>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Collector {
    async fn start(options: RelayOptions) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), options).await
    }

    async fn start_on(listener: TcpListener, options: RelayOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::server::store::open(&format!("sqlite://{}", dir.path().join("c.db").display()))
                .await
                .unwrap();
        let addr = listener.local_addr().unwrap();
        let service = relay(options);
        let hub = Arc::clone(service.hub());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let opts = crate::server::ServeOptions::default();
            crate::server::serve_with_relay(listener, store, opts, service, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Collector {
            addr,
            hub,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> WatchClient<tonic::transport::Channel> {
        WatchClient::connect(self.url()).await.unwrap()
    }

    /// Publishes `events` as one agent stream, in messages of at most 500 events.
    async fn publish(&self, agent: &str, events: Vec<FlowEvent>) -> u64 {
        let mut c = self.client().await;
        let reqs: Vec<PublishRequest> = events
            .chunks(500)
            .map(|chunk| PublishRequest {
                agent_id: agent.into(),
                events: chunk.to_vec(),
            })
            .collect();
        c.publish(tokio_stream::iter(reqs))
            .await
            .unwrap()
            .into_inner()
            .accepted
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the collector stops")
            .unwrap();
    }
}

async fn collect(
    c: &mut WatchClient<tonic::transport::Channel>,
    req: WatchRequest,
) -> Result<Vec<FlowEvent>, tonic::Status> {
    let mut s = c.flows(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(e) = s.next().await {
        out.push(e?);
    }
    Ok(out)
}

fn history_req(allow: Vec<FlowFilter>) -> WatchRequest {
    WatchRequest {
        last_n: 1_000,
        allow,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_tags_agents_and_filters_by_number_with_the_collectors_keys() {
    let pz = Arc::new(test_pz());
    let c = Collector::start(RelayOptions {
        numbers: NumberKeys::shared(Arc::clone(&pz)),
        ..Default::default()
    })
    .await;
    // What the agents' privacy policy makes of the numbers (same scope and key).
    let call = pz.call(Consent::NotDeclined);
    let alice = call.caller_user(b"+442079460001").unwrap();
    let bob = call.callee_user(b"+442079460002").unwrap();
    let carol = call.caller_user(b"+442079460003").unwrap();
    assert!(alice.starts_with("n_k1_"), "{alice}");

    let agent_a = vec![
        call_state(100, "spoofed", "c1", CallStateKind::Trying, &alice, &bob),
        media(110, "", "c1", 4.4, 0.0, "192.0.2.0/24"),
        call_state(120, "", "c1", CallStateKind::Answered, &alice, &bob),
    ];
    let agent_b = vec![
        call_state(105, "", "c2", CallStateKind::Trying, &carol, &alice),
        call_state(115, "", "c3", CallStateKind::Trying, &carol, &bob),
        media(125, "", "c3", 2.1, 9.0, "203.0.113.0/24"),
    ];
    assert_eq!(c.publish("agent-a", agent_a).await, 3);
    assert_eq!(c.publish("agent-b", agent_b).await, 3);
    let mut w = c.client().await;

    // Every event, in publication order, tagged by the relay with its agent.
    let all = collect(&mut w, history_req(vec![])).await.unwrap();
    let keys: Vec<_> = all.iter().map(key).collect();
    let k = |t: u64, a: &str, call: &str| (t, a.to_string(), call.to_string());
    assert_eq!(
        keys,
        [
            k(100, "agent-a", "c1"),
            k(110, "agent-a", "c1"),
            k(120, "agent-a", "c1"),
            k(105, "agent-b", "c2"),
            k(115, "agent-b", "c3"),
            k(125, "agent-b", "c3"),
        ]
    );

    // Alice's number in another spelling: her calls as caller (c1 with its media) or
    // callee (c2), nothing of carol → bob.
    let by_number = FlowFilter {
        number: vec!["tel:+44-20-7946-0001".into()],
        ..Default::default()
    };
    let got: Vec<_> = collect(&mut w, history_req(vec![by_number]))
        .await
        .unwrap()
        .iter()
        .map(|e| e.time_ms)
        .collect();
    assert_eq!(got, [100, 110, 120, 105]);

    // Agent + kind + quality filters together.
    let poor_b = FlowFilter {
        agent_id: vec!["agent-b".into()],
        event_type: vec![FlowEventType::MediaStats as i32],
        mos_below: Some(3.0),
        ..Default::default()
    };
    let got: Vec<_> = collect(&mut w, history_req(vec![poor_b]))
        .await
        .unwrap()
        .iter()
        .map(|e| e.time_ms)
        .collect();
    assert_eq!(got, [125]);

    // since_ms and last_n select from the history.
    let since = collect(
        &mut w,
        WatchRequest {
            since_ms: 115,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        since.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        [120, 115, 125]
    );
    let last2 = collect(
        &mut w,
        WatchRequest {
            last_n: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        last2.iter().map(|e| e.time_ms).collect::<Vec<_>>(),
        [115, 125]
    );

    // The field mask is applied on the wire.
    let masked = collect(
        &mut w,
        WatchRequest {
            last_n: 1,
            field_mask: vec!["time_ms".into(), "media_stats.leg.mos".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(masked.len(), 1);
    assert_eq!((masked[0].time_ms, masked[0].agent_id.as_str()), (125, ""));
    let Some(Event::MediaStats(m)) = &masked[0].event else {
        panic!()
    };
    let leg = m.leg.as_ref().unwrap();
    assert_eq!((leg.mos, leg.src_ip.as_str(), m.interval_ms), (2.1, "", 0));

    // Follow: history then live events as they are published.
    let mut live = w
        .flows(WatchRequest {
            follow: true,
            last_n: 1,
            allow: vec![FlowFilter {
                agent_id: vec!["agent-a".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    c.publish("agent-b", vec![alert(200, "", "not for you")])
        .await;
    c.publish("agent-a", vec![alert(201, "", "for you")]).await;
    let first = live.next().await.unwrap().unwrap();
    let second = live.next().await.unwrap().unwrap();
    assert_eq!((first.time_ms, second.time_ms), (120, 201));
    assert_eq!(second.agent_id, "agent-a");

    // Shutting down ends the follow stream instead of hanging the server.
    c.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .expect("the stream ends");
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_clear_status_codes() {
    let c = Collector::start(RelayOptions::default()).await;
    let mut w = c.client().await;
    let cases = [
        (
            WatchRequest {
                follow: true,
                until_ms: 5,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            WatchRequest {
                since_ms: 9,
                until_ms: 5,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            WatchRequest {
                field_mask: vec!["call_state.nope".into()],
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            // The collector was started without keys.
            history_req(vec![FlowFilter {
                number: vec!["+15550001".into()],
                ..Default::default()
            }]),
            Code::FailedPrecondition,
        ),
    ];
    for (req, code) in cases {
        let err = w.flows(req.clone()).await.map(|_| ()).unwrap_err();
        assert_eq!(err.code(), code, "{req:?}");
        assert!(
            !err.message().contains("15550001"),
            "the number is never echoed"
        );
    }
    // Publish: empty and changing agent ids are refused.
    let bad = [
        vec![PublishRequest::default()],
        vec![
            PublishRequest {
                agent_id: "a".into(),
                events: vec![],
            },
            PublishRequest {
                agent_id: "b".into(),
                events: vec![],
            },
        ],
    ];
    for reqs in bad {
        let err = w.publish(tokio_stream::iter(reqs)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_grpc_client_is_told_exactly_how_many_events_it_lost() {
    const N: usize = 3_000;
    let metrics = Arc::new(Metrics::new());
    let c = Collector::start(RelayOptions {
        hub: HubConfig {
            subscriber_queue: 8,
            ..Default::default()
        },
        metrics: Some(Arc::clone(&metrics)),
        ..Default::default()
    })
    .await;
    let mut w = c.client().await;
    let mut live = w
        .flows(WatchRequest {
            follow: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // ~6 MB of events while the client reads nothing: more than the HTTP/2 windows and
    // every buffer between the hub and the client hold.
    let pad = "x".repeat(2_000);
    let events: Vec<FlowEvent> = (0..N as u64)
        .map(|i| alert(i, "", &format!("{i:05}{pad}")))
        .collect();
    assert_eq!(c.publish("agent-a", events).await, N as u64);

    let mut received = Vec::new();
    let mut lost = 0u64;
    while received.len() as u64 + lost < N as u64 {
        let e = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("events or a loss notice keep coming")
            .unwrap()
            .unwrap();
        match e.event {
            Some(Event::Alert(_)) => received.push(e.time_ms),
            Some(Event::LostEvents(l)) => {
                assert_eq!(l.source(), LostEventsSource::ClientQueue);
                lost += l.count;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received.len() as u64 + lost, N as u64);
    assert!(lost > 0, "the client was slow enough to lose events");
    assert!(received.windows(2).all(|p| p[0] < p[1]), "in order");
    assert_eq!(c.hub.stats().client_lost, lost);
    assert!(metrics.encode().contains(&format!(
        "collector_flow_events_lost_total{{source=\"client_queue\"}} {lost}"
    )),);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarder_relays_agent_events_and_reports_what_it_could_not_carry() {
    // The collector is not up yet: the forwarder's queue (4) fills, the rest is lost.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let agent_hub = Arc::new(hub(100, 4));
    let mut config = ForwardConfig::new(format!("http://{addr}"), "edge-1");
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(200);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let fwd = tokio::spawn(forward(Arc::clone(&agent_hub), config, async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=10 {
        agent_hub.publish(alert(i, "", &format!("e{i}")));
    }
    let listener = loop {
        match TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let c = Collector::start_on(listener, RelayOptions::default()).await;
    // Wait until the forwarder has delivered what it holds.
    let mut w = c.client().await;
    let mut got = Vec::new();
    for _ in 0..200 {
        got = collect(&mut w, history_req(vec![])).await.unwrap();
        if got.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary: Vec<String> = got
        .iter()
        .map(|e| match &e.event {
            Some(Event::Alert(a)) => format!("{} {}", e.agent_id, a.message),
            Some(Event::LostEvents(l)) => {
                format!("{} lost {} {:?}", e.agent_id, l.count, l.source())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "edge-1 e1",
            "edge-1 e2",
            "edge-1 e3",
            "edge-1 e4",
            "edge-1 lost 6 Relay",
        ]
    );
    // Live events keep flowing.
    agent_hub.publish(alert(11, "", "e11"));
    for _ in 0..200 {
        got = collect(&mut w, history_req(vec![])).await.unwrap();
        if got.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.last().map(|e| e.time_ms), Some(11));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), fwd)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_service_serves_flows_and_refuses_publish() {
    let h = Arc::new(hub(100, 16));
    h.publish(FlowEvent {
        tenant: String::new(),
        time_ms: 1,
        agent_id: "edge".into(),
        call_id: "c9".into(),
        event: Some(Event::SipMessage(SipMessage {
            method_or_status: "INVITE".into(),
            cseq: 1,
            cseq_method: "INVITE".into(),
            from: "caller".into(),
            to: "sbc".into(),
            ..Default::default()
        })),
    });
    h.publish(FlowEvent {
        time_ms: 2,
        agent_id: "edge".into(),
        event: Some(Event::Registration(Registration {
            aor: party("u_k1_x"),
            status_code: 200,
            expires_s: 3600,
            contact_count: 1,
        })),
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve_agent(listener, Arc::clone(&h), async {
        let _ = stopped.await;
    }));
    let mut w = WatchClient::connect(url).await.unwrap();
    let got = collect(
        &mut w,
        history_req(vec![FlowFilter {
            event_type: vec![FlowEventType::SipMessage as i32],
            ..Default::default()
        }]),
    )
    .await
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].call_id, "c9");
    let err = w
        .publish(tokio_stream::iter([PublishRequest {
            agent_id: "x".into(),
            events: vec![],
        }]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
